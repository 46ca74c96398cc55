"""``copa demo`` end to end at a small size: every step runs, and the report holds the figures it promises."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from jobs import demo

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_the_demo_runs_every_step_and_writes_its_report(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["--out", str(out), "--images", "120", "--samples-per-shard", "50", "--steps", "3", "--batch-size", "4"]
    assert demo.main(args) == 0
    printed = capsys.readouterr().out
    assert "detector recall at keep 0.5" in printed and "retrieval R@1 text->image" in printed
    report = (out / "report.md").read_text()
    result = json.loads((out / "run" / "eval" / "eval.json").read_text())
    assert result["shards"][0].endswith("000002.tar")  # the last of the 3 shards was held out of training
    recall = next(d["recall"] for d in result["detector"] if d["keep_ratio"] == 0.5)
    assert f"detector recall at keep 0.5: {recall:.2f}" in report
    naming = result["naming"]
    assert naming["images"] > 0 and f"precision {naming['precision']:.2f}" in report
    pictures = ["run/loss_curves.png", "run/eval/detector_recall.png", "run/eval/detector_picks.png"]
    pictures += ["inspect/contact_sheet.png", "inspect/label_density.png", "inspect/caption_length.png"]
    for picture in pictures:
        assert f"]({picture})" in report
        Image.open(out / picture).verify()
    assert len(list((out / "inspect").glob("*-*.png"))) == 6  # one panel per sampled key, besides the sheet
    ok_samples = sum(json.loads((out / "shards" / "sizes.json").read_text()).values())
    assert f"{ok_samples}" in report.split("## What the shards hold")[1]  # the inspect summary counts them
    info = json.loads((out / "shards" / "dataset.json").read_text())
    assert info["geometry"] == {"image_size": 128, "patch_size": 16}  # labels on the small preset's grid


def test_the_downstream_demo_pretrains_fine_tunes_and_evaluates_both_tasks(tmp_path, capsys):
    out = tmp_path / "downstream"
    args = ["--downstream", "--out", str(out), "--images", "120", "--samples-per-shard", "50", "--steps", "3",
            "--batch-size", "4", "--karpathy", "20", "--finetune-size", "160", "--retrieval-steps", "2",
            "--caption-steps", "2", "--itm-rerank", "2", "--vqa", "20", "--refexp", "30", "--vqa-steps", "2",
            "--grounding-steps", "2"]  # fmt: skip
    assert demo.main(args) == 0
    printed = capsys.readouterr().out
    assert "retrieval on 4 test images: text->image R@1" in printed and "captioning: CIDEr-D" in printed
    report = (out / "downstream.md").read_text()
    for task in ("retrieval", "caption"):
        zero = json.loads((out / f"zero_shot_{task}" / "eval.json").read_text())
        tuned = json.loads((out / task / "eval" / "eval.json").read_text())
        assert zero["checkpoint"].startswith(str(out / "run"))  # zero-shot: the pretrained model itself
        assert [r["keep_ratio"] for r in tuned["by_keep_ratio"]] == [1.0, 0.7, 0.5, 0.3]
        config = json.loads((out / task / "train_config.json").read_text())
        assert config["model"]["vision"]["img_size"] == 160 and config["train"]["task"] == task
        assert f"## Fine-tuned {task}" in report
    assert "](retrieval/eval/retrieval_examples.png)" in report
    Image.open(out / "retrieval" / "eval" / "retrieval_examples.png").verify()
    vqa = json.loads((out / "vqa" / "eval_val" / "eval.json").read_text())
    assert [(r["detect_layers"], r["keep_ratio"]) for r in vqa["by_setting"]][:2] == [([3], 1.0), ([3], 0.7)]
    assert {tuple(r["detect_layers"]) for r in vqa["by_setting"]} == {(3,), (5,)}  # two detect layers
    for split in ("val", "testA", "testB"):
        assert json.loads((out / "grounding" / f"eval_{split}" / "eval.json").read_text())["expressions"] > 0
    assert "## VQA" in report and "## Grounding" in report
