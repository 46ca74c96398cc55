"""``copa train``: joint COPA pretraining (ITC, ITM, MLM, PrefixLM, PTA) streaming from packed shards.

One process: ``copa train --shards DATASET --preset small --out RUN``. DDP: ``torchrun --nproc_per_node N -m
jobs.train --shards ... --out RUN`` (gloo on CPU, nccl on GPU). Rerunning with the same ``--out`` resumes exactly
from the latest checkpoint; ``--overwrite`` starts afresh.

The paper's setting starts from pretrained towers, local files only: ``copa train --preset base --vision-weights
CLIP_DIR --text-weights BERT_DIR ...`` (a transformers CLIP folder or an OpenCLIP/timm state dict; a BERT folder,
whose tokenizer is used unless ``--tokenizer`` names another).

Settings come from the preset, then a YAML file (``--config``, sections ``train:`` and ``model:``, optional
``preset:``), then flags, then ``--set section.field=value`` (e.g. ``--set model.vision.keep_ratios=[0.3]``).
Unknown keys are errors. The resolved configs are written to ``RUN/train_config.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from pathlib import Path

import yaml

from jobs.cli import job_errors
from jobs.report import plot_loss_curves
from model.checkpoint import CHECKPOINT_DIR
from model.config import COPAConfig, from_dict, merge
from model.presets import PRESETS, preset
from model.tokenizer import TOKENIZER_FILE
from model.trainer import CONFIG_FILE, METRICS_FILE, TrainConfig, Trainer

LOSS_CURVES = "loss_curves.png"
# flag -> TrainConfig field, for the flags that set one
FLAGS = {
    "shards": "shards", "out": "out", "steps": "steps", "epochs": "epochs", "batch_size": "batch_size",
    "accum": "accum", "lr": "lr", "warmup_steps": "warmup_steps", "weight_decay": "weight_decay",
    "clip_grad": "clip_grad", "holdout_shards": "holdout_shards", "workers": "num_workers",
    "augment": "augment", "resampled": "resampled", "tokenizer": "tokenizer", "vocab_size": "vocab_size",
    "seed": "seed", "device": "device", "precision": "precision", "deterministic": "deterministic",
    "threads": "threads", "ckpt_every": "ckpt_every", "log_every": "log_every",
}  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = parser("copa train", __doc__.split("\n\n")[0])
    p.add_argument("--shards", help="dataset folder from `copa pack`, a brace pattern, or a list file of shard URLs")
    p.add_argument("--preset", help=f"model preset: {', '.join(PRESETS)} (default: small)")
    p.add_argument(
        "--vision-weights",
        metavar="PATH",
        help="initial image tower: a transformers CLIP folder, an OpenCLIP/timm state dict (= model.vision.checkpoint)",
    )
    p.add_argument(
        "--text-weights",
        metavar="DIR",
        help="initial text towers: a local BERT folder (= model.text.bert_dir); its tokenizer too unless --tokenizer",
    )
    p.add_argument("--vocab-size", type=int, help="WordPiece size when building the tokenizer (8000)")
    return p.parse_args(argv)


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The flags ``copa train`` and ``copa finetune`` share."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--out", help="run folder (config, tokenizer, metrics, checkpoints, loss curves)")
    p.add_argument("--config", help="YAML with `train:` and `model:` sections (and optionally `preset:`)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override one setting, e.g. train.lr=1e-4 or model.vision.keep_ratios=[0.3]; repeatable",
    )
    p.add_argument("--steps", type=int, help="optimizer steps (default: --epochs passes over the training shards)")
    p.add_argument("--epochs", type=float, help="passes over the training shards when --steps is not given (1)")
    p.add_argument("--batch-size", type=int, help="samples per micro-batch per process (32)")
    p.add_argument("--accum", type=int, help="micro-batches per optimizer step (1)")
    p.add_argument("--lr", type=float, help="peak learning rate (train 3e-4, finetune 1e-5)")
    p.add_argument("--warmup-steps", type=int, help="linear warmup steps (100)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay (0.02)")
    p.add_argument("--clip-grad", type=float, help="max gradient norm, 0 off (1.0)")
    p.add_argument("--holdout-shards", type=int, help="leave the last N shards out of training, for evaluation (0)")
    p.add_argument("--workers", type=int, help="loader worker processes per process (2)")
    p.add_argument("--augment", action="store_true", default=None, help="random resized crop + flip, labels moved")
    p.add_argument("--resampled", action="store_true", default=None, help="draw shards with replacement (multi-node)")
    p.add_argument(
        "--tokenizer",
        help="local tokenizer folder (tokenizer.json or BERT vocab.txt); default: build one (finetune: the model's)",
    )
    p.add_argument("--seed", type=int, help="random seed (0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="device (auto: CUDA when available)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], help="auto: bf16 autocast on CUDA, fp32 on CPU")
    p.add_argument("--deterministic", action="store_true", default=None, help="deterministic torch algorithms")
    p.add_argument("--threads", type=int, help="torch CPU threads per process (default: torch's choice)")
    p.add_argument("--ckpt-every", type=int, help="steps between checkpoints (500; one is always saved at the end)")
    p.add_argument("--log-every", type=int, help="steps per metrics line (10)")
    p.add_argument(
        "--overwrite", action="store_true", help="delete this run's checkpoints and metrics and start afresh"
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def parse_sets(items: list[str]) -> dict:
    """["train.lr=1e-4", "model.vision.keep_ratios=[0.3]"] -> nested dict; values are parsed as YAML."""
    out: dict = {}
    for item in items:
        path, sep, value = item.partition("=")
        parts = path.strip().split(".")
        if not sep or len(parts) < 2 or parts[0] not in ("train", "model"):
            raise ValueError(f"--set {item!r}: expected train.FIELD=VALUE or model.PART.FIELD=VALUE")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out


def resolve(
    args: argparse.Namespace, model_base: dict | None = None, train_base: dict | None = None
) -> tuple[TrainConfig, COPAConfig]:
    """Preset (or ``model_base``, ``train_base``) < YAML < flags < --set, into typed configs (unknown keys name
    their source)."""
    where = args.config or "settings"
    doc: dict = {}
    if args.config:
        with open(args.config, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
        unknown = sorted(set(doc) - {"train", "model", "preset"})
        if unknown:
            raise ValueError(f"{args.config}: unknown sections {unknown}; known: ['model', 'preset', 'train']")
    sets = parse_sets(args.set)
    flags = {field: getattr(args, flag) for flag, field in FLAGS.items() if getattr(args, flag, None) is not None}
    if args.quiet:
        flags["progress"] = False
    train = merge(merge(merge(train_base or {}, doc.get("train") or {}), flags), sets.get("train", {}))
    for name in ("shards", "out"):
        if not train.get(name):
            raise ValueError(f"--{name} is required (or train.{name} in the config file)")
    model_flags: dict = {}
    if getattr(args, "vision_weights", None):
        model_flags["vision"] = {"checkpoint": args.vision_weights}
    if getattr(args, "text_weights", None):
        model_flags["text"] = {"bert_dir": args.text_weights}
        train.setdefault("tokenizer", args.text_weights)  # the BERT folder's vocab.txt / tokenizer.json
    if model_base is None:
        model_base = dataclasses.asdict(preset(getattr(args, "preset", None) or doc.get("preset") or "small"))
    model = merge(merge(merge(model_base, doc.get("model") or {}), model_flags), sets.get("model", {}))
    return from_dict(TrainConfig, train, f"{where}: train"), from_dict(COPAConfig, model, f"{where}: model")


def prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty folder that is not a run; with ``overwrite`` remove what a run writes there."""
    if out.exists() and any(out.iterdir()) and not (out / CONFIG_FILE).exists():
        raise ValueError(f"--out {out} is not empty and holds no {CONFIG_FILE}: not a training run folder")
    if overwrite and out.exists():
        shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
        for name in (CONFIG_FILE, METRICS_FILE, TOKENIZER_FILE, LOSS_CURVES):
            (out / name).unlink(missing_ok=True)


@job_errors("train")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run(args, *resolve(args), "train")


def run(args: argparse.Namespace, cfg: TrainConfig, model_cfg: COPAConfig, name: str) -> int:
    """Train (``copa train``, ``copa finetune``), with loss curves at every checkpoint."""
    out = Path(cfg.out)

    def curves(_checkpoint: Path) -> None:
        plot_loss_curves(out / METRICS_FILE, out / LOSS_CURVES)

    trainer = Trainer(cfg, model_cfg, on_checkpoint=curves, prepare=lambda: prepare_out(out, args.overwrite))
    try:
        result = trainer.run()
    finally:
        trainer.close()
    if trainer.dist.main and not args.quiet:
        losses = " ".join(f"{k}={v:.3f}" for k, v in result.items() if k.startswith("loss"))
        print(
            f"[{name}] done: step {result['steps']}, {losses}; {result['skipped_steps']} skipped steps\n"
            f"[{name}] checkpoint {result['checkpoint']}\n[{name}] loss curves {out / LOSS_CURVES}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
