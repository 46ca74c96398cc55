"""Captions-only rows built as Arrow columns: the web-caption readers' fast path.

CC3M and SBU lists hold millions of rows that need the same few checks each, so doing them one Python row at a time
(a ``SourceRow`` per row, then a dict per row for Arrow) costs about 20x a plain JSON-to-Parquet conversion. Here the
per-row rules of ``readers.common`` are applied to whole columns with pyarrow compute and numpy, and only the rare
rows that need Python (non-ASCII captions, image ids that are not None, rejected rows' keys and messages) go
through the per-row helpers. The result is the same rows, field for field, as the per-row path gives
(``tests/pipeline/test_readers_columnar.py`` compares both on the fault corpus and on a generated list with bad
rows mixed in).

- ``clean_captions_column`` is ``rows.clean_captions`` per caption: one regex pass finds the ASCII captions that
  ``" ".join(caption.split())`` leaves unchanged and non-empty (no whitespace but single inner spaces), which are
  kept as they are; every other string (non-ASCII, empty, untidy) goes through ``rows.clean_captions`` itself,
  with lone surrogates restored as the per-row path does.
- ``caption_status`` gives each image its status (``ok``, or the reason of its first unusable caption, or
  ``no_caption``); ``first_claims`` finds, for each key id, the row that claimed it first (``KeyRegistry``'s first
  come, first served); ``caption_table`` groups the cleaned captions per image and assembles the source-manifest
  columns.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from manifests.schema import RELEVANT_TYPE, STATUS_OK
from pipeline.readers.common import restore_surrogates
from pipeline.rows import CAPTION_NOT_UTF8, EMPTY_CAPTION, NO_CAPTION, SOURCE_SCHEMA, clean_captions

KEPT, EMPTY, NOT_UTF8 = 0, 1, 2  # per-caption outcome codes
STATUSES = (STATUS_OK, NO_CAPTION, EMPTY_CAPTION, CAPTION_NOT_UTF8)  # what caption_status's codes stand for
_REASONS = {EMPTY_CAPTION: EMPTY, CAPTION_NOT_UTF8: NOT_UTF8}
_UNTIDY = "^$|^ |  | $|[\t\n\x0b\x0c\r\x1c-\x1f]"  # what str.split() and str.strip() would change


def clean_captions_column(texts: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(each caption cleaned, null where unusable; the outcome code of each). ``texts`` is a string array, null
    where the raw caption was not a string. An ASCII caption with single spaces between words and none at its ends
    is already clean: it is kept as it is. Every other string goes through ``rows.clean_captions`` itself."""
    texts = texts.cast(pa.string())
    null = np.asarray(pc.is_null(texts))
    clean = np.asarray(pc.string_is_ascii(texts).fill_null(False))
    clean &= ~np.asarray(pc.match_substring_regex(texts, _UNTIDY).fill_null(True))
    codes = np.where(null, EMPTY, KEPT).astype(np.int8)
    others = np.flatnonzero(~clean & ~null)
    if not len(others):
        return texts, codes
    fixed = []
    for i in others.tolist():
        kept, reason = clean_captions([restore_surrogates(texts[i].as_py())])
        fixed.append(kept[0] if kept else None)
        codes[i] = KEPT if kept else _REASONS[reason]
    mask = np.zeros(len(texts), bool)
    mask[others] = True
    return pc.replace_with_mask(texts, pa.array(mask), pa.array(fixed, pa.string())), codes


def group_lists(values: pa.Array, group: np.ndarray, num_groups: int) -> pa.ListArray:
    """``values`` gathered into one list per group, in their order within each group."""
    offsets = np.zeros(num_groups + 1, np.int32)
    np.cumsum(np.bincount(group, minlength=num_groups), out=offsets[1:])
    if len(group) and (group[1:] < group[:-1]).any():  # not already in group order
        values = values.take(pa.array(np.argsort(group, kind="stable")))
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def caption_status(codes: np.ndarray, group: np.ndarray, num_groups: int) -> np.ndarray:
    """Per group, an index into ``STATUSES``: ``ok`` when a caption was kept, else the reason of its first unusable
    caption, else ``no_caption`` (``rows.clean_captions``' rule for one image's captions)."""
    status = np.where(np.bincount(group[codes == KEPT], minlength=num_groups) > 0, 0, 1).astype(np.int8)
    bad = np.flatnonzero(codes != KEPT)
    bad = bad[np.argsort(group[bad], kind="stable")]  # each group's unusable captions, in caption order
    starts = bad[np.r_[True, group[bad][1:] != group[bad][:-1]]] if len(bad) else bad
    undecided = starts[status[group[starts]] == 1]
    status[group[undecided]] = codes[undecided] + 1  # EMPTY -> 2, NOT_UTF8 -> 3
    return status


def status_array(codes: np.ndarray, others: dict[int, str] | None = None) -> pa.Array:
    """``caption_status``'s codes as strings, with the statuses in ``others`` (row -> status) put over them."""
    status = pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(STATUSES)).cast(pa.string())
    return _sparse(others, status) if others else status


def first_claims(key_ids: pa.Array) -> np.ndarray:
    """For each key id, the position of its first occurrence: who claimed it. Digit-string ids of up to 17 digits
    (img2dataset's keys, CC3M's file stems) are compared as integers with their length folded in, sorted by numpy;
    any other ids are hashed by ``dictionary_encode``."""
    n = len(key_ids)
    if n and pc.all(pc.match_substring_regex(key_ids, "^[0-9]{1,17}$")).as_py():
        codes = np.asarray(pc.cast(key_ids, pa.int64())) + np.asarray(pc.utf8_length(key_ids), np.int64) * 10**17
        order = np.argsort(codes, kind="stable")
        ordered = codes[order]
        starts = np.r_[True, ordered[1:] != ordered[:-1]]
        holder = np.empty(n, np.int64)
        holder[order] = order[starts][np.cumsum(starts) - 1]  # stable: a run starts at its smallest position
        return holder
    codes = np.asarray(key_ids.dictionary_encode().indices, np.int64)
    return first_positions(codes)[codes]


def first_positions(codes: np.ndarray) -> np.ndarray:
    """Where each code first occurs, for codes numbered in order of first occurrence (as ``dictionary_encode``
    numbers them): a code is new exactly where it exceeds every code before it. O(n), no sort."""
    if not len(codes):
        return codes
    seen = np.maximum.accumulate(codes)
    return np.flatnonzero(np.r_[True, seen[1:] > seen[:-1]])


def caption_table(
    source: str,
    image_root: str,
    key_ids: pa.Array,
    paths: pa.Array,
    captions: pa.Array,
    caption_group: np.ndarray,
    status: pa.Array,
    errors: dict[int, str],
    *,
    members: pa.Array | None = None,
    widths: pa.Array | None = None,
    heights: pa.Array | None = None,
) -> pa.Table:
    """The source-manifest rows of captions-only images: one per key id, with its kept captions (``captions``
    null where dropped, ``caption_group`` the row of each), its ``status`` and its error (``errors``: row -> message,
    for the rejected rows) decided by the caller."""
    n = len(key_ids)
    kept = np.asarray(pc.is_valid(captions))
    caption_lists = group_lists(captions.filter(pa.array(kept)), caption_group[kept], n)
    num_kept = int(kept.sum())
    no_boxes = [_empty_lists(pa.int32(), num_kept), _empty_lists(pa.string(), num_kept)]  # per kept caption
    relevant = pa.ListArray.from_arrays(
        caption_lists.offsets, pa.StructArray.from_arrays(no_boxes, fields=list(RELEVANT_TYPE))
    )
    zeros = pa.array(np.zeros(n, np.int32))
    columns = {
        "key": pc.binary_join_element_wise(constant(source, n), key_ids, "-"),
        "source": constant(source, n),
        "image_id": key_ids,
        "image_root": constant(image_root, n),
        "image_path": paths,
        "image_member": members if members is not None else pa.nulls(n, pa.string()),
        "width": zeros if widths is None else widths,
        "height": zeros if heights is None else heights,
        "captions": caption_lists,
        "boxes": _empty_lists(pa.list_(pa.float32(), 4), n),
        "box_labels": _empty_lists(pa.string(), n),
        "box_crowd": _empty_lists(pa.bool_(), n),
        "relevant": relevant,
        "status": status,
        "error": _sparse(errors, pa.nulls(n, pa.string())),
        "boxes_dropped": zeros,
        "boxes_clipped": zeros,
    }
    return pa.table([columns[f.name].cast(f.type) for f in SOURCE_SCHEMA], schema=SOURCE_SCHEMA)


def constant(value: str, n: int) -> pa.Array:
    """A string array of ``n`` times ``value``, built from its buffers (``fill_null`` copies value by value)."""
    data = value.encode("utf-8")
    offsets = np.arange(n + 1, dtype=np.int64) * len(data)
    return pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data * n)]).cast(
        pa.string()
    )


def _empty_lists(type_: pa.DataType, n: int) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), pa.array([], type_))


def _sparse(values: dict[int, str], base: pa.Array) -> pa.Array:
    """``base`` with the strings of ``values`` (position -> string) put in at their positions."""
    mask = np.zeros(len(base), bool)
    mask[list(values)] = True
    replacements = pa.array([values[i] for i in sorted(values)], pa.string())
    return pc.replace_with_mask(base, pa.array(mask), replacements)
