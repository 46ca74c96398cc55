"""Smoke run of ``copa bench pack --quick``: every figure is measured, written to JSON and printed."""

import json
import math
import shutil
import tempfile
from pathlib import Path

import pytest

from jobs.bench_pack import main


def _processes_mentioning(tag: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if tag.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:  # the process ended meanwhile
            continue
    return found


@pytest.fixture
def ray_tmpdir(monkeypatch):
    """Ray's folder for this test alone, so the bench's clusters neither join nor collide with another Ray on this
    machine. Short and under /tmp: Ray's socket paths must fit in 107 bytes."""
    tag = tempfile.mkdtemp(prefix="copa_ray_bench_", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", tag)
    yield tag
    shutil.rmtree(tag, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.ray
def test_quick_benchmark_writes_every_figure(tmp_path, capsys, ray_tmpdir):
    out = tmp_path / "pack.json"
    assert main(["--quick", "--out", str(out), "--data", str(tmp_path / "data")]) == 0
    assert not _processes_mentioning(ray_tmpdir)  # every Ray cluster of the runs was shut down
    report = json.loads(out.read_text())

    coco, large = report["per_worker"]["coco"], report["per_worker"]["large"]
    assert coco["stored_size"] == [512, 384] and large["stored_size"] == [512, 384]
    loops = {"pack", "process_image", "bare"}
    for fig, names in ((coco, loops), (large, loops | {"bare_draft"})):
        assert set(fig["rates"]) == names and all(rate > 0 for rate in fig["rates"].values())
        assert math.isfinite(fig["cost_vs_bare"]) and fig["cost_vs_bare"] > 0
        assert len(fig["cost_vs_bare_per_round"]) == fig["rounds"] == 2
    assert 0 < large["cost_vs_bare_draft"] < math.inf
    assert 50_000 < report["generated"]["coco"]["mean_jpeg_bytes"] < 300_000  # COCO-like file sizes
    assert report["img2dataset"]["pack_per_core_ratio"] > 0

    scaling = report["scaling"]
    assert scaling["startup_seconds"] > 0 and scaling["speedup"] > 0
    for workers in (1, 2):
        fig = scaling[f"workers_{workers}"]
        assert fig["samples_per_s"] > 0 and fig["seconds"] > 0

    plan = report["planning"]
    assert plan["rows"] == 200_000 and plan["shards"] == 40 and plan["max_shard"] == 5000
    assert plan["seconds"] > 0 and plan["peak_rss_bytes"] > plan["bare_peak_rss_bytes"] > 0

    lines = capsys.readouterr().out.splitlines()
    starts = [line.split(" ")[0] for line in lines]
    assert starts.count("per") == 3 and starts.count("ray") == 3 and starts.count("plan") == 1
    assert not (tmp_path / "data" / "work").exists()  # the per-worker loops' shards are cleaned up
