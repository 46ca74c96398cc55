"""``copa demo``: the whole system on the embedded default, on one CPU machine.

So far it generates a synthetic corpus in the real source formats and prints what it made; ingest, pack, train,
evaluate and the report join it as they land.
"""

from __future__ import annotations

import argparse
import sys

from jobs import synth


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
    corpus = f"{args.out}/corpus"
    print(f"[demo] 1/1 synthetic corpus -> {corpus}", file=sys.stderr)
    return synth.main(["--out", corpus, "--images", str(args.images), "--seed", str(args.seed), "--faults"])


if __name__ == "__main__":
    raise SystemExit(main())
