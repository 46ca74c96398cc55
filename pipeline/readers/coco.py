"""COCO reader: ``captions_*.json`` plus optional ``instances_*.json`` (2014 or 2017), one row per captioned image.

Both files are joined on ``image_id``. The image path is the ``file_name`` the captions file gives
(``COCO_train2014_000000391895.jpg`` or ``000000391895.jpg``) relative to the source's ``images`` root; the key is
``<source>-<12-digit zero-padded id>``. Boxes come from the instance ``bbox`` ([x, y, w, h] in pixels), clipped to
the image (``geometry.clip_xywh``); their label is the category *name* from the file's own ``categories`` list and
``box_crowd`` is ``iscrowd``. Captions are aligned to boxes by category name and synonyms (``align.align_by_labels``).

Counting rules (what ``stats`` receives, see ``read``):

- One row per image record of the captions file: rows = ok + rejected. An image without a usable caption is a
  rejected row (``no_caption``/``empty_caption``/``caption_not_utf8``), a bad ``file_name`` is ``bad_path`` or
  ``path_escapes_root``, a repeated image id ``duplicate_key``.
- Images that only the instances file knows (COCO's detection-only images) have no text, so they are *not* rows;
  their boxes are counted under ``boxes_without_captioned_image`` and the distinct images under
  ``instances_only_images``. Caption annotations of an unknown image are counted under ``captions_without_image``.
- A box with an unknown ``category_id`` is dropped and counted under ``unknown_category`` (and in the row's
  ``boxes_dropped``), with a warning naming the file and the annotation id: one odd annotation must not stop an
  ingest of 860,000, and the box could not be aligned to any caption anyway.
- NaN, empty and outside boxes are dropped (``nan_box``, ``empty_box``, ``outside_image``), partly outside ones
  clipped; both per row and in ``stats``.
- A record that is not an object or has no integer id cannot be keyed: it is skipped, counted under
  ``bad_records`` and logged with its file and position. A file that is not JSON, is truncated, or has no
  ``images`` raises ``ValueError`` naming the file.

Memory: the files are never loaded whole. They are streamed with ijson (the yajl2 C backend) in separate passes
(images, caption annotations, categories, instance annotations), keeping only what rows need: per image its id,
file name and size; the caption strings; per kept box its image, corners, label and crowd flag in flat arrays
(about 55 bytes a box). Measured by ``copa bench ingest`` at train2017 scale (120k images, 600k captions, 860k
boxes with polygons; 430 MB of JSON): peak 154 MB above the bare interpreter, against 2.4 GB for ``json.load`` of
the same two files; 2,150 rows/s on a shared 2-core machine, about half of it parsing.

Non-standard JSON (NaN, lone surrogates) is handled by ``pipeline.readers.jsonstream.JsonFile``.
"""

from __future__ import annotations

import logging
from array import array
from collections import Counter
from collections.abc import Iterator

import numpy as np

from manifests.schema import make_key
from pipeline import align
from pipeline.geometry import BOX_CLIPPED, clip_counted
from pipeline.readers.common import PATH_ERRORS, Warner, check_image_path, image_size, int_id, show
from pipeline.readers.jsonstream import JsonFile
from pipeline.rows import DUPLICATE_KEY, SourceRow, clean_captions
from pipeline.sources import SourceSpec

log = logging.getLogger(__name__)

UNKNOWN_CATEGORY = "unknown_category"  # box drop reason next to geometry's nan_box, empty_box, outside_image

# --- the reader -----------------------------------------------------------------------------------------------


class _Images:
    """The image records of the captions file, in file order (the order rows come out)."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.file_names: list[object] = []
        self.widths = array("q")
        self.heights = array("q")
        self.index_of: dict[int, int] = {}  # image id -> index of its first record


def _read_images(file: JsonFile, warn: Warner) -> _Images:
    images = _Images()
    for position, rec in enumerate(file.items("images.item")):
        image_id = int_id(rec.get("id")) if isinstance(rec, dict) else None
        if image_id is None:
            warn("bad_records", f"{file.path}: images[{position}] has no integer 'id'; skipped: {str(rec)[:120]}")
            continue
        images.index_of.setdefault(image_id, len(images.ids))
        images.ids.append(image_id)
        images.file_names.append(rec.get("file_name"))
        images.widths.append(image_size(rec.get("width")))
        images.heights.append(image_size(rec.get("height")))
    return images


def _read_captions(file: JsonFile, images: _Images, warn: Warner) -> list[list | None]:
    captions: list[list | None] = [None] * len(images.ids)
    num_with_field = 0
    for position, rec in enumerate(file.items("annotations.item")):
        image_id = int_id(rec.get("image_id")) if isinstance(rec, dict) else None
        if image_id is None:
            warn("bad_records", f"{file.path}: annotations[{position}] has no integer 'image_id'; skipped")
            continue
        num_with_field += "caption" in rec
        index = images.index_of.get(image_id)
        if index is None:
            warn("captions_without_image", f"{file.path}: caption {rec.get('id')} names unknown image {image_id}")
            continue
        if captions[index] is None:
            captions[index] = []
        captions[index].append(rec.get("caption"))  # cleaned per image later, so the reason of a reject is known
    if images.ids and not num_with_field:
        raise ValueError(f"{file.path}: no annotation has a 'caption' field; is this a COCO captions file?")
    return captions


def read_categories(file: JsonFile, warn: Warner) -> dict[int, str]:
    names: dict[int, str] = {}
    for position, rec in enumerate(file.items("categories.item")):
        cat_id = int_id(rec.get("id")) if isinstance(rec, dict) else None
        name = rec.get("name") if isinstance(rec, dict) else None
        if cat_id is None or not isinstance(name, str) or not name.strip():
            warn("bad_records", f"{file.path}: categories[{position}] needs an integer 'id' and a 'name'; skipped")
            continue
        if names.setdefault(cat_id, " ".join(name.split())) != " ".join(name.split()):
            raise ValueError(f"{file.path}: category id {cat_id} is listed twice with different names")
    return names


class _Boxes:
    """Kept instance boxes of captioned images, column-wise (about 55 bytes a box), grouped by image at the end."""

    def __init__(self, num_images: int):
        self.image = array("q")
        self.xyxy = array("d")
        self.label = array("i")  # index into labels
        self.crowd = array("b")
        self.labels: list[str] = []
        self.dropped = np.zeros(num_images, np.int32)
        self.clipped = np.zeros(num_images, np.int32)
        self.order = np.zeros(0, np.int64)
        self.starts = np.zeros(num_images + 1, np.int64)

    def group(self) -> None:
        image = np.frombuffer(self.image, dtype=np.int64)
        self.order = np.argsort(image, kind="stable")  # stable: boxes keep their file order within an image
        counts = np.bincount(image, minlength=len(self.starts) - 1)
        self.starts[1:] = np.cumsum(counts)

    def of(self, index: int) -> tuple[list[list[float]], list[str], list[bool]]:
        boxes, labels, crowd = [], [], []
        for j in self.order[self.starts[index] : self.starts[index + 1]].tolist():
            boxes.append(self.xyxy[4 * j : 4 * j + 4].tolist())
            labels.append(self.labels[self.label[j]])
            crowd.append(bool(self.crowd[j]))
        return boxes, labels, crowd


def _read_instances(file: JsonFile, images: _Images, stats: Counter, warn: Warner) -> _Boxes:
    categories = read_categories(file, warn)
    boxes = _Boxes(len(images.ids))
    label_index = {cat_id: i for i, cat_id in enumerate(categories)}
    boxes.labels = list(categories.values())
    instances_only: set[int] = set()
    for position, rec in enumerate(file.items("annotations.item")):
        image_id = int_id(rec.get("image_id")) if isinstance(rec, dict) else None
        if image_id is None:
            warn("bad_records", f"{file.path}: annotations[{position}] has no integer 'image_id'; skipped")
            continue
        index = images.index_of.get(image_id)
        if index is None:  # a detection-only image: no text to align to, so no row
            stats["boxes_without_captioned_image"] += 1
            instances_only.add(image_id)
            continue
        category = rec.get("category_id")
        label = label_index.get(int_id(category))
        if label is None:
            warn(UNKNOWN_CATEGORY, f"{file.path}: annotation {rec.get('id')} (image {image_id}) has category_id "
                 f"{category!r}, which the file's categories do not list; box dropped")  # fmt: skip
            boxes.dropped[index] += 1
            continue
        xyxy, status = clip_counted(rec.get("bbox"), images.widths[index], images.heights[index], stats)
        if xyxy is None:
            boxes.dropped[index] += 1
            continue
        boxes.clipped[index] += status == BOX_CLIPPED
        boxes.image.append(index)
        boxes.xyxy.extend(xyxy)
        boxes.label.append(label)
        boxes.crowd.append(1 if rec.get("iscrowd") else 0)
    stats["instances_only_images"] += len(instances_only)
    boxes.group()
    return boxes


def read(spec: SourceSpec, stats: Counter | None = None) -> Iterator[SourceRow]:
    """Rows of one COCO source, in the image order of its captions file.

    ``stats`` (optional) receives counts by name: ``rows``, ``rows_ok``, ``rejected:<reason>``, ``captions``,
    ``boxes``, box drop reasons, ``clipped``, and the skipped records described in the module docstring.
    """
    stats = Counter() if stats is None else stats
    warn = Warner(stats)
    captions_file = JsonFile(spec.files["captions"], f"source {spec.name}: captions")
    instances_file = (
        JsonFile(spec.files["instances"], f"source {spec.name}: instances") if "instances" in spec.files else None
    )

    images = _read_images(captions_file, warn)
    if not images.ids:
        raise ValueError(f"{captions_file.path}: no image records under 'images'; is this a COCO captions file?")
    captions = _read_captions(captions_file, images, warn)
    boxes = _read_instances(instances_file, images, stats, warn) if instances_file else _Boxes(len(images.ids))

    seen: set[int] = set()
    for index, image_id in enumerate(images.ids):
        row = SourceRow(key=make_key(spec.name, f"{image_id:012d}"), source=spec.name, image_id=f"{image_id:012d}",
                        image_root=spec.images, image_path="", width=images.widths[index],
                        height=images.heights[index])  # fmt: skip
        if image_id in seen:  # a second record of the same image: its captions and boxes went to the first one
            row.reject(DUPLICATE_KEY, f"image id {image_id} is listed again in {captions_file.path}")
        else:
            seen.add(image_id)
            _fill(row, images.file_names[index], captions[index] or [], boxes, index)
        stats["rows"] += 1
        stats["rows_ok" if row.status == "ok" else f"rejected:{row.status}"] += 1
        stats["captions"] += len(row.captions)
        stats["boxes"] += len(row.boxes)
        yield row
    log.info("source %s: %s", spec.name, ", ".join(f"{k}={v}" for k, v in sorted(stats.items())))


def _fill(row: SourceRow, file_name: object, raw_captions: list, boxes: _Boxes, index: int) -> None:
    path, path_reason = check_image_path(file_name)
    row.image_path = path or ""
    row.captions, reason = clean_captions(raw_captions)
    row.boxes, row.box_labels, row.box_crowd = boxes.of(index)
    row.boxes_dropped, row.boxes_clipped = int(boxes.dropped[index]), int(boxes.clipped[index])
    row.relevant = align.align_by_labels(row.captions, row.box_labels)
    if path is None:
        row.reject(path_reason, f"file_name {show(file_name)}: {PATH_ERRORS[path_reason]}")
    elif reason is not None:
        row.reject(reason, f"no usable caption among {len(raw_captions)} caption annotations")
