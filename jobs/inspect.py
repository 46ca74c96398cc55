"""``copa inspect DATASET``: what a packed dataset holds, from its Parquet manifests (never the images).

    copa inspect shards [--json] [--histograms inspect_out]
    copa inspect shards --show coco-000000391895 [--show KEY ...] | --sample 16 [--seed 0] [--out inspect_out]
                        [--checkpoint runs/demo]
    copa inspect shards --where "source = 'vg' AND num_captions > 40" [--columns key,captions] [--limit 20]
                        [--format table|csv|parquet] [--output rows.parquet]
    copa inspect shards --export manifest.parquet

Prints samples and image bytes per source, rejected rows by reason, captions per image, the share of captions
that name at least one box, the distribution of the positive-patch fraction and of caption lengths, the shards and
the pack config. ``--histograms DIR`` also draws ``label_density.png`` and ``caption_length.png`` from the same
pass. With ``--show``/``--sample`` it writes one PNG per sample (the stored image with its boxes, then per caption
the patch grid coloured by coverage above the caption with its matched words highlighted) and, for several, a
contact sheet; with ``--checkpoint`` (a checkpoint file or a run folder) also ``KEY_detector_C.png`` per caption
shown: PTA labels | detector scores | kept patches of that model (the paper's Figure 4).

``--where`` prints the manifest rows that satisfy a DuckDB SQL condition instead of the summary: any manifest
column (``manifests/schema.py``), list functions included (``list_max(pos_fraction) > 0.5``). Tables show the
first ``--limit`` rows (default 20; 0 for all); CSV (list columns as JSON text) and Parquet get every matching row
unless ``--limit`` says otherwise, streamed to ``--output`` (CSV also to stdout). ``DATASET`` is a local folder or
a pyarrow filesystem URI (``s3://bucket/shards``). ``--export FILE`` writes every row and column of every manifest
as one Parquet file (streamed, renamed into place when complete), for engines that read one file or a folder of
Parquet only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from jobs.cli import job_errors
from manifests import pictures
from manifests.inspect import format_summary, load_samples, sample_keys, summarize
from manifests.query import DEFAULT_COLUMNS, csv_schema, flat_for_csv, format_table, query_reader
from manifests.samples import Sample
from manifests.schema import MANIFEST_SCHEMA

TABLE_LIMIT = 20  # rows a table shows unless --limit says otherwise
DETECTOR_CAPTIONS = 3  # detector panels per sample: the captions its sample panel shows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="copa inspect", description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", help="a folder written by `copa pack` (local path or pyarrow URI)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of tables")
    p.add_argument("--histograms", metavar="DIR", help="write label_density.png and caption_length.png here")
    p.add_argument("--show", action="append", default=[], metavar="KEY", help="picture of this sample; repeatable")
    p.add_argument("--sample", type=int, default=0, metavar="N", help="pictures of N samples drawn at random")
    p.add_argument("--seed", type=int, default=0, help="seed of --sample (default: %(default)s)")
    p.add_argument("--out", default="inspect_out", help="folder for the pictures (default: %(default)s)")
    p.add_argument("--checkpoint", metavar="RUN_OR_FILE", help="with --show/--sample: that model's detector panels")
    q = p.add_argument_group("queries")
    q.add_argument("--where", metavar="SQL", help="print the manifest rows satisfying this condition, not a summary")
    q.add_argument("--columns", help=f"comma-separated manifest columns (default: {','.join(DEFAULT_COLUMNS)})")
    q.add_argument("--limit", type=int, metavar="N", help=f"at most N rows; 0 all (default: {TABLE_LIMIT} for a "
                   "table, all for csv and parquet)")  # fmt: skip
    q.add_argument("--format", choices=("table", "csv", "parquet"), default="table", help="(default: %(default)s)")
    q.add_argument("--output", metavar="FILE", help="write the rows here instead of stdout (required for parquet)")
    q.add_argument("--export", metavar="FILE", help="every manifest row and column as one Parquet file, for any engine "
                   "(= --where true --columns ALL --format parquet --output FILE)")  # fmt: skip
    args = p.parse_args(argv)
    if args.export:
        given = [f"--{n}" for n in ("where", "columns", "limit", "output") if getattr(args, n) is not None]
        if given or args.format != "table":
            raise ValueError(f"--export writes every row and column as Parquet; drop {', '.join(given) or '--format'}")
        args.where, args.columns, args.format, args.output = (
            "true",
            ",".join(MANIFEST_SCHEMA.names),
            "parquet",
            args.export,
        )
    return args


def check_args(args: argparse.Namespace) -> None:
    """Option combinations that make no sense, as a ValueError naming the options."""
    query_only = [f"--{n}" for n in ("columns", "limit", "output") if getattr(args, n) is not None]
    query_only += ["--format"] if args.format != "table" else []
    if args.where is None and query_only:
        raise ValueError(f"{', '.join(query_only)}: only with --where (--where true selects every row)")
    summary_only = [f"--{n}" for n in ("json", "histograms", "show", "sample", "checkpoint") if getattr(args, n)]
    if args.where is not None and summary_only:
        raise ValueError(f"--where prints rows instead of the summary; drop {', '.join(summary_only)}")
    if args.checkpoint and not (args.show or args.sample):
        raise ValueError("--checkpoint draws the detector on the samples of --show KEY or --sample N; give one")
    if args.format == "parquet" and not args.output:
        raise ValueError("--format parquet needs --output FILE")
    if args.limit is not None and args.limit < 0:
        raise ValueError(f"--limit must be >= 0, got {args.limit}")


def write_rows(args: argparse.Namespace) -> str:
    """Run the --where query and write its rows as asked; returns a line for stderr."""
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    limit = args.limit if args.limit is not None else (TABLE_LIMIT if args.format == "table" else 0)
    reader = query_reader(args.dataset, args.where, columns, limit or None)
    if args.format == "table":
        table = reader.read_all()
        more = f" (the first {limit}; --limit N or --limit 0 for more)" if limit and table.num_rows == limit else ""
        text = format_table(table) + f"\n{table.num_rows} rows{more}\n"
        if args.output:
            Path(args.output).write_text(text)
        else:
            print(text, end="")
        return f"{table.num_rows} rows" + (f" in {args.output}" if args.output else "")
    target = Path(args.output) if args.output else None
    tmp = target.with_name(f".{target.name}.tmp") if target else None  # renamed when complete
    num_rows = 0
    try:
        if args.format == "parquet":
            with pq.ParquetWriter(tmp, reader.schema, compression="zstd") as writer:
                for batch in reader:
                    writer.write_batch(batch)
                    num_rows += batch.num_rows
        else:
            sys.stdout.flush()  # CSV goes to the byte stream under stdout
            with pacsv.CSVWriter(str(tmp) if tmp else sys.stdout.buffer, csv_schema(reader.schema)) as writer:
                for batch in reader:
                    writer.write_batch(flat_for_csv(batch))
                    num_rows += batch.num_rows
    except BaseException:
        if tmp:
            tmp.unlink(missing_ok=True)
        raise
    if tmp:
        os.replace(tmp, target)
    return f"{num_rows} rows as {args.format}" + (f" in {target}" if target else "")


def write_detector_pictures(samples: list[Sample], model, tokenizer, out: Path) -> list[Path]:
    """``KEY_detector_C.png`` for the first ``DETECTOR_CAPTIONS`` captions C of each sample: PTA labels (or none,
    for a sample without boxes) | the model's detector scores | its kept patches, images and labels taken the way
    evaluation takes them (the whole image resized to the model's square, canonical coverage)."""
    from model.evaluate import detector_pictures, eval_set  # torch only when a checkpoint is given

    v = model.cfg.vision
    data = eval_set(samples, v.img_size, v.patch_size, "the samples shown")
    has_boxes = {s.key: s.pta is not None for s in samples}
    owner = np.asarray(data.caption_image)
    written = []
    for i, key in enumerate(data.keys):
        captions = [int(c) for c in np.flatnonzero(owner == i)[:DETECTOR_CAPTIONS]]
        for c, e in enumerate(detector_pictures(model, data, tokenizer, captions, "cpu")):
            coverage = e["coverage"] if has_boxes[key] else None
            panel = pictures.detector_panel(
                e["image"], e["caption"], e["words"], coverage, e["scores"], e["kept"], v.grid_size
            )
            written.append(pictures.save_png(panel, out / f"{key}_detector_{c}.png"))
    return written


def write_pictures(dataset: str, keys: list[str], out: Path, checkpoint: str | None = None) -> list[Path]:
    """One panel per sample and, for more than one, ``contact_sheet.png``; with a checkpoint (a file or a run
    folder), its detector panels too. Returns the files written."""
    if checkpoint:  # loaded first: a wrong path fails before anything is drawn
        from model.checkpoint import load_checkpoint, load_model  # torch only when a checkpoint is given

        model, tokenizer = load_model(load_checkpoint(checkpoint))
    samples = load_samples(dataset, keys)
    panels, written = [], []
    for sample in samples:
        meta = sample.meta
        panel = pictures.sample_panel(
            sample.image, meta["boxes"], meta["box_labels"], meta["captions"], meta["relevant"], sample.pta
        )
        written.append(pictures.save_png(panel, out / f"{sample.key}.png"))
        panels.append(panel)
    if len(panels) > 1:
        sheet = pictures.contact_sheet(panels, columns=2, titles=keys)
        written.append(pictures.save_png(sheet, out / "contact_sheet.png"))
    if checkpoint:
        written += write_detector_pictures(samples, model, tokenizer, out)
    return written


@job_errors("inspect")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_args(args)
    if args.where is not None:
        print(f"[inspect] {write_rows(args)}", file=sys.stderr)
        return 0
    summary = summarize(args.dataset)
    keys = list(args.show) + (sample_keys(args.dataset, args.sample, args.seed) if args.sample else [])
    written = write_pictures(args.dataset, keys, Path(args.out), args.checkpoint) if keys else []
    if args.histograms:
        from manifests.histograms import write_histograms  # matplotlib only when asked for

        written += write_histograms(summary, args.histograms)
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    if written:
        folders = sorted({str(p.parent) for p in written})
        print(f"[inspect] {len(written)} pictures in {', '.join(folders)}: {', '.join(p.name for p in written[:4])}"
              f"{', ...' if len(written) > 4 else ''}", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
