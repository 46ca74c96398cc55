"""The counted half of ``copa bench model``: GFLOPs and activation bytes per sample, per component (``model/cost.py``).

Counts are exact and machine-independent, so they hold on the GPUs the toolkit is for. For each image size the
training step (five losses and backward) and the VQA-like inference forward (text encoder + text-aware ViT-TPD +
fusion) are counted

- at keep ratio 1.0 (every detector an identity, one ViT tail: the unpruned baseline every ratio refers to);
- for each detect layer and keep ratio, with the model's default ITC image path and ITM negatives, and with
  ``itc_image_path="text_query"`` + ``itm_negatives="reuse"`` (one text-aware tail: the least a step can cost at
  that layer and keep ratio, called "ideal" below). The default's overhead is its cost over the ideal's;
- at the first size only, the other ITC paths and ITM negatives at each detect layer (the preset's keep ratio),
  and activation checkpointing (vision, text, all) at the preset's own layer and keep ratio.

A sample costs the same in every batch (the batch only repeats it), so the counts run on a small random batch and
are divided by its size. One exception: with a momentum queue (``base``) what the momentum component saves for
backward is the two candidate matrices, queue included (2 x E x (Q + B) floats, 128 MiB at ``base``), a per-step
constant that divided by a batch of 2 would read as 64 MiB per sample; it is reported per step
(``momentum_saved_mib_per_step``) and left out of the per-sample bytes. The momentum towers' FLOPs (no gradients)
are per sample and stay in.
"""

from __future__ import annotations

import dataclasses

import torch

from model import cost
from model.copa import COPA

IDEAL = {"itc_image_path": "text_query", "itm_negatives": "reuse", "itc_keep_ratio": None}
OTHER_PATHS = [  # compared at the first size: every ITC image path and both ITM negatives
    {"itc_image_path": "cls_query", "itm_negatives": "requery"},
    {"itc_image_path": "cls_query", "itm_negatives": "reuse", "itc_keep_ratio": None},
    {"itc_image_path": "cls_query", "itm_negatives": "requery", "itc_keep_ratio": None},
    {"itc_image_path": "unpruned", "itm_negatives": "reuse"},
]
CHECKPOINTING = {"none": (False, False), "vision": (True, False), "text": (False, True), "all": (True, True)}


def configure(model: COPA, c: dict) -> None:
    """Put ``model`` in the setting of row ``c`` (layer, keep ratio, ITC path, ITM negatives, checkpointing)."""
    model.set_detection((c["layer"],), (c["keep_ratio"],))
    model.set_checkpointing(*CHECKPOINTING[c["checkpointing"]])
    model.cfg = dataclasses.replace(
        model.cfg,
        itc_image_path=c["itc_image_path"],
        itm_negatives=c["itm_negatives"],
        itc_keep_ratio=c["itc_keep_ratio"],
    )


def count_row(model: COPA, c: dict, batch: dict) -> cost.Cost:
    """One counted training step or inference forward in the setting of row ``c``."""
    if c["mode"] == "train":
        model.train()

        def run() -> None:
            model(batch)["loss"].backward()

        counted = cost.count(run, model)
        model.zero_grad(set_to_none=True)
        return counted
    model.eval()

    def infer() -> None:
        with torch.inference_mode():
            model.fused_states(batch["image"], batch["input_ids"], batch["attention_mask"])

    return cost.count(infer, model)


def cost_rows(model: COPA, size: int, layers: list[int], keep_ratios: list[float], first: bool) -> list[dict]:
    """The settings counted at one image size (see the module docstring)."""
    cfg = model.cfg
    default = {
        "itc_image_path": cfg.itc_image_path,
        "itm_negatives": cfg.itm_negatives,
        "itc_keep_ratio": cfg.itc_keep_ratio,
        "checkpointing": "none",
    }
    rows = []
    for mode in ("train", "infer"):
        base = {"figure": "cost", "mode": mode, "size": size, **default}
        rows.append({**base, **IDEAL, "layer": layers[0], "keep_ratio": 1.0, "setting": "unpruned"})
        for layer in layers:
            for keep in keep_ratios:
                at = {"layer": layer, "keep_ratio": keep}
                rows.append({**base, **at, "setting": "default"})
                if mode == "train":
                    rows.append({**base, **at, **IDEAL, "setting": "ideal"})
    if first:
        base = {"figure": "cost", "mode": "train", "size": size, **default, "keep_ratio": cfg.vision.keep_ratios[0]}
        rows += [{**base, "layer": layer, **o, "setting": "path"} for layer in layers for o in OTHER_PATHS]
        own = {**base, "layer": cfg.vision.detect_layers[0]}
        rows += [{**own, "checkpointing": name, "setting": "checkpointing"} for name in CHECKPOINTING if name != "none"]
    return rows


def count_grid(model: COPA, rows: list[dict], batch: dict) -> None:
    """Count every row in place: per-sample GFLOPs and MiB saved for backward, total and per component."""
    base_cfg = model.cfg
    B = batch["image"].shape[0]
    for c in rows:
        configure(model, c)
        torch.manual_seed(0)  # the same masking, prefix split and negatives in every setting
        counted = count_row(model, c, batch)
        per_step = counted.saved_bytes.pop(cost.MOMENTUM, 0) if c["mode"] == "train" else 0
        c["gflops"] = counted.total_flops / B / 1e9
        c["saved_mib"] = counted.total_saved_bytes / B / 2**20
        c["gflops_by_component"] = {k: v / B / 1e9 for k, v in sorted(counted.flops.items())}
        c["saved_mib_by_component"] = {k: v / B / 2**20 for k, v in sorted(counted.saved_bytes.items())}
        c["momentum_saved_mib_per_step"] = per_step / 2**20
    model.set_detection(base_cfg.vision.detect_layers, base_cfg.vision.keep_ratios)
    model.set_checkpointing(base_cfg.vision.grad_checkpointing, base_cfg.text.grad_checkpointing)
    model.cfg = base_cfg
    add_cost_ratios(rows)


def add_cost_ratios(rows: list[dict]) -> None:
    """Ratios to the unpruned step of the same size and mode, and the default's overhead over the ideal."""
    for c in rows:
        base = next(r for r in rows if r["setting"] == "unpruned" and (r["size"], r["mode"]) == (c["size"], c["mode"]))
        c["flops_ratio"] = c["gflops"] / base["gflops"]
        c["saved_ratio"] = c["saved_mib"] / base["saved_mib"] if base["saved_mib"] else None
        ideal = [
            r
            for r in rows
            if r["setting"] == "ideal"
            and (r["size"], r["mode"], r["layer"], r["keep_ratio"])
            == (c["size"], c["mode"], c["layer"], c["keep_ratio"])
        ]
        if ideal and c["setting"] != "ideal":
            c["flops_over_ideal"] = c["gflops"] / ideal[0]["gflops"] - 1.0
            c["saved_over_ideal"] = c["saved_mib"] / ideal[0]["saved_mib"] - 1.0


# ---- report ----------------------------------------------------------------------------------------------------

GROUPS = ("vit_shared", "vit_tail.fusion", "vit_tail.itc", "vit_tail.itm_negatives", "detector", "text_encoder")
GROUPS += ("fusion", "decoder", "heads", "momentum", "other")


def group(by_component: dict[str, float]) -> dict[str, float]:
    """Components summed into the table's columns: the ViT tails stay apart, ``fusion.itm`` joins ``fusion``."""
    out = dict.fromkeys(GROUPS, 0.0)
    for name, value in by_component.items():
        key = name if name in out else name.split(".")[0]
        out[key if key in out else "other"] += value
    return out


def label(c: dict) -> str:
    if c.get("setting") == "unpruned":
        return "keep 1.0 (unpruned)"
    itc = c["itc_image_path"]
    if itc == "cls_query":
        itc += f"@{c['itc_keep_ratio'] or c['keep_ratio']:g}"
    name = f"L{c['layer']} keep {c['keep_ratio']:g} {itc}+{c['itm_negatives']}"
    return name + (f" ckpt={c['checkpointing']}" if c["checkpointing"] != "none" else "")


def cost_table(rows: list[dict], mode: str) -> list[str]:
    """A text table per size: totals, ratios and GFLOPs per component (train) or per inference forward."""
    lines = []
    short = {"vit_shared": "shared", "vit_tail.fusion": "tail", "vit_tail.itc": "itc", "vit_tail.itm_negatives": "neg"}
    cols = [g for g in GROUPS if any(group(r["gflops_by_component"])[g] for r in rows if r["mode"] == mode)]
    for size in sorted({r["size"] for r in rows if r["mode"] == mode}):
        sel = [r for r in rows if r["mode"] == mode and r["size"] == size]
        what = "training step" if mode == "train" else "inference forward (text + ViT-TPD + fusion)"
        lines.append(f"bench model cost {size}px {what}: GFLOPs and MiB saved for backward per sample")
        head = f"  {'setting':<44} {'GFLOPs':>7} {'x':>5} {'MiB':>6} {'x':>5} {'+ideal':>7} |"
        lines.append(head + "".join(f" {short.get(g, g)[:8]:>8}" for g in cols))
        for r in sel:
            over = f"{100 * r['flops_over_ideal']:+6.1f}%" if "flops_over_ideal" in r else ""
            mib = f"{r['saved_mib']:6.4g} {r['saved_ratio']:5.2f}" if r["saved_ratio"] else f"{'-':>6} {'-':>5}"
            by = group(r["gflops_by_component"])
            line = f"  {label(r):<44} {r['gflops']:7.4g} {r['flops_ratio']:5.2f} {mib} {over:>7} |"
            lines.append(line + "".join(f" {by[g]:8.4g}" for g in cols))
    return lines


def cost_summary(rows: list[dict], default_layer: int, default_keep: float) -> list[str]:
    """The headline figures: the default's cost against the unpruned step, and its overhead over the ideal."""
    lines = []
    train = [r for r in rows if r["mode"] == "train"]
    for size in sorted({r["size"] for r in train}):
        at = [r for r in train if r["size"] == size and r["setting"] == "default"]
        own = [r for r in at if (r["layer"], r["keep_ratio"]) == (default_layer, default_keep)]
        worst = max(at, key=lambda r: max(r["flops_over_ideal"], r["saved_over_ideal"]), default=None)
        if own:
            r = own[0]
            if r["momentum_saved_mib_per_step"]:
                mom = r["gflops_by_component"].get(cost.MOMENTUM, 0.0)
                lines.append(
                    f"bench model cost train {size}px: the momentum towers and queue cost {mom:.1f} GFLOPs per "
                    f"sample ({100 * mom / r['gflops']:.1f}% of the default step) and save "
                    f"{r['momentum_saved_mib_per_step']:.0f} MiB per step for backward whatever the batch"
                )
            lines.append(
                f"bench model cost train {size}px: the default ({label(r)}) costs x{r['flops_ratio']:.3f} the "
                f"unpruned step's FLOPs and x{r['saved_ratio']:.3f} its saved bytes; ITC path + ITM negatives add "
                f"{100 * r['flops_over_ideal']:+.1f}% FLOPs, {100 * r['saved_over_ideal']:+.1f}% bytes over the ideal"
            )
        if worst:
            lines.append(
                f"bench model cost train {size}px: largest overhead of the default paths over the ideal, over "
                f"{len(at)} layer/keep settings: {100 * worst['flops_over_ideal']:+.1f}% FLOPs, "
                f"{100 * worst['saved_over_ideal']:+.1f}% bytes ({label(worst)})"
            )
    return lines


def plot_cost(rows: list[dict], path) -> None:
    """The paper's Figures 1 and 3 in counted form: FLOPs and training memory vs keep ratio, per detect layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = [
        (axes[0], "infer", "flops_ratio", "inference GFLOPs vs keep 1.0 (Fig. 1: throughput)"),
        (axes[1], "train", "flops_ratio", "training-step GFLOPs vs keep 1.0"),
        (axes[2], "train", "saved_ratio", "training activation memory vs keep 1.0 (Fig. 3)"),
    ]
    sizes = sorted({r["size"] for r in rows})
    styles = ["-", "--", ":"]
    for ax, mode, key, title in panels:
        for si, size in enumerate(sizes):
            base = [r for r in rows if r["mode"] == mode and r["size"] == size and r["setting"] == "unpruned"]
            layers = sorted({r["layer"] for r in rows if r["setting"] == "default" and r["size"] == size})
            for li, layer in enumerate(layers):
                sel = [
                    r
                    for r in rows
                    if r["mode"] == mode and r["size"] == size and r["layer"] == layer and r["setting"] == "default"
                ]
                if not base or not sel:
                    continue
                pts = sorted([(1.0, 1.0)] + [(r["keep_ratio"], r[key]) for r in sel if r[key]])
                ax.plot(
                    *zip(*pts, strict=True),
                    marker="o",
                    ls=styles[si % len(styles)],
                    color=f"C{li}",
                    label=f"{size}px, detect before block {layer}",
                )
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("keep ratio")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("ratio to the unpruned model (counted)")
    axes[2].legend(fontsize=7)
    fig.suptitle("COPA cost vs keep ratio, counted (torch FLOP counter, bytes saved for backward): default paths")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
