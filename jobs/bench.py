"""``copa bench <what>``: benchmarks that compare against a baseline measured in the same run.

Each benchmark lives in ``jobs/bench_<what>.py`` with its own ``main(argv)``, writes JSON, and prints one summary
line per figure. Absolute times drift on shared machines, so every figure is reported as a ratio to its baseline.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "labels": "patch-coverage labels per core vs JPEG decoding",
    "ingest": "source readers: rows/s and peak memory on real-size annotation sets vs json.load",
    "pack": "packing samples/s per worker vs a bare decode-resize-encode loop; 1 vs 2 Ray workers; planning 4M rows",
    "model": "COPA forward and training-step throughput and memory vs keep_ratio 1.0",
}


def usage() -> str:
    lines = [f"  {name:<8}  {doc}" for name, doc in BENCHMARKS.items()]
    return "usage: copa bench <what> [options]\n\nbenchmarks:\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="")
        return 0
    what, rest = argv[0], argv[1:]
    if what not in BENCHMARKS:
        print(f"copa bench: unknown benchmark {what!r}\n\n{usage()}", end="", file=sys.stderr)
        return 2
    return importlib.import_module(f"jobs.bench_{what}").main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
