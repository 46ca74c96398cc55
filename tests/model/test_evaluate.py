"""Evaluation figures against hand counts: retrieval ranks, the caption naming score, detector precision/recall,
caption metrics beside a constant caption."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from model import caption_metrics as M
from model.evaluate import (
    EvalSet,
    caption_metric_scores,
    detector_scores,
    mean_recall,
    naming_scores,
    recall_at,
    retrieval_ranks,
)

WORDS = {"kite": "kite", "kites": "kite", "men": "person", "man": "person", "bike": "bicycle"}


def namer(text: str, present=None) -> set[str]:
    return {WORDS[w] for w in text.lower().split() if w in WORDS}


def test_naming_scores_precision_and_chance():
    generated = ["a red kite", "two men and a bike", "nothing here"]
    box_labels = [["kite"], ["kite", "kite"], ["man"]]
    s = naming_scores(generated, box_labels, namer)
    # named: {kite}, {person, bicycle}, {}; present: {kite}, {kite}, {person}
    assert s["named_objects"] == 3 and s["images"] == 3 and s["distinct_captions"] == 3
    assert s["precision"] == pytest.approx(1 / 3)  # only the kite of picture 0 is right
    assert s["images_named_right"] == pytest.approx(1 / 3)
    # against the other pictures: kite is in 1 of 2 others, person in 1 of 2, bicycle in none -> 2 of 6
    assert s["chance_precision"] == pytest.approx(2 / 6)


def test_naming_scores_a_caption_that_fits_every_picture_is_only_at_chance():
    box_labels = [["kite"], ["kite", "man"], ["kite"], ["bike"]]
    s = naming_scores(["a kite"] * 4, box_labels, namer)
    assert s["precision"] == pytest.approx(3 / 4)
    assert s["chance_precision"] == pytest.approx(s["precision"])  # the same caption everywhere: no better
    assert s["distinct_captions"] == 1


def test_retrieval_ranks_find_the_first_right_answer():
    sim_CI = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.8], [0.1, 0.7, 0.2], [0.5, 0.4, 0.3]])
    t2i, i2t = retrieval_ranks(sim_CI, np.array([0, 1, 1, 2]))
    assert t2i.tolist() == [0, 1, 0, 2]
    assert i2t.tolist() == [0, 0, 1]  # image 2: caption 1 (another image's) first, its own caption 3 second
    assert recall_at(np.array([0, 1, 5]), (1, 2)) == {"R@1": 1 / 3, "R@2": 2 / 3}
    # t2i ranks [0, 1, 0, 2]: R@1 2/4, R@5 and R@10 1; i2t [0, 0, 1]: R@1 2/3, R@5 and R@10 1
    assert mean_recall(t2i, i2t) == pytest.approx((2 / 4 + 1 + 1 + 2 / 3 + 1 + 1) / 6)


def test_recall_with_five_captions_per_image_matches_a_hand_count():
    # 2 images, 5 captions each (captions 0-4 of image 0, 5-9 of image 1), as in the COCO and Flickr test protocol
    owner = np.repeat([0, 1], 5)
    sim_CI = np.zeros((10, 2))
    sim_CI[:, 0] = [0.9, 0.2, 0.8, 0.1, 0.7, 0.6, 0.3, 0.5, 0.95, 0.1]
    sim_CI[:, 1] = [0.1, 0.3, 0.2, 0.4, 0.1, 0.2, 0.9, 0.1, 0.2, 0.3]
    t2i, i2t = retrieval_ranks(sim_CI, owner)
    # text->image: each caption's own image first? 0: .9>.1 yes; 1: .2<.3 no; 2 yes; 3 no; 4 yes;
    # 5: .6>.2 image 0 first, own image 1 second; 6 yes; 7: .5>.1 no; 8: no; 9: .1<.3 yes
    assert t2i.tolist() == [0, 1, 0, 1, 0, 1, 0, 1, 1, 0]
    # image->text: image 0's best caption is 8 (0.95, image 1's), then 0 (its own): rank 1; image 1's best is 6: rank 0
    assert i2t.tolist() == [1, 0]
    assert recall_at(t2i) == {"R@1": 0.5, "R@5": 1.0, "R@10": 1.0}
    assert recall_at(i2t) == {"R@1": 0.5, "R@5": 1.0, "R@10": 1.0}


class _FixedDetector:
    """Stands in for COPA in ``detector_scores``: keeps the patches listed per caption, whatever the image."""

    def __init__(self, kept: list[list[int]]) -> None:
        self.kept = torch.tensor(kept)
        self.cfg = SimpleNamespace(vision=SimpleNamespace(detect_layers=(2,)))
        self.calls = []

    def set_detection(self, layers, keep_ratios):
        self.calls.append((layers, keep_ratios))

    def detect(self, image, ids, mask):
        rows = ids[:, 0]  # the stand-in tokenizer puts the caption's index first
        return SimpleNamespace(kept_idx=[self.kept[rows]])


def test_detector_scores_match_a_hand_count():
    # 2 x 2 grids (4 patches). Caption 0: positives {0, 1}, kept {0, 2}. Caption 1: positives {3}, kept {3, 1}.
    # Caption 2 has no label and must not count.
    coverage = np.zeros((3, 2, 2), dtype=np.uint8)
    coverage[0, 0, 0], coverage[0, 0, 1], coverage[1, 1, 1] = 255, 10, 200
    data = EvalSet(
        keys=["a"], images=torch.zeros(1, 4, 4, 3, dtype=torch.uint8), jpegs=[b""], captions=["x", "y", "z"],
        caption_image=[0, 0, 0], words=[[], [], []], coverage=coverage, labelled=np.array([True, True, False]),
        box_labels=[[]], boxes=np.full((3, 4), np.nan),
    )  # fmt: skip
    model = _FixedDetector([[0, 2], [1, 3], [0, 1]])

    def tokenizer(captions):
        index = torch.tensor([["x", "y", "z"].index(c) for c in captions])[:, None]
        return {"input_ids": index, "attention_mask": torch.ones_like(index)}

    scores = detector_scores(model, data, tokenizer, keep_ratio=0.5, tau=0.0, batch_size=1, device="cpu")
    # hits: caption 0 keeps patch 0 of {0, 1}; caption 1 keeps 3 of {3}: 2 hits, 4 kept, 3 positives
    assert scores["pairs"] == 2
    assert scores["precision"] == pytest.approx(2 / 4) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["all_positives_kept"] == pytest.approx(1 / 2)  # caption 1 kept all of its positives
    assert scores["chance_precision"] == pytest.approx(3 / 8) and scores["chance_recall"] == pytest.approx(4 / 8)
    assert model.calls == [((2,), (0.5,))]
    # tau 0.1 (coverage > 25.5): patch 1 of caption 0 (coverage 10) is no longer positive
    strict = detector_scores(model, data, tokenizer, keep_ratio=0.5, tau=0.1, batch_size=2, device="cpu")
    assert strict["recall"] == pytest.approx(2 / 2) and strict["precision"] == pytest.approx(2 / 4)


def test_caption_metrics_beside_a_constant_caption():
    captioned = [
        {"key": "a", "generated": "a red ball on the grass", "references": ["a red ball on the grass", "a ball"]},
        {"key": "b", "generated": "a blue kite in the sky", "references": ["a blue kite in the sky", "a ball"]},
        {"key": "c", "generated": "a man with a bike", "references": ["a man riding a bike", "a ball"]},
    ]
    scores = caption_metric_scores(captioned)
    assert scores["constant_caption"] == "a ball"  # the set's most frequent reference
    refs = {c["key"]: [M.tokenize(r) for r in c["references"]] for c in captioned}
    assert scores["scores"]["CIDEr-D"] == pytest.approx(M.cider_d(refs, {c["key"]: c["generated"] for c in captioned}))
    assert scores["constant_caption_scores"]["CIDEr-D"] == pytest.approx(M.cider_d(refs, dict.fromkeys(refs, "a ball")))
    assert scores["scores"]["CIDEr-D"] > scores["constant_caption_scores"]["CIDEr-D"]
