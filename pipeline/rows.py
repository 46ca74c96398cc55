"""The normalized per-image row that every reader yields and ``copa ingest`` writes to the source manifest.

One row per image, whatever the source format. Boxes are in *pixels* of the annotated image (x0, y0, x1, y1,
already clipped to it); ``pack`` turns them into normalized boxes of the stored image. ``relevant`` holds, per
caption, the indices of its text-relevant boxes and the words that matched (DESIGN section 6). A row that cannot
be used keeps ``status`` != "ok" and an ``error``: it is written to the manifest, never dropped, so the counts add
up.

The Arrow schema of the source manifest is derived from ``SourceRow``'s field table below.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from manifests.schema import RELEVANT_TYPE, STATUS_OK

SOURCE_TABLE_VERSION = 1

_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("key", pa.string()),
    ("source", pa.string()),
    ("image_id", pa.string()),
    ("image_root", pa.string()),
    ("image_path", pa.string()),
    ("image_member", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("captions", pa.list_(pa.string())),
    ("boxes", pa.list_(pa.list_(pa.float32(), 4))),
    ("box_labels", pa.list_(pa.string())),
    ("box_crowd", pa.list_(pa.bool_())),
    ("relevant", pa.list_(RELEVANT_TYPE)),
    ("status", pa.string()),
    ("error", pa.string()),
    ("boxes_dropped", pa.int32()),
    ("boxes_clipped", pa.int32()),
)
SOURCE_SCHEMA = pa.schema(
    [pa.field(name, type_, nullable=name in ("image_member", "error")) for name, type_ in _FIELDS],
    metadata={"copa_source_table_version": str(SOURCE_TABLE_VERSION)},
)


@dataclass
class SourceRow:
    """One image of one source, normalized."""

    key: str  # <source>-<id>, see manifests.schema
    source: str  # source name from sources.yaml
    image_id: str  # id within the source
    image_root: str  # folder, URI or tar folder the image path is relative to
    image_path: str  # image file relative to image_root, or the tar that holds it
    image_member: str | None = None  # member name inside the tar at image_path (img2dataset), else None
    width: int = 0  # annotated image size in pixels; 0 when the source does not say (web captions)
    height: int = 0
    captions: list[str] = field(default_factory=list)
    boxes: list[list[float]] = field(default_factory=list)  # pixels x0, y0, x1, y1, clipped to the image
    box_labels: list[str] = field(default_factory=list)  # category name, object name or region phrase
    box_crowd: list[bool] = field(default_factory=list)  # COCO iscrowd
    relevant: list[dict] = field(default_factory=list)  # per caption {"boxes": [int], "words": [str]}
    status: str = STATUS_OK  # "ok" or a short rejection reason
    error: str | None = None  # details of a rejection
    boxes_dropped: int = 0  # boxes dropped as unusable (NaN, no area, outside the image)
    boxes_clipped: int = 0  # boxes clipped to the image

    def reject(self, status: str, error: str) -> SourceRow:
        self.status, self.error = status, error
        return self


# Row rejection reasons decided at ingest (pack adds its own for image bytes).
NO_CAPTION = "no_caption"  # no usable caption left
EMPTY_CAPTION = "empty_caption"  # the only captions were empty or blank
CAPTION_NOT_UTF8 = "caption_not_utf8"  # the only captions could not be encoded as UTF-8
PATH_ESCAPES_ROOT = "path_escapes_root"  # the image path leads outside its image root
BAD_PATH = "bad_path"  # the image path is missing, absolute or not a string
DUPLICATE_KEY = "duplicate_key"  # another image of the same source already has this key


def clean_captions(captions: list) -> tuple[list[str], str | None]:
    """Keep the usable captions (stripped, non-empty, valid UTF-8); if none is left, also say why."""
    kept, reason = [], None
    for caption in captions:
        if not isinstance(caption, str) or not caption.strip():
            reason = reason or EMPTY_CAPTION
            continue
        try:
            caption.encode("utf-8")
        except UnicodeEncodeError:
            reason = reason or CAPTION_NOT_UTF8
            continue
        kept.append(" ".join(caption.split()))
    return kept, (None if kept else reason or NO_CAPTION)


def safe_relpath(path) -> str | None:
    """A relative image path that stays inside its root, normalized; None when it escapes or is absolute."""
    if not isinstance(path, str) or not path or path.startswith(("/", "\\")) or "://" in path:
        return None
    parts = []
    for part in path.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts) or None


class SourceTableWriter:
    """Writes a Parquet source manifest from rows and from Arrow tables in the manifest schema (the columnar readers'
    output), in bounded memory: rows are converted ``batch_rows`` at a time. ``counts`` is the rows per status."""

    def __init__(self, path: str, batch_rows: int = 20_000):
        self._writer = pq.ParquetWriter(path, SOURCE_SCHEMA, compression="zstd")
        self._batch: list[dict] = []
        self._batch_rows = batch_rows
        self.counts: Counter = Counter()

    def write_row(self, row: SourceRow) -> None:
        self.counts[row.status] += 1
        self._batch.append(vars(row))  # the fields themselves: dataclasses.asdict deep-copies every list (3x slower)
        if len(self._batch) >= self._batch_rows:
            self._flush()

    def write_table(self, table: pa.Table) -> None:
        self._flush()  # rows keep their order
        for item in table["status"].value_counts().to_pylist():
            self.counts[item["values"]] += item["counts"]
        self._writer.write_table(table.cast(SOURCE_SCHEMA), row_group_size=self._batch_rows * 5)

    def _flush(self) -> None:
        if self._batch:
            self._writer.write_table(pa.Table.from_pylist(self._batch, schema=SOURCE_SCHEMA))
            self._batch.clear()

    def close(self) -> None:
        self._flush()
        self._writer.close()

    def __enter__(self) -> SourceTableWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_source_table(rows: Iterable[SourceRow], path: str, batch_rows: int = 20_000) -> Counter:
    """Stream rows into a Parquet source manifest in bounded memory; returns the count of rows per status."""
    with SourceTableWriter(path, batch_rows) as writer:
        for row in rows:
            writer.write_row(row)
    return writer.counts


def open_source_table(path: str) -> pq.ParquetFile:
    """Open a source manifest written by ``copa ingest`` (a local path or a URI); refuses other versions, naming
    the file."""
    try:
        pf = pq.ParquetFile(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: source manifest not found") from err
    except pa.ArrowInvalid as err:
        raise ValueError(f"{path}: not a readable Parquet file ({err})") from err
    version = (pf.schema_arrow.metadata or {}).get(b"copa_source_table_version")
    if version is None:
        raise ValueError(f"{path}: not a COPA source manifest (written by 'copa ingest')")
    if int(version) != SOURCE_TABLE_VERSION:
        raise ValueError(f"{path}: source manifest version {int(version)}, this toolkit reads {SOURCE_TABLE_VERSION}")
    return pf


def read_source_table(path: str, columns: list[str] | None = None) -> pa.Table:
    """Read a whole source manifest (see ``open_source_table``)."""
    return open_source_table(path).read(columns=columns)


def iter_source_rows(table: pa.Table) -> Iterator[SourceRow]:
    for batch in table.to_batches():
        for record in batch.to_pylist():
            yield SourceRow(**record)
