"""VQA v2 accuracy as the official evaluation computes it, and box grounding accuracy as RefCOCO evaluation does.

**VQA.** Written from the documented behaviour of ``vqaEval.py`` in the VQA API (GT-Vision-Lab/VQA).

- **Normalisation** (``normalize_answer``): newlines and tabs become spaces, the ends are stripped; punctuation marks
  are deleted or turned into spaces (``_punctuation``); a period not followed by a digit is deleted ("3.5" stays,
  "2." -> "2"); then lower case, number words "none".."ten" to digits, articles a/an/the dropped, apostrophe-less
  contractions restored ("dont" -> "don't").
- **One question** (``vqa_accuracy``): for each human answer, min(1, matches among the *other* answers / 3); the
  mean over the answers. With ten answers, one match gives 0.3, two 0.6, three 0.9, four or more 1.
- **The official quirk**: prediction and human answers are always stripped (newline, tab, outer spaces), but the
  rest of the normalisation is applied to either only when the stripped human answers are not all identical. Ten
  answers "2" and the prediction "Two" score 0 (exact, case-sensitive comparison); make one answer "3" and "Two"
  matches the nine others.
- **Aggregation** (``accuracy_by_type``): plain means, overall and per answer type, as fractions; the official
  report's "times 100, rounded to 2 places" is left to the caller.

**Grounding.** A predicted box is right when its IoU with the gold box is at least 0.5 (MDETR's RefCOCO evaluation).
Boxes are x0, y0, x1, y1 in any one unit, no "+1" on widths. ``best_fixed_box``: the baseline that answers every
expression with one box, the best of a candidate set.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

# The reference's contraction map, as written there: key:value pairs. Its capitalised keys ("Im", "Ive", ...) can
# never match, since the words are lower-cased first, and "somebody'd" maps to "somebodyd"; both are kept, because
# matching the reference is the point.
_CONTRACTION_PAIRS = """
aint:ain't arent:aren't cant:can't couldve:could've couldnt:couldn't couldn'tve:couldn't've couldnt've:couldn't've
didnt:didn't doesnt:doesn't dont:don't hadnt:hadn't hadnt've:hadn't've hadn'tve:hadn't've hasnt:hasn't
havent:haven't hed:he'd hed've:he'd've he'dve:he'd've hes:he's howd:how'd howll:how'll hows:how's Id've:I'd've
I'dve:I'd've Im:I'm Ive:I've isnt:isn't itd:it'd itd've:it'd've it'dve:it'd've itll:it'll let's:let's maam:ma'am
mightnt:mightn't mightnt've:mightn't've mightn'tve:mightn't've mightve:might've mustnt:mustn't mustve:must've
neednt:needn't notve:not've oclock:o'clock oughtnt:oughtn't ow's'at:'ow's'at 'ows'at:'ow's'at 'ow'sat:'ow's'at
shant:shan't shed've:she'd've she'dve:she'd've she's:she's shouldve:should've shouldnt:shouldn't
shouldnt've:shouldn't've shouldn'tve:shouldn't've somebody'd:somebodyd somebodyd've:somebody'd've
somebody'dve:somebody'd've somebodyll:somebody'll somebodys:somebody's someoned:someone'd someoned've:someone'd've
someone'dve:someone'd've someonell:someone'll someones:someone's somethingd:something'd somethingd've:something'd've
something'dve:something'd've somethingll:something'll thats:that's thered:there'd thered've:there'd've
there'dve:there'd've therere:there're theres:there's theyd:they'd theyd've:they'd've they'dve:they'd've
theyll:they'll theyre:they're theyve:they've twas:'twas wasnt:wasn't wed've:we'd've we'dve:we'd've weve:we've
werent:weren't whatll:what'll whatre:what're whats:what's whatve:what've whens:when's whered:where'd wheres:where's
whereve:where've whod:who'd whod've:who'd've who'dve:who'd've wholl:who'll whos:who's whove:who've whyll:why'll
whyre:why're whys:why's wont:won't wouldve:would've wouldnt:wouldn't wouldnt've:wouldn't've wouldn'tve:wouldn't've
yall:y'all yall'll:y'all'll y'allll:y'all'll yall'd've:y'all'd've y'alld've:y'all'd've y'all'dve:y'all'd've
youd:you'd youd've:you'd've you'dve:you'd've youll:you'll youre:you're youve:you've
"""
_CONTRACTIONS = dict(pair.split(":") for pair in _CONTRACTION_PAIRS.split())
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6"}
_NUMBERS |= {"seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = frozenset({"a", "an", "the"})
_PUNCT = ';/[]"{}()=+\\_-><@`,?!'  # no period (below), apostrophe, colon, '#', '$', '%', '&' or '*'
_DIGIT_COMMA = re.compile(r"\d,\d")
# The reference writes "(?!<=\d)", meant as a look-behind; as written it is a look-ahead that always passes, so the
# rule is only "delete a period not followed by a digit", wherever it stands (".5" keeps its period too).
_PERIOD = re.compile(r"\.(?!\d)")


def _strip(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def _punctuation(text: str) -> str:
    """The reference's rule, per mark and decided on the whole input: a mark that touches a space anywhere, or any
    mark at all once the text holds a digit-comma-digit, is deleted everywhere; otherwise it becomes a space
    everywhere. So "1,000" -> "1000", "red,blue" -> "red blue", "t-shirt" -> "t shirt" but "t-shirt - red" ->
    "tshirt  red"."""
    delete_all = _DIGIT_COMMA.search(text) is not None
    out = text
    for mark in _PUNCT:
        out = out.replace(mark, "" if delete_all or mark + " " in text or " " + mark in text else " ")
    # The reference passes re.UNICODE (32) where sub() takes its count: only the first 32 periods go.
    return _PERIOD.sub("", out, count=32)


def _digit_article(text: str) -> str:
    words = [_NUMBERS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def normalize_answer(text: str) -> str:
    """An answer as the reference compares it when the human answers differ: "The dog." -> "dog", "Two" -> "2"."""
    return _digit_article(_punctuation(_strip(text)))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """The official accuracy of one predicted answer against the human answers (usually ten), in [0, 1]."""
    if not answers:
        raise ValueError("a question needs at least one human answer")
    prediction, answers = _strip(prediction), [_strip(a) for a in answers]
    if len(set(answers)) > 1:  # the quirk: no normalisation at all when the humans agree verbatim
        prediction = _digit_article(_punctuation(prediction))
        answers = [_digit_article(_punctuation(a)) for a in answers]
    hits = [a == prediction for a in answers]
    total = sum(hits)
    # Leaving answer i out leaves total - hits[i] matches. Summing min(3, k) as integers and dividing once gives the
    # correctly rounded mean; the reference's float sum can differ from it in the last bit.
    return sum(min(3, total - hit) for hit in hits) / (3 * len(hits))


def accuracy_by_type(records: Iterable[tuple[str, Sequence[str], str]]) -> dict:
    """Mean accuracy of (prediction, answers, answer_type) records: {"overall", "per_type", "count"}.

    An unknown answer type ("") counts in "overall" only. Fractions in [0, 1], unrounded.
    """
    scores: dict[str, list[float]] = {}
    every: list[float] = []
    for prediction, answers, answer_type in records:
        every.append(vqa_accuracy(prediction, answers))
        if answer_type:
            scores.setdefault(answer_type, []).append(every[-1])
    if not every:
        raise ValueError("no records to score")
    return {
        "overall": sum(every) / len(every),
        "per_type": {t: sum(s) / len(s) for t, s in scores.items()},
        "count": {t: len(s) for t, s in scores.items()},
    }


def _most_common(counts: Counter) -> str:
    return min(counts, key=lambda answer: (-counts[answer], answer))  # ties: alphabetically first


def majority_answers(train_records: Iterable[tuple[Sequence[str], str]]) -> dict[str, str]:
    """The most frequent normalised human answer per answer type, from (answers, answer_type) records.

    Every human answer counts once; "" (unknown type) is a group of its own, the only one for sources without types.
    """
    counts: dict[str, Counter] = {}
    for answers, answer_type in train_records:
        counts.setdefault(answer_type, Counter()).update(normalize_answer(a) for a in answers)
    return {t: _most_common(c) for t, c in counts.items() if c}


def majority_baseline(
    train_records: Iterable[tuple[Sequence[str], str]], eval_records: Iterable[tuple[Sequence[str], str]]
) -> dict:
    """``accuracy_by_type`` of answering every question with its type's majority answer from the training records.

    A type never seen in training gets the majority answer over all training answers.
    """
    train_records = list(train_records)
    per_type = majority_answers(train_records)
    overall = majority_answers((answers, "") for answers, _ in train_records).get("", "")
    return accuracy_by_type((per_type.get(t, overall), answers, t) for answers, t in eval_records)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes [..., 4] (x0, y0, x1, y1), elementwise with broadcasting; 0 where both boxes are empty."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _check_boxes(boxes: np.ndarray, name: str) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) == 0:
        raise ValueError(f"{name} must be a non-empty [N, 4] array of boxes, got shape {boxes.shape}")
    return boxes


def grounding_accuracy(pred: np.ndarray, gold: np.ndarray, threshold: float = 0.5) -> float:
    """The fraction of predicted boxes [N, 4] whose IoU with their gold box [N, 4] is at least ``threshold``."""
    pred, gold = _check_boxes(pred, "pred"), _check_boxes(gold, "gold")
    if pred.shape != gold.shape:
        raise ValueError(f"{len(pred)} predicted boxes for {len(gold)} gold boxes")
    return float(np.mean(box_iou(pred, gold) >= threshold))


def best_fixed_box(candidates: np.ndarray, gold: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, float]:
    """The candidate box [K, 4] that, given as the answer to every expression, scores the highest grounding accuracy
    on the gold boxes [N, 4]; ties go to the first candidate. Returns (box [4], accuracy)."""
    candidates, gold = _check_boxes(candidates, "candidates"), _check_boxes(gold, "gold")
    hits = np.empty(len(candidates), dtype=np.int64)
    step = max(1, 2**22 // len(gold))  # candidates per block: a few [step, N] float arrays of 32 MB at most
    for start in range(0, len(candidates), step):
        iou = box_iou(candidates[start : start + step, None, :], gold[None, :, :])
        hits[start : start + step] = (iou >= threshold).sum(axis=1)
    best = int(np.argmax(hits))
    return candidates[best].copy(), float(hits[best] / len(gold))
