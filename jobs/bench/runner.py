"""``copa bench <what>``: the dispatcher and what the benchmarks share (fresh-interpreter runs, JSON reports).

Each benchmark lives in ``jobs/bench/<what>.py`` with its own ``main(argv)``, writes JSON, and prints one summary
line per figure. Absolute times drift on shared machines, so every figure is reported as a ratio to its baseline.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

from jobs.cli import job_errors

REPO = Path(__file__).resolve().parents[2]

BENCHMARKS = {
    "labels": "patch-coverage labels per core vs JPEG decoding",
    "align": "caption-category alignment: precision/recall on the labelled captions, us per caption vs the word table",
    "ingest": "source readers: rows/s and peak memory on real-size annotation sets vs json.load",
    "pack": "packing samples/s per worker vs a bare decode-resize-encode loop; 1 vs 2 Ray workers; planning 4M rows",
    "model": "COPA forward and training-step throughput and memory vs keep_ratio 1.0",
    "loader": "streaming loader samples/s per worker vs a plain webdataset decode-and-batch loop; augmentation cost",
    "inspect": "the streamed manifest summary and a --where query over 4M rows vs pyarrow reading them all at once",
    "members": "bytes and read/write cost of every sample carrying pta.npy vs schema 1's layout, at the 4M mix",
    "vqa": "VQA inference questions/s and counted GFLOPs per question at each keep ratio and detect layer vs keep 1.0",
    "gpu": "the GPU check: model benchmark in bf16 on every CUDA device, 50 steps of base under torchrun/nccl",
}


# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a child of a big parent would report the parent's
# peak; the high-water mark of the process's own memory map starts afresh at exec.
_PEAK_TAIL = """
with open("/proc/self/status") as _status:
    _peak = next(int(line.split()[1]) * 1024 for line in _status if line.startswith("VmHWM:"))
print(json.dumps(dict(result, peak_rss_bytes=_peak)))
"""


def python_env() -> dict[str, str]:
    """This environment with the repository first on ``PYTHONPATH``, for child interpreters."""
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run_fresh(code: str, args: object, what: str) -> dict:
    """Run ``code`` in a fresh interpreter, so that its peak memory is its own. The code finds ``args`` (JSON-able)
    as ``json.loads(sys.argv[1])`` and sets ``result`` (a dict); returns it with ``peak_rss_bytes`` added."""
    program = "import json, sys\n" + code + _PEAK_TAIL
    env = python_env()
    proc = subprocess.run(
        [sys.executable, "-c", program, json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_report(path: str, report: dict) -> None:
    """The benchmark's JSON report, creating its folder."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, sort_keys=True)
        f.write("\n")


def mb(num_bytes: float) -> str:
    return f"{num_bytes / 2**20:,.0f} MB"


def usage() -> str:
    lines = [f"  {name:<8}  {doc}" for name, doc in BENCHMARKS.items()]
    return "usage: copa bench <what> [options]\n\nbenchmarks:\n" + "\n".join(lines) + "\n"


@job_errors("bench")
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="")
        return 0
    what, rest = argv[0], argv[1:]
    if what not in BENCHMARKS:
        print(f"copa bench: unknown benchmark {what!r}\n\n{usage()}", end="", file=sys.stderr)
        return 2
    return importlib.import_module(f"jobs.bench.{what}").main(rest)
