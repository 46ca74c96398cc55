"""``copa bench pack --vs-img2dataset PYTHON``: ``copa pack`` and img2dataset side by side on the same JPEGs.

img2dataset is not a dependency of this toolkit: PYTHON is the interpreter of an environment where it is installed
(``python -m venv /tmp/i2d && /tmp/i2d/bin/pip install img2dataset``). Both tools store the same thing: shorter side
capped at ``max_short_side`` (img2dataset ``resize_mode="keep_ratio"``, ``resize_only_if_bigger``), JPEG quality 90,
one WebDataset shard. img2dataset fetches its files over HTTP from a server on 127.0.0.1 that this process runs (a
thread); ``copa pack`` reads them from disk, once on Ray (its default) and once with ``--engine local``. The runs
alternate, in ``rounds``; figures are medians:

- **per worker-second**: images over the shard's own time (img2dataset's ``duration`` in ``*_stats.json``, ours
  ``seconds`` in ``*_stats.json``): one worker's throughput, without start-up;
- **whole command**: images over the wall-clock time of the command, start-up and shutdown included;
- **per CPU-second**: images over the CPU time the command cost the machine: the whole machine's busy time
  (``/proc/stat``) during the run, less this process's own (the HTTP server's, reported apart). The machine must
  be otherwise idle. The CPU time of the command's process tree is reported beside it (this process is a child
  subreaper, so orphans are reaped and counted here), but it misses whatever Ray's processes reap among
  themselves;
- **image work alone**: one process decoding, resizing and encoding the same files from memory, img2dataset's
  ``Resizer`` against our ``process_image``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import http.server
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.bench.runner import REPO, python_env
from pipeline.pack import PackConfig

_PR_SET_CHILD_SUBREAPER = 36
IMAGE_WORK_FILES = 500  # files of the image-work figure, held in memory
TOOLS = ("img2dataset", "copa", "copa_local")  # copa: copa pack on Ray (the default); copa_local: --engine local

_IMG2DATASET = """
import json, sys
from img2dataset import download
download(**json.loads(sys.argv[1]))
"""

_RESIZER = """
import json, sys, time
from img2dataset.resizer import Resizer
args = json.loads(open(sys.argv[1]).read())
resizer = Resizer(image_size=args["size"], resize_mode="keep_ratio", resize_only_if_bigger=True,
                  encode_quality=args["quality"], encode_format="jpg")
data = [open(p, "rb").read() for p in args["paths"]]
import io
resizer(io.BytesIO(data[0]))
start = time.perf_counter()
for _ in range(args["reps"]):
    for d in data:
        img, *_rest, err = resizer(io.BytesIO(d))
        if err is not None:
            raise SystemExit(err)
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # one line per request would flood the benchmark's output
        pass


@contextlib.contextmanager
def serve(folder: Path):
    """Files of ``folder`` over HTTP on 127.0.0.1 (a free port), from a thread of this process; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _children() -> list[int]:
    """Processes whose parent is this one (orphans reparented to us as subreaper included)."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me:
                found.append(int(entry))
    return found


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (every state of ``/proc/stat``'s cpu line but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def run_counted(cmd: list[str], env: dict, grace: float = 30.0) -> dict:
    """Run ``cmd``; wall seconds, the machine's busy CPU seconds less this process's, and the CPU seconds of its
    process tree (every process it left behind is reaped here)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    before, self_before = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    busy = machine_busy_seconds()
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    deadline = time.monotonic() + grace
    while True:  # orphans (Ray's raylet and workers, say) are ours now: wait for them, then stop the stragglers
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            if time.monotonic() > deadline:
                for child in _children():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
            time.sleep(0.05)
    after, self_after = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    busy = machine_busy_seconds() - busy
    if proc.returncode != 0:
        raise RuntimeError(f"bench pack: {' '.join(cmd[:3])} ... exited with {proc.returncode}:\n{proc.stderr[-3000:]}")
    tree = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    own = (self_after.ru_utime + self_after.ru_stime) - (self_before.ru_utime + self_before.ru_stime)
    return {"wall_seconds": wall, "cpu_seconds": busy - own, "tree_cpu_seconds": tree, "this_process_cpu_seconds": own}


def _img2dataset_run(python: str, urls: Path, out: Path, n: int, size: int, quality: int) -> dict:
    kwargs = dict(
        url_list=str(urls), input_format="parquet", url_col="url", caption_col="caption", output_folder=str(out),
        output_format="webdataset", processes_count=1, thread_count=16, image_size=size, resize_mode="keep_ratio",
        resize_only_if_bigger=True, encode_quality=quality, encode_format="jpg", number_sample_per_shard=n,
        distributor="multiprocessing", enable_wandb=False, timeout=30, retries=0,
        disallowed_header_directives=[],
    )  # fmt: skip
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    counted = run_counted([python, "-c", _IMG2DATASET, json.dumps(kwargs)], env)
    stats = [json.loads(p.read_text()) for p in sorted(out.glob("*_stats.json"))]
    done = sum(s["successes"] for s in stats)
    if done != n:
        raise RuntimeError(
            f"bench pack: img2dataset stored {done} of {n} images: {[s.get('status_dict') for s in stats]}"
        )
    return counted | {"images": done, "shard_seconds": sum(s["duration"] for s in stats)}


def _copa_run(source: str, out: Path, config: Path, n: int, engine: str) -> dict:
    cmd = [sys.executable, "-m", "jobs.pack", "--source", source, "--out", str(out), "--config", str(config)]
    counted = run_counted([*cmd, "--workers", "1", "--engine", engine, "--quiet"], python_env())
    info = json.loads((out / "dataset.json").read_text())
    if info["num_samples"] != n:
        raise RuntimeError(f"bench pack: copa pack stored {info['num_samples']} of {n} images")
    stats = [json.loads(p.read_text()) for p in sorted(out.glob("*_stats.json"))]
    return counted | {"images": info["num_samples"], "shard_seconds": sum(s["seconds"] for s in stats)}


def image_work(python: str, paths: list[str], image, reps: int, work: Path) -> dict:
    """Decode-resize-encode alone, one process, files in memory: img2dataset's Resizer and our process_image."""
    from pipeline.images import process_image

    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    args = work / "resizer_args.json"  # a file: thousands of paths do not fit a command line
    args.write_text(
        json.dumps({"paths": paths, "size": image.max_short_side, "quality": image.jpeg_quality, "reps": reps})
    )
    proc = subprocess.run([python, "-c", _RESIZER, str(args)], env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bench pack: img2dataset's Resizer failed:\n{proc.stderr[-3000:]}")
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]
    data = [Path(p).read_bytes() for p in paths]
    process_image(data[0], image)
    start = time.perf_counter()
    for _ in range(reps):
        for d in data:
            process_image(d, image)
    ours = time.perf_counter() - start
    n = len(paths) * reps
    return {"img2dataset_per_s": n / theirs, "copa_per_s": n / ours, "ratio": theirs / ours}


def side_by_side(python: str, rows: list[dict], source: str, image, rounds: int, work: Path) -> dict:
    """The figures of the module docstring, for the rows of ``source`` (one file each, under ``image_root``)."""
    work.mkdir(parents=True, exist_ok=True)
    n, root = len(rows), Path(rows[0]["image_root"])
    config = work / "pack_config.json"
    config.write_text(json.dumps(PackConfig(samples_per_shard=n, image=image).to_dict()))
    runs: dict[str, list[dict]] = {tool: [] for tool in TOOLS}
    with serve(root) as base:
        urls = work / "urls.parquet"
        table = {"url": [f"{base}/{r['image_path']}" for r in rows], "caption": [r["captions"][0] for r in rows]}
        pq.write_table(pa.table(table), urls)
        for r in range(rounds):
            for tool in TOOLS[r % len(TOOLS) :] + TOOLS[: r % len(TOOLS)]:  # rotate the order each round
                out = work / f"{tool}_{r}"
                if tool != "img2dataset":
                    engine = "local" if tool == "copa_local" else "ray"
                    runs[tool].append(_copa_run(source, out, config, n, engine))
                else:
                    run = _img2dataset_run(python, urls, out, n, image.max_short_side, image.jpeg_quality)
                    run["http_server_cpu_seconds"] = run.pop("this_process_cpu_seconds")
                    runs[tool].append(run)
    median = {tool: {k: statistics.median(run[k] for run in rs) for k in rs[0]} for tool, rs in runs.items()}
    theirs = median["img2dataset"]
    figures = {}
    for key, measure in (("per_worker_second", "shard_seconds"), ("whole_command", "wall_seconds"),
                         ("per_cpu_second", "cpu_seconds")):  # fmt: skip
        fig = figures[key] = {tool: n / median[tool][measure] for tool in TOOLS}
        fig["ratio"] = fig["copa"] / fig["img2dataset"]
        fig["ratio_local"] = fig["copa_local"] / fig["img2dataset"]
    paths = [str(root / r["image_path"]) for r in rows[:IMAGE_WORK_FILES]]
    figures["image_work"] = image_work(python, paths, image, reps=max(1, 1000 // len(paths)), work=work)
    return figures | {
        "images": n,
        "rounds": rounds,
        "runs": runs,
        "http_share_of_img2dataset_cpu": theirs["http_server_cpu_seconds"]
        / (theirs["cpu_seconds"] + theirs["http_server_cpu_seconds"]),
    }


def summary_lines(fig: dict) -> list[str]:
    lines = [f"side by side with img2dataset, {fig['images']} images, {fig['rounds']} alternated runs (medians):"]
    for key, what in (
        ("per_worker_second", "images per worker-second (shard time)"),
        ("whole_command", "whole command, images/s"),
        ("per_cpu_second", "images per CPU-second, all processes"),
    ):
        f = fig[key]
        lines.append(
            f"  {what}: img2dataset {f['img2dataset']:.1f}; copa pack {f['copa']:.1f} (x{f['ratio']:.2f}), "
            f"with --engine local {f['copa_local']:.1f} (x{f['ratio_local']:.2f})"
        )
    w = fig["image_work"]
    lines.append(
        f"  image work alone (decode-resize-encode, one process): copa {w['copa_per_s']:.1f}/s, img2dataset's "
        f"Resizer {w['img2dataset_per_s']:.1f}/s: x{w['ratio']:.2f}"
    )
    lines.append(
        f"  the HTTP server serving img2dataset used {fig['http_share_of_img2dataset_cpu']:.0%} of the CPU time of "
        f"img2dataset plus server (not counted in img2dataset's figures)"
    )
    return lines
