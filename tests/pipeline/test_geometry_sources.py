"""Box clipping, caption cleaning, path checks and sources.yaml validation."""

import math

import pytest

from pipeline.geometry import clip_xywh, normalize
from pipeline.rows import CAPTION_NOT_UTF8, EMPTY_CAPTION, NO_CAPTION, clean_captions, safe_relpath
from pipeline.sources import load_sources


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ([10, 10, 20, 20], ([10, 10, 30, 30], "ok")),
        ([-5, 10, 20, 20], ([0, 10, 15, 30], "clipped")),
        ([90, 90, 20, 20], ([90, 90, 100, 100], "clipped")),
        ([120, 10, 5, 5], (None, "outside_image")),
        ([10, 10, -5, 5], (None, "empty_box")),
        ([10, 10, 0, 5], (None, "empty_box")),
        ([math.nan, 10, 5, 5], (None, "nan_box")),
        ([None, 10, 5, 5], (None, "nan_box")),
        (["x", 1, 2, 3], (None, "nan_box")),
    ],
)
def test_clip_xywh(box, expected):
    assert clip_xywh(box, 100, 100) == expected


def test_unknown_size_checks_without_clipping():
    assert clip_xywh([-5, 0, 10, 10], 0, 0) == ([-5, 0, 5, 10], "ok")


def test_normalize():
    assert normalize([10, 20, 30, 40], 100, 200) == [0.1, 0.1, 0.3, 0.2]


def test_clean_captions():
    assert clean_captions(["  a  red\nball ", "", "x\udcff"]) == (["a red ball"], None)
    assert clean_captions([" "]) == ([], EMPTY_CAPTION)
    assert clean_captions(["bad \udcff"]) == ([], CAPTION_NOT_UTF8)
    assert clean_captions([]) == ([], NO_CAPTION)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("images/a.jpg", "images/a.jpg"),
        ("./images//a.jpg", "images/a.jpg"),
        ("a/../b.jpg", "b.jpg"),
        ("../../outside.jpg", None),
        ("a/../../b.jpg", None),
        ("/etc/passwd", None),
        ("s3://bucket/x.jpg", None),
        ("", None),
        (None, None),
    ],
)
def test_safe_relpath(path, expected):
    assert safe_relpath(path) == expected


def _yaml(tmp_path, text):
    path = tmp_path / "sources.yaml"
    path.write_text(text)
    return str(path)


def test_load_sources_resolves_paths(tmp_path):
    specs = load_sources(
        _yaml(
            tmp_path,
            "sources:\n"
            "  - {name: coco, format: coco, captions: a/c.json, instances: a/i.json, images: imgs}\n"
            "  - {name: web, format: json_list, annotations: s3://b/w.json, images: s3://b/img}\n",
        )
    )
    assert [s.name for s in specs] == ["coco", "web"]
    assert specs[0].files == {"captions": str(tmp_path / "a/c.json"), "instances": str(tmp_path / "a/i.json")}
    assert specs[0].images == str(tmp_path / "imgs")
    assert specs[1].images == "s3://b/img"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sources: []\n", "at least one entry"),
        ("sources:\n  - {name: Coco, format: coco, captions: c, images: i}\n", "'name' must match"),
        ("sources:\n  - {name: coco, format: cocoa, captions: c, images: i}\n", "unknown format 'cocoa'"),
        ("sources:\n  - {name: coco, format: coco, images: i}\n", "needs the setting 'captions'"),
        (
            "sources:\n  - {name: coco, format: coco, captions: c, images: i, colour: red}\n",
            r"unknown settings \['colour'\]",
        ),
        (
            "sources:\n" + "  - {name: a, format: xvlm, annotations: x, images: i}\n" * 2,
            "used twice",
        ),
        ("sources: [unclosed\n", "not valid YAML"),
    ],
)
def test_load_sources_errors_name_file_and_setting(tmp_path, text, message):
    path = _yaml(tmp_path, text)
    with pytest.raises(ValueError, match=message) as err:
        load_sources(path)
    assert "sources.yaml" in str(err.value)


def test_missing_sources_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="sources file not found"):
        load_sources(str(tmp_path / "nope.yaml"))
