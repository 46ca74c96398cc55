"""Histograms of a dataset summary (``copa inspect DATASET --histograms DIR``), drawn with matplotlib (Agg).

They plot the fixed-bin counts that ``manifests.inspect.summarize`` keeps while it streams the manifests, so a
plot costs nothing more than the summary and never holds the rows:

- ``label_density.png``: the positive-patch fraction of grounded captions (captions that name at least one box),
  in bins of ``pos_fraction_histogram["bin_width"]``: how much of the image PTA marks as relevant;
- ``caption_length.png``: caption length in words (``caption_words_histogram[n]`` captions have n words).

Both are ``SIZE`` pixels, whatever the data.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt

SIZE = (640, 400)  # pixels of every histogram
_DPI = 100


def save_figure(fig: plt.Figure, path: str | os.PathLike, dpi: int = _DPI) -> Path:
    """Write ``fig`` as PNG through a temporary name renamed into place, so readers never see half a file; closes
    the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _figure(title: str, xlabel: str) -> tuple[plt.Figure, plt.Axes]:
    fig, ax = plt.subplots(figsize=(SIZE[0] / _DPI, SIZE[1] / _DPI), dpi=_DPI)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel("captions", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3, axis="y")
    return fig, ax


def write_histograms(summary: dict, out: str | os.PathLike) -> list[Path]:
    """``label_density.png`` and ``caption_length.png`` in ``out`` from a ``summarize`` dict; returns the paths."""
    out = Path(out)
    density = summary["pos_fraction_histogram"]
    counts = np.asarray(density["counts"])
    edges = np.arange(len(counts) + 1) * density["bin_width"]
    pos = summary["pos_fraction_of_grounded"]
    fig, ax = _figure(
        f"{summary['root']}: {int(counts.sum())} grounded captions"
        + (f", median {pos['p50']:.3f}, mean {pos['mean']:.3f}" if pos else ""),
        "fraction of the image's patches that the caption's boxes touch (PTA positives)",
    )
    ax.stairs(counts, edges, fill=True, alpha=0.8)
    ax.set_xlim(0, 1)
    written = [save_figure(fig, out / "label_density.png")]

    words = np.asarray(summary["caption_words_histogram"])
    lengths = summary["caption_words"]
    fig, ax = _figure(
        f"{summary['root']}: {int(words.sum())} captions"
        + (f", median {lengths['p50']:g} words, mean {lengths['mean']:.1f}" if lengths else ""),
        "words per caption",
    )
    ax.bar(np.arange(len(words)), words, width=1.0, alpha=0.8)
    ax.set_xlim(-0.5, max(len(words), 2) - 0.5)
    written.append(save_figure(fig, out / "caption_length.png"))
    return written
