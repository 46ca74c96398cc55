"""BLEU, ROUGE-L and CIDEr-D equal the COCO caption evaluation's own code (``pycocoevalcap``) on hand-made captions,
and BLEU-1 equals a count by hand."""

from __future__ import annotations

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from model import caption_metrics as M

REFS = {
    1: ["a man riding a horse on a beach", "a person rides a brown horse", "a man on a horse near the sea",
        "a rider and his horse on the sand", "a horse with a man on its back"],
    2: ["two dogs play in the grass", "dogs playing on a lawn", "two brown dogs running in a field",
        "a pair of dogs play outside", "two puppies on green grass"],
    3: ["a red bus on a city street", "a bus driving down the road", "a double decker bus in traffic",
        "a large red bus parked by the curb", "a city bus on a street"],
    4: ["a plate of food with broccoli", "broccoli and rice on a plate", "a meal of chicken and broccoli",
        "a white plate with vegetables", "food on a plate on a table"],
}  # fmt: skip
HYPS = {
    1: "a man riding a horse on the beach",
    2: "a dog a dog a dog in the grass",  # repeated words: counts clipped
    3: "a bus",  # short: the brevity penalty, and the length penalty of CIDEr-D
    4: "a plate of food with broccoli",  # one reference word for word
}


def _reference(refs: dict, hyps: dict) -> dict[str, float]:
    gts, res = {k: list(v) for k, v in refs.items()}, {k: [v] for k, v in hyps.items()}
    bleus = Bleu(4).compute_score(gts, res, verbose=0)[0]
    scores = {f"BLEU-{k}": value for k, value in enumerate(bleus, 1)}
    return scores | {"ROUGE-L": Rouge().compute_score(gts, res)[0], "CIDEr-D": Cider().compute_score(gts, res)[0]}


@pytest.mark.parametrize("images", [[1], [1, 2], [1, 2, 3, 4], [3, 4]])
def test_scores_equal_the_reference_implementation(images):
    refs = {i: [M.tokenize(r) for r in REFS[i]] for i in images}
    hyps = {i: M.tokenize(HYPS[i]) for i in images}
    ours = {f"BLEU-{k}": value for k, value in enumerate(M.bleu(refs, hyps), 1)}
    ours |= {"ROUGE-L": M.rouge_l(refs, hyps), "CIDEr-D": M.cider_d(refs, hyps)}
    assert ours == pytest.approx(_reference(refs, hyps), rel=1e-12)
    assert all(ours[name] > 0 for name in ("BLEU-1", "ROUGE-L"))


def test_caption_scores_tokenize_and_name_every_metric():
    refs = {i: REFS[i] for i in (1, 2, 3, 4)}
    hyps = {i: HYPS[i].upper() + "." for i in (1, 2, 3, 4)}
    scores = M.caption_scores(refs, hyps)
    assert list(scores) == ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"]
    tokenized = {i: [M.tokenize(r) for r in captions] for i, captions in refs.items()}
    assert scores == pytest.approx(_reference(tokenized, {i: M.tokenize(h) for i, h in hyps.items()}), rel=1e-12)
    assert scores["CIDEr-D"] > 1.0  # one candidate is a reference word for word


def test_bleu_1_by_hand():
    # "a a a" against "a b": one clipped match of three words; the candidate is longer, so no brevity penalty
    assert M.bleu({0: ["a b"]}, {0: "a a a"}, n=1)[0] == pytest.approx(1 / 3, rel=1e-9)
    # "a" against "a b c d": precision 1, brevity penalty exp(1 - 4/1)
    assert M.bleu({0: ["a b c d"]}, {0: "a"}, n=1)[0] == pytest.approx(2.718281828 ** (1 - 4), rel=1e-6)


def test_tokenize_lowercases_drops_punctuation_and_splits_possessives():
    assert M.tokenize("A Man's HAT, on (the) table!") == "a man 's hat on the table"


def test_mismatched_images_are_an_error():
    with pytest.raises(ValueError, match="same"):
        M.bleu({1: ["a b"]}, {2: "a b"})
    with pytest.raises(ValueError, match="at least one reference"):
        M.rouge_l({1: []}, {1: "a b"})
