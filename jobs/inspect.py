"""``copa inspect DATASET``: what a packed dataset holds, from its Parquet manifests (never the images).

    copa inspect shards [--json]
    copa inspect shards --show coco-000000391895 [--show KEY ...] | --sample 16 [--seed 0] [--out inspect_out]

Prints samples and image bytes per source, rejected rows by reason, captions per image, the share of captions
that name at least one box, the distribution of the positive-patch fraction, the shards and the pack config.
With ``--show``/``--sample`` it also writes one PNG per sample (the stored image with its boxes, then per caption
the patch grid coloured by coverage above the caption with its matched words highlighted) and, for several, a
contact sheet. ``DATASET`` is a local folder or a pyarrow filesystem URI (``s3://bucket/shards``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from manifests import pictures
from manifests.inspect import format_summary, load_samples, sample_keys, summarize


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="copa inspect", description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", help="a folder written by `copa pack` (local path or pyarrow URI)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of tables")
    p.add_argument("--show", action="append", default=[], metavar="KEY", help="picture of this sample; repeatable")
    p.add_argument("--sample", type=int, default=0, metavar="N", help="pictures of N samples drawn at random")
    p.add_argument("--seed", type=int, default=0, help="seed of --sample (default: %(default)s)")
    p.add_argument("--out", default="inspect_out", help="folder for the pictures (default: %(default)s)")
    return p.parse_args(argv)


def write_pictures(dataset: str, keys: list[str], out: Path) -> list[Path]:
    """One panel per sample and, for more than one, ``contact_sheet.png``; returns the files written."""
    panels, written = [], []
    for sample in load_samples(dataset, keys):
        meta = sample.meta
        panel = pictures.sample_panel(
            sample.image, meta["boxes"], meta["box_labels"], meta["captions"], meta["relevant"], sample.pta
        )
        written.append(pictures.save_png(panel, out / f"{sample.key}.png"))
        panels.append(panel)
    if len(panels) > 1:
        sheet = pictures.contact_sheet(panels, columns=2, titles=keys)
        written.append(pictures.save_png(sheet, out / "contact_sheet.png"))
    return written


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = summarize(args.dataset)
        keys = list(args.show) + (sample_keys(args.dataset, args.sample, args.seed) if args.sample else [])
        written = write_pictures(args.dataset, keys, Path(args.out)) if keys else []
    except (ValueError, OSError) as err:
        print(f"copa inspect: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    if written:
        print(f"[inspect] {len(written)} pictures in {args.out}: {', '.join(p.name for p in written[:4])}"
              f"{', ...' if len(written) > 4 else ''}", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
