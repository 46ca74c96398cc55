"""VQA and visual grounding, measured at each detector setting: where the text is known before the image is
encoded, so the question or the expression drives the detector (the paper's Figure 1a/1c).

- **VQA**: every question of the split is answered, generatively (the decoder writes the answer after the question,
  greedy, as mPLUG) or, with ``candidates``, by ranking a fixed answer list (``COPA.rank_answers``, as ALBEF). The
  official accuracy per answer type (``model.vqa_metrics``), beside the majority-answer baseline: the commonest
  answer of each answer type, taken from the split itself (so no training-set majority can score higher).
- **Grounding**: every expression's box (``COPA.ground``: the detector's box moved by the box head); accuracy is
  IoU >= 0.5 with its referent, beside the best fixed box (the one box, among the split's own referents, that is
  right most often) and beside the detector's box alone (around the patches its first detector scores relevant).
- Each figure at every (detect layers, keep ratio) setting, with throughput (questions or expressions per second,
  timed here) and GFLOPs each, counted with ``torch.utils.flop_counter`` over the first batch (exact on any
  machine). At keep ratio 1.0 nothing is pruned wherever the detectors sit, so it is measured once.

Shape legend: C captions (questions, expressions), n of them in a batch, G grid, N patches.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pyarrow.parquet as pq
import torch

from model.copa import COPA
from model.cost import count
from model.evaluate import EvalSet, slices
from model.tokenizer import CaptionTokenizer
from model.tpd import detector_boxes
from model.vqa_metrics import (
    accuracy_by_type,
    best_fixed_box,
    box_iou,
    grounding_accuracy,
    majority_answers,
    normalize_answer,
)

Setting = tuple[tuple[int, ...], float]  # (detect layers, keep ratio of each)


def settings(layer_options: list[tuple[int, ...]], keep_ratios: tuple[float, ...]) -> list[Setting]:
    """Every (detect layers, keep ratio) pair, keep ratio 1.0 once (nothing is pruned there, wherever the detectors
    sit)."""
    out = [(layer_options[0], 1.0)] if 1.0 in keep_ratios else []
    return out + [(layers, r) for layers in layer_options for r in keep_ratios if r != 1.0]


@contextmanager
def detection(model: COPA, setting: Setting) -> Iterator[None]:
    """The model's detectors at ``setting`` (detect layers, one keep ratio for all) inside the block."""
    own = (model.cfg.vision.detect_layers, model.cfg.vision.keep_ratios)
    layers, ratio = setting
    model.set_detection(layers, (ratio,) * len(layers))
    try:
        yield
    finally:
        model.set_detection(*own)


def sweep(model: COPA, chosen: list[Setting], probe: Callable, run: Callable[[], tuple[object, int]]) -> list[dict]:
    """For each setting: the counted FLOPs of ``probe()`` (which also warms the setting's shapes up), then ``run()``
    timed; rows of {detect_layers, keep_ratio, output, items_per_s, flops}."""
    rows = []
    for layers, ratio in chosen:
        with detection(model, (layers, ratio)):
            flops = count(probe).total_flops
            start = time.perf_counter()
            output, items = run()
            seconds = time.perf_counter() - start
        rows.append({"detect_layers": list(layers), "keep_ratio": ratio, "output": output,
                     "items_per_s": items / seconds, "flops": flops})  # fmt: skip
    return rows


def _trained_row(rows: list[dict], model: COPA) -> int:
    """The index of the row nearest the setting the model was trained at."""
    layers, ratio = list(model.cfg.vision.detect_layers), model.cfg.vision.keep_ratios[0]
    return min(range(len(rows)), key=lambda i: (rows[i]["detect_layers"] != layers, abs(rows[i]["keep_ratio"] - ratio)))


def _inputs(data: EvalSet, tokenizer: CaptionTokenizer, part: list[int], device, shift: int = 0) -> tuple:
    """Pixels, ids and mask of the texts ``part``, each with its own picture, or the picture ``shift`` images on."""
    tokens = tokenizer([data.captions[c] for c in part])
    image = data.pixels([(data.caption_image[c] + shift) % len(data.keys) for c in part], device)
    return image, tokens["input_ids"].to(device), tokens["attention_mask"].to(device)


# ---- VQA ----------------------------------------------------------------------------------------------------------


def load_answers_for(data: EvalSet, path: str) -> list[dict]:
    """Per caption (question) of ``data``: {question_id, answers, answer_type} from an answers table
    (``<dataset>/answers.parquet``); a question the table does not have gets no answers and is not scored."""
    table = pq.read_table(path, columns=["key", "index", "question_id", "answers", "answer_type"]).to_pylist()
    by_question = {(r["key"], r["index"]): r for r in table}
    out, first = [], {}
    for c, i in enumerate(data.caption_image):
        first.setdefault(i, c)
        row = by_question.get((data.keys[i], c - first[i]), {})
        out.append({"question_id": row.get("question_id"), "answers": row.get("answers") or [],
                    "answer_type": row.get("answer_type") or ""})  # fmt: skip
    return out


def answer_list(path: str, size: int = 3129) -> list[str]:
    """Candidate answers for ranking: a JSON list of strings (ALBEF's ``answer_list.json``), or the ``size``
    commonest normalized answers of an answers table (3,129: VQA v2's usual list, answers given 9 times or more)."""
    if path.endswith(".parquet"):
        answers = pq.read_table(path, columns=["answers"])["answers"].to_pylist()
        counts = Counter(normalize_answer(a) for row in answers for a in row)
        return [a for a, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:size]]
    with open(path, encoding="utf-8") as f:
        candidates = json.load(f)
    if not isinstance(candidates, list) or not candidates or not all(isinstance(a, str) for a in candidates):
        raise ValueError(f"{path}: an answer list must be a JSON list of strings")
    return candidates


@torch.no_grad()
def answer_questions(
    model: COPA,
    tokenizer: CaptionTokenizer,
    data: EvalSet,
    questions: list[int],
    batch_size: int,
    device,
    candidates: list[str] | None = None,
    k: int = 128,
    max_len: int = 8,
    shift: int = 0,
) -> list[str]:
    """The answers to ``data.captions[c]`` for c in ``questions``: written greedily by the decoder, or the best of
    ``candidates`` (``COPA.rank_answers``, its top ``k`` first tokens re-scored). With ``shift``, each question is
    asked of the picture ``shift`` images after its own."""
    ranked = tokenizer(candidates)["input_ids"].to(device) if candidates else None
    out = []
    for s in slices(len(questions), batch_size):
        image, ids, mask = _inputs(data, tokenizer, questions[s], device, shift)
        if ranked is None:
            out += [tokenizer.decode(row) for row in model.generate(image, max_len, prefix_ids=ids).cpu().tolist()]
        else:
            out += [candidates[i] for i in model.rank_answers(image, ids, mask, ranked, k).tolist()]
    return out


@torch.no_grad()
def vqa_task(
    model: COPA,
    tokenizer: CaptionTokenizer,
    data: EvalSet,
    answers: list[dict],
    chosen: list[Setting],
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    candidates: list[str] | None = None,
    k: int = 128,
    num_examples: int = 12,
) -> dict:
    """Every question of ``data`` answered at each setting; the official accuracy per answer type (questions with
    answers), questions per second and GFLOPs per question; the official results file's rows
    ({question_id, answer}) and examples at the setting nearest the model's own. Also, at that setting, the share
    of answers that change when each question is asked of another picture: near 0, the model answers from the
    question alone (the language prior), whatever its accuracy."""
    model.eval()
    questions = list(range(len(data.captions)))
    scored = [c for c in questions if answers[c]["answers"]]
    probe = questions[:batch_size]

    def run() -> tuple[list[str], int]:
        return answer_questions(model, tokenizer, data, questions, batch_size, device, candidates, k), len(questions)

    def probe_pass() -> list[str]:
        return answer_questions(model, tokenizer, data, probe, batch_size, device, candidates, k)

    def records(predicted: list[str]) -> list[tuple[str, list[str], str]]:
        return [(predicted[c], answers[c]["answers"], answers[c]["answer_type"]) for c in scored]

    rows = sweep(model, chosen, probe_pass, run)
    majority = majority_answers([(a, t) for _, a, t in records(questions)]) if scored else {}
    baseline = [majority.get(answers[c]["answer_type"], "") for c in questions]
    own = _trained_row(rows, model)
    trained = rows[own]["output"]
    # does the model look? the same questions asked of the next picture, at the same setting: how many answers change
    with detection(model, chosen[own]):
        look = answer_questions(model, tokenizer, data, questions, batch_size, device, candidates, k, shift=1)
    table = [
        {"detect_layers": r["detect_layers"], "keep_ratio": r["keep_ratio"],
         **(accuracy_by_type(records(r["output"])) if scored else {}),
         "questions_per_s": r["items_per_s"], "gflops_per_question": r["flops"] / len(probe) / 1e9}
        for r in rows
    ]  # fmt: skip
    examples = [
        {"key": data.keys[data.caption_image[c]], "question": data.captions[c], "answer": trained[c],
         "answers": answers[c]["answers"], "answer_type": answers[c]["answer_type"]}
        for c in questions[:num_examples]
    ]  # fmt: skip
    return {
        "task": "vqa",
        "images": len(data.keys),
        "questions": len(questions),
        "scored_questions": len(scored),
        "answering": "ranked" if candidates else "generated",
        "trained_row": own,
        "candidates": len(candidates) if candidates else 0,
        "by_setting": table,
        "answers_changed_with_another_picture": sum(a != b for a, b in zip(trained, look, strict=True))
        / len(questions),
        "majority_answers": majority,
        "majority_baseline": accuracy_by_type(records(baseline)) if scored else {},
        "results": [{"question_id": answers[c]["question_id"], "answer": trained[c]} for c in questions],
        "examples": examples,
    }


# ---- grounding ----------------------------------------------------------------------------------------------------


@torch.no_grad()
def ground_expressions(
    model: COPA, tokenizer: CaptionTokenizer, data: EvalSet, expressions: list[int], batch_size: int, device
) -> tuple[np.ndarray, np.ndarray]:
    """The box head's boxes [n, 4] for ``data.captions[c]`` (c in ``expressions``) and the detector's boxes [n, 4]."""
    heads, detected = [], []
    for s in slices(len(expressions), batch_size):
        box, vis = model.ground(*_inputs(data, tokenizer, expressions[s], device))
        heads.append(box.cpu().numpy())
        detected.append(detector_boxes(vis.logits[0], vis.scored_idx[0], model.cfg.vision.grid_size).cpu().numpy())
    return np.concatenate(heads), np.concatenate(detected)


@torch.no_grad()
def grounding_task(
    model: COPA,
    tokenizer: CaptionTokenizer,
    data: EvalSet,
    chosen: list[Setting],
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    num_examples: int = 8,
) -> dict:
    """Every expression with a referent, grounded at each setting: accuracy (IoU >= 0.5) of the box head and of the
    detector's box, expressions per second, GFLOPs per expression; beside the best fixed box. Examples (for
    pictures) at the setting nearest the model's own."""
    model.eval()
    expressions = [c for c in range(len(data.captions)) if np.isfinite(data.boxes[c]).all()]
    if not expressions:
        raise ValueError("no expression has a referent box: grounding needs shards packed from a refexp source")
    gold = data.boxes[expressions]
    probe = expressions[:batch_size]

    def run() -> tuple[tuple[np.ndarray, np.ndarray], int]:
        return ground_expressions(model, tokenizer, data, expressions, batch_size, device), len(expressions)

    rows = sweep(model, chosen, lambda: model.ground(*_inputs(data, tokenizer, probe, device)), run)
    fixed, fixed_accuracy = best_fixed_box(gold, gold)
    own = _trained_row(rows, model)
    head, detected = rows[own]["output"]
    ious = box_iou(head, gold)
    examples = [
        {"key": data.keys[data.caption_image[c]], "image": data.jpegs[data.caption_image[c]],
         "expression": data.captions[c], "gold": gold[j].tolist(), "predicted": head[j].tolist(),
         "detector_box": detected[j].tolist(), "iou": float(ious[j])}
        for j, c in enumerate(expressions[:num_examples])
    ]  # fmt: skip
    table = [
        {"detect_layers": r["detect_layers"], "keep_ratio": r["keep_ratio"],
         "accuracy": grounding_accuracy(r["output"][0], gold), "detector_accuracy":
         grounding_accuracy(r["output"][1], gold), "mean_iou": float(box_iou(r["output"][0], gold).mean()),
         "expressions_per_s": r["items_per_s"], "gflops_per_expression": r["flops"] / len(probe) / 1e9}
        for r in rows
    ]  # fmt: skip
    return {
        "task": "grounding",
        "images": len(data.keys),
        "expressions": len(expressions),
        "trained_row": own,
        "by_setting": table,
        "best_fixed_box": {"box": np.asarray(fixed).tolist(), "accuracy": fixed_accuracy},
        "examples": examples,
    }
