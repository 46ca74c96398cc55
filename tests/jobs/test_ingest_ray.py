"""``copa ingest --engine ray``: the web sources read by Ray Data tasks (a JSON list per task, an img2dataset folder
one task per shard, an X-VLM file per task) give the same source manifest, byte for byte, on 1 and on 2 workers,
and the same rows as the local engine. (``test_pack_reliability.py`` submits it to a running cluster.)"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from jobs import ingest, synth
from tests.pipeline import test_readers_web as web

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic corpus with faults, plus an img2dataset folder of three shards (one without its sidecar, a key
    used twice) and an X-VLM file with a bad line."""
    corpus = tmp_path_factory.mktemp("corpus")
    assert synth.main(["--out", str(corpus), "--images", "60", "--seed", "2", "--faults"]) == 0
    shards = corpus / "i2d"
    shards.mkdir()
    web._write_shard(shards, 0, [web._sample(0, i, f"caption {i}") for i in range(5)])
    web._write_shard(shards, 1, [web._sample(1, 0, "tar only"), web._sample(1, 1, "")], sidecar=False)
    web._write_shard(shards, 2, [web._sample(0, 3, "a key used before"), web._sample(2, 1, "last")])
    lines = [{"image": "vg/1.jpg", "caption": "a man on a horse", "elems": [{"caption": "man", "bb": [1, 1, 5, 5]}]},
             {"image": "vg/2.jpg", "caption": "a dog"}]  # fmt: skip
    web._write_lines(corpus / "regions.jsonl", lines)
    (corpus / "regions.jsonl").write_text((corpus / "regions.jsonl").read_text() + "{not json\n")
    sources = yaml.safe_load((corpus / "sources.yaml").read_text())
    sources["sources"] += [
        {"name": "laion", "format": "img2dataset", "images": "i2d"},
        {"name": "regions", "format": "xvlm", "annotations": "regions.jsonl", "images": "vg"},
    ]
    (corpus / "sources.yaml").write_text(yaml.safe_dump(sources))
    return corpus / "sources.yaml"


def _ingest(config: Path, out: Path, *engine: str) -> None:
    assert ingest.main(["--config", str(config), "--out", str(out), "--quiet", *engine]) == 0


def test_ray_workers_give_the_same_bytes_and_the_local_rows(config: Path, tmp_path: Path) -> None:
    _ingest(config, tmp_path / "local.parquet")
    _ingest(config, tmp_path / "ray1.parquet", "--engine", "ray", "--workers", "1")
    _ingest(config, tmp_path / "ray2.parquet", "--engine", "ray", "--workers", "2")
    assert (tmp_path / "ray1.parquet").read_bytes() == (tmp_path / "ray2.parquet").read_bytes()
    local, ray = pq.read_table(tmp_path / "local.parquet"), pq.read_table(tmp_path / "ray2.parquet")
    assert ray.to_pylist() == local.to_pylist()
    sources = {row["source"] for row in local.to_pylist()}
    assert sources == {"coco", "vg", "cc3m", "sbu", "laion", "regions"}
    statuses = {(row["source"], row["status"]) for row in local.to_pylist()}
    assert {("laion", "duplicate_key"), ("laion", "empty_caption"), ("regions", "bad_record")} <= statuses
    record = json.loads((tmp_path / "ray2.parquet.ingest.json").read_text())
    assert record["summary"] == json.loads((tmp_path / "local.parquet.ingest.json").read_text())["summary"]
