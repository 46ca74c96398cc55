"""The pack stage without Ray (pipeline.pack, pipeline.fetch): the shard plan, one sample, one shard."""

from __future__ import annotations

import io
import json
import random
import tarfile
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from manifests.dataset import Geometry, read_manifest, read_stats
from manifests.labels import patch_coverage
from manifests.samples import decode_pta, iter_tar_samples
from pipeline.fetch import MISSING_FILE, ImageFetcher
from pipeline.images import ImageConfig, ImageError, StoredImage
from pipeline.pack import SIZE_MISMATCH, PackConfig, ShardPacker, key_hashes, make_sample, plan_shards
from pipeline.rows import SourceRow, read_source_table
from tests.conftest import make_jpeg

# --- the plan ----------------------------------------------------------------------------------------------------


def test_plan_cuts_hash_order_into_full_shards() -> None:
    keys = [f"coco-{i:06d}" for i in range(1003)] + [f"cc3m-{i}" for i in range(500)]
    hashes = key_hashes(keys)
    plan = plan_shards(hashes, 100)
    assert plan.sizes == (100,) * 15 + (3,)
    shard = plan.shard_of(hashes)
    assert Counter(shard.tolist()) == dict(enumerate(plan.sizes))
    # Shard order is hash order: every hash of shard i is below every hash of shard i + 1.
    assert all(hashes[shard == i].max() < hashes[shard == i + 1].min() for i in range(plan.num_shards - 1))
    # Sources are mixed across shards, not one after the other.
    assert {k.split("-")[0] for k, s in zip(keys, shard, strict=True) if s == 0} == {"coco", "cc3m"}


def test_plan_does_not_depend_on_row_order() -> None:
    keys = [f"vg-{i}" for i in range(997)]
    shuffled = random.Random(0).sample(keys, len(keys))
    a, b = plan_shards(key_hashes(keys), 64), plan_shards(key_hashes(shuffled), 64)
    assert a.sizes == b.sizes and np.array_equal(a.boundaries, b.boundaries)
    assert dict(zip(keys, a.shard_of(key_hashes(keys)).tolist(), strict=True)) == dict(
        zip(shuffled, b.shard_of(key_hashes(shuffled)).tolist(), strict=True)
    )


def test_plan_of_fewer_rows_than_a_shard() -> None:
    plan = plan_shards(key_hashes(["coco-1", "coco-2"]), 5000)
    assert plan.sizes == (2,) and plan.shard_of(key_hashes(["coco-3"])).tolist() == [0]


def test_pack_config_from_dict_names_unknown_settings() -> None:
    config = PackConfig.from_dict(
        {"samples_per_shard": 7, "image": {"jpeg_quality": 80}, "geometry": {"patch_size": 32}}
    )
    assert (config.samples_per_shard, config.image.jpeg_quality, config.geometry.grid) == (7, 80, 8)
    assert PackConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"pack\.yaml: image: unknown settings \['quality'\]"):
        PackConfig.from_dict({"image": {"quality": 80}}, where="pack.yaml")
    with pytest.raises(ValueError, match="samples_per_shard"):
        PackConfig.from_dict({"samples_per_shard": 0})
    with pytest.raises(ValueError, match="jpeg_quality"):
        PackConfig.from_dict({"image": {"jpeg_quality": 101}})


# --- one sample ------------------------------------------------------------------------------------------------------


def _row(**overrides) -> dict:
    row = SourceRow(
        key="coco-000042", source="coco", image_id="000042", image_root="/data", image_path="a.jpg",
        width=200, height=100, captions=["a dog and a cat", "a cat"],
        boxes=[[0, 0, 100, 50], [150, 50, 260, 140], [300, 0, 320, 10]], box_labels=["dog", "cat", "kite"],
        box_crowd=[False, True, False],
        relevant=[{"boxes": [0, 1], "words": ["dog", "cat"]}, {"boxes": [1, 2], "words": ["cat"]}],
    )  # fmt: skip
    return asdict(row) | overrides


def _stored(width: int = 200, height: int = 100) -> StoredImage:
    return StoredImage(b"jpeg", width, height, width, height, passed_through=True)


def test_sample_boxes_are_clipped_normalized_and_renumbered() -> None:
    drops = Counter()
    sample = make_sample(_row(), _stored(), Geometry(256, 16), drops)
    meta = sample.meta
    # The kite box lies outside the 200x100 picture: dropped, and the cat box (clipped) becomes box 1.
    assert meta["boxes"] == [[0.0, 0.0, 0.5, 0.5], [0.75, 0.5, 1.0, 1.0]]
    assert meta["box_labels"] == ["dog", "cat"] and meta["box_crowd"] == [False, True]
    assert [r["boxes"] for r in meta["relevant"]] == [[0, 1], [1]]
    assert drops == {"outside_image": 1}
    assert sample.pta.shape == (2, 16, 16)
    assert np.array_equal(sample.pta, patch_coverage(meta["boxes"], [[0, 1], [1]], 16))
    assert sample.pta[0, :8, :8].min() == 255 and sample.pta[0, 8:, :8].max() == 0


def test_sample_normalizes_by_the_annotated_size_when_the_image_is_a_scaled_copy() -> None:
    sample = make_sample(_row(), _stored(400, 200), Geometry(), Counter())
    assert sample.meta["boxes"][0] == [0.0, 0.0, 0.5, 0.5]
    assert (sample.meta["orig_width"], sample.meta["orig_height"]) == (400, 200)


def test_sample_with_another_aspect_ratio_is_a_size_mismatch() -> None:
    with pytest.raises(ImageError) as err:
        make_sample(_row(), _stored(100, 200), Geometry(), Counter())
    assert err.value.reason == SIZE_MISMATCH
    # Without boxes nothing can be misplaced: the sample is stored.
    assert make_sample(_row(boxes=[], box_labels=[], box_crowd=[], relevant=[{"boxes": [], "words": []}] * 2),
                       _stored(100, 200), Geometry(), Counter()).pta is None  # fmt: skip


def test_sample_of_unknown_annotated_size_uses_the_image_size() -> None:
    sample = make_sample(_row(width=0, height=0), _stored(400, 200), Geometry(), Counter())
    assert sample.meta["boxes"][0] == [0.0, 0.0, 0.25, 0.25]


# --- fetch -----------------------------------------------------------------------------------------------------------


def test_fetch_reads_files_and_tar_members(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"file bytes")
    with tarfile.open(tmp_path / "00000.tar", "w") as tar:
        for name, data in [("000001.jpg", b"member one"), ("000001.txt", b"caption"), ("000002.jpg", b"two")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    fetcher = ImageFetcher()
    assert fetcher.fetch(str(tmp_path), "a.jpg") == (b"file bytes", f"{tmp_path}/a.jpg")
    assert fetcher.fetch(str(tmp_path), "00000.tar", "000002.jpg")[0] == b"two"
    assert fetcher.fetch(f"file://{tmp_path}", "00000.tar", "000001.jpg")[0] == b"member one"  # a URI root
    for path, member in [("gone.jpg", None), ("00000.tar", "000003.jpg"), ("gone.tar", "000001.jpg")]:
        with pytest.raises(ImageError) as err:
            fetcher.fetch(str(tmp_path), path, member)
        assert err.value.reason == MISSING_FILE and path in err.value.message


# --- one shard, on the synthetic corpus with faults -----------------------------------------------------------------


REASONS = {"truncated_jpeg": "truncated_image", "zero_byte_file": "empty_file", "not_an_image": "not_an_image",
           "missing_file": "missing_file", "empty_caption": "empty_caption", "non_utf8_caption": "caption_not_utf8",
           "path_escape": "path_escapes_root"}  # fmt: skip


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from jobs import ingest, synth

    out = tmp_path_factory.mktemp("corpus")
    assert synth.main(["--out", str(out), "--images", "60", "--seed", "2", "--faults"]) == 0
    assert ingest.main(["--config", f"{out}/sources.yaml", "--out", f"{out}/source.parquet", "--quiet"]) == 0
    return out


def _pack_all(source: Path, out: Path, rows: list[dict] | None = None) -> None:
    rows = rows if rows is not None else read_source_table(str(source / "source.parquet")).to_pylist()
    ShardPacker(str(out), PackConfig(geometry=Geometry(256, 16))).pack(0, rows)


def test_one_shard_holds_every_row_with_its_reason(source: Path, tmp_path: Path) -> None:
    rows = read_source_table(str(source / "source.parquet")).to_pylist()
    _pack_all(source, tmp_path, rows)
    manifest = read_manifest(str(tmp_path / "000000.parquet")).to_pylist()
    stats = read_stats(str(tmp_path), "000000")
    assert len(manifest) == len(rows) == stats.num_input == stats.num_ok + stats.num_rejected
    status = {r["key"]: r["status"] for r in manifest}
    faults = json.loads((source / "faults.json").read_text())
    expected = Counter(REASONS[f["kind"]] for f in faults if f["kind"] in REASONS)
    assert Counter(s for s in status.values() if s != "ok") == expected == Counter(stats.rejected)
    assert all(r["error"] for r in manifest if r["status"] != "ok")
    # Converted images (CMYK, 16-bit gray) are stored, as RGB JPEGs.
    converted = {f["where"]["image"].rsplit("/", 1)[-1].split(".")[0] for f in faults if f["expect"] == "convert"}
    assert all(status[f"cc3m-{stem}"] == "ok" for stem in converted)

    # The tar holds exactly the manifest's ok rows (tar order is by key hash, the manifest's by key): the key set
    # read with Python's own tarfile, and per sample the bytes and sizes the manifest records.
    with tarfile.open(tmp_path / "000000.tar") as tar:
        members = [m.name for m in tar.getmembers()]
    tar_keys = [name.split(".", 1)[0] for name in members if name.endswith(".jpg")]
    ok = {r["key"]: r for r in manifest if r["status"] == "ok"}
    assert len(tar_keys) == len(set(tar_keys)) == stats.num_ok
    assert set(tar_keys) == set(ok)
    samples = list(iter_tar_samples(open(tmp_path / "000000.tar", "rb")))  # noqa: SIM115
    assert [s.key for s in samples] == tar_keys
    for s in samples:
        row = ok[s.key]
        assert len(s.image) == row["image_bytes"] and Image.open(io.BytesIO(s.image)).size == (
            row["width"],
            row["height"],
        )
        assert s.meta["captions"] == row["captions"] and len(s.meta["boxes"]) == row["num_boxes"]
    for sample in samples:
        meta = sample.meta
        if meta["boxes"]:
            assert np.array_equal(sample.pta, patch_coverage(meta["boxes"], [r["boxes"] for r in meta["relevant"]], 16))
        else:
            assert sample.pta is None


def test_a_shard_is_byte_identical_whatever_the_row_order(source: Path, tmp_path: Path) -> None:
    rows = read_source_table(str(source / "source.parquet")).to_pylist()
    _pack_all(source, tmp_path / "a", rows)
    _pack_all(source, tmp_path / "b", random.Random(1).sample(rows, len(rows)))
    for name in ("000000.tar", "000000.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert not [p for p in (tmp_path / "a").iterdir() if ".tmp-" in p.name]  # temporaries were renamed


def test_a_shard_reads_back_with_webdataset_and_tar(source: Path, tmp_path: Path) -> None:
    _pack_all(source, tmp_path)
    stats = read_stats(str(tmp_path), "000000")
    dataset = wds.WebDataset(str(tmp_path / "000000.tar"), shardshuffle=False).decode("pil")
    seen = 0
    for sample in dataset:
        assert set(sample) - {"__key__", "__url__", "__local_path__"} == {"jpg", "json", "pta.npy", "txt"}
        assert sample["txt"] == sample["json"]["captions"][0]
        assert sample["jpg"].size == (sample["json"]["width"], sample["json"]["height"])  # PIL image
        assert np.array_equal(sample["pta.npy"], decode_pta(_member(tmp_path, f"{sample['__key__']}.pta.npy")))
        assert sample["pta.npy"].shape[0] == (len(sample["json"]["captions"]) if sample["json"]["boxes"] else 0)
        seen += 1
    assert seen == stats.num_ok
    table = pq.read_table(tmp_path / "000000.parquet")
    assert table.num_rows == stats.num_input


def _member(root: Path, name: str) -> bytes:
    with tarfile.open(root / "000000.tar") as tar:
        return tar.extractfile(name).read()


def test_pass_through_and_re_encoded_images_keep_the_contract(tmp_path: Path) -> None:
    small = make_jpeg(40, 30)
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(small)
    row = _row(image_root=str(tmp_path / "img"), image_path="a.jpg", width=40, height=30,
               boxes=[[0, 0, 20, 15]], box_labels=["dog"], box_crowd=[False],
               relevant=[{"boxes": [0], "words": ["dog"]}, {"boxes": [], "words": []}])  # fmt: skip
    ShardPacker(str(tmp_path / "out"), PackConfig(image=ImageConfig(max_short_side=384))).pack(3, [row])
    (sample,) = iter_tar_samples(open(tmp_path / "out" / "000003.tar", "rb"))  # noqa: SIM115
    assert sample.image == small  # a baseline RGB JPEG within the cap is stored byte for byte
    assert sample.pta[1].max() == 0 and sample.pta[0].max() == 255
