"""``copa bench pack --vs-img2dataset``: the harness, with a stand-in img2dataset package (the real one is not a
dependency); its accounting of CPU time across process trees; both tools fed the same files."""

import json
import subprocess
import sys
import textwrap
import time

import pytest

from jobs.bench import pack as bench_pack
from jobs.bench.vs_img2dataset import run_counted, serve, side_by_side, summary_lines
from pipeline.images import ImageConfig
from pipeline.rows import read_source_table

BURN = """
import os, time
if os.fork() == 0:  # a grandchild that outlives its parent, as Ray's and multiprocessing's workers can
    os.setsid()
    start = time.process_time()
    while time.process_time() - start < 0.4:
        pass
    os._exit(0)
os._exit(0)
"""


def test_cpu_of_orphaned_grandchildren_is_counted():
    counted = run_counted([sys.executable, "-c", BURN], env={})
    assert counted["tree_cpu_seconds"] >= 0.35  # the orphan's 0.4 s: reaped here, not by init
    assert counted["cpu_seconds"] >= 0.35  # and the machine was busy that long


def test_files_are_served_on_loopback(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"jpeg bytes")
    with serve(tmp_path) as base:
        assert base.startswith("http://127.0.0.1:")
        got = subprocess.run(
            [sys.executable, "-c", f"import urllib.request; print(urllib.request.urlopen('{base}/a.jpg').read())"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    assert got.stdout.strip() == "b'jpeg bytes'"


# A stand-in with img2dataset's entry points and outputs: it downloads every URL (from our server) and writes one
# shard's stats as img2dataset does ("successes", "duration").
FAKE = {
    "img2dataset/__init__.py": """
        import json, os, time, urllib.request
        import pyarrow.parquet as pq

        def download(url_list, output_folder, number_sample_per_shard, **settings):
            start = time.perf_counter()
            urls = pq.read_table(url_list).column("url").to_pylist()
            sizes = [len(urllib.request.urlopen(u).read()) for u in urls]
            os.makedirs(output_folder, exist_ok=True)
            with open(os.path.join(output_folder, "00000_stats.json"), "w") as f:
                json.dump({"count": len(urls), "successes": sum(s > 0 for s in sizes),
                           "duration": time.perf_counter() - start, "settings": settings}, f)
    """,
    "img2dataset/resizer.py": """
        class Resizer:
            def __init__(self, **settings):
                self.settings = settings

            def __call__(self, stream):
                return stream.read(), 1, 1, 1, 1, None
    """,
}


@pytest.mark.slow
@pytest.mark.ray
def test_side_by_side_runs_both_tools_on_the_same_files(tmp_path, monkeypatch):
    fake = tmp_path / "fake"
    for name, code in FAKE.items():
        (fake / name).parent.mkdir(parents=True, exist_ok=True)
        (fake / name).write_text(textwrap.dedent(code))
    monkeypatch.setenv("PYTHONPATH", str(fake))
    cfg = bench_pack.quick(num_images=6)
    made = bench_pack.generate(tmp_path / "data", cfg)
    rows = read_source_table(made["coco"]).to_pylist()
    start = time.perf_counter()
    fig = side_by_side(sys.executable, rows, made["coco"], ImageConfig(), 1, tmp_path / "work")
    assert time.perf_counter() - start < 300
    assert fig["images"] == 6 and [len(fig["runs"][t]) for t in ("img2dataset", "copa", "copa_local")] == [1, 1, 1]
    stats = json.loads(next((tmp_path / "work" / "img2dataset_0").glob("*_stats.json")).read_text())
    assert stats["settings"]["image_size"] == 384 and stats["settings"]["resize_mode"] == "keep_ratio"
    copa, theirs = fig["runs"]["copa"][0], fig["runs"]["img2dataset"][0]
    assert copa["cpu_seconds"] > copa["shard_seconds"] > 0  # Ray's start-up and workers are counted
    for key in ("per_worker_second", "whole_command", "per_cpu_second"):
        assert fig[key]["ratio"] == pytest.approx(fig[key]["copa"] / fig[key]["img2dataset"])
        assert fig[key]["ratio_local"] == pytest.approx(fig[key]["copa_local"] / fig[key]["img2dataset"])
    local = fig["runs"]["copa_local"][0]
    assert local["wall_seconds"] < copa["wall_seconds"]  # no Ray to start
    assert fig["per_worker_second"]["img2dataset"] == pytest.approx(6 / theirs["shard_seconds"])
    assert theirs["http_server_cpu_seconds"] > 0
    assert any("per CPU-second" in line for line in summary_lines(fig))
