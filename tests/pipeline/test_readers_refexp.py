"""MDETR's RefCOCO files (``finetune_refcoco_<split>.json``) written here in their real structure: one row per picture
with its expressions as captions, boxes converted and clipped (checked against values worked out by hand), identical
referent boxes merged, each expression relevant to its own box, and the count of each bad case."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from pipeline import rows as R
from pipeline.readers import read_source, refexp
from pipeline.sources import SourceSpec, load_sources

PIC = "COCO_train2014_{:012d}.jpg"


def _expression(eid, picture: int, caption, width=100, height=80, **extra) -> dict:
    record = {"id": eid, "file_name": PIC.format(picture), "height": height, "width": width, "caption": caption,
              "original_id": picture, "dataset_name": "refcoco", "tokens_negative": [[0, 3]]}  # fmt: skip
    return record | extra


def _box(aid, eid, bbox, category_id=1) -> dict:
    return {"id": aid, "image_id": eid, "bbox": bbox, "category_id": category_id, "area": 1.0, "iscrowd": 0,
            "tokens_positive": [[0, 3]]}  # fmt: skip


IMAGES = [
    _expression(10, 1, "the red ball"),
    _expression(11, 1, "red ball  on the left"),  # the same box as 10: one box
    _expression(12, 1, "the blue ball"),  # partly outside the 100 x 80 image: clipped
    _expression(13, 1, ""),  # blank_expression (its annotation is no one's box)
    _expression(14, 1, "the green ball"),  # its only box has no width: no_box
    _expression(15, 1, "no annotation at all"),  # no_box
    _expression(20, 2, "the person", width=50, height=50),  # unknown category: labelled "object"
    _expression(21, 2, "the dog", width=50, height=50),  # a NaN box: no_box
    "not an expression record",  # bad_record, keyed image8
    _expression(30, 0, "escapes", file_name="../evil.jpg"),  # path_escapes_root, keyed image9
    _expression(40, 3, "only expression without a box"),  # the picture is rejected: no_caption
    _expression(41, 4, "   "),  # the picture is rejected: empty_caption
    _expression(10, 2, "a repeated expression id", width=50, height=50),  # duplicate_expression_id, so no_box
    _expression(50, 5, "far away", width=60, height=60),  # its box lies outside the image: rejected, no_caption
]
ANNOTATIONS = [
    _box(1, 10, [10, 20, 30, 40]),
    _box(2, 11, [10.0, 20.0, 30.0, 40.0]),
    _box(3, 12, [90, 70, 20, 20], category_id=2),
    _box(4, 13, [1, 1, 1, 1]),
    _box(5, 14, [10, 10, 0, 5]),  # empty_box
    _box(6, 20, [0.5, 0, 10, 10], category_id=99),
    _box(7, 21, [float("nan"), 0, 5, 5]),  # nan_box (json.dumps writes NaN, as Python-made files have it)
    _box(8, 999, [0, 0, 1, 1]),  # annotation_without_expression
    _box(9, 50, [100, 100, 10, 10]),  # outside_image
    {"id": 10, "bbox": [0, 0, 1, 1]},  # bad_records: no image_id
]
CATEGORIES = [{"id": 1, "name": "sports  ball", "supercategory": "sports"}, {"id": 2, "name": "cup"}]


def _spec(folder: Path, images=IMAGES, annotations=ANNOTATIONS, categories=CATEGORIES) -> SourceSpec:
    path = folder / "finetune_refcoco_train.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return SourceSpec(name="refcoco_train", format="refexp", images="/data/coco/train2014",
                      files={"annotations": str(path)})  # fmt: skip


def test_rows_are_pictures_with_their_expressions_and_referent_boxes(tmp_path):
    stats = Counter()
    rows = list(refexp.read(_spec(tmp_path), stats))
    assert [(r.key, r.image_path, r.status) for r in rows] == [
        ("refcoco_train-COCO_train2014_000000000001", PIC.format(1), "ok"),
        ("refcoco_train-COCO_train2014_000000000002", PIC.format(2), "ok"),
        ("refcoco_train-image8", "", "bad_record"),
        ("refcoco_train-image9", "", R.PATH_ESCAPES_ROOT),
        ("refcoco_train-COCO_train2014_000000000003", PIC.format(3), R.NO_CAPTION),
        ("refcoco_train-COCO_train2014_000000000004", PIC.format(4), R.EMPTY_CAPTION),
        ("refcoco_train-COCO_train2014_000000000005", PIC.format(5), R.NO_CAPTION),
    ]
    one, two = rows[0], rows[1]
    assert (one.width, one.height, one.image_root) == (100, 80, "/data/coco/train2014")
    assert one.captions == ["the red ball", "red ball on the left", "the blue ball"]
    # [x, y, w, h] -> [x0, y0, x1, y1]: [10, 20, 30, 40] -> [10, 20, 40, 60]; [90, 70, 20, 20] -> [90, 70, 110, 90],
    # clipped to the 100 x 80 image -> [90, 70, 100, 80].
    assert one.boxes == [[10, 20, 40, 60], [90, 70, 100, 80]]
    assert one.box_labels == ["sports ball", "cup"] and one.box_crowd == [False, False]
    assert one.relevant == [{"boxes": [0], "words": []}, {"boxes": [0], "words": []}, {"boxes": [1], "words": []}]
    assert (one.boxes_dropped, one.boxes_clipped) == (1, 1)  # the empty box; the blue ball's
    assert (two.captions, two.boxes, two.box_labels) == (["the person"], [[0.5, 0, 10.5, 10]], ["object"])
    assert (two.relevant, two.boxes_dropped, two.boxes_clipped) == ([{"boxes": [0], "words": []}], 1, 0)
    assert "has a usable box" in rows[4].error and "no usable expression" in rows[5].error
    assert rows[6].boxes_dropped == 1 and not rows[6].boxes
    assert all(r.error for r in rows if r.status != "ok")
    assert stats == {
        "blank_expression": 2, "no_box": 6, "duplicate_box": 1, "clipped": 1, "empty_box": 1, "nan_box": 1,
        "outside_image": 1, "annotation_without_expression": 1, "bad_records": 1, "duplicate_expression_id": 1,
    }  # fmt: skip
    assert [r.key for r in read_source(_spec(tmp_path))] == [r.key for r in rows]


def test_a_picture_in_two_folders_is_a_duplicate_key(tmp_path):
    images = [_expression(1, 7, "left one"), _expression(2, 7, "right one", file_name=f"copy/{PIC.format(7)}")]
    rows = list(refexp.read(_spec(tmp_path, images, [_box(1, 1, [0, 0, 5, 5]), _box(2, 2, [5, 5, 5, 5])])))
    assert [(r.key, r.status) for r in rows] == [
        ("refcoco_train-COCO_train2014_000000000007", "ok"),
        ("refcoco_train-image1", R.DUPLICATE_KEY),
    ]


def test_an_expression_with_several_boxes_is_relevant_to_each(tmp_path):
    images = [_expression(1, 7, "the two cups"), _expression(2, 7, "the left cup")]
    boxes = [_box(1, 1, [0, 0, 10, 10]), _box(2, 1, [50, 0, 10, 10]), _box(3, 2, [0, 0, 10, 10])]
    (row,) = refexp.read(_spec(tmp_path, images, boxes))
    assert row.boxes == [[0, 0, 10, 10], [50, 0, 60, 10]]
    assert [rel["boxes"] for rel in row.relevant] == [[0, 1], [0]]


def test_files_that_are_not_refexp_files_raise_naming_the_file(tmp_path):
    spec = _spec(tmp_path, images=[{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4}])  # COCO instances
    with pytest.raises(ValueError, match=rf"{spec.files['annotations']}: no 'images' record has a 'caption'"):
        list(refexp.read(spec))
    spec = _spec(tmp_path, images=[])
    with pytest.raises(ValueError, match=rf"{spec.files['annotations']}: no records under 'images'"):
        list(refexp.read(spec))
    Path(spec.files["annotations"]).write_text('{"images": [{"id": 1, "file_name": ')
    with pytest.raises(ValueError, match=rf"{spec.files['annotations']}: malformed JSON"):
        list(refexp.read(spec))


def test_sources_yaml_takes_a_refexp_source(tmp_path):
    (tmp_path / "sources.yaml").write_text(
        "sources:\n  - {name: refcoco_val, format: refexp, annotations: mdetr/finetune_refcoco_val.json, images: c}\n"
    )
    (spec,) = load_sources(str(tmp_path / "sources.yaml"))
    assert spec.files == {"annotations": str(tmp_path / "mdetr/finetune_refcoco_val.json")}
