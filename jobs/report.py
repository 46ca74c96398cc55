"""Pictures and the markdown report of a training run: loss curves from ``metrics.jsonl``, and the demo report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt

CURVES = ("loss", "loss_itc", "loss_itm", "loss_mlm", "loss_prefixlm", "loss_pta", "itm_acc", "lr")


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_loss_curves(metrics: str | Path, png: str | Path) -> Path | None:
    """One small plot per loss (and ITM accuracy, learning rate) against the step; None when nothing is logged."""
    rows = read_metrics(metrics)
    names = [n for n in CURVES if any(n in r for r in rows)]
    if not rows or not names:
        return None
    cols = 4
    fig, axes = plt.subplots(-(-len(names) // cols), cols, figsize=(3.2 * cols, 2.4 * -(-len(names) // cols)))
    for ax, name in zip(axes.flat, names, strict=False):
        points = [(r["step"], r[name]) for r in rows if name in r]
        ax.plot([s for s, _ in points], [v for _, v in points], lw=1.2)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    png = Path(png)
    tmp = png.with_name(f".tmp-{os.getpid()}-{png.name}")
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    os.replace(tmp, png)
    return png
