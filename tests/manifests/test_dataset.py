"""Manifests, dataset.json, sizes.json and stats: round trips and refusals."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from manifests import (
    MANIFEST_SCHEMA,
    DatasetInfo,
    Geometry,
    ShardStats,
    ok_row,
    read_dataset_info,
    read_manifest,
    read_sizes,
    read_stats,
    rejected_row,
    write_dataset_info,
    write_manifest,
    write_sizes,
    write_stats,
)
from tests.conftest import make_sample


def _rows():
    with_boxes = make_sample("coco-000001")
    no_boxes = make_sample("cc3m-000002", num_boxes=0)
    return [
        ok_row(no_boxes, "000000", "web/2.jpg", len(no_boxes.image)),
        ok_row(with_boxes, "000000", "coco/1.jpg", len(with_boxes.image)),
        rejected_row("cc3m-000003", "000000", "web/3.jpg", "truncated", "image file is truncated", ["a \udcff cap"]),
    ]


def test_manifest_round_trip(tmp_path):
    rows = _rows()
    path = tmp_path / "000000.parquet"
    write_manifest(rows, str(path))
    table = read_manifest(str(path))
    assert table.schema.equals(MANIFEST_SCHEMA, check_metadata=False)
    back = {r["key"]: r for r in table.to_pylist()}
    assert table.column("key").to_pylist() == sorted(back)  # sorted by key
    for row in rows:
        got = back[row["key"]]
        for name, value in row.items():
            if name == "pos_fraction":
                np.testing.assert_allclose(got[name], value, rtol=1e-6)
            elif name != "captions":
                assert got[name] == value, name
    assert back["cc3m-000003"]["captions"] == ["a \\udcff cap"]  # kept, as an escape
    assert back["cc3m-000003"]["status"] == "truncated"


def test_ok_row_derives_figures_from_sample():
    sample = make_sample("coco-000001", num_captions=3, num_boxes=2)
    row = ok_row(sample, "000003", "x.jpg", 123)
    assert row["num_captions"] == 3 and row["num_boxes"] == 2
    assert row["num_relevant"] == [0, 1, 2]
    np.testing.assert_allclose(row["pos_fraction"], (sample.pta > 0).mean(axis=(1, 2)), rtol=1e-6)
    with pytest.raises(ValueError, match="other than 'ok'"):
        rejected_row("coco-1", "000000", "x", "ok", "")


def test_manifest_bytes_are_reproducible(tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    write_manifest(_rows(), str(a))
    write_manifest(list(reversed(_rows())), str(b))
    assert a.read_bytes() == b.read_bytes()


def test_manifest_refuses_other_version_and_foreign_files(tmp_path):
    table = read_manifest_source = write_manifest(_rows(), str(tmp_path / "m.parquet"))
    assert read_manifest_source.num_rows == 3
    pq.write_table(table.replace_schema_metadata({"copa_schema_version": "99"}), tmp_path / "old.parquet")
    with pytest.raises(ValueError, match=r"old\.parquet: manifest schema version 99"):
        read_manifest(str(tmp_path / "old.parquet"))
    pq.write_table(table.replace_schema_metadata(None), tmp_path / "foreign.parquet")
    with pytest.raises(ValueError, match="not a COPA manifest"):
        read_manifest(str(tmp_path / "foreign.parquet"))


def test_manifest_rejects_wrong_columns():
    row = _rows()[0]
    row["surprise"] = 1
    with pytest.raises(ValueError, match="columns"):
        write_manifest([row], "unused.parquet")


def test_dataset_info_round_trip_and_version(tmp_path):
    info = DatasetInfo(
        num_shards=2,
        num_samples=9,
        num_rejected=1,
        geometry=Geometry(256, 16),
        sources={"coco": {"input": 10, "ok": 9, "rejected": 1}},
        config={"samples_per_shard": 5},
    )
    write_dataset_info(str(tmp_path), info)
    assert read_dataset_info(str(tmp_path)) == info
    assert info.geometry.grid == 16
    data = json.loads((tmp_path / "dataset.json").read_text())
    data["schema_version"] = 0
    (tmp_path / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="dataset schema version 0"):
        read_dataset_info(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not a COPA dataset"):
        read_dataset_info(str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        Geometry(250, 16)


def test_sizes_and_stats_round_trip(tmp_path):
    write_sizes(str(tmp_path), {"000001.tar": 3, "000000.tar": 5})
    assert read_sizes(str(tmp_path)) == {"000000.tar": 5, "000001.tar": 3}
    assert list(tmp_path.glob("*.tmp-*")) == []  # atomic writes leave no temporaries
    stats = ShardStats("000000", 5, 4, 1, {"truncated": 1}, 1234, 0.5)
    write_stats(str(tmp_path), stats)
    assert read_stats(str(tmp_path), "000000") == stats
    with pytest.raises(ValueError, match="5 in != 4 ok"):
        ShardStats("000000", 5, 4, 0, {}, 0, 0.0)
