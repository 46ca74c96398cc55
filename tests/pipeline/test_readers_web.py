"""Web-format readers: ALBEF/BLIP JSON lists, X-VLM JSON Lines and img2dataset folders, on files in the real formats.

Every fixture is written here under tmp_path: JSON with ``json.dumps`` (as ALBEF, BLIP and X-VLM wrote theirs),
img2dataset shards with ``tarfile`` and ``pyarrow`` in the layout and schema img2dataset writes.
"""

from __future__ import annotations

import io
import json
import math
import tarfile
from collections import Counter
from pathlib import Path

import ijson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import synth as synth_job
from manifests.schema import validate_key
from pipeline import rows as R
from pipeline.readers import img2dataset, json_list, read_source, xvlm
from pipeline.readers.common import BAD_RECORD, SurrogateGuard, restore_surrogates
from pipeline.sources import SourceSpec, load_sources

# --- helpers -----------------------------------------------------------------------------------------------------


def _spec(fmt: str, root: Path | str, annotations: Path | str | None = None, name: str = "web") -> SourceSpec:
    files = {"annotations": str(annotations)} if annotations else {}
    return SourceSpec(name=name, format=fmt, images=str(root), files=files)


def _check(rows: list[R.SourceRow], tmp_path: Path) -> dict[str, R.SourceRow]:
    """The invariants every reader keeps; returns the rows by key."""
    keys = [validate_key(row.key) for row in rows]
    assert len(set(keys)) == len(keys), "keys must be unique, rejected rows included"
    for row in rows:
        assert row.key == f"{row.source}-{row.image_id}"
        assert len(row.relevant) == len(row.captions)
        assert len(row.box_labels) == len(row.boxes) == len(row.box_crowd)
        for rel in row.relevant:
            assert set(rel) == {"boxes", "words"} and all(0 <= b < len(row.boxes) for b in rel["boxes"])
        if row.status == R.STATUS_OK:
            assert row.captions and row.error is None
        else:
            assert row.error
    counts = R.write_source_table(rows, str(tmp_path / "rows.parquet"))  # Arrow takes them (valid UTF-8 only)
    assert sum(counts.values()) == len(rows)
    return {row.key: row for row in rows}


def _write_json(path: Path, value: object) -> Path:
    path.write_text(json.dumps(value))  # ensure_ascii: lone surrogates become "\udcff" escapes, as in the wild
    return path


@pytest.fixture(params=["yajl2_c", "python"])
def ijson_backend(request, monkeypatch):
    """Run a json_list test with each ijson backend: they treat lone surrogate escapes differently."""
    try:
        backend = ijson.get_backend(request.param)
    except ImportError:
        pytest.skip(f"ijson backend {request.param} not available")
    monkeypatch.setattr(json_list, "ijson_backend", lambda: backend)
    return request.param


# --- json_list ---------------------------------------------------------------------------------------------------


def test_json_list_groups_captions_of_one_image(tmp_path, ijson_backend):
    # coco_karpathy_train.json style: one entry per caption, image_id given
    train, val = "train2014/COCO_train2014_000000057870.jpg", "val2014/COCO_val2014_000000000042.jpg"
    entries = [
        {"caption": "A man riding a horse. ", "image": train, "image_id": "coco_57870"},
        {"caption": "A dog on a couch.", "image": val, "image_id": "coco_42"},
        {"caption": ["A  rider", "A horse  outdoors"], "image": f"./{train}"},
    ]
    rows = list(json_list.read(_spec("json_list", tmp_path, _write_json(tmp_path / "coco.json", entries), "coco")))
    by_key = _check(rows, tmp_path)
    assert [r.key for r in rows] == ["coco-coco_57870", "coco-coco_42"]
    first = by_key["coco-coco_57870"]
    assert first.captions == ["A man riding a horse.", "A rider", "A horse outdoors"]  # first-seen order, cleaned
    assert first.relevant == [{"boxes": [], "words": []}] * 3
    assert (first.image_root, first.image_path, first.image_member) == (str(tmp_path), entries[0]["image"], None)
    assert (first.width, first.height, first.boxes, first.status) == (0, 0, [], "ok")


def test_json_list_keys_from_image_id_stem_or_hash(tmp_path, ijson_backend):
    entries = [
        {"image": "images/cc3m/000000123.jpg", "caption": "stem"},
        {"image": "images/my photo.v2.jpg", "caption": "hash: the stem has a space and a dot"},
        {"image": "vg/VG_100K/1.jpg", "caption": "int id", "image_id": 2417890},
        {"image": "vg/VG_100K/2.jpg", "caption": "unsafe id falls back to the stem", "image_id": "vg/2"},
    ]
    rows = list(json_list.read(_spec("json_list", tmp_path, _write_json(tmp_path / "a.json", entries))))
    _check(rows, tmp_path)
    ids = [r.image_id for r in rows]
    assert ids[0] == "000000123" and ids[2] == "2417890" and ids[3] == "2"
    assert len(ids[1]) == 16 and int(ids[1], 16) >= 0
    again = list(json_list.read(_spec("json_list", tmp_path, _write_json(tmp_path / "b.json", entries[1:2]))))
    assert again[0].image_id == ids[1]  # stable: the hash depends on the path only


def test_json_list_duplicate_key_rejects_the_later_path(tmp_path, ijson_backend):
    entries = [
        {"image": "a/001.jpg", "caption": "first"},
        {"image": "entry2.jpg", "caption": "its stem looks like a fallback key"},
        {"image": "b/001.jpg", "caption": "same stem, other folder"},
        {"image": "a/001.jpg", "caption": "same image again: merged, not a duplicate"},
    ]
    rows = list(json_list.read(_spec("json_list", tmp_path, _write_json(tmp_path / "d.json", entries))))
    by_key = _check(rows, tmp_path)
    assert by_key["web-001"].captions == ["first", "same image again: merged, not a duplicate"]
    assert by_key["web-entry2"].image_path == "entry2.jpg"  # the natural key won over the fallback name
    dup = by_key["web-entry2_1"]
    assert (dup.status, dup.image_path) == (R.DUPLICATE_KEY, "b/001.jpg")
    assert "a/001.jpg" in dup.error and "entry 2" in dup.error


def test_json_list_rejects_bad_paths_and_records(tmp_path, ijson_backend):
    entries = [
        {"image": "ok.jpg", "caption": "fine"},
        {"image": "../outside.jpg", "caption": "climbs out"},
        {"image": "a/../../outside.jpg", "caption": "climbs out later"},
        {"image": "/abs/x.jpg", "caption": "absolute"},
        {"image": "http://example.com/x.jpg", "caption": "a URL"},
        {"caption": "no image"},
        {"image": 7, "caption": "not a string"},
        "not an object",
        {"image": "ok.jpg", "caption": "merged"},
    ]
    path = _write_json(tmp_path / "bad.json", entries)
    rows = list(json_list.read(_spec("json_list", tmp_path, path)))
    _check(rows, tmp_path)
    assert len(rows) == 1 + 7  # one good image + one row per bad entry: the counts add up
    assert [r.status for r in rows] == ["ok"] + [R.PATH_ESCAPES_ROOT] * 2 + [R.BAD_PATH] * 4 + [BAD_RECORD]
    assert [r.key for r in rows[1:]] == [f"web-entry{i}" for i in range(1, 8)]
    assert all(str(path) in r.error for r in rows[1:])
    assert "'../outside.jpg'" in rows[1].error and rows[1].image_path == ""


@pytest.mark.parametrize(
    "raw",
    ["a.jpg", "a/b/c.jpg", "./a.jpg", "a//b.jpg", "a/./b.jpg", "a/../b.jpg", "a/b/", ".hidden.jpg", "a\\b.jpg",
     "..", "../a.jpg", "a/..", "C:/x.jpg", "s3://b/x.jpg", "/abs.jpg", "", "caf\u00e9/x.jpg", "x/\udcff.jpg"],
)  # fmt: skip
def test_check_image_path_agrees_with_safe_relpath(raw):
    rel, reason = json_list.check_image_path(raw)
    expected = R.safe_relpath(raw)
    if expected is None or "\udcff" in raw:
        assert rel is None and reason in (R.BAD_PATH, R.PATH_ESCAPES_ROOT)
        assert (reason == R.PATH_ESCAPES_ROOT) == raw.startswith("..")
    else:
        assert (rel, reason) == (expected, None)


def test_json_list_caption_rejections(tmp_path, ijson_backend):
    entries = [
        {"image": "empty.jpg", "caption": ""},
        {"image": "blank.jpg", "caption": ["  ", "\t"]},
        {"image": "lone_low.jpg", "caption": "a red ball \udcff on the left"},
        {"image": "lone_high.jpg", "caption": "a red ball \ud83d"},  # yajl alone would make it "a red ball ?"
        {"image": "none.jpg"},
        {"image": "null.jpg", "caption": None},
        {"image": "mixed.jpg", "caption": ["bad \udcff", "", "good one"]},
        {"image": "emoji.jpg", "caption": "party \U0001f389 time"},
        {"image": "escaped.jpg", "caption": "a literal \\udcff is text"},
    ]
    rows = list(json_list.read(_spec("json_list", tmp_path, _write_json(tmp_path / "c.json", entries))))
    by_key = _check(rows, tmp_path)
    status = {key.removeprefix("web-"): row.status for key, row in by_key.items()}
    assert status == {
        "empty": R.EMPTY_CAPTION,
        "blank": R.EMPTY_CAPTION,
        "lone_low": R.CAPTION_NOT_UTF8,
        "lone_high": R.CAPTION_NOT_UTF8,
        "none": R.NO_CAPTION,
        "null": R.EMPTY_CAPTION,
        "mixed": "ok",
        "emoji": "ok",
        "escaped": "ok",
    }
    assert by_key["web-mixed"].captions == ["good one"]
    assert by_key["web-emoji"].captions == ["party \U0001f389 time"]
    assert by_key["web-escaped"].captions == ["a literal \\udcff is text"]


def test_json_list_raw_non_utf8_bytes_reject_the_caption(tmp_path, ijson_backend):
    path = tmp_path / "raw.json"
    path.write_bytes(
        b'\xef\xbb\xbf[{"image": "a.jpg", "caption": "caf\xe9"}, {"image": "b.jpg", "caption": "ok \xc3\xa9"}]'
    )
    rows = list(json_list.read(_spec("json_list", tmp_path, path)))
    _check(rows, tmp_path)
    assert [(r.status, r.captions) for r in rows] == [(R.CAPTION_NOT_UTF8, []), ("ok", ["ok \u00e9"])]


@pytest.mark.parametrize(
    "text, message",
    [
        ('[{"image": "a.jpg", "caption": "x"}, {"image": "b.jp', "after 1 entries"),
        ('[{"image": "a.jpg", "caption": "x"} {"image": "b.jpg"}]', "after 1 entries"),
        ('{"images": []}', "expected a JSON array"),
        ("", "expected a JSON array"),
    ],
)
def test_json_list_broken_file_names_the_file(tmp_path, text, message):
    path = tmp_path / "broken.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        list(json_list.read(_spec("json_list", tmp_path, path)))
    assert str(path) in str(info.value)


def test_json_list_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.json"):
        list(json_list.read(_spec("json_list", tmp_path, tmp_path / "nope.json")))


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 11, 13, 4096])
def test_surrogate_guard_matches_json_load_at_every_chunk_boundary(chunk_size):
    captions = [
        "\\udcff",
        "a\\\\udcff",
        "\\ud83d\\ude00",
        "\\ud83d\\ud83d\\ude00x",
        "\\ude00\\ud83d",
        "\\\\\\udcff",
        "é",
    ]
    # plain ASCII between them: chunks of it are handed on as bytes, the others are decoded and marked
    captions = [c for caption in captions for c in (caption, "plain words, a tab\\t and a \\\\ backslash")]
    text = "[" + ", ".join(f'"{c}"' for c in captions) + "]"
    expected = json.loads(text)
    stream = SurrogateGuard(io.BytesIO(text.encode()), chunk_size=chunk_size)
    got = [restore_surrogates(c) for c in ijson.get_backend("yajl2_c").items(stream, "item")]
    assert got == expected


# --- xvlm --------------------------------------------------------------------------------------------------------


def _write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 1 << 20])
def test_xvlm_line_splitting_at_chunk_boundaries(chunk_size):
    data = b'{"a": 1}\n\n{"b": "x\xff"}\r\nlast line, no newline'
    assert list(xvlm._lines(io.BytesIO(data), chunk_size)) == [
        b'{"a": 1}',
        b"",
        b'{"b": "x\xff"}\r',
        b"last line, no newline",
    ]


def test_xvlm_elems_attributes_and_top_level_alignment(tmp_path):
    line = {
        "image": "vg/VG_100K/10.jpg",
        "image_w": 800,
        "image_h": 600,
        "caption": ["a man riding a horse", "green grass everywhere"],
        "elems": [
            {"caption": "young man", "bb": [100, 50, 80, 200], "attributes": ["tall", "smiling"]},
            {"caption": ["brown horse", "horse"], "bb": [60, 150, 300, 250], "attributes": "brown"},
            {"caption": "grass", "bb": [0, 400, 800, 200]},
        ],
    }
    rows = list(xvlm.read(_spec("xvlm", tmp_path, _write_lines(tmp_path / "x.jsonl", [line]), "grit")))
    (row,) = _check(rows, tmp_path).values()
    assert (row.key, row.width, row.height, row.status) == ("grit-10", 800, 600, "ok")
    assert row.boxes == [[100, 50, 180, 250], [60, 150, 360, 400], [0, 400, 800, 600]]
    assert row.box_labels == ["young man", "brown horse", "grass"]
    assert row.captions == [
        "a man riding a horse",
        "green grass everywhere",
        "tall young man",
        "smiling young man",
        "brown brown horse",
        "brown horse",
        "grass",
    ]
    assert row.relevant[0] == {"boxes": [0, 1], "words": ["man", "horse"]}
    assert row.relevant[1] == {"boxes": [], "words": []}  # "grass" names no COCO category
    assert [r["boxes"] for r in row.relevant[2:]] == [[0], [0], [1], [1], [2]]
    assert all(r["words"] == [] for r in row.relevant[2:])


def test_xvlm_bad_boxes_are_clipped_or_dropped_with_their_captions(tmp_path):
    line = (
        '{"image": "a.jpg", "height": 100, "width": 200, "elems": ['
        '{"caption": "inside", "bb": [10, 10, 20, 20]},'
        '{"caption": "partly outside", "bb": [190, 90, 40, 40]},'
        '{"caption": "nan", "bb": [NaN, 10, 20, 20]},'
        '{"caption": "negative size", "bb": [30, 30, -15, 20]},'
        '{"caption": "outside", "bb": [300, 10, 20, 15]},'
        '{"caption": "no box"},'
        '{"caption": "short box", "bb": [1, 2, 3]},'
        '{"caption": "", "bb": [0, 0, 5, 5]},'
        '"not an elem"]}'
    )
    stats = Counter()
    rows = list(xvlm.read(_spec("xvlm", tmp_path, _write_lines(tmp_path / "b.jsonl", [line])), stats))
    (row,) = _check(rows, tmp_path).values()
    assert row.captions == ["inside", "partly outside"]
    # "no box" and "short box" have a missing or malformed bb: NaN-like, dropped as nan_box.
    assert stats == Counter(clipped=1, nan_box=3, empty_box=1, outside_image=1)
    assert row.boxes == [[10, 10, 30, 30], [190, 90, 200, 100]]
    assert (row.boxes_clipped, row.boxes_dropped) == (1, 5)
    assert math.isfinite(sum(sum(b) for b in row.boxes))


def test_xvlm_unknown_size_checks_but_does_not_clip(tmp_path):
    line = {
        "image": "a.jpg",
        "elems": [{"caption": "cat", "bb": [-5, 10, 20, 20]}, {"caption": "x", "bb": [0, 0, 0, 5]}],
    }
    rows = list(xvlm.read(_spec("xvlm", tmp_path, _write_lines(tmp_path / "c.jsonl", [line]))))
    (row,) = _check(rows, tmp_path).values()
    assert (row.width, row.height, row.boxes, row.boxes_dropped) == (0, 0, [[-5, 10, 15, 30]], 1)


def test_xvlm_bad_lines_become_rejected_rows_and_the_rest_comes_through(tmp_path):
    good = {"image": "img/1.jpg", "caption": "a dog", "elems": [{"caption": "dog", "bb": [1, 1, 5, 5]}]}
    lines = [
        good,
        "{not json",
        "",
        "[1, 2]",
        {"image": "../../etc/passwd", "caption": "escape"},
        {"image": "img/2.jpg", "elems": [{"caption": "cat", "bb": [0, 0, float("nan"), 3]}]},
        {"image": "img/3.jpg", "caption": "a cat", "elems": []},
        {"image": "img/5.jpg", "caption": "elems of the wrong type", "elems": {"caption": "x", "bb": [0, 0, 1, 1]}},
        '{"image": "img/4.jpg", "caption": "cut sho',  # a truncated file: a broken last line
    ]
    path = _write_lines(tmp_path / "d.jsonl", lines)
    rows = list(xvlm.read(_spec("xvlm", tmp_path, path)))
    by_key = _check(rows, tmp_path)
    assert len(rows) == 8  # 9 lines, one of them blank
    assert by_key["web-line2"].status == BAD_RECORD and f"{path}:2" in by_key["web-line2"].error
    assert by_key["web-line4"].status == BAD_RECORD
    assert by_key["web-line5"].status == R.PATH_ESCAPES_ROOT
    assert by_key["web-2"].status == R.NO_CAPTION and "boxes dropped" in by_key["web-2"].error
    assert by_key["web-3"].status == "ok" and by_key["web-3"].boxes == []
    assert by_key["web-line8"].status == BAD_RECORD and "'elems' must be a list" in by_key["web-line8"].error
    assert by_key["web-line9"].status == BAD_RECORD
    assert [r.status for r in rows].count("ok") == 2


def test_xvlm_repeated_image_is_merged_with_boxes_renumbered(tmp_path):
    cat, black_cat = {"caption": "cat", "bb": [0, 0, 10, 10]}, {"caption": "black cat", "bb": [20, 20, 40, 40]}
    lines = [
        {"image": "p/1.jpg", "image_w": 50, "image_h": 50, "caption": "two cats", "elems": [cat]},
        {"image": "p/2.jpg", "caption": "other", "elems": []},
        {"image": "./p/1.jpg", "caption": "a cat", "elems": [black_cat]},
    ]
    rows = list(xvlm.read(_spec("xvlm", tmp_path, _write_lines(tmp_path / "e.jsonl", lines))))
    _check(rows, tmp_path)
    assert [r.key for r in rows] == ["web-1", "web-2"]
    merged = rows[0]
    assert merged.captions == ["two cats", "a cat", "cat", "black cat"]
    assert merged.boxes == [[0, 0, 10, 10], [20, 20, 50, 50]]  # the first line's size clips the second's box
    assert merged.boxes_clipped == 1
    assert [r["boxes"] for r in merged.relevant] == [[0, 1], [0, 1], [0], [1]]


def test_xvlm_non_utf8_captions(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(
        b'{"image": "a.jpg", "elems": [{"caption": "caf\xe9", "bb": [0, 0, 4, 4]},'
        b' {"caption": "ok", "bb": [1, 1, 2, 2]}]}\n'
        b'{"image": "b.jpg", "caption": "lone \\udcff", "elems": []}\n'
    )
    rows = list(xvlm.read(_spec("xvlm", tmp_path, path)))
    _check(rows, tmp_path)
    assert (rows[0].status, rows[0].captions, rows[0].boxes) == ("ok", ["ok"], [[1, 1, 3, 3]])
    assert rows[1].status == R.CAPTION_NOT_UTF8


# --- img2dataset -------------------------------------------------------------------------------------------------

_SIDECAR_SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("caption", pa.string()),
        ("key", pa.string()),
        ("status", pa.string()),
        ("error_message", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("original_width", pa.int32()),
        ("original_height", pa.int32()),
    ]
)


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _write_shard(folder: Path, shard: int, samples: list[dict], sidecar: bool = True, ext: str = "jpg") -> None:
    """One img2dataset shard: <key>.<ext>/.json/.txt members for the successes; the sidecar lists every URL."""
    name = f"{shard:05d}"
    with tarfile.open(folder / f"{name}.tar", "w") as tar:
        for s in samples:
            if s["status"] != "success":
                continue
            meta = {k: s.get(k) for k in _SIDECAR_SCHEMA.names}
            _add_member(tar, f"{s['key']}.{ext}", b"\xff\xd8 image bytes")
            _add_member(tar, f"{s['key']}.json", json.dumps(meta, indent=4).encode())
            _add_member(tar, f"{s['key']}.txt", s.get("txt", (s.get("caption") or "").encode()))
    if sidecar:
        columns = {k: [s.get(k) for s in samples] for k in _SIDECAR_SCHEMA.names}
        pq.write_table(pa.Table.from_pydict(columns, schema=_SIDECAR_SCHEMA), folder / f"{name}.parquet")
    successes = sum(s["status"] == "success" for s in samples)
    stats = {"count": len(samples), "successes": successes, "failed_to_download": len(samples) - successes}
    (folder / f"{name}_stats.json").write_text(json.dumps(stats, indent=4))


def _sample(shard: int, i: int, caption: str | None = "a caption", status: str = "success", **extra) -> dict:
    ok = status == "success"
    sample = {"url": f"http://x/{shard}/{i}.jpg", "caption": caption, "key": f"{shard:05d}{i:04d}", "status": status}
    sample.update(error_message=None if ok else "404", width=64 if ok else None, height=48 if ok else None)
    sample.update(original_width=640 if ok else None, original_height=480 if ok else None, **extra)
    return sample


@pytest.fixture
def shards(tmp_path) -> Path:
    folder = tmp_path / "sbu_shards"
    folder.mkdir()
    _write_shard(folder, 0, [_sample(0, 0, "a dog on a beach"), _sample(0, 1, status="failed_to_download"),
                             _sample(0, 2, "  two  cats ", txt=b"the tar caption is not read")])  # fmt: skip
    _write_shard(folder, 1, [_sample(1, 0, "no sidecar here"), _sample(1, 1, "", txt=b""),
                             _sample(1, 2, "bad", txt=b"caf\xe9 au lait")], sidecar=False, ext="png")  # fmt: skip
    _write_shard(folder, 2, [_sample(2, 0, "webp image")], ext="webp")
    return folder


def test_img2dataset_rows_from_sidecars_and_tars(shards, tmp_path):
    rows = list(img2dataset.read(_spec("img2dataset", shards, name="sbu")))
    by_key = _check(rows, tmp_path)
    assert list(by_key) == [
        "sbu-000000000",
        "sbu-000000002",
        "sbu-000010000",
        "sbu-000010001",
        "sbu-000010002",
        "sbu-000020000",
    ]  # the failed download is not an image; shards in name order, samples in shard order
    first = by_key["sbu-000000000"]
    assert (first.image_root, first.image_path, first.image_member) == (str(shards), "00000.tar", "000000000.jpg")
    assert (first.captions, first.width, first.height, first.status) == (["a dog on a beach"], 64, 48, "ok")
    assert by_key["sbu-000000002"].captions == ["two cats"]  # from the sidecar, not the tar's .txt
    assert by_key["sbu-000010000"].image_member == "000010000.png" and by_key["sbu-000010000"].width == 64
    assert by_key["sbu-000010001"].status == R.EMPTY_CAPTION
    assert by_key["sbu-000010002"].status == R.CAPTION_NOT_UTF8
    assert by_key["sbu-000020000"].image_member == "000020000.webp"
    for row in rows:  # every referenced member is in its tar
        with tarfile.open(shards / row.image_path) as tar:
            assert row.image_member in tar.getnames()


def test_img2dataset_duplicate_keys_and_bad_keys(tmp_path):
    folder = tmp_path / "merged"
    folder.mkdir()
    _write_shard(folder, 0, [_sample(0, 0, "first"), _sample(0, 1, "odd key", key="a b.c")])
    _write_shard(folder, 1, [_sample(0, 0, "same key from another run")])
    rows = list(img2dataset.read(_spec("img2dataset", folder)))
    by_key = _check(rows, tmp_path)
    assert [r.status for r in rows] == ["ok", "ok", R.DUPLICATE_KEY]
    assert rows[1].image_member == "a b.c.jpg" and len(rows[1].image_id) == 16  # hashed key, real member name
    dup = by_key["web-000000000_dup"]
    assert "00000.tar" in dup.error and dup.image_path == "00001.tar"


def test_img2dataset_hand_made_tar_without_image_or_caption(tmp_path):
    with tarfile.open(tmp_path / "shard.tar", "w") as tar:
        _add_member(tar, "sub/x.txt", b"a caption without an image")
        _add_member(tar, "sub/y.jpg", b"\xff\xd8")
        _add_member(tar, "sub/y.txt", b"fine")
        _add_member(tar, "z.jpeg", b"\xff\xd8")
    rows = list(img2dataset.read(_spec("img2dataset", tmp_path)))
    _check(rows, tmp_path)
    assert [(r.key, r.status, r.image_member) for r in rows] == [
        ("web-x", BAD_RECORD, None),
        ("web-y", "ok", "sub/y.jpg"),
        ("web-z", R.NO_CAPTION, "z.jpeg"),
    ]


def test_img2dataset_empty_or_missing_folder_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"no \.tar shards"):
        list(img2dataset.read(_spec("img2dataset", tmp_path)))
    with pytest.raises(ValueError, match="cannot list"):
        list(img2dataset.read(_spec("img2dataset", tmp_path / "absent")))


def test_readers_take_uris(tmp_path, shards):
    """Inputs on object storage arrive as URIs; file:// goes through the same pyarrow filesystem code."""
    list_path = _write_json(tmp_path / "u.json", [{"image": "a.jpg", "caption": "x"}])
    lines_path = _write_lines(tmp_path / "u.jsonl", [{"image": "b.jpg", "caption": "y"}])
    json_rows = list(json_list.read(_spec("json_list", tmp_path, f"file://{list_path}")))
    xvlm_rows = list(xvlm.read(_spec("xvlm", tmp_path, f"file://{lines_path}")))
    web_rows = list(img2dataset.read(_spec("img2dataset", f"file://{shards}")))
    assert [r.status for r in json_rows + xvlm_rows] == ["ok", "ok"]
    assert [r.key for r in web_rows] == [r.key for r in img2dataset.read(_spec("img2dataset", shards))]


@pytest.mark.parametrize("cut", ["member_boundary", "in_header", "in_image_data", "in_caption", "no_end_block"])
def test_img2dataset_truncated_tar_names_the_file(tmp_path, cut):
    _write_shard(tmp_path, 0, [_sample(0, i, f"caption {i}") for i in range(3)], sidecar=False)
    path = tmp_path / "00000.tar"
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    second_image, second_caption = members[3], members[5]  # members go jpg, json, txt per sample
    at = {
        "member_boundary": second_image.offset,
        "in_header": second_image.offset + 100,
        "in_image_data": second_image.offset_data + 3,
        "in_caption": second_caption.offset_data + 2,
        "no_end_block": members[-1].offset_data + tarfile.BLOCKSIZE,
    }[cut]
    path.write_bytes(path.read_bytes()[:at])
    with pytest.raises(ValueError, match=r"00000\.tar"):
        list(img2dataset.read(_spec("img2dataset", tmp_path)))


# --- dispatch and the synthetic corpus ------------------------------------------------------------------------------


def test_read_source_dispatches_to_each_web_reader(tmp_path, shards):
    list_path = _write_json(tmp_path / "l.json", [{"image": "a.jpg", "caption": "x"}])
    lines_path = _write_lines(tmp_path / "l.jsonl", [{"image": "b.jpg", "caption": "y", "elems": []}])
    for spec, module in (
        (_spec("json_list", tmp_path, list_path), json_list),
        (_spec("xvlm", tmp_path, lines_path), xvlm),
        (_spec("img2dataset", shards), img2dataset),
    ):
        assert list(read_source(spec)) == list(module.read(spec))


def test_json_list_on_a_synthetic_corpus_with_faults(tmp_path):
    out = tmp_path / "corpus"
    assert synth_job.main(["--out", str(out), "--images", "40", "--seed", "3", "--faults"]) == 0
    faults = [f for f in json.loads((out / "faults.json").read_text()) if f["where"]["file"].startswith("web/")]
    expected = {
        "empty_caption": R.EMPTY_CAPTION,
        "non_utf8_caption": R.CAPTION_NOT_UTF8,
        "path_escape": R.PATH_ESCAPES_ROOT,
    }
    specs = [s for s in load_sources(str(out / "sources.yaml")) if s.format == "json_list"]
    assert {s.name for s in specs} == {"cc3m", "sbu"}
    for spec in specs:
        rows = list(json_list.read(spec))
        entries = json.loads(Path(spec.files["annotations"]).read_text())
        assert len(rows) == len(entries)  # one image per entry in the synthetic lists
        by_key = _check(rows, tmp_path)
        for fault in (f for f in faults if f["source"] == spec.name):
            index, image = fault["where"]["index"], fault["where"]["image"]
            key = f"{spec.name}-entry{index}" if fault["kind"] == "path_escape" else f"{spec.name}-{Path(image).stem}"
            # image-byte faults are pack's to reject; ingest only sees paths and captions
            assert by_key[key].status == expected.get(fault["kind"], "ok"), fault
        assert sum(r.status != "ok" for r in rows) == sum(
            f["kind"] in expected for f in faults if f["source"] == spec.name
        )
