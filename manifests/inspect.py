"""What a packed dataset holds, from its Parquet manifests and dataset files alone (DESIGN section 3).

``summarize(root)`` reads only the manifest columns it needs (never the tars' images) plus ``dataset.json`` and
``sizes.json``: samples and image bytes per source, rejected rows by reason, captions per image, the share of
captions with at least one relevant box, the distribution of the positive-patch fraction of labelled captions and
of caption lengths in words (with their fixed-bin counts, which ``manifests.histograms`` plots), and the shards
with their sizes. It streams one manifest at a time into fixed-size histograms, so memory does not grow with the
rows (``copa bench inspect``, 4,000,000 rows in 80 manifests: 4.3-5.0 s and 275-300 MB peak, against 1.1 GB
for pyarrow reading the same columns at once; 1.0-1.4 s and 190-210 MB without the caption text).
``format_summary`` renders it as plain text tables. ``sample_keys`` draws keys at random and ``load_samples`` reads
samples by key (the manifest says which shard), for pictures. Local paths or any pyarrow
filesystem URI (``s3://...``) work.
"""

from __future__ import annotations

import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from manifests.dataset import read_dataset_info, read_manifest, read_sizes
from manifests.samples import Sample, decode_sample
from manifests.schema import DATASET_FILE, SHARD_RE, STATUS_OK, shard_files

SUMMARY_COLUMNS = ["source", "status", "image_bytes", "num_captions", "num_relevant", "pos_fraction", "captions"]
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)


def dataset_files(root: str) -> tuple[pafs.FileSystem, str, list[str]]:
    """(filesystem, path, manifest paths) of the dataset at ``root``; a clear error when it is not one."""
    fs, path = pafs.FileSystem.from_uri(root) if "://" in root else (pafs.LocalFileSystem(), root)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.Directory:
        raise ValueError(f"{root}: no such dataset folder")
    names = [f.base_name for f in fs.get_file_info(pafs.FileSelector(path))]
    if DATASET_FILE not in names:
        raise ValueError(f"{root}: not a packed dataset (no {DATASET_FILE}; run `copa pack` to make one)")
    manifests = sorted(f"{path}/{n}" for n in names if n.endswith(".parquet") and SHARD_RE.fullmatch(n[:-8]))
    return fs, path, manifests


FRACTION_BINS = 10_000  # positive-patch fractions are counted in bins of 1e-4: quantiles to that precision
PLOT_FRACTION_BINS = 50  # the same counts coarsened to bins of 0.02 for the label-density histogram
MAX_WORDS = 256  # caption lengths are counted per word count; longer captions land in the last bin


def _quantiles(counts: np.ndarray, width: float, total_sum: float) -> dict[str, float]:
    """Quantiles (the lower edge of the bin that reaches each share, to ``width``) and the exact mean."""
    n = counts.sum()
    if n == 0:
        return {}
    cumulative = np.cumsum(counts)
    out = {f"p{round(q * 100)}": float(np.searchsorted(cumulative, q * n) * width) for q in QUANTILES}
    return out | {"mean": float(total_sum / n)}


def caption_words(captions: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Words per caption of a ``list<string>`` column, flattened: int64 ``[captions]``. Words are runs of
    non-whitespace, split on ASCII whitespace as ``str.split()`` does for the normalized captions ingest stores."""
    text = pc.ascii_trim_whitespace(pc.list_flatten(captions))
    counts = pc.list_value_length(pc.ascii_split_whitespace(text))
    empty = pc.equal(pc.binary_length(text), 0)  # "" splits into one empty word
    return pc.if_else(empty, 0, counts).to_numpy(zero_copy_only=False).astype(np.int64)


def _coarse(fraction_hist: np.ndarray) -> np.ndarray:
    """The 1e-4 fraction bins summed into ``PLOT_FRACTION_BINS``; the last (fraction exactly 1) joins the top bin."""
    coarse = fraction_hist[:FRACTION_BINS].reshape(PLOT_FRACTION_BINS, -1).sum(axis=1)
    coarse[-1] += fraction_hist[FRACTION_BINS]
    return coarse


def summarize(root: str, caption_lengths: bool = True) -> dict:
    """Every figure of the summary, JSON-able. Streams one manifest at a time: memory stays at one shard's columns
    plus fixed-size histograms, whatever the number of rows. ``caption_lengths=False`` skips the caption text (the
    one big column: three quarters of the time at 4M rows) and leaves ``caption_words`` empty."""
    fs, path, manifests = dataset_files(root)
    info = read_dataset_info(path, fs)
    columns = [c for c in SUMMARY_COLUMNS if caption_lengths or c != "captions"]
    per_source: dict[str, dict[str, int]] = {}
    reasons: dict[str, int] = {}
    captions_hist = np.zeros(1, np.int64)
    fraction_hist = np.zeros(FRACTION_BINS + 1, np.int64)
    words_hist = np.zeros(MAX_WORDS + 1, np.int64)
    totals = {"captions": 0, "grounded": 0, "caption_sum": 0, "fraction_sum": 0.0, "word_sum": 0}
    for manifest in manifests:
        table = read_manifest(manifest, columns, fs)
        ok = table.filter(pc.equal(table["status"], STATUS_OK))
        rejected = table.filter(pc.not_equal(table["status"], STATUS_OK))
        for row in ok.group_by("source").aggregate([("image_bytes", "sum"), ("image_bytes", "count")]).to_pylist():
            entry = per_source.setdefault(row["source"], {"samples": 0, "image_bytes": 0, "rejected": 0})
            entry["samples"] += row["image_bytes_count"]
            entry["image_bytes"] += row["image_bytes_sum"]
        for row in rejected.group_by(["source", "status"]).aggregate([("status", "count")]).to_pylist():
            per_source.setdefault(row["source"], {"samples": 0, "image_bytes": 0, "rejected": 0})
            per_source[row["source"]]["rejected"] += row["status_count"]
            reasons[row["status"]] = reasons.get(row["status"], 0) + row["status_count"]
        per_image = ok["num_captions"].to_numpy(zero_copy_only=False)
        counts = np.bincount(per_image)
        if len(counts) > len(captions_hist):
            captions_hist = np.pad(captions_hist, (0, len(counts) - len(captions_hist)))
        captions_hist[: len(counts)] += counts
        relevant = pc.list_flatten(ok["num_relevant"]).to_numpy(zero_copy_only=False)
        grounded = pc.list_flatten(ok["pos_fraction"]).to_numpy(zero_copy_only=False)[relevant > 0]
        fraction_hist += np.bincount(np.floor(grounded * FRACTION_BINS).astype(np.int64), minlength=FRACTION_BINS + 1)
        totals["captions"] += len(relevant)
        totals["grounded"] += int((relevant > 0).sum())
        totals["caption_sum"] += int(per_image.sum())
        totals["fraction_sum"] += float(grounded.astype(np.float64).sum())
        if caption_lengths:
            words = caption_words(ok["captions"])
            words_hist += np.bincount(np.minimum(words, MAX_WORDS), minlength=MAX_WORDS + 1)
            totals["word_sum"] += int(words.sum())
    sizes = read_sizes(path, fs)
    files = fs.get_file_info([f"{path}/{name}" for name in sizes])
    tar_bytes = {f.base_name: f.size for f in files if f.type == pafs.FileType.File}
    samples = sum(v["samples"] for v in per_source.values())
    return {
        "root": root,
        "schema_version": info.schema_version,
        "pack_config": info.config,
        "geometry": {"image_size": info.geometry.image_size, "patch_size": info.geometry.patch_size},
        "samples": samples,
        "rejected": sum(reasons.values()),
        "image_bytes": sum(v["image_bytes"] for v in per_source.values()),
        "sources": dict(sorted(per_source.items())),
        "rejected_by_reason": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        "captions": totals["captions"],
        "captions_per_image": _quantiles(captions_hist, 1.0, totals["caption_sum"]),
        "grounded_caption_share": totals["grounded"] / max(1, totals["captions"]),
        "pos_fraction_of_grounded": _quantiles(fraction_hist, 1 / FRACTION_BINS, totals["fraction_sum"]),
        "pos_fraction_histogram": {"bin_width": 1 / PLOT_FRACTION_BINS, "counts": _coarse(fraction_hist).tolist()},
        "caption_words": _quantiles(words_hist, 1.0, totals["word_sum"]),
        "caption_words_histogram": np.trim_zeros(words_hist, "b").tolist(),
        "shards": [{"name": n, "samples": sizes[n], "bytes": tar_bytes.get(n, 0)} for n in sorted(sizes)],
    }


def _rows(header: list[str], rows: list[list]) -> list[str]:
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    return [fmt(cells[0]), "-" * len(fmt(cells[0])), *map(fmt, cells[1:])]


def format_summary(s: dict) -> str:
    mb = lambda n: f"{n / 2**20:,.1f} MB"  # noqa: E731
    g = s["geometry"]
    lines = [
        f"{s['root']}: {s['samples']} samples ({mb(s['image_bytes'])} of images), {s['rejected']} rejected rows; "
        f"schema version {s['schema_version']}; labels for {g['image_size']} px / {g['patch_size']} px patches",
        "",
    ]
    rows = [[n, v["samples"], mb(v["image_bytes"]), v.get("rejected", 0)] for n, v in s["sources"].items()]
    lines += [*_rows(["source", "samples", "images", "rejected"], rows), ""]
    if s["rejected_by_reason"]:
        lines += [*_rows(["rejected because", "rows"], [[k, v] for k, v in s["rejected_by_reason"].items()]), ""]
    cpi, pos = s["captions_per_image"], s["pos_fraction_of_grounded"]
    lines.append(
        f"{s['captions']} captions, {cpi.get('mean', 0):.2f} per image (median {cpi.get('p50', 0):g}, 90th "
        f"percentile {cpi.get('p90', 0):g}); {s['grounded_caption_share']:.1%} name at least one box"
    )
    if pos:
        lines.append(
            "positive-patch fraction of grounded captions: " + ", ".join(f"{k} {v:.3f}" for k, v in pos.items())
        )
    if s["caption_words"]:
        lines.append("caption length in words: " + ", ".join(f"{k} {v:.3g}" for k, v in s["caption_words"].items()))
    sizes = [sh["samples"] for sh in s["shards"]]
    if sizes:
        lines.append(
            f"{len(sizes)} shards of {min(sizes)}-{max(sizes)} samples, "
            f"{mb(sum(sh['bytes'] for sh in s['shards']))} of tars"
        )
    lines.append("pack config: " + ", ".join(f"{k}={v}" for k, v in sorted(s["pack_config"].items())))
    return "\n".join(lines)


def sample_keys(root: str, num: int, seed: int) -> list[str]:
    """``num`` keys of stored samples drawn at random (the same for the same seed), from the manifests' key column."""
    fs, _, manifests = dataset_files(root)
    table = read_manifest(manifests, ["key", "status"], fs)
    keys = sorted(table.filter(pc.equal(table["status"], STATUS_OK))["key"].to_pylist())
    if not keys:
        raise ValueError(f"{root}: no stored samples")
    picks = np.random.default_rng(seed).choice(len(keys), size=min(num, len(keys)), replace=False)
    return [keys[i] for i in sorted(picks)]


def load_samples(root: str, keys: list[str]) -> list[Sample]:
    """The stored samples ``keys`` (in that order), found through the manifests and read from their shards' tars."""
    fs, path, manifests = dataset_files(root)
    table = read_manifest(manifests, ["key", "shard", "status"], fs)
    rows = {r["key"]: r for r in table.filter(pc.is_in(table["key"], pa.array(keys))).to_pylist()}
    for key in keys:
        if key not in rows:
            raise ValueError(f"{root}: no sample {key!r} in the manifests")
        if rows[key]["status"] != STATUS_OK:
            raise ValueError(f"{root}: sample {key!r} was rejected at pack time ({rows[key]['status']})")
    found: dict[str, Sample] = {}
    for shard in sorted({rows[k]["shard"] for k in keys}):
        wanted = {k for k in keys if rows[k]["shard"] == shard}
        members: dict[str, dict[str, bytes]] = {k: {} for k in wanted}
        with fs.open_input_file(f"{path}/{shard_files(shard)['tar']}") as f, tarfile.open(fileobj=f) as tar:
            for info in tar:
                key, _, ext = info.name.partition(".")
                if key in wanted:
                    members[key][ext] = tar.extractfile(info).read()
        found.update({k: decode_sample(k, m) for k, m in members.items()})
    return [found[k] for k in keys]
