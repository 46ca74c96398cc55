"""Downstream task sets drawn from the synthetic pictures' truth: VQA v2 and RefCOCO+ (MDETR's json), in real formats.

    out/vqa/v2_OpenEnded_mscoco_{train,val}_questions.json, out/vqa/v2_mscoco_{train,val}_annotations.json
    out/vqa/vqa_{train,val}.json              the same questions in ALBEF's form (answer: the ten raw answers)
    out/vqa/images/COCO_synth{train,val}2014_<12-digit id>.jpg
    out/vqa/sources_{train,val}.yaml          format vqa (sources vqa_train, vqa_val)
    out/vqa/sources_json_{train,val}.yaml     format vqa_json (sources vqa_json_train, vqa_json_val)
    out/refexp/finetune_refcoco+_{train,val,testA,testB}.json, out/refexp/images/COCO_synthtrain2014_<id>.jpg
    out/refexp/sources_{train,val,testA,testB}.yaml   format refexp (sources refexp_train, ..., refexp_testa)

VQA pictures show 1-3 categories, 1-5 objects of each. Every question is about what was drawn: colour and position
only of a category drawn once (position only when its centre lies outside the middle fifth), counts as digits
0-5, presence yes and no in turn. Ten answers each, as a crowd gives them: mostly the truth, some spellings that
VQA's answer normalisation maps to it ("Two", "2.", "Red", "yes!", "the red"), about 5% wrong (at most two, so
the truth is always the multiple-choice answer).

Refexp pictures show 2-3 large instances of one category that differ in colour and/or side, and 0-2 smaller objects
of other categories. Each of 1-3 expressions names exactly one instance by colour, side or both; its box is that
instance's. testA pictures are about people, testB about other things, train and val about both, as in RefCOCO+.

Pictures are numbered apart from the corpus's and Karpathy's and drawn, like them, from (seed, picture, stream)
generators, so the files are byte-identical per seed. `vqa_scene`, `vqa_questions`, `refexp_scene` and
`refexp_expressions` are the truth behind the files, for tests.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import yaml

from pipeline.coco_categories import CATEGORY_BY_NAME, COCO_CATEGORIES
from pipeline.synth.config import SynthConfig, sparse_ids
from pipeline.synth.draw import (
    DRAWN_CATEGORIES,
    PALETTE,
    Background,
    Box,
    Scene,
    SceneObject,
    box_size,
    glyph_object,
    overlap_ok,
    render,
    sample_background,
)
from pipeline.synth.formats import Tick, dump, picture_rng, save_jpeg
from pipeline.synth.text import CATEGORY_WORDS

VQA_PICTURES = 2 << 30  # picture numbers of the VQA set, apart from the corpus's and Karpathy's (1 << 30)
REFEXP_PICTURES = 3 << 30
VQA_SPLITS = ("train", "train", "train", "train", "val")  # picture k is in VQA_SPLITS[k % 5]
# Picture k is in REFEXP_SPLITS[k % 15]: 3/5 train, 2/15 each val, testA, testB; every split within 9 pictures.
REFEXP_SPLITS = ("train", "train", "train", "val", "testA", "train", "train", "train", "testB", "val",
                 "train", "train", "train", "testA", "testB")  # fmt: skip
_PIXELS, _TEXT = 0, 1  # generator streams per picture: the pixels do not depend on how many texts are drawn
_COLOURS = tuple(PALETTE)
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")
_VQA_INFO = {
    "description": "COPA synthetic set in VQA v2 format",
    "url": "",
    "version": "2.0",
    "year": 2017,
    "contributor": "copa synth",
    "date_created": "2017-01-01 00:00:00",
}
_VQA_LICENSE = {"url": "", "name": "Synthetic images, no restrictions"}


class Written(NamedTuple):
    """What a task writer wrote."""

    num_texts: int  # questions or expressions
    num_files: int  # images, annotation files and sources files


def side_of(box: Box, width: int) -> str:
    """Whether the box centre lies "left" or "right" of the middle fifth of the picture's width, or in the "middle"."""
    centre = (box[0] + box[2] / 2) / width
    return "left" if centre < 0.4 else "right" if centre > 0.6 else "middle"


def task_ids(cfg: SynthConfig, task: str) -> tuple[int, ...]:
    """Sparse, sorted image ids of the "vqa" or "refexp" pictures: picture k has id [k]."""
    n, stream = (cfg.vqa_images, 2) if task == "vqa" else (cfg.refexp_images, 3)
    return sparse_ids(cfg.seed, stream, n, 1, max(600_000, 4 * n))


def _size(cfg: SynthConfig, rng: np.random.Generator) -> tuple[int, int]:
    width, height = (int(s) for s in rng.integers(cfg.min_side, cfg.max_side + 1, size=2))
    return width, height


def _place(
    rng: np.random.Generator, category: str, colour: str, scale: tuple[float, float], size: tuple[int, int],
    taken: list[Box],
) -> SceneObject | None:  # fmt: skip
    """One object whose long side is `scale` of the picture's short side, where it overlaps little; None if no room."""
    width, height = size
    w, h = box_size(rng, category, scale[0] * min(size), scale[1] * min(size))
    w, h = min(w, width), min(h, height)
    for _ in range(12):
        x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        if overlap_ok((x, y, w, h), taken):
            obj = glyph_object(category, colour, x, y, w, h)
            if obj is not None:
                taken.append(obj.box)
            return obj
    return None


def _scene(size: tuple[int, int], background: Background, objects: list[SceneObject]) -> Scene:
    # Big things are painted first, so small ones stay visible on top of them (as in draw.make_scene).
    return Scene(size[0], size[1], background, tuple(sorted(objects, key=lambda o: -o.box[2] * o.box[3])))


# ---------------------------------------------------------------------------------------------------------- VQA


@dataclass(frozen=True)
class Question:
    """One VQA question with its truth and the ten crowd answers."""

    text: str
    question_type: str  # the official type its opening words give: "how many", "is there a", ...
    answer_type: str  # yes/no, number or other
    truth: str  # normalised answer: "yes", "3", "red", "left"
    answers: tuple[str, ...]  # ten raw answers
    confidences: tuple[str, ...]  # answer_confidence of each


def vqa_scene(cfg: SynthConfig, k: int) -> Scene:
    """VQA picture k: 1-3 categories with 1-5 objects each (fewer where there is no room), no crowds."""
    rng = picture_rng(cfg, VQA_PICTURES + k, _PIXELS)
    size = _size(cfg, rng)
    background = sample_background(rng)
    objects: list[SceneObject] = []
    taken: list[Box] = []
    for c in rng.choice(len(DRAWN_CATEGORIES), size=int(rng.integers(1, 4)), replace=False):
        for _ in range(1 + int(rng.choice(5, p=[0.45, 0.2, 0.15, 0.12, 0.08]))):
            colour = _COLOURS[int(rng.integers(len(_COLOURS)))]
            obj = _place(rng, DRAWN_CATEGORIES[c], colour, (0.15, 0.32), size, taken)
            if obj is not None:
                objects.append(obj)
    return _scene(size, background, objects)


def _variants(truth: str) -> tuple[str, ...]:
    """Spellings of `truth` that VQA's answer normalisation (lower case, no punctuation, number words to digits,
    no articles) maps back to it."""
    if truth.isdigit():
        word = _NUMBER_WORDS[int(truth)]
        return word, word.capitalize(), f"{truth}."
    if truth in ("yes", "no"):
        return truth.capitalize(), f"{truth}!", f"{truth}."
    return truth.capitalize(), f"the {truth}", f"{truth}."


def _wrong(rng: np.random.Generator, kind: str, truth: str) -> str:
    if kind == "count":
        count = int(truth)
        return str(count + 1 if count == 0 or (count < 5 and rng.random() < 0.5) else count - 1)
    if kind == "colour":
        others = [c for c in _COLOURS if c != truth]
        return others[int(rng.integers(len(others)))]
    return {"yes": "no", "no": "yes", "left": "right", "right": "left"}[truth]


def _crowd(rng: np.random.Generator, kind: str, truth: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Ten answers and their confidences: ~5% wrong (at most two), ~20% of the rest a variant spelling."""
    wrong = rng.random(10) < 0.05
    wrong[np.flatnonzero(wrong)[2:]] = False
    answers, confidences = [], []
    for is_wrong in wrong:
        if is_wrong:
            answers.append(_wrong(rng, kind, truth))
            confidences.append("maybe" if rng.random() < 0.5 else "no")
        else:
            variants = _variants(truth)
            answers.append(variants[int(rng.integers(len(variants)))] if rng.random() < 0.2 else truth)
            confidences.append("yes" if rng.random() < 0.9 else "maybe")
    return tuple(answers), tuple(confidences)


def _ask(kind: str, category: str) -> tuple[str, str, str]:
    """(question, question_type, answer_type) of one kind of question about one category."""
    noun, nouns = CATEGORY_WORDS[category].singular[0], CATEGORY_WORDS[category].plural[0]
    if kind == "presence":
        return f"Is there {'an' if noun[0] in 'aeiou' else 'a'} {noun} in the picture?", "is there a", "yes/no"
    if kind == "count":
        return f"How many {nouns} are there?", "how many", "number"
    if kind == "colour":
        text = "What color is the person wearing?" if category == "person" else f"What color is the {noun}?"
        return text, "what color is the", "other"
    return f"Is the {noun} on the left or on the right?", "is the", "other"


def vqa_questions(cfg: SynthConfig, k: int, scene: Scene) -> list[Question]:
    """4-6 distinct questions about VQA picture k (fewer where little is unambiguous): three rounds over the four
    kinds from a random start, each kind skipped where it has nothing left to ask. Presence questions are one yes
    and one no, or one of them by the parity of k; 15% of counts are about an absent category."""
    rng = picture_rng(cfg, VQA_PICTURES + k, _TEXT)
    drawn = Counter(o.category for o in scene.objects)
    present = sorted(drawn)
    absent = [c for c in DRAWN_CATEGORIES if c not in drawn]
    single = {o.category: o for o in scene.objects if drawn[o.category] == 1}
    sided = [c for c, o in single.items() if side_of(o.box, scene.width) != "middle"]
    kinds = [("presence", "count", "colour", "position")[int(i)] for i in rng.permutation(4)]
    num, asked, questions, num_presence = int(rng.integers(4, 7)), set(), [], 0
    for slot in range(12):
        kind = kinds[slot % 4]
        if kind == "presence":  # at most a yes and a no: a third would lean to "no" where few things are drawn
            pool = [] if num_presence == 2 else present if (k + num_presence) % 2 == 0 else absent
        elif kind == "count":
            pool = absent if rng.random() < 0.15 else present
        else:
            pool = sorted(single) if kind == "colour" else sided
        pool = [c for c in pool if (kind, c) not in asked]
        if not pool or len(questions) == num:
            continue
        category = pool[int(rng.integers(len(pool)))]
        asked.add((kind, category))
        if kind == "presence":
            truth = "yes" if category in drawn else "no"
            num_presence += 1
        elif kind == "count":
            truth = str(drawn[category])
        elif kind == "colour":
            truth = single[category].colour
        else:
            truth = side_of(single[category].box, scene.width)
        text, question_type, answer_type = _ask(kind, category)
        questions.append(Question(text, question_type, answer_type, truth, *_crowd(rng, kind, truth)))
    return questions


def write_vqa(cfg: SynthConfig, tick: Tick) -> Written:
    """The VQA set (module docstring): official question and annotation files, ALBEF's json and sources files."""
    root = cfg.out / "vqa"
    (root / "images").mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[list, list, list]] = {split: ([], [], []) for split in ("train", "val")}
    for k, image_id in enumerate(task_ids(cfg, "vqa")):
        split = VQA_SPLITS[k % len(VQA_SPLITS)]
        scene = vqa_scene(cfg, k)
        file_name = f"COCO_synth{split}2014_{image_id:012d}.jpg"
        save_jpeg(render(scene), root / "images" / file_name, cfg.jpeg_quality)
        questions, annotations, albef = files[split]
        for q, question in enumerate(vqa_questions(cfg, k, scene)):
            question_id = image_id * 1000 + q  # as VQA v2 numbers them
            questions.append({"image_id": image_id, "question": question.text, "question_id": question_id})
            pairs = enumerate(zip(question.answers, question.confidences, strict=True))
            answers = [{"answer": a, "answer_confidence": c, "answer_id": i + 1} for i, (a, c) in pairs]
            annotations.append(
                {
                    "question_type": question.question_type,
                    "multiple_choice_answer": question.truth,  # at least eight of the ten answers normalise to it
                    "answers": answers,
                    "image_id": image_id,
                    "answer_type": question.answer_type,
                    "question_id": question_id,
                }
            )
            albef.append({"image": f"images/{file_name}", "question": question.text, "question_id": question_id,
                          "answer": list(question.answers), "dataset": "vqa"})  # fmt: skip
        tick()
    for split, (questions, annotations, albef) in files.items():
        subtype = f"synth{split}2014"
        names = (f"v2_OpenEnded_mscoco_{split}_questions.json", f"v2_mscoco_{split}_annotations.json")
        dump(root / names[0], {"info": _VQA_INFO, "task_type": "Open-Ended", "data_type": "mscoco",
                               "license": _VQA_LICENSE, "data_subtype": subtype, "questions": questions})  # fmt: skip
        dump(root / names[1], {"info": _VQA_INFO, "license": _VQA_LICENSE, "data_subtype": subtype,
                               "annotations": annotations, "data_type": "mscoco"})  # fmt: skip
        dump(root / f"vqa_{split}.json", albef)
        official = {"name": f"vqa_{split}", "format": "vqa", "questions": names[0], "annotations": names[1],
                    "images": "images"}  # fmt: skip
        _sources(root / f"sources_{split}.yaml", f"the {split} split of the VQA set", official)
        albef_source = {"name": f"vqa_json_{split}", "format": "vqa_json", "annotations": f"vqa_{split}.json",
                        "images": "."}  # fmt: skip
        _sources(root / f"sources_json_{split}.yaml", f"the {split} split of the VQA set, ALBEF's form", albef_source)
    num_questions = sum(len(questions) for questions, _, _ in files.values())
    return Written(num_questions, cfg.vqa_images + 5 * len(files))


def _sources(path: Path, what: str, source: dict) -> None:
    text = f"# Written by `copa synth`: {what}; paths relative to this folder.\n"
    path.write_text(text + yaml.safe_dump({"sources": [source]}, sort_keys=False))


# ------------------------------------------------------------------------------------------------------- refexp


@dataclass(frozen=True)
class Expression:
    """A referring expression and the one instance it names."""

    text: str
    referent: SceneObject


def _could_mean(obj: SceneObject, colour: str | None, side: str | None, width: int) -> bool:
    """Whether a reader could take `obj` for "the <colour> thing on the <side>": an object near the middle could be
    meant by either side."""
    obj_side = side_of(obj.box, width)
    return (colour is None or obj.colour == colour) and (side is None or obj_side in (side, "middle"))


def _phrase(category: str, colour: str | None, side: str | None) -> str:
    noun = CATEGORY_WORDS[category].singular[0]
    if category == "person":  # people are named by what they wear, as the captions do
        words = ["the person", *([f"in {colour}"] if colour else [])]
    else:
        words = ["the", *([colour] if colour else []), noun]
    return " ".join([*words, *([f"on the {side}"] if side else [])])


def _unique_expressions(scene: Scene) -> list[Expression]:
    """Every expression (colour, side, or both) that fits exactly one instance of the picture's repeated category."""
    drawn = Counter(o.category for o in scene.objects)
    instances = [o for o in scene.objects if drawn[o.category] > 1]
    out = []
    for target in instances:
        side = side_of(target.box, scene.width)
        forms = [(target.colour, None)] + ([(None, side), (target.colour, side)] if side != "middle" else [])
        for colour, where in forms:
            if not any(_could_mean(o, colour, where, scene.width) for o in instances if o is not target):
                out.append(Expression(_phrase(target.category, colour, where), target))
    return out


def refexp_scene(cfg: SynthConfig, k: int) -> Scene:
    """Refexp picture k: 2-3 instances of one category (people in testA, never in testB, either in train and val)
    covering 30-55% of the short side, at least one of them nameable uniquely, and 0-2 smaller other things."""
    rng = picture_rng(cfg, REFEXP_PICTURES + k, _PIXELS)
    size = _size(cfg, rng)
    background = sample_background(rng)
    split = REFEXP_SPLITS[k % len(REFEXP_SPLITS)]
    things = [c for c in DRAWN_CATEGORIES if c != "person"]
    people = split == "testA" or (split in ("train", "val") and rng.random() < 0.5)
    category = "person" if people else things[int(rng.integers(len(things)))]
    others = [c for c in DRAWN_CATEGORIES if c != category]
    for attempt in range(20):
        num = 3 if attempt < 10 and rng.random() < 0.4 else 2  # later attempts make room with fewer instances
        colours = [_COLOURS[int(i)] for i in rng.choice(len(_COLOURS), size=num, replace=False)]
        if rng.random() < 0.4:  # two look alike: only their sides tell them apart
            colours[-1] = colours[0]
        taken: list[Box] = []
        instances = [_place(rng, category, colour, (0.3, 0.55), size, taken) for colour in colours]
        if any(obj is None for obj in instances):
            continue
        objects = [obj for obj in instances if obj is not None]
        for c in rng.choice(len(others), size=int(rng.integers(0, 3)), replace=False):
            colour = _COLOURS[int(rng.integers(len(_COLOURS)))]
            distractor = _place(rng, others[int(c)], colour, (0.2, 0.4), size, taken)
            if distractor is not None:
                objects.append(distractor)
        scene = _scene(size, background, objects)
        if _unique_expressions(scene):
            return scene
    raise AssertionError(f"refexp picture {k}: no nameable instances after 20 attempts")  # not seen in practice


def refexp_expressions(cfg: SynthConfig, k: int, scene: Scene) -> list[Expression]:
    """1-3 distinct expressions for refexp picture k, naming as many different instances as they can."""
    rng = picture_rng(cfg, REFEXP_PICTURES + k, _TEXT)
    candidates = _unique_expressions(scene)
    num = min(int(rng.integers(1, 4)), len(candidates))
    seen: set[Box] = set()
    firsts, rest = [], []  # one expression per instance first, then more about the same ones
    for i in rng.permutation(len(candidates)):
        expression = candidates[int(i)]
        (rest if expression.referent.box in seen else firsts).append(expression)
        seen.add(expression.referent.box)
    return (firsts + rest)[:num]


def write_refexp(cfg: SynthConfig, tick: Tick) -> Written:
    """The refexp set (module docstring): one MDETR-style json per split, one image entry per expression."""
    root = cfg.out / "refexp"
    (root / "images").mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[list, list]] = {split: ([], []) for split in ("train", "val", "testA", "testB")}
    for k, image_id in enumerate(task_ids(cfg, "refexp")):
        scene = refexp_scene(cfg, k)
        file_name = f"COCO_synthtrain2014_{image_id:012d}.jpg"  # RefCOCO+ pictures all come from COCO train2014
        save_jpeg(render(scene), root / "images" / file_name, cfg.jpeg_quality)
        images, annotations = files[REFEXP_SPLITS[k % len(REFEXP_SPLITS)]]
        for expression in refexp_expressions(cfg, k, scene):
            ref_id, obj, span = len(images), expression.referent, [0, len(expression.text)]
            # tokens_positive_eval: the whole expression names the one box (MDETR's evaluation reads it)
            images.append({"file_name": file_name, "height": scene.height, "width": scene.width, "id": ref_id,
                           "original_id": image_id, "caption": expression.text, "dataset_name": "refcoco+",
                           "sentence_id": ref_id, "tokens_positive_eval": [[span]]})  # fmt: skip
            annotations.append({"area": float(obj.mask.sum()), "iscrowd": 0, "image_id": ref_id,
                                "category_id": CATEGORY_BY_NAME[obj.category].id, "id": ref_id,
                                "bbox": [float(v) for v in obj.box]})  # fmt: skip
        tick()
    categories = [{"supercategory": c.supercategory, "id": c.id, "name": c.name} for c in COCO_CATEGORIES]
    for split, (images, annotations) in files.items():
        name = f"finetune_refcoco+_{split}.json"
        dump(root / name, {"images": images, "annotations": annotations, "categories": categories})
        # source names are lower case: they prefix keys (refexp_testa-COCO_synthtrain2014_...)
        source = {"name": f"refexp_{split.lower()}", "format": "refexp", "annotations": name, "images": "images"}
        _sources(root / f"sources_{split}.yaml", f"the {split} split of the refexp set", source)
    return Written(sum(len(images) for images, _ in files.values()), cfg.refexp_images + 2 * len(files))
