"""Caption and region-phrase grammar for the synthetic corpus, with the ground truth of what each text mentions.

Captions name *some* of a picture's objects by category name, synonym or plural, with colour and position words
("a red ball on the left", "two blue kites", "a man in green next to a bike"). Some texts mention nothing drawn
and contain distractor words that merely contain a category name ("carpet" holds "car", "cattle" holds "cat"),
so word-boundary matching has something to get wrong. Every text comes with `Mention`s: which word names which
annotated things, so later alignment code can be tested against the truth.

The scaffolding words of the templates (picture, next, left, background, ...) never equal a COCO category name
or one of the synonyms below, so the only category words in a text are the intended mentions and the
deliberate distractors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.synth.draw import Box


@dataclass(frozen=True)
class Words:
    """How captions may name one category."""

    singular: tuple[str, ...]  # first entry is the plain name
    plural: tuple[str, ...]
    synset: str  # WordNet synset that VG objects of this category carry


CATEGORY_WORDS: dict[str, Words] = {
    "person": Words(
        ("person", "man", "woman", "boy", "girl", "player"),
        ("people", "men", "women", "boys", "girls", "players"),
        "person.n.01",
    ),
    "bicycle": Words(("bicycle", "bike"), ("bicycles", "bikes"), "bicycle.n.01"),
    "car": Words(("car",), ("cars",), "car.n.01"),
    "stop sign": Words(("stop sign", "sign"), ("stop signs", "signs"), "street_sign.n.01"),
    "umbrella": Words(("umbrella", "parasol"), ("umbrellas", "parasols"), "umbrella.n.01"),
    "frisbee": Words(("frisbee", "disc"), ("frisbees", "discs"), "frisbee.n.01"),
    "sports ball": Words(("ball", "sports ball"), ("balls",), "ball.n.01"),
    "kite": Words(("kite",), ("kites",), "kite.n.03"),
    "pizza": Words(("pizza", "pizza slice"), ("pizzas", "pizza slices"), "pizza.n.01"),
    "donut": Words(("donut", "doughnut"), ("donuts", "doughnuts"), "doughnut.n.02"),
    "tv": Words(("tv", "television", "monitor"), ("tvs", "televisions", "monitors"), "television_receiver.n.01"),
    "clock": Words(("clock",), ("clocks",), "clock.n.01"),
}

# Words that contain a category name (car, cat, cup, bed, bus) without being one.
DISTRACTOR_WORDS = ("carpet", "cattle", "scarf", "catalog", "cupboard", "bedroom", "busy", "carton")
DISTRACTOR_CAPTIONS = (
    "a picture of something on a carpet",
    "cattle grazing far away",
    "an old catalog lying open",
    "a woolly scarf hanging on a hook",
    "a cupboard in a quiet bedroom",
    "a busy pattern of colours",
    "an empty carton on the floor",
)
_DISTRACTOR_SUFFIXES = (
    " on a carpet",
    " near some cattle",
    " next to a catalog",
    " beside a scarf",
    " in front of a cupboard",
    " in a busy place",
)
_DISTRACTOR_REGIONS = ("a patch of carpet", "cattle far away", "part of a scarf", "an open catalog", "a carton")
_NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
_BACKGROUND_WORDS = {"flat": "plain", "gradient": "smooth", "noise": "grainy", "stripes": "striped"}
_ONE = ("{0}", "a photo of {0}", "there is {0}", "{0} on a {bg} background", "a picture showing {0}")
_TWO = ("{0} next to {1}", "{0} and {1}", "{0} near {1}", "{0} with {1} nearby")
_PAIR_REGIONS = ("{0} next to {1}", "{0} and {1}", "{0} near {1}", "{0} beside {1}")
_THREE = ("{0}, {1} and {2}", "a picture of {0}, {1} and {2}")


@dataclass(frozen=True)
class Thing:
    """Something a text can mention: one annotated object, or a crowd group annotated as one region."""

    key: int  # the id the truth refers to (COCO annotation id, VG object id, or an index)
    category: str  # COCO category name
    colour: str  # palette colour name
    box: Box  # x, y, w, h in pixels
    crowd: bool = False  # a group of objects under one iscrowd=1 annotation


@dataclass(frozen=True)
class Mention:
    """One word (or two-word name) in a text and the things it names."""

    word: str  # lower case, as written in the text ("balls", "stop sign", "man")
    category: str  # COCO category name
    keys: tuple[int, ...]  # Thing.key of every thing this word names


@dataclass(frozen=True)
class Text:
    """A caption or region phrase and the truth of what it mentions."""

    text: str
    mentions: tuple[Mention, ...]


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def position_words(box: Box, width: int, height: int) -> str:
    """Where the box centre lies, in words: "on the left", "at the top of the picture", "in the middle", ..."""
    cx, cy = (box[0] + box[2] / 2) / width, (box[1] + box[3] / 2) / height
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
    row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else ""
    if row and col:
        return f"in the {row} {col} corner"
    if col:
        return f"on the {col}"
    if row:
        return f"at the {row} of the picture"
    return "in the middle"


def _noun_phrase(rng: np.random.Generator, things: list[Thing], width: int, height: int) -> tuple[str, Mention]:
    """Name same-category things: one, a counted plural, or a crowd group."""
    words = CATEGORY_WORDS[things[0].category]
    colour = things[0].colour
    keys = tuple(t.key for t in things)
    if things[0].crowd:
        noun = _pick(rng, words.plural)
        options = (f"a group of {colour} {noun}", f"many {colour} {noun}")
        text = _pick(rng, (*options, f"a crowd of {noun}") if things[0].category == "person" else options)
    elif len(things) > 1:
        noun = _pick(rng, words.plural)
        same_colour = all(t.colour == colour for t in things)
        text = f"{_NUMBERS[len(things)]} {colour} {noun}" if same_colour else f"{_NUMBERS[len(things)]} {noun}"
    else:
        noun = _pick(rng, words.singular)
        if rng.random() < 0.2:
            text = _article(noun)
        elif things[0].category == "person":
            text = _article(f"{noun} in {colour}")
        else:
            text = _article(f"{colour} {noun}")
        if rng.random() < 0.5:
            text += " " + position_words(things[0].box, width, height)
    return text, Mention(noun, things[0].category, keys)


def _choose_groups(rng: np.random.Generator, things: Sequence[Thing]) -> list[list[Thing]]:
    """Pick 1-3 things, sometimes add a same-category partner, and group them by (category, crowd)."""
    order = rng.permutation(len(things))
    chosen = [things[i] for i in order[: int(rng.integers(1, min(3, len(things)) + 1))]]
    for thing in list(chosen):
        partners = [t for t in things if t not in chosen and t.category == thing.category and not t.crowd]
        if partners and not thing.crowd and rng.random() < 0.5:
            chosen.append(partners[0])
    groups: dict[tuple[str, bool], list[Thing]] = {}
    for thing in chosen:
        groups.setdefault((thing.category, thing.crowd), []).append(thing)
    return list(groups.values())[:3]


def make_caption(
    rng: np.random.Generator,
    things: Sequence[Thing],
    width: int,
    height: int,
    background: str,
    sentence: bool,
    unrelated: bool = True,
) -> Text:
    """One caption for a picture. `sentence` gives COCO style (capital letter, full stop); else web style.
    `unrelated`: 12% of captions are about nothing in the picture, as web captions often are; a picture without
    objects always gets one."""
    if not things or (unrelated and rng.random() < 0.12):
        text, mentions = _pick(rng, DISTRACTOR_CAPTIONS), ()
    else:
        phrases, mention_list = [], []
        for group in _choose_groups(rng, things):
            phrase, mention = _noun_phrase(rng, group, width, height)
            phrases.append(phrase)
            mention_list.append(mention)
        template = _pick(rng, (_ONE, _TWO, _THREE)[len(phrases) - 1])
        text = template.format(*phrases, bg=_BACKGROUND_WORDS[background])
        if rng.random() < 0.2:
            text += _pick(rng, _DISTRACTOR_SUFFIXES)
        mentions = tuple(mention_list)
    if sentence:
        text = text[0].upper() + text[1:] + "."
    return Text(text, mentions)


def make_region(rng: np.random.Generator, things: Sequence[Thing], width: int, height: int) -> tuple[Text, Box]:
    """A Visual Genome region: a short phrase about one or two objects, and a box around them."""
    if not things or rng.random() < 0.08:
        w, h = int(rng.integers(width // 8, width // 2 + 1)), int(rng.integers(height // 8, height // 2 + 1))
        box = (int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h)
        return Text(_pick(rng, _DISTRACTOR_REGIONS), ()), box
    order = rng.permutation(len(things))
    picked = [things[i] for i in order[: 2 if len(things) > 1 and rng.random() < 0.3 else 1]]
    if len(picked) == 2 and picked[0].category == picked[1].category:
        phrase, mention = _noun_phrase(rng, picked, width, height)
        text = Text(phrase, (mention,))
    elif len(picked) == 2:
        (a, ma), (b, mb) = (_short_phrase(rng, t, in_pair=True) for t in picked)
        text = Text(_pick(rng, _PAIR_REGIONS).format(a, b), (ma, mb))
    else:
        phrase, mention = _short_phrase(rng, picked[0])
        if rng.random() < 0.3:
            phrase += " " + position_words(picked[0].box, width, height)
        text = Text(phrase, (mention,))
    x0 = min(t.box[0] for t in picked)
    y0 = min(t.box[1] for t in picked)
    x1 = max(t.box[0] + t.box[2] for t in picked)
    y1 = max(t.box[1] + t.box[3] for t in picked)
    pad = rng.integers(0, 5, size=4)  # VG regions are loose boxes drawn by people
    x0, y0 = max(0, x0 - int(pad[0])), max(0, y0 - int(pad[1]))
    x1, y1 = min(width, x1 + int(pad[2])), min(height, y1 + int(pad[3]))
    return text, (x0, y0, x1 - x0, y1 - y0)


def _short_phrase(rng: np.random.Generator, thing: Thing, in_pair: bool = False) -> tuple[str, Mention]:
    """A VG-style phrase for one object; `in_pair` keeps to noun phrases that read well joined by "next to"."""
    noun = _pick(rng, CATEGORY_WORDS[thing.category].singular)
    c = thing.colour
    if thing.category == "person":
        options = (_article(f"{noun} in {c}"), _article(noun), f"{noun} wearing {c}")
    else:
        options = (_article(f"{c} {noun}"), _article(noun), f"{c} {noun}", f"the {noun} is {c}")
    return _pick(rng, options[:2] if in_pair else options), Mention(noun, thing.category, (thing.key,))
