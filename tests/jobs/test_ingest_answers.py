"""``copa ingest`` writes the answers table of VQA sources beside the source manifest and ``copa pack --engine local``
copies it into the dataset; a RefCOCO source packs with one coverage grid per expression, its referent's."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jobs import ingest, pack
from manifests.samples import iter_tar_samples
from pipeline.readers import vqa

PIC = "COCO_{}_{:012d}.jpg"


def _jpeg(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 120, np.uint8)).save(path, quality=90)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Official VQA files (3 pictures, one question blank), an ALBEF-form list and an MDETR refexp file."""
    root = tmp_path_factory.mktemp("answers")
    questions = [{"image_id": i, "question_id": 10 * i + k, "question": f"question {k} of {i}?"}
                 for i in (1, 2, 3) for k in range(2)]  # fmt: skip
    questions[3]["question"] = " "  # picture 2 keeps one question
    ten = [{"answer": a, "answer_id": j + 1} for j, a in enumerate(["yes"] * 8 + ["no"] * 2)]
    annotations = [{"question_id": q["question_id"], "image_id": q["image_id"], "answer_type": "yes/no",
                    "question_type": "is", "answers": ten} for q in questions]  # fmt: skip
    (root / "q.json").write_text(json.dumps({"data_subtype": "val2014", "questions": questions}))
    (root / "a.json").write_text(json.dumps({"data_subtype": "val2014", "annotations": annotations}))
    for i in (1, 2, 3):
        _jpeg(root / "val2014" / PIC.format("val2014", i), 64, 48)
    albef = [{"image": f"val2014/{PIC.format('val2014', 1)}", "question": "what is it?", "question_id": 7,
              "answer": ["a square"]}]  # fmt: skip
    (root / "vqa_list.json").write_text(json.dumps(albef))
    _jpeg(root / "train2014" / PIC.format("train2014", 5), 80, 80)
    refexp = {
        "images": [{"id": e, "file_name": PIC.format("train2014", 5), "width": 80, "height": 80, "caption": c,
                    "original_id": 5} for e, c in ((1, "the left thing"), (2, "the thing on the left"),
                                                   (3, "the right thing"))],
        "annotations": [{"id": e, "image_id": e, "bbox": b, "category_id": 1, "iscrowd": 0}
                        for e, b in ((1, [0, 0, 40, 80]), (2, [0, 0, 40, 80]), (3, [40, 0, 40, 80]))],
        "categories": [{"id": 1, "name": "thing"}],
    }  # fmt: skip
    (root / "refexp.json").write_text(json.dumps(refexp))
    (root / "sources.yaml").write_text(
        "sources:\n"
        "  - {name: vqa_val, format: vqa, questions: q.json, annotations: a.json, images: val2014}\n"
        "  - {name: vqa_list, format: vqa_json, annotations: vqa_list.json, images: .}\n"
        "  - {name: refcoco, format: refexp, annotations: refexp.json, images: train2014}\n"
    )
    (root / "refexp.yaml").write_text("sources:\n  - {name: refcoco, format: refexp, annotations: refexp.json, "
                                      "images: train2014}\n")  # fmt: skip
    return root


def _run(job, argv: list[str]) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert job.main(argv) == 0
    return printed.getvalue()


def test_ingest_writes_the_answers_and_pack_copies_them(corpus: Path, tmp_path: Path) -> None:
    source = tmp_path / "source.parquet"
    printed = _run(ingest, ["--config", str(corpus / "sources.yaml"), "--out", str(source), "--quiet"])
    answers_path = tmp_path / "source.parquet.answers.parquet"
    assert f"6 questions with their answers -> {answers_path}" in printed
    answers = pq.read_table(answers_path)
    assert answers.schema == vqa.ANSWERS_SCHEMA
    sources = [key.split("-")[0] for key in answers["key"].to_pylist()]
    assert list(zip(sources, answers["index"].to_pylist(), strict=True)) == [
        ("vqa_val", 0), ("vqa_val", 1), ("vqa_val", 0), ("vqa_val", 0), ("vqa_val", 1), ("vqa_list", 0)
    ]  # fmt: skip
    assert answers["answers"].to_pylist()[0] == ["yes"] * 8 + ["no"] * 2
    record = json.loads((tmp_path / "source.parquet.ingest.json").read_text())
    assert record["answers"] == {"path": str(answers_path), "questions": 6}
    assert record["summary"]["vqa_val"]["reader_stats"] == {"blank_question": 1}

    out = tmp_path / "shards"
    printed = _run(pack, ["--source", str(source), "--out", str(out), "--engine", "local", "--workers", "1",
                          "--quiet"])  # fmt: skip
    assert "answers.parquet: the answers of 6 questions" in printed
    assert pq.read_table(out / "answers.parquet").equals(answers)
    samples = {}
    for tar in sorted(out.glob("*.tar")):
        with open(tar, "rb") as f:
            samples |= {s.key: s for s in iter_tar_samples(f)}
    assert sorted(samples) == ["refcoco-COCO_train2014_000000000005", "vqa_list-COCO_val2014_000000000001",
                               *(f"vqa_val-COCO_val2014_{i:012d}" for i in (1, 2, 3))]  # fmt: skip
    # Packed questions line up with the answers table: (key, index) names the caption it answers.
    for key, index, question in zip(*(answers[c].to_pylist() for c in ("key", "index", "question")), strict=True):
        assert samples[key].meta["captions"][index] == question
    # The refexp picture: two boxes (the left one shared by two expressions), one grid per expression.
    ref = samples["refcoco-COCO_train2014_000000000005"]
    assert ref.meta["boxes"] == [[0, 0, 0.5, 1], [0.5, 0, 1, 1]]
    assert [r["boxes"] for r in ref.meta["relevant"]] == [[0], [0], [1]]
    grid = ref.pta.shape[-1]
    assert ref.pta.shape[0] == 3 and np.array_equal(ref.pta[0], ref.pta[1])
    assert ref.pta[0][:, : grid // 2].min() == 255 and ref.pta[0][:, grid // 2 :].max() == 0
    assert ref.pta[2][:, grid // 2 :].min() == 255 and ref.pta[2][:, : grid // 2].max() == 0

    # The source has no answers any more: a resumed pack removes its copy.
    answers_path.unlink()
    printed = _run(pack, ["--source", str(source), "--out", str(out), "--engine", "local", "--quiet"])
    assert not (out / "answers.parquet").exists() and "answers.parquet" not in printed


def test_an_ingest_without_vqa_sources_removes_an_old_answers_table(corpus: Path, tmp_path: Path) -> None:
    source = tmp_path / "source.parquet"
    stale = tmp_path / "source.parquet.answers.parquet"
    stale.write_bytes(b"left by an earlier run")
    printed = _run(ingest, ["--config", str(corpus / "refexp.yaml"), "--out", str(source), "--quiet"])
    assert not stale.exists() and "answers" not in printed
    assert json.loads((tmp_path / "source.parquet.ingest.json").read_text())["answers"] is None
