"""Caption-box alignment rules: word boundaries, plurals, synonyms, VG regions."""

import pytest

from pipeline.align import (
    COCO_MATCHER,
    COCO_SYNONYMS,
    align_by_labels,
    align_region,
    coco_categories_in,
    coco_category_of,
    inside_fraction,
    object_matcher,
    plural,
)
from pipeline.coco_categories import COCO_CATEGORIES


def _labels(text):
    return [(m.label, m.word) for m in COCO_MATCHER.find(text)]


def test_table_covers_the_80_categories():
    assert set(COCO_SYNONYMS) == {name for _, name, _ in COCO_CATEGORIES}
    assert len(COCO_SYNONYMS) == 80


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A man next to a bike", [("person", "man"), ("bicycle", "bike")]),
        ("two red balls", [("sports ball", "balls")]),
        ("Several PEOPLE and their dogs", [("person", "PEOPLE"), ("dog", "dogs")]),
        ("a bus and three buses", [("bus", "bus"), ("bus", "buses")]),
        ("knives on a table", [("knife", "knives"), ("dining table", "table")]),
        ("a stop sign", [("stop sign", "stop sign")]),  # the phrase, not "sign" alone as well
        ("hot dogs on a plate", [("hot dog", "hot dogs")]),
        ("a teddy bear", [("teddy bear", "teddy bear")]),
        ("a TV screen", [("tv", "TV screen")]),
        ("a cat, a dog.", [("cat", "cat"), ("dog", "dog")]),
    ],
)
def test_names_synonyms_and_plurals(text, expected):
    assert _labels(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "cattle-free carpet",
        "a catalog",
        "a scarf",
        "the bedroom cupboard",
        "a busy carton",
        "cars'",
        "bussed",
        "cathedral",
    ],
)
def test_words_that_merely_contain_a_name_do_not_match(text):
    # "cattle" alone names cows (a synonym), but inside "cattle-free" it is part of a longer word
    assert [m for m in _labels(text) if m[0] in ("car", "cat", "bed", "cup", "bus")] == []


def test_cattle_is_not_cat():
    assert _labels("cattle grazing") == [("cow", "cattle")]


def test_plural_rules():
    assert [plural(w) for w in ("box", "baby", "toy", "person", "sports ball", "mouse", "sheep")] == [
        "boxes", "babies", "toys", "people", "sports balls", "mice", "sheep",
    ]  # fmt: skip


def test_align_by_labels_records_boxes_and_words():
    relevant = align_by_labels(
        ["a man riding a bike", "a sunny day", "two men"], ["person", "bicycle", "person", "car"]
    )
    assert relevant == [
        {"boxes": [0, 1, 2], "words": ["man", "bike"]},
        {"boxes": [], "words": []},
        {"boxes": [0, 2], "words": ["men"]},
    ]


def test_coco_category_of_object_names():
    assert coco_category_of("man") == "person"
    assert coco_category_of("bikes") == "bicycle"
    assert coco_category_of("shirt") is None
    assert coco_category_of("man shirt") is None  # only whole names


def test_coco_categories_in_texts_and_box_labels():
    assert coco_categories_in("two men riding bikes past a carpet shop") == {"person", "bicycle"}
    assert coco_categories_in("sports ball") == {"sports ball"}
    assert coco_categories_in("a scarf on a hook") == set()


def test_inside_fraction():
    assert inside_fraction([0, 0, 10, 10], [0, 0, 5, 10]) == 0.5
    assert inside_fraction([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0
    assert inside_fraction([0, 0, 0, 10], [0, 0, 5, 10]) == 0.0


def test_align_region_own_box_plus_named_objects_inside():
    boxes = [[0, 0, 100, 100], [10, 10, 40, 40], [90, 90, 200, 200], [50, 50, 60, 60]]
    names = {1: "man", 2: "bike", 3: "shirt"}
    matcher = object_matcher(names.values())
    rel = align_region("a guy next to a bike wearing a shirt", 0, boxes, names, matcher)
    # "guy" names the person-named object via the COCO synonyms; the bike lies mostly outside the region
    assert rel == {"boxes": [0, 1, 3], "words": ["guy", "shirt"]}
    assert align_region("nothing named here", 0, boxes, names, matcher) == {"boxes": [0], "words": []}
