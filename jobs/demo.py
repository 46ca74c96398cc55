"""``copa demo``: the whole system on the embedded default, on one CPU machine.

So far: a synthetic corpus in the real source formats (with the deliberate faults), ingest into one normalized
source table with captions aligned to boxes, then pack on an embedded local Ray cluster into WebDataset shards with
PTA labels and Parquet manifests. Train, evaluate and the report join as they land.
"""

from __future__ import annotations

import argparse
import sys

from jobs import ingest, pack, synth


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="copa demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo_out", help="output folder (default: %(default)s)")
    parser.add_argument(
        "--images", type=int, default=2000, help="images in the synthetic corpus (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--samples-per-shard", type=int, default=500, help="pack shard size (default: %(default)s, small for a demo)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    corpus, source, shards = f"{args.out}/corpus", f"{args.out}/source.parquet", f"{args.out}/shards"
    print(f"[demo] 1/3 synthetic corpus -> {corpus}", file=sys.stderr)
    synth.main(["--out", corpus, "--images", str(args.images), "--seed", str(args.seed), "--faults"])
    print(f"[demo] 2/3 ingest -> {source}", file=sys.stderr)
    ingest.main(["--config", f"{corpus}/sources.yaml", "--out", source])
    print(f"[demo] 3/3 pack (local Ray) -> {shards}", file=sys.stderr)
    # --overwrite: the demo regenerates its corpus each time, so an older pack in its folder is replaced, not resumed.
    return pack.main(
        ["--source", source, "--out", shards, "--samples-per-shard", str(args.samples_per_shard), "--overwrite"]
    )


if __name__ == "__main__":
    raise SystemExit(main())
