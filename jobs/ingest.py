"""``copa ingest --config sources.yaml --out source.parquet``: every source to one normalized table.

Reads each source of the YAML with its reader (``pipeline.readers``), merges Visual Genome images that are also
COCO images (``image_data.coco_id``) into the COCO sample so no image is packed twice, and streams one row per
image into a Parquet source manifest. Rows that cannot be used are kept with a status reason; the summary
printed per source adds up: input images = written ok + rejected + merged into another source's sample.

Memory: COCO rows are held until the VG sources have been read (they are the merge targets); rows of the readers
that build rows are streamed to disk in batches; the readers that build columns (JSON lists, img2dataset folders:
``pipeline.readers.columnar``) hand over one source's table at a time. The resolved config and the summary are
written next to the output as ``<out>.ingest.json``.

``--engine ray`` reads every source other than COCO and VG in Ray Data tasks (one per file, one per img2dataset
shard), locally or on the cluster of ``RAY_ADDRESS`` (``ray job submit``); the driver takes their results in order,
claims img2dataset keys across a folder's shards, reads COCO and VG itself and writes the same manifest as on any
other number of workers.

Sources whose reader also gives an answers table (VQA: ``readers.vqa.ANSWERS_SCHEMA``) have it written, all such
sources in one table, to ``<out>.answers.parquet``; ``copa pack`` copies it into the dataset. A rerun without such
sources removes the file an earlier run left.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from jobs.cli import job_errors
from manifests.schema import STATUS_OK
from pipeline.geometry import DROP_REASONS
from pipeline.readers import img2dataset, read_source, read_source_columns, reader
from pipeline.readers.coco import UNKNOWN_CATEGORY
from pipeline.rows import SOURCE_SCHEMA, SourceRow, SourceTableWriter
from pipeline.sources import SourceSpec, load_sources

MERGED = "merged"  # a VG image folded into its COCO sample: counted, not written


@dataclass
class SourceSummary:
    images: int = 0  # input images (rows the reader produced)
    ok: int = 0
    merged: int = 0  # VG images merged into a COCO sample
    captions: int = 0  # captions of ok rows
    boxes: int = 0  # boxes of ok rows
    grounded_captions: int = 0  # captions with at least one relevant box
    boxes_dropped: int = 0
    boxes_clipped: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason -> rows
    reader_stats: Counter = field(default_factory=Counter)  # what the reader counted (box drop reasons, ...)

    @property
    def box_drops(self) -> dict[str, int]:
        return {r: self.reader_stats[r] for r in (*DROP_REASONS, UNKNOWN_CATEGORY) if self.reader_stats[r]}

    def add(self, row: SourceRow) -> None:
        self.images += 1
        self.boxes_dropped += row.boxes_dropped
        self.boxes_clipped += row.boxes_clipped
        if row.status != STATUS_OK:
            self.rejected[row.status] += 1
            return
        self.ok += 1
        self.captions += len(row.captions)
        self.boxes += len(row.boxes)
        self.grounded_captions += sum(1 for rel in row.relevant if rel["boxes"])

    def add_table(self, table: pa.Table) -> None:
        """``add`` for every row of a table in the source-manifest schema, with column operations."""
        self.images += table.num_rows
        self.boxes_dropped += pc.sum(table["boxes_dropped"]).as_py() or 0
        self.boxes_clipped += pc.sum(table["boxes_clipped"]).as_py() or 0
        for item in table["status"].value_counts().to_pylist():
            if item["values"] == STATUS_OK:
                self.ok += item["counts"]
            else:
                self.rejected[item["values"]] += item["counts"]
        ok = pc.equal(table["status"], STATUS_OK)  # a mask, not a filtered copy of every column

        def ok_sum(values: pa.ChunkedArray) -> int:
            return pc.sum(pc.if_else(ok, values, 0)).as_py() or 0

        self.captions += ok_sum(pc.list_value_length(table["captions"]))
        boxes = ok_sum(pc.list_value_length(table["boxes"]))
        self.boxes += boxes
        if boxes:  # only the rows with boxes can have a grounded caption
            relevant = table.filter(ok)["relevant"].combine_chunks()
            per_caption = pc.list_value_length(pc.struct_field(relevant.flatten(), "boxes"))
            self.grounded_captions += pc.sum(pc.greater(per_caption, 0)).as_py() or 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="copa ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="sources.yaml naming the annotation files and image roots")
    parser.add_argument("--out", required=True, help="the source manifest to write (Parquet)")
    parser.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: every source read in this process (default); ray: the web sources (JSON lists, X-VLM files, "
        "img2dataset shards) read by Ray Data tasks, on the cluster of RAY_ADDRESS (ray job submit) or a local one",
    )
    parser.add_argument("--workers", type=int, help="concurrent Ray read tasks (default: every CPU of the cluster)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def _merge_vg(vg_spec: SourceSpec, coco_rows: dict[int, SourceRow], summary: SourceSummary) -> Iterator[SourceRow]:
    """VG rows, with those that are also COCO images folded into the COCO row instead of yielded."""
    from pipeline.readers.vg import merge_into, read_with_coco_ids

    for row, coco_id in read_with_coco_ids(vg_spec, summary.reader_stats):
        target = coco_rows.get(coco_id) if coco_id is not None else None
        if row.status == STATUS_OK and target is not None and target.status == STATUS_OK:
            merge_into(target, row)
            summary.images += 1
            summary.merged += 1
            continue
        yield row


def ingest(
    specs: list[SourceSpec], out: str, progress: bool = True, tables: Iterator[tuple[pa.Table, dict]] | None = None
) -> dict[str, SourceSummary]:
    """Read every source and write the source manifest; returns the summary per source.

    ``tables`` (the Ray engine) gives the rows of every source that is not COCO or VG, in config order, as tables
    with the reader's stats, read elsewhere; without it they are read here."""
    summaries = {spec.name: SourceSummary() for spec in specs}
    coco_specs = [s for s in specs if s.format == "coco"]
    vg_specs = [s for s in specs if s.format == "vg"]
    coco_rows: dict[int, SourceRow] = {}
    for spec in coco_specs if vg_specs else []:
        rows = read_source(spec, summaries[spec.name].reader_stats)
        for row in tqdm(rows, desc=f"read {spec.name}", unit=" images", disable=not progress):
            coco_rows.setdefault(int(row.image_id), row)

    with SourceTableWriter(out) as writer:
        for spec in specs:
            if spec.format == "coco" and vg_specs:
                continue  # held for merging, written at the end
            summary = summaries[spec.name]
            table = None
            if tables is not None and spec.format not in LOCAL_FORMATS:
                table, stats = next(tables)
                summary.reader_stats.update(stats)
            elif spec.format != "vg":
                table = read_source_columns(spec, summary.reader_stats)
            if table is not None:
                summary.add_table(table)
                writer.write_table(table)
                if progress:
                    tqdm.write(f"read {spec.name}: {table.num_rows} images")
                continue
            rows = (
                _merge_vg(spec, coco_rows, summary) if spec.format == "vg" else read_source(spec, summary.reader_stats)
            )
            for row in tqdm(rows, desc=f"read {spec.name}", unit=" images", disable=not progress):
                summary.add(row)
                writer.write_row(row)
        for spec in coco_specs if vg_specs else []:
            for row in coco_rows.values():
                if row.source == spec.name:
                    summaries[spec.name].add(row)
                    writer.write_row(row)
    return summaries


# --- on Ray Data -----------------------------------------------------------------------------------------------------

# Read by the driver: small, VG merges into COCO there, and the VQA readers are read again for their answers.
LOCAL_FORMATS = ("coco", "vg", "vqa", "vqa_json", "refexp")


def ray_parts(specs: list[SourceSpec]) -> list[dict]:
    """The tasks of the Ray engine, in the order their results are written: one per source that is not COCO or VG,
    except img2dataset folders, read one task per shard (tar)."""
    parts = []
    for spec in specs:
        if spec.format in LOCAL_FORMATS:
            continue
        shards = img2dataset.shards(spec) if spec.format == "img2dataset" else [("", False)]
        parts += [
            {"source": spec.name, "spec": spec.to_json(), "shard": tar, "sidecar": sidecar} for tar, sidecar in shards
        ]
    return parts


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as stream:
        stream.write_table(table)
    return sink.getvalue().to_pybytes()


def read_part(batch: pa.Table) -> pa.Table:
    """One Ray Data task: the rows of a source (or the records of one img2dataset shard) as Arrow IPC bytes, with
    the reader's stats, so that parts of any schema travel in one column."""
    payloads, stats_out = [], []
    for part in batch.to_pylist():
        spec, stats = SourceSpec.from_json(part["spec"]), Counter()
        if part["shard"]:
            table = img2dataset.shard_records(spec, part["shard"], part["sidecar"])
        else:
            table = read_source_columns(spec, stats)
            if table is None:
                table = pa.Table.from_pylist([vars(row) for row in read_source(spec, stats)], schema=SOURCE_SCHEMA)
        payloads.append(_ipc(table))
        stats_out.append(json.dumps(dict(stats)))
    return pa.table({"table": pa.array(payloads, pa.large_binary()), "stats": stats_out})


def ray_tables(specs: list[SourceSpec], parts: list[dict], rows: Iterator[dict]) -> Iterator[tuple[pa.Table, dict]]:
    """The tables ``ingest`` takes, from the Ray results of ``parts`` in order: img2dataset shards become rows here,
    where keys are claimed across the folder."""
    for spec in specs:
        if spec.format in LOCAL_FORMATS:
            continue
        if spec.format != "img2dataset":
            row = next(rows)
            yield pa.ipc.open_stream(row["table"]).read_all(), json.loads(row["stats"])
            continue
        num_shards = sum(part["source"] == spec.name for part in parts)
        records = [pa.ipc.open_stream(next(rows)["table"]).read_all() for _ in range(num_shards)]
        yield img2dataset.rows_from_records(spec, records), {}


def ingest_on_ray(specs: list[SourceSpec], out: str, workers: int | None, progress: bool) -> dict[str, SourceSummary]:
    """``ingest`` with the web sources read by Ray Data tasks; the output is the same whatever the number of workers
    (results are taken in part order)."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(logging_level="WARNING", configure_logging=True)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ctx.execution_options.preserve_order = True
        parts = ray_parts(specs)
        workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        ds = ray.data.from_items(parts, override_num_blocks=max(1, len(parts))).map_batches(
            read_part,
            batch_size=1,
            batch_format="pyarrow",
            compute=ray.data.TaskPoolStrategy(size=workers),
            num_cpus=1,
        )
        return ingest(specs, out, progress, tables=ray_tables(specs, parts, iter(ds.iter_rows())))
    finally:
        if started_here:
            ray.shutdown()


def write_answers(specs: list[SourceSpec], out: str) -> tuple[str, int | None]:
    """Write the answers tables of the sources whose reader has one to ``<out>.answers.parquet`` (zstd), in config
    order; returns the path and its rows, or None rows (and an earlier run's file removed) when no source has
    answers. The readers parse their files again: the rows went to the manifest without their answers."""
    path = f"{out}.answers.parquet"
    tables = [reader(spec).answers_table(spec) for spec in specs if hasattr(reader(spec), "answers_table")]
    if not tables:
        if os.path.exists(path):
            os.remove(path)
        return path, None
    table = pa.concat_tables(tables)
    pq.write_table(table, path, compression="zstd")
    return path, table.num_rows


def format_summary(summaries: dict[str, SourceSummary]) -> str:
    header = f"{'source':<10} {'images':>9} {'ok':>9} {'merged':>7} {'captions':>10} {'grounded':>9} {'boxes':>9}"
    lines = [header, "-" * len(header)]
    for name, s in summaries.items():
        grounded = f"{s.grounded_captions / s.captions:.1%}" if s.captions else "-"
        lines.append(f"{name:<10} {s.images:>9} {s.ok:>9} {s.merged:>7} {s.captions:>10} {grounded:>9} {s.boxes:>9}")
    for name, s in summaries.items():
        if s.rejected:
            reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(s.rejected.items()))
            lines.append(f"{name}: rejected {sum(s.rejected.values())} ({reasons})")
        if s.boxes_dropped or s.boxes_clipped:
            reasons = ", ".join(f"{reason} {n}" for reason, n in s.box_drops.items())
            lines.append(f"{name}: boxes dropped {s.boxes_dropped}{f' ({reasons})' if reasons else ''}, "
                         f"clipped {s.boxes_clipped}")  # fmt: skip
    return "\n".join(lines)


@job_errors("ingest")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    specs = load_sources(args.config)
    start = time.perf_counter()
    progress = not args.quiet and sys.stderr.isatty()
    if args.engine == "ray":
        summaries = ingest_on_ray(specs, args.out, args.workers, progress)
    else:
        summaries = ingest(specs, args.out, progress)
    answers_path, num_answers = write_answers(specs, args.out)
    seconds = time.perf_counter() - start
    print(format_summary(summaries))
    total = sum(s.images for s in summaries.values())
    print(f"{total} images from {len(specs)} sources -> {args.out} in {seconds:.1f}s")
    if num_answers is not None:
        print(f"{num_answers} questions with their answers -> {answers_path}")
    record = {
        "config": args.config,
        "sources": [vars(s) | {"files": dict(s.files)} for s in specs],
        "summary": {
            name: vars(s) | {"rejected": dict(s.rejected), "reader_stats": dict(s.reader_stats)}
            for name, s in summaries.items()
        },
        "seconds": round(seconds, 3),
        "answers": None if num_answers is None else {"path": answers_path, "questions": num_answers},
    }
    with open(f"{args.out}.ingest.json", "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
