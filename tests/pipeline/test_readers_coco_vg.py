"""COCO and Visual Genome readers: the real file formats, hand-made edge cases, and alignment against the synthetic
corpus's ground truth."""

from __future__ import annotations

import io
import json
import logging
import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from jobs import synth as synth_job
from manifests.schema import validate_key
from pipeline import align
from pipeline.geometry import clip_xywh
from pipeline.readers import coco, jsonstream, read_source, vg
from pipeline.rows import (
    BAD_PATH,
    CAPTION_NOT_UTF8,
    DUPLICATE_KEY,
    EMPTY_CAPTION,
    NO_CAPTION,
    PATH_ESCAPES_ROOT,
    SourceRow,
    clean_captions,
)
from pipeline.sources import SourceSpec, load_sources

# --- COCO files built by hand, in the real layout ----------------------------------------------------------------


def _categories() -> list[dict]:
    return [
        {"supercategory": "person", "id": 1, "name": "person"},
        {"supercategory": "vehicle", "id": 2, "name": "bicycle"},
        {"supercategory": "animal", "id": 18, "name": "dog"},
        {"supercategory": "outdoor", "id": 13, "name": "stop sign"},
    ]


def _image(image_id: int, width: int = 200, height: int = 100, year: int = 2017) -> dict:
    name = f"{image_id:012d}.jpg" if year == 2017 else f"COCO_train2014_{image_id:012d}.jpg"
    return {"license": 1, "file_name": name, "coco_url": "", "height": height, "width": width, "id": image_id}


def _box(ann_id: int, image_id: int, bbox: list, category_id: int = 1, iscrowd: int = 0) -> dict:
    return {"segmentation": [[0, 0, 1, 1]], "area": 1.0, "iscrowd": iscrowd, "image_id": image_id, "bbox": bbox,
            "category_id": category_id, "id": ann_id}  # fmt: skip


def write_coco(
    folder: Path, images: list[dict], captions: list[tuple[int, object]], boxes: list[dict] | None, name: str = "coco"
) -> SourceSpec:
    folder.mkdir(parents=True, exist_ok=True)
    info = {"info": {"description": "test"}, "licenses": []}
    annotations = [{"image_id": i, "id": k + 1, "caption": c} for k, (i, c) in enumerate(captions)]
    cap = {**info, "images": images, "annotations": annotations}
    (folder / "captions.json").write_text(json.dumps(cap))  # json writes float("nan") as NaN, like real tools
    files = {"captions": str(folder / "captions.json")}
    if boxes is not None:
        (folder / "instances.json").write_text(json.dumps({**info, "images": images, "annotations": boxes,
                                                           "categories": _categories()}))  # fmt: skip
        files["instances"] = str(folder / "instances.json")
    return SourceSpec(name=name, format="coco", images=str(folder / "images"), files=files)


def _read(reader, spec: SourceSpec) -> tuple[list[SourceRow], Counter]:
    stats: Counter = Counter()
    rows = list(reader(spec, stats))
    for row in rows:
        validate_key(row.key)
        assert len(row.relevant) == len(row.captions)
        assert len(row.box_labels) == len(row.boxes) == len(row.box_crowd)
        assert all(0 <= b < len(row.boxes) for rel in row.relevant for b in rel["boxes"])
    return rows, stats


def test_coco_2017_rows_boxes_and_alignment(tmp_path: Path) -> None:
    spec = write_coco(
        tmp_path,
        [_image(391895), _image(7, 50, 40)],
        [(391895, "A man riding a bike."), (391895, "  A  person   on a  bicycle "), (7, "a dog")],
        [_box(1, 391895, [10, 20, 30, 40]), _box(2, 391895, [50.5, 10, 20, 20], 2), _box(3, 7, [1, 1, 5, 5], 18)],
    )
    rows, stats = _read(coco.read, spec)
    assert [r.key for r in rows] == ["coco-000000391895", "coco-000000000007"]
    first = rows[0]
    assert first.status == "ok" and first.image_path == "000000391895.jpg" and first.image_root == spec.images
    assert (first.width, first.height, first.image_id) == (200, 100, "000000391895")
    assert first.captions == ["A man riding a bike.", "A person on a bicycle"]
    assert first.boxes == [[10.0, 20.0, 40.0, 60.0], [50.5, 10.0, 70.5, 30.0]]
    assert first.box_labels == ["person", "bicycle"] and first.box_crowd == [False, False]
    assert first.relevant == [
        {"boxes": [0, 1], "words": ["man", "bike"]},
        {"boxes": [0, 1], "words": ["person", "bicycle"]},
    ]
    assert rows[1].relevant == [{"boxes": [0], "words": ["dog"]}]
    assert stats["rows"] == stats["rows_ok"] == 2 and stats["captions"] == 3 and stats["boxes"] == 3


def test_coco_2014_file_names_and_source_name(tmp_path: Path) -> None:
    spec = write_coco(tmp_path, [_image(391895, year=2014)], [(391895, "a man")], None, name="coco14")
    (row,), _ = _read(coco.read, spec)
    assert row.key == "coco14-000000391895" and row.source == "coco14"
    assert row.image_path == "COCO_train2014_000000391895.jpg"
    assert row.boxes == [] and row.relevant == [{"boxes": [], "words": []}]


def test_coco_images_without_usable_caption_are_rejected_rows(tmp_path: Path) -> None:
    spec = write_coco(
        tmp_path,
        [_image(1), _image(2), _image(3), _image(4)],
        [(1, ""), (1, "   "), (2, "fine"), (2, None), (4, "a \udcff lone surrogate")],
        [_box(1, 1, [0, 0, 5, 5])],
    )
    rows, stats = _read(coco.read, spec)
    assert [r.status for r in rows] == [EMPTY_CAPTION, "ok", NO_CAPTION, CAPTION_NOT_UTF8]
    assert rows[1].captions == ["fine"]
    assert rows[0].boxes == [[0.0, 0.0, 5.0, 5.0]]  # a rejected row keeps what it has, for inspection
    assert "caption" in rows[2].error
    # Counts add up: one row per image record of the captions file.
    assert stats["rows"] == 4 == stats["rows_ok"] + sum(v for k, v in stats.items() if k.startswith("rejected:"))


def test_coco_bad_boxes_dropped_clipped_and_counted(tmp_path: Path) -> None:
    boxes = [
        _box(1, 1, [float("nan"), 10, 20, 20]),  # NaN: dropped
        _box(2, 1, [205, 10, 20, 15]),  # wholly outside a 200 x 100 image: dropped
        _box(3, 1, [30, 30, -15, 20]),  # negative size: dropped
        _box(4, 1, [180, 85, 40, 30]),  # partly outside: clipped
        _box(5, 1, [0, 0, 0, 10]),  # no area: dropped
        _box(6, 1, [10, 10, 10, 10], iscrowd=1),  # crowd: kept and marked
        _box(7, 1, "not a box"),  # wrong type: dropped as unusable
    ]
    spec = write_coco(tmp_path, [_image(1)], [(1, "people")], boxes)
    assert jsonstream.JsonFile(spec.files["instances"], "test").nonfinite  # the file really holds a bare NaN
    (row,), stats = _read(coco.read, spec)
    assert row.status == "ok"
    assert row.boxes == [[180.0, 85.0, 200.0, 100.0], [10.0, 10.0, 20.0, 20.0]]
    assert row.box_crowd == [False, True]
    assert row.relevant == [{"boxes": [0, 1], "words": ["people"]}]
    assert (row.boxes_dropped, row.boxes_clipped) == (5, 1)
    assert (stats["nan_box"], stats["outside_image"], stats["empty_box"], stats["clipped"]) == (2, 1, 2, 1)


def test_coco_unknown_category_drops_the_box_and_names_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = write_coco(tmp_path, [_image(1)], [(1, "a man")], [_box(1, 1, [0, 0, 5, 5]), _box(77, 1, [0, 0, 5, 5], 999)])
    with caplog.at_level(logging.WARNING, logger="pipeline.readers.coco"):
        (row,), stats = _read(coco.read, spec)
    assert row.status == "ok" and row.box_labels == ["person"] and row.boxes_dropped == 1
    assert stats[coco.UNKNOWN_CATEGORY] == 1
    message = " ".join(r.getMessage() for r in caplog.records)
    assert spec.files["instances"] in message and "annotation 77" in message and "999" in message


def test_coco_detection_only_images_and_orphans_are_counted_not_rows(tmp_path: Path) -> None:
    spec = write_coco(
        tmp_path,
        [_image(1)],
        [(1, "a dog"), (5, "a caption of an image the file does not list")],
        [_box(1, 1, [0, 0, 5, 5], 18), _box(2, 9, [0, 0, 5, 5]), _box(3, 9, [1, 1, 5, 5]), _box(4, 10, [0, 0, 1, 1])],
    )
    rows, stats = _read(coco.read, spec)
    assert len(rows) == 1 and rows[0].boxes == [[0.0, 0.0, 5.0, 5.0]]
    assert stats["instances_only_images"] == 2 and stats["boxes_without_captioned_image"] == 3
    assert stats["captions_without_image"] == 1


def test_coco_bad_paths_and_duplicate_images(tmp_path: Path) -> None:
    images = [_image(1) | {"file_name": "../../etc/passwd"}, _image(2) | {"file_name": "/abs/x.jpg"}, _image(3),
              _image(3), _image(4) | {"file_name": "sub/./dir/../x.jpg"}]  # fmt: skip
    spec = write_coco(tmp_path, images, [(i, "a cat") for i in (1, 2, 3, 4)], None)
    rows, _ = _read(coco.read, spec)
    assert [r.status for r in rows] == [PATH_ESCAPES_ROOT, BAD_PATH, "ok", DUPLICATE_KEY, "ok"]
    assert rows[4].image_path == "sub/x.jpg"


def test_coco_bad_records_are_skipped_with_a_count(tmp_path: Path) -> None:
    spec = write_coco(tmp_path, [_image(1), {"file_name": "x.jpg"}, "junk", _image(2) | {"width": "wide"}],
                      [(1, "a cat"), (2, "a dog")], [_box(1, 2, [190, 90, 50, 50])])  # fmt: skip
    rows, stats = _read(coco.read, spec)
    assert [r.key for r in rows] == ["coco-000000000001", "coco-000000000002"]
    assert stats["bad_records"] == 2
    # An unusable size is unknown (0): boxes are checked but not clipped here; pack clips them to the decoded image.
    assert rows[1].width == 0 and rows[1].boxes == [[190.0, 90.0, 240.0, 140.0]]


@pytest.mark.parametrize(
    ("setting", "content", "match"),
    [
        ("captions", '{"images": [{"id": 1, "file_name": "a.jpg"', "malformed JSON"),
        ("captions", '{"images": [], "annotations": []}', "no image records"),
        ("captions", '{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1}]}', "captions"),
        ("instances", '{"images": [], "annotations": [{"image_id": 1, "bbox": [1, 2, 3, 4]}, ', "malformed JSON"),
        ("instances", "not json at all", "malformed JSON"),
    ],
)
def test_coco_broken_files_raise_naming_the_file(tmp_path: Path, setting: str, content: str, match: str) -> None:
    spec = write_coco(tmp_path, [_image(1)], [(1, "a cat")], [])
    Path(spec.files[setting]).write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        list(coco.read(spec))
    assert spec.files[setting] in str(info.value)


def test_missing_file_names_the_setting(tmp_path: Path) -> None:
    spec = write_coco(tmp_path, [_image(1)], [(1, "a cat")], None)
    Path(spec.files["captions"]).unlink()
    with pytest.raises(FileNotFoundError, match="source coco: captions"):
        list(coco.read(spec))


# --- non-standard JSON ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 7, 11, 64])
def test_nonfinite_filter_leaves_strings_alone_at_any_chunk_border(chunk_size: int) -> None:
    doc = {"a": [float("nan"), float("inf"), -float("inf"), 1.5], "s": 'NaN, "Infinity" \\ -Infinity', "NaN": [1]}
    raw = json.dumps(doc).encode()
    filtered = jsonstream.NonFiniteToNull(io.BytesIO(raw), chunk_size=chunk_size).read()
    assert json.loads(filtered) == {"a": [None, None, None, 1.5], "s": 'NaN, "Infinity" \\ -Infinity', "NaN": [1]}


def test_scan_finds_nonfinite_numbers_and_lone_surrogates(tmp_path: Path) -> None:
    cases = {
        "plain.json": ('{"a": [1, 2], "s": "NaN in text"}', (False, False)),
        "nan.json": ('{"a": [1, NaN]}', (True, False)),
        "pair.json": (json.dumps({"s": "emoji \U0001f600"}), (False, False)),
        "lone.json": (json.dumps({"s": "x\udcff"}), (False, True)),
    }
    for name, (text, expected) in cases.items():
        (tmp_path / name).write_text(text)
        assert jsonstream.scan_nonstandard(str(tmp_path / name)) == expected, name


# --- the token matcher (align.Matcher) equals the regex reference (align.RegexMatcher) ---------------------------

_TRICKY = [
    "A man next to a bike",
    "Several PEOPLE and their dogs",
    "hot dogs on a plate and a hot  dog",
    "a stop sign, a sign, stop signs",
    "a TV screen and tv screens",
    "cattle-free carpet; a catalog; cars'",
    "a double-decker bus and a double decker",
    "the tennis player and a tennis\nplayer",
    "man's hat, a man-made thing, 'man'",
    "Teddy bears, a teddy, stuffed animals",
    "",
    "   ",
    "café cat, naïve dog",
    "İstanbul DOG and a Cat",  # "İ" lower-cases to two characters
    "a cell phone, cellphones, mobile phones",
]


def test_token_matcher_equals_align_matcher_on_coco_words() -> None:
    rng = random.Random(0)
    words = [w for c, syn in align.COCO_SYNONYMS.items() for w in (c, *syn)] + ["the", "a", "on", "with", "red"]
    texts = _TRICKY + [
        " ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) + rng.choice(["", ".", "s", "!"])
        for _ in range(500)
    ]
    reference = align.RegexMatcher(align.COCO_SYNONYMS)
    for text in texts:
        assert align.COCO_MATCHER.find(text) == reference.find(text), text


def test_object_matcher_equals_align_object_matcher() -> None:
    name_sets = [
        ["person", "man", "bike"],
        ["hot dog", "dog", "tree"],
        ["white cloud", "cloud", "Sky"],
        ["a&w sign", "sign"],  # a form the token scan does not handle: it hands over to align.RegexMatcher
        [],
    ]
    for names in name_sets:
        ours, theirs = align.object_matcher(set(names)), align.RegexMatcher(align.object_phrases(set(names)))
        for text in [*_TRICKY, "a person and a guy", "white clouds in the sky", "the a&w sign", "hotdogs"]:
            assert ours.find(text) == theirs.find(text), (names, text)


# --- Visual Genome files built by hand ---------------------------------------------------------------------------


def write_vg(folder: Path, image_data: list, regions: list, objects: list | None, name: str = "vg") -> SourceSpec:
    folder.mkdir(parents=True, exist_ok=True)
    files = {"image_data": folder / "image_data.json", "regions": folder / "region_descriptions.json"}
    files["image_data"].write_text(json.dumps(image_data))
    files["regions"].write_text(json.dumps(regions))
    if objects is not None:
        files["objects"] = folder / "objects.json"
        files["objects"].write_text(json.dumps(objects))
    return SourceSpec(name=name, format="vg", images=str(folder), files={k: str(v) for k, v in files.items()})


def _vg_image(image_id: int, folder: str = "VG_100K", coco_id: int | None = None, size=(100, 80)) -> dict:
    return {"width": size[0], "url": f"https://cs.stanford.edu/people/rak248/{folder}/{image_id}.jpg",
            "height": size[1], "image_id": image_id, "coco_id": coco_id, "flickr_id": None}  # fmt: skip


def _region(region_id: int, image_id: int, phrase: object, x, y, w, h) -> dict:
    return {"region_id": region_id, "width": w, "height": h, "image_id": image_id, "phrase": phrase, "y": y, "x": x}


def _object(object_id: int, names: list, x, y, w, h) -> dict:
    return {"synsets": [], "h": h, "object_id": object_id, "names": names, "w": w, "y": y, "x": x}


def _vg_example(tmp_path: Path, objects_order=(1, 2)) -> SourceSpec:
    image_data = [_vg_image(1, coco_id=391895), _vg_image(2, "VG_100K_2")]
    regions = [
        {"id": 1, "regions": [
            _region(11, 1, "a man on a bike", 0, 0, 60, 60),
            _region(12, 1, "   ", 0, 0, 10, 10),  # blank: dropped with its box, the rest stay aligned
            _region(13, 1, "person wearing a red shirt", 0, 0, 60, 60),
            _region(14, 1, "a dog far away", 0, 0, 30, 30),
        ]},
        {"id": 2, "regions": [_region(21, 2, "white clouds in the sky", 10, 5, 50, 20)]},
    ]  # fmt: skip
    objects = {
        1: {"image_id": 1, "objects": [
            _object(101, ["person"], 5, 5, 20, 40),  # named "person": found by "man" through the COCO synonyms
            _object(102, ["bicycle"], 10, 30, 40, 20),
            _object(103, ["dog"], 20, 20, 60, 50),  # mostly outside region 14 (0, 0, 30, 30): not relevant
            _object(104, [], 1, 1, 2, 2),  # no name: nothing could name it
            _object(105, ["shirt"], 95, 70, 20, 20),  # partly outside the 100 x 80 image: clipped
        ]},
        2: {"image_id": 2, "objects": [_object(201, ["cloud"], 20, 8, 10, 5), _object(202, ["sky"], 0, 0, 100, 40)]},
    }  # fmt: skip
    return write_vg(tmp_path, image_data, regions, [objects[i] for i in objects_order])


def test_vg_rows_regions_objects_and_relevance(tmp_path: Path) -> None:
    pairs = list(vg.read_with_coco_ids(_vg_example(tmp_path)))
    assert [(r.key, c) for r, c in pairs] == [("vg-1", 391895), ("vg-2", None)]
    row = pairs[0][0]
    assert row.status == "ok" and row.image_path == "VG_100K/1.jpg" and (row.width, row.height) == (100, 80)
    assert row.captions == ["a man on a bike", "person wearing a red shirt", "a dog far away"]
    # Regions first (width/height), then objects (w/h), clipped to the image.
    assert row.boxes == [[0, 0, 60, 60], [0, 0, 60, 60], [0, 0, 30, 30], [5, 5, 25, 45], [10, 30, 50, 50],
                         [20, 20, 80, 70], [95, 70, 100, 80]]  # fmt: skip
    assert row.box_labels == [*row.captions, "person", "bicycle", "dog", "shirt"]
    assert row.relevant == [
        {"boxes": [0, 3, 4], "words": ["man", "bike"]},
        {"boxes": [1, 3], "words": ["person"]},  # the shirt lies outside region 13
        {"boxes": [2], "words": []},  # the dog lies mostly outside region 14, so only the region itself
    ]
    assert (row.boxes_dropped, row.boxes_clipped) == (0, 1)
    second = pairs[1][0]
    assert second.image_path == "VG_100K_2/2.jpg"
    # "sky" is named, but the sky object is far bigger than the region: mostly outside it, so not relevant.
    assert second.relevant == [{"boxes": [0, 1], "words": ["clouds"]}]
    assert [r.key for r in vg.read(_vg_example(tmp_path))] == ["vg-1", "vg-2"]
    assert [r.key for r in read_source(_vg_example(tmp_path))] == ["vg-1", "vg-2"]


def test_vg_objects_in_another_order_or_missing_give_the_same_rows(tmp_path: Path) -> None:
    ordered = list(vg.read(_vg_example(tmp_path / "a")))
    assert list(vg.read(_vg_example(tmp_path / "b", objects_order=(2, 1)))) == [
        SourceRow(**{**r.__dict__, "image_root": str(tmp_path / "b")}) for r in ordered
    ]
    only_second = list(vg.read(_vg_example(tmp_path / "c", objects_order=(2,))))
    assert only_second[0].box_labels == only_second[0].captions  # no objects for image 1: regions only
    assert only_second[1].box_labels == ordered[1].box_labels


def test_vg_counts_add_up_with_odd_records(tmp_path: Path) -> None:
    image_data = [_vg_image(1), _vg_image(2), _vg_image(3) | {"url": None}, {"width": 5}]
    regions = [
        {"id": 1, "regions": [_region(1, 1, "a cat", float("nan"), 0, 5, 5), _region(2, 1, "a cat", 500, 0, 5, 5)]},
        {"id": 3, "regions": [_region(3, 3, "a cat", 0, 0, 5, 5)]},
        {"id": 9, "regions": [_region(4, 9, "a cat", 0, 0, 5, 5)]},
        {"id": 3, "regions": []},
    ]
    rows, stats = _read(vg.read, write_vg(tmp_path, image_data, regions, None))
    assert [(r.key, r.status) for r in rows] == [
        ("vg-1", NO_CAPTION),  # both regions had unusable boxes
        ("vg-3", BAD_PATH),  # no url
        ("vg-9", BAD_PATH),  # not in image_data
        ("vg-3", DUPLICATE_KEY),
        ("vg-2", NO_CAPTION),  # in image_data, without region descriptions
    ]
    assert rows[0].boxes_dropped == 2 and stats["regions_dropped_bad_box"] == 2
    assert stats["bad_records"] == 1 and stats["rows"] == 5


def test_vg_url_escaping_the_root_is_rejected(tmp_path: Path) -> None:
    image_data = [_vg_image(1) | {"url": "../../1.jpg"}]
    (row,) = vg.read(write_vg(tmp_path, image_data, [{"id": 1, "regions": [_region(1, 1, "x", 0, 0, 5, 5)]}], None))
    assert row.status == PATH_ESCAPES_ROOT


def test_vg_truncated_file_raises_naming_it(tmp_path: Path) -> None:
    spec = _vg_example(tmp_path)
    path = Path(spec.files["regions"])
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValueError, match="malformed JSON") as info:
        list(vg.read(spec))
    assert str(path) in str(info.value)


def test_merge_into_rescales_and_reindexes(tmp_path: Path) -> None:
    coco_row = SourceRow(key="coco-000000000001", source="coco", image_id="000000000001", image_root="r",
                         image_path="a.jpg", width=200, height=160, captions=["a man"], boxes=[[0, 0, 10, 10]],
                         box_labels=["person"], box_crowd=[True],
                         relevant=[{"boxes": [0], "words": ["man"]}], boxes_dropped=1)  # fmt: skip
    vg_boxes = [[10, 10, 50, 40], [0, 0, 100, 80], [50, 40, 60, 50]]
    vg_row = SourceRow(key="vg-5", source="vg", image_id="5", image_root="v", image_path="VG_100K/5.jpg", width=100,
                       height=80, captions=["a dog", "grass"], boxes=vg_boxes,
                       box_labels=["a dog", "grass", "dog"], box_crowd=[False] * 3,
                       relevant=[{"boxes": [0, 2], "words": ["dog"]}, {"boxes": [1], "words": []}],
                       boxes_clipped=2)  # fmt: skip
    before = json.dumps(vg_row.__dict__)
    merged = vg.merge_into(coco_row, vg_row)
    assert merged is coco_row and json.dumps(vg_row.__dict__) == before  # extended in place; vg_row untouched
    assert merged.key == "coco-000000000001" and merged.captions == ["a man", "a dog", "grass"]
    assert merged.boxes == [[0, 0, 10, 10], [20, 20, 100, 80], [0, 0, 200, 160], [100, 80, 120, 100]]
    assert merged.box_labels == ["person", "a dog", "grass", "dog"] and merged.box_crowd == [True, False, False, False]
    assert merged.relevant == [{"boxes": [0], "words": ["man"]}, {"boxes": [1, 3], "words": ["dog"]},
                               {"boxes": [2], "words": []}]  # fmt: skip
    assert (merged.boxes_dropped, merged.boxes_clipped) == (1, 2)
    merged.relevant[1]["words"].append("x")
    assert vg_row.relevant[0]["words"] == ["dog"]


def test_merge_into_edge_cases() -> None:
    def row(**kw) -> SourceRow:
        return SourceRow(**{"key": "coco-1", "source": "coco", "image_id": "1", "image_root": "", "image_path": "a",
                            "width": 100, "height": 100, **kw})  # fmt: skip

    vg_row = row(key="vg-1", source="vg", captions=["a cat"], boxes=[[0, 0, 10, 10]], box_labels=["a cat"],
                 box_crowd=[False], relevant=[{"boxes": [0], "words": []}])  # fmt: skip
    # A COCO row rejected for want of a caption becomes ok; with an unknown size the VG boxes cannot be placed.
    merged = vg.merge_into(row(width=0, status=NO_CAPTION, error="none"), vg_row)
    assert merged.status == "ok" and merged.error is None and merged.boxes == [] and merged.boxes_dropped == 1
    assert merged.relevant == [{"boxes": [], "words": []}]
    # A rejected VG row adds nothing.
    untouched = vg.merge_into(row(captions=["x"], relevant=[{"boxes": [], "words": []}]), row(status=BAD_PATH))
    assert untouched.captions == ["x"]


# --- the synthetic corpus: alignment against its ground truth ----------------------------------------------------


def _synth(tmp_path_factory: pytest.TempPathFactory, *extra: str) -> Path:
    out = tmp_path_factory.mktemp("synth")
    assert synth_job.main(["--out", str(out), "--images", "400", "--seed", "0", *extra]) == 0
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _synth(tmp_path_factory)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _synth(tmp_path_factory, "--faults")


def _specs(root: Path) -> dict[str, SourceSpec]:
    return {s.name: s for s in load_sources(str(root / "sources.yaml"))}


def _scores(pairs: list[tuple[set, set]]) -> tuple[float, float]:
    """Micro precision and recall of predicted against gold sets. Predicting nothing where something was due scores
    precision 0, not 1, so an aligner that links nothing cannot pass."""
    if not pairs or not any(gold for gold, _ in pairs):
        raise ValueError("no gold links to score against")
    tp = sum(len(gold & got) for gold, got in pairs)
    predicted, true = sum(len(got) for _, got in pairs), sum(len(gold) for gold, _ in pairs)
    return (tp / predicted if predicted else 0.0), tp / true


def test_scores_do_not_reward_predicting_nothing() -> None:
    assert _scores([({1, 2}, set()), ({3}, set())]) == (0.0, 0.0)
    assert _scores([({1, 2}, {1}), ({3}, {3, 4})]) == (2 / 3, 2 / 3)


def _coco_alignment(root: Path) -> tuple[dict, dict, dict]:
    """caption id -> (image id, predicted instance ids), and the instance categories, from the reader's rows."""
    spec = _specs(root)["coco"]
    captions = json.loads(Path(spec.files["captions"]).read_text())
    instances = json.loads(Path(spec.files["instances"]).read_text())
    size = {im["id"]: (im["width"], im["height"]) for im in captions["images"]}
    known = {c["id"] for c in instances["categories"]}
    caption_ids, box_ids = defaultdict(list), defaultdict(list)  # file order, as the reader keeps it
    for a in captions["annotations"]:
        if clean_captions([a["caption"]])[1] is None:
            caption_ids[a["image_id"]].append(a["id"])
    for a in instances["annotations"]:
        if a["category_id"] in known and clip_xywh(a["bbox"], *size[a["image_id"]])[0] is not None:
            box_ids[a["image_id"]].append(a["id"])
    predicted = {}
    for row in coco.read(spec):
        image_id = int(row.image_id)
        assert len(row.captions) == len(caption_ids[image_id]) and len(row.boxes) == len(box_ids[image_id])
        for caption_id, rel in zip(caption_ids[image_id], row.relevant, strict=True):
            predicted[caption_id] = (image_id, {box_ids[image_id][b] for b in rel["boxes"]})
    category = {a["id"]: a["category_id"] for a in instances["annotations"]}
    return predicted, box_ids, category


def test_coco_alignment_on_the_synthetic_corpus(corpus: Path) -> None:
    truth = json.loads((corpus / "synth_truth.json").read_text())["coco_captions"]
    predicted, box_ids, category = _coco_alignment(corpus)
    # Instance level: the truth names the very instances a caption means ("a blue tv" of a blue and a red one).
    instance = [(set(t["ann_ids"]), predicted[t["caption_id"]][1]) for t in truth]
    # Rule level (DESIGN section 6): a caption mentioning a category makes every box of that category relevant.
    rule = []
    for t in truth:
        image_id, got = predicted[t["caption_id"]]
        rule.append(({a for a in box_ids[image_id] if category[a] in set(t["category_ids"])}, got))
    precision, recall = _scores(rule)
    assert precision >= 0.98, precision
    assert recall >= 0.98, recall
    assert _scores(instance)[1] >= 0.98  # nothing the caption mentions is missed
    misses = [t["words"] for t, (gold, got) in zip(truth, rule, strict=True) if gold - got]
    assert not misses, f"words the synonym table lacks: {misses}"


def _inside(row: SourceRow, box: int, region: int) -> bool:
    return align.inside_fraction(row.boxes[box], row.boxes[region]) >= 0.5


def test_vg_alignment_on_the_synthetic_corpus(corpus: Path) -> None:
    spec = _specs(corpus)["vg"]
    truth = json.loads((corpus / "synth_truth.json").read_text())["vg_regions"]
    images = {im["image_id"]: im for im in json.loads(Path(spec.files["image_data"]).read_text())}
    objects = {r["image_id"]: r["objects"] for r in json.loads(Path(spec.files["objects"]).read_text())}
    rows = {int(r.image_id): r for r in vg.read(spec)}
    category = {o: m["category_id"] for t in truth for m in t["mentions"] for o in m["object_ids"]}
    predicted, rule_gold = {}, {}
    for rec in json.loads(Path(spec.files["regions"]).read_text()):
        image, row = images[rec["id"]], rows[rec["id"]]
        assert row.status == "ok"
        size = image["width"], image["height"]
        kept_objects = [o["object_id"] for o in objects.get(rec["id"], [])
                        if o["names"] and clip_xywh([o["x"], o["y"], o["w"], o["h"]], *size)[0]]  # fmt: skip
        num_regions = len(row.captions)
        assert [r["phrase"] for r in rec["regions"]] == row.captions  # the clean corpus has no bad region
        for k, (region, rel) in enumerate(zip(rec["regions"], row.relevant, strict=True)):
            assert k in rel["boxes"]  # a phrase always owns its region
            predicted[region["region_id"]] = {kept_objects[b - num_regions] for b in rel["boxes"] if b >= num_regions}
            # Rule level: objects of a mentioned category lying mostly inside the region.
            mentioned = {
                m["category_id"] for t in truth if t["region_id"] == region["region_id"] for m in t["mentions"]
            }
            rule_gold[region["region_id"]] = {
                o for j, o in enumerate(kept_objects)
                if category.get(o) in mentioned and _inside(row, num_regions + j, k)
            }  # fmt: skip
    instance = [(set(t["object_ids"]), predicted[t["region_id"]]) for t in truth]
    rule = [(rule_gold[t["region_id"]], predicted[t["region_id"]]) for t in truth]
    precision, recall = _scores(rule)
    assert precision >= 0.98, precision
    assert recall >= 0.98, recall
    assert _scores(instance)[1] >= 0.98


def test_coco_reader_on_the_faults_corpus(faulty: Path) -> None:
    spec = _specs(faulty)["coco"]
    faults = [f for f in json.loads((faulty / "faults.json").read_text()) if f["source"] == "coco"]
    assert faults, "the faults corpus lists COCO box faults"
    reason = {"box_outside_image": "outside_image", "nan_box": "nan_box", "negative_size_box": "empty_box",
              "box_partly_outside": "clipped"}  # fmt: skip
    expected = Counter(reason[f["kind"]] for f in faults)
    rows, stats = _read(coco.read, spec)
    assert all(r.status == "ok" for r in rows)
    assert {k: stats[k] for k in expected} == dict(expected)
    by_image = {int(r.image_id): r for r in rows}
    for image_id in {f["where"]["image_id"] for f in faults}:
        mine = [f for f in faults if f["where"]["image_id"] == image_id]
        row = by_image[image_id]
        assert row.boxes_dropped == sum(f["expect"] == "drop_box" for f in mine)
        assert row.boxes_clipped == sum(f["expect"] == "clip_box" for f in mine)
        assert all(0 <= x0 < x1 <= row.width and 0 <= y0 < y1 <= row.height for x0, y0, x1, y1 in row.boxes)
    # The clean part reads the same as without faults.
    clean = _specs(faulty)["vg"]
    assert all(r.status == "ok" for r in vg.read(clean))


# --- the benchmark's generated files are read back whole -----------------------------------------------------------


def test_bench_files_read_back_whole(tmp_path: Path) -> None:
    from jobs.bench import ingest as bench_ingest

    sizes = {name: max(3, round(n * 0.0002)) for name, n in bench_ingest.FULL.items()}
    coco_spec = SourceSpec("coco", "coco", "images", bench_ingest.generate_coco(tmp_path, sizes, seed=0))
    vg_spec = SourceSpec("vg", "vg", "images", bench_ingest.generate_vg(tmp_path, sizes, seed=0))
    rows, stats = _read(coco.read, coco_spec)
    assert len(rows) == stats["rows_ok"] == sizes["coco_images"]
    assert (stats["captions"], stats["boxes"]) == (sizes["coco_captions"], sizes["coco_boxes"])
    rows, stats = _read(vg.read, vg_spec)
    assert len(rows) == stats["rows_ok"] == sizes["vg_images"]
    assert (stats["captions"], stats["boxes"]) == (sizes["vg_regions"], sizes["vg_regions"] + sizes["vg_objects"])


def test_bench_main_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.bench import ingest as bench_ingest

    out = tmp_path / "bench.json"
    args = ["--scale", "0.0002", "--no-baseline", "--no-ray", "--rounds", "1", "--data", str(tmp_path / "d")]
    assert bench_ingest.main([*args, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["figures"]["coco"]["rows"] == report["sizes"]["coco_images"]
    assert report["figures"]["vg"]["rows_per_s"] > 0
    # the web list's rows: its distinct images, bad entries included (600 entries, one image in 20 twice)
    assert 0 < report["figures"]["web"]["rows"] < report["sizes"]["web_rows"]
    assert report["figures"]["img2dataset"]["rows"] == report["runs"]["img2dataset reader"]["ok"]
    printed = capsys.readouterr().out
    assert "coco reader:" in printed and "JSON list (ALBEF cc3m_train.json): copa ingest" in printed


def test_vg_objects_named_by_their_synsets(tmp_path: Path) -> None:
    """An object whose name is no lexicon word still answers to its category's words through VG's synsets."""
    image_data = [_vg_image(1)]
    regions = [{"id": 1, "regions": [_region(11, 1, "a dog on the grass", 0, 0, 60, 60)]}]
    lassie = _object(101, ["lassie"], 5, 5, 20, 20) | {"synsets": ["dog.n.01"]}
    rex = _object(102, ["rex"], 10, 10, 20, 20)  # no synset: only "rex" would name it
    row = next(
        iter(
            vg.read_with_coco_ids(write_vg(tmp_path, image_data, regions, [{"image_id": 1, "objects": [lassie, rex]}]))
        )
    )[0]
    assert row.box_labels == ["a dog on the grass", "lassie", "rex"]
    assert row.relevant == [{"boxes": [0, 1], "words": ["dog"]}]
