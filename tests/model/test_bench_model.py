"""Smoke run of ``copa bench model --quick``: it counts and times every configuration and writes JSON and plots."""

import json

import pytest

from jobs.bench.model import main


@pytest.mark.slow
def test_quick_benchmark_writes_json_and_png(tmp_path, capsys):
    assert main(["--quick", "--out", str(tmp_path), "--threads", "1"]) == 0
    report = json.loads((tmp_path / "bench_model.json").read_text())
    assert (tmp_path / "bench_model.png").stat().st_size > 1000
    assert (tmp_path / "bench_model_cost.png").stat().st_size > 1000
    assert report["threads"] == 1 and report["args"]["preset"] == "tiny"
    grid = [r for r in report["results"] if r["figure"] == "grid"]
    # 2 sizes x 2 modes x (baseline + 2 layers x 1 pruned keep ratio)
    assert len(grid) == 2 * 2 * 3
    for row in grid:
        assert row["samples_per_s"] > 0 and row["throughput_ratio"] > 0
        assert row["seconds"] and (row["keep_ratio"] < 1.0 or row["throughput_ratio"] == 1.0)
    paths = {(r["itc_image_path"], r["itm_negatives"]) for r in report["results"] if r["figure"] == "itc_paths"}
    assert {("cls_query", "requery"), ("text_query", "reuse"), ("unpruned", "reuse")} <= paths

    cost = [r for r in report["results"] if r["figure"] == "cost"]
    train = [r for r in cost if r["mode"] == "train"]
    unpruned = next(r for r in train if r["setting"] == "unpruned")
    assert unpruned["flops_ratio"] == 1.0 and unpruned["saved_ratio"] == 1.0
    for row in cost:  # components add up to the total
        assert sum(row["gflops_by_component"].values()) == pytest.approx(row["gflops"])
    default = [r for r in train if r["setting"] == "default"]
    assert len(default) == 2 and all(r["flops_ratio"] < 1.0 and r["flops_over_ideal"] > 0 for r in default)
    assert {r["checkpointing"] for r in train} == {"none", "vision", "text", "all"}

    printed = capsys.readouterr().out
    assert printed.count("bench model infer") == 2 and printed.count("bench model train") == 3  # + ITC paths
    assert "bench model cost 32px training step" in printed and "costs x" in printed
