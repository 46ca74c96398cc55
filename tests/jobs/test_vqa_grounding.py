"""``copa finetune --task vqa|grounding`` and ``copa evaluate --task vqa|grounding`` end to end through
``main([...])``, on the synthetic VQA v2 and RefCOCO+ sets (``copa synth --vqa --refexp``, packed per split)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from PIL import Image

from jobs import evaluate, finetune, train
from model.vqa_metrics import vqa_accuracy
from tests.jobs.test_finetune import TINY


def test_vqa_finetunes_and_evaluates_every_question_at_each_setting(pretrained, tasks_corpus, tmp_path):
    run, out = tmp_path / "vqa", tmp_path / "eval"
    args = ["--task", "vqa", "--from", str(pretrained), "--data", str(tasks_corpus["vqa_train"]), "--out", str(run),
            *TINY, "--image-size", "64", "--steps", "2", "--quiet"]  # fmt: skip
    assert finetune.main(args) == 0
    config = json.loads((run / "train_config.json").read_text())
    assert config["train"]["task"] == "vqa" and config["model"]["loss"]["w_vqa"] == 1.0
    assert config["model"]["loss"]["w_itc"] == 0.0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "loss_vqa" in lines[-1] and "loss_itc" not in lines[-1]
    test = tasks_corpus["vqa_val"]
    args = ["--task", "vqa", "--checkpoint", str(run), "--shards", str(test), "--keep-ratios", "1.0,0.5",
            "--detect-layers", "1", "2", "--out", str(out), "--pictures", "2"]  # fmt: skip
    assert evaluate.main(args) == 0
    result = json.loads((out / "eval.json").read_text())
    table = pq.read_table(test / "answers.parquet").to_pylist()
    assert result["questions"] == result["scored_questions"] == len(table)  # every question of the split
    # keep 1.0 once (nothing pruned wherever the detector sits), then 0.5 at each detect layer
    assert [(r["detect_layers"], r["keep_ratio"]) for r in result["by_setting"]] == [([1], 1.0), ([1], 0.5), ([2], 0.5)]
    full, pruned = result["by_setting"][0], result["by_setting"][1]
    assert pruned["gflops_per_question"] < full["gflops_per_question"]
    assert set(full["per_type"]) == {"yes/no", "number", "other"}
    # the official results file: one answer per question id; the overall accuracy recomputed from it by hand
    answers = {r["question_id"]: r["answers"] for r in table}
    results = json.loads((out / "vqa_results.json").read_text())
    assert sorted(r["question_id"] for r in results) == sorted(answers)
    trained = next(r for r in result["by_setting"] if r["detect_layers"] == [1] and r["keep_ratio"] == 0.5)
    mean = sum(vqa_accuracy(r["answer"], answers[r["question_id"]]) for r in results) / len(results)
    assert trained["overall"] == pytest.approx(mean)
    assert 0 < result["majority_baseline"]["overall"] < 1
    assert 0 <= result["answers_changed_with_another_picture"] <= 1
    report = (out / "report.md").read_text()
    assert "| majority answer per type |" in report and "vqa_examples.png" in report
    for picture in ("tradeoff.png", "vqa_examples.png"):
        Image.open(out / picture).verify()


def test_grounding_finetunes_and_boxes_every_expression(pretrained, tasks_corpus, tmp_path):
    run, out = tmp_path / "grounding", tmp_path / "eval"
    args = ["--task", "grounding", "--from", str(pretrained), "--data", str(tasks_corpus["refexp_train"]),
            "--out", str(run), *TINY, "--image-size", "64", "--steps", "2", "--quiet"]  # fmt: skip
    assert finetune.main(args) == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"loss_ground", "loss_pta", "ground_iou"} <= set(lines[-1]) and "loss_vqa" not in lines[-1]
    test = tasks_corpus["refexp_testA"]
    assert evaluate.main(["--task", "grounding", "--checkpoint", str(run), "--shards", str(test),
                          "--keep-ratios", "0.5", "--out", str(out), "--pictures", "3"]) == 0  # fmt: skip
    result = json.loads((out / "eval.json").read_text())
    manifests = [pq.read_table(m, columns=["status", "captions"]).to_pylist() for m in test.glob("*.parquet")]
    expressions = sum(len(r["captions"]) for rows in manifests for r in rows if r["status"] == "ok")
    assert result["expressions"] == expressions  # every expression has its referent
    row = result["by_setting"][0]
    assert row["detect_layers"] == [2] and 0 <= row["accuracy"] <= 1 and 0 <= row["detector_accuracy"] <= 1
    assert 0 < result["best_fixed_box"]["accuracy"] < 1
    assert len(result["examples"]) == 3 and all(0 <= e["iou"] <= 1 for e in result["examples"])
    Image.open(out / "grounding_examples.png").verify()
    assert "| best fixed box" in (out / "report.md").read_text()


def test_vqa_without_an_answers_table_is_named(pretrained, tasks_corpus, tmp_path, capsys):
    args = ["--task", "vqa", "--from", str(pretrained), "--data", str(tasks_corpus["refexp_train"]),
            "--out", str(tmp_path / "run"), *TINY, "--steps", "1", "--quiet"]  # fmt: skip
    assert finetune.main(args) == 2
    assert "answers.parquet: no answers table beside the shards" in capsys.readouterr().err


@pytest.mark.slow
def test_grounding_learns_beyond_the_best_fixed_box(learning_corpus, tasks_corpus, tmp_path):
    """A tiny model pretrained 300 steps at 64 px, fine-tuned for grounding 1,000 steps on the 1,200 training
    pictures, finds the referents of the 501 val expressions more often than the best fixed box does (measured
    0.20 at seed 0 and 0.19 at seed 1, against 0.05), and the box head does not undo the detector's box (0.19
    and 0.16)."""
    pre = tmp_path / "pre"
    args = ["--shards", str(learning_corpus), "--out", str(pre), "--preset", "tiny", "--vocab-size", "300", *TINY,
            "--batch-size", "32", "--steps", "300", "--lr", "1e-3", "--set", "model.vision.img_size=64",
            "--quiet"]  # fmt: skip
    assert train.main(args) == 0
    run, out = tmp_path / "grounding", tmp_path / "eval"
    args = ["--task", "grounding", "--from", str(pre), "--data", str(tasks_corpus["refexp_train"]),
            "--out", str(run), *TINY, "--batch-size", "32", "--steps", "1000", "--lr", "1e-3", "--warmup-steps", "10",
            "--quiet"]  # fmt: skip
    assert finetune.main(args) == 0
    test = ["--shards", str(tasks_corpus["refexp_val"]), "--keep-ratios", "0.5"]
    assert evaluate.main(["--task", "grounding", "--checkpoint", str(run), *test, "--out", str(out)]) == 0
    result = json.loads((out / "eval.json").read_text())
    row = result["by_setting"][0]
    assert row["accuracy"] > result["best_fixed_box"]["accuracy"]
    assert row["accuracy"] > row["detector_accuracy"] - 0.02  # the head does not undo what the detector finds


def test_the_synthetic_files_round_trip_through_ingest_and_pack(tasks_corpus):
    """Every question of the official files reaches the answers table beside its shards with its ten answers, and
    every expression of the MDETR files reaches the shards with its box (the synthetic sets, read by the readers)."""
    corpus = tasks_corpus["vqa_train"].parent / "corpus"
    for split in ("train", "val"):
        questions = json.loads((corpus / "vqa" / f"v2_OpenEnded_mscoco_{split}_questions.json").read_text())
        annotations = json.loads((corpus / "vqa" / f"v2_mscoco_{split}_annotations.json").read_text())
        table = pq.read_table(tasks_corpus[f"vqa_{split}"] / "answers.parquet").to_pylist()
        assert sorted(r["question_id"] for r in table) == sorted(q["question_id"] for q in questions["questions"])
        given = {a["question_id"]: [x["answer"] for x in a["answers"]] for a in annotations["annotations"]}
        assert all(r["answers"] == given[r["question_id"]] for r in table)
    for split in ("train", "val", "testA", "testB"):
        entries = json.loads((corpus / "refexp" / f"finetune_refcoco+_{split}.json").read_text())
        packed = [pq.read_table(m).to_pylist() for m in tasks_corpus[f"refexp_{split}"].glob("*.parquet")]
        rows = [r for rows in packed for r in rows if r["status"] == "ok"]
        assert sum(r["num_captions"] for r in rows) == len(entries["images"]) == len(entries["annotations"])
        assert all(n == 1 for r in rows for n in r["num_relevant"])  # each expression names its one referent
