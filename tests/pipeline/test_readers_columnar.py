"""The columnar JSON list reader gives exactly the rows of the per-row reader it replaced (``reference_json_list``):
keys, captions, statuses and error messages, on the synthetic fault corpus, on the benchmark's generated list with
bad entries mixed in, and on hand-made entries aimed at each column rule."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import synth as synth_job
from jobs.bench.ingest import _BAD_ENTRIES, _BAD_EVERY, generate_web
from pipeline import rows as R
from pipeline.readers import columnar, img2dataset, json_list
from pipeline.readers.common import restore_surrogates
from pipeline.sources import SourceSpec, load_sources
from tests.pipeline import reference_img2dataset, reference_json_list
from tests.pipeline import test_readers_web as web


def _spec(path: Path, name: str = "web") -> SourceSpec:
    return SourceSpec(name=name, format="json_list", images="/data/images", files={"annotations": str(path)})


def _same_rows(spec: SourceSpec) -> list[R.SourceRow]:
    fast = list(json_list.read(spec))
    assert fast == list(reference_json_list.read(spec))
    table = json_list.read_table(spec)
    assert table.schema == R.SOURCE_SCHEMA
    return fast


def test_generated_list_with_bad_entries_mixed_in(tmp_path):
    rows = len(_BAD_ENTRIES) * _BAD_EVERY + 500  # every kind of bad entry at least once
    spec = _spec(Path(generate_web(tmp_path, rows, seed=1)["annotations"]), "cc3m")
    out = _same_rows(spec)
    statuses = {row.status for row in out}
    assert statuses >= {"ok", "bad_path", "path_escapes_root", "empty_caption", "no_caption", "caption_not_utf8",
                        "bad_record", "duplicate_key"}  # fmt: skip
    assert len(out) < rows  # images with two entries are one row


def test_synthetic_fault_corpus(tmp_path):
    out = tmp_path / "corpus"
    assert synth_job.main(["--out", str(out), "--images", "40", "--seed", "3", "--faults"]) == 0
    specs = [s for s in load_sources(str(out / "sources.yaml")) if s.format == "json_list"]
    rows = [row for spec in specs for row in _same_rows(spec)]
    assert {row.status for row in rows} >= {"ok", "empty_caption", "caption_not_utf8", "path_escapes_root"}


def test_every_column_rule_on_hand_made_entries(tmp_path):
    entries = [
        {"image": "a/x.jpg", "caption": "  two\tspaces \n and\x0b\x0ca tab  "},
        {"image": "a/x.jpg", "caption": ["more", 3, None, " ", "of x"]},  # grouped with entry 0
        {"image": "b/caf\u00e9.jpg", "caption": "caf\u00e9 au\u00a0lait"},  # non-ASCII: the per-row rule
        {"image": "c/sep.jpg", "caption": "a\x1fseparator\x1c"},  # whitespace only to str.split
        {"image": "c/only_sep.jpg", "caption": "\x1e\x1f"},
        {"image": "d/7.jpg", "caption": "by id", "image_id": 7},
        {"image": "d/8.jpg", "caption": "same id", "image_id": "7"},  # duplicate key: "7"
        {"image": "d/9.jpg", "caption": "float id", "image_id": 9.0},  # not key-safe as "9.0": the stem
        {"image": "d/ten.jpg", "caption": "bool id", "image_id": True},
        {"image": "d/later.jpg", "caption": "id later"},
        {"image": "d/later.jpg", "caption": "second", "image_id": "later_id"},  # first id given wins
        {"image": "e/entry12.jpg", "caption": "a stem that is a fallback key"},
        {"image": "/abs.jpg", "caption": "bad path"},
        "entry 13 is not an object",
        {"image": "e/has.dots.in.name.jpg", "caption": "stem keeps dots: not key-safe, hashed"},
        {"image": "e/.hidden", "caption": "no stem"},
        {"image": "f/g/./h.jpg", "caption": "normalized path"},
        {"image": "f/g/h.jpg", "caption": "the same image as the line above"},
        {"image": "f/nl\nname.jpg", "caption": "a newline in the path"},
        {"image": "entry12", "caption": "a natural key that a later fallback must step around"},
        {"image": "x/y.jpg"},
        {"image": "x/z.jpg", "caption": "bad \udcff surrogate"},
        {"image": "x/z2.jpg", "caption": ["bad \udcff", "good one"]},
    ]
    path = tmp_path / "hand.json"
    path.write_text(json.dumps(entries))
    rows = {row.image_path: row for row in _same_rows(_spec(path))}
    assert rows["a/x.jpg"].captions == ["two spaces and a tab", "more", "of x"]
    assert rows["c/sep.jpg"].captions == ["a separator"]
    assert rows["c/only_sep.jpg"].status == R.EMPTY_CAPTION
    assert rows["f/g/h.jpg"].captions == ["normalized path", "the same image as the line above"]
    assert rows["x/z2.jpg"].captions == ["good one"]


def test_clean_captions_column_matches_the_python_rule():
    marked = "bad \ufdd0dcff"  # how SurrogateGuard hands over a lone surrogate escape
    texts = ["  a  b ", "", " \t ", None, "caf\u00e9\u2003x", "\x1ca", "ok", "tail\x0b", "a b", marked]
    cleaned, codes = columnar.clean_captions_column(pa.array(texts, pa.string()))
    outcome = {R.EMPTY_CAPTION: columnar.EMPTY, R.CAPTION_NOT_UTF8: columnar.NOT_UTF8}
    for text, value, code in zip(texts, cleaned.to_pylist(), codes.tolist(), strict=True):
        kept, reason = R.clean_captions([restore_surrogates(text) if text else text])
        assert value == (kept[0] if kept else None)
        assert code == (columnar.KEPT if kept else outcome[reason])
    assert codes.tolist()[-1] == columnar.NOT_UTF8


def test_caption_status_takes_the_first_unusable_captions_reason():
    codes = np.array([columnar.EMPTY, columnar.NOT_UTF8, columnar.NOT_UTF8, columnar.KEPT, columnar.EMPTY], np.int8)
    group = np.array([0, 0, 1, 1, 3])
    assert [columnar.STATUSES[c] for c in columnar.caption_status(codes, group, 4)] == [
        "empty_caption",
        "ok",
        "no_caption",
        "empty_caption",
    ]


@pytest.mark.parametrize("ids", [[], [(0, 5)]])
def test_an_empty_list_and_a_single_entry(tmp_path, ids):
    path = tmp_path / "small.json"
    path.write_text(json.dumps([] if not ids else [{"image": "a.jpg", "caption": "x", "image_id": 5}]))
    assert len(_same_rows(_spec(path))) == len(ids)


# --- img2dataset folders ---------------------------------------------------------------------------------------------


def _i2d_spec(folder: Path) -> SourceSpec:
    return SourceSpec(name="sbu", format="img2dataset", images=str(folder), files={})


def _same_i2d_rows(folder: Path) -> list[R.SourceRow]:
    fast = list(img2dataset.read(_i2d_spec(folder)))
    assert fast == list(reference_img2dataset.read(_i2d_spec(folder)))
    return fast


def test_img2dataset_folder_with_every_kind_of_record(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    first = [web._sample(0, 0, "a dog"), web._sample(0, 1, status="failed_to_download"),
             web._sample(0, 2, "  two  cats "), web._sample(0, 3, None, key="00000_4"),  # the empty key's fallback
             web._sample(0, 4, "odd key", key="a b.c"), web._sample(0, 5, "", key="")]  # fmt: skip
    web._write_shard(folder, 0, first)
    tar_only = [web._sample(1, 0, "tar only"), web._sample(1, 1, "", txt=b""), web._sample(1, 2, "b", txt=b"caf\xe9")]
    web._write_shard(folder, 1, tar_only, sidecar=False, ext="png")
    web._write_shard(folder, 2, [web._sample(0, 0, "a key used before"), web._sample(2, 1, "caf\u00e9")], ext="webp")
    with tarfile.open(folder / "00004.tar", "w") as tar:  # hand-made, no sidecar: no image, no caption
        web._add_member(tar, "sub/x.txt", b"a caption without an image")
        web._add_member(tar, "z.jpeg", b"\xff\xd8")
    rows = _same_i2d_rows(folder)
    assert {r.status for r in rows} >= {"ok", "empty_caption", "caption_not_utf8", "duplicate_key", "bad_record"}
    assert "sbu-00000_4_1" in {r.key for r in rows}  # stepped around the natural key claimed before it


def test_img2dataset_sidecars_without_captions_or_sizes(tmp_path):
    folder = tmp_path / "bare"
    folder.mkdir()
    web._write_shard(folder, 0, [web._sample(0, i, f"c {i}") for i in range(3)])
    table = pq.read_table(folder / "00000.parquet").drop_columns(["caption", "width"])
    pq.write_table(table, folder / "00000.parquet")
    assert [r.status for r in _same_i2d_rows(folder)] == [R.NO_CAPTION] * 3
