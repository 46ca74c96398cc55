"""VQA accuracy, answer normalisation and grounding accuracy on hand-computed cases; box IoU against torchvision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou as tv_box_iou

from model import vqa_metrics as M


@pytest.mark.parametrize(
    ("matches", "expected"),
    [
        (0, 0.0),
        (1, 0.3),  # 9 subsets keep the match: 1/3 each; the one that drops it: 0. (9/3 + 0) / 10
        (2, 0.6),  # 2 subsets drop a match: 1/3; 8 keep both: 2/3. (2/3 + 16/3) / 10
        (3, 0.9),  # 3 subsets drop one: 2/3; 7 keep all three: 1. (6/3 + 7) / 10
        (4, 1.0),  # every subset keeps at least 3
        (10, 1.0),
    ],
)
def test_accuracy_averages_over_the_ten_leave_one_out_subsets(matches, expected):
    answers = ["2"] * matches + ["3"] * (10 - matches)
    assert M.vqa_accuracy("2", answers) == expected


def test_accuracy_with_fewer_answers_than_ten():
    # 3 answers, 1 match: the 2 subsets that keep it score 1/3, the one that drops it 0 -> (2/3) / 3
    assert M.vqa_accuracy("cat", ["cat", "dog", "bird"]) == pytest.approx(2 / 9, abs=1e-15)
    assert M.vqa_accuracy("cat", ["cat"]) == 0.0  # the only answer is never among the "others"


def test_normalisation_only_when_the_human_answers_differ():
    assert M.vqa_accuracy("Two", ["2"] * 10) == 0.0  # all identical: compared verbatim
    assert M.vqa_accuracy("2", ["2"] * 10) == 1.0
    assert M.vqa_accuracy("yes", ["Yes"] * 10) == 0.0  # ... so case-sensitively too
    assert M.vqa_accuracy("Two", ["2"] * 9 + ["3"]) == 1.0  # they differ: "Two" -> "2" matches nine
    assert M.vqa_accuracy("Two", ["two"] * 9 + ["3"]) == 1.0  # the answers are normalised as well
    assert M.vqa_accuracy("yes!", ["yes"] * 10) == 0.0
    assert M.vqa_accuracy("yes!", ["yes"] * 9 + ["no"]) == 1.0


def test_outer_whitespace_is_always_stripped():
    assert M.vqa_accuracy("2\n", ["2"] * 10) == 1.0
    assert M.vqa_accuracy(" \t2 ", ["2"] * 10) == 1.0
    # identical once stripped, so still no normalisation: "Two" stays "Two"
    assert M.vqa_accuracy("Two", ["2 "] * 5 + ["2"] * 5) == 0.0
    # an inner newline is a space: "two\ndogs" -> "2 dogs"
    assert M.vqa_accuracy("two\ndogs", ["2 dogs"] * 9 + ["3 dogs"]) == 1.0


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("the dog.", "dog"),
        ("yes!", "yes"),
        ("Yes", "yes"),
        ("1,000", "1000"),  # a digit-comma-digit anywhere: every mark is deleted, not spaced
        ("1000", "1000"),
        ("red,blue", "red blue"),  # otherwise a mark with no space beside it becomes a space
        ("red, blue", "red blue"),  # and a mark touching a space is deleted
        ("t-shirt", "t shirt"),
        ("t-shirt - red", "tshirt red"),  # decided for the whole text: " - " makes every "-" go
        ("3.5", "3.5"),  # a period before a digit stays
        ("2.", "2"),
        ("a.m.", "am"),
        ("don't", "don't"),  # apostrophes are not punctuation here
        ("dont", "don't"),
        ("isnt", "isn't"),
        ("none", "0"),
        ("Ten", "10"),
        ("a man's hat", "man's hat"),
        ("an apple and the pear", "apple and pear"),
        ("what time?\n", "what time"),
        ("  two\tdogs ", "2 dogs"),
        ("", ""),
    ],
)
def test_normalize_answer(raw, normalised):
    assert M.normalize_answer(raw) == normalised


def test_no_answers_is_an_error():
    with pytest.raises(ValueError, match="human answer"):
        M.vqa_accuracy("yes", [])


def test_accuracy_by_type_by_hand():
    records = [
        ("yes", ["yes"] * 10, "yes/no"),  # 1
        ("no", ["yes"] * 10, "yes/no"),  # 0
        ("2", ["2"] * 3 + ["3"] * 7, "number"),  # 0.9
        ("red", ["red"] + ["blue"] * 9, ""),  # 0.3, unknown type: overall only
    ]
    result = M.accuracy_by_type(records)
    assert result["overall"] == pytest.approx((1 + 0 + 0.9 + 0.3) / 4)
    assert result["per_type"] == pytest.approx({"yes/no": 0.5, "number": 0.9})
    assert result["count"] == {"yes/no": 2, "number": 1}
    with pytest.raises(ValueError, match="no records"):
        M.accuracy_by_type([])


def test_majority_answers_count_normalised_answers_and_break_ties_alphabetically():
    train = [
        (["Yes", "yes", "yes!"], "yes/no"),  # "yes" x3
        (["no", "no"], "yes/no"),
        (["two", "2", "3"], "number"),  # "2" x2
        (["3", "4"], "number"),  # "3" x2: a tie with "2", which sorts first
        (["blue", "red"], "other"),  # a tie: "blue"
        (["the cat", "cat", "dog"], ""),
    ]
    assert M.majority_answers(train) == {"yes/no": "yes", "number": "2", "other": "blue", "": "cat"}


def test_majority_baseline_by_hand():
    train = [(["yes"] * 3, "yes/no"), (["no"] * 2, "yes/no"), (["2"] * 2, "number"), (["3"], "number")]
    evaluation = [
        (["yes"] * 10, "yes/no"),  # predicts "yes": 1
        (["no"] * 10, "yes/no"),  # 0
        (["2"] * 2 + ["5"] * 8, "number"),  # predicts "2", 2 matches: 0.6
        (["yes"] + ["red"] * 9, "other"),  # unseen type: the majority of all answers, "yes": 0.3
    ]
    result = M.majority_baseline(train, evaluation)
    assert result["per_type"] == pytest.approx({"yes/no": 0.5, "number": 0.6, "other": 0.3})
    assert result["overall"] == pytest.approx((1 + 0 + 0.6 + 0.3) / 4)


def test_box_iou_by_hand():
    a = np.array([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 4, 4], [0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1]])
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [1, 1, 3, 3], [2, 2, 3, 3], [1, 0, 2, 1], [1, 1, 1, 1]])
    # overlap 1 of union 4 + 4 - 1; identical; contained 4 of 16; apart; sharing only an edge; both empty
    np.testing.assert_allclose(M.box_iou(a, b), [1 / 7, 1, 0.25, 0, 0, 0])


def test_box_iou_matches_torchvision_on_random_boxes():
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 100, size=(2, 50, 2, 2))
    boxes = np.concatenate([corners.min(axis=2), corners.max(axis=2)], axis=-1)  # [2, 50, 4], x0 < x1, y0 < y1
    a, b = boxes
    expected = tv_box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()  # [50, 50] pairwise
    np.testing.assert_allclose(M.box_iou(a[:, None], b[None]), expected, rtol=1e-12)
    np.testing.assert_allclose(M.box_iou(a, b), np.diag(expected), rtol=1e-12)
    assert (expected > 0).sum() > 100  # the test compares overlapping boxes, not only zeros


def test_grounding_accuracy_counts_iou_of_exactly_the_threshold():
    pred = np.array([[0, 0, 2, 1], [0, 0, 10, 10], [0, 0, 2, 2], [5, 5, 6, 6]])
    gold = np.array([[0, 0, 1, 1], [0, 0, 10, 10], [1, 1, 3, 3], [0, 0, 1, 1]])
    # IoUs: 0.5 exactly, 1, 1/7, 0
    assert M.grounding_accuracy(pred, gold) == 0.5
    assert M.grounding_accuracy(pred, gold, threshold=0.5 + 1e-9) == 0.25
    assert M.grounding_accuracy(pred, gold, threshold=0.1) == 0.75
    with pytest.raises(ValueError, match="3 predicted boxes for 4"):
        M.grounding_accuracy(pred[:3], gold)
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        M.grounding_accuracy(pred[:, :3], gold[:, :3])


def test_best_fixed_box_by_hand():
    gold = np.array([[0, 0, 10, 10], [0, 0, 10, 12], [1, 1, 10, 10], [50, 50, 60, 60]])
    candidates = np.array([[50, 50, 60, 60], [0, 0, 10, 10], [0, 0, 10, 11], [100, 100, 101, 101]])
    box, accuracy = M.best_fixed_box(candidates, gold)
    # [0, 0, 10, 10] has IoU 1, 100/120, 81/100 with the first three golds; [0, 0, 10, 11] scores as many, later
    np.testing.assert_array_equal(box, [0, 0, 10, 10])
    assert accuracy == 0.75
    box, accuracy = M.best_fixed_box(candidates[[0, 3]], gold)
    np.testing.assert_array_equal(box, [50, 50, 60, 60])
    assert accuracy == 0.25


def test_best_fixed_box_on_thousands_of_boxes_matches_torchvision():
    rng = np.random.default_rng(1)
    # centred boxes of varied size, so many candidates overlap many golds by IoU >= 0.5
    centre, size = rng.normal(50, 5, size=(2, 3000, 2)), rng.uniform(20, 40, size=(2, 3000, 2))
    candidates, gold = np.concatenate([centre - size / 2, centre + size / 2], axis=-1)
    box, accuracy = M.best_fixed_box(candidates, gold)
    hits = (tv_box_iou(torch.from_numpy(candidates), torch.from_numpy(gold)) >= 0.5).sum(dim=1)
    best = int(torch.argmax(hits))  # torch returns the first maximum too
    np.testing.assert_array_equal(box, candidates[best])
    assert accuracy == hits[best].item() / len(gold)
    assert 0.2 < accuracy < 1
    assert M.grounding_accuracy(np.broadcast_to(box, gold.shape), gold) == accuracy
