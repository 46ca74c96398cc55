"""The shards and manifests read by the clients users have, with default arguments, on the real corpus mix: most
samples web captions without boxes, a few COCO/VG samples with labels (DESIGN section 4).

Ray Data and Hugging Face ``datasets`` type columns, so every sample must carry the same members; ``datasets`` types
them from the first five samples of the first shard, so a shard opens with a grounded sample; the Parquet engines
read every manifest through the one-liners of ``docs/shard-format.md`` or ``copa inspect --export``; and the
loader runs on the oldest webdataset the toolkit supports (what open_clip's training extra pins).
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from jobs import inspect as inspect_job
from tests.model.corpus import packed_corpus

REPO = Path(__file__).resolve().parents[2]
GRID = 8  # packed_corpus: 64 px images in 8 px patches
MEMBERS = {"jpg", "json", "pta.npy", "txt"}
OLDEST_WEBDATASET = "0.2.86"


@pytest.fixture(scope="module")
def web_mix(tmp_path_factory) -> Path:
    """240 images, 97.5% web captions without boxes (3 COCO, 3 VG), in 3 shards."""
    return packed_corpus(
        tmp_path_factory.mktemp("web_mix"), images=240, coco_fraction=0.0125, vg_fraction=0.0125, samples_per_shard=80
    )


def tars(root: Path) -> list[str]:
    return sorted(str(p) for p in root.glob("*.tar"))


def total(root: Path) -> int:
    return sum(json.loads((root / "sizes.json").read_text()).values())


def manifest_keys(root: Path) -> set[str]:
    return set(pq.read_table(sorted(glob.glob(f"{root}/*.parquet")), columns=["key"]).column("key").to_pylist())


def check_labels(meta: dict, pta: np.ndarray) -> bool:
    """The grid of a sample: [captions, G, G] with boxes, [0, G, G] without; returns whether it has boxes."""
    rows = len(meta["captions"]) if meta["boxes"] else 0
    assert pta.dtype == np.uint8 and pta.shape == (rows, GRID, GRID), (meta["source"], pta.shape)
    return bool(rows)


@pytest.mark.ray
@pytest.mark.slow
def test_ray_data_reads_mixed_shards_with_default_arguments(web_mix):
    import ray

    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        rows = ray.data.read_webdataset(tars(web_mix)).take_all()
    finally:
        ray.shutdown()
    assert len(rows) == total(web_mix)
    boxed = []
    for row in rows:
        assert set(row) >= MEMBERS
        meta = row["json"]
        assert row["txt"] == meta["captions"][0]
        boxed.append(check_labels(meta, np.asarray(row["pta.npy"])))
    assert 0 < sum(boxed) < len(boxed) / 5  # the mix: a few labelled samples among web ones


@pytest.mark.slow
def test_hugging_face_datasets_loads_mixed_shards_with_default_arguments(web_mix, tmp_path):
    from datasets import load_dataset

    ds = load_dataset("webdataset", data_files={"train": tars(web_mix)}, split="train", cache_dir=str(tmp_path))
    assert ds.num_rows == total(web_mix)
    assert set(ds.features) >= MEMBERS
    keys, boxed = set(), 0
    for row in ds.select_columns(["__key__", "json", "pta.npy"]):
        keys.add(row["__key__"])
        boxed += check_labels(row["json"], np.asarray(row["pta.npy"], dtype=np.uint8).reshape(-1, GRID, GRID))
    assert keys <= manifest_keys(web_mix) and len(keys) == ds.num_rows and boxed > 0


def test_every_shard_with_a_grounded_sample_opens_with_one(web_mix):
    """What makes ``datasets`` type the nested fields: the shards of the mix would otherwise open with web samples."""
    import webdataset as wds

    opened = []
    for url in tars(web_mix):
        metas = [json.loads(s["json"]) for s in wds.WebDataset(url, shardshuffle=False)]
        grounded = [any(rel["boxes"] for rel in meta["relevant"]) for meta in metas]
        if any(grounded):
            assert grounded[0], url
            opened.append(url)
    assert opened and opened[0] == tars(web_mix)[0]


def test_parquet_engines_read_every_manifest_with_the_documented_one_liners(web_mix, tmp_path, capsys):
    d = str(web_mix)
    keys = manifest_keys(web_mix)
    counts = {
        "pyarrow": pq.read_table(sorted(glob.glob(f"{d}/*.parquet"))).num_rows,
        "pyarrow.dataset": pads.dataset(d, format="parquet", exclude_invalid_files=True).count_rows(),
        "pandas": len(pd.read_parquet(sorted(glob.glob(f"{d}/*.parquet")))),
        "duckdb": duckdb.sql(f"SELECT count(*) FROM read_parquet('{d}/*.parquet')").fetchall()[0][0],
    }
    assert counts == dict.fromkeys(counts, len(keys))
    export = tmp_path / "manifest.parquet"
    assert inspect_job.main([d, "--export", str(export)]) == 0
    table = pq.read_table(export)
    assert set(table.column("key").to_pylist()) == keys and table.num_rows == len(keys)
    assert table.schema.names == pq.read_table(sorted(glob.glob(f"{d}/*.parquet"))).schema.names  # every column
    assert len(pd.read_parquet(export)) == duckdb.sql(f"SELECT count(*) FROM '{export}'").fetchall()[0][0] == len(keys)
    capsys.readouterr()
    assert inspect_job.main([d, "--export", str(export), "--where", "true"]) == 2
    assert "--export writes every row and column as Parquet; drop --where" in capsys.readouterr().err


@pytest.mark.slow
def test_the_loader_runs_on_the_oldest_supported_webdataset(tmp_path):
    target = tmp_path / "webdataset"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target)]
    installed = subprocess.run([*pip, f"webdataset=={OLDEST_WEBDATASET}"], capture_output=True, text=True)
    if installed.returncode != 0:
        pytest.skip(f"could not install webdataset {OLDEST_WEBDATASET} from the registry: {installed.stderr[-300:]}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), str(REPO)]))
    version = subprocess.run(
        [sys.executable, "-c", "import webdataset; print(webdataset.__version__)"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert version.stdout.strip() == OLDEST_WEBDATASET
    # the loader's use of webdataset: shard lists, worker splits, tar grouping, shuffle buffer, resume, bad members
    keep = "every_sample_once or canonical or corrupt or resume_mid_epoch or resampled or round_trip_with_webdataset"
    tests = ["tests/model/test_loader.py", "tests/manifests/test_samples.py", "-k", keep]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:]
