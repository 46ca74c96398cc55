"""Tests of the synthetic corpus (pipeline.synth) against the real formats, readers and its own ground truth."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from jobs.synth import main
from pipeline.coco_categories import CATEGORY_BY_ID, COCO_CATEGORIES
from pipeline.synth import SynthConfig, generate
from pipeline.synth.draw import GLYPHS, Background, Scene, glyph_object, render
from pipeline.synth.faults import FAULT_KINDS
from pipeline.synth.formats import picture_scene
from pipeline.synth.text import CATEGORY_WORDS, DISTRACTOR_CAPTIONS, DISTRACTOR_WORDS

FLAT = Background("flat", (1, 99, 7), (1, 99, 7), 0.0, 8, 0)  # a colour no glyph paints


@pytest.fixture(scope="module")
def clean_cfg(tmp_path_factory: pytest.TempPathFactory) -> SynthConfig:
    # Larger COCO/VG shares than the default so crowds, both VG folders and every glyph turn up in a small corpus.
    out = tmp_path_factory.mktemp("clean") / "corpus"
    cfg = SynthConfig(out=out, num_images=100, seed=3, coco_fraction=0.3, vg_fraction=0.2)
    generate(cfg)
    return cfg


@pytest.fixture(scope="module")
def clean(clean_cfg: SynthConfig) -> Path:
    return clean_cfg.out


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("faulty") / "corpus"
    generate(SynthConfig(out=out, num_images=40, seed=4, faults=True))
    return out


def _load(path: Path) -> object:
    return json.loads(path.read_text())


def _tight_extent(differs: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(differs.any(axis=1)), np.flatnonzero(differs.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def test_coco_instances_load_in_pycocotools(clean: Path) -> None:
    coco = COCO(str(clean / "coco/annotations/instances_train2017.json"))
    cat_ids = coco.getCatIds()
    assert cat_ids == [c.id for c in COCO_CATEGORIES] and len(cat_ids) == 80
    assert cat_ids != list(range(1, 81))  # the real, non-contiguous ids
    assert {c["name"] for c in coco.loadCats(cat_ids)} == {c.name for c in COCO_CATEGORIES}
    crowds = 0
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        assert set(info) == {"id", "file_name", "width", "height", "license", "coco_url", "flickr_url", "date_captured"}
        assert info["file_name"] == f"{image_id:012d}.jpg"
        with Image.open(clean / "coco/train2017" / info["file_name"]) as image:
            assert image.size == (info["width"], info["height"]) and image.format == "JPEG"
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert anns, "every synthetic picture has at least one object"
        for ann in anns:
            x, y, w, h = ann["bbox"]
            assert all(isinstance(v, float) for v in ann["bbox"])
            assert x >= 0 and y >= 0 and w > 0 and h > 0
            assert x + w <= info["width"] and y + h <= info["height"]
            mask = coco.annToMask(ann)
            if ann["iscrowd"]:
                crowds += 1
                assert set(ann["segmentation"]) == {"counts", "size"}
                assert ann["segmentation"]["size"] == [info["height"], info["width"]]
                assert mask.sum() == ann["area"]
                assert list(mask_utils.toBbox(coco.annToRLE(ann))) == ann["bbox"]  # RLE and box agree exactly
            else:
                assert isinstance(ann["segmentation"], list) and len(ann["segmentation"][0]) >= 6
                assert _tight_extent(mask.astype(bool)) == tuple(int(v) for v in ann["bbox"])
    assert crowds >= 1


def test_coco_captions_file(clean: Path) -> None:
    captions = COCO(str(clean / "coco/annotations/captions_train2017.json"))
    instances = _load(clean / "coco/annotations/instances_train2017.json")
    assert captions.dataset["images"] == instances["images"]
    assert set(captions.dataset) == {"info", "licenses", "images", "annotations"}
    for image_id in captions.getImgIds():
        anns = captions.loadAnns(captions.getAnnIds(imgIds=[image_id]))
        assert len(anns) == 5 and all(set(a) == {"id", "image_id", "caption"} and a["caption"] for a in anns)


def test_vg_uses_vg_field_names_and_links_to_coco(clean: Path) -> None:
    image_data = _load(clean / "vg/image_data.json")
    objects = {o["image_id"]: o for o in _load(clean / "vg/objects.json")}
    regions = {r["id"]: r["regions"] for r in _load(clean / "vg/region_descriptions.json")}
    coco = COCO(str(clean / "coco/annotations/instances_train2017.json"))
    folders, linked = set(), 0
    for info in image_data:
        assert set(info) == {"image_id", "width", "height", "url", "coco_id", "flickr_id"}
        assert info["image_id"] not in coco.imgs  # VG ids are their own numbers
        folder = info["url"].split("/")[-2]
        folders.add(folder)
        path = clean / "vg" / folder / f"{info['image_id']}.jpg"
        assert info["url"] == f"https://cs.stanford.edu/people/rak248/{folder}/{info['image_id']}.jpg"
        with Image.open(path) as image:
            assert image.size == (info["width"], info["height"])
            pixels = np.asarray(image)
        for obj in objects[info["image_id"]]["objects"]:
            assert set(obj) == {"object_id", "x", "y", "w", "h", "names", "synsets"}
            assert all(isinstance(obj[k], int) for k in "xywh")
            assert obj["x"] + obj["w"] <= info["width"] and obj["y"] + obj["h"] <= info["height"]
        assert 10 <= len(regions[info["image_id"]]) <= 30
        for region in regions[info["image_id"]]:
            assert set(region) == {"region_id", "image_id", "phrase", "x", "y", "width", "height"}
            assert region["x"] + region["width"] <= info["width"] and region["y"] + region["height"] <= info["height"]
        if info["coco_id"] is not None:
            linked += 1
            coco_info = coco.imgs[info["coco_id"]]
            assert (coco_info["width"], coco_info["height"]) == (info["width"], info["height"])
            with Image.open(clean / "coco/train2017" / coco_info["file_name"]) as image:
                assert np.array_equal(np.asarray(image), pixels)
            vg_boxes = {(o["x"], o["y"], o["w"], o["h"]) for o in objects[info["image_id"]]["objects"]}
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=[info["coco_id"]], iscrowd=False)):
                assert tuple(int(v) for v in ann["bbox"]) in vg_boxes  # the same objects, as VG objects
    assert folders == {"VG_100K", "VG_100K_2"}
    assert 0 < linked < len(image_data)


def test_boxes_are_exact(clean_cfg: SynthConfig) -> None:
    instances = _load(clean_cfg.out / "coco/annotations/instances_train2017.json")
    for k, info in enumerate(instances["images"][:6]):  # COCO image k is picture k
        scene = picture_scene(clean_cfg, k)
        assert (scene.width, scene.height) == (info["width"], info["height"])
        boxes = [a["bbox"] for a in instances["annotations"] if a["image_id"] == info["id"] and not a["iscrowd"]]
        assert sorted(tuple(float(v) for v in o.box) for o in scene.objects if o.group < 0) == sorted(map(tuple, boxes))
        for obj in scene.objects:  # each object alone on a flat background: its pixels span exactly its box
            alone = render(Scene(scene.width, scene.height, FLAT, (obj,)))
            assert _tight_extent((alone != np.array(FLAT.colour_a, np.uint8)).any(axis=2)) == obj.box
        with Image.open(clean_cfg.out / "coco/train2017" / info["file_name"]) as image:
            decoded = np.asarray(image).astype(int)
        assert np.abs(decoded - render(scene).astype(int)).mean() < 6  # the file shows the scene (JPEG noise only)


@pytest.mark.parametrize("category", sorted(GLYPHS))
def test_every_glyph_fills_its_box(category: str) -> None:
    glyph = GLYPHS[category]
    for long_side in (glyph.min_side, 2 * glyph.min_side, 100):
        for aspect in glyph.aspect:
            w, h = (long_side, round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), long_side)
            obj = glyph_object(category, "blue", 5, 7, w, h)
            assert obj is not None and obj.mask.shape == (obj.box[3], obj.box[2])
            # The box is the tight extent of the pixels: every side of the mask is touched ...
            assert obj.mask[0].any() and obj.mask[-1].any() and obj.mask[:, 0].any() and obj.mask[:, -1].any()
            # ... and the glyph fills the box it was drawn in, up to a pixel or two of rounding.
            assert w - 2 <= obj.box[2] <= w and h - 2 <= obj.box[3] <= h


def _category_words() -> dict[str, int]:
    """Every word that names a drawn category -> category id."""
    by_name = {c.name: c.id for c in COCO_CATEGORIES}
    return {w: by_name[name] for name, words in CATEGORY_WORDS.items() for w in words.singular + words.plural}


def _mentioned_categories(text: str) -> set[int]:
    lower = text.lower()
    return {cid for word, cid in _category_words().items() if re.search(rf"\b{re.escape(word)}\b", lower)}


def test_captions_match_their_truth(clean: Path) -> None:
    truth = _load(clean / "synth_truth.json")
    captions = {a["id"]: a for a in _load(clean / "coco/annotations/captions_train2017.json")["annotations"]}
    instances = {a["id"]: a for a in _load(clean / "coco/annotations/instances_train2017.json")["annotations"]}
    assert {t["caption_id"] for t in truth["coco_captions"]} == set(captions)
    words_used, distractor_captions = set(), 0
    for t in truth["coco_captions"]:
        caption = captions[t["caption_id"]]
        for mention in t["mentions"]:
            assert re.search(rf"\b{re.escape(mention['word'])}\b", caption["caption"].lower())
            for ann_id in mention["ann_ids"]:
                assert instances[ann_id]["image_id"] == caption["image_id"]
                assert instances[ann_id]["category_id"] == mention["category_id"]
        # Word-boundary matching of the synonym table finds exactly the truth's categories: no accidental
        # mentions, and "carpet"/"cattle" do not count as "car"/"cat".
        assert _mentioned_categories(caption["caption"]) == set(t["category_ids"])
        words_used.update(t["words"])
        if not t["mentions"] and any(w in caption["caption"].lower() for w in DISTRACTOR_WORDS):
            distractor_captions += 1
    names = {CATEGORY_BY_ID[i].name for i in _category_words().values()}
    assert words_used - names, "synonyms are used, not only category names"
    assert words_used & {w for words in CATEGORY_WORDS.values() for w in words.plural}, "plurals are used"
    assert distractor_captions >= 1


def test_vg_regions_match_their_truth(clean: Path) -> None:
    truth = {t["region_id"]: t for t in _load(clean / "synth_truth.json")["vg_regions"]}
    objects = {o["object_id"]: o for entry in _load(clean / "vg/objects.json") for o in entry["objects"]}
    for entry in _load(clean / "vg/region_descriptions.json"):
        for region in entry["regions"]:
            t = truth[region["region_id"]]
            assert _mentioned_categories(region["phrase"]) == set(t["category_ids"])
            x0, y0 = region["x"], region["y"]
            x1, y1 = x0 + region["width"], y0 + region["height"]
            for object_id in t["object_ids"]:
                o = objects[object_id]
                assert x0 <= o["x"] and y0 <= o["y"] and o["x"] + o["w"] <= x1 and o["y"] + o["h"] <= y1


def test_web_lists_and_sources_yaml(clean: Path) -> None:
    sources = yaml.safe_load((clean / "sources.yaml").read_text())["sources"]
    assert [s["name"] for s in sources] == ["coco", "vg", "cc3m", "sbu"]
    for source in sources:
        for key, rel in source.items():
            if key not in ("name", "format"):
                assert (clean / rel).exists(), (source["name"], key, rel)
    sbu_lists = 0
    for name in ("cc3m", "sbu"):
        rows = _load(clean / f"web/{name}_train.json")
        assert rows
        for row in rows:
            assert set(row) == {"image", "caption"} and row["image"].startswith(f"images/{name}/")
            with Image.open(clean / "web" / row["image"]) as image:
                image.verify()
            texts = row["caption"] if isinstance(row["caption"], list) else [row["caption"]]
            assert all(t and t.encode("utf-8") for t in texts)
            sbu_lists += isinstance(row["caption"], list)
    assert sbu_lists >= 1
    assert not (clean / "faults.json").exists() and not (clean / "outside.jpg").exists()


def test_same_seed_same_bytes_other_seed_other_corpus(tmp_path: Path) -> None:
    kwargs = {"num_images": 30, "faults": True}
    generate(SynthConfig(out=tmp_path / "a", seed=7, **kwargs))
    generate(SynthConfig(out=tmp_path / "b", seed=7, **kwargs))
    generate(SynthConfig(out=tmp_path / "c", seed=8, **kwargs))
    a, b, c = (_hashes(tmp_path / n) for n in "abc")
    assert a == b and len(a) > 30
    different = [name for name in set(a) & set(c) if a[name] != c[name]]
    assert "coco/annotations/instances_train2017.json" in different and len(different) > len(a) // 2


def test_rerun_replaces_own_output_and_refuses_foreign_folders(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    generate(SynthConfig(out=out, num_images=20, faults=True))
    generate(SynthConfig(out=out, num_images=20))  # replaces the earlier corpus, faults and all
    assert not (out / "faults.json").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="out"):
        generate(SynthConfig(out=foreign, num_images=20))
    assert (foreign / "notes.txt").read_text() == "mine"


def test_karpathy_set_has_its_own_pictures_splits_and_five_captions(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    generate(SynthConfig(out=out, num_images=20, karpathy_images=10, seed=3))
    dataset = _load(out / "karpathy" / "dataset_synth.json")
    images = dataset["images"]
    assert [i["split"] for i in images].count("train") == 6 and [i["split"] for i in images].count("test") == 2
    for image in images:
        assert len(image["sentences"]) == 5 and all(s["raw"].endswith(".") for s in image["sentences"])
        # references describe their picture, as the benchmarks' do: none of the corpus's unrelated web captions
        assert not {s["raw"][:-1].lower() for s in image["sentences"]} & set(DISTRACTOR_CAPTIONS)
        with Image.open(out / "karpathy" / image["filepath"] / image["filename"]) as picture:
            picture.verify()
    corpus = {h for name, h in _hashes(out).items() if not name.startswith("karpathy/")}
    ours = {h for name, h in _hashes(out).items() if name.startswith("karpathy/images/")}
    assert len(ours) == 10 and not ours & corpus  # pictures the pretraining corpus does not have
    generate(SynthConfig(out=tmp_path / "again", num_images=20, karpathy_images=10, seed=3))
    again = _hashes(tmp_path / "again")
    assert {n: h for n, h in _hashes(out).items() if n.startswith("karpathy/")} == {
        n: h for n, h in again.items() if n.startswith("karpathy/")
    }
    assert main(["--out", str(tmp_path / "cli"), "--images", "20", "--karpathy", "5"]) == 0
    for split in ("train", "val", "test"):
        sources = yaml.safe_load((tmp_path / "cli" / "karpathy" / f"sources_{split}.yaml").read_text())["sources"]
        assert [(s["name"], s["splits"]) for s in sources] == [(f"synth_{split}", [split])]
    assert "karpathy" not in (tmp_path / "cli" / "sources.yaml").read_text()  # kept out of pretraining


@pytest.mark.parametrize(
    ("field", "value"),
    [("num_images", 5), ("seed", -1), ("min_side", 8), ("max_side", 100), ("vg_coco_overlap", 1.5),
     ("karpathy_images", 3)],
)  # fmt: skip
def test_config_errors_name_the_field(tmp_path: Path, field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        SynthConfig(out=tmp_path, **{field: value})


def test_faults_are_written_and_described(faulty: Path) -> None:
    faults = _load(faulty / "faults.json")
    assert sorted(f["kind"] for f in faults) == sorted(FAULT_KINDS)
    by_kind = {f["kind"]: f for f in faults}
    for f in faults:
        assert set(f) == {"kind", "source", "where", "expect"}
        assert f["expect"] in {"reject", "convert", "drop_box", "clip_box"}
        assert (faulty / f["where"]["file"]).exists()

    def web_row(kind: str) -> tuple[dict, Path]:
        where = by_kind[kind]["where"]
        row = _load(faulty / where["file"])[where["index"]]
        return row, faulty / "web" / row["image"]

    row, path = web_row("truncated_jpeg")
    with pytest.raises(OSError), Image.open(path) as image:
        image.load()
    assert web_row("zero_byte_file")[1].stat().st_size == 0
    with pytest.raises(UnidentifiedImageError):
        Image.open(web_row("not_an_image")[1])
    assert not web_row("missing_file")[1].exists()
    with Image.open(web_row("cmyk_jpeg")[1]) as image:
        assert image.mode == "CMYK" and image.format == "JPEG"
    with Image.open(web_row("gray16_png")[1]) as image:
        assert image.mode == "I;16" and image.format == "PNG"
    assert web_row("empty_caption")[0]["caption"] == ""
    with pytest.raises(UnicodeEncodeError):
        web_row("non_utf8_caption")[0]["caption"].encode("utf-8")
    row, path = web_row("path_escape")
    assert row["image"] == "../outside.jpg"
    assert not path.resolve().is_relative_to((faulty / "web").resolve()) and path.resolve().is_relative_to(faulty)
    with Image.open(path) as image:
        image.verify()
    assert {f["expect"] for f in faults if f["kind"] in ("cmyk_jpeg", "gray16_png")} == {"convert"}

    coco = COCO(str(faulty / "coco/annotations/instances_train2017.json"))  # still loads, NaN and all
    for kind, expect in [
        ("box_outside_image", "drop_box"),
        ("box_partly_outside", "clip_box"),
        ("nan_box", "drop_box"),
        ("negative_size_box", "drop_box"),
    ]:
        assert by_kind[kind]["expect"] == expect
        ann = coco.anns[by_kind[kind]["where"]["annotation_id"]]
        info = coco.imgs[ann["image_id"]]
        x, _, w, _ = ann["bbox"]
        if kind == "box_outside_image":
            assert x >= info["width"]
        elif kind == "box_partly_outside":
            assert x < info["width"] < x + w
        elif kind == "nan_box":
            assert math.isnan(x)
        else:
            assert w < 0


def test_faults_leave_the_clean_part_alone(tmp_path: Path) -> None:
    generate(SynthConfig(out=tmp_path / "clean", num_images=20, seed=2))
    generate(SynthConfig(out=tmp_path / "faulty", num_images=20, seed=2, faults=True))
    clean, faulty = _hashes(tmp_path / "clean"), _hashes(tmp_path / "faulty")
    images = [name for name in clean if name.endswith(".jpg")]
    assert images and all(clean[name] == faulty[name] for name in images)


def test_job_main_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synth"
    assert main(["--out", str(out), "--images", "30", "--seed", "1", "--faults"]) == 0
    printed = capsys.readouterr().out
    assert all(part in printed for part in ("coco", "vg", "cc3m", "sbu"))
    assert (out / "sources.yaml").exists() and (out / "faults.json").exists()
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "bad"), "--images", "3"])
