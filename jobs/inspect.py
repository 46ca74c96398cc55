"""``copa inspect DATASET``: what a packed dataset holds, from its Parquet manifests (never the images).

    copa inspect shards [--json]

Prints samples and image bytes per source, rejected rows by reason, captions per image, the share of captions
that name at least one box, the distribution of the positive-patch fraction, the shards and the pack config.
``DATASET`` is a local folder or a pyarrow filesystem URI (``s3://bucket/shards``).
"""

from __future__ import annotations

import argparse
import json
import sys

from manifests.inspect import format_summary, summarize


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="copa inspect", description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", help="a folder written by `copa pack` (local path or pyarrow URI)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of tables")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = summarize(args.dataset)
    except (ValueError, OSError) as err:
        print(f"copa inspect: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
