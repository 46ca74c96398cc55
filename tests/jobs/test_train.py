"""``copa train`` and ``copa evaluate`` end to end through ``main([...])``, and DDP under torchrun (gloo, CPU)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from jobs import evaluate, train
from manifests import SCHEMA_VERSION
from model.checkpoint import list_checkpoints, load_checkpoint

REPO = Path(__file__).resolve().parents[2]
TINY = ["--preset", "tiny", "--batch-size", "8", "--workers", "0", "--vocab-size", "300", "--threads", "1"]


def test_train_then_evaluate_through_main(small_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--shards", str(small_corpus), "--out", str(run), *TINY, "--holdout-shards", "1", "--log-every", "2"]
    assert train.main([*args, "--steps", "4", "--ckpt-every", "2", "--quiet"]) == 0
    assert [p.name for p in list_checkpoints(run)] == ["step-00000002.pt", "step-00000004.pt"]
    config = json.loads((run / "train_config.json").read_text())
    assert config["train"]["holdout_shards"] == 1 and config["model"]["vision"]["img_size"] == 32
    assert (run / "tokenizer.json").exists()
    Image.open(run / "loss_curves.png").verify()

    assert train.main([*args, "--steps", "6"]) == 0  # same folder: resumes at step 4
    assert "resumed from" in capsys.readouterr().err
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]

    assert evaluate.main(["--checkpoint", str(run), "--max-images", "30", "--captions", "2", "--pictures", "2"]) == 0
    result = json.loads((run / "eval" / "eval.json").read_text())
    assert result["step"] == 6 and result["shards"][0].endswith("000001.tar")  # the held-out shard
    assert [d["keep_ratio"] for d in result["detector"]] == [0.1, 0.3, 0.5, 0.7]
    assert all(0 <= d["precision"] <= 1 and 0 <= d["recall"] <= 1 for d in result["detector"])
    assert set(result["retrieval"]["text_to_image"]) == {"R@1", "R@5", "R@10"}
    assert len(result["captions"]) == 2
    metrics = result["caption_metrics"]  # every image read (at most 30) captioned and scored
    assert metrics["images"] == result["retrieval"]["images"] and set(metrics["scores"]) == {
        "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"}  # fmt: skip
    naming = result["naming"]  # every held-out picture with boxes (at most 30 read) is captioned and scored
    assert 0 < naming["images"] <= 30 and 0 <= naming["precision"] <= 1 and 0 <= naming["chance_precision"] <= 1
    for name in ("detector_recall.png", "detector_picks.png"):
        Image.open(run / "eval" / name).verify()
    printed = capsys.readouterr().out
    assert "text_to_image: R@1" in printed and "captions naming objects in their picture" in printed
    assert "greedy captions of" in printed and "a constant caption" in printed


def test_bad_settings_are_named(small_corpus, tmp_path, capsys):
    base = ["--shards", str(small_corpus), "--out", str(tmp_path / "run"), *TINY]
    assert train.main([*base, "--set", "model.vision.kep_ratios=[0.3]"]) == 2
    assert "model.vision: unknown settings ['kep_ratios']" in capsys.readouterr().err
    assert train.main([*base, "--set", "lr=1"]) == 2
    assert "train.FIELD=VALUE" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert train.main(["--shards", str(small_corpus), "--out", str(tmp_path / "other"), *TINY]) == 2
    assert "not a training run folder" in capsys.readouterr().err
    assert evaluate.main(["--checkpoint", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_train_and_evaluate_refuse_a_dataset_of_another_schema_version(small_corpus, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(small_corpus, other)
    info = json.loads((other / "dataset.json").read_text())
    (other / "dataset.json").write_text(json.dumps(info | {"schema_version": SCHEMA_VERSION + 1}))
    named = f"{other}/dataset.json: dataset schema version {SCHEMA_VERSION + 1}"
    assert train.main(["--shards", str(other), "--out", str(tmp_path / "run"), *TINY, "--steps", "1"]) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()
    run = tmp_path / "good"
    assert train.main(["--shards", str(small_corpus), "--out", str(run), *TINY, "--steps", "1", "--quiet"]) == 0
    assert evaluate.main(["--checkpoint", str(run), "--shards", f"{other}/000001.tar", "--max-images", "4"]) == 2
    assert named in capsys.readouterr().err


def test_a_yaml_config_and_set_overrides_reach_the_configs(small_corpus, tmp_path):
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text("preset: tiny\ntrain:\n  lr: 0.002\nmodel:\n  vision:\n    keep_ratios: [0.25]\n")
    args = ["--config", str(yaml_file), "--shards", str(small_corpus), "--out", "x", "--set", "train.lr=0.003"]
    cfg, model_cfg = train.resolve(train.parse_args(args))
    assert cfg.lr == 0.003 and model_cfg.vision.keep_ratios == (0.25,) and model_cfg.vision.img_size == 32


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(small_corpus, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "jobs.train"]
    cmd += ["--shards", str(small_corpus), "--out", str(run), *TINY, "--steps", "3", "--log-every", "1", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = load_checkpoint(run)
    assert state["step"] == 3 and len(state["loader"]) == 2  # one loader position per rank
    assert {json.loads(p)["epoch"] for p in state["loader"]} == {0}
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3]  # rank 0 alone writes
    assert all(r["itc_candidates"] == 16 for r in lines)  # ITC over both ranks' batches of 8
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in lines)


def tiny_pretrained_towers(root: Path) -> tuple[Path, Path]:
    """A transformers CLIP vision folder and a BERT folder (with its vocab.txt) of the tiny preset's sizes."""
    from transformers import BertConfig, BertModel, CLIPVisionConfig, CLIPVisionModel

    clip, bert = root / "clip", root / "bert"
    torch.manual_seed(0)
    CLIPVisionModel(
        CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=2,
                         image_size=32, patch_size=8, hidden_act="quick_gelu")
    ).save_pretrained(clip)  # fmt: skip
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *(f"##{c}" for c in letters)]
    BertModel(
        BertConfig(vocab_size=len(vocab), hidden_size=64, num_attention_heads=2, intermediate_size=128,
                   num_hidden_layers=2, max_position_embeddings=32)
    ).save_pretrained(bert)  # fmt: skip
    (bert / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return clip, bert


def test_training_starts_from_pretrained_towers_given_by_flags(small_corpus, tmp_path):
    from safetensors.torch import load_file

    from model.trainer import Trainer

    clip, bert = tiny_pretrained_towers(tmp_path)
    run = tmp_path / "run"
    quickgelu = "model.vision.model_name=vit_base_patch16_clip_quickgelu_224"  # OpenAI's CLIP, as base uses
    args = ["--shards", str(small_corpus), "--out", str(run), *TINY, "--vision-weights", str(clip),
            "--text-weights", str(bert), "--set", quickgelu]  # fmt: skip
    cfg, model_cfg = train.resolve(train.parse_args(args))
    assert (model_cfg.vision.checkpoint, model_cfg.text.bert_dir, cfg.tokenizer) == (str(clip), str(bert), str(bert))
    trainer = Trainer(dataclasses.replace(cfg, steps=1, progress=False), model_cfg)
    try:
        model, hf, bert_weights = (
            trainer.model,
            load_file(clip / "model.safetensors"),
            load_file(bert / "model.safetensors"),
        )
        q, k, v = (hf[f"encoder.layers.2.self_attn.{x}_proj.weight"] for x in "qkv")
        assert torch.equal(model.vision.vit.blocks[2].attn.qkv.weight, torch.cat([q, k, v]))
        word = model.text_encoder.embeddings.word_embeddings.weight
        assert torch.equal(word, bert_weights["embeddings.word_embeddings.weight"])  # the BERT vocabulary's rows
        assert trainer.tokenizer.vocab_size == word.shape[0] == 57
        assert trainer.run()["steps"] == 1
    finally:
        trainer.close()
    assert json.loads((run / "train_config.json").read_text())["model"]["text"]["bert_dir"] == str(bert)
