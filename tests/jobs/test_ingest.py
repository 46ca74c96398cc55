"""``copa ingest`` end to end on the synthetic corpus with faults: it finishes, every fault it can see is rejected or
counted with the right reason, and the counts add up in the summary, its JSON record and the manifest."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs import ingest, synth

# fault kind (pipeline.synth.faults) -> what ingest records: a row status, or a box drop reason / "clipped"
# in reader stats
ROW_REASON = {"empty_caption": "empty_caption", "non_utf8_caption": "caption_not_utf8",
              "path_escape": "path_escapes_root"}  # fmt: skip
BOX_REASON = {"box_outside_image": "outside_image", "nan_box": "nan_box", "negative_size_box": "empty_box",
              "box_partly_outside": "clipped"}  # fmt: skip
IMAGE_BYTES = {"truncated_jpeg", "zero_byte_file", "not_an_image", "missing_file", "cmyk_jpeg", "gray16_png"}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("ingest")
    assert synth.main(["--out", str(out), "--images", "200", "--seed", "5", "--faults"]) == 0
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert ingest.main(["--config", f"{out}/sources.yaml", "--out", f"{out}/source.parquet", "--quiet"]) == 0
    return out, printed.getvalue()


def test_faults_are_rejected_or_counted_with_their_reason(ingested: tuple[Path, str]) -> None:
    out, printed = ingested
    faults = json.loads((out / "faults.json").read_text())
    assert {f["kind"] for f in faults} == set(ROW_REASON) | set(BOX_REASON) | IMAGE_BYTES  # the test covers all
    table = pq.read_table(out / "source.parquet", columns=["source", "status", "error"]).to_pylist()
    rejected = Counter((r["source"], r["status"]) for r in table if r["status"] != "ok")
    assert rejected == Counter((f["source"], ROW_REASON[f["kind"]]) for f in faults if f["kind"] in ROW_REASON)
    assert all(r["error"] for r in table if r["status"] != "ok")  # each rejection says why
    record = json.loads((out / "source.parquet.ingest.json").read_text())["summary"]
    expected_boxes = Counter(BOX_REASON[f["kind"]] for f in faults if f["kind"] in BOX_REASON)
    seen = record["coco"]["reader_stats"]
    assert {reason: seen.get(reason, 0) for reason in expected_boxes} == dict(expected_boxes)
    assert record["coco"]["boxes_dropped"] == sum(n for r, n in expected_boxes.items() if r != "clipped")
    # The printed summary names the reasons, for rows and for boxes.
    assert "sbu: rejected 3 (caption_not_utf8 1, empty_caption 1, path_escapes_root 1)" in printed
    assert "coco: boxes dropped 3 (nan_box 1, empty_box 1, outside_image 1), clipped 1" in printed


def test_counts_add_up(ingested: tuple[Path, str]) -> None:
    out, _ = ingested
    record = json.loads((out / "source.parquet.ingest.json").read_text())["summary"]
    table = pq.read_table(out / "source.parquet", columns=["source", "status", "captions"]).to_pylist()
    for name, s in record.items():
        mine = [r for r in table if r["source"] == name]
        assert s["images"] == s["ok"] + sum(s["rejected"].values()) + s["merged"], name
        assert len(mine) == s["images"] - s["merged"], name  # merged VG images live in their COCO row
        assert sum(r["status"] == "ok" for r in mine) == s["ok"], name
        assert sum(len(r["captions"]) for r in mine if r["status"] == "ok") == s["captions"], name
    assert record["vg"]["merged"] > 0  # the synthetic corpus links some VG images to COCO


def test_missing_config_names_the_file(tmp_path: Path, capsys) -> None:
    assert ingest.main(["--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "x.parquet")]) == 2
    assert re.search(r"copa ingest: .*nope\.yaml: sources file not found", capsys.readouterr().err)
