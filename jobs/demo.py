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

The corpus leans on annotated images (COCO- and VG-style, 60% by default, against about 5% in the real 4M mix) so
that a few minutes of CPU training show the detector learning; ``--coco-fraction``/``--vg-fraction`` change it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from jobs import evaluate, ingest, pack, synth, train
from jobs import inspect as inspect_job
from jobs.cli import job_errors
from jobs.report import demo_report
from model.presets import small


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="copa demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="demo_out", help="output folder (default: %(default)s)")
    p.add_argument("--images", type=int, default=3000, help="images in the synthetic corpus (default: %(default)s)")
    p.add_argument("--coco-fraction", type=float, default=0.4, help="COCO share of the images (default: %(default)s)")
    p.add_argument("--vg-fraction", type=float, default=0.2, help="VG share of the images (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--samples-per-shard", type=int, default=500, help="pack shard size (default: %(default)s)")
    p.add_argument("--steps", type=int, default=400, help="training steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="training batch size (default: %(default)s)")
    return p.parse_args(argv)


@job_errors("demo")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.steps < 1:  # 0 would hand train its "run --epochs instead" meaning
        raise ValueError(f"--steps must be at least 1, got {args.steps}: the demo trains a fixed number of steps")
    out = Path(args.out)
    corpus, source, shards, run = out / "corpus", out / "source.parquet", out / "shards", out / "run"
    vision = small().vision
    steps = [
        ("synthetic corpus", corpus, synth.main, [
            "--out", corpus, "--images", args.images, "--seed", args.seed, "--faults",
            "--coco-fraction", args.coco_fraction, "--vg-fraction", args.vg_fraction,
        ]),
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
    seconds: dict[str, float] = {}
    for number, (name, target, job, job_args) in enumerate(steps, start=1):
        print(f"[demo] {number}/{len(steps) + 1} {name} -> {target}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        code = job([str(a) for a in job_args])
        seconds[name] = time.perf_counter() - start
        if code != 0:
            print(f"[demo] {name} failed (exit {code})", file=sys.stderr)
            return code
    report, headline = demo_report(out, seconds)
    print(f"[demo] {len(steps) + 1}/{len(steps) + 1} report -> {report}", file=sys.stderr)
    print("\n".join(["", "What the demo shows:", *(f"  {h}" for h in headline), f"  report: {report}"]))
    print(f"  total {sum(seconds.values()) / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
