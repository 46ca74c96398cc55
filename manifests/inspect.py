"""What a packed dataset holds, from its Parquet manifests and dataset files alone (DESIGN section 3).

``summarize(root)`` reads only the manifest columns it needs (never the tars' images) plus ``dataset.json`` and
``sizes.json``: samples and image bytes per source, rejected rows by reason, captions per image, the share of
captions with at least one relevant box, the distribution of the positive-patch fraction of labelled captions, and
the shards with their sizes. ``format_summary`` renders it as plain text tables. Local paths or any pyarrow
filesystem URI (``s3://...``) work.
"""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pyarrow.fs as pafs

from manifests.dataset import read_dataset_info, read_manifest, read_sizes
from manifests.schema import DATASET_FILE, SHARD_RE, STATUS_OK

SUMMARY_COLUMNS = ["source", "status", "image_bytes", "num_captions", "num_relevant", "pos_fraction"]
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


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    return {f"p{round(q * 100)}": float(np.quantile(values, q)) for q in QUANTILES} | {"mean": float(values.mean())}


def summarize(root: str) -> dict:
    """Every figure of the summary, JSON-able."""
    fs, path, manifests = dataset_files(root)
    info = read_dataset_info(path, fs)
    table = read_manifest(manifests, SUMMARY_COLUMNS, fs)
    ok = table.filter(pc.equal(table["status"], STATUS_OK))
    rejected = table.filter(pc.not_equal(table["status"], STATUS_OK))

    per_source = {}
    for row in ok.group_by("source").aggregate([("image_bytes", "sum"), ("image_bytes", "count")]).to_pylist():
        per_source[row["source"]] = {"samples": row["image_bytes_count"], "image_bytes": row["image_bytes_sum"]}
    for row in rejected.group_by("source").aggregate([("status", "count")]).to_pylist():
        per_source.setdefault(row["source"], {"samples": 0, "image_bytes": 0})["rejected"] = row["status_count"]
    reasons = {
        r["status"]: r["status_count"] for r in rejected.group_by("status").aggregate([("status", "count")]).to_pylist()
    }

    num_relevant = pc.list_flatten(ok["num_relevant"]).to_numpy(zero_copy_only=False)
    pos_fraction = pc.list_flatten(ok["pos_fraction"]).to_numpy(zero_copy_only=False)
    captions_per_image = ok["num_captions"].to_numpy(zero_copy_only=False)
    sizes = read_sizes(path, fs)
    tar_bytes = {
        f.base_name: f.size
        for f in fs.get_file_info([f"{path}/{name}" for name in sizes])
        if f.type == pafs.FileType.File
    }
    return {
        "root": root,
        "schema_version": info.schema_version,
        "pack_config": info.config,
        "geometry": {"image_size": info.geometry.image_size, "patch_size": info.geometry.patch_size},
        "samples": ok.num_rows,
        "rejected": rejected.num_rows,
        "image_bytes": int(pc.sum(ok["image_bytes"]).as_py() or 0),
        "sources": dict(sorted(per_source.items())),
        "rejected_by_reason": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        "captions": len(num_relevant),
        "captions_per_image": _quantiles(captions_per_image.astype(np.float64)),
        "grounded_caption_share": float((num_relevant > 0).mean()) if len(num_relevant) else 0.0,
        "pos_fraction_of_grounded": _quantiles(pos_fraction[num_relevant > 0].astype(np.float64)),
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
    sizes = [sh["samples"] for sh in s["shards"]]
    if sizes:
        lines.append(
            f"{len(sizes)} shards of {min(sizes)}-{max(sizes)} samples, "
            f"{mb(sum(sh['bytes'] for sh in s['shards']))} of tars"
        )
    lines.append("pack config: " + ", ".join(f"{k}={v}" for k, v in sorted(s["pack_config"].items())))
    return "\n".join(lines)


__all__ = ["format_summary", "summarize"]
