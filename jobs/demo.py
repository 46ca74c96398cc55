"""``copa demo``: the whole system on the embedded default, on one CPU machine.

So far: a synthetic corpus in the real source formats (with the deliberate faults), then ingest into one
normalized source table with captions aligned to boxes. Pack, train, evaluate and the report join as they land.
"""

from __future__ import annotations

import argparse
import sys

from jobs import ingest, synth


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="copa demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo_out", help="output folder (default: %(default)s)")
    parser.add_argument(
        "--images", type=int, default=2000, help="images in the synthetic corpus (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    corpus, source = f"{args.out}/corpus", f"{args.out}/source.parquet"
    print(f"[demo] 1/2 synthetic corpus -> {corpus}", file=sys.stderr)
    synth.main(["--out", corpus, "--images", str(args.images), "--seed", str(args.seed), "--faults"])
    print(f"[demo] 2/2 ingest -> {source}", file=sys.stderr)
    return ingest.main(["--config", f"{corpus}/sources.yaml", "--out", source])


if __name__ == "__main__":
    raise SystemExit(main())
