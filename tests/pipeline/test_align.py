"""Caption-box alignment rules: word boundaries, plurals, synonyms, VG regions."""

import json
from pathlib import Path

import pytest

from pipeline.align import (
    CAPTION_MATCHER,
    COCO_MATCHER,
    COCO_SYNONYMS,
    align_by_labels,
    align_region,
    coco_categories_in,
    coco_category_of,
    coco_category_of_synsets,
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
        ("A man next to a bicycle", [("person", "man"), ("bicycle", "bicycle")]),
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
    assert coco_category_of("bicycles") == "bicycle"
    assert coco_category_of("bikes") is None  # a bicycle or a motorcycle: VG's synsets decide
    assert coco_category_of_synsets(("bicycle.n.01",)) == "bicycle"
    assert coco_category_of_synsets(("terrier.n.01", "tree.n.01")) == "dog"
    assert coco_category_of_synsets(("dog.n.01", "domestic_cat.n.01")) is None  # two categories: neither
    assert coco_category_of_synsets(("lion.n.01",)) is None  # a cat in WordNet, not a COCO cat
    assert coco_category_of("shirt") is None
    assert coco_category_of("man shirt") is None  # only whole names


def test_coco_categories_in_texts_and_box_labels():
    assert coco_categories_in("two men riding bikes past a carpet shop") == {"person"}
    assert coco_categories_in("two men riding bikes past a carpet shop", {"bicycle"}) == {"person", "bicycle"}
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


# --- the caption rules (CaptionMatcher), each against a hand judgement ---------------------------------------------


def _named(text, present):
    return sorted({m.label for m in CAPTION_MATCHER.find(text, present)} & set(present))


@pytest.mark.parametrize(
    ("text", "present", "expected"),
    [
        # hyponyms (WordNet closure) and people nouns
        ("a terrier asleep on the sofa", ["dog", "couch"], ["couch", "dog"]),
        ("a grizzly catching salmon", ["bear"], ["bear"]),
        ("an old schooner in the harbour", ["boat"], ["boat"]),
        ("a stallion in a paddock", ["horse"], ["horse"]),
        ("a nurse and a chef talking", ["person"], ["person"]),
        ("tourists watching the parade", ["person"], ["person"]),
        ("the audience claps", ["person"], ["person"]),
        # plurals, possessives, split words, misspellings
        ("two ponies grazing", ["horse"], ["horse"]),
        ("a dog's toy on the rug", ["dog"], ["dog"]),
        ("a large ele phant", ["elephant"], ["elephant"]),
        ("a giraffee by a tree", ["giraffe"], ["giraffe"]),
        ("a sandwhich on a plate", ["sandwich"], ["sandwich"]),
        ("a house on a hill", ["horse"], []),  # a real word one edit from "horse" is never mended
        ("snow covered skies", ["skis"], []),
        # nouns used as modifiers, and compounds that name the object
        ("people waiting at a bus stop", ["person", "bus"], ["person"]),
        ("the train tracks next to a road", ["train"], []),
        ("an empty pizza box", ["pizza"], []),
        ("a tennis court at night", ["sports ball", "tennis racket"], []),
        ("a tennis ball on a tennis court", ["sports ball"], ["sports ball"]),
        ("a baby elephant", ["person", "elephant"], ["elephant"]),
        ("a sign on the men's room door", ["person"], []),
        ("a man's hand on a table", ["person", "dining table"], ["dining table", "person"]),
        ("a stop sign and a teddy bear", ["stop sign", "teddy bear", "bear"], ["stop sign", "teddy bear"]),
        ("a dog runs across the yard", ["dog"], ["dog"]),  # "runs" is the dog's verb, not "dog runs"
        ("an orange cat", ["orange", "cat"], ["cat"]),
        # category words used as verbs
        ("a woman skis down a steep slope", ["person", "skis"], ["person"]),
        ("kids learning to ski", ["person", "skis"], ["person"]),
        ("a man's skis against a wall", ["person", "skis"], ["person", "skis"]),
        ("two pairs of skis", ["skis"], ["skis"]),
        # generic words: named only where the picture has exactly one category they can mean
        ("a man riding a bike", ["person", "bicycle"], ["bicycle", "person"]),
        ("a man riding a bike", ["person", "motorcycle"], ["motorcycle", "person"]),
        ("a man riding a bike", ["person", "bicycle", "motorcycle"], ["person"]),
        ("the display shows a game", ["tv", "remote"], ["tv"]),
        ("an animal in a field", ["cow", "sheep"], []),
    ],
)
def test_caption_rules(text, present, expected):
    assert _named(text, present) == expected


def test_generic_words_need_the_picture():
    assert [m.label for m in CAPTION_MATCHER.find("a bike")] == []
    assert [(m.label, m.word) for m in CAPTION_MATCHER.find("A Bike!", {"bicycle"})] == [("bicycle", "Bike")]


def test_offsets_point_at_the_words_as_written():
    text = "Two GIRAFFEE heads and an ele  phant."
    found = CAPTION_MATCHER.find(text, {"giraffe", "elephant"})
    assert [(m.label, m.word, text[m.start : m.end]) for m in found] == [
        ("giraffe", "GIRAFFEE", "GIRAFFEE"),
        ("elephant", "ele  phant", "ele  phant"),  # words written apart are joined across whitespace only
    ]
    assert CAPTION_MATCHER.find("an ele, phant", {"elephant"}) == []


def _labelled(name):
    path = Path(__file__).parent / "data" / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("name", ["align_captions.jsonl", "align_captions_heldout.jsonl"])
def test_the_team_caption_sets_score_098_precision_and_recall(name):
    """The team's hand-labelled captions (COCO style, every class of the alignment issue; the second set was written
    apart from the rules and scored once they were set): each caption's judged categories against the alignment's,
    over caption-category pairs."""
    rows = _labelled(name)
    assert len(rows) >= 300 and {r["class"] for r in rows} >= {
        "plain", "hyponym", "people", "plural_compound", "misspelling", "context", "modifier", "verb", "negative"
    }  # fmt: skip
    tp = fp = fn = 0
    for row in rows:
        relevant = align_by_labels([row["caption"]], row["annotated"])[0]["boxes"]
        found = {row["annotated"][i] for i in relevant}
        gold = set(row["refers"])
        tp, fp, fn = tp + len(found & gold), fp + len(found - gold), fn + len(gold - found)
    assert tp / (tp + fp) >= 0.98
    assert tp / (tp + fn) >= 0.98
