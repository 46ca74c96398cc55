"""Evaluation of a trained COPA model on held-out shards (DESIGN section 8; the paper's Figure 5 and retrieval).

- Detector: for every held-out (image, caption) pair whose caption names a box, the text-aware detector keeps
  ``keep_ratio`` of the patches; precision and recall of the kept patches against the PTA labels (coverage > tau).
  Chance (random patches) has recall = keep ratio and precision = the positive-patch fraction, reported beside.
- Retrieval: ITC embeddings of every image (from its own [CLS] query, as at inference) and every caption; text to
  image and image to text R@1/5/10 (an image counts as found by any of its captions). Optionally the top
  ``itm_rerank`` candidates of each query are re-ranked by the ITM head.
- Captions: greedy decoding, beside the reference captions, scored with BLEU-1..4, ROUGE-L and CIDEr-D
  (``model.caption_metrics``, the COCO caption evaluation's definitions) beside a constant-caption baseline. With
  a ``namer`` (text -> the object categories it names; ``jobs.evaluate`` passes the pipeline's COCO synonym
  matcher, which ``model`` may not import), the objects each caption names are checked against the picture's
  boxes: naming precision (named objects that are in the picture) beside chance (the same captions scored against
  the other pictures), and the share of pictures whose caption names at least one of their objects.

Images go through the loader's canonical path (the whole image resized to the model's square, no augmentation),
so labels are the stored ``pta.npy`` rows or, at another grid, recomputed from the boxes.

Shape legend: I images, C captions, G grid, N patches (G * G), K kept, E embedding width.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import webdataset as wds

from manifests.samples import Sample, decode_sample
from model.caption_metrics import caption_scores, tokenize
from model.copa import COPA
from model.cost import count
from model.loader import canonical_coverage, square_pixels, to_tensor
from model.tokenizer import CaptionTokenizer


@dataclass
class EvalSet:
    """Held-out samples in model input form: images, every caption, and per caption its label grid."""

    keys: list[str]
    images: torch.Tensor  # uint8 [I, S, S, 3], the canonical pixels (a quarter of float: COCO's 5k test at 384 px
    # is 2.2 GB); ``pixels`` gives model input
    jpegs: list[bytes]  # the stored images, for pictures
    captions: list[str]  # [C], all captions of all images
    caption_image: list[int]  # [C] -> index of its image
    words: list[list[str]]  # [C] matched words of each caption
    coverage: np.ndarray  # uint8 [C, G, G] (zeros for captions without relevant boxes)
    labelled: np.ndarray  # bool [C]: the image has boxes and the caption names at least one
    box_labels: list[list[str]]  # [I] the labels of each image's boxes
    boxes: np.ndarray  # float [C, 4]: each caption's first relevant box (normalized x0, y0, x1, y1), NaN if none;
    # for a referring expression, its referent

    def pixels(self, index, device: str | torch.device = "cpu") -> torch.Tensor:
        """Model input [n, 3, S, S] of the images at ``index`` (a slice or a list of indices)."""
        return torch.stack([to_tensor(p) for p in self.images[index].numpy()]).to(device)


def read_samples(urls: list[str], limit: int) -> Iterator[Sample]:
    """Up to ``limit`` decodable samples of ``urls`` in shard order; bad ones are skipped (the loader counts them)."""
    seen = 0
    for item in wds.tarfile_to_samples(handler=wds.warn_and_continue)({"url": u} for u in urls):
        members = {k: v for k, v in item.items() if not k.startswith("__")}
        try:
            sample = decode_sample(item["__key__"], members)
        except (ValueError, TypeError, KeyError):
            continue
        yield sample
        seen += 1
        if seen >= limit:
            return


def eval_set(samples: Iterable[Sample], img_size: int, patch_size: int, source: str = "the samples") -> EvalSet:
    """``samples`` in model input form; images that do not decode are skipped, none at all is an error."""
    grid = img_size // patch_size
    keys, images, jpegs, captions, caption_image, words, coverage, labelled, box_labels, boxes = ([] for _ in range(10))
    for sample in samples:
        try:
            pixels = square_pixels(sample.image, img_size)  # as the loader does without augmentation
        except (OSError, ValueError):
            continue
        meta, index = sample.meta, len(keys)
        keys.append(sample.key)
        images.append(torch.from_numpy(pixels))
        jpegs.append(sample.image)
        box_labels.append(list(meta["box_labels"]))
        grids = canonical_coverage(sample, list(range(len(meta["captions"]))), grid)
        for c, caption in enumerate(meta["captions"]):
            captions.append(caption)
            caption_image.append(index)
            words.append(list(meta["relevant"][c]["words"]))
            coverage.append(grids[c])
            labelled.append(sample.pta is not None and len(meta["relevant"][c]["boxes"]) > 0)
            group = meta["relevant"][c]["boxes"]
            boxes.append(meta["boxes"][group[0]] if group else [float("nan")] * 4)
    if not keys:
        raise ValueError(f"no decodable samples in {source}")
    return EvalSet(
        keys,
        torch.stack(images),
        jpegs,
        captions,
        caption_image,
        words,
        np.stack(coverage),
        np.array(labelled),
        box_labels,
        np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
    )


def load_eval_set(urls: list[str], img_size: int, patch_size: int, max_images: int) -> EvalSet:
    source = f"{urls[:3]}{'...' if len(urls) > 3 else ''}"
    return eval_set(read_samples(urls, max_images), img_size, patch_size, source)


def slices(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` that cover ``range(n)``: the batches of an evaluation."""
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


@torch.no_grad()
def detector_scores(
    model: COPA, data: EvalSet, tokenizer: CaptionTokenizer, keep_ratio: float, tau: float, batch_size: int, device
) -> dict:
    """Precision and recall of the last detector's kept patches on the labelled pairs, micro-averaged."""
    layers = model.cfg.vision.detect_layers
    model.set_detection(layers, (keep_ratio,) * len(layers))
    pairs = np.flatnonzero(data.labelled)
    hits = kept_total = positives = full = 0
    for part in slices(len(pairs), batch_size):
        idx = pairs[part]
        tokens = tokenizer([data.captions[i] for i in idx])
        image = data.pixels([data.caption_image[i] for i in idx], device)
        out = model.detect(image, tokens["input_ids"].to(device), tokens["attention_mask"].to(device))
        kept_BK = out.kept_idx[-1].cpu()
        positive_BN = torch.from_numpy(data.coverage[idx].reshape(len(idx), -1) > tau * 255)
        kept_BN = torch.zeros_like(positive_BN).scatter_(1, kept_BK, True)
        hits += int((kept_BN & positive_BN).sum())
        kept_total += int(kept_BN.sum())
        positives += int(positive_BN.sum())
        full += int(((kept_BN & positive_BN).sum(1) == positive_BN.sum(1)).sum())
    n = len(pairs)
    return {
        "keep_ratio": keep_ratio,
        "pairs": n,
        "precision": hits / max(1, kept_total),
        "recall": hits / max(1, positives),
        "all_positives_kept": full / max(1, n),
        "chance_precision": positives / max(1, n * data.coverage[0].size),
        "chance_recall": kept_total / max(1, n * data.coverage[0].size),
    }


def recall_at(ranks: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Share of queries whose first correct answer ranks below k (ranks start at 0)."""
    return {f"R@{k}": float((ranks < k).mean()) for k in ks}


def mean_recall(t2i: np.ndarray, i2t: np.ndarray) -> float:
    """The mean of R@1, R@5 and R@10 in both directions: the single retrieval figure ALBEF and BLIP report."""
    return float(np.mean([*recall_at(t2i).values(), *recall_at(i2t).values()]))


def retrieval_ranks(sim_CI: np.ndarray, caption_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of the right answer: text->image per caption [C], image->text per image [I] (best of its captions)."""
    num_images = sim_CI.shape[1]
    order_CI = np.argsort(-sim_CI, axis=1, kind="stable")
    t2i = np.argmax(order_CI == caption_image[:, None], axis=1)
    order_IC = np.argsort(-sim_CI.T, axis=1, kind="stable")
    is_own_IC = caption_image[order_IC] == np.arange(num_images)[:, None]
    i2t = np.argmax(is_own_IC, axis=1)
    return t2i, i2t


@torch.no_grad()
def itc_similarities(model: COPA, data: EvalSet, tokenizer: CaptionTokenizer, batch_size: int, device) -> np.ndarray:
    """Cosine similarities [C, I] of every caption's and every image's ITC embeddings (the image from its own
    [CLS] query, as at inference)."""
    img_IE = torch.cat([model.encode_image(data.pixels(s, device)).cpu() for s in slices(len(data.keys), batch_size)])
    txt = []
    for s in slices(len(data.captions), batch_size):
        tokens = tokenizer(data.captions[s])
        txt.append(model.encode_text(tokens["input_ids"].to(device), tokens["attention_mask"].to(device)).cpu())
    return (torch.cat(txt) @ img_IE.t()).numpy()


def recall_figures(sim_CI: np.ndarray, caption_image: np.ndarray) -> dict:
    """R@1/5/10 both ways and their mean, for similarities [C, I]."""
    t2i, i2t = retrieval_ranks(sim_CI, caption_image)
    return {"text_to_image": recall_at(t2i), "image_to_text": recall_at(i2t), "mean_recall": mean_recall(t2i, i2t)}


@torch.no_grad()
def retrieval_scores(
    model: COPA, data: EvalSet, tokenizer: CaptionTokenizer, batch_size: int, device, itm_rerank: int = 0
) -> dict:
    sim_CI = itc_similarities(model, data, tokenizer, batch_size, device)
    owner = np.asarray(data.caption_image)
    if itm_rerank:
        sim_CI = rerank_with_itm(model, data, tokenizer, sim_CI, itm_rerank, batch_size, device)[0]
    return {
        "images": len(data.keys),
        "captions": len(data.captions),
        "itm_rerank": itm_rerank,
        **recall_figures(sim_CI, owner),
        "chance_text_to_image_R@1": 1 / len(data.keys),
        "chance_image_to_text_R@1": float(np.mean([np.mean(owner == i) for i in range(len(data.keys))])),
    }


def rerank_with_itm(
    model: COPA, data: EvalSet, tokenizer: CaptionTokenizer, sim_CI: np.ndarray, k: int, batch_size: int, device
) -> tuple[np.ndarray, int, int]:
    """The top ``k`` images of each caption and the top ``k`` captions of each image re-scored by ITM (each pair's
    own caption drives the detector): ITM probability plus ITC similarity, as BLIP scores them, lifted above every
    other pair, which keeps its ITC order below. (ALBEF's ITM probability alone throws the ITC order of the top
    ``k`` away, which costs recall where ITM is weaker than ITC.) Pairs go in image order, so the ViT blocks before
    the detector run once per image of a batch (``COPA.itm_score_shared``). Returns the scores, the pairs ITM
    scored and the images it encoded."""
    out = sim_CI.copy()
    k_img, k_txt = min(k, sim_CI.shape[1]), min(k, sim_CI.shape[0])
    top_img_Ck = np.argsort(-sim_CI, axis=1, kind="stable")[:, :k_img]
    top_txt_kI = np.argsort(-sim_CI, axis=0, kind="stable")[:k_txt]
    pairs = {(int(i), c) for c in range(sim_CI.shape[0]) for i in top_img_Ck[c]}
    pairs |= {(i, int(c)) for i in range(sim_CI.shape[1]) for c in top_txt_kI[:, i]}
    pairs = sorted(pairs)  # by image
    encoded = 0
    for s in slices(len(pairs), batch_size):
        chunk = pairs[s]
        images, where = np.unique([i for i, _ in chunk], return_inverse=True)
        shared_UND = model.vision.forward_shared(data.pixels(images.tolist(), device))
        encoded += len(images)
        tokens = tokenizer([data.captions[c] for _, c in chunk])
        ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
        p = model.itm_score_shared(shared_UND[torch.from_numpy(where).to(device)], ids, mask).cpu()
        for (i, c), prob in zip(chunk, p.tolist(), strict=True):
            out[c, i] = 3.0 + prob + sim_CI[c, i]  # >= 2: cosine similarities are at most 1
    return out, len(pairs), encoded


@torch.no_grad()
def write_captions(
    model: COPA,
    data: EvalSet,
    tokenizer: CaptionTokenizer,
    images: list[int],
    batch_size: int,
    device,
    beams: int = 1,
    prompt_ids: torch.Tensor | None = None,
) -> list[dict]:
    """Captions of the images at ``images`` (greedy, or beam search with ``beams`` > 1, after ``prompt_ids``), each
    beside its references."""
    ids = []
    prompt = None if prompt_ids is None else prompt_ids.to(device)
    for s in slices(len(images), batch_size):
        ids += model.generate(data.pixels(images[s], device), prefix_ids=prompt, beams=beams).cpu().tolist()
    owner = np.asarray(data.caption_image)
    return [
        {
            "key": data.keys[i],
            "generated": tokenizer.decode(row),
            "references": [data.captions[c] for c in np.flatnonzero(owner == i)],
        }
        for i, row in zip(images, ids, strict=True)
    ]


def caption_metric_scores(captioned: list[dict]) -> dict:
    """BLEU-1..4, ROUGE-L and CIDEr-D of captions against their references (``write_captions`` output),
    beside the same metrics for a constant caption: the most frequent reference of the set, given to every image.
    A model that only learned the corpus's commonest sentence scores what that baseline scores."""
    refs = {c["key"]: c["references"] for c in captioned}
    generated = {c["key"]: c["generated"] for c in captioned}
    common = Counter(tokenize(r) for c in captioned for r in c["references"]).most_common(1)[0][0]
    return {
        "images": len(captioned),
        "scores": caption_scores(refs, generated),
        "constant_caption": common,
        "constant_caption_scores": caption_scores(refs, dict.fromkeys(refs, common)),
    }


Namer = Callable[..., set[str]]  # (text, categories in the picture or None) -> the object categories the text names


def naming_scores(generated: list[str], box_labels: list[list[str]], namer: Namer) -> dict:
    """Do the captions name objects that are in their pictures? Precision of the named objects against the
    pictures' box labels (both through ``namer``), beside chance: the expected precision of the same captions
    against a different picture of the set, chosen uniformly. The namer sees the picture's categories, since a
    generic word ("bike") names a category only where the picture has exactly one it can mean."""
    present = [set().union(*(namer(label) for label in labels)) for labels in box_labels]
    named = [namer(text, p) for text, p in zip(generated, present, strict=True)]
    n, total = len(named), sum(map(len, named))
    hits = sum(len(a & b) for a, b in zip(named, present, strict=True))
    cross = named_elsewhere = 0  # each caption against every other picture
    for i, text in enumerate(generated):
        for j, p in enumerate(present):
            if j != i:
                names = namer(text, p)
                cross, named_elsewhere = cross + len(names & p), named_elsewhere + len(names)
    return {
        "images": n,
        "named_objects": total,
        "distinct_captions": len(set(generated)),
        "precision": hits / max(1, total),
        "chance_precision": cross / max(1, named_elsewhere),
        "images_named_right": sum(bool(a & b) for a, b in zip(named, present, strict=True)) / max(1, n),
    }


@torch.no_grad()
def detector_examples(model: COPA, data: EvalSet, tokenizer: CaptionTokenizer, num: int, device) -> list[dict]:
    """Inputs of ``manifests.pictures.detector_panel`` for the first ``num`` labelled pairs (one per image)."""
    firsts, seen = [], set()
    for c in np.flatnonzero(data.labelled):
        if data.caption_image[c] not in seen:
            seen.add(data.caption_image[c])
            firsts.append(int(c))
        if len(firsts) == num:
            break
    return detector_pictures(model, data, tokenizer, firsts, device)


@torch.no_grad()
def detector_pictures(
    model: COPA, data: EvalSet, tokenizer: CaptionTokenizer, captions: list[int], device
) -> list[dict]:
    """Inputs of ``manifests.pictures.detector_panel`` for the pairs of ``data.captions[c]`` (c in ``captions``)
    and their images, in one forward pass: the first detector's scores, the last one's kept patches."""
    if not captions:
        return []
    tokens = tokenizer([data.captions[c] for c in captions])
    image = data.pixels([data.caption_image[c] for c in captions], device)
    out = model.detect(image, tokens["input_ids"].to(device), tokens["attention_mask"].to(device))
    N = data.coverage[0].size
    examples = []
    for b, c in enumerate(captions):
        scores = torch.empty(N)  # the first detector scores every patch, so this fills all N
        scores[out.scored_idx[0][b].cpu()] = out.logits[0][b].float().cpu()
        examples.append(
            {
                "key": data.keys[data.caption_image[c]],
                "image": data.jpegs[data.caption_image[c]],
                "caption": data.captions[c],
                "words": data.words[c],
                "coverage": data.coverage[c],
                "scores": scores.numpy(),
                "kept": out.kept_idx[-1][b].cpu().numpy(),
            }
        )
    return examples


def evaluate(
    model: COPA,
    tokenizer: CaptionTokenizer,
    urls: list[str],
    keep_ratios: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7),
    max_images: int = 500,
    batch_size: int = 32,
    itm_rerank: int = 0,
    num_captions: int = 8,
    num_examples: int = 8,
    device: str | torch.device = "cpu",
    namer: Namer | None = None,
    naming_images: int = 100,
    metric_images: int = 100,
) -> tuple[dict, list[dict]]:
    """All figures (a JSON-able dict) and the detector examples for pictures (at the model's own keep ratio).

    The first ``max(num_captions, metric_images)`` images are captioned greedily: ``num_captions`` of them are
    listed, ``metric_images`` scored by ``caption_metric_scores``. With a ``namer``, up to ``naming_images``
    pictures with boxes are captioned and scored by ``naming_scores``.
    """
    v = model.cfg.vision
    data = load_eval_set(urls, v.img_size, v.patch_size, max_images)
    own = (v.detect_layers, v.keep_ratios)
    model.eval()
    try:
        detector = [
            detector_scores(model, data, tokenizer, r, model.cfg.loss.tau, batch_size, device) for r in keep_ratios
        ]
        model.set_detection(*own)
        result = {
            "shards": urls,
            "keep_ratios_trained": list(v.keep_ratios),
            "labelled_pairs": int(data.labelled.sum()),
            "detector": detector,
            "retrieval": retrieval_scores(model, data, tokenizer, batch_size, device, itm_rerank),
        }
        captioned = write_captions(
            model,
            data,
            tokenizer,
            list(range(min(max(num_captions, metric_images), len(data.keys)))),
            batch_size,
            device,
        )
        result["captions"] = captioned[:num_captions]
        if metric_images:
            result["caption_metrics"] = caption_metric_scores(captioned[:metric_images])
        if namer is not None:
            boxed = [i for i, labels in enumerate(data.box_labels) if labels][:naming_images]
            named = write_captions(model, data, tokenizer, boxed, batch_size, device)
            generated = [c["generated"] for c in named]
            result["naming"] = naming_scores(generated, [data.box_labels[i] for i in boxed], namer)
        examples = detector_examples(model, data, tokenizer, num_examples, device)
    finally:
        model.set_detection(*own)
    return result, examples


# ---- downstream tasks: the metric, throughput and FLOPs at each keep ratio (the paper's trade-off) ----------------


def _set_keep_ratio(model: COPA, keep_ratio: float) -> None:
    layers = model.cfg.vision.detect_layers
    model.set_detection(layers, (keep_ratio,) * len(layers))


def _closest(rows: list[dict], keep_ratio: float) -> int:
    return min(range(len(rows)), key=lambda i: abs(rows[i]["keep_ratio"] - keep_ratio))


@torch.no_grad()
def retrieval_task(
    model: COPA,
    tokenizer: CaptionTokenizer,
    data: EvalSet,
    keep_ratios: tuple[float, ...] = (1.0, 0.7, 0.5, 0.3),
    k: int = 128,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    num_examples: int = 6,
) -> dict:
    """The ALBEF/BLIP retrieval protocol: ITC similarities over all pairs, then each query's top ``k`` re-ranked by
    ITM with the pair's text driving the detector, at each keep ratio of the detector; R@1/5/10 both ways and their
    mean, ITM pairs per second and GFLOPs per ITM pair (counted) beside. ITC alone (no re-ranking) is reported
    first. ``examples``: the first ``num_examples`` captions' top 5 images at the keep ratio nearest the model's."""
    own = (model.cfg.vision.detect_layers, model.cfg.vision.keep_ratios)
    model.eval()
    owner = np.asarray(data.caption_image)
    sim_CI = itc_similarities(model, data, tokenizer, batch_size, device)
    rows, reranked = [], []
    # FLOPs, counted on (caption, its own image) pairs: the blocks before the detector per image, the rest per pair
    probe = list(range(min(batch_size, len(data.captions))))
    tokens = tokenizer([data.captions[c] for c in probe])
    ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
    probe_pixels = data.pixels(owner[probe].tolist(), device)
    shared_flops = count(lambda: model.vision.forward_shared(probe_pixels)).total_flops / len(probe)
    probe_shared = model.vision.forward_shared(probe_pixels)
    try:
        for ratio in keep_ratios:
            _set_keep_ratio(model, ratio)
            # counted first, which also warms this keep ratio's shapes up before the timed pass
            pair_flops = count(lambda: model.itm_score_shared(probe_shared, ids, mask)).total_flops / len(probe)
            start = time.perf_counter()
            scores_CI, pairs, encoded = rerank_with_itm(model, data, tokenizer, sim_CI, k, batch_size, device)
            seconds = time.perf_counter() - start
            reranked.append(scores_CI)
            rows.append({
                "keep_ratio": ratio, **recall_figures(scores_CI, owner), "itm_pairs": pairs,
                "itm_pairs_per_s": pairs / seconds,
                "gflops_per_pair": (pair_flops + shared_flops * encoded / pairs) / 1e9,
            })  # fmt: skip
    finally:
        model.set_detection(*own)
    chosen = reranked[_closest(rows, own[1][0])] if rows else sim_CI
    examples = []
    for c in range(min(num_examples, len(data.captions))):
        top = np.argsort(-chosen[c], kind="stable")[:5]
        examples.append({
            "caption": data.captions[c], "key": data.keys[owner[c]], "top": [data.keys[i] for i in top],
            "images": [data.jpegs[i] for i in top], "correct": [bool(i == owner[c]) for i in top],
            "scores": [float(chosen[c, i]) for i in top],
        })  # fmt: skip
    return {
        "task": "retrieval",
        "images": len(data.keys),
        "captions": len(data.captions),
        "itm_rerank": k,
        "keep_ratio_trained": own[1][0],
        "itc": recall_figures(sim_CI, owner),
        "by_keep_ratio": rows,
        "chance_text_to_image_R@1": 1 / len(data.keys),
        "examples": examples,
    }


@torch.no_grad()
def caption_task(
    model: COPA,
    tokenizer: CaptionTokenizer,
    data: EvalSet,
    keep_ratios: tuple[float, ...] = (1.0, 0.7, 0.5, 0.3),
    beams: int = 1,
    prompt: str = "",
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    num_examples: int = 8,
) -> dict:
    """Captions of every image of ``data`` (greedy, or beam search), after ``prompt``, at each keep ratio of the
    detector: BLEU-1..4, ROUGE-L and CIDEr-D against the references beside a constant caption, images per second,
    and GFLOPs per image (counted over the first batch's generation, whose length is the model's own)."""
    own = (model.cfg.vision.detect_layers, model.cfg.vision.keep_ratios)
    model.eval()
    prompt_ids = tokenizer.prompt(prompt)
    images = list(range(len(data.keys)))
    probe = data.pixels(slice(0, min(batch_size, len(images))), device)
    rows, captioned = [], []
    try:
        for ratio in keep_ratios:
            _set_keep_ratio(model, ratio)
            # counted first, which also warms this keep ratio's shapes up before the timed pass
            flops = count(lambda: model.generate(probe, prefix_ids=prompt_ids.to(device), beams=beams)).total_flops
            start = time.perf_counter()
            written = write_captions(model, data, tokenizer, images, batch_size, device, beams, prompt_ids)
            seconds = time.perf_counter() - start
            metrics = caption_metric_scores(written)
            captioned.append(written)
            rows.append({
                "keep_ratio": ratio, "scores": metrics["scores"], "images_per_s": len(images) / seconds,
                "gflops_per_image": flops / len(probe) / 1e9,
            })  # fmt: skip
    finally:
        model.set_detection(*own)
    return {
        "task": "caption",
        "images": len(images),
        "beams": beams,
        "prompt": prompt,
        "keep_ratio_trained": own[1][0],
        "by_keep_ratio": rows,
        "constant_caption": metrics["constant_caption"],
        "constant_caption_scores": metrics["constant_caption_scores"],
        "examples": captioned[_closest(rows, own[1][0])][:num_examples],
    }


__all__ = [
    "EvalSet",
    "caption_task",
    "detector_pictures",
    "eval_set",
    "evaluate",
    "load_eval_set",
    "recall_at",
    "retrieval_ranks",
    "retrieval_task",
]
