"""``copa export``: a trained run as a folder of config.json, model.safetensors, tokenizer.json and README.md that
loads back exactly, with no pickle, through ``COPA.from_pretrained`` and every command that takes a checkpoint."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch

from jobs import evaluate, export, train
from jobs import inspect as inspect_job
from model.checkpoint import load_checkpoint, load_model
from model.copa import COPA
from model.tokenizer import CaptionTokenizer
from tests.jobs.test_train import TINY


@pytest.fixture(scope="module")
def run(small_corpus, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export") / "run"
    args = ["--shards", str(small_corpus), "--out", str(folder), *TINY, "--holdout-shards", "1", "--steps", "2"]
    assert train.main([*args, "--quiet"]) == 0
    return folder


def test_an_exported_model_loads_back_exactly(run, tmp_path, small_corpus):
    out = tmp_path / "model"
    assert export.main(["--run", str(run), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors", "tokenizer.json"]
    document = json.loads((out / "config.json").read_text())
    assert document["format"] == "copa-model/1" and document["step"] == 2
    assert document["model"]["vision"]["img_size"] == 32 and document["train"]["holdout_shards"] == 1
    assert "after 2 optimizer steps" in (out / "README.md").read_text()

    trained, tokenizer = load_model(load_checkpoint(run))
    shared = COPA.from_pretrained(str(out))
    assert trained.state_dict().keys() == shared.state_dict().keys()
    assert all(torch.equal(v, shared.state_dict()[k]) for k, v in trained.state_dict().items())
    shared_tokenizer = CaptionTokenizer.from_dir(str(out), trained.cfg.text.max_len)
    captions = ["a red square at the top left", "two dogs on a beach"]
    text, text_back = tokenizer(captions), shared_tokenizer(captions)
    assert all(torch.equal(text[k], text_back[k]) for k in text)
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ids, mask = text["input_ids"], text["attention_mask"]
    with torch.no_grad():
        assert torch.equal(trained.encode_image(image), shared.encode_image(image))
        assert torch.equal(trained.encode_text(ids, mask), shared.encode_text(ids, mask))
        assert torch.equal(trained.itm_score(image, ids, mask), shared.itm_score(image, ids, mask))

    held_out = str(small_corpus / "000001.tar")
    args = ["--checkpoint", str(out), "--shards", held_out, "--out", str(tmp_path / "eval"), "--max-images", "20"]
    assert evaluate.main([*args, "--captions", "1", "--pictures", "0", "--naming-images", "0"]) == 0
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["step"] == 2


def test_commands_that_take_a_checkpoint_take_the_folder(run, tmp_path, small_corpus):
    out = tmp_path / "model"
    assert export.main(["--run", str(run), "--out", str(out)]) == 0
    rows = pq.read_table(small_corpus / "000000.parquet", columns=["key", "status", "num_boxes"]).to_pylist()
    shown = next(r["key"] for r in rows if r["status"] == "ok" and r["num_boxes"])
    pictures = tmp_path / "pictures"
    args = [str(small_corpus), "--show", shown, "--checkpoint", str(out), "--out", str(pictures)]
    assert inspect_job.main(args) == 0
    assert list(pictures.glob(f"{shown}_detector_*.png"))


def test_export_refuses_a_non_empty_folder_and_a_foreign_config(run, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    assert export.main(["--run", str(run), "--out", str(taken)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    out = tmp_path / "model"
    assert export.main(["--run", str(run), "--out", str(out)]) == 0
    (out / "config.json").write_text(json.dumps({"format": "someone-else/3"}))
    with pytest.raises(ValueError, match="format 'someone-else/3', this toolkit reads copa-model/1"):
        load_checkpoint(out)


def test_a_run_loads_after_its_initial_weight_files_are_gone(run):
    state = load_checkpoint(run)
    config = json.loads(state["config"])
    config["model"]["vision"]["checkpoint"] = "/gone/clip"  # trained from --vision-weights on another machine
    config["model"]["text"]["bert_dir"] = "/gone/bert"
    state["config"] = json.dumps(config)
    model, _ = load_model(state)
    assert model.cfg.vision.checkpoint is None and model.cfg.text.bert_dir is None
