"""Per-shard manifests and per-dataset files: rows, Parquet, ``dataset.json``, ``sizes.json``, stats.

Manifest rows are derived from a sample (``ok_row``) or from a rejection (``rejected_row``) in this one place, so
every writer fills the columns of ``MANIFEST_FIELDS`` the same way. Readers refuse files written with another
``SCHEMA_VERSION`` and say which file and which version.

Functions take file objects or paths on the local filesystem or any ``pyarrow.fs`` filesystem; writers that must
be atomic write to a temporary name and rename (``atomic_write``).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from manifests.samples import Sample
from manifests.schema import (
    DATASET_FILE,
    MANIFEST_FIELDS,
    MANIFEST_SCHEMA,
    SCHEMA_VERSION,
    SIZES_FILE,
    STATUS_OK,
    shard_files,
    split_key,
)


def ok_row(sample: Sample, shard: str, source_path: str, image_bytes: int) -> dict:
    """The manifest row of a stored sample; per-caption figures come from its meta and coverage grid."""
    meta = sample.meta
    num_captions = len(meta["captions"])
    if sample.pta is None:
        pos_fraction = [0.0] * num_captions
    else:
        pos_fraction = (sample.pta > 0).mean(axis=(1, 2)).astype(np.float32).tolist()
    return {
        "key": sample.key,
        "shard": shard,
        "source": meta["source"],
        "image_id": meta["image_id"],
        "source_path": source_path,
        "status": STATUS_OK,
        "error": None,
        "orig_width": meta["orig_width"],
        "orig_height": meta["orig_height"],
        "width": meta["width"],
        "height": meta["height"],
        "num_captions": num_captions,
        "num_boxes": len(meta["boxes"]),
        "captions": list(meta["captions"]),
        "num_relevant": [len(rel["boxes"]) for rel in meta["relevant"]],
        "pos_fraction": pos_fraction,
        "image_bytes": image_bytes,
    }


def rejected_row(
    key: str, shard: str, source_path: str, status: str, error: str, captions: list[str] | None = None
) -> dict:
    """The manifest row of an input image that was not stored; ``status`` is a short reason, ``error`` details."""
    if status == STATUS_OK:
        raise ValueError("a rejected row needs a reason other than 'ok'")
    source, image_id = split_key(key)
    # Captions that cannot be encoded (a non-UTF-8 caption is a rejection reason) are kept as escapes.
    safe = [c.encode("utf-8", "backslashreplace").decode("utf-8") for c in captions or []]
    return {
        "key": key,
        "shard": shard,
        "source": source,
        "image_id": image_id,
        "source_path": source_path,
        "status": status,
        "error": error,
        "orig_width": 0,
        "orig_height": 0,
        "width": 0,
        "height": 0,
        "num_captions": len(safe),
        "num_boxes": 0,
        "captions": safe,
        "num_relevant": [0] * len(safe),
        "pos_fraction": [0.0] * len(safe),
        "image_bytes": 0,
    }


def manifest_table(rows: Iterable[dict]) -> pa.Table:
    """Rows (dicts with exactly the manifest columns) -> a table with ``MANIFEST_SCHEMA``, sorted by key."""
    rows = sorted(rows, key=lambda r: r["key"])
    names = [f.name for f in MANIFEST_FIELDS]
    for row in rows:
        if set(row) != set(names):
            raise ValueError(f"manifest row {row.get('key')!r}: columns {sorted(row)} differ from {sorted(names)}")
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)


def write_manifest(rows: Iterable[dict], where, filesystem: pafs.FileSystem | None = None) -> pa.Table:
    """Write one shard's manifest as Parquet (deterministic bytes for the same rows and pyarrow version)."""
    table = manifest_table(rows)
    pq.write_table(table, where, filesystem=filesystem, compression="zstd", write_statistics=True)
    return table


def check_manifest_schema(schema: pa.Schema, where: str) -> None:
    version = (schema.metadata or {}).get(b"copa_schema_version")
    if version is None:
        raise ValueError(f"{where}: not a COPA manifest (no copa_schema_version in its Parquet metadata)")
    if int(version) != SCHEMA_VERSION:
        raise ValueError(
            f"{where}: manifest schema version {int(version)}, this toolkit reads {SCHEMA_VERSION}; "
            "re-pack the dataset or use a matching toolkit version"
        )
    missing = [f.name for f in MANIFEST_FIELDS if f.name not in schema.names]
    if missing:
        raise ValueError(f"{where}: manifest lacks columns {missing}")


def read_manifest(where, columns: list[str] | None = None, filesystem: pafs.FileSystem | None = None) -> pa.Table:
    """Read one shard manifest (or a list of them); refuses another schema version, naming the file."""
    paths = [where] if isinstance(where, str | os.PathLike) else list(where)
    tables = []
    for path in paths:
        try:
            pf = pq.ParquetFile(path, filesystem=filesystem) if filesystem else pq.ParquetFile(path)
            check_manifest_schema(pf.schema_arrow, str(path))
            tables.append(pf.read(columns=columns))
        except (pa.ArrowInvalid, OSError) as err:  # truncated or not Parquet: name the file
            raise ValueError(f"{path}: not a readable Parquet manifest ({err})") from err
    return (
        pa.concat_tables(tables) if tables else MANIFEST_SCHEMA.empty_table().select(columns or MANIFEST_SCHEMA.names)
    )


@dataclass
class Geometry:
    """Canonical label geometry: the whole image resized to ``image_size`` square, patches of ``patch_size``."""

    image_size: int = 256  # pixels, square
    patch_size: int = 16  # pixels

    def __post_init__(self):
        if self.image_size <= 0 or self.patch_size <= 0 or self.image_size % self.patch_size:
            raise ValueError(
                f"geometry: image_size {self.image_size} must be a positive multiple of patch_size {self.patch_size}"
            )

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


@dataclass
class ShardStats:
    """``<shard>_stats.json``: the done-marker of a shard, written after its tar and manifest."""

    shard: str
    num_input: int  # rows planned into this shard
    num_ok: int  # samples written to the tar
    num_rejected: int  # rows kept in the manifest with a reason
    rejected: dict[str, int]  # reason -> count
    tar_bytes: int
    seconds: float
    boxes_dropped: dict[str, int] = field(default_factory=dict)  # reason -> boxes dropped at pack time
    libraries: dict[str, str] = field(default_factory=dict)  # library -> version, of those that decide the bytes
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        if self.num_input != self.num_ok + self.num_rejected:
            raise ValueError(
                f"shard {self.shard}: {self.num_input} in != {self.num_ok} ok + {self.num_rejected} rejected"
            )


@dataclass
class DatasetInfo:
    """``dataset.json``: what a dataset is and how it was made."""

    num_shards: int
    num_samples: int  # stored samples
    num_rejected: int  # input rows not stored
    geometry: Geometry
    sources: dict[str, dict[str, int]]  # source -> {"input", "ok", "rejected"}
    config: dict = field(default_factory=dict)  # the full resolved pack config
    # library -> version of those that decide the bytes (JPEG codec, labels, Parquet writer), as the workers ran
    # them; a list of versions where workers differed, which makes the shards depend on where they were written
    libraries: dict[str, str | list[str]] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = DATASET_FILE) -> DatasetInfo:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not valid JSON: {err}") from err
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"{where}: dataset schema version {version!r}, this toolkit reads {SCHEMA_VERSION}; "
                "re-pack the dataset or use a matching toolkit version"
            )
        try:
            data["geometry"] = Geometry(**data["geometry"])
            return cls(**data)
        except (KeyError, TypeError) as err:
            raise ValueError(f"{where}: does not match DatasetInfo: {err}") from err


def atomic_write(path: str, data: bytes, filesystem: pafs.FileSystem | None = None) -> None:
    """Write ``data`` to a temporary name beside ``path``, then rename, so readers never see half a file."""
    fs = filesystem or pafs.LocalFileSystem()
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with fs.open_output_stream(tmp) as out:
        out.write(data)
    fs.move(tmp, path)


def read_text(path: str, filesystem: pafs.FileSystem | None = None) -> str:
    fs = filesystem or pafs.LocalFileSystem()
    try:
        with fs.open_input_stream(path) as f:
            return f.read().decode("utf-8")
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: not found") from err


def write_dataset_info(root: str, info: DatasetInfo, filesystem: pafs.FileSystem | None = None) -> None:
    atomic_write(f"{root}/{DATASET_FILE}", info.to_json().encode(), filesystem)


def read_dataset_info(root: str, filesystem: pafs.FileSystem | None = None) -> DatasetInfo:
    path = f"{root}/{DATASET_FILE}"
    try:
        text = read_text(path, filesystem)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{root}: not a COPA dataset ({DATASET_FILE} is missing)") from err
    return DatasetInfo.from_json(text, path)


def write_sizes(root: str, sizes: dict[str, int], filesystem: pafs.FileSystem | None = None) -> None:
    """``sizes.json``: shard tar name -> number of samples, the convention CLIP-style trainers read."""
    atomic_write(
        f"{root}/{SIZES_FILE}", (json.dumps(dict(sorted(sizes.items())), indent=1) + "\n").encode(), filesystem
    )


def read_json(path: str, filesystem: pafs.FileSystem | None = None) -> object:
    """A JSON file; malformed JSON is a ``ValueError`` that names the file."""
    try:
        return json.loads(read_text(path, filesystem))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err


def read_sizes(root: str, filesystem: pafs.FileSystem | None = None) -> dict[str, int]:
    path = f"{root}/{SIZES_FILE}"
    sizes = read_json(path, filesystem)
    if not isinstance(sizes, dict) or not all(isinstance(v, int) and v >= 0 for v in sizes.values()):
        raise ValueError(f"{path}: expected an object of shard name -> sample count")
    return sizes


def write_stats(root: str, stats: ShardStats, filesystem: pafs.FileSystem | None = None) -> None:
    path = f"{root}/{shard_files(stats.shard)['stats']}"
    atomic_write(path, (json.dumps(asdict(stats), indent=1, sort_keys=True) + "\n").encode(), filesystem)


def read_stats(root: str, shard: str, filesystem: pafs.FileSystem | None = None) -> ShardStats:
    path = f"{root}/{shard_files(shard)['stats']}"
    data = read_json(path, filesystem)
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema version {data.get('schema_version')!r}, this toolkit reads {SCHEMA_VERSION}")
    return ShardStats(**data)
