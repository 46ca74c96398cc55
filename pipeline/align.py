"""Caption-box alignment (DESIGN section 6): which boxes is a caption talking about?

- COCO: an instance box is relevant to a caption when the caption names its category (``CaptionMatcher``): a word
  of the lexicon (``pipeline/lexicon``: curated words plus WordNet hyponyms of each category), singular, plural or
  possessive, on word boundaries ("cattle" is not "cat", "carpet" is not "car"), longest phrase first ("stop sign"
  over "sign", "hot dog" over "dog"); split words joined ("ele phant") and one-letter misspellings of common words
  corrected ("giraffee") where that cannot make another English word. A category word that modifies the next noun
  ("bus stop", "pizza box", "baby elephant") or is used as a verb ("a man skis down", "learning to ski") names
  nothing; a generic word ("bike", "animal", "the display") names a category only in an image that has exactly one
  category it can mean.
- Visual Genome: a region phrase owns its region box; VG objects whose names (or the COCO synonyms of their names)
  appear in the phrase and lie mostly inside the region are relevant too.
- X-VLM elems: each elem's box is relevant to its own text (the reader does that; no matching needed).

Every relevant entry records the box indices and the words that matched, in caption order.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from pipeline.lexicon import load
from pipeline.lexicon.curated import SYNONYMS, plural

LEXICON = load()
# Words per COCO category, curated and WordNet-derived (singular forms; plurals are derived; the category name
# itself is always included).
COCO_SYNONYMS: dict[str, tuple[str, ...]] = LEXICON.words


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

# Small word classes the rules look at, around a mention: a subject before an -s verb ("he phones"); a singular
# determiner ("a dog runs" is no "dog runs"); words after a verb ("runs across"); an animal's kin after "its".
# fmt: off
_SUBJECTS = frozenset({"he", "she", "who", "also"})
_SINGULAR_DETERMINERS = frozenset({"a", "an", "one", "each", "every", "this", "another"})
_PARTICLES = frozenset({
    "on", "in", "at", "through", "across", "along", "down", "up", "over", "into", "onto", "toward", "towards", "past",
    "by", "around", "under", "with", "to", "from", "the", "a", "an", "his", "her", "its", "their", "away", "off",
    "out", "near", "next", "behind", "beside", "while",
})
_KIN = frozenset({
    "mother", "father", "parent", "parents", "mom", "mama", "baby", "babies", "child", "children", "kid", "kids",
    "offspring", "family",
})
# fmt: on
_GENERIC = "?"  # label prefix of a generic word, resolved against the image's categories


class _Caption(NamedTuple):
    """A caption split once: ``parts`` alternate gap, word, gap, ..., gap (lower case), as ``_SPLIT`` cuts them."""

    parts: list[str]
    original: list[str]  # parts of the same lengths as the text's, for offsets (``parts`` itself but for "İ")
    words: list[str]  # per word: lower case, possessive stripped, hyphens or a misspelling mended to a lexicon form

    def possessive(self, k: int) -> bool:
        return self.parts[2 * k + 1] != self.words[k] and self.parts[2 * k + 1].endswith(("'s", "'"))

    def spaced(self, k: int) -> bool:
        """Word k has a next word, with only whitespace between them ("bus stop", not "bus, stop")."""
        return k + 1 < len(self.words) and self.parts[2 * k + 2].isspace()


class CaptionMatcher:
    """The COCO caption rules of this module's docstring, over a lexicon; ``find`` gives the words that count.

    A caption is split into words once; each distinct word is normalised once (cached: captions share a small
    vocabulary), and the scan looks up n-grams in one dict, only at words that start a form of several words, as
    ``Matcher`` does. The rules then look at the few words around each mention.
    """

    def __init__(self, lexicon=LEXICON):
        self._labels: dict[str, tuple[str, ...]] = {}
        self._singular: set[str] = set()  # forms that are not derived plurals ("skis" is a name, so singular)
        table = {**lexicon.words, **{_GENERIC + g: () for g in lexicon.generic}}
        for label, words in table.items():
            for word in {label.removeprefix(_GENERIC), *words}:
                for form in (word, plural(word)):
                    known = self._labels.get(form, ())
                    self._labels[form] = tuple(sorted({*known, label}))
                self._singular.add(word)
        self._starts: dict[str, int] = {}  # first word of forms of several words -> the most words of such a form
        for form in self._labels:
            if " " in form:
                first = form.split(" ", 1)[0]
                self._starts[first] = max(self._starts.get(first, 0), form.count(" ") + 1)
        self._generic = lexicon.generic
        self._heads = lexicon.heads
        self._verb_heads = lexicon.verb_heads
        self._verbs = {f for v in lexicon.verbs for f in (v, plural(v))}
        self._third_person = {plural(v) for v in lexicon.verbs}
        self._plural_people = {plural(w) for w in (*lexicon.words["person"], "person")} | {
            "men", "women", "children", "people", "kids", "girls", "boys", "ladies"}  # fmt: skip
        self._near = lexicon.near_words
        self._deletes: dict[str, set[str]] = {}  # a fuzzy target with one letter deleted -> the targets
        for target in lexicon.fuzzy_targets:
            for variant in {target, *(target[:i] + target[i + 1 :] for i in range(len(target)))}:
                self._deletes.setdefault(variant, set()).add(target)
        self._cache = _Cache(self._normalise)
        self._joins = set(lexicon.fuzzy_targets)  # words written in two ("ele phant", "lap top"): the common ones
        self._join_firsts = {t[:i] for t in self._joins for i in range(3, len(t) - 1)}
        self._interesting = set(self._labels) | set(self._starts) | self._join_firsts

    def find(self, text: str, present: Iterable[str] | None = None) -> list[Match]:
        """The mentions in ``text`` that count; generic words resolved against ``present`` (dropped if None)."""
        caption = self._split(text)
        spans = self._scan(caption)
        if not spans:
            return []
        verbs = [
            caption.words[span[0]] in self._verbs and self._is_verb(caption, span, spans[k - 1] if k else None)
            for k, span in enumerate(spans)
        ]
        found = []
        for k, (first, last, labels) in enumerate(spans):
            noun_next = k + 1 < len(spans) and spans[k + 1][0] == last + 1 and not verbs[k + 1]
            if verbs[k] or self._modifies(caption, first, last, noun_next):
                continue
            if first and caption.words[first - 1] == "its" and caption.words[first] in _KIN:  # "a calf and its mother"
                continue
            start = sum(map(len, caption.original[: 2 * first + 1]))
            end = start + sum(map(len, caption.original[2 * first + 1 : 2 * last + 2]))
            for label in labels:
                if label.startswith(_GENERIC):
                    fits = [c for c in self._generic[label[1:]] if present is not None and c in present]
                    if len(fits) != 1:
                        continue
                    label = fits[0]
                found.append(Match(label, text[start:end], start, end))
        return found

    def _split(self, text: str) -> _Caption:
        lowered = text.lower()
        if len(lowered) == len(text):
            parts = original = _SPLIT.split(lowered)
        else:  # a character whose lower case is longer ("İ"): offsets must come from text
            original = _SPLIT.split(text)
            parts = [p.lower() if i % 2 else p for i, p in enumerate(original)]
        cache = self._cache
        return _Caption(parts, original, [cache[raw] for raw in parts[1::2]])

    def _normalise(self, word: str) -> str:
        """The lexicon form a word is (possessive stripped, hyphens dropped, a misspelling mended), or the word."""
        if word in self._labels:
            return word
        for ending in ("'s", "'"):
            if word.endswith(ending) and word[: -len(ending)] in self._labels:
                return word[: -len(ending)]
        if "-" in word and word.replace("-", "") in self._labels:
            return word.replace("-", "")
        if len(word) >= 5 and word.isalpha() and word not in self._near:
            return self._mend(word) or word
        return word

    def _mend(self, word: str) -> str | None:
        """The one fuzzy target one edit (insertion, deletion, substitution, transposition) from ``word``."""
        candidates = set(self._deletes.get(word, ()))  # a letter missing from word
        for i in range(len(word)):
            shorter = word[:i] + word[i + 1 :]
            if shorter in self._deletes:
                candidates |= {t for t in self._deletes[shorter] if _one_edit(word, t)}  # extra, wrong or swapped
        named = {self._labels[c] for c in candidates}  # "giraffee" is one edit from "giraffe" and "giraffes"
        return min(candidates) if len(named) == 1 else None

    def _scan(self, caption: _Caption) -> list[tuple[int, int, tuple[str, ...]]]:
        """Longest n-gram first, then two words written as one form ("ele phant"), then one word; only at the words
        that can start one of those (most words of a caption cannot)."""
        words, raw, labels_of = caption.words, caption.parts[1::2], self._labels.get
        spans, n, resume = [], len(words), 0
        for i in [i for i, word in enumerate(words) if word in self._interesting]:
            if i < resume:
                continue
            found = None
            if most := self._starts.get(words[i]):
                longest = 1
                while longest < most and i + longest < n and caption.spaced(i + longest - 1):
                    longest += 1
                for size in range(longest, 1, -1):
                    labels = labels_of(" ".join(words[i : i + size]))
                    if labels:
                        found = (i, i + size - 1, labels)
                        break
            joins = found is None and raw[i] in self._join_firsts and i + 1 < n and caption.spaced(i)
            if joins and (joined := raw[i] + raw[i + 1]) in self._joins:
                found = (i, i + 1, self._labels[joined])
            if found is None and (labels := labels_of(words[i])):
                found = (i, i, labels)
            if found:
                spans.append(found)
                resume = found[1] + 1
        return spans

    def _modifies(self, caption: _Caption, first: int, last: int, noun_next: bool) -> bool:
        """Words that modify the noun after them: "bus stop", "train tracks", "baby elephant", "men's room"."""
        words, after = caption.words, last + 1
        if after >= len(words) or not caption.spaced(last):
            return False
        if caption.possessive(last):  # "a man's hand" is the man; "the men's room" and "a children's book" are kinds
            return words[last] in self._plural_people
        if words[last] not in self._singular:  # "two dogs run": a plural names the things themselves
            return False
        if first == last and noun_next:
            return True
        head = words[after]
        if head in self._heads:
            return True
        singular = head[:-2] if head.endswith("es") and head[:-2] in self._heads else head[:-1]
        if not head.endswith("s") or singular not in self._heads:
            return False
        # a plural head: "the train tracks" (a modifier) or "a dog runs across" (a subject and its verb)
        if first and words[first - 1] in _SINGULAR_DETERMINERS:
            return False
        particle = after + 1 < len(words) and words[after + 1] in _PARTICLES
        return not (singular in self._verb_heads and particle)

    def _is_verb(self, caption: _Caption, span: tuple, before: tuple | None) -> bool:
        """An object word used as a verb: after "to" ("learning to ski"), or as "-s" after a person or a pronoun
        ("a woman skis down", "he phones")."""
        first, last, _ = span
        words = caption.words
        word = words[first]
        if first != last or first == 0 or word not in self._verbs or not caption.spaced(first - 1):
            return False
        if words[first - 1] == "to":
            return first < 2 or words[first - 2] not in ("next", "close")
        if word not in self._third_person or caption.possessive(first - 1):
            return False
        return words[first - 1] in _SUBJECTS or (
            before is not None and before[1] == first - 1 and "person" in before[2]
        )


class _Cache(dict):
    """word -> ``normalise(word)``, computed on first use; emptied when it reaches 65,536 words."""

    def __init__(self, normalise: Callable[[str], str]):
        super().__init__()
        self._normalise = normalise

    def __missing__(self, word: str) -> str:
        if len(self) >= 1 << 16:
            self.clear()
        self[word] = form = self._normalise(word)
        return form


def _one_edit(a: str, b: str) -> bool:
    """Optimal-string-alignment distance exactly 1: one insertion, deletion, substitution or swap of neighbours."""
    if len(a) == len(b):
        diff = [k for k in range(len(a)) if a[k] != b[k]]
        swap = len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
        return len(diff) == 1 or swap
    if abs(len(a) - len(b)) != 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = next((k for k in range(len(a)) if a[k] != b[k]), len(a))
    return a[i:] == b[i + 1 :]


CAPTION_MATCHER = CaptionMatcher()


@functools.lru_cache(maxsize=1 << 17)  # VG repeats object names across images
def coco_category_of(name: str) -> str | None:
    """The COCO category a free-form object name means ("man" -> "person"), or None."""
    labels = {m.label for m in COCO_MATCHER.find(name) if m.start == 0 and m.end == len(name.strip())}
    return min(labels) if len(labels) == 1 else None


@functools.lru_cache(maxsize=1 << 12)
def coco_category_of_synsets(synsets: tuple[str, ...]) -> str | None:
    """The COCO category that Visual Genome's WordNet synsets of an object mean ("dog.n.01" -> "dog"), or None."""
    labels = {LEXICON.synsets[s] for s in synsets if s in LEXICON.synsets}
    return min(labels) if len(labels) == 1 else None


def coco_categories_in(text: str, present: Iterable[str] | None = None) -> set[str]:
    """The COCO categories a text names ("two men and a bicycle" -> {"person", "bicycle"}), by the caption rules;
    a generic word ("bike") counts only with ``present``, the categories of the picture. For box labels too."""
    return {m.label for m in CAPTION_MATCHER.find(text, present)}


def align_by_labels(captions: Sequence[str], box_labels: Sequence[str], matcher=CAPTION_MATCHER) -> list[dict]:
    """COCO rule: per caption, the boxes whose label the caption mentions, and the words that did it."""
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(box_labels):
        by_label.setdefault(label, []).append(i)
    relevant = []
    for caption in captions:
        boxes: set[int] = set()
        words: list[str] = []
        for match in matcher.find(caption, by_label):
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


def object_phrases(names: Iterable[str], categories: dict[str, str] | None = None) -> dict[str, tuple[str, ...]]:
    """VG rule: an object name matches itself, its plural, and the curated words of its COCO category if it has one
    (the one ``categories`` gives from its WordNet synsets, which VG's annotators chose: a "lassie" with dog.n.01 is
    a dog; else the category its name means), plus the generic words
    ("bike") that can mean only that category among the image's objects. Curated words only: a matcher is built
    per VG image, and the WordNet words would make that 10,000 forms for each "man"."""
    kinds = {}
    for name in names:
        key = " ".join(name.lower().split())
        kinds[key] = (categories or {}).get(name) or coco_category_of(key)
    present = set(kinds.values()) - {None}
    generic: dict[str, list[str]] = {}
    for word, fits in LEXICON.generic.items():
        if len(candidates := present.intersection(fits)) == 1:
            generic.setdefault(candidates.pop(), []).append(word)
    return {
        key: (key, category, *SYNONYMS[category], *generic.get(category, ())) if category else (key,)
        for key, category in kinds.items()
    }


def object_matcher(names: Iterable[str], categories: dict[str, str] | None = None) -> Matcher:
    """A matcher of ``object_phrases``; built once per VG image, so it must be cheap (about 45 us)."""
    return Matcher(object_phrases(names, categories))


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
