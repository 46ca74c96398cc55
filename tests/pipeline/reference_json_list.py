"""The per-row ALBEF/BLIP JSON list reader that ``pipeline.readers.json_list`` replaced with column operations,
kept as the oracle the columnar reader is compared with (``test_readers_columnar.py``): one ``_Image`` object per
image, ``keyed_rows`` and ``caption_row`` per row, exactly as it ran before."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import ijson

from pipeline.readers.common import (
    BAD_RECORD,
    CAPTION_ERRORS,
    PATH_ERRORS,
    BadRecord,
    SurrogateGuard,
    caption_row,
    check_image_path,
    gc_paused,
    ijson_backend,
    keyed_rows,
    open_binary,
    show,
)
from pipeline.rows import SourceRow
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


def _add(records: dict, index: int, entry: object, path: str) -> None:
    if not isinstance(entry, dict):
        error = f"{path} entry {index}: expected an object with 'image' and 'caption', got {type(entry).__name__}"
        records[index] = BadRecord(index, BAD_RECORD, error)
        return
    rel, reason = check_image_path(entry.get("image"))
    if rel is None:
        error = f"{path} entry {index}: {PATH_ERRORS[reason]}: {show(entry.get('image'))}"
        records[index] = BadRecord(index, reason, error)
        return
    image = records.get(rel)
    if image is None:
        image = records[rel] = _Image(index, rel, entry.get("image_id"))
    elif image.image_id is None:
        image.image_id = entry.get("image_id")
    if "caption" in entry:  # a null or non-string caption is kept too, so clean_captions can name the reason
        image.add_captions(entry["caption"])


def _group(path: str) -> dict[str | int, _Image | BadRecord]:
    """Path -> image (int index -> bad entry), in file order."""
    records: dict[str | int, _Image | BadRecord] = {}
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

    def locate(record: _Image | BadRecord) -> tuple[str, str, str]:
        return f"entry{record.index}", f"{path} entry {record.index}", f"entry {record.index}"

    def image_row(record: _Image, where: str) -> SourceRow:
        row, reason = caption_row(spec, record.key_id, record.path, record.caption_list())
        return row.reject(reason, f"{where}: {CAPTION_ERRORS[reason]}") if reason else row

    return keyed_rows(spec, _group(path).values(), locate, image_row)
