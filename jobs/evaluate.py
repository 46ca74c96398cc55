"""``copa evaluate``: detector precision/recall at several keep ratios, retrieval R@1/5/10, and greedy captions.

Greedy captions are also scored with BLEU-1..4, ROUGE-L and CIDEr-D against the held-out references, beside a
constant caption (the set's most frequent reference).

    copa evaluate --checkpoint RUN [--shards DATASET_OR_PATTERN] [--out RUN/eval]
    copa evaluate --task retrieval|caption --checkpoint RUN --shards TEST_SHARDS [--keep-ratios 1.0,0.7,0.5,0.3]
    copa evaluate --task vqa|grounding --checkpoint RUN --shards TEST_SHARDS [--detect-layers 3 6]

``--task retrieval`` is the ALBEF/BLIP protocol (ITC over all pairs, each query's top ``--itm-rerank`` re-ranked by
ITM); ``--task caption`` captions every image read (greedy, or ``--beams N``, after the run's prompt) and scores
them. Either is measured at each keep ratio with its throughput and counted GFLOPs, and writes ``eval.json`` and
``report.md`` (with ``retrieval_examples.png``: queries and their top 5, the right images framed in green).
``--task vqa`` answers every question (generated, or ranked from ``--answer-list``) and scores it with the
official VQA accuracy per answer type (the answers come from the shards' ``answers.parquet``), writing the
official results file ``vqa_results.json`` too; ``--task grounding`` boxes every referring expression (IoU >= 0.5
with its referent). Both at each keep ratio and each of ``--detect-layers``, with ``tradeoff.png`` (accuracy
against GFLOPs, the paper's Figure 1a/1c) and example pictures.

``--checkpoint`` is a checkpoint file or a run folder (its latest checkpoint). Without ``--shards`` the run's
held-out shards (``--holdout-shards`` at training time) are used. Writes ``eval.json``, ``detector_recall.png``
(precision and recall of the kept patches against the keep ratio, with chance; the paper's Figure 5) and
``detector_picks.png`` (labels | detector scores | kept patches for held-out images; the paper's Figure 4).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jobs.cli import job_errors
from jobs.report import plot_detector, plot_tradeoff
from manifests import pictures
from model.checkpoint import load_checkpoint, load_model
from model.downstream import answer_list, grounding_task, load_answers_for, settings, vqa_task
from model.evaluate import caption_task, detector_pictures, evaluate, load_eval_set, retrieval_task
from model.loader import answers_table
from model.trainer import split_holdout
from pipeline.align import coco_categories_in

TASKS = ("all", "retrieval", "caption", "vqa", "grounding")
DEFAULT_KEEP = ("0.1,0.3,0.5,0.7", "1.0,0.7,0.5,0.3")  # all; a task


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="copa evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint file, or a run folder (its latest checkpoint)")
    p.add_argument("--shards", help="held-out shards: folder, brace pattern (default: the run's held-out shards)")
    p.add_argument("--out", help="output folder (default: eval/ beside the run's checkpoints folder)")
    p.add_argument(
        "--task",
        choices=TASKS,
        default="all",
        help="all: detector, retrieval and captions of a pretraining run; retrieval, caption, vqa or grounding: that "
        "task's protocol at each keep ratio, with throughput and GFLOPs (default: %(default)s)",
    )
    p.add_argument(
        "--keep-ratios",
        help="detector keep ratios (default: 0.1,0.3,0.5,0.7 for all, 1.0,0.7,0.5,0.3 for a task)",
    )
    p.add_argument("--max-images", type=int, default=500, help="images read (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="pairs per forward pass (default: %(default)s)")
    p.add_argument(
        "--itm-rerank", type=int, help="re-rank each query's top K by ITM; 0 off (default: 128 for retrieval, else 0)"
    )
    p.add_argument("--beams", type=int, default=1, help="--task caption: beam size, 1 greedy (default: %(default)s)")
    p.add_argument("--prompt", help="--task caption: the prompt the decoder continues (default: the run's)")
    p.add_argument("--detect-layers", nargs="+", metavar="L[,L]",
                   help="--task vqa|grounding: detector placements to measure, each comma-separated, one layer per "
                   "detector, e.g. '3 6' (default: the model's own)")  # fmt: skip
    p.add_argument("--answer-list", help="--task vqa: rank these answers (a JSON list, or an answers.parquet: its "
                   "commonest 3,129, VQA v2's usual list) instead of generating (default: generate)")  # fmt: skip
    p.add_argument("--captions", type=int, default=8, help="images to caption greedily (default: %(default)s)")
    p.add_argument(
        "--naming-images",
        type=int,
        default=100,
        help="pictures with boxes whose greedy captions are checked for naming their objects (default: %(default)s)",
    )
    p.add_argument(
        "--metric-images",
        type=int,
        default=100,
        help="images captioned greedily and scored with BLEU, ROUGE-L and CIDEr-D; 0 off (default: %(default)s)",
    )
    p.add_argument("--pictures", type=int, default=8, help="held-out images in detector_picks.png (default: 8)")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    return p.parse_args(argv)


def held_out_shards(state: dict) -> list[str]:
    train = json.loads(state["config"])["train"]
    if not train.get("holdout_shards"):
        raise ValueError(f"{state['path']}: the run held out no shards (train.holdout_shards 0); pass --shards")
    return split_holdout(train["shards"], train["holdout_shards"])[1]


def summary(result: dict) -> str:
    lines = ["keep  precision  recall  all-kept  | chance precision  recall"]
    for r in result["detector"]:
        lines.append(
            f"{r['keep_ratio']:<5} {r['precision']:>9.3f} {r['recall']:>7.3f} {r['all_positives_kept']:>9.3f}  | "
            f"{r['chance_precision']:>16.3f} {r['chance_recall']:>7.3f}"
        )
    ret = result["retrieval"]
    for name in ("text_to_image", "image_to_text"):
        figures = " ".join(f"{k} {v:.3f}" for k, v in ret[name].items())
        lines.append(f"{name}: {figures} (chance R@1 {ret[f'chance_{name}_R@1']:.3f})")
    lines.append(
        f"retrieval over {ret['images']} images and {ret['captions']} captions: mean recall {ret['mean_recall']:.3f}"
    )
    for c in result["captions"]:
        lines.append(f"{c['key']}: '{c['generated']}' | reference '{c['references'][0]}'")
    if "caption_metrics" in result:
        m = result["caption_metrics"]
        lines.append(
            f"greedy captions of {m['images']} images: "
            + ", ".join(f"{k} {v:.3f}" for k, v in m["scores"].items())
            + f"; a constant caption ('{m['constant_caption']}'): "
            + ", ".join(f"{k} {v:.3f}" for k, v in m["constant_caption_scores"].items() if k in ("BLEU-4", "CIDEr-D"))
        )
    if "naming" in result:
        n = result["naming"]
        lines.append(
            f"captions naming objects in their picture: precision {n['precision']:.3f} (chance "
            f"{n['chance_precision']:.3f}) over {n['named_objects']} named objects in {n['images']} pictures; "
            f"{n['images_named_right']:.2f} of the pictures get a right name; {n['distinct_captions']} distinct"
        )
    return "\n".join(lines)


def task_report(result: dict) -> str:
    """``report.md`` of ``--task retrieval`` or ``--task caption``: the figures at each keep ratio, then examples."""
    head = (f"# {result['task'].capitalize()}: `{result['checkpoint']}` (step {result['step']})\n\n"
            f"{result['images']} images of {result['shards']}; the model was trained at keep ratio "
            f"{result['keep_ratio_trained']}.\n\n")  # fmt: skip
    if result["task"] == "retrieval":
        itc = result["itc"]
        lines = [
            f"ITC alone over all {result['captions']} captions x {result['images']} images: text->image "
            + _recalls(itc["text_to_image"]) + ", image->text " + _recalls(itc["image_to_text"])
            + f", mean recall {itc['mean_recall']:.3f} (chance text->image R@1 "
            + f"{result['chance_text_to_image_R@1']:.3f}). Then each query's top {result['itm_rerank']} re-ranked "
            + "by ITM, at each keep ratio:",
            "",
            "| keep ratio | text->image R@1 / 5 / 10 | image->text R@1 / 5 / 10 | mean recall | ITM pairs/s "
            "| GFLOPs per pair |",
            "| --- | --- | --- | --- | --- | --- |",
        ]  # fmt: skip
        for r in result["by_keep_ratio"]:
            lines.append(
                f"| {r['keep_ratio']} | {_recalls(r['text_to_image'], ' / ')} | {_recalls(r['image_to_text'], ' / ')} "
                f"| {r['mean_recall']:.3f} | {r['itm_pairs_per_s']:.1f} | {r['gflops_per_pair']:.3f} |"
            )
        lines += ["", "Queries and their top 5 images (green: the right one):", "",
                  "![retrieval examples](retrieval_examples.png)", ""]  # fmt: skip
        return head + "\n".join(lines)
    prompt = f"after the prompt '{result['prompt']}'" if result["prompt"] else "after [CLS]"
    decoding = "greedy" if result["beams"] == 1 else f"beam search ({result['beams']} beams)"
    lines = [
        f"Captions {decoding}, {prompt}, at each keep ratio:",
        "",
        "| keep ratio | BLEU-4 | ROUGE-L | CIDEr-D | images/s | GFLOPs per image |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["by_keep_ratio"]:
        m = r["scores"]
        lines.append(f"| {r['keep_ratio']} | {m['BLEU-4']:.3f} | {m['ROUGE-L']:.3f} | {m['CIDEr-D']:.3f} | "
                     f"{r['images_per_s']:.1f} | {r['gflops_per_image']:.3f} |")  # fmt: skip
    c = result["constant_caption_scores"]
    lines += [f"| one caption for all ('{result['constant_caption']}') | {c['BLEU-4']:.3f} | {c['ROUGE-L']:.3f} | "
              f"{c['CIDEr-D']:.3f} | | |", "", "Examples (generated | first reference):", ""]  # fmt: skip
    lines += [f"- `{e['key']}`: {e['generated']} | {e['references'][0]}" for e in result["examples"]]
    return head + "\n".join(lines) + "\n"


def _recalls(figures: dict, sep: str = " ") -> str:
    """R@1/5/10 as "R@1 0.1 R@5 0.3 R@10 0.4" (``sep`` " ") or as bare figures joined by ``sep`` (table cells)."""
    if sep == " ":
        return " ".join(f"{k} {v:.3f}" for k, v in figures.items())
    return sep.join(f"{v:.3f}" for v in figures.values())


def _setting(row: dict) -> str:
    return f"{','.join(map(str, row['detect_layers']))} | {row['keep_ratio']}"


def vqa_report(result: dict) -> str:
    """``report.md`` of ``--task vqa``: accuracy per answer type, speed and cost at each setting, then examples."""
    types = sorted(result["majority_baseline"].get("per_type", {}))
    how = (f"ranked among {result['candidates']} candidate answers" if result["answering"] == "ranked"
           else "written by the decoder (greedy)")  # fmt: skip
    lines = [f"# VQA: `{result['checkpoint']}` (step {result['step']})", "",
             f"{result['questions']} questions on {result['images']} images of {result['shards']} "
             f"({result['scored_questions']} with answers, scored with the official VQA accuracy); answers {how}.",
             "", "| detect layer | keep ratio | overall | " + " | ".join(types)
             + " | questions/s | GFLOPs per question |", "|" + "---|" * (5 + len(types))]  # fmt: skip
    for r in result["by_setting"]:
        per_type = " | ".join(f"{r['per_type'][t]:.3f}" for t in types)
        lines.append(f"| {_setting(r)} | {r.get('overall', float('nan')):.3f} | {per_type} | "
                     f"{r['questions_per_s']:.1f} | {r['gflops_per_question']:.3f} |")  # fmt: skip
    if types:
        m = result["majority_baseline"]
        lines.append(f"| majority answer per type | | {m['overall']:.3f} | "
                     + " | ".join(f"{m['per_type'][t]:.3f}" for t in types) + " | | |")  # fmt: skip
        lines += ["", "Majority answers: " + ", ".join(f"{t} '{a}'" for t, a in result["majority_answers"].items())]
    changed = result["answers_changed_with_another_picture"]
    lines += ["", f"Answers that change when each question is asked of another picture: {changed:.3f} (near 0: "
              "the answers come from the question alone)."]  # fmt: skip
    lines += ["", "![accuracy against GFLOPs](tradeoff.png)", "", "What the questions select (first detector's "
              "scores, kept patches):", "", "![questions and their patches](vqa_examples.png)", "",
              "Examples (question -> answer | the human answers):", ""]  # fmt: skip
    lines += [f"- `{e['key']}`: {e['question']} -> **{e['answer']}** | {', '.join(e['answers'])}"
              for e in result["examples"]]  # fmt: skip
    return "\n".join(lines) + "\n"


def grounding_report(result: dict) -> str:
    """``report.md`` of ``--task grounding``: accuracy of the box head and of the detector's box at each setting."""
    fixed = result["best_fixed_box"]
    lines = [f"# Grounding: `{result['checkpoint']}` (step {result['step']})", "",
             f"{result['expressions']} referring expressions on {result['images']} images of {result['shards']}; "
             "accuracy = IoU >= 0.5 with the referent.", "",
             "| detect layer | keep ratio | accuracy (box head) | accuracy (detector's box) | mean IoU | expressions/s "
             "| GFLOPs per expression |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["by_setting"]:
        lines.append(f"| {_setting(r)} | {r['accuracy']:.3f} | {r['detector_accuracy']:.3f} | {r['mean_iou']:.3f} "
                     f"| {r['expressions_per_s']:.1f} | {r['gflops_per_expression']:.3f} |")  # fmt: skip
    box = ", ".join(f"{v:.2f}" for v in fixed["box"])
    lines += [f"| best fixed box ({box}) | | {fixed['accuracy']:.3f} | | | | |", "",
              "![accuracy against GFLOPs](tradeoff.png)", "",
              "Examples (green: the referent, red: the box head's box, orange: the detector's):", "",
              "![grounding examples](grounding_examples.png)", ""]  # fmt: skip
    return "\n".join(lines)


def run_vqa_or_grounding(args: argparse.Namespace, model, tokenizer, data, urls: list[str], chosen: list, out: Path):
    """``--task vqa|grounding``: the result, with its pictures and (VQA) the official results file written."""
    if args.task == "vqa":
        candidates = answer_list(args.answer_list) if args.answer_list else None
        answers = load_answers_for(data, answers_table(urls))
        result = vqa_task(model, tokenizer, data, answers, chosen, args.batch_size, args.device, candidates)
        (out / "vqa_results.json").write_text(json.dumps(result.pop("results")) + "\n")
        examples = detector_pictures(model, data, tokenizer, list(range(min(args.pictures, len(data.captions)))),
                                     args.device)  # fmt: skip
        panels = [pictures.detector_panel(e["image"], e["caption"], [], None, e["scores"], e["kept"],
                                          model.cfg.vision.grid_size) for e in examples]  # fmt: skip
        pictures.save_png(pictures.contact_sheet(panels, columns=2), out / "vqa_examples.png")
        plot_tradeoff(result["by_setting"], "overall", "gflops_per_question", "VQA accuracy", out / "tradeoff.png")
        return result
    result = grounding_task(model, tokenizer, data, chosen, args.batch_size, args.device, args.pictures)
    examples = result.pop("examples")
    panels = [pictures.grounding_panel(e["image"], e["expression"], e["gold"], e["predicted"], e["iou"],
                                       e["detector_box"]) for e in examples]  # fmt: skip
    pictures.save_png(pictures.contact_sheet(panels, columns=4), out / "grounding_examples.png")
    result["examples"] = [{k: v for k, v in e.items() if k != "image"} for e in examples]
    plot_tradeoff(result["by_setting"], "accuracy", "gflops_per_expression", "grounding accuracy",
                  out / "tradeoff.png")  # fmt: skip
    return result


def run_task(args: argparse.Namespace, state: dict, urls: list[str], out: Path, keep_ratios: tuple) -> int:
    """``--task retrieval|caption|vqa|grounding``: eval.json, report.md and the task's pictures in ``out``."""
    model, tokenizer = load_model(state, args.device)
    v = model.cfg.vision
    data = load_eval_set(urls, v.img_size, v.patch_size, args.max_images)
    print(f"[evaluate] {args.task}: {state['path']} (step {state['step']}), {len(data.keys)} images of "
          f"{len(urls)} shard(s), keep ratios {list(keep_ratios)}", file=sys.stderr)  # fmt: skip
    if args.task in ("vqa", "grounding"):
        layers = [tuple(int(x) for x in option.split(",")) for option in args.detect_layers or []]
        chosen = settings(layers or [tuple(v.detect_layers)], keep_ratios)
        result = run_vqa_or_grounding(args, model, tokenizer, data, urls, chosen, out)
    elif args.task == "retrieval":
        k = 128 if args.itm_rerank is None else args.itm_rerank
        result = retrieval_task(model, tokenizer, data, keep_ratios, k, args.batch_size, args.device)
        examples = result.pop("examples")
        panels = [pictures.retrieval_panel(e["caption"], e["images"], e["correct"], e["scores"]) for e in examples]
        if panels:
            pictures.save_png(pictures.contact_sheet(panels, columns=1), out / "retrieval_examples.png")
        result["examples"] = [{k: v for k, v in e.items() if k != "images"} for e in examples]
    else:
        prompt = json.loads(state["config"])["train"].get("prompt", "") if args.prompt is None else args.prompt
        result = caption_task(model, tokenizer, data, keep_ratios, args.beams, prompt, args.batch_size, args.device)
    result |= {"checkpoint": state["path"], "step": int(state["step"]), "shards": urls}
    (out / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
    report = {"vqa": vqa_report, "grounding": grounding_report}.get(args.task, task_report)(result)
    (out / "report.md").write_text(report)
    print(report)
    print(f"[evaluate] wrote {out}/eval.json, report.md", file=sys.stderr)
    return 0


@job_errors("evaluate")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    state = load_checkpoint(args.checkpoint)
    if args.task != "all" and not args.shards:
        raise ValueError(f"--task {args.task} needs --shards: the task's test split, packed by copa pack")
    if args.beams < 1:
        raise ValueError(f"--beams must be at least 1, got {args.beams}")
    urls = split_holdout(args.shards, 0)[0] if args.shards else held_out_shards(state)
    keep_ratios = tuple(float(r) for r in (args.keep_ratios or DEFAULT_KEEP[args.task != "all"]).split(","))
    if not all(0 < r <= 1 for r in keep_ratios):
        raise ValueError(f"--keep-ratios must lie in (0, 1], got {args.keep_ratios}")
    out = Path(args.out) if args.out else Path(state["path"]).parent.parent / "eval"
    out.mkdir(parents=True, exist_ok=True)
    if args.task != "all":
        return run_task(args, state, urls, out, keep_ratios)
    model, tokenizer = load_model(state, args.device)
    print(f"[evaluate] {state['path']} (step {state['step']}) on {len(urls)} shard(s)", file=sys.stderr)
    result, examples = evaluate(
        model, tokenizer, urls, keep_ratios, args.max_images, args.batch_size, args.itm_rerank or 0,
        args.captions, args.pictures, args.device, coco_categories_in, args.naming_images, args.metric_images,
    )  # fmt: skip
    result |= {"checkpoint": state["path"], "step": int(state["step"])}
    (out / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
    plot_detector(result, out / "detector_recall.png")
    if examples:
        grid = model.cfg.vision.grid_size
        panels = [
            pictures.detector_panel(e["image"], e["caption"], e["words"], e["coverage"], e["scores"], e["kept"], grid)
            for e in examples
        ]
        sheet = pictures.contact_sheet(panels, columns=2, titles=[e["key"] for e in examples])
        pictures.save_png(sheet, out / "detector_picks.png")
    print(summary(result))
    print(f"[evaluate] wrote {out}/eval.json, detector_recall.png, detector_picks.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
