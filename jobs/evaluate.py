"""``copa evaluate``: detector precision/recall at several keep ratios, retrieval R@1/5/10, and greedy captions.

Greedy captions are also scored with BLEU-1..4, ROUGE-L and CIDEr-D against the held-out references, beside a
constant caption (the set's most frequent reference).

    copa evaluate --checkpoint RUN [--shards DATASET_OR_PATTERN] [--out RUN/eval]

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
from jobs.report import plot_detector
from manifests import pictures
from model.checkpoint import load_checkpoint, load_model
from model.evaluate import evaluate
from model.trainer import split_holdout
from pipeline.align import coco_categories_in


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="copa evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint file, or a run folder (its latest checkpoint)")
    p.add_argument("--shards", help="held-out shards: folder, brace pattern (default: the run's held-out shards)")
    p.add_argument("--out", help="output folder (default: eval/ beside the run's checkpoints folder)")
    p.add_argument("--keep-ratios", default="0.1,0.3,0.5,0.7", help="detector keep ratios (default: %(default)s)")
    p.add_argument("--max-images", type=int, default=500, help="held-out images read (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="pairs per forward pass (default: %(default)s)")
    p.add_argument("--itm-rerank", type=int, default=0, help="re-rank each query's top K by ITM; 0 off (default)")
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


@job_errors("evaluate")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    state = load_checkpoint(args.checkpoint)
    urls = split_holdout(args.shards, 0)[0] if args.shards else held_out_shards(state)
    keep_ratios = tuple(float(r) for r in args.keep_ratios.split(","))
    if not all(0 < r <= 1 for r in keep_ratios):
        raise ValueError(f"--keep-ratios must lie in (0, 1], got {args.keep_ratios}")
    out = Path(args.out) if args.out else Path(state["path"]).parent.parent / "eval"
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_model(state, args.device)
    print(f"[evaluate] {state['path']} (step {state['step']}) on {len(urls)} shard(s)", file=sys.stderr)
    result, examples = evaluate(
        model, tokenizer, urls, keep_ratios, args.max_images, args.batch_size, args.itm_rerank,
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
