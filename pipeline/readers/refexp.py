"""RefCOCO, RefCOCO+ and RefCOCOg in MDETR's COCO-style files: ``finetune_refcoco+_<split>.json`` and the like.

    {"images": [{"id": 0, "file_name": "COCO_train2014_000000581857.jpg", "height": 640, "width": 427,
                 "caption": "the lady with the blue shirt", "original_id": 581857, ...}, ...],
     "annotations": [{"id": 0, "image_id": 0, "bbox": [x, y, w, h], "category_id": 1, "iscrowd": 0, ...}, ...],
     "categories": [{"id": 1, "name": "person"}, ...]}

Each ``images`` record is one referring *expression* (its ``id`` is what annotations point to), so a picture appears
once per expression. The original ``refs(unc).p`` files of the refer toolkit are Python pickles and are not read:
unpickling runs code from the file. MDETR's JSON files hold the same expressions and boxes. One row per picture,
in the order of its first expression. Rules:

- **Grouping and keys.** Expressions are grouped by their normalized ``file_name`` (relative to the source's
  ``images`` root); the key is ``<source>-<file stem>`` (``refcoco_val-COCO_train2014_000000581857``), else a hash
  of the path. A picture whose key another picture already holds is rejected as ``duplicate_key``. Width and height
  are those of the picture's first record.
- **Captions** are the picture's expressions in file order that have a usable text (``rows.clean_captions``; else
  counted as ``blank_expression`` or ``expression_not_utf8``) and at least one usable box (else ``no_box``).
- **Boxes** are the captions' referent boxes: ``bbox`` [x, y, w, h] pixels to x0, y0, x1, y1 clipped to the image
  (``pipeline.geometry``). A NaN, empty or outside box is dropped (``nan_box``, ``empty_box``, ``outside_image`` in
  ``stats`` and the row's ``boxes_dropped``, one per annotation); identical boxes within a picture, after clipping,
  are one box (RefCOCO gives several expressions of the same object), counted as ``duplicate_box`` for each
  annotation merged; ``clipped`` and the row's ``boxes_clipped`` count the distinct boxes that were clipped. The
  label is the category name of the file's ``categories``, else "object"; ``box_crowd`` is ``iscrowd``.
- **Relevance**: caption ``c`` is relevant to exactly its own boxes, ``{"boxes": [its box], "words": []}``, so the
  packed sample's PTA grid of an expression is its referent's coverage.
- **Rejected rows**: a record that is not an object (``bad_record``), a bad or escaping ``file_name``
  (``bad_path``, ``path_escapes_root``), each keyed ``<source>-image<N>`` by its index in ``images``; a picture
  without a caption (the caption reason, or ``no_caption`` when its expressions have no usable box).
- **Counted, not rows**: a second expression with the same ``id`` (``duplicate_expression_id``: it gets no box), an
  annotation without an integer ``image_id`` (``bad_records``), one of an unknown expression
  (``annotation_without_expression``).

The file is streamed with ijson (``readers.jsonstream.JsonFile``) in three passes: images, annotations, categories.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from manifests.schema import make_key
from pipeline.geometry import BOX_CLIPPED, clip_xywh
from pipeline.readers.coco import read_categories
from pipeline.readers.common import (
    BAD_RECORD,
    PATH_ERRORS,
    BadRecord,
    Warner,
    check_image_path,
    image_size,
    int_id,
    keyed_rows,
    show,
)
from pipeline.readers.jsonstream import JsonFile
from pipeline.readers.vqa import clean_question
from pipeline.rows import NO_CAPTION, SourceRow
from pipeline.sources import SourceSpec

DEFAULT_LABEL = "object"  # the box label when the category is not in the file's list


@dataclass(slots=True)
class _Picture:
    index: int  # of its first record in ``images``
    path: str
    width: int
    height: int
    expressions: list[tuple[int | None, str]] = field(default_factory=list)  # (expression id, caption)
    num_raw: int = 0  # expression records, usable or not
    reason: str | None = None  # why the first unusable expression text was not a caption
    image_id: object = None  # keys come from the file stem (common.keyed_rows reads these three)
    key_id: str = ""
    duplicate_of: _Picture | None = None


def _expressions(file: JsonFile, warn: Warner) -> tuple[list[_Picture | BadRecord], set[int]]:
    """Pictures (at their first expression) and bad records in ``images`` order, and the ids of every expression."""
    records: list[_Picture | BadRecord] = []
    by_path: dict[str, _Picture] = {}
    known: set[int] = set()
    count = num_with_caption = 0
    for count, rec in enumerate(file.items("images.item"), 1):
        index = count - 1
        if not isinstance(rec, dict):
            error = f"{file.path} images[{index}]: expected an object, got {type(rec).__name__}"
            records.append(BadRecord(index, BAD_RECORD, error))
            continue
        num_with_caption += "caption" in rec
        rel, reason = check_image_path(rec.get("file_name"))
        if rel is None:
            error = f"{file.path} images[{index}]: {PATH_ERRORS[reason]}: {show(rec.get('file_name'))}"
            records.append(BadRecord(index, reason, error))
            continue
        picture = by_path.get(rel)
        if picture is None:
            picture = _Picture(index, rel, image_size(rec.get("width")), image_size(rec.get("height")))
            records.append(by_path.setdefault(rel, picture))
        picture.num_raw += 1
        eid = int_id(rec.get("id"))
        if eid is not None and eid in known:
            warn("duplicate_expression_id", f"{file.path} images[{index}]: expression id {eid} is used again")
            eid = None
        elif eid is not None:
            known.add(eid)
        text, reason = clean_question(rec.get("caption"), warn.stats, "expression")
        if text is None:
            picture.reason = picture.reason or reason
            continue
        picture.expressions.append((eid, text))
    if not count:
        raise ValueError(f"{file.path}: no records under 'images'; is this an MDETR refexp file (finetune_refcoco*)?")
    if not num_with_caption:
        raise ValueError(f"{file.path}: no 'images' record has a 'caption' (the expression); is this an MDETR refexp "
                         "file rather than COCO instances?")  # fmt: skip
    return records, known


def _annotations(file: JsonFile, known: set[int], warn: Warner) -> dict[int, list[tuple]]:
    """Expression id -> its annotations as (bbox, category_id, iscrowd), in file order (those of a blank expression
    are never looked up)."""
    boxes: dict[int, list[tuple]] = {}
    for position, rec in enumerate(file.items("annotations.item")):
        eid = int_id(rec.get("image_id")) if isinstance(rec, dict) else None
        if eid is None:
            warn("bad_records", f"{file.path}: annotations[{position}] has no integer 'image_id'; skipped")
        elif eid not in known:
            warn("annotation_without_expression", f"{file.path}: annotation {rec.get('id')} names unknown {eid}")
        else:
            boxes.setdefault(eid, []).append((rec.get("bbox"), rec.get("category_id"), bool(rec.get("iscrowd"))))
    return boxes


def _fill(row: SourceRow, picture: _Picture, boxes: dict[int, list[tuple]], names: dict[int, str], stats: Counter):
    """The captions, boxes and relevance of one picture's row."""
    at: dict[tuple[float, ...], int] = {}  # clipped box -> its index in the row
    for eid, text in picture.expressions:
        mine: list[int] = []
        for bbox, category, crowd in boxes.get(eid, []) if eid is not None else []:
            xyxy, status = clip_xywh(bbox, picture.width, picture.height)
            if xyxy is None:
                stats[status] += 1
                row.boxes_dropped += 1
                continue
            index = at.get(tuple(xyxy))
            if index is None:
                index = at[tuple(xyxy)] = len(row.boxes)
                row.boxes.append(xyxy)
                row.box_labels.append(names.get(int_id(category), DEFAULT_LABEL))
                row.box_crowd.append(crowd)
                if status == BOX_CLIPPED:
                    stats[BOX_CLIPPED] += 1
                    row.boxes_clipped += 1
            else:
                stats["duplicate_box"] += 1
            if index not in mine:
                mine.append(index)
        if not mine:
            stats["no_box"] += 1
            continue
        row.captions.append(text)
        row.relevant.append({"boxes": mine, "words": []})


def read(spec: SourceSpec, stats: Counter | None = None) -> Iterator[SourceRow]:
    """Rows of one MDETR refexp source, one per picture (see the module docstring); ``stats`` gets the counts named
    there."""
    stats = Counter() if stats is None else stats
    warn = Warner(stats)
    file = JsonFile(spec.files["annotations"], f"source {spec.name}: annotations")
    records, known = _expressions(file, warn)
    boxes = _annotations(file, known, warn)
    names = read_categories(file, warn)

    def locate(record: _Picture | BadRecord) -> tuple[str, str, str]:
        return f"image{record.index}", f"{file.path} images[{record.index}]", f"images[{record.index}]"

    def image_row(picture: _Picture, where: str) -> SourceRow:
        row = SourceRow(
            key=make_key(spec.name, picture.key_id),
            source=spec.name,
            image_id=picture.key_id,
            image_root=spec.images,
            image_path=picture.path,
            width=picture.width,
            height=picture.height,
        )
        _fill(row, picture, boxes, names, stats)
        if row.captions:
            return row
        if not picture.expressions:
            return row.reject(picture.reason or NO_CAPTION, f"{where}: no usable expression among {picture.num_raw}")
        return row.reject(NO_CAPTION, f"{where}: none of its {len(picture.expressions)} expressions has a usable box")

    return keyed_rows(spec, records, locate, image_row)
