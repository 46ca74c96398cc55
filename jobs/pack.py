"""``copa pack --source source.parquet --out DIR``: a Ray Data job that writes WebDataset shards with PTA labels.

Reads top to bottom: config -> plan -> read -> assign shards -> group -> pack each shard -> finalize.

- **Config**: ``--config pack.yaml`` (the fields of ``pipeline.pack.PackConfig``: ``samples_per_shard``,
  ``image: {max_short_side, jpeg_quality, ...}``, ``geometry: {image_size, patch_size}``), then flags on top.
- **Plan** (driver): only the ``key`` column of the source manifest is read; the shard plan is a few hundred hash
  boundaries (``pipeline.pack``), independent of workers and execution order.
- **Work** (Ray Data): ``read_parquet`` of the source manifest, each row tagged with its shard, grouped by shard;
  one call of ``ShardPacker`` writes one whole shard. Without ``RAY_ADDRESS`` an embedded local cluster starts;
  with it (``ray job submit``) the job joins that cluster. Inputs and outputs may be URIs (``s3://...``).
  ``--engine local`` does the same work without Ray, for jobs that fit one machine: the source rows are grouped by
  shard in this process, and ``ShardPacker`` runs here (one worker) or in a pool of ``--workers`` processes. Ray's
  start-up and shuffle cost about 15 s before the first shard; the shards are the same bytes either way.
- **Resume**: a shard whose stats file exists is done. ``pack_config.json`` in the output records the config and
  the source manifest's checksum; a rerun with anything else refuses to mix into the folder unless ``--overwrite``
  (which deletes the old shards first).
- **Finalize**: ``dataset.json`` (config, geometry, totals per source) and ``sizes.json`` from every shard's stats and
  manifest, and a summary on the console. The answers table ``copa ingest`` wrote beside the source manifest
  (``<source>.answers.parquet``, VQA sources) is copied to ``answers.parquet`` in the output.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import yaml
from tqdm import tqdm

from jobs.cli import job_errors
from manifests.dataset import (
    DatasetInfo,
    ShardStats,
    atomic_write,
    read_manifest,
    read_stats,
    read_text,
    write_dataset_info,
    write_sizes,
)
from manifests.schema import DATASET_FILE, SCHEMA_VERSION, SIZES_FILE, STATUS_OK, shard_files, shard_name
from pipeline.fetch import filesystem
from pipeline.pack import PackConfig, ShardPacker, ShardPlan, key_hashes, plan_shards, shard_index
from pipeline.rows import open_source_table

ANSWERS_FILE = "answers.parquet"  # the VQA answers of the packed questions, keyed by (key, caption index)
PACK_RECORD = "pack_config.json"  # what an output folder was packed from, checked before resuming into it
# A shard task whose worker dies (node lost, out of memory) is retried this often, then the job fails rather than
# retrying forever (Ray Data's default) on a shard that kills every worker it lands on.
MAX_RETRIES = 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="copa pack", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="source manifest written by 'copa ingest' (Parquet)")
    parser.add_argument("--out", required=True, help="output folder (local path or URI) for shards and manifests")
    parser.add_argument("--config", help="YAML file with PackConfig fields; flags below override it")
    parser.add_argument("--samples-per-shard", type=int, help="input rows per shard (default 5000)")
    parser.add_argument("--max-short-side", type=int, help="shorter side cap of stored images in px (default 384)")
    parser.add_argument("--jpeg-quality", type=int, help="quality of re-encoded JPEGs (default 90)")
    parser.add_argument("--image-size", type=int, help="canonical label geometry: image side in px (default 256)")
    parser.add_argument("--patch-size", type=int, help="canonical label geometry: patch side in px (default 16)")
    parser.add_argument("--workers", type=int, help="concurrent shard writers (default: every CPU of the cluster)")
    parser.add_argument(
        "--engine",
        choices=("ray", "local"),
        default="ray",
        help="ray: a Ray Data job (an embedded cluster, or the one of RAY_ADDRESS); local: this machine's processes, "
        "no Ray, for sources whose rows fit in memory (default: %(default)s)",
    )
    parser.add_argument("--overwrite", action="store_true", help="delete an existing pack with another config first")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> PackConfig:
    data: dict = {}
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{args.config}: pack config not found") from err
        if not isinstance(data, dict):
            raise ValueError(f"{args.config}: expected a mapping of PackConfig settings")
    flags = {
        ("samples_per_shard",): args.samples_per_shard,
        ("image", "max_short_side"): args.max_short_side,
        ("image", "jpeg_quality"): args.jpeg_quality,
        ("geometry", "image_size"): args.image_size,
        ("geometry", "patch_size"): args.patch_size,
    }
    for path, value in flags.items():
        if value is not None:
            target = data
            for part in path[:-1]:
                target = target.setdefault(part, {})
            target[path[-1]] = value
    return PackConfig.from_dict(data, where=args.config or "pack flags")


def file_sha256(path: str) -> str:
    fs, inner = filesystem(path)
    digest = hashlib.sha256()
    with fs.open_input_stream(inner) as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def source_key_hashes(path: str) -> np.ndarray:
    """The key hashes of every source row, reading the ``key`` column batch by batch: planning memory is the
    8-byte hashes plus one batch of keys, whatever the corpus size (DESIGN section 9)."""
    source = open_source_table(path)
    if not source.metadata.num_rows:
        raise ValueError(f"{path}: the source manifest has no rows")
    batches = source.iter_batches(batch_size=1 << 16, columns=["key"])
    return np.concatenate([key_hashes(batch.column(0).to_pylist()) for batch in batches])


# --- the output folder: resume or refuse ---------------------------------------------------------------------------


def prepare_output(fs: pafs.FileSystem, root: str, record: dict, overwrite: bool) -> None:
    """Create the folder, or check that what it holds was packed with the same config and source."""
    fs.create_dir(root, recursive=True)
    names = {info.base_name for info in fs.get_file_info(pafs.FileSelector(root))}
    if PACK_RECORD in names:
        old = json.loads(read_text(f"{root}/{PACK_RECORD}", fs))
        if old == record:
            return
        changed = sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))
        if not overwrite:
            raise ValueError(
                f"{root}: already holds a pack with another {' and '.join(changed)} (see {PACK_RECORD}); "
                "use the same settings to resume, another --out, or --overwrite to delete it and start again"
            )
    elif names and not overwrite:
        raise ValueError(f"{root}: not empty and not a pack output (no {PACK_RECORD}); use --overwrite to clear it")
    if overwrite:
        for name in names:
            fs.delete_file(f"{root}/{name}")
    atomic_write(f"{root}/{PACK_RECORD}", (json.dumps(record, indent=1, sort_keys=True) + "\n").encode(), fs)


def remove_temporaries(fs: pafs.FileSystem, root: str) -> set[str]:
    """Delete temp files of writes that were cut short (a killed driver or a retried worker); returns the names
    of the files that remain."""
    names = set()
    for info in fs.get_file_info(pafs.FileSelector(root)):
        if ".tmp-" in info.base_name:
            fs.delete_file(info.path)
        else:
            names.add(info.base_name)
    return names


def finished_shards(names: set[str], num_shards: int) -> set[int]:
    """Shards whose stats file (written last) is there, with their tar and manifest."""
    return {i for i in range(num_shards) if set(shard_files(shard_name(i)).values()) <= names}


# --- Ray adapter -----------------------------------------------------------------------------------------------------


def assign_shards(batch: pa.Table, boundaries: list[int], todo: list[int]) -> pa.Table:
    """Tag each source row with its shard; keep the rows of shards still to do."""
    shards = pa.array(shard_index(np.array(boundaries, dtype=np.uint64), key_hashes(batch["key"].to_pylist())))
    batch = batch.append_column("shard", shards)
    return batch.filter(pc.is_in(batch["shard"], pa.array(todo, pa.int64())))


def collect_shard(group: pa.Table) -> pa.Table:
    """One group -> one row: the shard's source rows as Arrow IPC bytes, so that the next stage gets exactly one
    shard per task (a shuffle block may hold several groups, and a task that packs them in a row serializes them)."""
    sink = pa.BufferOutputStream()
    rows = group.drop_columns(["shard"])
    with pa.ipc.new_stream(sink, rows.schema) as writer:
        writer.write_table(rows)
    return pa.table({"shard": [group["shard"][0].as_py()], "rows": [sink.getvalue().to_pybytes()]})


def pack_shard(batch: pa.Table, out: str, config: dict) -> pa.Table:
    """Write one whole shard. Plain tasks, not actors: an actor holds its CPU for the job's lifetime, which starves
    the read and shuffle on small clusters. Ray reuses worker processes, so the fetcher's tar index cache (module
    level) still lives across shards."""
    (shard,), (data,) = batch["shard"].to_pylist(), batch["rows"].to_pylist()
    rows = pa.ipc.open_stream(data).read_all().to_pylist()
    stats = ShardPacker(out, PackConfig.from_dict(config)).pack(shard, rows)
    return pa.table({"stats": [json.dumps(stats.__dict__)]})


class Progress:
    """Shards done: a bar on a terminal; one line per shard in logs (``ray job logs`` is not a terminal)."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.quiet, self.interactive = total, quiet, sys.stderr.isatty()
        self.bar = tqdm(total=total, unit=" shards", desc="pack", disable=quiet or not self.interactive)
        self.done = self.samples = self.rejected = 0
        self.start = time.perf_counter()

    def add(self, stats: dict) -> None:
        self.done += 1
        self.samples, self.rejected = self.samples + stats["num_ok"], self.rejected + stats["num_rejected"]
        self.bar.set_postfix(samples=self.samples, rejected=self.rejected, refresh=False)
        self.bar.update(1)
        if not self.interactive and not self.quiet:
            rate = self.samples / (time.perf_counter() - self.start)
            line = f"[pack] shard {stats['shard']}: {stats['num_ok']} ok, {stats['num_rejected']} rejected"
            print(f"{line} ({self.done}/{self.total} shards, {self.samples} samples, {rate:.0f}/s)", flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()


def run_ray(args: argparse.Namespace, config: PackConfig, plan: ShardPlan, todo: list[int], out: str) -> None:
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(logging_level="WARNING", configure_logging=True)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # ours below counts shards and samples
        ctx.print_on_execution_start = False
        workers = args.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        ds = (
            ray.data.read_parquet(args.source)
            .map_batches(
                assign_shards,
                fn_kwargs={"boundaries": [int(b) for b in plan.boundaries], "todo": todo},
                batch_format="pyarrow",
            )
            .groupby("shard", num_partitions=max(1, len(todo)))
            .map_groups(collect_shard, batch_format="pyarrow")
            .repartition(len(todo))  # one shard per block: hash partitions put several shards into some blocks
            .map_batches(
                pack_shard,
                batch_size=1,
                fn_kwargs={"out": out, "config": config.to_dict()},
                batch_format="pyarrow",
                compute=ray.data.TaskPoolStrategy(size=workers),
                num_cpus=1,  # image work is CPU-bound and single-threaded: one shard writer per core
                max_retries=MAX_RETRIES,
            )
        )
        with Progress(len(todo), args.quiet) as progress:
            for row in ds.iter_rows():
                progress.add(json.loads(row["stats"]))
    finally:
        if started_here:
            ray.shutdown()


# --- without Ray -----------------------------------------------------------------------------------------------------


def add_by_shard(groups: dict[int, list[dict]], rows: list[dict], plan: ShardPlan) -> None:
    """Append each row to its shard's list in ``groups``; rows of shards not in ``groups`` are left out."""
    shards = plan.shard_of(key_hashes([row["key"] for row in rows])).tolist()
    for row, shard in zip(rows, shards, strict=True):
        if shard in groups:
            groups[shard].append(row)


def rows_by_shard(source: str, plan: ShardPlan, todo: list[int]) -> dict[int, list[dict]]:
    """The source rows of the shards to do, grouped by shard, in source order (as the Ray job hands them over)."""
    groups: dict[int, list[dict]] = {shard: [] for shard in todo}
    for batch in open_source_table(source).iter_batches(batch_size=1 << 14):
        add_by_shard(groups, batch.to_pylist(), plan)
    return groups


def _pack_one(out: str, config: dict, shard: int, rows: list[dict]) -> dict:
    return ShardPacker(out, PackConfig.from_dict(config)).pack(shard, rows).__dict__


def run_local(args: argparse.Namespace, config: PackConfig, plan: ShardPlan, todo: list[int], out: str) -> None:
    groups = rows_by_shard(args.source, plan, todo)
    workers = max(1, min(args.workers or os.cpu_count() or 1, len(todo)))
    with Progress(len(todo), args.quiet) as progress:
        if workers == 1:  # no pool: the cheapest way to one worker
            for shard in todo:
                progress.add(_pack_one(out, config.to_dict(), shard, groups.pop(shard)))
            return
        # spawn, not fork: this process has pyarrow's thread pools running
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_pack_one, out, config.to_dict(), s, groups.pop(s)) for s in todo]
            for future in as_completed(futures):
                progress.add(future.result())


# --- finalize --------------------------------------------------------------------------------------------------------


def finalize(
    fs: pafs.FileSystem, root: str, config: PackConfig, num_shards: int
) -> tuple[DatasetInfo, list[ShardStats]]:
    """Write ``sizes.json`` and ``dataset.json`` from every shard's stats and manifest; returns both."""
    names = [shard_name(i) for i in range(num_shards)]
    stats: list[ShardStats] = [read_stats(root, name, fs) for name in names]
    manifests = read_manifest([f"{root}/{shard_files(n)['manifest']}" for n in names], ["source", "status"], fs)
    sources: dict[str, Counter] = {}
    for source, status in zip(manifests["source"].to_pylist(), manifests["status"].to_pylist(), strict=True):
        counts = sources.setdefault(source, Counter())
        counts["input"] += 1
        counts["ok" if status == STATUS_OK else "rejected"] += 1
    info = DatasetInfo(
        num_shards=num_shards,
        num_samples=sum(s.num_ok for s in stats),
        num_rejected=sum(s.num_rejected for s in stats),
        geometry=config.geometry,
        sources={name: {k: c[k] for k in ("input", "ok", "rejected")} for name, c in sorted(sources.items())},
        config=config.to_dict(),
        libraries=_libraries(stats),
    )
    write_sizes(root, {shard_files(s.shard)["tar"]: s.num_ok for s in stats}, fs)
    write_dataset_info(root, info, fs)
    return info, stats


def copy_answers(source: str, fs: pafs.FileSystem, root: str) -> int | None:
    """Copy ``<source>.answers.parquet`` to ``<root>/answers.parquet``; returns its rows, or None where the source has
    no answers (a copy left by an earlier pack is then removed). The table is small: one row per question."""
    source_fs, path = filesystem(f"{source}.answers.parquet")
    target = f"{root}/{ANSWERS_FILE}"
    if source_fs.get_file_info(path).type != pafs.FileType.File:
        if fs.get_file_info(target).type == pafs.FileType.File:
            fs.delete_file(target)
        return None
    with source_fs.open_input_stream(path) as f:
        data = f.read()
    atomic_write(target, data, fs)
    return pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows


def _libraries(stats: list[ShardStats]) -> dict[str, str | list[str]]:
    """The workers' library versions: one per library, or the sorted list where shards were written with several."""
    seen: dict[str, set[str]] = {}
    for s in stats:
        for name, version in s.libraries.items():
            seen.setdefault(name, set()).add(version)
    return {name: min(v) if len(v) == 1 else sorted(v) for name, v in sorted(seen.items())}


def pack_in_process(rows: list[dict], out: str, config: PackConfig) -> tuple[DatasetInfo, list[ShardStats]]:
    """The same pack without Ray, one shard after another in this process (tests and benchmarks): the same plan,
    the same ``ShardPacker`` and the same ``finalize``, so the output is byte-identical to ``copa pack``'s."""
    plan = plan_shards(key_hashes([r["key"] for r in rows]), config.samples_per_shard)
    groups: dict[int, list[dict]] = {shard: [] for shard in range(plan.num_shards)}
    add_by_shard(groups, rows, plan)
    packer = ShardPacker(out, config)
    for index, shard_rows in groups.items():
        packer.pack(index, shard_rows)
    fs, root = filesystem(out)
    return finalize(fs, root, config, plan.num_shards)


def format_summary(info: DatasetInfo, stats: list[ShardStats]) -> str:
    lines = [f"{'source':<10} {'input':>9} {'ok':>9} {'rejected':>9}", "-" * 40]
    lines += [f"{name:<10} {c['input']:>9} {c['ok']:>9} {c['rejected']:>9}" for name, c in info.sources.items()]
    reasons, drops = Counter(), Counter()
    for s in stats:
        reasons.update(s.rejected)
        drops.update(s.boxes_dropped)
    if reasons:
        lines.append("rejected: " + ", ".join(f"{r} {n}" for r, n in sorted(reasons.items())))
    if drops:
        lines.append("boxes dropped at pack: " + ", ".join(f"{r} {n}" for r, n in sorted(drops.items())))
    tar_bytes = sum(s.tar_bytes for s in stats)
    lines.append(f"{info.num_samples} samples in {info.num_shards} shards, {tar_bytes / 1e6:.1f} MB of tars")
    return "\n".join(lines)


@job_errors("pack")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = resolve_config(args)
    start = time.perf_counter()
    plan = plan_shards(source_key_hashes(args.source), config.samples_per_shard)
    fs, root = filesystem(args.out)
    record = {
        "schema_version": SCHEMA_VERSION,
        "config": config.to_dict(),
        "source": {"rows": plan.num_rows, "sha256": file_sha256(args.source)},
    }
    prepare_output(fs, root, record, args.overwrite)
    done = finished_shards(remove_temporaries(fs, root), plan.num_shards)
    todo = [i for i in range(plan.num_shards) if i not in done]
    print(f"{plan.num_rows} rows -> {plan.num_shards} shards ({len(done)} already done) in {root}", flush=True)
    if todo:
        (run_local if args.engine == "local" else run_ray)(args, config, plan, todo, args.out)
        remove_temporaries(fs, root)  # a retried shard's first attempt may have left one
    info, stats = finalize(fs, root, config, plan.num_shards)
    num_answers = copy_answers(args.source, fs, root)
    print(format_summary(info, stats))
    if num_answers is not None:
        print(f"{ANSWERS_FILE}: the answers of {num_answers} questions")
    print(f"packed in {time.perf_counter() - start:.1f}s; {DATASET_FILE} and {SIZES_FILE} written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
