"""``copa bench inspect``: the streamed ``copa inspect`` summary and a ``--where`` query over N synthetic manifest
rows, against pyarrow reading the same columns all at once, in the same run.

    copa bench inspect [--rows 4000000] [--files 80] [--quick] [--out bench_out/inspect.json]

The rows follow the 4M-image corpus of the paper (DESIGN section 1): about 73% CC3M and 21.5% SBU images with one
caption and no boxes, 3% COCO images with 5 captions and 2.5% Visual Genome images with 30-70 region captions, the
COCO and VG captions mostly grounded; 1% of the rows are rejections. They are written as valid manifests
(``MANIFEST_SCHEMA``, zstd, as ``write_manifest`` writes them) into ``--files`` Parquet files of a temporary folder
with a ``dataset.json`` and a ``sizes.json``, so ``summarize`` and ``query`` read them as a packed dataset (without
tars). Every figure is measured in a fresh interpreter, so its peak RSS (``VmHWM``) is its own and not the
writer's:

- summary: ``manifests.inspect.summarize`` (one manifest at a time) vs
  ``pyarrow.dataset.dataset(files).to_table(columns=SUMMARY_COLUMNS)``, which only reads what the summary reads;
- query: ``manifests.query.query(root, "status != 'ok'")`` (the rejected rows, default columns) vs the same
  filter and columns through ``pyarrow.dataset``'s ``to_table(filter=...)``;
- bare: an interpreter that imports pyarrow, DuckDB and the inspect modules and does nothing, for scale.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.bench.runner import mb, run_fresh, write_report
from manifests.dataset import DatasetInfo, Geometry, write_dataset_info, write_sizes
from manifests.inspect import SUMMARY_COLUMNS, _rows
from manifests.schema import MANIFEST_SCHEMA, STATUS_OK, shard_files, shard_name

# (source, share of the rows, captions per image (low, high), share of captions naming a box, words (mean, sd))
MIX = (
    ("cc3m", 0.73, (1, 1), 0.0, (10, 4)),
    ("sbu", 0.215, (1, 1), 0.0, (12, 5)),
    ("coco", 0.03, (5, 5), 0.9, (10, 2)),
    ("vg", 0.025, (30, 70), 0.8, (5, 2)),
)
REJECTED_SHARE = 0.01
REASONS = ("missing_file", "not_an_image", "too_small")
SYLLABLES = ("ba", "ke", "lo", "mi", "tu", "ra", "ne", "so", "di",
             "ga", "po", "ve", "zu", "shi", "an", "el", "or", "ta")  # fmt: skip
VOCABULARY = 1000  # distinct caption words, drawn with Zipf-like frequencies; every caption is its own text
WHERE = f"status != '{STATUS_OK}'"

_SUMMARY = """
import time
from manifests.inspect import summarize
args = json.loads(sys.argv[1])
start = time.perf_counter()
summary = summarize(args["root"], args["caption_lengths"])
result = {"seconds": time.perf_counter() - start, "samples": summary["samples"], "captions": summary["captions"]}
"""
_READ_ALL = """
import time
import pyarrow.dataset as pads
args = json.loads(sys.argv[1])
start = time.perf_counter()
table = pads.dataset(args["files"], format="parquet").to_table(columns=args["columns"])
result = {"seconds": time.perf_counter() - start, "rows": table.num_rows}
"""
_QUERY = """
import time
from manifests.query import query
args = json.loads(sys.argv[1])
start = time.perf_counter()
table = query(args["root"], args["where"])
result = {"seconds": time.perf_counter() - start, "rows": table.num_rows}
"""
_FILTER = """
import time
import pyarrow.compute as pc
import pyarrow.dataset as pads
from manifests.query import DEFAULT_COLUMNS
args = json.loads(sys.argv[1])
start = time.perf_counter()
dataset = pads.dataset(args["files"], format="parquet")
table = dataset.to_table(columns=DEFAULT_COLUMNS, filter=pc.field("status") != args["status_ok"])
result = {"seconds": time.perf_counter() - start, "rows": table.num_rows}
"""
_BARE = """
import duckdb, pyarrow.dataset, manifests.inspect, manifests.query
result = {"seconds": 0.0}
"""


def _vocabulary(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Word bytes concatenated, each word's start and length, and the words' drawing probabilities."""
    words: set[str] = set()
    while len(words) < VOCABULARY:
        words.add("".join(rng.choice(SYLLABLES, size=rng.integers(1, 4))))
    ordered = sorted(words)
    lengths = np.array([len(w) for w in ordered])
    weights = 1.0 / np.arange(1, VOCABULARY + 1)
    text = np.frombuffer("".join(ordered).encode(), np.uint8)
    return text, np.cumsum(lengths) - lengths, lengths, weights / weights.sum()


def _captions(rng: np.random.Generator, vocabulary: tuple, num_words: np.ndarray) -> pa.Array:
    """One caption per entry of ``num_words`` (each >= 1), words joined by single spaces, built on byte buffers:
    Python strings for ~10M captions would take longer than everything measured."""
    text, word_start, word_len, p = vocabulary
    w = rng.choice(len(word_len), size=int(num_words.sum()), p=p)
    first = np.zeros(len(w), bool)
    first[np.cumsum(num_words) - num_words] = True
    out_len = word_len[w] + ~first  # a space before every word but a caption's first
    owner = np.repeat(np.arange(len(w)), out_len)
    k = np.arange(out_len.sum()) - (np.cumsum(out_len) - out_len)[owner]  # byte k of its word, the space included
    space = ~first[owner]
    data = text[np.maximum(word_start[w][owner] + k - space, 0)]
    data[(k == 0) & space] = ord(" ")
    caption_bytes = np.add.reduceat(out_len, np.cumsum(num_words) - num_words)
    offsets = np.concatenate([[0], np.cumsum(caption_bytes)]).astype(np.int32)
    return pa.StringArray.from_buffers(len(num_words), pa.py_buffer(offsets), pa.py_buffer(data.tobytes()))


def _lists(counts: np.ndarray, values: pa.Array) -> pa.Array:
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def manifest_rows(rng: np.random.Generator, first_id: int, num: int, shard: str, vocabulary: tuple) -> pa.Table:
    """``num`` synthetic manifest rows of the ``MIX`` with ``MANIFEST_SCHEMA``, sorted by key as a shard's are."""
    names = [m[0] for m in MIX]
    src = rng.choice(len(MIX), size=num, p=[m[1] for m in MIX])
    ok = rng.random(num) >= REJECTED_SHARE
    low, high = np.array([m[2] for m in MIX]).T
    num_captions = rng.integers(low[src], high[src] + 1)
    caption_src = np.repeat(src, num_captions)
    mean, sd = np.array([m[4] for m in MIX]).T
    num_words = np.clip(rng.normal(mean[caption_src], sd[caption_src]).round(), 1, 60).astype(np.int64)
    captions = _captions(rng, vocabulary, num_words)
    grounded = (rng.random(len(caption_src)) < np.array([m[3] for m in MIX])[caption_src]) & np.repeat(ok, num_captions)
    num_relevant = np.where(grounded, rng.integers(1, 4, size=len(grounded)), 0).astype(np.int32)
    # fractions of a 16 x 16 grid, at least one patch when grounded
    patches = np.clip(np.ceil(rng.beta(1.5, 6.0, size=len(grounded)) * 256), 1, 256)
    pos_fraction = np.where(grounded, patches / 256, 0.0).astype(np.float32)
    source = pa.DictionaryArray.from_arrays(pa.array(src.astype(np.int32)), pa.array(names)).cast(pa.string())
    image_id = pc.utf8_lpad(pa.array(np.arange(first_id, first_id + num)).cast(pa.string()), 9, "0")
    reason = pa.array(np.where(ok, STATUS_OK, np.array(REASONS)[rng.integers(0, len(REASONS), size=num)]))
    file_name = pc.binary_join_element_wise(image_id, "jpg", ".")
    has_boxes = ok & np.isin(src, [names.index("coco"), names.index("vg")])
    width = np.where(ok, 384, 0).astype(np.int32)
    columns = {
        "key": pc.binary_join_element_wise(source, image_id, "-"),
        "shard": pa.array([shard] * num, pa.string()),
        "source": source,
        "image_id": image_id,
        "source_path": pc.binary_join_element_wise("images", source, file_name, "/"),
        "status": reason,
        "error": pa.array([None if k else "synthetic rejection" for k in ok], pa.string()),
        "orig_width": np.where(ok, 640, 0).astype(np.int32),
        "orig_height": np.where(ok, 480, 0).astype(np.int32),
        "width": width,
        "height": np.where(ok, rng.integers(288, 513, size=num), 0).astype(np.int32),
        "num_captions": num_captions.astype(np.int32),
        "num_boxes": np.where(has_boxes, rng.integers(1, 40, size=num), 0).astype(np.int32),
        "captions": _lists(num_captions, captions),
        "num_relevant": _lists(num_captions, pa.array(num_relevant)),
        "pos_fraction": _lists(num_captions, pa.array(pos_fraction)),
        "image_bytes": np.where(ok, rng.integers(20_000, 80_000, size=num), 0).astype(np.int64),
    }
    arrays = [c if isinstance(c, pa.Array) else pa.array(c) for c in (columns[f.name] for f in MANIFEST_SCHEMA)]
    table = pa.Table.from_arrays(arrays, schema=MANIFEST_SCHEMA)
    return table.sort_by("key")


def write_dataset(root: Path, num_rows: int, num_files: int, seed: int) -> dict:
    """``num_rows`` manifest rows in ``num_files`` shards' manifests, ``dataset.json`` and ``sizes.json``."""
    rng = np.random.default_rng(seed)
    vocabulary = _vocabulary(rng)
    root.mkdir(parents=True, exist_ok=True)
    sizes, per_source, files = {}, {m[0]: {"input": 0, "ok": 0, "rejected": 0} for m in MIX}, []
    bounds = np.linspace(0, num_rows, num_files + 1).astype(int)
    for i in range(num_files):
        name = shard_name(i)
        table = manifest_rows(rng, int(bounds[i]), int(bounds[i + 1] - bounds[i]), name, vocabulary)
        path = root / shard_files(name)["manifest"]
        pq.write_table(table, path, compression="zstd", write_statistics=True)
        files.append(str(path))
        status = table.group_by(["source", "status"]).aggregate([("key", "count")]).to_pylist()
        for row in status:
            entry = per_source[row["source"]]
            entry["input"] += row["key_count"]
            entry["ok" if row["status"] == STATUS_OK else "rejected"] += row["key_count"]
        sizes[shard_files(name)["tar"]] = int(pc.sum(pc.equal(table["status"], STATUS_OK)).as_py() or 0)
    num_ok = sum(sizes.values())
    info = DatasetInfo(
        num_shards=num_files,
        num_samples=num_ok,
        num_rejected=num_rows - num_ok,
        geometry=Geometry(),
        sources=per_source,
        config={"made_by": "copa bench inspect", "seed": seed},
    )
    write_dataset_info(str(root), info)
    write_sizes(str(root), sizes)
    return {"files": files, "rows": num_rows, "samples": num_ok, "parquet_bytes": sum(map(os.path.getsize, files))}


def run(num_rows: int, num_files: int, seed: int, data: str | None) -> dict:
    folder = Path(data) if data else Path(tempfile.mkdtemp(prefix="copa_bench_inspect_"))
    try:
        start = time.perf_counter()
        made = write_dataset(folder / "shards", num_rows, num_files, seed)
        report = {"rows": num_rows, "files": num_files, "write_seconds": time.perf_counter() - start}
        report |= {"samples": made["samples"], "parquet_bytes": made["parquet_bytes"]}
        args = {"root": str(folder / "shards"), "files": made["files"], "where": WHERE, "status_ok": STATUS_OK}
        runs = {
            "bare": (_BARE, {}),
            "summary": (_SUMMARY, {"caption_lengths": True}),
            "read_all": (_READ_ALL, {"columns": SUMMARY_COLUMNS}),
            "summary_without_captions": (_SUMMARY, {"caption_lengths": False}),
            "read_all_without_captions": (_READ_ALL, {"columns": [c for c in SUMMARY_COLUMNS if c != "captions"]}),
            "query": (_QUERY, {}),
            "filter": (_FILTER, {}),
        }
        for name, (code, extra) in runs.items():
            report[name] = run_fresh(code, args | extra, f"bench inspect: {name}")
    finally:
        if not data:
            shutil.rmtree(folder, ignore_errors=True)
    if report["summary"]["samples"] != made["samples"] or report["query"]["rows"] != report["filter"]["rows"]:
        raise RuntimeError(f"bench inspect: the measured runs disagree on the rows: {report}")
    report["where"] = WHERE
    return report


def summary_lines(report: dict) -> list[str]:
    def row(name: str, what: str, base: str | None) -> list[str]:
        fig = report[name]
        ratios = ["", ""]
        if base:
            ratios = [
                f"x{fig['seconds'] / report[base]['seconds']:.2f}",
                f"x{fig['peak_rss_bytes'] / report[base]['peak_rss_bytes']:.2f}",
            ]
        return [what, f"{fig['seconds']:.2f}", mb(fig["peak_rss_bytes"]), *ratios]

    table = [
        row("summary", "summarize, one manifest at a time", "read_all"),
        row("read_all", "baseline: pyarrow.dataset to_table(SUMMARY_COLUMNS)", None),
        row("summary_without_captions", "summarize(caption_lengths=False)", "read_all_without_captions"),
        row("read_all_without_captions", "baseline: the same without captions", None),
        row("query", f'query --where "{report["where"]}" ({report["query"]["rows"]:,} rows)', "filter"),
        row("filter", "baseline: pyarrow.dataset to_table(filter=...)", None),
        row("bare", "bare interpreter with the imports", None),
    ]
    head = (
        f"{report['rows']:,} manifest rows ({report['samples']:,} samples) in {report['files']} files, "
        f"{mb(report['parquet_bytes'])} of Parquet, written in {report['write_seconds']:.1f} s"
    )
    return [head, *_rows(["figure", "seconds", "peak RSS", "time vs baseline", "memory vs baseline"], table)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="copa bench inspect", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4_000_000, help="manifest rows (default: %(default)s)")
    parser.add_argument("--files", type=int, default=80, help="manifest files (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="200,000 rows: a fast, noisy look (and the test)")
    parser.add_argument("--data", help="keep the generated dataset here (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--out", default="bench_out/inspect.json", help="JSON results (default: %(default)s)")
    args = parser.parse_args(argv)
    rows = 200_000 if args.quick else args.rows
    if rows < args.files or args.files <= 0:
        parser.error(f"--rows ({rows}) must be at least --files ({args.files}), which must be positive")
    report = run(rows, args.files, args.seed, args.data)
    for line in summary_lines(report):
        print(line)
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
