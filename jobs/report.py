"""Plots and the markdown report of a run: loss curves from ``metrics.jsonl``, detector precision/recall by keep
ratio, and the demo report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

from manifests.histograms import save_figure
from manifests.inspect import format_summary, summarize

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt

PRETRAINING = ("loss", "loss_itc", "loss_itm", "loss_mlm", "loss_prefixlm", "loss_pta", "itm_acc")  # the metrics
CURVES = (*PRETRAINING[:-1], "loss_caption", "itm_acc", "lr")  # every metric plotted when a run logs it


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
    return save_figure(fig, png)


def plot_detector(result: dict, png: Path) -> None:
    """Precision and recall of the kept patches against the keep ratio, with chance (the paper's Figure 5)."""
    rows = result["detector"]
    keep = [r["keep_ratio"] for r in rows]
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    ax.plot(keep, [r["recall"] for r in rows], "o-", label="recall")
    ax.plot(keep, [r["precision"] for r in rows], "s-", label="precision")
    ax.plot(keep, [r["chance_recall"] for r in rows], ":", color="grey", label="chance recall")
    ax.plot(keep, [r["chance_precision"] for r in rows], "--", color="grey", label="chance precision")
    ax.set_xlabel("keep ratio")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"kept patches vs PTA labels ({rows[0]['pairs']} pairs)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, png, dpi=110)


def plot_tradeoff(rows: list[dict], metric: str, cost: str, title: str, png: Path) -> None:
    """The speed/accuracy trade-off (the paper's Figure 1a/1c): ``metric`` against ``cost`` (GFLOPs per item) for
    each detect-layer setting, a point per keep ratio; keep ratio 1.0 (nothing pruned) starts every line."""
    full = [r for r in rows if r["keep_ratio"] == 1.0]
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for layers in dict.fromkeys(tuple(r["detect_layers"]) for r in rows if r["keep_ratio"] != 1.0):
        line = full + [r for r in rows if tuple(r["detect_layers"]) == layers and r["keep_ratio"] != 1.0]
        ax.plot([r[cost] for r in line], [r[metric] for r in line], "o-", label=f"detect layer {list(layers)}")
        for r in line:
            point = (r[cost], r[metric])
            ax.annotate(str(r["keep_ratio"]), point, fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(cost.replace("_", " "))
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, png, dpi=110)


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def demo_report(out: Path, seconds: dict[str, float]) -> tuple[Path, list[str]]:
    """``out/report.md`` from what each demo step wrote; returns its path and the headline figures (for printing)."""
    ingest = json.loads((out / "source.parquet.ingest.json").read_text())["summary"]
    dataset = json.loads((out / "shards" / "dataset.json").read_text())
    run = out / "run"
    metrics = read_metrics(run / "metrics.jsonl")
    train_cfg = json.loads((run / "train_config.json").read_text())
    result = json.loads((run / "eval" / "eval.json").read_text())
    first, last = metrics[0], metrics[-1]
    trained_keep = result["keep_ratios_trained"][0]
    at_keep = next((d for d in result["detector"] if d["keep_ratio"] == trained_keep), result["detector"][-1])
    ret = result["retrieval"]
    k, t2i, i2t = at_keep, "text_to_image", "image_to_text"
    headline = [
        f"detector recall at keep {k['keep_ratio']}: {k['recall']:.2f} (chance {k['chance_recall']:.2f}), precision "
        f"{k['precision']:.2f} (chance {k['chance_precision']:.2f}) over {k['pairs']} held-out caption-image pairs",
        f"retrieval R@1 text->image {ret[t2i]['R@1']:.3f} (chance {ret[f'chance_{t2i}_R@1']:.3f}), image->text "
        f"{ret[i2t]['R@1']:.3f} (chance {ret[f'chance_{i2t}_R@1']:.3f}) over {ret['images']} held-out images",
        f"PTA loss {first['loss_pta']:.3f} -> {last['loss_pta']:.3f}, total loss {first['loss']:.2f} -> "
        f"{last['loss']:.2f} in {last['step']} steps",
    ]
    if "naming" in result:
        n = result["naming"]
        headline.insert(2, f"greedy captions name objects that are in the picture with precision {n['precision']:.2f} "
                        f"(chance {n['chance_precision']:.2f}) over {n['named_objects']} named objects in "
                        f"{n['images']} held-out pictures with boxes")  # fmt: skip
    lines = ["# COPA demo report", "", "Everything here was made by `make demo` on this machine, from a synthetic "
             "corpus the toolkit generated itself.", "", "## Figures", ""] + [f"- {h}" for h in headline]  # fmt: skip
    lines += ["", "## Steps", ""]
    lines += _table(["step", "seconds"], [[name, f"{s:.1f}"] for name, s in seconds.items()])
    lines += ["", "## Corpus and shards", ""]
    rows = [
        [name, s["images"], s["ok"], s["merged"], s["captions"], s["grounded_captions"], s["boxes"]]
        for name, s in sorted(ingest.items())
    ]
    lines += _table(["source", "images", "ok", "merged", "captions", "grounded captions", "boxes"], rows)
    lines += ["", f"Packed {dataset['num_samples']} samples into {dataset['num_shards']} shards "
              f"({dataset['num_rejected']} rows rejected with a reason in the manifests); labels on a "
              f"{dataset['geometry']['image_size'] // dataset['geometry']['patch_size']}-patch grid."]  # fmt: skip
    t = train_cfg["train"]
    lines += ["", "## Training", "", f"Model at {train_cfg['model']['vision']['img_size']} px, {last['step']} "
              f"steps of {t['batch_size']} on CPU, lr {t['lr']}, keep ratio {trained_keep} at block "
              f"{train_cfg['model']['vision']['detect_layers'][0]}; {last['samples_per_s']:.1f} samples/s at the end.",
              "", "![loss curves](run/loss_curves.png)", ""]  # fmt: skip
    lines += _table(
        ["step", "loss", "ITC", "ITM", "MLM", "PrefixLM", "PTA", "ITM acc"],
        [[m["step"], *(f"{m[k]:.3f}" for k in PRETRAINING)] for m in (first, metrics[len(metrics) // 2], last)],
    )
    lines += ["", "## Evaluation on the held-out shard", "",
              "Precision and recall of the patches the text-aware detector keeps, against the PTA labels "
              "(chance: patches picked at random).", ""]  # fmt: skip
    rows = [
        [d["keep_ratio"], f"{d['precision']:.3f}", f"{d['recall']:.3f}", f"{d['all_positives_kept']:.3f}",
         f"{d['chance_precision']:.3f}", f"{d['chance_recall']:.3f}"]
        for d in result["detector"]
    ]  # fmt: skip
    lines += _table(["keep", "precision", "recall", "all positives kept", "chance precision", "chance recall"], rows)
    lines += ["", "![precision and recall by keep ratio](run/eval/detector_recall.png)", ""]
    rows = [[name.replace("_", " "), *(f"{v:.3f}" for v in ret[name].values()), f"{ret[f'chance_{name}_R@1']:.3f}"]
            for name in ("text_to_image", "image_to_text")]  # fmt: skip
    lines += _table(["retrieval", "R@1", "R@5", "R@10", "chance R@1"], rows)
    lines += ["", "Greedy captions:", ""]
    lines += _table(["image", "generated", "a reference caption"],
                    [[c["key"], c["generated"], c["references"][0]] for c in result["captions"]])  # fmt: skip
    if "caption_metrics" in result:
        m = result["caption_metrics"]
        lines += ["", f"Greedy captions of {m['images']} held-out images against their references, beside one constant "
                  f"caption for all (the commonest reference, '{m['constant_caption']}'):", ""]  # fmt: skip
        names = list(m["scores"])
        lines += _table(["captions", *names], [
            ["greedy", *(f"{m['scores'][k]:.3f}" for k in names)],
            ["constant", *(f"{m['constant_caption_scores'][k]:.3f}" for k in names)],
        ])  # fmt: skip
    lines += ["", "Detector picks on held-out images (PTA labels | detector scores | kept patches):", "",
              "![detector picks](run/eval/detector_picks.png)", ""]  # fmt: skip
    lines += ["## What the shards hold (`copa inspect`)", "", "```", format_summary(summarize(str(out / "shards"))),
              "```", "", "![label density](inspect/label_density.png) ![caption length](inspect/caption_length.png)",
              "", "Random samples: the stored image with its boxes, then per caption the patch grid tinted by "
              "coverage, with the words that matched a box highlighted:", "",
              "![contact sheet](inspect/contact_sheet.png)", ""]  # fmt: skip
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path, headline


def downstream_report(out: Path, seconds: dict[str, float]) -> tuple[Path, list[str]]:
    """``out/downstream.md`` of ``copa demo --downstream``: zero-shot beside fine-tuned retrieval and captioning on
    the Karpathy test split, VQA and grounding beside their baselines, then each fine-tuned task's report; returns
    the path and headlines. Tasks the demo did not run are left out."""
    headline, sections = [], []
    if (out / "retrieval").is_dir() or (out / "caption").is_dir():
        headline, sections = _karpathy_sections(out)
    if (out / "vqa").is_dir():
        result = json.loads((out / "vqa" / "eval_val" / "eval.json").read_text())
        row, base = _at_trained(result), result["majority_baseline"]
        types = sorted(row["per_type"])
        per_type = ", ".join(f"{t} {row['per_type'][t]:.3f} ({base['per_type'][t]:.3f})" for t in types)
        headline.append(f"VQA on {result['questions']} questions: accuracy {row['overall']:.3f} against the majority "
                        f"answer per type {base['overall']:.3f}; per type (majority): {per_type}")  # fmt: skip
        sections += ["", "## VQA", "", "![loss curves](vqa/loss_curves.png)", _body(out / "vqa" / "eval_val", "vqa")]
    if (out / "grounding").is_dir():
        figures = []
        for split in ("val", "testA", "testB"):
            result = json.loads((out / "grounding" / f"eval_{split}" / "eval.json").read_text())
            row = _at_trained(result)
            figures.append(f"{split} {row['accuracy']:.3f} (detector's box {row['detector_accuracy']:.3f}, best "
                           f"fixed box {result['best_fixed_box']['accuracy']:.3f})")  # fmt: skip
        headline.append("grounding accuracy (IoU >= 0.5): " + "; ".join(figures))
        sections += ["", "## Grounding", "", "![loss curves](grounding/loss_curves.png)"]
        for split in ("val", "testA", "testB"):
            sections += ["", f"### {split}", _body(out / "grounding" / f"eval_{split}", f"grounding/eval_{split}")]
    lines = ["# COPA downstream demo", "", "A pretrained model fine-tuned on synthetic downstream sets in the real "
             "formats (`copa synth --karpathy --vqa --refexp`) and measured on their test splits.", "",
             "## Figures", "", *(f"- {h}" for h in headline), "", "## Steps", ""]  # fmt: skip
    lines += _table(["step", "seconds"], [[name, f"{s:.1f}"] for name, s in seconds.items()])
    path = out / "downstream.md"
    path.write_text("\n".join(lines + sections) + "\n")
    return path, headline


def _at_trained(result: dict) -> dict:
    """The row of a VQA or grounding result at the setting nearest the model's own keep ratio and detect layer."""
    return result["by_setting"][result["trained_row"]]


def _body(folder: Path, link: str) -> str:
    """A task report without its title, its pictures linked from the demo folder."""
    report = (folder / "report.md").read_text().split("\n", 1)[1]
    return re.sub(r"\]\((\w+\.png)\)", lambda m: f"]({link}/{m[1]})", report)


def _karpathy_sections(out: Path) -> tuple[list[str], list[str]]:
    """Headlines and sections of retrieval and captioning: zero-shot beside fine-tuned, then each report."""
    zero = {t: json.loads((out / f"zero_shot_{t}" / "eval.json").read_text()) for t in ("retrieval", "caption")}
    tuned = {t: json.loads((out / t / "eval" / "eval.json").read_text()) for t in ("retrieval", "caption")}
    config = json.loads((out / "retrieval" / "train_config.json").read_text())
    size, pretrained_at = config["model"]["vision"]["img_size"], zero["retrieval"]["checkpoint"]

    def at_own(result: dict) -> dict:
        rows = result["by_keep_ratio"]
        return min(rows, key=lambda r: abs(r["keep_ratio"] - result["keep_ratio_trained"]))

    ret_zero, ret_tuned = at_own(zero["retrieval"]), at_own(tuned["retrieval"])
    cap_zero, cap_tuned = at_own(zero["caption"]), at_own(tuned["caption"])
    chance = zero["retrieval"]["chance_text_to_image_R@1"]
    constant = tuned["caption"]["constant_caption_scores"]
    headline = [
        f"retrieval on {tuned['retrieval']['images']} test images: text->image R@1 "
        f"{ret_zero['text_to_image']['R@1']:.3f} zero-shot -> {ret_tuned['text_to_image']['R@1']:.3f} fine-tuned "
        f"(chance {chance:.3f}); mean recall {ret_zero['mean_recall']:.3f} -> {ret_tuned['mean_recall']:.3f}",
        f"captioning: CIDEr-D {cap_zero['scores']['CIDEr-D']:.3f} zero-shot -> {cap_tuned['scores']['CIDEr-D']:.3f} "
        f"fine-tuned (one constant caption for all: {constant['CIDEr-D']:.3f}); BLEU-4 "
        f"{cap_zero['scores']['BLEU-4']:.3f} -> {cap_tuned['scores']['BLEU-4']:.3f}",
    ]
    lines = ["", "## Retrieval and captioning", "", f"Pretrained model `{pretrained_at}`, fine-tuned at {size} px on "
             "the train split of a synthetic Karpathy-format set (`copa synth --karpathy`) and evaluated on its test "
             "split (five captions per image). Zero-shot and fine-tuned, at each model's own keep ratio:",
             ""]  # fmt: skip
    recall = lambda r, d: " / ".join(f"{v:.3f}" for v in r[d].values())  # noqa: E731
    lines += _table(
        ["retrieval", "keep", "text->image R@1 / 5 / 10", "image->text R@1 / 5 / 10", "mean recall"],
        [[name, r["keep_ratio"], recall(r, "text_to_image"), recall(r, "image_to_text"), f"{r['mean_recall']:.3f}"]
         for name, r in (("zero-shot", ret_zero), ("fine-tuned", ret_tuned))],
    )  # fmt: skip
    names = list(cap_tuned["scores"])
    lines += ["", *_table(
        ["captions", "keep", *names],
        [[name, r["keep_ratio"], *(f"{r['scores'][k]:.3f}" for k in names)]
         for name, r in (("zero-shot", cap_zero), ("fine-tuned", cap_tuned))]
        + [[f"constant ('{tuned['caption']['constant_caption']}')", "", *(f"{constant[k]:.3f}" for k in names)]],
    )]  # fmt: skip
    for task in ("retrieval", "caption"):
        report = (out / task / "eval" / "report.md").read_text()
        body = report.split("\n", 1)[1].replace("](retrieval_examples.png)", f"]({task}/eval/retrieval_examples.png)")
        lines += ["", f"## Fine-tuned {task}", "", f"![loss curves]({task}/loss_curves.png)", body]
    return headline, lines
