"""Tests of the synthetic VQA v2 and refexp sets (pipeline.synth.tasks): real formats, answers and boxes true to the
drawn pictures, split rules and reproducibility."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml
from PIL import Image

from jobs.synth import main
from manifests.schema import SOURCE_RE
from pipeline.coco_categories import CATEGORY_BY_ID, CATEGORY_BY_NAME
from pipeline.synth import SynthConfig, generate
from pipeline.synth.draw import PALETTE, Scene
from pipeline.synth.tasks import refexp_scene, task_ids, vqa_scene
from pipeline.synth.text import CATEGORY_WORDS

NOUNS = {w: c for c, words in CATEGORY_WORDS.items() for w in (words.singular[0], words.plural[0])}
NUMBER_WORDS = {w: str(i) for i, w in enumerate(("zero", "one", "two", "three", "four", "five"))} | {"none": "0"}


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> SynthConfig:
    cfg = SynthConfig(out=tmp_path_factory.mktemp("tasks") / "synth", num_images=8, seed=5, vqa_images=40,
                      refexp_images=30)  # fmt: skip
    generate(cfg)
    return cfg


def _load(path: Path) -> object:
    return json.loads(path.read_text())


def _normalise(answer: str) -> str:
    """VQA's answer normalisation, as far as the synthetic answers need it: case, punctuation, number words,
    articles."""
    words = re.sub(r"[.,!?;:'\"]", "", answer.lower()).split()
    return " ".join(NUMBER_WORDS.get(w, w) for w in words if w not in ("a", "an", "the"))


def _side(box: list[float], width: int) -> str:
    centre = (box[0] + box[2] / 2) / width
    return "left" if centre < 0.4 else "right" if centre > 0.6 else "middle"


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def _vqa(cfg: SynthConfig, split: str) -> tuple[dict, dict]:
    root = cfg.out / "vqa"
    return _load(root / f"v2_OpenEnded_mscoco_{split}_questions.json"), _load(
        root / f"v2_mscoco_{split}_annotations.json"
    )


def test_vqa_official_files_match_the_format(cfg: SynthConfig) -> None:
    question_ids, pictures = set(), {}
    for split in ("train", "val"):
        questions, annotations = _vqa(cfg, split)
        subtype = f"synth{split}2014"
        assert set(questions) == {"info", "task_type", "data_type", "license", "data_subtype", "questions"}
        assert set(annotations) == {"info", "license", "data_subtype", "annotations", "data_type"}
        assert (questions["task_type"], questions["data_type"]) == ("Open-Ended", "mscoco")
        assert questions["data_subtype"] == annotations["data_subtype"] == subtype
        assert len(questions["questions"]) == len(annotations["annotations"])
        for q, a in zip(questions["questions"], annotations["annotations"], strict=True):
            assert set(q) == {"image_id", "question", "question_id"}
            assert set(a) == {"question_type", "multiple_choice_answer", "answers", "image_id", "answer_type",
                              "question_id"}  # fmt: skip
            assert (q["image_id"], q["question_id"]) == (a["image_id"], a["question_id"])
            assert q["question_id"] // 1000 == q["image_id"] and q["question_id"] not in question_ids
            question_ids.add(q["question_id"])
            assert [x["answer_id"] for x in a["answers"]] == list(range(1, 11))
            assert all(set(x) == {"answer", "answer_confidence", "answer_id"} for x in a["answers"])
            assert {x["answer_confidence"] for x in a["answers"]} <= {"yes", "maybe", "no"}
            kinds = {"is there a": "yes/no", "how many": "number", "what color is the": "other", "is the": "other"}
            assert kinds[a["question_type"]] == a["answer_type"] and q["question"].lower().startswith(
                a["question_type"]
            )
            pictures.setdefault(split, set()).add(q["image_id"])
        for image_id in pictures[split]:
            with Image.open(cfg.out / "vqa" / "images" / f"COCO_{subtype}_{image_id:012d}.jpg") as image:
                assert image.format == "JPEG"
    assert (len(pictures["train"]), len(pictures["val"])) == (32, 8) and not pictures["train"] & pictures["val"]
    assert len(list((cfg.out / "vqa" / "images").iterdir())) == 40


def test_vqa_answers_match_the_drawn_truth(cfg: SynthConfig) -> None:
    picture_of = {image_id: k for k, image_id in enumerate(task_ids(cfg, "vqa"))}
    per_picture: Counter[int] = Counter()
    for split in ("train", "val"):
        questions, annotations = _vqa(cfg, split)
        for q, a in zip(questions["questions"], annotations["annotations"], strict=True):
            scene = vqa_scene(cfg, picture_of[q["image_id"]])
            per_picture[q["image_id"]] += 1
            with Image.open(cfg.out / "vqa" / "images" / f"COCO_synth{split}2014_{q['image_id']:012d}.jpg") as image:
                assert image.size == (scene.width, scene.height)
            assert a["multiple_choice_answer"] == _truth(q["question"], scene)
            normal = Counter(_normalise(x["answer"]) for x in a["answers"])
            assert normal.most_common(1)[0] == (a["multiple_choice_answer"], max(normal.values()))
            assert normal[a["multiple_choice_answer"]] >= 8  # at most two wrong answers
    assert len(per_picture) == 40 and all(3 <= n <= 6 for n in per_picture.values())
    assert sum(per_picture.values()) / len(per_picture) >= 4


def _truth(question: str, scene: Scene) -> str:
    """The answer to a synthetic VQA question, recounted from the scene; fails where the truth is ambiguous."""
    kinds = (
        r"What color is the (.+?)( wearing)?\?",
        r"How many (.+) are there\?",
        r"Is there an? (.+) in the picture\?",
        r"Is the (.+) on the left or on the right\?",
    )
    match = re.fullmatch("|".join(kinds), question)
    assert match, question
    colour, wearing, count, presence, position = match.groups()
    category = NOUNS[next(g for g in (colour, count, presence, position) if g)]
    objects = [o for o in scene.objects if o.category == category]
    if count:
        assert len(objects) <= 5
        return str(len(objects))
    if presence:
        return "yes" if objects else "no"
    assert len(objects) == 1  # colour and position are asked only of a category drawn once
    assert (wearing is not None) == (category == "person")
    if colour:
        return objects[0].colour
    side = _side(list(objects[0].box), scene.width)
    assert side != "middle"
    return side


def test_vqa_answers_are_human_like(cfg: SynthConfig) -> None:
    annotations = _vqa(cfg, "train")[1]["annotations"] + _vqa(cfg, "val")[1]["annotations"]
    raw = [(x["answer"], a["multiple_choice_answer"]) for a in annotations for x in a["answers"]]
    variants = {answer for answer, truth in raw if answer != truth and _normalise(answer) == truth}
    assert {v for v in variants if v.endswith("!")} and {v for v in variants if v.startswith("the ")}
    assert {v for v in variants if v[0].isupper()} and {v for v in variants if re.fullmatch(r"\d\.", v)}
    assert variants & set(NUMBER_WORDS)
    wrong = sum(_normalise(answer) != truth for answer, truth in raw) / len(raw)
    assert 0.01 < wrong < 0.1
    by_type: dict[str, Counter[str]] = {}
    for a in annotations:
        by_type.setdefault(a["answer_type"], Counter())[a["multiple_choice_answer"]] += 1
    assert set(by_type) == {"yes/no", "number", "other"}
    assert 0.4 <= by_type["yes/no"]["yes"] / by_type["yes/no"].total() <= 0.6
    assert set(by_type["number"]) <= set("012345") and len(by_type["number"]) >= 4
    assert set(by_type["other"]) <= set(PALETTE) | {"left", "right"} and {"left", "right"} <= set(by_type["other"])
    shares = [c.total() / len(annotations) for c in by_type.values()]
    assert min(shares) > 0.15  # every answer type has a meaningful share


def test_vqa_albef_json_has_the_same_questions(cfg: SynthConfig) -> None:
    for split in ("train", "val"):
        questions, annotations = _vqa(cfg, split)
        rows = _load(cfg.out / "vqa" / f"vqa_{split}.json")
        assert [r["question_id"] for r in rows] == [q["question_id"] for q in questions["questions"]]
        for row, q, a in zip(rows, questions["questions"], annotations["annotations"], strict=True):
            assert set(row) == {"image", "question", "question_id", "answer", "dataset"} and row["dataset"] == "vqa"
            assert row["question"] == q["question"] and row["answer"] == [x["answer"] for x in a["answers"]]
            assert row["image"] == f"images/COCO_synth{split}2014_{q['image_id']:012d}.jpg"
            assert (cfg.out / "vqa" / row["image"]).is_file()


def test_sources_files_resolve(cfg: SynthConfig) -> None:
    expected = {
        "vqa": {"sources_train.yaml": ("vqa_train", "vqa"), "sources_val.yaml": ("vqa_val", "vqa"),
                "sources_json_train.yaml": ("vqa_json_train", "vqa_json"),
                "sources_json_val.yaml": ("vqa_json_val", "vqa_json")},
        "refexp": {f"sources_{s}.yaml": (f"refexp_{s.lower()}", "refexp") for s in ("train", "val", "testA", "testB")},
    }  # fmt: skip
    for folder, files in expected.items():
        assert {p.name for p in (cfg.out / folder).glob("sources*.yaml")} == set(files)
        for name, (source, fmt) in files.items():
            (entry,) = yaml.safe_load((cfg.out / folder / name).read_text())["sources"]
            assert (entry["name"], entry["format"]) == (source, fmt) and SOURCE_RE.fullmatch(entry["name"])
            for setting in set(entry) - {"name", "format"}:
                assert (cfg.out / folder / entry[setting]).exists(), (name, setting)
    corpus = (cfg.out / "sources.yaml").read_text()
    assert "vqa" not in corpus and "refexp" not in corpus  # kept out of pretraining


def _refexp(cfg: SynthConfig) -> dict[str, dict]:
    return {s: _load(cfg.out / "refexp" / f"finetune_refcoco+_{s}.json") for s in ("train", "val", "testA", "testB")}


def test_refexp_files_match_mdetr_format_and_boxes_are_the_drawn_ones(cfg: SynthConfig) -> None:
    picture_of = {image_id: k for k, image_id in enumerate(task_ids(cfg, "refexp"))}
    files = set()
    for data in _refexp(cfg).values():
        assert set(data) == {"images", "annotations", "categories"} and len(data["categories"]) == 80
        assert [i["id"] for i in data["images"]] == list(range(len(data["images"])))
        assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
        for image, ann in zip(data["images"], data["annotations"], strict=True):  # one referent per expression
            assert {"id", "file_name", "height", "width", "caption", "original_id"} <= set(image)
            assert set(ann) == {"id", "image_id", "bbox", "category_id", "area", "iscrowd"} and ann["iscrowd"] == 0
            assert (
                ann["image_id"] == image["id"]
                and image["file_name"] == f"COCO_synthtrain2014_{image['original_id']:012d}.jpg"
            )
            scene = refexp_scene(cfg, picture_of[image["original_id"]])
            with Image.open(cfg.out / "refexp" / "images" / image["file_name"]) as picture:
                assert picture.size == (image["width"], image["height"]) == (scene.width, scene.height)
            x, y, w, h = ann["bbox"]
            assert min(x, y) >= 0 and w > 0 and h > 0 and x + w <= image["width"] and y + h <= image["height"]
            referent = [o for o in scene.objects if list(o.box) == ann["bbox"]]
            assert len(referent) == 1 and CATEGORY_BY_NAME[referent[0].category].id == ann["category_id"]
            assert ann["area"] == float(referent[0].mask.sum())
            files.add(image["file_name"])
    assert len(files) == 30 == len(list((cfg.out / "refexp" / "images").iterdir()))


def _meaning(caption: str) -> tuple[str, str | None, str | None]:
    """(category, colour, side) of a synthetic referring expression."""
    match = re.fullmatch(r"the (.+?)(?: on the (left|right))?", caption)
    assert match, caption
    words, side = match.groups()
    if words.startswith("person"):
        colour = re.fullmatch(r"person(?: in (\w+))?", words).group(1)
        return "person", colour, side
    first, _, rest = words.partition(" ")
    return (NOUNS[rest], first, side) if first in PALETTE else (NOUNS[words], None, side)


def test_refexp_expressions_name_exactly_one_instance(cfg: SynthConfig) -> None:
    picture_of = {image_id: k for k, image_id in enumerate(task_ids(cfg, "refexp"))}
    forms, look_alike = Counter(), set()
    for data in _refexp(cfg).values():
        by_picture: dict[int, list[str]] = {}
        for image, ann in zip(data["images"], data["annotations"], strict=True):
            by_picture.setdefault(image["original_id"], []).append(image["caption"])
            scene = refexp_scene(cfg, picture_of[image["original_id"]])
            category, colour, side = _meaning(image["caption"])
            assert CATEGORY_BY_ID[ann["category_id"]].name == category
            instances = [o for o in scene.objects if o.category == category]
            assert 2 <= len(instances) <= 3
            assert (
                len({o.category for o in scene.objects}) == len(scene.objects) - len(instances) + 1
            )  # distractors differ
            # a reader could take an object near the middle for either side: no such object may fit as well
            fits = [o for o in instances if (colour is None or o.colour == colour)
                    and (side is None or _side(list(o.box), scene.width) in (side, "middle"))]  # fmt: skip
            assert [list(o.box) for o in fits] == [ann["bbox"]], image["caption"]
            assert side is None or _side(ann["bbox"], scene.width) == side
            forms[(colour is not None, side is not None)] += 1
            look_alike.add(len({o.colour for o in instances}) < len(instances))
        for captions in by_picture.values():
            assert 1 <= len(captions) <= 3 and len(set(captions)) == len(captions)
    assert set(forms) == {(True, False), (False, True), (True, True)}  # colour, side and both are all used
    assert look_alike == {True, False}  # some instances differ only by side


def test_refexp_splits(cfg: SynthConfig) -> None:
    data = _refexp(cfg)
    pictures = {s: {i["file_name"] for i in d["images"]} for s, d in data.items()}
    assert {s: len(p) for s, p in pictures.items()} == {"train": 18, "val": 4, "testA": 4, "testB": 4}
    assert sum(len(p) for p in pictures.values()) == len(set().union(*pictures.values()))
    people = {s: {a["category_id"] == 1 for a in d["annotations"]} for s, d in data.items()}
    assert people["testA"] == {True} and people["testB"] == {False} and people["train"] == {True, False}


def test_same_seed_same_bytes_and_pictures_of_their_own(tmp_path: Path) -> None:
    kwargs = {"num_images": 8, "vqa_images": 10, "refexp_images": 15, "karpathy_images": 5}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        generate(SynthConfig(out=tmp_path / name, seed=seed, **kwargs))
    a, b, c = (_hashes(tmp_path / n) for n in "abc")
    assert a == b
    ours = [n for n in a if n.startswith(("vqa/", "refexp/"))]
    assert len(ours) == 10 + 10 + 15 + 8
    assert sum(a[n] != c.get(n) for n in ours) > len(ours) // 2
    pictures = {a[n] for n in ours if n.endswith(".jpg")}
    others = {h for n, h in a.items() if n.endswith(".jpg") and n not in ours}
    assert len(pictures) == 25 and not pictures & others


@pytest.mark.parametrize(("field", "value"), [("vqa_images", 4), ("refexp_images", 14)])
def test_config_errors_name_the_field(tmp_path: Path, field: str, value: int) -> None:
    with pytest.raises(ValueError, match=field):
        SynthConfig(out=tmp_path, num_images=8, **{field: value})


def test_job_main_writes_both_sets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synth"
    assert main(["--out", str(out), "--images", "8", "--vqa", "5", "--refexp", "15"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^vqa\s+5\s", printed, re.M) and re.search(r"^refexp\s+15\s", printed, re.M)
    assert (out / "vqa" / "sources_val.yaml").exists() and (out / "refexp" / "sources_testB.yaml").exists()
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "bad"), "--images", "8", "--refexp", "3"])
