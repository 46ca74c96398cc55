"""Visual Genome reader: ``image_data.json``, ``region_descriptions.json`` and optional ``objects.json``.

Field names are the ones VG ships: image records ``{image_id, width, height, url, coco_id, flickr_id}``
(``id`` in v1.0 is accepted too); region records ``{"id": image_id, "regions": [{region_id, image_id, phrase, x, y,
width, height}]}``; object records ``{image_id, objects: [{object_id, x, y, w, h, names: [...], synsets}]}``.
Regions use ``width``/``height`` and objects ``w``/``h``; each also accepts the other spelling, and objects the
v1.0 single ``name``. The image path is the last two components of the ``url`` (``VG_100K/1.jpg`` or
``VG_100K_2/1.jpg``) relative to the source's ``images`` root; the key is ``<source>-<image_id>``.

One row per image: captions are the region phrases (whitespace-normalized; blank phrases are dropped with their
box), boxes are every region's own box (label: its phrase) followed by every object's box (label: its first name),
and each phrase's relevant boxes are its own region plus the objects it names that lie mostly inside the region
(``align.align_region`` with ``align.object_matcher`` over the image's object names, so "man" in a phrase finds an
object named "person" and the other way round). A region whose box is unusable (NaN, empty, outside) is dropped
with its phrase and counted: a region phrase describes that region only, so keeping it as a whole-image caption
would teach the wrong pairing.

Counting: one row per image record of ``image_data.json``, in region-file order, then the images without any
region description as rejected ``no_caption`` rows; a region record of an image that ``image_data`` does not know
is a rejected ``bad_path`` row, a second region record of the same image a ``duplicate_key`` row. ``stats``
receives the same kinds of counts as the COCO reader (see ``read_with_coco_ids``).

COCO overlap: about half of VG are COCO images (``coco_id``). ``read_with_coco_ids`` yields ``(row, coco_id)``
so the ingest job can merge such an image into its COCO row with ``merge_into`` (one sample per image).

Memory: ``image_data`` (small) is held as one small object per image. ``objects.json`` is first scanned for its
image-id order only; then regions and objects are streamed in lockstep, so only the current image's regions and
objects are in memory when the two files list images in the same order, as the real dataset does. When the orders
differ, objects read ahead are parked in a compact per-image store (boxes as float arrays, names interned), which
grows towards the whole objects file in the worst case (about 40 bytes an object). Measured by ``copa bench
ingest`` at full scale (100k images, 5M regions, 2M objects; 870 MB of JSON): peak 71 MB above the bare
interpreter, against 3.8 GB for ``json.load`` of the same files; 720 rows/s (36,000 regions/s) on a shared 2-core
machine, most of it per-region work (clipping, matching) rather than parsing.
"""

from __future__ import annotations

import logging
import sys
from array import array
from collections import Counter
from collections.abc import Iterator

from manifests.schema import make_key
from pipeline import align
from pipeline.geometry import BOX_CLIPPED, clip_counted, clip_xyxy
from pipeline.readers.common import PATH_ERRORS, Warner, check_image_path, image_size, int_id, show
from pipeline.readers.jsonstream import JsonFile
from pipeline.rows import (
    BAD_PATH,
    CAPTION_NOT_UTF8,
    DUPLICATE_KEY,
    EMPTY_CAPTION,
    NO_CAPTION,
    SourceRow,
    clean_captions,
)
from pipeline.sources import SourceSpec

log = logging.getLogger(__name__)

_CAPTION_REASONS = (NO_CAPTION, EMPTY_CAPTION, CAPTION_NOT_UTF8)


class _Image:
    """What image_data says about one image."""

    __slots__ = ("coco_id", "height", "order", "path", "path_reason", "url", "width")

    def __init__(self, url: object, width: int, height: int, coco_id: int | None, order: int):
        self.url, self.width, self.height, self.coco_id, self.order = url, width, height, coco_id, order
        self.path, self.path_reason = _url_path(url)


def _url_path(url: object) -> tuple[str | None, str | None]:
    """``https://.../VG_100K_2/1.jpg`` -> ``VG_100K_2/1.jpg``: the folder and file the real dataset unpacks to.

    Returns (path, None), or (None, the rejection reason).
    """
    if not isinstance(url, str) or not url.strip():
        return None, BAD_PATH
    parts = url.strip().rstrip("/").split("/")
    return check_image_path("/".join(parts[-2:])) if len(parts) >= 2 else (None, BAD_PATH)


def _read_image_data(file: JsonFile, warn: Warner) -> dict[int, _Image]:
    images: dict[int, _Image] = {}
    for position, rec in enumerate(file.items("item")):
        image_id = None
        if isinstance(rec, dict):
            image_id = int_id(rec["image_id"] if "image_id" in rec else rec.get("id"))
        if image_id is None:
            warn("bad_records", f"{file.path}: [{position}] has no integer 'image_id'; skipped")
            continue
        if image_id in images:
            warn("duplicate_image_data", f"{file.path}: image {image_id} is listed twice; the first record is used")
            continue
        images[image_id] = _Image(
            rec.get("url"),
            image_size(rec.get("width")),
            image_size(rec.get("height")),
            int_id(rec.get("coco_id")),
            position,
        )
    return images


class _Objects:
    """One image's usable objects: boxes clipped to the image (flat x0, y0, x1, y1), names, the COCO categories that
    their WordNet synsets give, and drop counts."""

    __slots__ = ("boxes", "categories", "clipped", "dropped", "names")

    def __init__(self) -> None:
        self.boxes = array("d")
        self.names: list[str] = []
        self.categories: dict[str, str] = {}  # name -> COCO category of its synsets ("pooch" with dog.n.01)
        self.dropped = self.clipped = 0


_EMPTY = _Objects()


def _compact_objects(rec: dict, image: _Image | None, stats: Counter) -> _Objects:
    objects = _Objects()
    width, height = (image.width, image.height) if image else (0, 0)
    items = rec.get("objects")
    for obj in items if isinstance(items, list) else ():
        if not isinstance(obj, dict):
            stats["bad_records"] += 1
            continue
        names = obj.get("names", obj.get("name"))
        name = names[0] if isinstance(names, list) and names else names
        if not isinstance(name, str) or not name.strip():
            stats["objects_without_name"] += 1  # nothing a phrase could name; not a box worth keeping
            continue
        w, h = (obj["w"], obj["h"]) if "w" in obj else (obj.get("width"), obj.get("height"))
        xyxy, status = clip_counted([obj.get("x"), obj.get("y"), w, h], width, height, stats)
        if xyxy is None:
            objects.dropped += 1
            continue
        objects.clipped += status == BOX_CLIPPED
        objects.boxes.extend(xyxy)
        objects.names.append(sys.intern(" ".join(name.split())))  # VG repeats a few thousand names millions of times
        synsets = obj.get("synsets")
        if isinstance(synsets, list) and synsets:
            category = align.coco_category_of_synsets(tuple(s for s in synsets if isinstance(s, str)))
            if category:
                objects.categories[objects.names[-1]] = category
    return objects


def _record_image_id(rec: object) -> int | None:
    if not isinstance(rec, dict):
        return None
    return int_id(rec["image_id"] if "image_id" in rec else rec.get("id"))


class _ObjectStream:
    """Objects of the image asked for, read in lockstep with the regions (see the module docstring)."""

    def __init__(self, file: JsonFile | None, images: dict[int, _Image], done: set[int], stats: Counter, warn: Warner):
        self.images, self.done, self.stats, self.warn = images, done, stats, warn
        self.parked: dict[int, _Objects] = {}
        self.remaining: Counter = Counter()
        self.records: Iterator[object] = iter(())
        self.path = ""
        if file is not None:
            # The id order first (a tokenizing pass, no objects built), so that an image the file lacks is known
            # to be absent instead of being searched for to the end of the file.
            ids = file.items("item.image_id")
            self.remaining.update(i for i in map(int_id, ids) if i is not None)
            if not self.remaining:
                self.remaining.update(i for i in map(int_id, file.items("item.id")) if i is not None)
            self.records = file.items("item")
            self.path = file.path

    def get(self, image_id: int) -> _Objects:
        if image_id in self.parked:
            return self.parked.pop(image_id)
        if not self.remaining[image_id]:
            return _EMPTY
        for rec in self.records:
            rec_id = _record_image_id(rec)
            if rec_id is None:
                self.warn("bad_records", f"{self.path}: an object record has no integer 'image_id'; skipped")
                continue
            self.remaining[rec_id] -= 1
            if rec_id in self.done:  # its row is out already (a repeated record): nothing left to add it to
                self.stats["objects_without_regions"] += 1
                continue
            objects = _compact_objects(rec, self.images.get(rec_id), self.stats)
            if rec_id == image_id:
                return objects
            if rec_id in self.parked:  # a second record of one image: its objects join the first one's
                first = self.parked[rec_id]
                first.boxes.extend(objects.boxes)
                first.names.extend(objects.names)
                first.categories.update(objects.categories)
                first.dropped, first.clipped = first.dropped + objects.dropped, first.clipped + objects.clipped
            else:
                self.parked[rec_id] = objects
            self.stats["objects_read_ahead"] += 1
        return _EMPTY  # pragma: no cover - remaining said the image is still to come

    def close(self) -> None:
        unused = len(self.parked) + sum(1 for v in self.remaining.values() if v > 0)
        if unused:
            self.stats["objects_without_regions"] += unused
        close = getattr(self.records, "close", None)
        if close is not None:
            close()


def read_with_coco_ids(spec: SourceSpec, stats: Counter | None = None) -> Iterator[tuple[SourceRow, int | None]]:
    """``(row, coco_id)`` for every VG image (``coco_id`` None when it is not a COCO image).

    ``stats`` (optional) receives ``rows``, ``rows_ok``, ``rejected:<reason>``, ``captions``, ``boxes``, box drop
    reasons (``nan_box``, ``empty_box``, ``outside_image``), ``clipped``, ``regions_dropped_bad_box``,
    ``blank_phrases``, ``objects_without_name``, ``objects_without_regions``, ``bad_records``.
    """
    stats = Counter() if stats is None else stats
    warn = Warner(stats)
    image_file = JsonFile(spec.files["image_data"], f"source {spec.name}: image_data")
    region_file = JsonFile(spec.files["regions"], f"source {spec.name}: regions")
    object_file = JsonFile(spec.files["objects"], f"source {spec.name}: objects") if "objects" in spec.files else None

    images = _read_image_data(image_file, warn)
    done: set[int] = set()  # images whose row is out
    objects = _ObjectStream(object_file, images, done, stats, warn)
    try:
        for position, rec in enumerate(region_file.items("item")):
            image_id = _record_image_id(rec)
            if image_id is None:
                warn("bad_records", f"{region_file.path}: [{position}] has no integer 'id'; skipped")
                continue
            image = images.get(image_id)
            row = _new_row(spec, image_id, image)
            if image_id in done:
                row.reject(DUPLICATE_KEY, f"image {image_id} has a second record in {region_file.path}")
            elif image is None:
                row.reject(BAD_PATH, f"image {image_id} is not in {image_file.path}, so its file is unknown")
            else:
                _fill(row, image, rec.get("regions"), objects.get(image_id), stats)
            done.add(image_id)
            yield _count(row, stats), image.coco_id if image else None
    finally:
        objects.close()
    for image_id, image in images.items():  # dict order is image_data order
        if image_id not in done:
            row = _new_row(spec, image_id, image).reject(NO_CAPTION, f"no region descriptions in {region_file.path}")
            yield _count(row, stats), image.coco_id
    log.info("source %s: %s", spec.name, ", ".join(f"{k}={v}" for k, v in sorted(stats.items())))


def read(spec: SourceSpec, stats: Counter | None = None) -> Iterator[SourceRow]:
    """Rows of one VG source (the reader contract); ``read_with_coco_ids`` also says which are COCO images."""
    for row, _ in read_with_coco_ids(spec, stats):
        yield row


def _new_row(spec: SourceSpec, image_id: int, image: _Image | None) -> SourceRow:
    row = SourceRow(key=make_key(spec.name, image_id), source=spec.name, image_id=str(image_id),
                    image_root=spec.images, image_path="")  # fmt: skip
    if image is not None:
        row.width, row.height = image.width, image.height
        row.image_path = image.path or ""
        if image.path is None:
            row.reject(image.path_reason, f"url {show(image.url)}: {PATH_ERRORS[image.path_reason]}")
    return row


def _count(row: SourceRow, stats: Counter) -> SourceRow:
    stats["rows"] += 1
    stats["rows_ok" if row.status == "ok" else f"rejected:{row.status}"] += 1
    stats["captions"] += len(row.captions)
    stats["boxes"] += len(row.boxes)
    return row


def _fill(row: SourceRow, image: _Image, regions: object, objects: _Objects, stats: Counter) -> None:
    """Captions, boxes and relevance of one image from its region records and its objects."""
    captions: list[str] = []
    boxes: list[list[float]] = []
    reasons: list[str] = []
    num_bad_boxes = 0
    for region in regions if isinstance(regions, list) else ():
        if not isinstance(region, dict):
            stats["bad_records"] += 1
            continue
        phrase, reason = clean_captions([region.get("phrase")])
        if reason is not None:
            stats["blank_phrases"] += 1
            reasons.append(reason)
            continue
        w, h = (region["width"], region["height"]) if "width" in region else (region.get("w"), region.get("h"))
        xyxy, status = clip_counted([region.get("x"), region.get("y"), w, h], image.width, image.height, stats)
        if xyxy is None:
            stats["regions_dropped_bad_box"] += 1
            row.boxes_dropped += 1
            num_bad_boxes += 1
            continue
        row.boxes_clipped += status == BOX_CLIPPED
        captions.append(phrase[0])
        boxes.append(xyxy)
    num_regions = len(boxes)
    row.captions = captions
    row.boxes = boxes + [objects.boxes[i : i + 4].tolist() for i in range(0, len(objects.boxes), 4)]
    row.box_labels = captions + objects.names
    row.box_crowd = [False] * len(row.boxes)
    row.boxes_dropped += objects.dropped
    row.boxes_clipped += objects.clipped
    row.relevant = _align(captions, row.boxes, num_regions, objects.names, objects.categories)
    if not captions and row.status == "ok":
        reason = CAPTION_NOT_UTF8 if CAPTION_NOT_UTF8 in reasons else EMPTY_CAPTION if reasons else NO_CAPTION
        row.reject(reason, f"no usable region description: {len(reasons)} blank or not UTF-8, "
                   f"{num_bad_boxes} with an unusable box")  # fmt: skip


def _align(
    phrases: list[str], boxes: list[list[float]], num_regions: int, names: list[str], categories: dict[str, str]
) -> list[dict]:
    """Per phrase ``align.align_region`` over its own region (box i) and the objects (boxes from ``num_regions``)."""
    if not names:  # nothing to name: each phrase keeps its own region, as align_region would say
        return [{"boxes": [i], "words": []} for i in range(num_regions)]
    matcher = align.object_matcher(set(names), categories)
    keys = [" ".join(name.lower().split()) for name in names]
    relevant = []
    for i, phrase in enumerate(phrases):
        matches = matcher.find(phrase)
        if not matches:
            relevant.append({"boxes": [i], "words": []})
            continue
        # Only objects the phrase names can be chosen, so handing align_region just those gives the same answer
        # without it re-indexing every object of the image for each of ~50 phrases; and it gets the matches
        # found above instead of searching the phrase again.
        labels = {m.label for m in matches}
        named = {num_regions + k: names[k] for k, key in enumerate(keys) if key in labels}
        relevant.append(align.align_region(phrase, i, boxes, named, _Found(matches)))
    return relevant


class _Found:
    """A matcher that already knows what the one phrase it is asked about contains."""

    def __init__(self, matches: list[align.Match]):
        self.matches = matches

    def find(self, text: str) -> list[align.Match]:
        return self.matches


def merge_into(coco_row: SourceRow, vg_row: SourceRow) -> SourceRow:
    """Append the captions, boxes and relevance of a VG row to the COCO row of the same image; returns ``coco_row``.

    ``coco_row`` is extended in place (the ingest job keeps it as the one sample of the image) and returned, so
    ``row = merge_into(row, vg)`` and a bare ``merge_into(row, vg)`` both work; nothing of ``vg_row`` is changed or
    shared. VG and COCO may store the same picture at different sizes, so VG boxes are scaled by the COCO over the
    VG width and height, then clipped to the COCO image; the box indices of the VG captions are shifted past the
    COCO boxes. When either size is unknown (0) the VG boxes cannot be placed: they are dropped (counted in
    ``boxes_dropped``) and the VG captions come without relevant boxes. A rejected VG row adds nothing; a COCO row
    rejected only for want of a caption becomes ok when VG brings captions.
    """
    if vg_row.status != "ok":
        return coco_row
    known = coco_row.width > 0 and coco_row.height > 0 and vg_row.width > 0 and vg_row.height > 0
    sx = coco_row.width / vg_row.width if known else 0.0
    sy = coco_row.height / vg_row.height if known else 0.0
    new_index: dict[int, int] = {}  # VG box index -> index in the merged row
    dropped = vg_row.boxes_dropped
    for i, (x0, y0, x1, y1) in enumerate(vg_row.boxes):
        scaled = clip_xyxy([x0 * sx, y0 * sy, x1 * sx, y1 * sy], coco_row.width, coco_row.height)[0] if known else None
        if scaled is None:
            dropped += 1
            continue
        new_index[i] = len(coco_row.boxes)
        coco_row.boxes.append(scaled)
        coco_row.box_labels.append(vg_row.box_labels[i])
        coco_row.box_crowd.append(vg_row.box_crowd[i])
    coco_row.captions.extend(vg_row.captions)
    for rel in vg_row.relevant:
        boxes = sorted(new_index[b] for b in rel["boxes"] if b in new_index)
        coco_row.relevant.append({"boxes": boxes, "words": list(rel["words"])})
    coco_row.boxes_dropped += dropped
    coco_row.boxes_clipped += vg_row.boxes_clipped
    if coco_row.status in _CAPTION_REASONS and coco_row.captions:
        coco_row.status, coco_row.error = "ok", None
    return coco_row
