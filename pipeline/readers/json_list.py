"""ALBEF/BLIP-style JSON lists: ``[{"image": "train2014/x.jpg", "caption": "..." or [...], "image_id": ...}, ...]``.

The format of ALBEF's and BLIP's released caption files (``cc3m_train.json``, ``sbu.json``,
``coco_karpathy_train.json`` with one entry per caption, ``vg_caption.json``). One row per *image*:

- **Grouping.** Entries are grouped by their normalized image path (``./a/b.jpg`` is ``a/b.jpg``); the image's
  captions keep first-seen order and the row sits where its first entry was.
- **Keys** ``<source>-<id>``: the ``image_id`` of the image's first entry that has one, when it is key-safe; else
  the image file's stem (``images/cc3m/000000123.jpg`` -> ``000000123``) when key-safe; else the first 16 hex
  digits of blake2b of the path. An image whose id another image (another path) already holds is rejected as
  ``duplicate_key``. Rows without a key of their own (duplicates, bad paths, bad records) are keyed by their
  entry's index in the array, ``<source>-entry<N>`` (N from 0; a ``_k`` suffix keeps it unique).
- **Rejections** (the row is kept with a status): a missing, absolute or non-UTF-8 path (``bad_path``), a path
  climbing out of the image root (``path_escapes_root``), no usable caption (the reason from
  ``rows.clean_captions``), an entry that is not an object (``bad_record``). One rejected row per bad entry:
  a bad path cannot be grouped. So rows out = distinct good image paths + bad entries.
- No boxes: ``relevant`` holds one empty entry per caption. Width and height are 0 (unknown until pack decodes).

**Columns, not rows.** CC3M's list is about 3M entries and 300-500 MB. It is parsed with ijson (the C yajl2 backend
when present); each entry costs a few type checks and appends to plain lists, turned into Arrow arrays every
65,536 entries, so memory holds the entries as columns (about 100 bytes per entry), never the parsed document or a
Python object per image. Grouping is one ``dictionary_encode`` of the path column (its dictionary is the distinct
paths in first-seen order), keys, duplicate keys and caption cleaning are column operations
(``readers.columnar``), and the rows come out as one Arrow table in the source-manifest schema. Only rejected
rows and images that carry an ``image_id`` take a Python step each. A JSON array must be read to its end before
any image is known complete, so memory grows with the file: 3M entries take about 0.6 GB; for corpora of 100M
images use formats read file by file (img2dataset folders, X-VLM JSON Lines), which ``copa ingest --engine ray``
spreads over a cluster.

**Lone surrogates.** ``json.dumps`` writes an undecodable character as an escape such as ``"\\udcff"``. yajl
turns a lone *low* surrogate escape into bytes that then fail to decode (ijson raises in the middle of the file)
and a lone *high* one silently into "?". ``SurrogateGuard`` rewrites such escapes, and raw bytes that are not
UTF-8, to a marker before the parser sees them; the reader turns markers back into surrogates, so the caption
is rejected as ``caption_not_utf8``, as ``json.load`` would have it. Valid surrogate pairs (emoji) pass untouched.

A file that is not a JSON array, or that breaks off (truncated, malformed), raises ``ValueError`` naming the file
and how many entries were read: a JSON document cannot be resynchronized after a syntax error.
"""

from __future__ import annotations

import dataclasses
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import ijson
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.readers.columnar import (
    STATUSES,
    caption_status,
    caption_table,
    clean_captions_column,
    first_claims,
    first_positions,
    status_array,
)
from pipeline.readers.common import (
    BAD_RECORD,
    CAPTION_ERRORS,
    PATH_ERRORS,
    KeyRegistry,
    SurrogateGuard,
    check_image_path,
    gc_paused,
    ijson_backend,
    natural_key_id,
    open_binary,
    rejected_row,
    show,
)
from pipeline.rows import DUPLICATE_KEY, SOURCE_SCHEMA, SourceRow, iter_source_rows
from pipeline.sources import SourceSpec

_CHUNK = 1 << 16  # entries between conversions of the Python lists to Arrow arrays
_KEY_ID = "^[A-Za-z0-9_-]+$"  # common.is_key_id's rule
_UNPLAIN = r"^$|^[/.]|/$|\\|//|/\.|:"  # paths that common.plain_path refuses (with non-ASCII ones)


@dataclass
class _Columns:
    """The entries of one JSON list as columns. Positions (``pos``) count the entries kept as images."""

    paths: pa.Array  # image path per entry kept, normalized
    index: np.ndarray  # array index of each entry kept
    ids: list  # (pos, image_id) of the entries kept that have one
    caption_pos: np.ndarray  # per raw caption: its entry's pos
    captions: pa.Array  # raw caption, null where not a string
    bad: list  # (index, status, error) of the entries that are not objects or have no usable image path


def _parse(path: str) -> _Columns:
    """Every entry whose image is a string, as columns; the rest as bad entries. Paths are checked afterwards."""
    paths: list = []
    captions: list = []
    path_chunks: list = []
    caption_chunks: list = []
    index, caption_pos, ids, bad = array("q"), array("q"), [], []
    add_path, add_caption, add_index, add_caption_pos = paths.append, captions.append, index.append, caption_pos.append
    count = pos = 0
    with open_binary(path) as raw, gc_paused():
        guard = SurrogateGuard(raw)
        first = guard.peek()
        if first != b"[":
            raise ValueError(f"{path}: expected a JSON array of {{image, caption}} objects, found {first!r} first")
        try:
            for count, entry in enumerate(ijson_backend().items(guard, "item", use_float=True), 1):
                if type(entry) is not dict:
                    error = f"expected an object with 'image' and 'caption', got {type(entry).__name__}"
                    bad.append((count - 1, BAD_RECORD, f"{path} entry {count - 1}: {error}"))
                    continue
                image = entry.get("image")
                if type(image) is not str:
                    reason = check_image_path(image)[1]
                    bad.append((count - 1, reason, f"{path} entry {count - 1}: {PATH_ERRORS[reason]}: {show(image)}"))
                    continue
                add_index(count - 1)
                add_path(image)
                if (image_id := entry.get("image_id")) is not None:
                    ids.append((pos, image_id))
                if "caption" in entry:  # a null or non-string caption counts too: clean_captions names the reason
                    caption = entry["caption"]
                    if type(caption) is str:
                        add_caption_pos(pos)
                        add_caption(caption)
                    else:
                        for text in caption if type(caption) is list else (caption,):
                            add_caption_pos(pos)
                            add_caption(text if type(text) is str else None)
                pos += 1
                if len(paths) == _CHUNK:
                    path_chunks.append(pa.array(paths, pa.string()))
                    caption_chunks.append(pa.array(captions, pa.string()))
                    paths.clear()
                    captions.clear()
        except ijson.JSONError as err:
            raise ValueError(f"{path}: malformed or truncated JSON after {count} entries: {err}") from err
    path_chunks.append(pa.array(paths, pa.string()))
    caption_chunks.append(pa.array(captions, pa.string()))
    cols = _Columns(
        paths=pa.chunked_array(path_chunks, pa.string()).combine_chunks(),
        index=np.frombuffer(index, np.int64),
        ids=ids,
        caption_pos=np.frombuffer(caption_pos, np.int64),
        captions=pa.chunked_array(caption_chunks, pa.string()).combine_chunks(),
        bad=bad,
    )
    return _check_paths(cols, path)


def _check_paths(cols: _Columns, path: str) -> _Columns:
    """Normalize the image paths that need it and move entries without a usable path to ``bad``: one regex pass
    finds the paths ``check_image_path`` might change (non-ASCII, or an empty, "." or ".." part, a backslash, a
    leading "/" or ".", a trailing "/", a colon), and only those take a Python step."""
    plain = np.asarray(pc.string_is_ascii(cols.paths)) & ~np.asarray(pc.match_substring_regex(cols.paths, _UNPLAIN))
    suspects = np.flatnonzero(~plain).tolist()
    if not suspects:
        return cols
    keep = np.ones(len(cols.paths), bool)
    fixed = []
    for pos in suspects:
        raw = cols.paths[pos].as_py()
        rel, reason = check_image_path(raw)
        if rel is None:
            index = int(cols.index[pos])
            cols.bad.append((index, reason, f"{path} entry {index}: {PATH_ERRORS[reason]}: {show(raw)}"))
            keep[pos] = False
        fixed.append(rel)
    mask = np.zeros(len(keep), bool)
    mask[suspects] = True
    paths = pc.replace_with_mask(cols.paths, pa.array(mask), pa.array(fixed, pa.string()))
    if keep.all():
        return dataclasses.replace(cols, paths=paths)
    renumber = np.cumsum(keep) - 1
    kept_captions = keep[cols.caption_pos]
    return _Columns(
        paths=paths.filter(pa.array(keep)),
        index=cols.index[keep],
        ids=[(int(renumber[pos]), value) for pos, value in cols.ids if keep[pos]],
        caption_pos=renumber[cols.caption_pos[kept_captions]],
        captions=cols.captions.filter(pa.array(kept_captions)),
        bad=cols.bad,
    )


def _key_ids(paths: pa.Array, image_ids: dict[int, object]) -> pa.Array:
    """``natural_key_id`` of every image: its image_id (``image_ids``: image -> id, where one was given), else the
    file stem when key-safe, else a hash of the path. Stems are cut with string kernels: the part after the last
    "/", then before the last "." when that dot is not the first character (``common.file_stem``)."""
    slashed = pc.split_pattern(paths, "/", max_splits=1, reverse=True)
    names = slashed.flatten().take(pa.array(np.asarray(slashed.offsets)[1:] - 1))
    dotted = pc.split_pattern(names, ".", max_splits=1, reverse=True)
    first = dotted.flatten().take(pa.array(np.asarray(dotted.offsets)[:-1]))
    ids = pc.if_else(pc.equal(first, ""), names, first)
    fixed = dict.fromkeys(np.flatnonzero(~np.asarray(pc.match_substring_regex(ids, _KEY_ID))).tolist())
    fixed |= image_ids
    if not fixed:
        return ids
    mask = np.zeros(len(ids), bool)
    mask[list(fixed)] = True
    values = [natural_key_id(fixed[i], paths[i].as_py()) for i in sorted(fixed)]
    return pc.replace_with_mask(ids, pa.array(mask), pa.array(values, pa.string()))


def read_table(spec: SourceSpec, stats: Counter | None = None) -> pa.Table:
    """The rows of one ALBEF/BLIP JSON list source, one per image, in the order of each image's first entry, as an
    Arrow table in the source-manifest schema (see the module docstring).

    There are no boxes, so ``stats`` gets nothing: every problem is a rejected row."""
    path = spec.files["annotations"]
    cols = _parse(path)
    encoded = cols.paths.dictionary_encode()
    codes = np.asarray(encoded.indices, np.int64)
    images = encoded.dictionary  # distinct paths, in first-seen order
    n = len(images)
    first_index = cols.index[first_positions(codes)]

    # Keys: the first image_id an image's entries give, else the file stem, else a hash; the first claim wins.
    image_ids: dict[int, object] = {}
    for pos, value in cols.ids:
        image_ids.setdefault(int(codes[pos]), value)
    key_ids = _key_ids(images, image_ids)
    holder = first_claims(key_ids)
    duplicate = holder != np.arange(n)

    captions, outcome = clean_captions_column(cols.captions)
    caption_group = codes[cols.caption_pos]
    status = caption_status(outcome, caption_group, n)
    errors = {
        g: f"{path} entry {first_index[g]}: {CAPTION_ERRORS[STATUSES[status[g]]]}" for g in np.flatnonzero(status)
    }
    table = caption_table(
        spec.name, spec.images, key_ids, images, captions, caption_group, status_array(status), errors
    )

    # Rows without a key of their own (bad entries, duplicate keys) get fallback keys in array order, once every
    # natural key is claimed; only natural ids that start like a fallback can collide with one.
    keys = KeyRegistry(spec.name)
    for key_id in key_ids.filter(pc.starts_with(key_ids, "entry")).to_pylist():
        keys.claim(key_id, True)
    fallback = [(index, reason, error, "") for index, reason, error in cols.bad]
    for g in np.flatnonzero(duplicate).tolist():
        other = int(holder[g])
        image, key_id = images[g].as_py(), key_ids[g].as_py()
        error = (
            f"{path} entry {first_index[g]}: image {image!r} has the key id {key_id!r} of image "
            f"{images[other].as_py()!r} (entry {first_index[other]})"
        )
        fallback.append((int(first_index[g]), DUPLICATE_KEY, error, image))
    fallback.sort()
    rejected = pa.Table.from_pylist(
        [vars(rejected_row(spec, keys, f"entry{i}", reason, error, image)) for i, reason, error, image in fallback],
        schema=SOURCE_SCHEMA,
    )
    # Each rejected row goes in before the first image that comes after it in the array; a duplicate takes its
    # image's place. Slices, not a take: the image rows are not copied.
    pieces, start = [], 0
    for j, (index, *_) in enumerate(fallback):
        at = int(np.searchsorted(first_index, index))
        pieces += [table.slice(start, at - start), rejected.slice(j, 1)]
        start = at + 1 if at < n and duplicate[at] and first_index[at] == index else at
    return pa.concat_tables([*pieces, table.slice(start)])


def read(spec: SourceSpec, stats: Counter | None = None) -> Iterator[SourceRow]:
    """``read_table``'s rows one by one, for callers that want ``SourceRow`` objects."""
    return iter_source_rows(read_table(spec, stats))
