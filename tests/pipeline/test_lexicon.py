"""The caption lexicon: the WordNet reader and the derivation rules on a small database written in WordNet's own
format, and the committed ``coco_wordnet.json`` against a fresh derivation where WordNet is installed."""

import json
from pathlib import Path

import pytest

from pipeline.lexicon import DERIVED, derive, load
from pipeline.lexicon.wordnet import WordNet

# offset: (lemmas, pointers as (symbol, offset)); "@i" marks a named individual
NOUNS = {
    1: (["physical_entity"], [("~", 2), ("~", 10), ("~", 20), ("~", 30), ("~", 31), ("~", 40), ("~", 50), ("~", 60)]),
    2: (["body_part"], [("~", 3)]),
    3: (["neck"], []),
    10: (["person", "individual"], [("~", 11), ("~", 12), ("~", 13)]),
    11: (["nurse"], []),
    12: (["pitcher"], []),  # the baseball player: a second sense of "pitcher"
    13: (["tumbler"], []),  # an acrobat; a second sense of "tumbler" is a glass
    20: (["dog", "domestic_dog"], [("~", 21), ("~", 22)]),
    21: (["terrier"], []),
    22: (["toy_dog", "toy"], []),  # "toy" means a plaything first
    30: (["pitcher", "ewer"], []),  # a jug: the first sense of "pitcher"
    31: (["tumbler"], []),
    40: (["bird"], [("~", 41)]),
    41: (["heron"], []),
    42: (["Heron", "Hero"], [("@i", 10)]),  # the mathematician, listed first for "heron"
    50: (["plaything", "toy"], []),
    60: (["dog_food"], []),
}
INDEX = {  # lemma: offsets in sense order
    "physical_entity": [1], "body_part": [2], "neck": [3], "person": [10], "individual": [10], "nurse": [11],
    "pitcher": [30, 12], "tumbler": [13, 31], "dog": [20], "domestic_dog": [20], "terrier": [21], "toy_dog": [22],
    "toy": [50, 22], "ewer": [30], "bird": [40], "heron": [42, 41], "hero": [42], "plaything": [50],
    "dog_food": [60],
}  # fmt: skip


def _write_wordnet(folder: Path) -> Path:
    lines = ["  1 This software and database is being provided ... (licence header lines start with spaces)"]
    for offset, (lemmas, pointers) in NOUNS.items():
        words = " ".join(f"{lemma} 0" for lemma in lemmas)
        ptrs = " ".join(f"{symbol} {target:08d} n 0000" for symbol, target in pointers)
        lines.append(f"{offset:08d} 03 n {len(lemmas):02x} {words} {len(pointers):03d} {ptrs} | a gloss")
    (folder / "data.noun").write_text("\n".join(lines) + "\n")
    index = [
        f"{lemma} n {len(offs)} 0 {len(offs)} 0 {' '.join(f'{o:08d}' for o in offs)}" for lemma, offs in INDEX.items()
    ]
    (folder / "index.noun").write_text("\n".join(index) + "\n")
    (folder / "index.verb").write_text("toy v 1 0 1 0 00000099\n")
    (folder / "index.adj").write_text("")
    (folder / "index.adv").write_text("")
    (folder / "noun.exc").write_text("geese goose\n")
    return folder


def test_reader_names_synsets_as_nltk_and_visual_genome_do(tmp_path):
    wn = WordNet(_write_wordnet(tmp_path))
    assert wn.synset("dog.n.01").lemmas == ["dog", "domestic_dog"]
    assert wn.nouns[12].name == "pitcher.n.02" and wn.nouns[30].name == "pitcher.n.01"
    assert wn.closure("dog.n.01") == {20, 21, 22}
    assert wn.first_sense("heron") == 41  # Hero of Alexandria, a named individual, is skipped
    assert wn.exceptions["n"] == {"geese": "goose"}
    with pytest.raises(KeyError, match=r"cat\.n\.01"):
        wn.synset("cat.n.01")
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        WordNet(tmp_path / "missing")


def test_derivation_rules(tmp_path, monkeypatch):
    wn = WordNet(_write_wordnet(tmp_path))
    monkeypatch.setattr(derive, "ROOTS", {"person": ("person.n.01",), "dog": ("dog.n.01",), "bird": ("bird.n.01",)})
    monkeypatch.setattr(derive, "DROP_SUBTREES", ())
    monkeypatch.setattr(derive, "DROP_WORDS", {})
    monkeypatch.setattr(derive, "KEEP_AMBIGUOUS", {})
    lexicon = derive.derive(wn)
    words = lexicon["categories"]
    assert words["person"] == ["individual", "nurse"]  # "pitcher" is a jug first; "tumbler" is also a glass
    assert words["dog"] == ["domestic dog", "terrier", "toy dog"]  # "toy" is a plaything first
    assert words["bird"] == ["heron"]  # its named-individual sense does not count
    assert lexicon["synsets"]["terrier.n.01"] == "dog" and "plaything.n.01" not in lexicon["synsets"]
    assert "food" in lexicon["heads"]  # "dog food": a curated dog word, then a noun that names no category
    monkeypatch.setattr(derive, "KEEP_AMBIGUOUS", {"person": ("tumbler",)})
    assert "tumbler" in derive.derive(wn)["categories"]["person"]


@pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").is_file(), reason="WordNet 3.0 (wordnet-base) absent")
def test_committed_lexicon_is_what_the_script_derives():
    fresh = derive.derive(WordNet("/usr/share/wordnet"))
    assert json.loads(DERIVED.read_text()) == fresh, "re-run: python -m pipeline.lexicon.derive"


def test_lexicon_merges_curated_and_derived_words():
    lexicon = load()
    assert "terrier" in lexicon.words["dog"] and "puppy" in lexicon.words["dog"]  # derived and curated
    assert "bike" not in lexicon.words["bicycle"] and lexicon.generic["bike"] == ("bicycle", "motorcycle")
    owners = {}
    for category, table in lexicon.words.items():
        for word in table:
            owners.setdefault(word, set()).add(category)
    assert {w: c for w, c in owners.items() if len(c) > 1} == {}  # no word names two categories
