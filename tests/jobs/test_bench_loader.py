"""Smoke run of ``copa bench loader --quick``: every figure is measured over the same samples, written and printed."""

import json
import math
import tempfile

from jobs.bench.loader import main, regrid_patch


def _check_size(fig: dict, stored_grid: int, samples: int) -> None:
    loops = fig["loops"]
    assert set(loops) == {"baseline", "loader", "augment", "regrid"}
    for run in loops.values():
        assert run["samples"] == samples  # every loop read the same data: all of it
        assert run["samples_per_s"] > 0 and all(s > 0 for s in run["cpu_seconds"] + run["wall_seconds"])
        assert math.isclose(run["samples_per_s"], samples / min(run["cpu_seconds"]))
        assert math.isclose(run["wall_samples_per_s"], samples / min(run["wall_seconds"]))
    rate = {name: run["samples_per_s"] for name, run in loops.items()}
    assert math.isclose(fig["loader_vs_baseline"], rate["loader"] / rate["baseline"])
    assert math.isclose(fig["augment_vs_loader"], rate["augment"] / rate["loader"])
    assert math.isclose(fig["augment_vs_baseline"], rate["augment"] / rate["baseline"])
    assert len(fig["loader_vs_baseline_per_round"]) == len(loops["loader"]["cpu_seconds"])
    # loader and regrid take the two label paths at the same pixel work; augment always recomputes
    assert {loops["loader"]["labels"], loops["regrid"]["labels"]} == {"stored", "recomputed"}
    assert loops["augment"]["labels"] == "recomputed" and loops["augment"]["augment"]
    stored = "loader" if loops["loader"]["labels"] == "stored" else "regrid"
    assert loops[stored]["grid"] == stored_grid
    recomputed = ({"loader", "regrid"} - {stored}).pop()
    assert math.isclose(fig["recomputed_vs_stored_labels"], rate[recomputed] / rate[stored])


def test_quick_benchmark_writes_every_figure(tmp_path, capsys, monkeypatch):
    temp = tmp_path / "temp"  # where a run without --data would put its corpus
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    out, data = tmp_path / "out", tmp_path / "data"
    assert main(["--quick", "--out", str(out), "--data", str(data)]) == 0
    report = json.loads((out / "bench_loader.json").read_text())

    stats = report["data"]
    assert stats["samples"] > 30 and stats["urls"] >= 2 and stats["stored_grid"] == 16
    assert 0 < stats["samples_with_labels"] < stats["samples"]  # COCO/VG with labels, web without
    assert set(stats["sources"]) >= {"coco", "vg"} and report["built"]["rejected"] == 0
    sizes = json.loads((data / "shards" / "sizes.json").read_text())
    assert sum(sizes.values()) == stats["samples"]  # the sizes.json total is what every loop delivered
    assert set(report["sizes"]) == {"128"}
    _check_size(report["sizes"]["128"], 16, stats["samples"])
    assert report["sizes"]["128"]["loops"]["loader"]["labels"] == "recomputed"  # grid 8 is not the stored 16

    stages = report["stages_us_per_sample"]
    assert stages["samples"] == stats["samples"]
    per_sample = ("json_loads", "decode_sample", "wds_decode_all_members", "tokenize", "jpeg_decode")
    assert all(stages[k] > 0 for k in per_sample)
    assert all(v > 0 for v in stages["128"].values())
    assert report["tokenizer"]["vocab_size"] > 5

    lines = capsys.readouterr().out.splitlines()
    starts = [line.split(" ")[0] for line in lines]
    assert starts == ["data:", "baseline", "loader", "augment", "regrid", "stages"]

    # The same shards again, given with --shards, at the canonical size: the loader now uses the stored labels.
    again = tmp_path / "again"
    assert main(["--quick", "--shards", str(data / "shards"), "--img-size", "256", "--out", str(again)]) == 0
    report = json.loads((again / "bench_loader.json").read_text())
    assert "built" not in report and report["data"]["samples"] == stats["samples"]
    _check_size(report["sizes"]["256"], 16, stats["samples"])
    assert report["sizes"]["256"]["loops"]["loader"]["labels"] == "stored"
    assert (data / "shards").is_dir()  # a given shards folder is left alone

    # Without --data the corpus goes to a temporary folder, removed at the end.
    assert main(["--quick", "--rounds", "1", "--img-size", "64", "--out", str(again)]) == 0
    assert json.loads((again / "bench_loader.json").read_text())["sizes"]["64"]["loops"]["loader"]["samples"] > 30
    assert not list(temp.iterdir())


def test_regrid_takes_the_other_label_path():
    assert regrid_patch(256, 16, 16) == 32  # stored grid 16 in use -> grid 8
    assert regrid_patch(128, 16, 16) == 8  # grid 8 in use -> the stored 16
    assert regrid_patch(96, 16, 16) == 6
    assert regrid_patch(100, 4, 16) is None  # no patch size gives grid 16 at 100 px
    assert regrid_patch(128, 16, None) is None  # no stored labels
