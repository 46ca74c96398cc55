"""The caption lexicon: which words name which COCO category, and the word lists the alignment rules use.

Two parts, merged here: ``curated.py`` (hand-written: informal words, generic words, modifier heads) and
``coco_wordnet.json`` (derived from WordNet 3.0 by ``python -m pipeline.lexicon.derive``: hyponyms of each
category's synsets, VG synset names, modifier heads from WordNet's compounds, verbs, near words). The README's
alignment section says how the two were made and which rules use them.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.lexicon import curated

DERIVED = Path(__file__).with_name("coco_wordnet.json")


@dataclass(frozen=True)
class Lexicon:
    words: dict[str, tuple[str, ...]]  # category -> its words (singular; the category name not repeated)
    generic: dict[str, tuple[str, ...]]  # word -> the categories it can name
    synsets: dict[str, str]  # WordNet synset name ("terrier.n.01") -> category
    heads: frozenset[str]  # nouns that make a category word right before them a modifier
    verb_heads: frozenset[str]  # modifier heads that are also verbs ("run", "stand")
    verbs: frozenset[str]  # object words that can be verbs ("ski", "skateboard")
    near_words: frozenset[str]  # English words one edit from a word the misspelling rule corrects to
    fuzzy_targets: frozenset[str]


@functools.cache
def load() -> Lexicon:
    derived = json.loads(DERIVED.read_text())
    words = {
        category: tuple(sorted({*own, *derived["categories"].get(category, ())} - {category}))
        for category, own in curated.SYNONYMS.items()
    }
    return Lexicon(
        words=words,
        generic=dict(curated.GENERIC),
        synsets=derived["synsets"],
        heads=frozenset(derived["heads"]) | frozenset(curated.HEADS),
        verb_heads=frozenset(derived["verb_heads"]),
        verbs=frozenset(derived["verbs"]),
        near_words=frozenset(derived["near_words"]),
        fuzzy_targets=frozenset(curated.fuzzy_targets()),
    )
