"""``copa bench inspect``: its synthetic manifests are a valid dataset, and ``--quick`` measures and prints every
figure."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from jobs.bench.inspect import main, write_dataset
from manifests.inspect import summarize
from manifests.query import query


def test_synthetic_manifests_read_as_a_dataset(tmp_path):
    made = write_dataset(tmp_path / "shards", 3000, 4, seed=1)
    rows = pq.read_table(made["files"]).to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(rows) == 3000 and made["samples"] == len(ok) and len(ok) < len(rows)
    summary = summarize(str(tmp_path / "shards"))  # refuses files without the manifest schema version
    assert summary["samples"] == len(ok) and set(summary["sources"]) == {"cc3m", "sbu", "coco", "vg"}
    words = [len(c.split()) for r in ok for c in r["captions"]]
    assert summary["caption_words_histogram"] == np.bincount(words).tolist()
    assert all(c == " ".join(c.split()) for r in rows for c in r["captions"])  # as ingest stores them
    assert all(
        (n > 0) == (f > 0) for r in ok for n, f in zip(r["num_relevant"], r["pos_fraction"], strict=True)
    )  # a grounded caption covers at least one patch
    assert query(str(tmp_path / "shards"), "status != 'ok'", ["key"]).num_rows == len(rows) - len(ok)


@pytest.mark.slow
def test_quick_benchmark_prints_every_figure(tmp_path, capsys):
    out = tmp_path / "inspect.json"
    assert main(["--quick", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["rows"] == 200_000 and report["files"] == 80
    for name in ("summary", "read_all", "summary_without_captions", "read_all_without_captions", "query", "filter"):
        assert report[name]["seconds"] > 0 and report[name]["peak_rss_bytes"] > 0, name
    assert report["summary"]["samples"] == report["samples"]
    assert report["query"]["rows"] == report["filter"]["rows"] == report["rows"] - report["samples"] > 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("200,000 manifest rows")
    assert lines[1].split()[:3] == ["figure", "seconds", "peak"]
    summary_line = next(line for line in lines if line.startswith("summarize, one manifest at a time"))
    assert summary_line.split()[-2].startswith("x") and summary_line.split()[-1].startswith("x")
    assert any(line.startswith('query --where "status != ') for line in lines)
