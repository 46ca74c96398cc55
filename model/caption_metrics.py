"""Caption metrics as the COCO caption evaluation computes them: BLEU-1..4, ROUGE-L and CIDEr-D.

The reference is the coco-caption code (``pycocoevalcap`` on PyPI); ``tests/model/test_caption_metrics.py`` checks
these functions against it on hand-made captions. They are written here rather than imported because the package
ships 100 MB of Java programs (PTB tokenizer, METEOR, SPICE) that a trainer has no use for, and it is a test
dependency only.

- **Input**: ``refs`` maps an image to its reference captions, ``hyps`` an image to one generated caption, both
  already tokenized: words joined by single spaces (``tokenize``).
- **Tokens**: the reference pipeline runs Stanford's PTB tokenizer (Java) and drops punctuation. ``tokenize``
  lower-cases, splits off punctuation and drops it, and keeps a word's apostrophe suffix as its own token as PTB
  does ("man's" -> "man 's"). It agrees with PTB on plain English captions, not on every edge case (hyphens,
  numbers with commas).
- **BLEU** is corpus-level: clipped n-gram matches and candidate n-grams summed over all images, brevity penalty from
  each candidate's closest reference length (ties to the shorter), with the reference's smoothing constants.
- **ROUGE-L** per image: longest common subsequence against each reference, the best precision and the best recall
  combined as an F-measure with beta 1.2; averaged over images.
- **CIDEr-D** per image: TF-IDF n-gram vectors (n = 1..4, document frequencies over the references of the evaluated
  set), the candidate's weights clipped to the reference's, cosine per n, a Gaussian penalty on the length
  difference in words (sigma 6), averaged over n and references, times 10; averaged over images. (The reference
  counts bigrams for the length: the same difference for any two non-empty captions, and an empty candidate scores
  0 either way.)
- **METEOR and SPICE** are not computed: their reference implementations are Java programs.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

_TINY, _SMALL = 1e-15, 1e-9  # the reference BLEU's smoothing: a zero count gives a score of (almost) zero
_WORD = re.compile(r"[a-z0-9]+|'[a-z]+")


def tokenize(caption: str) -> str:
    """Lower case, punctuation dropped, an apostrophe suffix split off: "A Man's HAT." -> "a man 's hat"."""
    return " ".join(_WORD.findall(caption.lower()))


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def _check(refs: dict, hyps: dict) -> list:
    if refs.keys() != hyps.keys():
        raise ValueError(f"references for {len(refs)} images, candidates for {len(hyps)}: they must name the same")
    if any(not captions for captions in refs.values()):
        raise ValueError("every image needs at least one reference caption")
    return list(refs)


def bleu(refs: dict[object, list[str]], hyps: dict[object, str], n: int = 4) -> list[float]:
    """Corpus BLEU-1 .. BLEU-n."""
    correct, guess = np.zeros(n), np.zeros(n)
    test_len = ref_len = 0
    for image in _check(refs, hyps):
        words = hyps[image].split()
        counts = _ngrams(words, n)
        best: Counter = Counter()
        for ref in refs[image]:
            best |= _ngrams(ref.split(), n)  # per n-gram, its largest count in any reference
        for gram, count in counts.items():
            correct[len(gram) - 1] += min(count, best[gram])
        guess += [max(0, len(words) - k) for k in range(n)]
        test_len += len(words)
        ref_len += min((abs(len(r.split()) - len(words)), len(r.split())) for r in refs[image])[1]
    precisions = np.cumprod((correct + _TINY) / (guess + _SMALL))
    scores = precisions ** (1.0 / np.arange(1, n + 1))
    ratio = (test_len + _TINY) / (ref_len + _SMALL)
    if ratio < 1:
        scores *= math.exp(1 - 1 / ratio)
    return scores.tolist()


def _lcs(a: list[str], b: list[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        previous = 0
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], previous + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(refs: dict[object, list[str]], hyps: dict[object, str], beta: float = 1.2) -> float:
    """Mean ROUGE-L F-measure over images."""
    scores = []
    for image in _check(refs, hyps):
        candidate = hyps[image].split(" ")
        common = [(_lcs(ref.split(" "), candidate), len(ref.split(" "))) for ref in refs[image]]
        precision = max(lcs / len(candidate) for lcs, _ in common)
        recall = max(lcs / length for lcs, length in common)
        ok = precision and recall
        scores.append((1 + beta**2) * precision * recall / (recall + beta**2 * precision) if ok else 0.0)
    return float(np.mean(scores))


def cider_d(refs: dict[object, list[str]], hyps: dict[object, str], n: int = 4, sigma: float = 6.0) -> float:
    """Mean CIDEr-D over images (x10, as reported)."""
    images = _check(refs, hyps)
    ref_grams = {image: [_ngrams(r.split(), n) for r in refs[image]] for image in images}
    document_frequency: Counter = Counter()
    for grams in ref_grams.values():
        document_frequency.update(set().union(*grams))
    log_images = math.log(len(images))

    def vector(counts: Counter) -> tuple[list[dict], np.ndarray]:
        weights: list[dict] = [{} for _ in range(n)]
        for gram, count in counts.items():
            weights[len(gram) - 1][gram] = count * (log_images - math.log(max(1.0, document_frequency[gram])))
        return weights, np.sqrt([sum(w * w for w in level.values()) for level in weights])

    scores = []
    for image in images:
        words = hyps[image].split()
        hyp, hyp_norm = vector(_ngrams(words, n))
        total = np.zeros(n)
        for text, grams in zip(refs[image], ref_grams[image], strict=True):
            ref, ref_norm = vector(grams)
            penalty = math.exp(-((len(words) - len(text.split())) ** 2) / (2 * sigma**2))
            for k in range(n):
                value = sum(min(w, ref[k].get(gram, 0.0)) * ref[k].get(gram, 0.0) for gram, w in hyp[k].items())
                if hyp_norm[k] and ref_norm[k]:
                    value /= hyp_norm[k] * ref_norm[k]
                total[k] += value * penalty
        scores.append(total.mean() / len(ref_grams[image]) * 10.0)
    return float(np.mean(scores))


def caption_scores(refs: dict[object, list[str]], hyps: dict[object, str]) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L and CIDEr-D of raw captions, tokenized here."""
    refs = {image: [tokenize(r) for r in captions] for image, captions in refs.items()}
    hyps = {image: tokenize(caption) for image, caption in hyps.items()}
    scores = {f"BLEU-{k}": value for k, value in enumerate(bleu(refs, hyps), 1)}
    return scores | {"ROUGE-L": rouge_l(refs, hyps), "CIDEr-D": cider_d(refs, hyps)}
