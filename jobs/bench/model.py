"""``copa bench model``: COPA's cost with the patch detector vs keep ratio 1.0, counted and timed (DESIGN 11).

The analogue of the paper's Figures 1 and 3 (COPA, arXiv 2308.03475), for each image size, detection layer and
keep ratio, as ratios to keep ratio 1.0 of the same weights (every detector an identity, so the ViT runs
unpruned once):

- counted (``--modes cost``, ``jobs/bench/model_cost.py``): GFLOPs and activation bytes saved for backward per
  sample, per component, of the training step and of the inference forward. Exact and the same on every machine;
- timed (``--modes infer,train``): samples/s and peak memory of a VQA-like forward (text encoder + ViT-TPD driven
  by the text + fusion, under ``inference_mode``) and of one full training step (five losses, backward, AdamW
  step). The training step is also timed for each ``itc_image_path`` and both ``itm_negatives`` at the preset's
  own detect layer and keep ratio.

Method. One model per image size (built once, shared by both modes); the detection layer and keep ratio change
in place (``COPA.set_detection``), so every configuration runs the same weights. After one warm-up step,
configurations run round-robin (rep 1 of every configuration, then rep 2, ...), so drift from other work on a
shared machine spreads over all of them instead of landing on one; the median time per configuration is
reported. Inputs are random (throughput does not depend on their values).

Peak memory, measured in up to two extra steps per configuration after the timed ones and reported as the median.
CUDA: ``torch.cuda.max_memory_allocated`` over the step minus the memory allocated before it. CPU (Linux): the
process's peak resident set (``VmHWM`` in /proc/self/status, reset through /proc/self/clear_refs) during the step
minus the resident set before it, after ``malloc_trim`` has returned freed heap pages to the OS. Those steps pay
the page faults of all their memory (1.3 GB of parameter gradients for ``base``), which a training loop with a warm
allocator does not, so they are not timed. The figure counts what the step adds (activations, workspace; for
training also the parameter gradients, the same for every configuration) including allocator fragmentation, not the
weights or the optimizer state. Inference frees activations as it goes, so its peak sits in the blocks before the
first detector and hardly moves with the keep ratio. Elsewhere memory is reported as null. The counted activation
bytes (``--modes cost``) are the exact figure; these are what the allocator made of them.

Threads: ``torch.set_num_threads(--threads)`` (default: all cores), recorded in the JSON. On CUDA the model runs
under bf16 autocast (``--amp auto``).
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from jobs.bench.model_cost import (
    IDEAL,
    OTHER_PATHS,
    configure,
    cost_rows,
    cost_summary,
    cost_table,
    count_grid,
    label,
    plot_cost,
)
from model.config import COPAConfig
from model.copa import COPA
from model.presets import preset
from model.trainer import make_optimizer
from model.utils import seed_everything


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="copa bench model", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="base", help="model preset (tiny, small, base)")
    p.add_argument("--sizes", default="256,384", help="image sizes in pixels, comma-separated")
    p.add_argument("--keep-ratios", default="1.0,0.7,0.5,0.3", help="keep ratios; 1.0 is the baseline")
    p.add_argument("--layers", default="3,6,9", help="detection layers (the detector runs before this block)")
    p.add_argument("--batch-size", type=int, default=2, help="inference batch size")
    p.add_argument("--train-batch-size", type=int, default=2, help="training batch size (>= 2: ITM negatives)")
    p.add_argument("--reps", type=int, default=3, help="timed inference repetitions per configuration")
    p.add_argument("--train-reps", type=int, default=2, help="timed training repetitions per configuration")
    p.add_argument("--text-len", type=int, default=25, help="caption length in tokens")
    p.add_argument("--modes", default="cost,infer,train", help="cost (counted), infer, train (timed), comma-separated")
    p.add_argument("--cost-sizes", default="256,384,576", help="image sizes of the counted cost table")
    p.add_argument("--cost-batch-size", type=int, default=2, help="batch of the counted steps (>= 2: ITM negatives)")
    p.add_argument("--no-itc-paths", action="store_true", help="skip the ITC-path / ITM-negatives comparison")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--amp", choices=("auto", "off", "bf16"), default="auto", help="auto: bf16 on CUDA, off on CPU")
    p.add_argument("--out", default="bench_out/model", help="output directory (JSON + PNG)")
    p.add_argument("--quick", action="store_true", help="tiny smoke run: tiny preset, two sizes, one rep")
    args = p.parse_args(argv)
    if args.quick:
        args.preset, args.sizes, args.keep_ratios, args.layers = "tiny", "32,48", "1.0,0.5", "1,2"
        args.batch_size, args.train_batch_size, args.reps, args.train_reps = 2, 2, 1, 1
        args.text_len, args.cost_sizes = 8, "32"
    return args


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


# ---- memory ----------------------------------------------------------------------------------------------------


class PeakMemory:
    """Peak extra memory of a block of work: CUDA allocator stats, or Linux peak RSS (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu_ok = device.type == "cpu" and Path("/proc/self/clear_refs").exists()
        self.libc = None
        if self.cpu_ok:
            try:
                self.libc = ctypes.CDLL("libc.so.6")
            except OSError:
                self.libc = None
        self.method = (
            "torch.cuda.max_memory_allocated delta"
            if device.type == "cuda"
            else "VmHWM - VmRSS (after malloc_trim, clear_refs reset)"
            if self.cpu_ok
            else "unavailable"
        )

    @staticmethod
    def _status_kib(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise RuntimeError(f"/proc/self/status has no {field}")

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        elif self.cpu_ok:
            if self.libc is not None:
                self.libc.malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.before = self._status_kib("VmRSS") * 1024

    def stop(self) -> int | None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self.before
        if self.cpu_ok:
            return self._status_kib("VmHWM") * 1024 - self.before
        return None


# ---- work ------------------------------------------------------------------------------------------------------


def make_batch(cfg: COPAConfig, batch_size: int, text_len: int, device: torch.device) -> dict[str, torch.Tensor]:
    t, G, S = cfg.text, cfg.vision.grid_size, cfg.vision.img_size
    ids = torch.randint(max(t.mask_id, t.sep_id, t.cls_id) + 1, t.vocab_size, (batch_size, text_len))
    ids[:, 0], ids[:, -1] = t.cls_id, t.sep_id
    return {
        "image": torch.randn(batch_size, 3, S, S, device=device),
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids, device=device),
        "coverage": torch.randint(0, 256, (batch_size, G, G), dtype=torch.uint8, device=device),
        "has_labels": torch.ones(batch_size, dtype=torch.bool, device=device),
    }


def size_config(name: str, size: int) -> COPAConfig:
    cfg = preset(name)
    return dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, img_size=size))


def run_grid(model: COPA, mode: str, configs: list[dict], batch: dict, reps: int, device, amp, memory) -> None:
    """Round-robin over ``configs`` (dicts with layer, keep_ratio, itc_image_path, itm_negatives); fills results."""
    opt = make_optimizer(model, lr=1e-7, weight_decay=0.02) if mode == "train" else None  # the trainer's
    base_cfg = model.cfg

    def step(c: dict) -> None:
        configure(model, c)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            if mode == "infer":
                with torch.inference_mode():
                    model.fused_states(batch["image"], batch["input_ids"], batch["attention_mask"])
            else:
                model(batch)["loss"].backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    model.train(mode == "train")
    step(configs[0])  # warm-up: lazy initialization, the optimizer state, the allocator's first growth
    for _ in range(reps):  # timed with a warm allocator, as training runs
        for c in configs:
            t0 = time.perf_counter()
            step(c)
            c.setdefault("seconds", []).append(time.perf_counter() - t0)
    for _ in range(min(reps, 2)):  # measuring memory returns freed pages first, so these steps are not timed
        for c in configs:
            memory.start()
            step(c)
            c.setdefault("peak_bytes_reps", []).append(memory.stop())
    for c in configs:
        c["samples_per_s"] = batch["image"].shape[0] / statistics.median(c["seconds"])
        peaks = [b for b in c["peak_bytes_reps"] if b is not None]
        c["peak_bytes"] = int(statistics.median(peaks)) if peaks else None
    model.set_detection(base_cfg.vision.detect_layers, base_cfg.vision.keep_ratios)
    model.cfg = base_cfg


def add_ratios(configs: list[dict]) -> None:
    base = next(c for c in configs if c["keep_ratio"] == 1.0)
    for c in configs:
        c["throughput_ratio"] = c["samples_per_s"] / base["samples_per_s"]
        c["memory_ratio"] = c["peak_bytes"] / base["peak_bytes"] if c["peak_bytes"] and base["peak_bytes"] else None


def grid_configs(cfg: COPAConfig, keep_ratios: list[float], layers: list[int]) -> list[dict]:
    """The timed grid: keep 1.0 (one unpruned tail), then every layer and keep ratio with the model's own paths."""
    default = {
        "itc_image_path": cfg.itc_image_path,
        "itm_negatives": cfg.itm_negatives,
        "itc_keep_ratio": cfg.itc_keep_ratio,
        "checkpointing": "none",
        "figure": "grid",
    }
    configs = [{**default, **IDEAL, "layer": layers[0], "keep_ratio": 1.0}]  # identity detectors: any layer
    configs += [{**default, "layer": k, "keep_ratio": r} for k in layers for r in keep_ratios if r < 1.0]
    return configs


def path_configs(cfg: COPAConfig) -> list[dict]:
    """The other ITC image paths and ITM negatives, timed at the model's own layer and keep ratio."""
    own = {"layer": cfg.vision.detect_layers[0], "keep_ratio": cfg.vision.keep_ratios[0], "checkpointing": "none"}
    base = {"figure": "itc_paths", "itc_keep_ratio": cfg.itc_keep_ratio, **own}
    return [{**base, **IDEAL}] + [{**base, **other} for other in OTHER_PATHS]


# ---- report ----------------------------------------------------------------------------------------------------


def summary_lines(results: list[dict]) -> list[str]:
    lines = []
    for mode in ("infer", "train"):
        sizes = sorted({r["size"] for r in results if r["mode"] == mode and r["figure"] == "grid"})
        for size in sizes:
            rows = [r for r in results if r["mode"] == mode and r["size"] == size and r["figure"] == "grid"]
            parts = []
            for layer in sorted({r["layer"] for r in rows if r["keep_ratio"] < 1.0}):
                cells = [
                    f"{r['keep_ratio']:g}: x{r['throughput_ratio']:.2f}"
                    + (f"/mem x{r['memory_ratio']:.2f}" if r["memory_ratio"] else "")
                    for r in rows
                    if r["layer"] == layer and r["keep_ratio"] < 1.0
                ]
                parts.append(f"layer {layer} [" + ", ".join(cells) + "]")
            base = next(r for r in rows if r["keep_ratio"] == 1.0)
            lines.append(
                f"bench model {mode} {size}px: throughput/memory vs keep 1.0 ({base['samples_per_s']:.3g} samples/s): "
                + "; ".join(parts)
            )
    itc = [r for r in results if r["figure"] == "itc_paths"]
    if itc:
        cells = [f"{label(r)}: x{r['throughput_ratio']:.2f}" for r in itc]
        lines.append(f"bench model train {itc[0]['size']}px ITC paths vs keep 1.0: " + ", ".join(cells))
    return lines


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    for col, mode in enumerate(("infer", "train")):
        rows = [r for r in results if r["mode"] == mode and r["figure"] == "grid"]
        base_rows = [r for r in rows if r["keep_ratio"] == 1.0]
        for size in sorted({r["size"] for r in rows}):
            base = next(r for r in base_rows if r["size"] == size)
            for layer in sorted({r["layer"] for r in rows if r["keep_ratio"] < 1.0}):
                pruned = [r for r in rows if r["size"] == size and r["layer"] == layer and r["keep_ratio"] < 1.0]
                sel = [base, *sorted(pruned, key=lambda r: -r["keep_ratio"])]
                keep = [r["keep_ratio"] for r in sel]
                label = f"{size}px, layer {layer}"
                axes[0, col].plot(keep, [r["throughput_ratio"] for r in sel], marker="o", label=label)
                if all(r["memory_ratio"] for r in sel):
                    axes[1, col].plot(keep, [r["memory_ratio"] for r in sel], marker="o", label=label)
        axes[0, col].set_title(f"{mode}: throughput vs keep ratio 1.0")
        axes[1, col].set_title(f"{mode}: peak memory vs keep ratio 1.0")
        for ax in axes[:, col]:
            ax.axhline(1.0, color="grey", lw=0.8)
            ax.grid(alpha=0.3)
        axes[1, col].set_xlabel("keep ratio")
    axes[0, 0].set_ylabel("samples/s ratio")
    axes[1, 0].set_ylabel("peak memory ratio")
    for ax in axes.flat:
        if ax.get_lines()[1:]:  # more than the reference line
            ax.legend(fontsize=7)
    fig.suptitle("COPA text-aware patch detector: cost vs keep ratio (same run, same weights)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- main ------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    amp = args.amp == "bf16" or (args.amp == "auto" and device.type == "cuda")
    torch.set_num_threads(args.threads)
    seed_everything(0)
    sizes, keep_ratios, layers = ints(args.sizes), floats(args.keep_ratios), ints(args.layers)
    if 1.0 not in keep_ratios:
        keep_ratios = [1.0, *keep_ratios]
    modes = [m for m in args.modes.split(",") if m]
    if args.train_batch_size < 2 and "train" in modes:
        raise ValueError("--train-batch-size must be >= 2 (ITM needs negatives)")
    memory = PeakMemory(device)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    results: list[dict] = []
    started = time.perf_counter()
    cost_sizes = ints(args.cost_sizes) if "cost" in modes else []
    for size in sorted(set(sizes) | set(cost_sizes), key=[*cost_sizes, *sizes].index):
        cfg = size_config(args.preset, size)
        model = COPA(cfg).to(device)
        if size in cost_sizes:
            t0 = time.perf_counter()
            rows = cost_rows(model, size, layers, [r for r in keep_ratios if r < 1.0], first=size == cost_sizes[0])
            count_grid(model, rows, make_batch(cfg, args.cost_batch_size, args.text_len, device))
            results += rows
            print(f"[bench model] cost {size}px: {len(rows)} settings in {time.perf_counter() - t0:.0f}s", flush=True)
        for mode in [m for m in modes if m != "cost" and size in sizes]:
            configs = grid_configs(cfg, keep_ratios, layers)
            if mode == "train" and size == sizes[0] and not args.no_itc_paths:
                configs += path_configs(cfg)
            batch_size = args.batch_size if mode == "infer" else args.train_batch_size
            batch = make_batch(cfg, batch_size, args.text_len, device)
            reps = args.reps if mode == "infer" else args.train_reps
            t0 = time.perf_counter()
            run_grid(model, mode, configs, batch, reps, device, amp, memory)
            add_ratios(configs)
            results += [{"mode": mode, "size": size, "batch_size": batch_size, **c} for c in configs]
            print(
                f"[bench model] {mode} {size}px: {len(configs)} configs in {time.perf_counter() - t0:.0f}s", flush=True
            )
        del model
        gc.collect()

    cost = [r for r in results if r["figure"] == "cost"]
    timed = [r for r in results if r["figure"] != "cost"]
    own = preset(args.preset).vision
    cost_lines = cost_table(cost, "train") + cost_table(cost, "infer") if cost else []
    lines = summary_lines(timed) + (cost_summary(cost, own.detect_layers[0], own.keep_ratios[0]) if cost else [])
    report = {
        "benchmark": "model",
        "args": vars(args),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "amp_bf16": amp,
        "memory_method": memory.method,
        "seconds_total": time.perf_counter() - started,
        "results": results,
        "summary": lines,
        "cost_table": cost_lines,
    }
    (out_dir / "bench_model.json").write_text(json.dumps(report, indent=2) + "\n")
    written = [out_dir / "bench_model.json"]
    if timed:
        plot(timed, out_dir / "bench_model.png")
        written.append(out_dir / "bench_model.png")
    if cost:
        plot_cost(cost, out_dir / "bench_model_cost.png")
        written.append(out_dir / "bench_model_cost.png")
    for line in [*cost_lines, *lines]:
        print(line)
    print(f"[bench model] wrote {', '.join(str(p) for p in written)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
