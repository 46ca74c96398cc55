"""img2dataset output folders, how most users hold CC3M and SBU: WebDataset tars and their sidecars, referenced.

What ``img2dataset --output_format webdataset`` (rom1504/img2dataset) writes into its output folder:

    00000.tar          per stored image <key>.jpg (or .png / .webp, ``--encode_format``), <key>.txt (the
                       caption) and <key>.json (url, caption, key, status, width, height, original sizes, ...)
    00000.parquet      one row per *input URL*: key, url, caption, status ("success", "failed_to_download",
                       "failed_to_resize"), error_message, width, height (stored size), original_width, ...
    00000_stats.json   counts of the shard

One row per image img2dataset stored (status "success"); URLs that failed to download never became images, so
they are not input rows of this pipeline (img2dataset's stats count them). Images are referenced, not copied:
``image_root`` is the folder, ``image_path`` the tar ("00000.tar"), ``image_member`` the image member
("000010023.jpg"); pack reads the member from the tar.

**Planning from sidecars.** When a tar has its Parquet sidecar, only the sidecar's key, status, caption, width and
height columns are read; the tar is opened just to read the first member names, which tell the image extension.
A tar without a sidecar (a hand-made shard, a lost file) is streamed once: member names, ``.txt`` captions and
``.json`` sizes; image bytes are skipped, never held.

**Keys** ``<source>-<img2dataset key>`` (digit strings such as ``000010023``, unique within one img2dataset run).
A key that is not key-safe falls back to 16 hex digits of blake2b("<tar>/<key>"); a key seen before (two runs
merged into one folder) rejects the later row as ``duplicate_key``, keyed ``<key>_dup``. Captions go through
``rows.clean_captions``: empty, missing and non-UTF-8 captions reject the row with its reason. ``width`` and
``height`` are the stored size from the sidecar or the ``.json`` member, 0 when unknown.

A sidecar or tar that cannot be read (corrupt, truncated) raises ``ValueError`` naming the file: that is a broken
download to fix, not a bad record, and silently ingesting part of a shard would hide it.
"""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.fetch import filesystem
from pipeline.readers.columnar import (
    STATUSES,
    caption_status,
    caption_table,
    clean_captions_column,
    constant,
    first_claims,
    status_array,
)
from pipeline.readers.common import (
    BAD_RECORD,
    CAPTION_ERRORS,
    KeyRegistry,
    is_key_id,
    mark_surrogates,
    path_hash,
    rejected_row,
)
from pipeline.rows import DUPLICATE_KEY, SOURCE_SCHEMA, SourceRow, iter_source_rows
from pipeline.sources import SourceSpec

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")  # img2dataset's --encode_format choices (and jpeg, by hand)
SIDECAR_COLUMNS = ("key", "status", "caption", "width", "height")  # the only sidecar columns read
SUCCESS = "success"  # img2dataset's status of a stored image
_PROBE_MEMBERS = 16  # members read to find the image extension; the first sample's three members suffice


class _Record(NamedTuple):
    """One stored image of a shard, before keys and captions are checked."""

    key: object  # img2dataset key, as found
    member: str | None  # image member in the tar, None when the tar has none for this key
    captions: list  # raw captions (str, None, or undecoded text)
    width: int
    height: int


def _size(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _list_folder(fs: pafs.FileSystem, root: str, where: str) -> list[str]:
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=False))
    except (FileNotFoundError, OSError) as err:
        raise ValueError(f"{where}: cannot list the img2dataset folder {root}: {err}") from err
    return sorted(info.base_name for info in infos if info.type == pafs.FileType.File)


def _image_extension(fs: pafs.FileSystem, tar_path: str) -> str:
    """The extension img2dataset gave the images of this tar (its first image member's)."""
    try:
        with fs.open_input_stream(tar_path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for count, member in enumerate(tar):
                ext = member.name.rsplit("/", 1)[-1].partition(".")[2]
                if ext in IMAGE_EXTS or count >= _PROBE_MEMBERS:
                    return ext if ext in IMAGE_EXTS else "jpg"
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ValueError(f"{tar_path}: cannot read the tar (corrupt or truncated?): {err}") from err
    return "jpg"  # an empty tar: no member will be asked for


def _read_sidecar(fs: pafs.FileSystem, parquet_path: str) -> pa.Table:
    """The columns of a sidecar that are read (``SIDECAR_COLUMNS``), all its rows."""
    try:
        with fs.open_input_file(parquet_path) as f:
            parquet = pq.ParquetFile(f)
            names = set(parquet.schema_arrow.names)
            if not {"key", "status"} <= names:
                raise ValueError(f"{parquet_path}: not an img2dataset sidecar: it lacks a 'key' or 'status' column")
            return parquet.read(columns=[c for c in SIDECAR_COLUMNS if c in names])
    except (OSError, pa.ArrowException) as err:
        raise ValueError(f"{parquet_path}: cannot read the Parquet sidecar: {err}") from err


def _from_sidecar(fs: pafs.FileSystem, parquet_path: str, tar_path: str) -> Iterator[_Record]:
    table = _read_sidecar(fs, parquet_path)
    table = table.filter(pc.equal(table["status"], SUCCESS))
    if not table.num_rows:
        return
    ext = _image_extension(fs, tar_path)
    columns = table.to_pydict()
    num_rows = table.num_rows
    captions = columns.get("caption")
    widths, heights = columns.get("width", [0] * num_rows), columns.get("height", [0] * num_rows)
    for i, key in enumerate(columns["key"]):
        member = f"{key}.{ext}" if isinstance(key, str) else None
        yield _Record(key, member, [] if captions is None else [captions[i]], _size(widths[i]), _size(heights[i]))


def _sample_record(key: str, sample: dict) -> _Record:
    meta: dict = {}
    if "json" in sample:
        try:
            meta = json.loads(sample["json"])
        except ValueError:  # an unreadable meta member costs the sizes only
            meta = {}
        meta = meta if isinstance(meta, dict) else {}
    if "txt" in sample:
        captions = [sample["txt"].decode("utf-8", errors="surrogateescape")]  # bad bytes -> caption_not_utf8
    else:
        captions = [meta["caption"]] if "caption" in meta else []
    return _Record(key, sample.get("member"), captions, _size(meta.get("width")), _size(meta.get("height")))


def _check_complete(last: tarfile.TarInfo | None, size: int, tar_path: str) -> None:
    """Raise unless the tar ends with an end-of-archive block after its last member's data.

    tarfile ends iteration quietly at a cut header and skips cut data unread, so a truncated tar would look
    like a shorter one.
    """
    end = 0 if last is None else last.offset_data + -(-last.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    if size < end + tarfile.BLOCKSIZE:
        raise ValueError(f"{tar_path}: truncated tar: {size} bytes, no end-of-archive block after byte {end}")


def _from_tar(fs: pafs.FileSystem, tar_path: str) -> Iterator[_Record]:
    """Stream a tar that has no sidecar: group members by WebDataset key (the name up to the first dot)."""
    samples: dict[str, dict] = {}
    last = None
    try:
        with fs.open_input_stream(tar_path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                last = member
                folder, _, base = member.name.rpartition("/")
                stem, dot, ext = base.partition(".")
                if not member.isfile() or not dot:
                    continue
                sample = samples.setdefault(f"{folder}/{stem}" if folder else stem, {})
                if ext in IMAGE_EXTS:
                    sample["member"] = member.name
                elif ext in ("txt", "json"):
                    sample[ext] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ValueError(f"{tar_path}: cannot read the tar (corrupt or truncated?): {err}") from err
    _check_complete(last, fs.get_file_info(tar_path).size, tar_path)
    for key, sample in samples.items():
        yield _sample_record(key.rpartition("/")[2], sample)


def _tars(spec: SourceSpec) -> tuple[pafs.FileSystem, str, list[str], set[str]]:
    fs, root = filesystem(spec.images)
    names = _list_folder(fs, root, f"source {spec.name}")
    tars = [name for name in names if name.endswith(".tar")]
    if not tars:
        raise ValueError(f"source {spec.name}: no .tar shards in {spec.images} (expected img2dataset output)")
    return fs, root, tars, set(names)


def _sidecar(tar: str) -> str:
    return tar.removesuffix(".tar") + ".parquet"


def _shard_records(fs: pafs.FileSystem, root: str, tar: str, has_sidecar: bool) -> Iterator[_Record]:
    tar_path = f"{root}/{tar}"
    return _from_sidecar(fs, f"{root}/{_sidecar(tar)}", tar_path) if has_sidecar else _from_tar(fs, tar_path)


def read(spec: SourceSpec, stats: Counter | None = None) -> Iterator[SourceRow]:
    """``read_table``'s rows one by one: shards in name order, samples in shard order."""
    return iter_source_rows(read_table(spec, stats))


# --- the same rows as columns ----------------------------------------------------------------------------------------

RECORD_SCHEMA = pa.schema(
    [
        ("tar", pa.string()),  # the shard
        ("key", pa.string()),  # img2dataset key; null when it is not a string (then ``bad_key`` is its repr)
        ("bad_key", pa.string()),
        ("member", pa.string()),  # image member, null when the tar has none for this key
        ("caption", pa.string()),  # null when there is none or it is not a string; lone surrogates marked
        ("has_caption", pa.bool_()),  # whether the record gives a caption (a null one counts: empty_caption)
        ("width", pa.int32()),
        ("height", pa.int32()),
    ]
)


def _sidecar_columns(fs: pafs.FileSystem, parquet_path: str, tar_path: str, tar: str) -> pa.Table | None:
    """The records of a shard from its sidecar as columns, or None when a column has a type only Python handles."""
    table = _read_sidecar(fs, parquet_path)
    names = set(table.column_names)
    if not pa.types.is_string(table.schema.field("key").type) or (
        "caption" in names and not pa.types.is_string(table.schema.field("caption").type)
    ):
        return None
    table = table.filter(pc.equal(table["status"], SUCCESS))
    n = table.num_rows
    ext = _image_extension(fs, tar_path) if n else "jpg"

    def size(name: str) -> pa.Array:
        if name not in names or not pa.types.is_integer(table.schema.field(name).type):
            return pa.array(np.zeros(n, np.int32))
        values = table[name].combine_chunks()
        return pc.if_else(pc.greater(values, 0), values, 0).fill_null(0).cast(pa.int32())

    keys = table["key"].combine_chunks()
    caption = table["caption"].combine_chunks() if "caption" in names else pa.nulls(n, pa.string())
    return pa.table(
        [
            constant(tar, n),
            keys,
            pa.nulls(n, pa.string()),
            pc.binary_join_element_wise(keys, pa.scalar(ext), "."),
            caption,
            pa.array(np.full(n, "caption" in names)),
            size("width"),
            size("height"),
        ],
        schema=RECORD_SCHEMA,
    )


def _records_from_python(records: Iterator[_Record], tar: str) -> pa.Table:
    rows = []
    for record in records:
        key = record.key if isinstance(record.key, str) else None
        caption = record.captions[0] if record.captions else None
        rows.append({
            "tar": tar,
            "key": key,
            "bad_key": None if key is not None else repr(record.key),
            "member": record.member,
            "caption": mark_surrogates(caption) if isinstance(caption, str) else None,
            "has_caption": bool(record.captions),
            "width": record.width,
            "height": record.height,
        })  # fmt: skip
    return pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)


def shard_records(spec: SourceSpec, tar: str, has_sidecar: bool) -> pa.Table:
    """The records of one shard of the folder as columns (``RECORD_SCHEMA``): from its sidecar, else by streaming
    the tar. One task of ``copa ingest --engine ray``."""
    fs, root = filesystem(spec.images)
    return _shard_columns(fs, root, tar, has_sidecar)


def _shard_columns(fs: pafs.FileSystem, root: str, tar: str, has_sidecar: bool) -> pa.Table:
    if has_sidecar:
        table = _sidecar_columns(fs, f"{root}/{_sidecar(tar)}", f"{root}/{tar}", tar)
        if table is not None:
            return table
    return _records_from_python(_shard_records(fs, root, tar, has_sidecar), tar)


def shards(spec: SourceSpec) -> list[tuple[str, bool]]:
    """The shards of the folder, in the order their rows come, and whether each has its sidecar."""
    _, _, tars, present = _tars(spec)
    return [(tar, _sidecar(tar) in present) for tar in tars]


def read_table(spec: SourceSpec, stats: Counter | None = None) -> pa.Table:
    """``read``'s rows as an Arrow table in the source-manifest schema, built from the shards' records as columns.

    There are no boxes, so ``stats`` gets nothing: every problem is a rejected row."""
    fs, root, tars, present = _tars(spec)
    return rows_from_records(spec, [_shard_columns(fs, root, tar, _sidecar(tar) in present) for tar in tars])


def rows_from_records(spec: SourceSpec, shards: list[pa.Table]) -> pa.Table:
    """The rows of the records of every shard, in order: keys claimed first come, first served across shards
    (``_row``'s rules, as column operations; rows without a key of their own are made one at a time)."""
    records = pa.concat_tables(shards).combine_chunks() if shards else RECORD_SCHEMA.empty_table()
    n = records.num_rows
    tars = records["tar"].combine_chunks()
    index = np.concatenate([np.arange(t.num_rows) for t in shards]) if shards else np.zeros(0, np.int64)
    keys = records["key"].combine_chunks()
    good = np.asarray(pc.greater(pc.utf8_length(keys), 0).fill_null(False))
    key_ids = keys if good.all() else pc.if_else(pa.array(good), keys, pa.scalar(None, pa.string()))
    unsafe = np.flatnonzero(good & ~np.asarray(pc.match_substring_regex(keys, "^[A-Za-z0-9_-]+$").fill_null(False)))
    if len(unsafe):
        mask = np.zeros(n, bool)
        mask[unsafe] = True
        hashed = [path_hash(f"{tars[i].as_py()}/{keys[i].as_py()}") for i in unsafe.tolist()]
        key_ids = pc.replace_with_mask(key_ids, pa.array(mask), pa.array(hashed, pa.string()))
    positions = np.flatnonzero(good)
    holder = np.full(n, -1, np.int64)
    holder[positions] = positions[first_claims(key_ids if len(positions) == n else key_ids.filter(pa.array(good)))]
    duplicate = good & (holder != np.arange(n))

    captions = records["caption"].combine_chunks()
    has_caption = np.asarray(records["has_caption"].combine_chunks())
    cleaned, outcome = clean_captions_column(captions.filter(pa.array(has_caption)))
    status = caption_status(outcome, np.flatnonzero(has_caption), n)
    members = records["member"].combine_chunks()
    no_member = np.asarray(pc.is_null(members))
    errors = {}
    for i in np.flatnonzero(no_member | (status > 0)).tolist():
        where, key = f"{spec.images}/{tars[i].as_py()} sample {index[i]}", keys[i].as_py()
        if no_member[i]:
            errors[i] = f"{where}: key {key!r} has no image member ({'/'.join(IMAGE_EXTS)})"
        else:
            errors[i] = f"{where} (key {key!r}): {CAPTION_ERRORS[STATUSES[status[i]]]}"
    table = caption_table(
        spec.name,
        spec.images,
        key_ids.fill_null(""),  # rows without a key of their own are replaced below
        tars,
        cleaned,
        np.flatnonzero(has_caption),
        status_array(status, dict.fromkeys(np.flatnonzero(no_member).tolist(), BAD_RECORD)),
        errors,
        members=members,
        widths=records["width"].combine_chunks(),
        heights=records["height"].combine_chunks(),
    )
    return _with_fallback_rows(spec, table, records, index, good, duplicate, holder, key_ids)


def _with_fallback_rows(
    spec: SourceSpec,
    table: pa.Table,
    records: pa.Table,
    index: np.ndarray,
    good: np.ndarray,
    duplicate: np.ndarray,
    holder: np.ndarray,
    key_ids: pa.Array,
) -> pa.Table:
    """``table`` with the rows that have no key of their own (bad keys, keys used before) replaced by rejected rows,
    whose fallback keys are handed out in row order, stepping around the natural keys claimed before them.
    (Not modelled: a natural key that equals a fallback key handed out before it, which the per-row reader would
    reject too; img2dataset's keys are digit strings and fallback keys are not.)"""
    rows = np.flatnonzero(~good | duplicate).tolist()
    if not rows:
        return table
    tars, keys = records["tar"], records["key"]
    bases = [
        f"{tars[i].as_py().partition('.')[0]}_{index[i]}" if not good[i] else f"{key_ids[i].as_py()}_dup" for i in rows
    ]
    candidates = [b if is_key_id(b) else path_hash(b) for b in bases]
    candidates += [f"{c}_{k}" for c in candidates for k in range(1, 4)]
    in_candidates = pc.is_in(key_ids, value_set=pa.array(candidates, pa.string())).fill_null(False)
    claimed_at: dict[str, int] = {}
    for i in np.flatnonzero(np.asarray(in_candidates)).tolist():
        claimed_at.setdefault(key_ids[i].as_py(), i)
    handed: set[str] = set()
    pieces, start = [], 0
    for i, base in zip(rows, bases, strict=True):
        registry = KeyRegistry(spec.name)  # holds exactly what was claimed before row i
        for key_id in handed | {k for k, at in claimed_at.items() if at < i}:
            registry.claim(key_id, True)
        tar = tars[i].as_py()
        where = f"{spec.images}/{tar} sample {index[i]}"
        if not good[i]:
            shown = repr(keys[i].as_py()) if keys[i].is_valid else records["bad_key"][i].as_py()
            row = rejected_row(
                spec, registry, base, BAD_RECORD, f"{where}: img2dataset key {shown} is not a string", tar
            )
        else:
            error = f"{where}: key {keys[i].as_py()!r} was already used in {tars[int(holder[i])].as_py()}"
            row = rejected_row(spec, registry, base, DUPLICATE_KEY, error, tar)
        handed.add(row.image_id)
        pieces += [table.slice(start, i - start), pa.Table.from_pylist([vars(row)], schema=SOURCE_SCHEMA)]
        start = i + 1
    return pa.concat_tables([*pieces, table.slice(start)])
