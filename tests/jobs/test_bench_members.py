"""``copa bench members``: the schema 2 member set against schema 1's layout, on the same generated samples."""

import json

import pytest

from jobs.bench import members


@pytest.mark.slow
def test_quick_benchmark_counts_one_tar_block_pair_per_sample_without_boxes(tmp_path, capsys):
    out = tmp_path / "members.json"
    assert members.main(["--images", "300", "--reps", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert 0 < report["samples_without_boxes"] < report["samples"]
    # a 512-byte tar header and the 128-byte .npy header in one 512-byte block; the totals differ by that per sample,
    # give or take the archives' end padding (to 10,240-byte records)
    assert report["bytes_per_sample_without_boxes"] == 1024
    shards = -(-report["samples"] // 1000)
    extra = report["bytes"]["v2"] - report["bytes"]["v1"]
    assert abs(extra - 1024 * report["samples_without_boxes"]) <= 10240 * shards
    assert set(report["ratios"]) == {"read", "decode", "write"}
    assert "GB over 4M samples" in capsys.readouterr().out
