"""``copa pack`` end to end on an embedded local Ray cluster: the faults corpus packs to completion, nothing is
lost, and the shards read back with webdataset, ``tar -tf`` and pyarrow (other clients: ``test_clients.py``)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from jobs import ingest, pack, synth
from manifests.dataset import ShardStats, read_dataset_info, read_manifest, read_sizes, read_stats
from manifests.labels import patch_coverage
from manifests.samples import decode_pta
from pipeline.pack import PackConfig
from pipeline.rows import read_source_table
from tests.jobs.pack_fixtures import assert_same_pack, num_shards

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    corpus = tmp_path_factory.mktemp("corpus")
    assert synth.main(["--out", str(corpus), "--images", "150", "--seed", "4", "--faults"]) == 0
    source = corpus / "source.parquet"
    assert ingest.main(["--config", f"{corpus}/sources.yaml", "--out", str(source), "--quiet"]) == 0
    out = tmp_path_factory.mktemp("shards")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert pack.main(["--source", str(source), "--out", str(out), "--samples-per-shard", "40", "--quiet"]) == 0
    return source, out, printed.getvalue()


def test_every_input_row_is_written_or_rejected(packed: tuple[Path, Path, str]) -> None:
    source, out, printed = packed
    rows = read_source_table(str(source), columns=["key", "status"]).to_pylist()
    info = read_dataset_info(str(out))
    manifest = read_manifest(sorted(str(p) for p in out.glob("*.parquet"))).to_pylist()
    assert sorted(r["key"] for r in manifest) == sorted(r["key"] for r in rows)  # every input row, once
    assert info.num_samples + info.num_rejected == len(rows)
    assert info.num_shards == -(-len(rows) // 40) == len(list(out.glob("*.tar")))
    # Ingest's rejections stay rejected with their reason; the image faults are pack's own.
    ingest_rejects = {r["key"]: r["status"] for r in rows if r["status"] != "ok"}
    by_key = {r["key"]: r for r in manifest}
    assert all(by_key[k]["status"] == reason for k, reason in ingest_rejects.items())
    pack_rejects = sorted(r["status"] for r in manifest if r["status"] != "ok" and r["key"] not in ingest_rejects)
    assert pack_rejects == ["empty_file", "missing_file", "not_an_image", "truncated_image"]
    sizes = read_sizes(str(out))
    assert sum(sizes.values()) == info.num_samples
    assert {k: v["input"] for k, v in info.sources.items()} == {
        s: sum(r["key"].startswith(f"{s}-") for r in rows) for s in info.sources
    }
    assert f"{info.num_samples} samples in {info.num_shards} shards" in printed


def test_shards_read_back_with_webdataset_and_labels_match_boxes(packed: tuple[Path, Path, str]) -> None:
    _, out, _ = packed
    info = read_dataset_info(str(out))
    grid = info.geometry.grid
    urls = [str(p) for p in sorted(out.glob("*.tar"))]
    seen = 0
    for sample in wds.WebDataset(urls, shardshuffle=False):
        meta = json.loads(sample["json"])
        assert sample["txt"].decode() == meta["captions"][0]
        if meta["boxes"]:
            expected = patch_coverage(meta["boxes"], [r["boxes"] for r in meta["relevant"]], grid)
            assert np.array_equal(decode_pta(sample["pta.npy"]), expected), sample["__key__"]
        else:  # the same members on every sample: an empty grid without boxes
            assert decode_pta(sample["pta.npy"]).shape == (0, grid, grid)
        seen += 1
    assert seen == info.num_samples


def test_shards_list_with_tar_members_adjacent_and_sorted(packed: tuple[Path, Path, str]) -> None:
    """GNU tar reads the shards; Ray Data and the other clients: ``tests/jobs/test_clients.py``."""
    _, out, _ = packed
    listing = subprocess.run(["tar", "-tf", str(out / "000000.tar")], check=True, capture_output=True, text=True)
    names = listing.stdout.split()
    keys = list(dict.fromkeys(n.split(".", 1)[0] for n in names))
    # Each sample's members are adjacent and sorted, as DESIGN section 4 asks.
    assert names == [n for k in keys for n in sorted(x for x in names if x.split(".", 1)[0] == k)]


def test_rerun_resumes_with_nothing_to_do(packed: tuple[Path, Path, str]) -> None:
    source, out, _ = packed
    before = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.endswith("_stats.json")}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert pack.main(["--source", str(source), "--out", str(out), "--samples-per-shard", "40", "--quiet"]) == 0
    info = read_dataset_info(str(out))
    assert f"({info.num_shards} already done)" in printed.getvalue()
    assert before == {p.name: p.read_bytes() for p in out.iterdir() if not p.name.endswith("_stats.json")}


def test_bad_arguments_name_the_setting(tmp_path: Path, packed: tuple[Path, Path, str], capsys) -> None:
    source, _, _ = packed

    def refused(*args: str) -> str:
        assert pack.main(["--source", str(source), *args]) == 2
        return capsys.readouterr().err

    assert "samples_per_shard" in refused("--out", str(tmp_path / "x"), "--samples-per-shard", "0")
    (tmp_path / "pack.yaml").write_text("image: {quality: 3}\n")
    assert re.search(r"pack\.yaml: image: unknown settings", refused("--out", str(tmp_path / "x"), "--config",
                                                                     str(tmp_path / "pack.yaml")))  # fmt: skip
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("mine")
    assert "not a pack output" in refused("--out", str(tmp_path / "stuff"))
    assert (tmp_path / "stuff" / "notes.txt").read_text() == "mine"


def test_pack_in_process_writes_the_same_bytes_as_the_ray_job(packed: tuple[Path, Path, str], tmp_path: Path) -> None:
    source, out, _ = packed
    rows = read_source_table(str(source)).to_pylist()
    pack.pack_in_process(rows, str(tmp_path), PackConfig(samples_per_shard=40))
    names = sorted(
        p.name for p in out.iterdir() if p.suffix in (".tar", ".parquet") or p.name in ("dataset.json", "sizes.json")
    )
    assert names == sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith("_stats.json"))
    assert all((out / n).read_bytes() == (tmp_path / n).read_bytes() for n in names)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_local_engine_writes_the_same_bytes_as_the_ray_job(packed, tmp_path, workers) -> None:
    source, out, _ = packed
    args = ["--source", str(source), "--out", str(tmp_path), "--samples-per-shard", "40", "--quiet"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert pack.main([*args, "--engine", "local", "--workers", workers]) == 0
    assert_same_pack(tmp_path, out)
    printed = io.StringIO()
    ray_args = ["--source", str(source), "--out", str(out), "--samples-per-shard", "40", "--quiet"]
    with contextlib.redirect_stdout(printed):  # the Ray job's folder, resumed without Ray: nothing left to do
        assert pack.main([*ray_args, "--engine", "local"]) == 0
    assert f"({num_shards(out)} already done)" in printed.getvalue()


def test_dataset_records_the_library_versions_that_decide_the_bytes(packed) -> None:
    import PIL

    from pipeline.pack import LIBRARIES

    _, out, _ = packed
    info = read_dataset_info(str(out))
    assert info.libraries == LIBRARIES and info.libraries["pillow"] == PIL.__version__
    assert {"numpy", "pyarrow"} <= set(info.libraries)
    one = read_stats(str(out), "000000")
    other = ShardStats(**{**one.__dict__, "shard": "000001", "libraries": {**one.libraries, "pillow": "0.0"}})
    assert pack._libraries([one, other])["pillow"] == sorted(["0.0", PIL.__version__])  # written with two Pillows
