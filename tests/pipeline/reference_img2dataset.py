"""The per-row img2dataset reading that ``pipeline.readers.img2dataset.read_table`` replaced with column operations,
kept as the oracle the columnar reader is compared with (``test_readers_columnar.py``): a ``KeyRegistry`` claim and a
``caption_row`` per record, exactly as it ran before."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from pipeline.readers.common import (
    BAD_RECORD,
    CAPTION_ERRORS,
    KeyRegistry,
    caption_row,
    is_key_id,
    path_hash,
    rejected_row,
)
from pipeline.readers.img2dataset import IMAGE_EXTS, _Record, _shard_records, _sidecar, _tars
from pipeline.rows import DUPLICATE_KEY, SourceRow
from pipeline.sources import SourceSpec


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
    fs, root, tars, present = _tars(spec)
    keys = KeyRegistry(spec.name)
    for tar in tars:
        for index, record in enumerate(_shard_records(fs, root, tar, _sidecar(tar) in present)):
            yield _row(spec, keys, record, tar, index)
