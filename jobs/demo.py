"""``copa demo``: the whole system on the embedded default, on one CPU machine, in about ten minutes.

1. a synthetic corpus in the real COCO / Visual Genome / web-caption formats, with deliberate faults;
2. ingest into one normalized source table, captions aligned to boxes;
3. pack on an embedded local Ray cluster into WebDataset shards with PTA labels and Parquet manifests, labels on
   the ``small`` preset's grid;
4. train the ``small`` preset on CPU, the last shard held out;
5. evaluate on the held-out shard: detector precision/recall by keep ratio, retrieval, greedy captions;
6. inspect the shards: the manifest summary, label-density and caption-length histograms, and a contact sheet of
   random samples with their boxes and per-caption labels;
7. ``report.md`` with the figures, loss curves, the detector's picks and the inspection.

``copa demo --downstream`` goes on from pretraining to the downstream tasks (``--out demo_downstream`` by default):
the same steps 1-4 with a Karpathy-format set of other pictures beside the corpus (``--karpathy``; or ``--from RUN``
to start from a run already trained, e.g. ``demo_out/run``), its train and test splits packed, zero-shot retrieval
and captioning on the test split, fine-tuning for each task (at the pretraining resolution, or ``--finetune-size``:
a few hundred CPU steps do not adapt resampled position embeddings, see docs/downstream.md), the fine-tuned models
evaluated at keep ratios 1.0 / 0.7 / 0.5 / 0.3, and ``downstream.md`` with zero-shot beside fine-tuned figures and
the speed tables. VQA and grounding go the same way on synthetic VQA v2 and RefCOCO+ sets (``--vqa``,
``--refexp``): packed per split, fine-tuned, and measured at each keep ratio and at two detect layers, beside the
majority answer per answer type and the best fixed box (no zero-shot: their heads start untrained). ``--tasks``
picks the tasks.

The corpus leans on annotated images (COCO- and VG-style, 60% by default, against about 5% in the real 4M mix) so
that a few minutes of CPU training show the detector learning; ``--coco-fraction``/``--vg-fraction`` change it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from jobs import evaluate, finetune, ingest, pack, synth, train
from jobs import inspect as inspect_job
from jobs.cli import job_errors
from jobs.report import demo_report, downstream_report
from model.presets import small

DOWNSTREAM_TASKS = ("retrieval", "caption", "vqa", "grounding")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="copa demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="output folder (default: demo_out, or demo_downstream with --downstream)")
    p.add_argument("--images", type=int, default=3000, help="images in the synthetic corpus (default: %(default)s)")
    p.add_argument("--coco-fraction", type=float, default=0.4, help="COCO share of the images (default: %(default)s)")
    p.add_argument("--vg-fraction", type=float, default=0.2, help="VG share of the images (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--samples-per-shard", type=int, default=500, help="pack shard size (default: %(default)s)")
    p.add_argument("--steps", type=int, default=400, help="training steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="training batch size (default: %(default)s)")
    p.add_argument("--downstream", action="store_true", help="pretrain, then fine-tune and evaluate retrieval and "
                   "captioning on a synthetic Karpathy set (default --out demo_downstream)")  # fmt: skip
    p.add_argument("--from", dest="init_from", metavar="RUN",
                   help="--downstream: start from this pretrained run instead of pretraining")  # fmt: skip
    p.add_argument("--karpathy", type=int, default=500,
                   help="--downstream: pictures of the Karpathy set, 3/5 train, 1/5 test (default: 500)")  # fmt: skip
    p.add_argument("--finetune-size", type=int,
                   help="--downstream: fine-tuning resolution in pixels (default: the pretrained model's)")  # fmt: skip
    p.add_argument("--retrieval-steps", type=int, default=150, help="--downstream: fine-tuning steps (default: 150)")
    p.add_argument("--caption-steps", type=int, default=300, help="--downstream: fine-tuning steps (default: 300)")
    p.add_argument("--tasks", default=",".join(DOWNSTREAM_TASKS),
                   help="--downstream: the tasks, comma-separated (default: %(default)s)")  # fmt: skip
    p.add_argument("--vqa", type=int, default=500,
                   help="--downstream: pictures of the VQA set, 4/5 train, 1/5 val (default: %(default)s)")  # fmt: skip
    p.add_argument("--refexp", type=int, default=2000, help="--downstream: pictures of the grounding set, 3/5 train, "
                   "1/5 each val, testA, testB (default: %(default)s)")  # fmt: skip
    p.add_argument("--vqa-steps", type=int, default=400, help="--downstream: fine-tuning steps (default: 400)")
    p.add_argument("--grounding-steps", type=int, default=400, help="--downstream: fine-tuning steps (default: 400)")
    p.add_argument("--itm-rerank", type=int, default=16,
                   help="--downstream: each query's top K re-ranked by ITM (default: 16; BLIP uses 128)")  # fmt: skip
    args = p.parse_args(argv)
    if args.out is None:
        args.out = "demo_downstream" if args.downstream else "demo_out"
    if args.init_from and not args.downstream:
        p.error("--from is a setting of --downstream")
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = sorted(set(args.tasks) - set(DOWNSTREAM_TASKS))
    if unknown or not args.tasks:
        p.error(f"--tasks: unknown {unknown}, choose among {', '.join(DOWNSTREAM_TASKS)}")
    if len({"retrieval", "caption"} & set(args.tasks)) == 1:
        p.error("--tasks: retrieval and caption go together (one Karpathy set, one zero-shot table)")
    return args


@job_errors("demo")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.steps < 1:  # 0 would hand train its "run --epochs instead" meaning
        raise ValueError(f"--steps must be at least 1, got {args.steps}: the demo trains a fixed number of steps")
    out = Path(args.out)
    corpus, source, shards, run = out / "corpus", out / "source.parquet", out / "shards", out / "run"
    vision = small().vision
    synthetic = ["--out", corpus, "--images", args.images, "--seed", args.seed, "--faults",
                 "--coco-fraction", args.coco_fraction, "--vg-fraction", args.vg_fraction]  # fmt: skip
    if args.downstream:
        sets = {"retrieval": "--karpathy", "caption": "--karpathy", "vqa": "--vqa", "grounding": "--refexp"}
        for flag in dict.fromkeys(sets[t] for t in args.tasks):
            synthetic += [flag, getattr(args, flag[2:])]
    steps = [
        ("synthetic corpus", corpus, synth.main, synthetic),
        ("ingest", source, ingest.main, ["--config", corpus / "sources.yaml", "--out", source]),
        # --overwrite: the corpus is regenerated each time, so an older pack in the folder is replaced, not resumed
        ("pack (local Ray)", shards, pack.main, [
            "--source", source, "--out", shards, "--samples-per-shard", args.samples_per_shard, "--overwrite",
            "--image-size", vision.img_size, "--patch-size", vision.patch_size,
        ]),
        ("train small on CPU", run, train.main, [
            "--shards", shards, "--out", run, "--preset", "small", "--steps", args.steps, "--batch-size",
            args.batch_size, "--lr", "5e-4", "--warmup-steps", "40", "--holdout-shards", "1", "--workers", "1",
            "--seed", args.seed, "--log-every", "25", "--ckpt-every", "200", "--overwrite",
        ]),
        ("evaluate on the held-out shard", run / "eval", evaluate.main, ["--checkpoint", run]),
        ("inspect the shards", out / "inspect", inspect_job.main, [
            shards, "--sample", "6", "--seed", args.seed, "--out", out / "inspect", "--histograms", out / "inspect",
        ]),
    ]  # fmt: skip
    if args.downstream:
        if args.init_from:  # a pretrained run: only the Karpathy set is made (beside a token corpus)
            run = Path(args.init_from)
            synthetic[synthetic.index("--images") + 1] = 10
            steps = steps[:1]
        else:
            steps = steps[:4]
        steps += downstream_steps(args, out, run, vision)
    seconds: dict[str, float] = {}
    for number, (name, target, job, job_args) in enumerate(steps, start=1):
        print(f"[demo] {number}/{len(steps) + 1} {name} -> {target}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        code = job([str(a) for a in job_args])
        seconds[name] = time.perf_counter() - start
        if code != 0:
            print(f"[demo] {name} failed (exit {code})", file=sys.stderr)
            return code
    report, headline = (downstream_report if args.downstream else demo_report)(out, seconds)
    print(f"[demo] {len(steps) + 1}/{len(steps) + 1} report -> {report}", file=sys.stderr)
    print("\n".join(["", "What the demo shows:", *(f"  {h}" for h in headline), f"  report: {report}"]))
    print(f"  total {sum(seconds.values()) / 60:.1f} min", flush=True)
    return 0


def pack_split(out: Path, name: str, sources: Path, vision) -> list[tuple]:
    """Ingest and pack one downstream split (``sources``, a sources yaml) into ``out/<name>``."""
    source, shards = out / f"{name}.parquet", out / name
    return [
        (f"ingest {name}", source, ingest.main, ["--config", sources, "--out", source, "--quiet"]),
        (f"pack {name}", shards, pack.main, [
            "--source", source, "--out", shards, "--engine", "local", "--overwrite", "--samples-per-shard", 500,
            "--image-size", vision.img_size, "--patch-size", vision.patch_size,
        ]),
    ]  # fmt: skip


def downstream_steps(args: argparse.Namespace, out: Path, run: Path, vision) -> list[tuple]:
    """Pack each task's splits, evaluate ``run`` zero-shot on retrieval and captioning, fine-tune it for every task
    and evaluate the fine-tuned models."""
    size = ["--image-size", args.finetune_size] if args.finetune_size else []
    common = [*size, "--batch-size", args.batch_size, "--workers", "1", "--seed", args.seed, "--log-every", "25",
              "--overwrite", "--quiet"]  # fmt: skip
    steps = []
    if {"retrieval", "caption"} & set(args.tasks):
        karpathy = out / "corpus" / "karpathy"
        for split in ("train", "test"):
            steps += pack_split(out, f"karpathy_{split}", karpathy / f"sources_{split}.yaml", vision)
    test = ["--shards", out / "karpathy_test", "--max-images", args.karpathy]
    tuned = ["--data", out / "karpathy_train", *common]
    settings = {  # task: (learning rate, steps, fine-tuning flags, evaluation flags)
        "retrieval": ("1e-4", args.retrieval_steps, [], ["--itm-rerank", args.itm_rerank]),
        "caption": ("2e-4", args.caption_steps, ["--warmup-steps", "20"], []),
    }
    for task, (lr, count, tune, measure) in settings.items():
        if task not in args.tasks:
            continue
        zero_shot, finetuned = out / f"zero_shot_{task}", out / task
        steps += [
            (f"{task}: zero-shot", zero_shot, evaluate.main, ["--task", task, "--checkpoint", run, *test, *measure,
             "--keep-ratios", vision.keep_ratios[0], "--out", zero_shot]),
            (f"{task}: fine-tune" + (f" at {args.finetune_size} px" if size else ""), finetuned, finetune.main,
             ["--task", task, "--from", run, *tuned, "--out", finetuned, "--steps", count, "--lr", lr,
              "--ckpt-every", count, *tune]),
            (f"{task}: evaluate at keep 1.0 / 0.7 / 0.5 / 0.3", finetuned / "eval", evaluate.main,
             ["--task", task, "--checkpoint", finetuned, *test, *measure]),
        ]  # fmt: skip
    return steps + question_steps(args, out, run, vision, common)


def question_steps(args: argparse.Namespace, out: Path, run: Path, vision, common: list) -> list[tuple]:
    """VQA and grounding: pack the splits, fine-tune, and measure at each keep ratio and at two detect layers (the
    model's and two blocks later, or the last block)."""
    layers = vision.detect_layers[0]
    detect = ["--detect-layers", layers, min(layers + 2, vision.depth - 1)]
    plans = {  # task: (set folder, training split, evaluated splits, steps)
        "vqa": ("vqa", "train", ["val"], args.vqa_steps),
        "grounding": ("refexp", "train", ["val", "testA", "testB"], args.grounding_steps),
    }
    steps = []
    for task, (folder, train_split, test_splits, count) in plans.items():
        if task not in args.tasks:
            continue
        for split in [train_split, *test_splits]:
            steps += pack_split(out, f"{folder}_{split}", out / "corpus" / folder / f"sources_{split}.yaml", vision)
        finetuned = out / task
        steps.append((f"{task}: fine-tune", finetuned, finetune.main, [
            "--task", task, "--from", run, "--data", out / f"{folder}_{train_split}", *common, "--out", finetuned,
            "--steps", count, "--lr", "2e-4", "--warmup-steps", "20", "--ckpt-every", count,
        ]))  # fmt: skip
        for split in test_splits:
            steps.append((f"{task}: evaluate on {split}", finetuned / f"eval_{split}", evaluate.main, [
                "--task", task, "--checkpoint", finetuned, "--shards", out / f"{folder}_{split}", *detect,
                "--out", finetuned / f"eval_{split}", "--max-images", max(args.vqa, args.refexp),
            ]))  # fmt: skip
    return steps


if __name__ == "__main__":
    raise SystemExit(main())
