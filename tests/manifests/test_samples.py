"""Schema round trip: our writer -> tar -> webdataset (the library) and tarfile read back equal values."""

import io
import json
import subprocess
import tarfile

import numpy as np
import pytest
import webdataset as wds

from manifests import Sample, ShardWriter, decode_sample, encode_sample, iter_tar_samples
from tests.conftest import make_sample

GRID = 4  # make_sample's grid


def _write_shard(path, samples):
    with open(path, "wb") as f, ShardWriter(f, GRID) as writer:
        for sample in samples:
            writer.write(sample)


@pytest.fixture
def samples():
    return [make_sample("coco-000001"), make_sample("vg-42", num_captions=3), make_sample("cc3m-7", num_boxes=0)]


def test_members_sorted_and_adjacent(tmp_path, samples):
    path = tmp_path / "000000.tar"
    _write_shard(path, samples)
    with tarfile.open(path) as tar:
        names = tar.getnames()
        infos = tar.getmembers()
    assert names == [
        "coco-000001.jpg", "coco-000001.json", "coco-000001.pta.npy", "coco-000001.txt",
        "vg-42.jpg", "vg-42.json", "vg-42.pta.npy", "vg-42.txt",
        "cc3m-7.jpg", "cc3m-7.json", "cc3m-7.pta.npy", "cc3m-7.txt",
    ]  # fmt: skip  # every sample carries every member: column-typed readers need it
    assert {(i.mtime, i.uid, i.gid, i.uname, i.mode) for i in infos} == {(0, 0, 0, "", 0o444)}
    listing = subprocess.run(["tar", "-tf", str(path)], capture_output=True, text=True, check=True).stdout.split()
    assert listing == names


def test_round_trip_with_tarfile(tmp_path, samples):
    path = tmp_path / "000000.tar"
    _write_shard(path, samples)
    with open(path, "rb") as f:
        back = list(iter_tar_samples(f))
    assert [s.key for s in back] == [s.key for s in samples]
    for got, want in zip(back, samples, strict=True):
        assert got.image == want.image
        assert got.meta == want.meta
        if want.pta is None:
            assert got.pta is None
        else:
            np.testing.assert_array_equal(got.pta, want.pta)


def test_round_trip_with_webdataset(tmp_path, samples):
    path = tmp_path / "000000.tar"
    _write_shard(path, samples)
    dataset = wds.WebDataset(str(path), shardshuffle=False).decode("rgb8")
    back = {s["__key__"]: s for s in dataset}
    assert set(back) == {s.key for s in samples}
    for want in samples:
        got = back[want.key]
        assert got["json"] == want.meta
        assert got["txt"] == want.meta["captions"][0]
        assert got["jpg"].shape == (want.meta["height"], want.meta["width"], 3)
        if want.pta is None:  # an image without boxes: no caption rows, the dataset's grid
            assert got["pta.npy"].dtype == np.uint8 and got["pta.npy"].shape == (0, GRID, GRID)
        else:
            np.testing.assert_array_equal(got["pta.npy"], want.pta)


def test_same_samples_same_bytes(tmp_path, samples):
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    _write_shard(a, samples)
    _write_shard(
        b, [make_sample("coco-000001"), make_sample("vg-42", num_captions=3), make_sample("cc3m-7", num_boxes=0)]
    )
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("key", ["coco-1.5", "coco/1", "../coco-1"])
def test_writer_rejects_bad_keys(key):
    sample = make_sample()
    sample.key = key
    with pytest.raises(ValueError, match="bad sample key"), ShardWriter(io.BytesIO(), GRID) as writer:
        writer.write(sample)


def test_writer_rejects_inconsistent_samples():
    with ShardWriter(io.BytesIO(), GRID) as writer:
        sample = make_sample()
        writer.write(sample)
        with pytest.raises(ValueError, match="written twice"):
            writer.write(sample)
    no_grid = make_sample()
    no_grid.pta = None
    with pytest.raises(ValueError, match="has boxes but no pta"):
        encode_sample(no_grid, GRID)
    wrong_grid = make_sample(num_captions=2)
    wrong_grid.pta = wrong_grid.pta[:1]
    with pytest.raises(ValueError, match="1 caption grids for 2 captions"):
        encode_sample(wrong_grid, GRID)
    float_grid = make_sample()
    float_grid.pta = float_grid.pta.astype(np.float32)
    with pytest.raises(ValueError, match="uint8"):
        encode_sample(float_grid, GRID)
    with pytest.raises(ValueError, match="pta grid 4 in a dataset of grid 8"):
        encode_sample(make_sample(), 8)


def test_reader_refuses_other_schema_version():
    members = encode_sample(make_sample(), GRID)
    meta = json.loads(members["json"])
    meta["schema_version"] = 99
    members["json"] = json.dumps(meta).encode()
    with pytest.raises(ValueError, match="schema_version 99"):
        decode_sample("coco-000001", members)
    with pytest.raises(ValueError, match="missing members"):
        decode_sample("coco-000001", {"jpg": b"x"})
    schema_1 = {ext: data for ext, data in encode_sample(make_sample("cc3m-7", num_boxes=0), GRID).items()}
    del schema_1["pta.npy"]  # how schema version 1 stored an image without boxes
    with pytest.raises(ValueError, match=r"missing members \['pta.npy'\]"):
        decode_sample("cc3m-7", schema_1)


def test_sample_dataclass_is_plain():
    sample = make_sample(num_boxes=0)
    assert isinstance(sample, Sample) and sample.pta is None


def test_labels_decode_to_none_without_boxes_and_a_bad_small_grid_is_named():
    from manifests.samples import decode_labels, encode_pta, no_labels

    assert decode_labels(None) is None
    empty = encode_pta(no_labels(16))
    assert len(empty) == 128 and decode_labels(empty) is None and decode_labels(bytes(empty)) is None
    grid = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    np.testing.assert_array_equal(decode_labels(encode_pta(grid)), grid)
    with pytest.raises(ValueError, match="Cannot parse header"):
        decode_labels(encode_pta(no_labels(4))[:-8] + b"garbage!")
