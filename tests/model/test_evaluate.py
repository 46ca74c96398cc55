"""Evaluation figures that need no model: retrieval ranks and the caption naming score."""

import numpy as np
import pytest

from model.evaluate import naming_scores, recall_at, retrieval_ranks

WORDS = {"kite": "kite", "kites": "kite", "men": "person", "man": "person", "bike": "bicycle"}


def namer(text: str) -> set[str]:
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
