"""Helpers for the pack reliability tests: running ``copa pack``, comparing two pack outputs byte for byte, and
finding (and ending) the Ray processes a test started.

Ray processes are recognised by a tag: every Ray run of the tests gets ``RAY_TMPDIR=<tag>`` (a folder made for the
test module), which the raylet and GCS carry on their command lines and every Ray process, workers included,
inherits in its environment. Workers rename themselves (``ray::IDLE``) and sit in process groups of their own, so
neither ``pgrep -f`` nor the driver's process group finds them; the environment does.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import time
from pathlib import Path

from jobs import pack

SAMPLES_PER_SHARD = 10  # small shards: 13 of them for the 127 rows of the corpus, so a kill lands between shards
DONE_FILES = ("dataset.json", "sizes.json", "pack_config.json")


def pack_args(source: Path, out: Path, *extra: str, quiet: bool = True) -> list[str]:
    spp = str(SAMPLES_PER_SHARD)
    return ["--source", str(source), "--out", str(out), "--samples-per-shard", spp, *extra] + ["--quiet"] * quiet


def run_pack(source: Path, out: Path, *extra: str) -> str:
    """``copa pack`` in this process (joins a running Ray session, else starts one); returns what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert pack.main(pack_args(source, out, *extra)) == 0
    return printed.getvalue()


def refused_pack(source: Path, out: Path, *extra: str) -> str:
    """``copa pack`` in this process that must refuse: exit status 2; returns what it wrote to stderr."""
    said = io.StringIO()
    with contextlib.redirect_stderr(said):
        assert pack.main(pack_args(source, out, *extra)) == 2
    return said.getvalue()


# --- comparing outputs ----------------------------------------------------------------------------------------------


def pack_files(out: Path) -> dict[str, bytes]:
    """What must be byte-identical between two packs of the same source and config: tars, Parquet manifests and the
    dataset files; stats files without ``seconds`` (a timing). Temporary files are left out (see ``temp_files``)."""
    files = {}
    for path in sorted(out.iterdir()):
        if ".tmp-" in path.name:
            continue
        if path.name.endswith("_stats.json"):
            stats = json.loads(path.read_text())
            stats.pop("seconds")
            files[path.name] = json.dumps(stats, sort_keys=True).encode()
        else:
            files[path.name] = path.read_bytes()
    return files


def assert_same_pack(out: Path, reference: Path) -> None:
    got, want = pack_files(out), pack_files(reference)
    assert sorted(got) == sorted(want), "the two packs hold different files"
    differ = [name for name in want if got[name] != want[name]]
    assert not differ, f"{out} differs from {reference} in {differ}"


def temp_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if ".tmp-" in p.name)


def num_shards(out: Path) -> int:
    return json.loads((out / "dataset.json").read_text())["num_shards"]


def already_done(printed: str) -> int:
    """K from the job's ``N rows -> M shards (K already done) in DIR`` line."""
    line = next(line for line in printed.splitlines() if "already done)" in line)
    return int(line.split("(")[1].split()[0])


# --- Ray processes --------------------------------------------------------------------------------------------------


def tagged_processes(tag: str) -> list[int]:
    """Pids of processes (other than this one) whose command line or environment mentions ``tag``."""
    needle, found = tag.encode(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        for part in ("cmdline", "environ"):
            try:
                with open(f"/proc/{entry}/{part}", "rb") as f:
                    if needle in f.read():
                        found.append(int(entry))
                        break
            except OSError:  # gone meanwhile, or another user's
                continue
    return found


def raylets() -> set[int]:
    """``pgrep -f raylet``, without the dependency on procps."""
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as f:
                if b"/raylet/raylet" in f.read():
                    pids.add(int(entry))
    return pids


def wait_until_gone(tag: str, timeout: float) -> list[int]:
    """Wait for the tagged processes to exit; returns those still alive after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (alive := tagged_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def end_processes(tag: str, grace: float = 15.0) -> list[int]:
    """Give the tagged processes ``grace`` seconds to exit by themselves (Ray's fate sharing: a worker whose raylet
    died exits), then SIGKILL whatever is left; returns the pids that had to be killed."""
    leftover = wait_until_gone(tag, grace)
    for pid in leftover:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not wait_until_gone(tag, 10.0), f"processes of {tag} survive SIGKILL"
    return leftover


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def free_ports(count: int) -> list[int]:
    """Ports free right now (all held open together, so they are distinct)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
