"""``copa bench gpu`` (``make gpu-check``): what a GPU machine makes of COPA, in a few minutes, from generated data.

1. The model benchmark on every visible CUDA device at once (one process per device): the ``base`` preset at
   256 px in bf16, the training step and the text-aware inference forward at keep ratio 1.0 and at the preset's
   own (samples/s and ``torch.cuda.max_memory_allocated``, as ratios to keep 1.0; ``copa bench model``).
2. Data: a synthetic corpus (``copa synth``, a third of it with boxes), ingested and packed with PTA labels on the
   ``base`` grid by the real pipeline on a local Ray cluster. Big enough that no rank finishes an epoch within the
   run, so loader restarts do not count as starvation.
3. ``copa train --preset base`` for ``--steps`` steps under ``torchrun`` with one process per device (nccl when
   there are several): samples/s per GPU, peak memory, the fraction of step time spent waiting for data (loader
   starvation), and the loss from the first logged window to the last. The first window holds the warm-up (CUDA
   context, allocator growth, loader start), so the rates are those of the windows after it.

Where torch sees no CUDA device, it says so and exits 0 without doing anything: CI and CPU machines run it safely.
Everything lands in ``--out``: ``bench_gpu.json``, the model benchmark's reports, the data, and the run folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from jobs import ingest, pack, synth
from jobs.bench.runner import REPO, python_env, write_report
from model.presets import PRESETS, preset


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="copa bench gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench_out/gpu", help="output folder (default: %(default)s)")
    p.add_argument("--preset", default="base", choices=sorted(PRESETS), help="model preset (default: %(default)s)")
    p.add_argument("--steps", type=int, default=50, help="training steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="samples per GPU per step (default: %(default)s)")
    p.add_argument("--log-every", type=int, default=10, help="steps per metrics window (default: %(default)s)")
    p.add_argument("--workers", type=int, help="loader workers per GPU (default: CPUs per GPU - 1, at most 6)")
    p.add_argument("--skip-model", action="store_true", help="only the training run")
    p.add_argument("--skip-train", action="store_true", help="only the model benchmark")
    args = p.parse_args(argv)
    if args.steps < 2 * args.log_every:
        raise ValueError(f"--steps {args.steps} must cover at least two --log-every {args.log_every} windows")
    return args


def cuda_devices() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# ---- 1. the model benchmark, one process per device -----------------------------------------------------------


def model_bench(out: Path, devices: int, name: str) -> list[dict]:
    """``copa bench model`` of preset ``name`` on each device in parallel; returns one summary per device."""
    cfg = preset(name)
    keep = cfg.vision.keep_ratios[0]
    args = ["--preset", name, "--modes", "infer,train", "--sizes", str(cfg.vision.img_size), "--amp", "bf16"]
    args += ["--keep-ratios", f"1.0,{keep}", "--layers", str(cfg.vision.detect_layers[0]), "--no-itc-paths"]
    args += ["--batch-size", "64", "--train-batch-size", "32", "--reps", "10", "--train-reps", "10"]
    procs = []
    for device in range(devices):
        env = python_env() | {"CUDA_VISIBLE_DEVICES": str(device)}
        cmd = [
            sys.executable,
            "-m",
            "jobs.bench",
            "model",
            *args,
            "--device",
            "cuda",
            "--out",
            str(out / f"gpu{device}"),
        ]
        log = open(out / f"gpu{device}.log", "w", encoding="utf-8")  # noqa: SIM115 (closed below)
        procs.append((device, subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    summaries = []
    for device, proc, log in procs:
        code = proc.wait()
        log.close()
        if code != 0:
            tail = (out / f"gpu{device}.log").read_text()[-3000:]
            raise RuntimeError(f"copa bench model on GPU {device} failed (exit {code}):\n{tail}")
        report = json.loads((out / f"gpu{device}" / "bench_model.json").read_text())
        summaries.append(model_summary(report, device, keep))
    return summaries


def model_summary(report: dict, device: int, keep: float) -> dict:
    """Per mode: samples/s and peak memory at keep 1.0 and at ``keep``, and their ratios."""
    summary = {"device": device, "name": report["device"], "keep_ratio": keep}
    for mode in ("infer", "train"):
        rows = [r for r in report["results"] if r["mode"] == mode and r["figure"] == "grid"]
        full = next(r for r in rows if r["keep_ratio"] == 1.0)
        pruned = next(r for r in rows if r["keep_ratio"] == keep)
        summary[mode] = {
            "batch_size": full["batch_size"],
            "samples_per_s": {"1.0": full["samples_per_s"], str(keep): pruned["samples_per_s"]},
            "peak_gib": {"1.0": full["peak_bytes"] / 2**30, str(keep): pruned["peak_bytes"] / 2**30},
            "throughput_ratio": pruned["throughput_ratio"],
            "memory_ratio": pruned["memory_ratio"],
        }
    return summary


def model_lines(summaries: list[dict]) -> list[str]:
    lines = []
    for s in summaries:
        keep = str(s["keep_ratio"])
        for mode in ("infer", "train"):
            m = s[mode]
            lines.append(
                f"GPU {s['device']} ({s['name']}) {mode} bf16 batch {m['batch_size']}: keep {keep} "
                f"{m['samples_per_s'][keep]:.0f} samples/s, x{m['throughput_ratio']:.2f} keep 1.0's "
                f"{m['samples_per_s']['1.0']:.0f}; peak {m['peak_gib'][keep]:.1f} GiB, x{m['memory_ratio']:.2f} "
                f"keep 1.0's {m['peak_gib']['1.0']:.1f} GiB"
            )
    return lines


# ---- 2. data, 3. the training run -----------------------------------------------------------------------------


def make_data(out: Path, images: int, name: str) -> Path:
    """Synthetic corpus -> ingest -> pack on preset ``name``'s grid; reused when already there with enough images."""
    corpus, source, shards = out / "corpus", out / "source.parquet", out / "shards"
    stamp = out / "data.json"
    v = preset(name).vision
    wanted = {"images": images, "image_size": v.img_size, "patch_size": v.patch_size}
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return shards
    per_shard = max(100, math.ceil(images / 64))
    jobs = [
        (synth.main, ["--out", corpus, "--images", images, "--coco-fraction", 0.2, "--vg-fraction", 0.15]),
        (ingest.main, ["--config", corpus / "sources.yaml", "--out", source, "--quiet"]),
        (pack.main, ["--source", source, "--out", shards, "--samples-per-shard", per_shard, "--overwrite",
                     "--image-size", v.img_size, "--patch-size", v.patch_size, "--quiet"]),
    ]  # fmt: skip
    for job, job_args in jobs:
        if job([str(a) for a in job_args]) != 0:
            raise RuntimeError(f"preparing the GPU check's data failed at {job.__module__}")
    stamp.write_text(json.dumps(wanted) + "\n")
    return shards


def train_run(args: argparse.Namespace, shards: Path, run: Path, devices: int, device: str = "cuda") -> list[dict]:
    """``copa train`` under torchrun, one process per device; returns the metrics lines."""
    workers = args.workers if args.workers is not None else max(1, min(6, (os.cpu_count() or 2) // devices - 1))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(devices)]
    cmd += ["-m", "jobs.train", "--preset", args.preset, "--shards", str(shards), "--out", str(run), "--overwrite"]
    cmd += ["--steps", str(args.steps), "--batch-size", str(args.batch_size), "--log-every", str(args.log_every)]
    cmd += ["--workers", str(workers), "--warmup-steps", str(args.steps // 5), "--lr", "1e-4", "--quiet"]
    cmd += ["--ckpt-every", str(args.steps), "--device", device]
    proc = subprocess.run(cmd, cwd=REPO, env=python_env(), capture_output=True, text=True, check=False)
    (run.parent / "train.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"copa train --preset {args.preset} on {devices} device(s) failed:\n{proc.stderr[-3000:]}")
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]


def train_summary(lines: list[dict], devices: int) -> dict:
    """Rates from the windows after the first (warm-up); loss from the first window to the last."""
    steady = lines[1:]
    if not steady:
        raise ValueError("the training run logged a single window; give --steps at least two --log-every windows")
    return {
        "devices": devices,
        "samples_per_s_per_gpu": statistics.mean(ln["samples_per_s"] for ln in steady) / devices,
        "data_wait_frac": statistics.mean(ln["data_wait_frac"] for ln in steady),
        "peak_mem_gib": max(ln.get("peak_mem_gib", 0.0) for ln in lines),
        "loss": [ln.get("loss") for ln in lines],
        "loss_first": lines[0].get("loss"),
        "loss_last": lines[-1].get("loss"),
        "skipped_steps": lines[-1]["skipped_steps"],
        "itc_candidates": lines[-1].get("itc_candidates"),
    }


def train_lines(s: dict, name: str, batch_size: int) -> list[str]:
    return [
        f"copa train --preset {name}, {s['devices']} GPU(s) x batch {batch_size}: "
        f"{s['samples_per_s_per_gpu']:.1f} samples/s per GPU after warm-up, peak {s['peak_mem_gib']:.1f} GiB, "
        f"{100 * s['data_wait_frac']:.1f}% of step time waiting for data",
        f"  loss {s['loss_first']:.3f} -> {s['loss_last']:.3f} (windows: "
        + ", ".join(f"{v:.3f}" for v in s["loss"] if v is not None)
        + f"); ITC over {s['itc_candidates']:.0f} candidates per pair; {s['skipped_steps']} skipped steps",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    devices = cuda_devices()
    if devices == 0:
        cuda = torch.version.cuda or "none (a CPU-only build)"
        print(f"copa bench gpu: skipped: torch {torch.__version__} (CUDA {cuda}) sees no CUDA device")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"benchmark": "gpu", "args": vars(args), "devices": devices, "torch": torch.__version__}
    lines: list[str] = []
    started = time.perf_counter()
    if not args.skip_model:
        print(f"[bench gpu] model benchmark on {devices} device(s)", file=sys.stderr, flush=True)
        (out / "model").mkdir(exist_ok=True)
        report["model"] = model_bench(out / "model", devices, args.preset)
        lines += model_lines(report["model"])
    if not args.skip_train:
        images = math.ceil(1.2 * args.steps * args.batch_size * devices)
        print(f"[bench gpu] generating and packing {images} samples", file=sys.stderr, flush=True)
        shards = make_data(out / "data", images, args.preset)
        print(f"[bench gpu] {args.steps} steps of copa train --preset {args.preset}", file=sys.stderr, flush=True)
        report["train"] = train_summary(train_run(args, shards, out / "run", devices), devices)
        lines += train_lines(report["train"], args.preset, args.batch_size)
    report |= {"summary": lines, "seconds_total": time.perf_counter() - started}
    write_report(str(out / "bench_gpu.json"), report)
    print("\n".join(lines))
    print(f"[bench gpu] wrote {out / 'bench_gpu.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
