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

**Streaming.** CC3M's list is about 3M entries and 500 MB, so it is parsed with ijson (the C yajl2 backend when
present) and memory holds the per-image grouping, never the parsed document; a JSON array must be read to its
end before the first row is known complete, so rows come out after the whole file is read. Budget: about 0.5 KB
per image (path, captions, key). Measured on a 3M-entry, 327 MB CC3M-style list: peak RSS 1.46 GB, 29 s of CPU
(parsing with the guard is about 4 s of it; the rest is Python work per entry and per row).

**Lone surrogates.** ``json.dumps`` writes an undecodable character as an escape such as ``"\\udcff"``. yajl
turns a lone *low* surrogate escape into bytes that then fail to decode (ijson raises in the middle of the file)
and a lone *high* one silently into "?". ``SurrogateGuard`` rewrites such escapes, and raw bytes that are not
UTF-8, to a marker before the parser sees them; the reader turns markers back into surrogates, so the caption
is rejected as ``caption_not_utf8``, as ``json.load`` would have it. Valid surrogate pairs (emoji) pass untouched.

A file that is not a JSON array, or that breaks off (truncated, malformed), raises ``ValueError`` naming the file
and how many entries were read: a JSON document cannot be resynchronized after a syntax error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import ijson

from pipeline.readers.common import (
    BAD_RECORD,
    CAPTION_ERRORS,
    PATH_ERRORS,
    SurrogateGuard,
    caption_row,
    check_image_path,
    gc_paused,
    ijson_backend,
    keyed_rows,
    open_binary,
    show,
)
from pipeline.rows import (
    SourceRow,
)
from pipeline.sources import SourceSpec


@dataclass(slots=True)
class _Image:
    index: int  # index of its first entry in the array
    path: str  # normalized relative path
    image_id: object  # "image_id" of its first entry that has one
    captions: str | list | None = None  # raw captions of all its entries; one str alone saves a list per image
    key_id: str = ""

    def add_captions(self, caption: object) -> None:
        if self.captions is None and isinstance(caption, str):
            self.captions = caption
            return
        more = caption if isinstance(caption, list) else [caption]
        if self.captions is None:
            self.captions = list(more)
        elif isinstance(self.captions, str):
            self.captions = [self.captions, *more]
        else:
            self.captions.extend(more)

    def caption_list(self) -> list:
        return [] if self.captions is None else [self.captions] if isinstance(self.captions, str) else self.captions

    duplicate_of: _Image | None = None


@dataclass(slots=True)
class _Bad:
    index: int
    status: str
    error: str


def _add(records: dict, index: int, entry: object, path: str) -> None:
    if not isinstance(entry, dict):
        error = f"{path} entry {index}: expected an object with 'image' and 'caption', got {type(entry).__name__}"
        records[index] = _Bad(index, BAD_RECORD, error)
        return
    rel, reason = check_image_path(entry.get("image"))
    if rel is None:
        error = f"{path} entry {index}: {PATH_ERRORS[reason]}: {show(entry.get('image'))}"
        records[index] = _Bad(index, reason, error)
        return
    image = records.get(rel)
    if image is None:
        image = records[rel] = _Image(index, rel, entry.get("image_id"))
    elif image.image_id is None:
        image.image_id = entry.get("image_id")
    if "caption" in entry:  # a null or non-string caption is kept too, so clean_captions can name the reason
        image.add_captions(entry["caption"])


def _group(path: str) -> dict[str | int, _Image | _Bad]:
    """Path -> image (int index -> bad entry), in file order."""
    records: dict[str | int, _Image | _Bad] = {}
    count = 0
    with open_binary(path) as raw, gc_paused():
        guard = SurrogateGuard(raw)
        first = guard.peek()
        if first != b"[":
            raise ValueError(f"{path}: expected a JSON array of {{image, caption}} objects, found {first!r} first")
        try:
            for index, entry in enumerate(ijson_backend().items(guard, "item", use_float=True)):
                _add(records, index, entry, path)
                count = index + 1
        except ijson.JSONError as err:
            raise ValueError(f"{path}: malformed or truncated JSON after {count} entries: {err}") from err
    return records


def read(spec: SourceSpec, stats: Counter | None = None) -> Iterator[SourceRow]:
    """Rows of one ALBEF/BLIP JSON list source, one per image, in the order of each image's first entry.

    There are no boxes, so ``stats`` gets nothing: every problem is a rejected row."""
    path = spec.files["annotations"]

    def locate(record: _Image | _Bad) -> tuple[str, str, str]:
        return f"entry{record.index}", f"{path} entry {record.index}", f"entry {record.index}"

    def image_row(record: _Image, where: str) -> SourceRow:
        row, reason = caption_row(spec, record.key_id, record.path, record.caption_list())
        return row.reject(reason, f"{where}: {CAPTION_ERRORS[reason]}") if reason else row

    return keyed_rows(spec, _group(path).values(), _Bad, locate, image_row)
