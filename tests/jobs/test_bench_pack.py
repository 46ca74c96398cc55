"""Smoke run of ``copa bench pack --quick``: every figure is measured, written to JSON and printed."""

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from jobs.bench.pack import main


def _processes_mentioning(tag: str) -> list[int]:
    """Processes whose command line or environment names ``tag``: Ray's raylet and GCS carry the session folder on
    their command line, its workers only in their environment (RAY_TMPDIR)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if tag.encode() in (proc / "cmdline").read_bytes() or tag.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:  # the process ended meanwhile, or is not ours to read
            continue
    return found


def _still_running(tag: str, grace_seconds: float = 15.0) -> list[int]:
    """The processes naming ``tag`` left after ``grace_seconds`` (Ray's shutdown stops its workers asynchronously)."""
    deadline = time.monotonic() + grace_seconds
    while (left := _processes_mentioning(tag)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def test_process_finder_sees_a_tag_in_the_environment_only(tmp_path):
    tag = f"copa_tag_{tmp_path.name}"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env={**os.environ, "X": tag})
    try:
        assert child.pid in _processes_mentioning(tag)
    finally:
        child.kill()
        child.wait()
    assert _still_running(tag, grace_seconds=2.0) == []


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
    assert _still_running(ray_tmpdir) == []  # every Ray cluster of the runs was shut down, workers included
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
    assert "vs_img2dataset" not in report  # only with --vs-img2dataset PYTHON

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
