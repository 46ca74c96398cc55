"""``copa bench align``: caption-category alignment scored on hand-labelled captions, and its speed per caption,
beside the plain word-table matcher (the rule before the lexicon: curated words, no modifier, verb, generic or
misspelling rules) in the same run.

Each labelled line is ``{"caption", "annotated": [categories in the image], "refers": [those the caption refers
to], "class"}``; precision and recall are over caption-category pairs, as the alignment decides them: a category
counts when the matcher finds it in the caption and the image has it. Speed is microseconds per caption in one
process, for ``align_by_labels`` (what ingest runs: the matching, then the boxes of the named categories), with
the matcher's word cache kept (a corpus's vocabulary repeats) and cleared before each pass (every word normalised
afresh).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from jobs.bench.runner import REPO, write_report
from pipeline.align import CaptionMatcher, Matcher, align_by_labels
from pipeline.lexicon import curated

DEFAULT_SETS = [
    REPO / "tests/pipeline/data/align_captions.jsonl",
    REPO / "tests/pipeline/data/align_captions_heldout.jsonl",
]

Find = Callable[[str, Iterable[str]], Iterable[str]]  # (caption, image categories) -> categories named


def read_labelled(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                    rows.append({k: row[k] for k in ("caption", "annotated", "refers")} | {"class": row.get("class")})
                except (ValueError, KeyError) as err:
                    raise ValueError(f"{path}:{number}: not a labelled caption ({err})") from None
    return rows


def score(rows: list[dict], find: Find) -> dict:
    """Precision, recall and F1 over caption-category pairs, overall and per class, with the pair counts."""
    tally: dict[str, list[int]] = {}
    for row in rows:
        annotated = set(row["annotated"])
        found, gold = set(find(row["caption"], annotated)) & annotated, set(row["refers"])
        for key in ("all", row["class"] or "unlabelled"):
            counts = tally.setdefault(key, [0, 0, 0])
            counts[0] += len(found & gold)
            counts[1] += len(found - gold)
            counts[2] += len(gold - found)
    result = {}
    for key, (tp, fp, fn) in tally.items():
        precision, recall = tp / max(1, tp + fp), tp / max(1, tp + fn)
        f1 = 2 * precision * recall / max(1e-12, precision + recall)
        result[key] = {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}
    return result


def _us_per_caption(find: Find, rows: list[dict], seconds: float, before_pass: Callable[[], None]) -> float:
    done = elapsed = 0.0
    while elapsed < seconds:
        before_pass()
        start = time.perf_counter()
        for row in rows:
            find(row["caption"], row["annotated"])
        elapsed += time.perf_counter() - start
        done += len(rows)
    return elapsed / done * 1e6


class _WordTable:
    """The rule before the lexicon: the curated words, found by ``Matcher``; the image plays no part."""

    def __init__(self):
        self._matcher = Matcher(curated.SYNONYMS)

    def find(self, text: str, present: object = None) -> list:
        return self._matcher.find(text)


def _without(rule: str) -> CaptionMatcher:
    """A matcher with one rule switched off, to measure what the rule is worth."""
    matcher = CaptionMatcher()
    if rule == "modifiers":
        matcher._modifies = lambda *args: False
    elif rule == "verbs":
        matcher._is_verb = lambda *args: False
    elif rule == "misspellings":
        matcher._mend = lambda word: None
    elif rule == "split words":
        matcher._join_firsts = set()
    elif rule == "generic words":  # never named, whatever the picture
        original = matcher.find
        matcher.find = lambda text, present=None: original(text, None)
    return matcher


ABLATIONS = ("modifiers", "verbs", "generic words", "misspellings", "split words")


def run(paths: list[Path], seconds: float) -> dict:
    matchers = {"lexicon": CaptionMatcher(), "word_table": _WordTable()}
    results: dict = {"sets": {}, "us_per_caption": {}}
    everything = []
    for path in paths:
        rows = read_labelled(path)
        everything += rows
        results["sets"][path.name] = {"captions": len(rows)} | {
            name: score(rows, lambda caption, present, m=m: [x.label for x in m.find(caption, present)])
            for name, m in matchers.items()
        }
    results["without"] = {}
    for rule in ABLATIONS:
        m = _without(rule)
        results["without"][rule] = {
            path.name: score(read_labelled(path), lambda c, p, m=m: [x.label for x in m.find(c, p)])["all"]
            for path in paths
        }
    for name, m in matchers.items():

        def align(caption, present, m=m):  # what ingest runs per caption: matching, then the boxes
            return align_by_labels([caption], present, matcher=m)

        clear = m._cache.clear if name == "lexicon" else lambda: None
        results["us_per_caption"][name] = _us_per_caption(align, everything, seconds, lambda: None)
        if name == "lexicon":
            results["us_per_caption"]["lexicon_cold"] = _us_per_caption(align, everything, seconds, clear)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="copa bench align", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--captions",
        type=Path,
        nargs="+",
        default=[p for p in DEFAULT_SETS if p.exists()],
        help="labelled caption files, JSON lines (default: the team's sets in tests/pipeline/data)",
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="time per speed figure (default: %(default)s)")
    parser.add_argument("--out", default="bench_out/align.json", help="JSON results (default: %(default)s)")
    args = parser.parse_args(argv)
    for path in args.captions:
        if not path.is_file():
            parser.error(f"--captions {path}: no such file")
    results = run(args.captions, args.seconds)
    for name, s in results["sets"].items():
        for rule in ("lexicon", "word_table"):
            a = s[rule]["all"]
            print(f"{name} ({s['captions']} captions) {rule:10}: precision {a['precision']:.3f}  recall "
                  f"{a['recall']:.3f}  F1 {a['f1']:.3f}  (tp {a['tp']}, fp {a['fp']}, fn {a['fn']})")  # fmt: skip
    for rule, sets in results["without"].items():
        figures = "; ".join(f"{n}: {a['precision']:.3f} / {a['recall']:.3f}" for n, a in sets.items())
        print(f"without {rule:13}: precision / recall {figures}")
    speed = results["us_per_caption"]
    print(f"align_by_labels: {speed['lexicon']:.1f} us/caption ({speed['lexicon_cold']:.1f} with the word cache "
          f"cleared each pass); word table {speed['word_table']:.1f}: x{speed['lexicon'] / speed['word_table']:.2f} "
          f"(x{speed['lexicon_cold'] / speed['word_table']:.2f} cold)")  # fmt: skip
    write_report(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
