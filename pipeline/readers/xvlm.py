"""X-VLM-style JSON Lines: one image per line with boxed phrases (``elems``), as X-VLM's region datasets read them.

    {"image": "vg/VG_100K/10.jpg", "image_w": 800, "image_h": 600,          # size optional ("width"/"height" too)
     "caption": "a man riding a horse" or [...],                             # optional, about the whole image
     "elems": [{"caption": "man" or [...], "bb": [x, y, w, h], "attributes": ["tall"] or "tall"}, ...]}

Rules (DESIGN section 6: each elem's box is relevant to its own text):

- **Elem captions.** Every caption of an elem becomes a row caption whose relevant boxes are that elem's box alone
  (``{"boxes": [i], "words": []}``). X-VLM prepends one attribute, drawn at random, to the elem caption; we write
  one caption per distinct attribute ("tall man", "young man") so the trainer's caption sampling sees the same
  variety, and the bare caption when there are none. The box label is the elem's first caption.
- **Top-level captions** come first in the row (the first caption becomes the ``.txt`` member) and get the elem
  boxes whose label names a COCO category (``align.COCO_MATCHER``: names, synonyms, plurals, word boundaries)
  that the caption names too (``align.CAPTION_MATCHER``: the caption rules, generic words resolved against the
  categories of the line's elems); the recorded words are the caption's words that matched. "a man riding a horse"
  gets the boxes labelled "person", "young man" and "brown horse", not the one labelled "grass". A caption that
  names no COCO category gets no boxes.
- **Bad boxes** go through ``geometry.clip_xywh`` against the line's image size (without a size they are only
  checked; pack clips them): a box that overlaps the image is clipped (``boxes_clipped``); a NaN, empty or outside
  box is dropped (``boxes_dropped``) *with its elem's captions*, since a caption whose only box is gone would teach
  PTA an empty target. So ``len(relevant) == len(captions)`` always, and every box index is valid.
- An elem without a usable caption is skipped: nothing would name its box. A row left without any caption is
  rejected with ``rows.clean_captions``' reason.
- **Repeated images.** Lines with the same image path are merged into one row at the first line's position: their
  top-level captions first, then their elems, boxes renumbered in line order. The first line that gives a size
  (or an ``image_id``) sets it.
- **Bad lines.** A line that is not valid JSON (a truncated file is just a broken last line), not an object, or
  whose ``elems`` is not a list becomes a rejected row ``<source>-line<N>`` (N = 1-based line number) with status
  ``bad_record`` and the parse error; bad and escaping image paths likewise with ``bad_path`` /
  ``path_escapes_root``. Blank lines are skipped. So rows out = distinct good image paths + bad lines.
- **Keys** as in ``json_list``: key-safe ``image_id``, else the file stem, else a hash of the path; a second path
  with a taken key is rejected as ``duplicate_key`` (keyed ``line<N>``).

The whole file is read before the first row comes out (a later line may add to any image); memory holds the
parsed lines of the file, grouped per image. Measured: 100k lines of 5 elems each (47 MB) in 15 s of CPU, peak
RSS about 400 MB, measured when ``COCO_MATCHER`` was still a regex (a third of the time then; now a word scan).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import BinaryIO

from pipeline.align import CAPTION_MATCHER, COCO_MATCHER
from pipeline.geometry import BOX_CLIPPED, clip_counted
from pipeline.readers.common import (
    BAD_RECORD,
    CAPTION_ERRORS,
    PATH_ERRORS,
    BadRecord,
    caption_row,
    check_image_path,
    gc_paused,
    keyed_rows,
    open_binary,
    show,
)
from pipeline.rows import NO_CAPTION, SourceRow, clean_captions
from pipeline.sources import SourceSpec


@dataclass(slots=True)
class _Image:
    line: int  # line number of its first line
    path: str  # normalized relative path
    image_id: object = None
    width: int = 0
    height: int = 0
    captions: list = field(default_factory=list)  # raw top-level captions of all its lines
    elems: list = field(default_factory=list)  # raw elems of all its lines, in line order
    key_id: str = ""
    duplicate_of: _Image | None = None


def _as_list(value: object) -> list:
    return value if isinstance(value, list) else [value]


def _positive_int(value: object) -> int:
    """A positive integral size, else 0 (unknown)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value <= 0:
        return 0
    return int(value) if float(value).is_integer() else 0


def _size(entry: dict) -> tuple[int, int]:
    for w_name, h_name in (("image_w", "image_h"), ("width", "height")):
        width, height = _positive_int(entry.get(w_name)), _positive_int(entry.get(h_name))
        if width and height:
            return width, height
    return 0, 0


def _parse(text: str, number: int, path: str) -> dict | BadRecord:
    try:
        entry = json.loads(text)
    except (ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError; absurd nesting recurses
        return BadRecord(number, BAD_RECORD, f"{path}:{number}: not valid JSON: {err}")
    if not isinstance(entry, dict):
        got = type(entry).__name__
        return BadRecord(number, BAD_RECORD, f"{path}:{number}: expected an object with 'image' and 'elems', got {got}")
    return entry


def _add(records: dict, number: int, text: str, path: str) -> None:
    entry = _parse(text, number, path)
    if isinstance(entry, BadRecord):
        records[number] = entry
        return
    rel, reason = check_image_path(entry.get("image"))
    if rel is None:
        error = f"{path}:{number}: {PATH_ERRORS[reason]}: {show(entry.get('image'))}"
        records[number] = BadRecord(number, reason, error)
        return
    elems = entry.get("elems", [])
    if not isinstance(elems, list):
        error = f"{path}:{number}: 'elems' must be a list of objects, got {type(elems).__name__}"
        records[number] = BadRecord(number, BAD_RECORD, error)
        return
    image = records.get(rel)
    if image is None:
        image = records[rel] = _Image(number, rel)
    if image.image_id is None:
        image.image_id = entry.get("image_id")
    if not image.width:
        image.width, image.height = _size(entry)
    if "caption" in entry:
        image.captions.extend(_as_list(entry["caption"]))
    image.elems.extend(elems)


def _lines(f: BinaryIO, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """The lines of a binary stream; pyarrow's remote streams have no readline, so split chunks here."""
    tail = b""
    while chunk := f.read(chunk_size):
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()
        yield from lines
    if tail:
        yield tail


def _group(path: str) -> dict[str | int, _Image | BadRecord]:
    """Image path -> merged lines (line number -> bad line), in file order."""
    records: dict[str | int, _Image | BadRecord] = {}
    with open_binary(path) as f, gc_paused():
        for number, raw in enumerate(_lines(f), start=1):
            text = raw.decode("utf-8", errors="surrogateescape")  # bad bytes -> surrogates -> rejected captions
            if text.strip():
                _add(records, number, text, path)
    return records


def _clean_words(values: object) -> list[str]:
    """Usable strings among ``values`` (a string or a list), whitespace-normalized, deduplicated, in order."""
    kept, _ = clean_captions(_as_list(values))
    return list(dict.fromkeys(kept))


def _elem_texts(elem: object) -> tuple[list[str], str, list]:
    """(captions the elem contributes, its box label, its raw captions for the rejection reason)."""
    if not isinstance(elem, dict):
        return [], "", []
    raw = _as_list(elem.get("caption"))
    names = _clean_words(raw)
    attributes = _clean_words(elem.get("attributes", []))
    captions = list(dict.fromkeys(f"{a} {c}" for c in names for a in attributes)) if attributes else names
    return captions, names[0] if names else "", raw


@dataclass
class _Boxes:
    """The boxed part of a row under construction."""

    boxes: list[list[float]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    relevant: list[dict] = field(default_factory=list)
    dropped: int = 0
    clipped: int = 0
    raw_captions: list = field(default_factory=list)  # every caption seen, for the reason when none is usable


def _add_elems(image: _Image, stats: Counter) -> _Boxes:
    out = _Boxes()
    for elem in image.elems:
        captions, label, raw = _elem_texts(elem)
        out.raw_captions += raw
        if not captions:
            continue
        box, status = clip_counted(elem.get("bb"), image.width, image.height, stats)
        if box is None:
            out.dropped += 1
            continue
        out.clipped += status == BOX_CLIPPED
        index = len(out.boxes)
        out.boxes.append(box)
        out.labels.append(label)
        out.captions += captions
        out.relevant += [{"boxes": [index], "words": []} for _ in captions]
    return out


@lru_cache(maxsize=1 << 16)
def _categories(label: str) -> frozenset[str]:
    """COCO categories a box label names; cached, since labels repeat ("man", "tree") across millions of elems."""
    return frozenset(m.label for m in COCO_MATCHER.find(label))


def align_to_elems(captions: list[str], labels: list[str]) -> list[dict]:
    """Top-level captions -> the boxes whose label names a COCO category the caption names (module docstring)."""
    label_categories = [_categories(label) for label in labels]
    if not any(label_categories):  # nothing to find: spare the matcher, the costly part of this reader
        return [{"boxes": [], "words": []} for _ in captions]
    relevant, present = [], set().union(*label_categories)
    for caption in captions:
        matches = CAPTION_MATCHER.find(caption, present)
        named = {m.label for m in matches}
        boxes = [i for i, categories in enumerate(label_categories) if categories & named]
        used = set().union(*(label_categories[i] for i in boxes)) if boxes else set()
        words = list(dict.fromkeys(m.word for m in matches if m.label in used))
        relevant.append({"boxes": boxes, "words": words})
    return relevant


def _image_row(spec: SourceSpec, image: _Image, where: str, stats: Counter) -> SourceRow:
    elems = _add_elems(image, stats)
    row, _ = caption_row(spec, image.key_id, image.path, image.captions)  # top-level captions only, so far
    row.width, row.height = image.width, image.height
    row.relevant = align_to_elems(row.captions, elems.labels) + elems.relevant
    row.captions = row.captions + elems.captions
    row.boxes, row.box_labels, row.box_crowd = elems.boxes, elems.labels, [False] * len(elems.boxes)
    row.boxes_dropped, row.boxes_clipped = elems.dropped, elems.clipped
    if row.captions:
        return row
    _, reason = clean_captions(image.captions + elems.raw_captions)
    if reason is None:  # usable captions existed, but every one was an elem's whose box was dropped
        return row.reject(NO_CAPTION, f"{where}: every caption lost its box ({elems.dropped} boxes dropped)")
    return row.reject(reason, f"{where}: {CAPTION_ERRORS[reason]}")


def read(spec: SourceSpec, stats: Counter | None = None) -> Iterator[SourceRow]:
    """Rows of one X-VLM JSON Lines source, one per image, in the order of each image's first line.

    ``stats`` (optional) receives ``clipped`` and the box drop reasons of ``pipeline.geometry``."""
    path = spec.files["annotations"]
    stats = Counter() if stats is None else stats

    def locate(record: _Image | BadRecord) -> tuple[str, str, str]:
        line = record.index if isinstance(record, BadRecord) else record.line  # a bad record's index is its line
        return f"line{line}", f"{path}:{line}", f"line {line}"

    def image_row(record: _Image, where: str) -> SourceRow:
        return _image_row(spec, record, where, stats)

    return keyed_rows(spec, _group(path).values(), locate, image_row)
