"""``copa finetune`` and ``copa evaluate --task`` end to end through ``main([...])``, on the synthetic Karpathy set."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

from jobs import evaluate, finetune, train
from model.checkpoint import list_checkpoints, load_checkpoint

TINY = ["--batch-size", "8", "--workers", "0", "--threads", "1", "--log-every", "1"]


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_retrieval_finetuning_at_a_higher_resolution_resumes_exactly_and_evaluates(
    pretrained, karpathy_corpus, tmp_path, capsys
):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    args = ["--task", "retrieval", "--from", str(pretrained), "--data", str(karpathy_corpus["train"]), *TINY,
            "--image-size", "48", "--keep-ratio", "0.5", "--steps", "4", "--ckpt-every", "2", "--lr", "1e-3",
            "--quiet"]  # fmt: skip
    assert finetune.main([*args, "--out", str(straight)]) == 0
    config = json.loads((straight / "train_config.json").read_text())
    assert config["train"]["task"] == "retrieval" and config["train"]["init_from"] == str(pretrained)
    assert config["model"]["vision"]["img_size"] == 48 and config["model"]["vision"]["keep_ratios"] == [0.5]
    assert {k: v for k, v in config["model"]["loss"].items() if k.startswith("w_") and v} == {"w_itc": 1, "w_itm": 1}
    assert set(metrics(straight)[0]) >= {"loss_itc", "loss_itm"} and "loss_mlm" not in metrics(straight)[0]
    state = load_checkpoint(straight)
    assert state["model"]["vision.vit.pos_embed"].shape[1] == 1 + 6 * 6  # 48 px / 8 px patches
    start = load_checkpoint(pretrained)
    assert state["tokenizer"] == start["tokenizer"]  # the pretrained model's vocabulary ...
    decoder = [k for k in start["model"] if k.startswith(("decoder.", "mlm_head."))]
    assert decoder and all(torch.equal(state["model"][k], start["model"][k]) for k in decoder)  # ... and weights
    # (retrieval does not train the decoder), the rest moved on from them
    assert not torch.equal(state["model"]["itm_head.weight"], start["model"]["itm_head.weight"])

    shutil.copytree(straight, resumed)  # as if the run had stopped after its checkpoint at step 2
    list_checkpoints(resumed)[-1].unlink()
    lines = (resumed / "metrics.jsonl").read_text().splitlines()[:2]
    (resumed / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    assert finetune.main([*args, "--out", str(resumed)]) == 0
    timing = ("samples_per_s", "data_wait_frac")
    assert [{k: v for k, v in m.items() if k not in timing} for m in metrics(resumed)] == [
        {k: v for k, v in m.items() if k not in timing} for m in metrics(straight)
    ]
    a, b = load_checkpoint(straight)["model"], load_checkpoint(resumed)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    out = tmp_path / "eval"
    eval_args = ["--task", "retrieval", "--checkpoint", str(straight), "--shards", str(karpathy_corpus["test"]),
                 "--keep-ratios", "1.0,0.5", "--itm-rerank", "4", "--out", str(out), "--batch-size", "16"]  # fmt: skip
    assert evaluate.main(eval_args) == 0
    result = json.loads((out / "eval.json").read_text())
    assert (result["images"], result["captions"]) == (100, 500)  # the test split: 1/5 of 500, five captions each
    rows = result["by_keep_ratio"]
    assert [r["keep_ratio"] for r in rows] == [1.0, 0.5]
    assert rows[1]["gflops_per_pair"] < rows[0]["gflops_per_pair"]  # fewer visual tokens after the detector
    assert all(r["itm_pairs"] >= 500 * 4 for r in rows)  # each caption's top 4 at least
    assert len(result["examples"]) == 6 and all(len(e["top"]) == 5 for e in result["examples"])
    assert all(e["correct"] == [k == e["key"] for k in e["top"]] for e in result["examples"])
    report = (out / "report.md").read_text()
    assert "| 0.5 |" in report and "GFLOPs per pair" in report and "retrieval_examples.png" in report
    Image.open(out / "retrieval_examples.png").verify()


def test_caption_finetuning_keeps_its_prompt_and_evaluates_with_beam_search(pretrained, karpathy_corpus, tmp_path):
    run, out = tmp_path / "run", tmp_path / "eval"
    args = ["--task", "caption", "--from", str(pretrained), "--data", str(karpathy_corpus["train"]), "--out",
            str(run), *TINY, "--steps", "2", "--prompt", "a picture of", "--quiet"]  # fmt: skip
    assert finetune.main(args) == 0
    assert set(k for k in metrics(run)[0] if k.startswith("loss")) == {"loss", "loss_caption"}
    eval_args = ["--task", "caption", "--checkpoint", str(run), "--shards", str(karpathy_corpus["test"]),
                 "--keep-ratios", "1.0,0.3", "--beams", "2", "--out", str(out), "--batch-size", "8"]  # fmt: skip
    assert evaluate.main(eval_args) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["prompt"] == "a picture of" and result["beams"] == 2 and result["images"] == 100
    rows = result["by_keep_ratio"]
    assert [r["keep_ratio"] for r in rows] == [1.0, 0.3]
    assert set(rows[0]["scores"]) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"}
    assert len(result["examples"]) == 8 and all(len(e["references"]) == 5 for e in result["examples"])
    assert "one caption for all" in (out / "report.md").read_text()


def test_bad_downstream_settings_are_named(pretrained, karpathy_corpus, tmp_path, capsys):
    base = ["--from", str(pretrained), "--data", str(karpathy_corpus["train"]), "--out", str(tmp_path / "r"), *TINY]
    assert finetune.main(["--task", "retrieval", *base, "--prompt", "a picture of"]) == 2
    assert "--prompt is a setting of --task caption" in capsys.readouterr().err
    assert finetune.main(["--task", "caption", *base, "--image-size", "50"]) == 2  # not a multiple of the patch
    assert "img_size (50) must be a multiple of patch_size (8)" in capsys.readouterr().err
    assert evaluate.main(["--task", "caption", "--checkpoint", str(pretrained)]) == 2
    assert "--task caption needs --shards" in capsys.readouterr().err


@pytest.mark.slow
def test_finetuning_learns_both_tasks_beyond_zero_shot(small_corpus, karpathy_corpus, tmp_path):
    """Loose but meaningful: a tiny model pretrained for 300 steps, fine-tuned at 64 px on the 300 training
    pictures, does better on the 100 unseen test pictures than it did zero-shot: retrieval R@1 and mean recall, and
    captions that describe their own pictures (CIDEr-D above one constant caption for all, varied captions)."""
    pre = tmp_path / "pre"
    args = ["--shards", str(small_corpus), "--out", str(pre), "--preset", "tiny", "--vocab-size", "300", *TINY]
    assert train.main([*args, "--batch-size", "32", "--steps", "300", "--lr", "1e-3", "--quiet"]) == 0
    test = ["--shards", str(karpathy_corpus["test"]), "--keep-ratios", "0.5", "--itm-rerank", "8"]
    tuned = ["--from", str(pre), "--data", str(karpathy_corpus["train"]), *TINY, "--batch-size", "32",
             "--image-size", "64", "--lr", "1e-3", "--warmup-steps", "10", "--quiet"]  # fmt: skip
    figures = {}
    for task, steps in (("retrieval", 400), ("caption", 1000)):
        assert finetune.main(["--task", task, *tuned, "--steps", str(steps), "--out", str(tmp_path / task)]) == 0
        for name, model in (("zero-shot", pre), ("fine-tuned", tmp_path / task)):
            out = tmp_path / f"{task}-{name}"
            assert evaluate.main(["--task", task, "--checkpoint", str(model), *test, "--out", str(out)]) == 0
            figures[task, name] = json.loads((out / "eval.json").read_text())
    zero, tuned_ = (figures["retrieval", n]["by_keep_ratio"][0] for n in ("zero-shot", "fine-tuned"))
    assert tuned_["text_to_image"]["R@1"] > zero["text_to_image"]["R@1"]  # measured 0.046-0.060 against 0.026
    assert tuned_["mean_recall"] > zero["mean_recall"] + 0.03  # 0.150-0.165 against 0.098
    captions = figures["caption", "fine-tuned"]
    cider = captions["by_keep_ratio"][0]["scores"]["CIDEr-D"]
    assert cider > captions["constant_caption_scores"]["CIDEr-D"]  # measured 0.30-0.37 against 0.27
    assert cider > figures["caption", "zero-shot"]["by_keep_ratio"][0]["scores"]["CIDEr-D"]
    assert len({e["generated"] for e in captions["examples"]}) >= 4  # of 8: not one learned sentence for all
