"""``copa bench align``: scores against hand-counted pairs, for the lexicon rules and the plain word table."""

import json

import pytest

from jobs.bench import align

ROWS = [
    {"caption": "people at a bus stop", "annotated": ["person", "bus"], "refers": ["person"], "class": "modifier"},
    {"caption": "a man riding a bike", "annotated": ["person", "motorcycle"], "refers": ["person", "motorcycle"],
     "class": "context"},
    {"caption": "a terrier", "annotated": ["dog"], "refers": ["dog"], "class": "hyponym"},
]  # fmt: skip


def test_scores_and_speed_beside_the_word_table(tmp_path, capsys):
    labelled, out = tmp_path / "set.jsonl", tmp_path / "align.json"
    labelled.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert align.main(["--captions", str(labelled), "--seconds", "0.01", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    report = results["sets"]["set.jsonl"]
    assert report["captions"] == 3
    # the lexicon: person twice, motorcycle through "bike" (the only two-wheeler in the picture), dog through "terrier"
    assert {k: report["lexicon"]["all"][k] for k in ("tp", "fp", "fn")} == {"tp": 4, "fp": 0, "fn": 0}
    # the word table: "bus" of "bus stop" is a false positive; "bike" and "terrier" are not its words
    assert {k: report["word_table"]["all"][k] for k in ("tp", "fp", "fn")} == {"tp": 2, "fp": 1, "fn": 2}
    assert report["word_table"]["modifier"]["precision"] == pytest.approx(1 / 2)
    assert report["word_table"]["all"]["recall"] == pytest.approx(2 / 4)
    # each rule switched off in turn: without modifiers "bus stop" names the bus; without generic words "bike" names
    # nothing; misspellings and split words play no part in these captions
    without = {rule: results["without"][rule]["set.jsonl"] for rule in align.ABLATIONS}
    assert {rule: (w["fp"], w["fn"]) for rule, w in without.items()} == {
        "modifiers": (1, 0), "verbs": (0, 0), "generic words": (0, 1), "misspellings": (0, 0), "split words": (0, 0),
    }  # fmt: skip
    printed = capsys.readouterr().out
    assert "precision 1.000  recall 1.000" in printed and "us/caption" in printed


def test_a_line_that_is_not_a_labelled_caption_is_named(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + '\n{"caption": "no labels"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not a labelled caption"):
        align.read_labelled(bad)
