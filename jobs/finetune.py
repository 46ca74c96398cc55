"""``copa finetune``: fine-tune a COPA model for retrieval, captioning, VQA or grounding, streaming from shards.

    copa finetune --task retrieval --from RUN_OR_EXPORT --data TRAIN_SHARDS --out RUN [--image-size 384]
    copa finetune --task caption --from RUN_OR_EXPORT --data TRAIN_SHARDS --out RUN [--prompt "a picture of"]
    copa finetune --task vqa|grounding --from RUN_OR_EXPORT --data TRAIN_SHARDS --out RUN

The same trainer as ``copa train`` (DDP under torchrun, bf16, accumulation, exact resume, metrics, loss curves);
the model is the one ``--from`` names (a checkpoint file, a run folder or a ``copa export`` folder), its weights
and tokenizer, with the task's losses (``model.config.TASK_LOSSES``):

- ``retrieval``: ITC and ITM with hard negatives from the batch (ALBEF, BLIP);
- ``caption``: the decoder writes the whole caption after ``--prompt``, which is also the only text the detector
  sees, as at inference;
- ``vqa``: the question drives the detector and is fused with the kept patches; the decoder writes one of the
  question's answers (drawn per epoch from the dataset's ``answers.parquet``, so a commoner answer more often);
- ``grounding``: the expression drives the detector; the box head regresses its referent's box from the fused
  [CLS] (L1 + generalized IoU, X-VLM) and PTA teaches the detector the referent's patches.

VQA and grounding texts say "left" and "right", so their training never flips images.

``--image-size`` fine-tunes at another resolution (any multiple of the patch): the position embeddings are
resampled from the checkpoint's grid. ``--keep-ratio`` and ``--detect-layer`` place the detector for this task.
Rerunning with the same ``--out`` resumes exactly. Training data are the task's training split packed by
``copa pack`` (docs/downstream.md); evaluate with ``copa evaluate --task retrieval|caption|vqa|grounding``.
"""

from __future__ import annotations

import argparse
import dataclasses

from jobs import train
from jobs.cli import job_errors
from model.checkpoint import load_checkpoint, model_config, without_initial_weights
from model.config import TASK_LOSSES

TASKS = ("retrieval", "caption", "vqa", "grounding")
DEFAULT_LR = 1e-5  # ALBEF's and BLIP's fine-tuning rate for pretrained towers


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = train.parser("copa finetune", __doc__.split("\n\n")[0])
    p.add_argument("--task", required=True, choices=TASKS, help="what to fine-tune for")
    p.add_argument("--from", dest="init_from", required=True, metavar="MODEL",
                   help="the model to start from: checkpoint file, run folder or `copa export` folder")  # fmt: skip
    p.add_argument("--data", dest="shards", required=True, help="training shards: dataset folder, brace pattern")
    p.add_argument("--image-size", type=int, help="fine-tune at this many pixels (default: the model's)")
    p.add_argument("--keep-ratio", help="detector keep ratio(s), one per detector, comma-separated (default: model's)")
    p.add_argument("--detect-layer", help="detect layer(s), comma-separated (default: the model's)")
    p.add_argument("--prompt", help='captioning: the text the decoder continues, e.g. "a picture of" (default: none)')
    return p.parse_args(argv)


def numbers(text: str, kind: type) -> list:
    return [kind(x) for x in text.split(",") if x.strip()]


def model_base(args: argparse.Namespace, start: dict) -> dict:
    """The model ``--from`` holds, with the task's loss weights and this run's image size and detector."""
    model = dataclasses.asdict(without_initial_weights(model_config(start)))
    model["loss"] |= TASK_LOSSES[args.task]
    if args.image_size:
        model["vision"]["img_size"] = args.image_size
    if args.keep_ratio:
        model["vision"]["keep_ratios"] = numbers(args.keep_ratio, float)
    if args.detect_layer:
        model["vision"]["detect_layers"] = numbers(args.detect_layer, int)
    return model


@job_errors("finetune")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.prompt and args.task != "caption":
        raise ValueError("--prompt is a setting of --task caption")
    start = load_checkpoint(args.init_from)
    base = {"task": args.task, "init_from": args.init_from, "lr": DEFAULT_LR, "prompt": args.prompt or ""}
    cfg, model_cfg = train.resolve(args, model_base(args, start), base)
    del start
    return train.run(args, cfg, model_cfg, "finetune")


if __name__ == "__main__":
    raise SystemExit(main())
