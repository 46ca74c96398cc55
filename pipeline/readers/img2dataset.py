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

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.fetch import filesystem
from pipeline.readers.common import (
    BAD_RECORD,
    CAPTION_ERRORS,
    KeyRegistry,
    caption_row,
    is_key_id,
    path_hash,
    rejected_row,
)
from pipeline.rows import DUPLICATE_KEY, SourceRow
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


def _from_sidecar(fs: pafs.FileSystem, parquet_path: str, tar_path: str) -> Iterator[_Record]:
    try:
        with fs.open_input_file(parquet_path) as f:
            parquet = pq.ParquetFile(f)
            names = set(parquet.schema_arrow.names)
            if not {"key", "status"} <= names:
                raise ValueError(f"{parquet_path}: not an img2dataset sidecar: it lacks a 'key' or 'status' column")
            table = parquet.read(columns=[c for c in SIDECAR_COLUMNS if c in names])
    except (OSError, pa.ArrowException) as err:
        raise ValueError(f"{parquet_path}: cannot read the Parquet sidecar: {err}") from err
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


def _row(spec: SourceSpec, keys: KeyRegistry, record: _Record, tar: str, index: int) -> SourceRow:
    where = f"{spec.images}/{tar} sample {index}"
    if not isinstance(record.key, str) or not record.key:
        error = f"{where}: img2dataset key {record.key!r} is not a string"
        return rejected_row(spec, keys, f"{tar.partition('.')[0]}_{index}", BAD_RECORD, error, tar)
    key_id = record.key if is_key_id(record.key) else path_hash(f"{tar}/{record.key}")
    holder = keys.claim(key_id, tar)
    if holder is not None:
        error = f"{where}: key {record.key!r} was already used in {holder}"
        return rejected_row(spec, keys, f"{key_id}_dup", DUPLICATE_KEY, error, tar)
    row, reason = caption_row(spec, key_id, tar, record.captions)
    row.image_member, row.width, row.height = record.member, record.width, record.height
    if record.member is None:
        return row.reject(BAD_RECORD, f"{where}: key {record.key!r} has no image member ({'/'.join(IMAGE_EXTS)})")
    if reason:
        return row.reject(reason, f"{where} (key {record.key!r}): {CAPTION_ERRORS[reason]}")
    return row


def read(spec: SourceSpec, stats: Counter | None = None) -> Iterator[SourceRow]:
    """Rows of one img2dataset output folder: shards in name order, samples in shard order.

    There are no boxes, so ``stats`` gets nothing: every problem is a rejected row."""
    fs, root = filesystem(spec.images)
    names = _list_folder(fs, root, f"source {spec.name}")
    tars = [name for name in names if name.endswith(".tar")]
    if not tars:
        raise ValueError(f"source {spec.name}: no .tar shards in {spec.images} (expected img2dataset output)")
    keys = KeyRegistry(spec.name)
    present = set(names)
    for tar in tars:
        sidecar = tar.removesuffix(".tar") + ".parquet"
        tar_path = f"{root}/{tar}"
        records = _from_sidecar(fs, f"{root}/{sidecar}", tar_path) if sidecar in present else _from_tar(fs, tar_path)
        for index, record in enumerate(records):
            yield _row(spec, keys, record, tar, index)
