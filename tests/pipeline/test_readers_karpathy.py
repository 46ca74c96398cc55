"""Karpathy split files (``dataset_coco.json``, ``dataset_flickr30k.json``) written here in their real structure:
each split comes back with its images and captions, bad records are rejected with a reason, and sources.yaml
checks the ``splits`` setting."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs import ingest
from pipeline import rows as R
from pipeline.readers import karpathy, read_source
from pipeline.sources import SourceSpec, load_sources


def _image(split: str, filename: str, captions: list, filepath: str | None = "val2014", **extra) -> dict:
    image = {"filename": filename, "split": split, "sentences": [{"raw": c, "tokens": c.split()} for c in captions]}
    return image | ({"filepath": filepath} if filepath else {}) | extra


def _coco(folder: Path) -> Path:
    images = [
        _image("train", "COCO_train2014_000000000009.jpg", [f"train caption {i}" for i in range(5)], "train2014"),
        _image("restval", "COCO_val2014_000000000042.jpg", [f"restval caption {i}" for i in range(5)]),
        _image("val", "COCO_val2014_000000000073.jpg", [f"val caption {i}" for i in range(5)]),
        _image("test", "COCO_val2014_000000391895.jpg", [f"a man on a bike {i}" for i in range(5)], cocoid=391895),
        _image("test", "COCO_val2014_000000000074.jpg", ["", "  ", "a dog", "", ""]),  # blanks dropped
        _image("test", "../outside.jpg", ["escapes the root"], filepath=None),
        "not an image record",
        _image("test", "COCO_val2014_000000000099.jpg", ["", " "]),  # no usable caption
        _image("test", "COCO_val2014_000000391895.jpg", ["the same file again"], filepath="val2014_copy"),
    ]
    path = folder / "dataset_coco.json"
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return path


def _spec(path: Path, splits: tuple[str, ...] = (), name: str = "coco_k") -> SourceSpec:
    return SourceSpec(
        name=name, format="karpathy", images="/data/coco", files={"annotations": str(path)}, splits=splits
    )


def test_each_split_comes_back_with_its_images_and_captions(tmp_path):
    path = _coco(tmp_path)
    stats = Counter()
    test = list(karpathy.read(_spec(path, ("test",)), stats))
    assert stats == {"split_train": 1, "split_restval": 1, "split_val": 1}
    by_key = {r.key: r for r in test}
    first = by_key["coco_k-COCO_val2014_000000391895"]
    assert (first.image_path, first.status, first.captions) == ("val2014/COCO_val2014_000000391895.jpg", "ok",
                                                                [f"a man on a bike {i}" for i in range(5)])  # fmt: skip
    assert by_key["coco_k-COCO_val2014_000000000074"].captions == ["a dog"]
    assert by_key["coco_k-COCO_val2014_000000000099"].status == R.EMPTY_CAPTION
    statuses = Counter(r.status for r in test)
    assert statuses == {"ok": 2, R.EMPTY_CAPTION: 1, R.PATH_ESCAPES_ROOT: 1, "bad_record": 1, R.DUPLICATE_KEY: 1}
    assert {r.key for r in test if r.status == "bad_record"} == {"coco_k-image6"}
    train = list(read_source(_spec(path, ("train", "restval"))))
    assert [(r.image_path, len(r.captions), r.status) for r in train] == [
        ("train2014/COCO_train2014_000000000009.jpg", 5, "ok"),
        ("val2014/COCO_val2014_000000000042.jpg", 5, "ok"),
        ("", 0, "bad_record"),  # a record that is no object has no split: every source of the file rejects it
    ]
    everything = list(karpathy.read(_spec(path)))
    assert len(everything) == len(test) + 3  # all four splits when none is named


def test_flickr_files_have_no_filepath(tmp_path):
    images = [_image(split, f"{1000 + i}.jpg", [f"caption {k}" for k in range(5)], filepath=None)
              for i, split in enumerate(["train"] * 3 + ["val"] * 2 + ["test"] * 2)]  # fmt: skip
    path = tmp_path / "dataset_flickr30k.json"
    path.write_text(json.dumps({"images": images, "dataset": "flickr30k"}))
    rows = list(karpathy.read(_spec(path, ("test",), "flickr_test")))
    assert [(r.key, r.image_path, len(r.captions)) for r in rows] == [
        ("flickr_test-1005", "1005.jpg", 5),
        ("flickr_test-1006", "1006.jpg", 5),
    ]


def test_ingest_writes_one_manifest_per_split_declared(tmp_path):
    path = _coco(tmp_path)
    (tmp_path / "sources.yaml").write_text(
        "sources:\n"
        f"  - {{name: coco_train, format: karpathy, annotations: {path.name}, splits: [train, restval], images: .}}\n"
        f"  - {{name: coco_test, format: karpathy, annotations: {path.name}, splits: test, images: .}}\n"
    )
    out = tmp_path / "source.parquet"
    assert ingest.main(["--config", str(tmp_path / "sources.yaml"), "--out", str(out), "--quiet"]) == 0
    table = pq.read_table(out, columns=["source", "status", "captions"]).to_pylist()
    ok = Counter(r["source"] for r in table if r["status"] == "ok")
    assert ok == {"coco_train": 2, "coco_test": 2}
    assert sum(len(r["captions"]) for r in table if r["source"] == "coco_test" and r["status"] == "ok") == 6


@pytest.mark.parametrize("splits", ["[dev]", "{test: 1}", "[test, holdout]"])
def test_sources_yaml_refuses_unknown_splits(tmp_path, splits):
    (tmp_path / "s.yaml").write_text(
        f"sources:\n  - {{name: k, format: karpathy, annotations: a.json, splits: {splits}, images: .}}\n"
    )
    with pytest.raises(ValueError, match="'splits' must list some of train, restval, val, test"):
        load_sources(str(tmp_path / "s.yaml"))


def test_a_file_without_an_images_list_is_an_error(tmp_path):
    path = tmp_path / "not_karpathy.json"
    path.write_text(json.dumps([{"image": "a.jpg", "caption": "an ALBEF list"}]))
    with pytest.raises(ValueError, match="no 'images' list"):
        list(karpathy.read(_spec(path)))


def test_the_synthetic_karpathy_set_ingests_split_by_split(tmp_path):
    from pipeline.synth import SynthConfig, generate

    generate(SynthConfig(out=tmp_path / "corpus", num_images=20, karpathy_images=15))
    for split, count in (("train", 9), ("val", 3), ("test", 3)):
        config = tmp_path / "corpus" / "karpathy" / f"sources_{split}.yaml"
        out = tmp_path / f"{split}.parquet"
        assert ingest.main(["--config", str(config), "--out", str(out), "--quiet"]) == 0
        rows = pq.read_table(out, columns=["source", "status", "captions"]).to_pylist()
        assert Counter(r["source"] for r in rows) == {f"synth_{split}": count}
        assert all(r["status"] == "ok" and len(r["captions"]) == 5 for r in rows)
