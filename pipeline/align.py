"""Caption-box alignment (DESIGN section 6): which boxes is a caption talking about?

- COCO: an instance box is relevant to a caption when the caption names its category: the name or a synonym from
  the curated table below, singular or plural, matched case-insensitively on word boundaries ("cattle" is not
  "cat", "carpet" is not "car"). Longer phrases win over their parts ("stop sign" over "sign", "hot dog" over
  "dog").
- Visual Genome: a region phrase owns its region box; VG objects whose names (or the COCO synonyms of their names)
  appear in the phrase and lie mostly inside the region are relevant too.
- X-VLM elems: each elem's box is relevant to its own text (the reader does that; no matching needed).

Every relevant entry records the box indices and the words that matched, in caption order.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

# Curated synonyms of the 80 COCO categories (singular forms; plurals are derived). The category name itself is
# always included. Choices favour precision: ambiguous words ("glass", "board", "plant" alone) are left out.
COCO_SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": ("people", "man", "woman", "boy", "girl", "child", "kid", "guy", "lady", "player", "men", "women",
               "children", "skier", "surfer", "skateboarder", "snowboarder", "rider", "pedestrian", "adult", "baby",
               "toddler", "gentleman", "teenager", "batter", "catcher", "pitcher", "tennis player"),
    "bicycle": ("bike", "cycle"),
    "car": ("automobile", "sedan", "taxi", "suv"),
    "motorcycle": ("motorbike", "motor bike", "scooter", "moped"),
    "airplane": ("plane", "aeroplane", "jet", "aircraft", "airliner"),
    "bus": ("double decker", "double-decker"),
    "train": ("locomotive", "tram", "subway"),
    "truck": ("lorry", "pickup", "pickup truck"),
    "boat": ("ship", "sailboat", "canoe", "kayak", "yacht", "ferry"),
    "traffic light": ("stoplight", "stop light", "traffic signal"),
    "fire hydrant": ("hydrant",),
    "stop sign": ("sign",),  # COCO annotates no other signs, so "sign" means this box
    "parking meter": ("meter",),
    "bench": (),
    "bird": ("seagull", "gull", "pigeon", "duck", "parrot", "goose"),
    "cat": ("kitten", "kitty"),
    "dog": ("puppy", "pup"),
    "horse": ("pony", "foal"),
    "sheep": ("lamb", "ram"),
    "cow": ("cattle", "calf", "bull", "ox"),
    "elephant": (),
    "bear": (),
    "zebra": (),
    "giraffe": (),
    "backpack": ("back pack", "rucksack"),
    "umbrella": ("parasol",),
    "handbag": ("purse", "hand bag"),
    "tie": ("necktie",),
    "suitcase": ("luggage", "suit case"),
    "frisbee": ("disc", "flying disc"),
    "skis": ("ski",),
    "snowboard": ("snow board",),
    "sports ball": ("ball", "soccer ball", "football", "baseball", "tennis ball", "basketball"),
    "kite": (),
    "baseball bat": ("bat",),
    "baseball glove": ("glove", "mitt"),
    "skateboard": ("skate board",),
    "surfboard": ("surf board",),
    "tennis racket": ("racket", "racquet"),
    "bottle": (),
    "wine glass": (),
    "cup": ("mug",),
    "fork": (),
    "knife": (),
    "spoon": (),
    "bowl": (),
    "banana": (),
    "apple": (),
    "sandwich": ("burger", "hamburger", "sub"),
    "orange": (),
    "broccoli": (),
    "carrot": (),
    "hot dog": ("hotdog",),
    "pizza": ("pizza slice",),
    "donut": ("doughnut",),
    "cake": ("cupcake",),
    "chair": ("stool",),
    "couch": ("sofa",),
    "potted plant": ("houseplant", "house plant", "plant pot"),
    "bed": (),
    "dining table": ("table",),
    "toilet": (),
    "tv": ("television", "monitor", "tv screen"),
    "laptop": ("notebook computer",),
    "mouse": (),
    "remote": ("remote control", "controller"),
    "keyboard": (),
    "cell phone": ("phone", "cellphone", "smartphone", "mobile phone"),
    "microwave": (),
    "oven": ("stove",),
    "toaster": (),
    "sink": (),
    "refrigerator": ("fridge",),
    "book": (),
    "clock": (),
    "vase": (),
    "scissors": (),
    "teddy bear": ("stuffed animal", "teddy"),
    "hair drier": ("hair dryer", "hairdryer", "blow dryer"),
    "toothbrush": ("tooth brush",),
}  # fmt: skip

# Plurals that adding -s / -es gets wrong, and words that are their own plural.
_IRREGULAR = {"person": "people", "man": "men", "woman": "women", "child": "children", "mouse": "mice",
              "knife": "knives", "sheep": "sheep", "skis": "skis", "scissors": "scissors", "ox": "oxen",
              "calf": "calves", "bus": "buses", "cattle": "cattle", "luggage": "luggage", "broccoli": "broccoli",
              "goose": "geese", "people": "people", "men": "men", "women": "women", "children": "children",
              "pup": "pups", "sub": "subs", "tooth brush": "tooth brushes"}  # fmt: skip


def plural(phrase: str) -> str:
    """English plural of a (possibly multi-word) noun phrase: the last word is inflected."""
    head, _, last = phrase.rpartition(" ")
    if phrase in _IRREGULAR:
        return _IRREGULAR[phrase]
    if last in _IRREGULAR:
        inflected = _IRREGULAR[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        inflected = last + "es"
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        inflected = last[:-1] + "ies"
    else:
        inflected = last + "s"
    return f"{head} {inflected}" if head else inflected


@dataclass(frozen=True)
class Match:
    label: str  # what the words name: a COCO category or a VG object name
    word: str  # the words as written in the text
    start: int  # character offsets in the text
    end: int


class RegexMatcher:
    """Finds mentions of labels in text: label -> phrases (singular; plurals added), word-boundary, longest first.

    The reference definition of a match, as one regex; ``Matcher`` gives the same results faster and falls back to
    this class for tables with forms its word scan cannot handle.
    """

    def __init__(self, phrases: dict[str, Iterable[str]]):
        self._label_of: dict[str, set[str]] = {}
        for label, words in phrases.items():
            for word in {label, *words}:
                for form in {word.lower(), plural(word.lower())}:
                    self._label_of.setdefault(form, set()).add(label)
        alternatives = sorted(self._label_of, key=len, reverse=True)
        # Letters, digits and apostrophes (hyphens too) bound a word, so "carpet" never yields "car".
        body = "|".join(re.escape(a).replace(r"\ ", r"\s+") for a in alternatives)
        self._pattern = re.compile(rf"(?<![\w'-])(?:{body})(?![\w'-])", re.IGNORECASE) if alternatives else None

    def find(self, text: str) -> list[Match]:
        if self._pattern is None:
            return []
        found = []
        for m in self._pattern.finditer(text):
            form = " ".join(m.group(0).lower().split())
            for label in sorted(self._label_of[form]):
                found.append(Match(label, m.group(0), m.start(), m.end()))
        return found


_SPLIT = re.compile(r"([\w'-]+)")  # words: runs of the characters RegexMatcher's boundaries treat as word
_PLAIN_FORM = re.compile(r"[\w'-]+(?: [\w'-]+)*")


class Matcher:
    """Finds mentions of labels in text (label -> phrases, plurals added): ``RegexMatcher``'s results, found fast.

    ``RegexMatcher`` compiles one alternation of every form: searching it costs about 100 us a caption (the regex
    tries each alternative at each character), and compiling a VG image's object matcher about 10 ms, which for
    100,000 images is most of an ingest. Here a text is split once into words (runs of ``[\\w'-]``, the characters
    ``RegexMatcher`` uses as word boundaries) and, at each word, the
    longest n-gram joined by whitespace that is a form wins; that is exactly the regex's longest-first,
    word-bounded, non-overlapping scan for forms made of such words and single spaces. A table with any other form
    (``"a&w sign"``) is handed to ``RegexMatcher`` unchanged. Case-folding is ``str.lower`` per word, which equals
    the regex's ``IGNORECASE`` except for the few characters whose lower case has another length ("İ").
    A test checks the equivalence on the synthetic corpus and on hand-made edge cases.
    """

    def __init__(self, phrases: dict[str, object]):
        self._labels: dict[str, tuple[str, ...]] = {}  # form -> the labels it names, sorted
        self._starts: set[str] = set()  # first words of the forms of several words
        self._firsts: set[str] = set()  # words a form can start with
        self._max_words, plain = 0, True
        for label, words in phrases.items():
            table = _table(label, tuple(words))
            for form in table.forms:
                known = self._labels.get(form)
                self._labels[form] = (label,) if known is None else tuple(sorted({*known, label}))
            self._starts |= table.starts
            self._firsts |= table.firsts
            self._max_words = max(self._max_words, table.max_words)
            plain = plain and table.plain
        self._fallback = None if plain else RegexMatcher(phrases)

    def find(self, text: str) -> list[Match]:
        if self._fallback is not None:
            return self._fallback.find(text)
        lowered = text.lower()
        if len(lowered) != len(text):  # a character whose lower case is longer ("İ"): offsets must come from text
            original = _SPLIT.split(text)
            return self._find([p.lower() if i % 2 else p for i, p in enumerate(original)], original, text)
        parts = _SPLIT.split(lowered)  # [gap, word, gap, word, ..., gap]
        if self._firsts.isdisjoint(parts[1::2]):
            return []  # most texts: no form can start at any of their words
        return self._find(parts, parts, text)

    def _find(self, parts: list[str], original: list[str], text: str) -> list[Match]:
        """Scan the lower-case ``parts``; ``original`` are the same parts of ``text``, for the offsets."""
        found: list[Match] = []
        labels_of = self._labels.get
        i, last = 1, len(parts) - 2  # words are at odd indices, gaps between them at even ones
        while i <= last:
            word, size = parts[i], 1
            if word in self._starts:  # a form of several words may start here: the longest one wins
                longest = 1
                while longest < self._max_words and i + 2 * longest <= last and parts[i + 2 * longest - 1].isspace():
                    longest += 1
                for size in range(longest, 0, -1):
                    labels = labels_of(word if size == 1 else " ".join(parts[i : i + 2 * size - 1 : 2]))
                    if labels:
                        break
            else:
                labels = labels_of(word)
            if labels:
                start = sum(map(len, original[:i]))
                end = start + sum(map(len, original[i : i + 2 * size - 1]))
                found.extend(Match(label, text[start:end], start, end) for label in labels)
                i += 2 * size
            else:
                i += 2
        return found


class _Table(NamedTuple):
    forms: tuple[str, ...]  # each word and its plural, lower case, as RegexMatcher derives them
    plain: bool  # every form is words of [\w'-] joined by single spaces, which the token scan handles
    max_words: int
    starts: frozenset[str]
    firsts: frozenset[str]


@functools.lru_cache(maxsize=1 << 16)
def _table(label: str, words: tuple[str, ...]) -> _Table:
    """One label's share of a ``Matcher``; cached, since VG images repeat the same object names."""
    forms = tuple({form for word in {label, *words} for form in (word.lower(), plural(word.lower()))})
    return _Table(
        forms=forms,
        plain=all(map(_PLAIN_FORM.fullmatch, forms)),
        max_words=max((form.count(" ") + 1 for form in forms), default=0),
        starts=frozenset(form.split(" ", 1)[0] for form in forms if " " in form),
        firsts=frozenset(form.split(" ", 1)[0] for form in forms),
    )


COCO_MATCHER = Matcher(COCO_SYNONYMS)


@functools.lru_cache(maxsize=1 << 17)  # VG repeats object names across images
def coco_category_of(name: str) -> str | None:
    """The COCO category a free-form object name means ("man" -> "person"), or None."""
    labels = {m.label for m in COCO_MATCHER.find(name) if m.start == 0 and m.end == len(name.strip())}
    return min(labels) if len(labels) == 1 else None


def coco_categories_in(text: str) -> set[str]:
    """The COCO categories a text names ("two men and a bike" -> {"person", "bicycle"}); for box labels too."""
    return {m.label for m in COCO_MATCHER.find(text)}


def align_by_labels(captions: Sequence[str], box_labels: Sequence[str], matcher: Matcher = COCO_MATCHER) -> list[dict]:
    """COCO rule: per caption, the boxes whose label the caption mentions, and the words that did it."""
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(box_labels):
        by_label.setdefault(label, []).append(i)
    relevant = []
    for caption in captions:
        boxes: set[int] = set()
        words: list[str] = []
        for match in matcher.find(caption):
            if match.label in by_label:
                boxes.update(by_label[match.label])
                if match.word not in words:
                    words.append(match.word)
        relevant.append({"boxes": sorted(boxes), "words": words})
    return relevant


def inside_fraction(box: Sequence[float], region: Sequence[float]) -> float:
    """Fraction of ``box``'s area (x0, y0, x1, y1) that lies inside ``region``."""
    w = max(0.0, min(box[2], region[2]) - max(box[0], region[0]))
    h = max(0.0, min(box[3], region[3]) - max(box[1], region[1]))
    area = (box[2] - box[0]) * (box[3] - box[1])
    return w * h / area if area > 0 else 0.0


def object_phrases(names: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """VG rule: an object name matches itself, its plural, and the synonyms of its COCO category if it has one."""
    phrases = {}
    for name in names:
        key = " ".join(name.lower().split())
        category = coco_category_of(key)
        phrases[key] = (key, category, *COCO_SYNONYMS[category]) if category else (key,)
    return phrases


def object_matcher(names: Iterable[str]) -> Matcher:
    """A matcher of ``object_phrases``; built once per VG image, so it must be cheap (about 45 us)."""
    return Matcher(object_phrases(names))


def align_region(
    phrase: str,
    region_box: int,
    boxes: Sequence[Sequence[float]],
    object_names: dict[int, str],
    matcher: Matcher,
    min_inside: float = 0.5,
) -> dict:
    """VG rule for one region phrase: its own box, plus named objects lying mostly (``min_inside``) in the region."""
    region = boxes[region_box]
    by_name: dict[str, list[int]] = {}
    for index, name in object_names.items():
        by_name.setdefault(" ".join(name.lower().split()), []).append(index)
    chosen, words = {region_box}, []
    for match in matcher.find(phrase):
        hits = [i for i in by_name.get(match.label, ()) if inside_fraction(boxes[i], region) >= min_inside]
        if hits:
            chosen.update(hits)
            if match.word not in words:
                words.append(match.word)
    return {"boxes": sorted(chosen), "words": words}
