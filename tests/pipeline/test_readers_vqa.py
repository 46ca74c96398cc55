"""VQA v2 files written here in their real structures (the official questions and annotations files, and the
ALBEF/BLIP list form): rows, captions, keys, the answers table's round trip, and the count of each bad case."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import rows as R
from pipeline.readers import read_source, vqa, vqa_json
from pipeline.sources import SourceSpec, load_sources

INFO = {"description": "tiny VQA", "version": "2.0"}


def _question(image_id, question_id, question) -> dict:
    return {"image_id": image_id, "question": question, "question_id": question_id}


def _answers(*texts: str) -> list[dict]:
    return [{"answer": t, "answer_confidence": "yes", "answer_id": i + 1} for i, t in enumerate(texts)]


def _annotation(question_id, answers: list, answer_type="other", question_type="what color") -> dict:
    return {"question_id": question_id, "image_id": question_id // 10, "question_type": question_type,
            "answer_type": answer_type, "multiple_choice_answer": "x", "answers": answers}  # fmt: skip


TEN_RED = _answers("red", "red", "Red", "red", "dark red", "red", "red.", "red", "maroon", "red")
QUESTIONS = [
    _question(9, 90, "What color is the cat?"),
    _question(9, 91, "  how   many\tdogs? "),  # whitespace normalized
    _question(9, 92, ""),  # blank: not a caption
    _question(9, 93, None),  # not a string: not a caption
    _question(42, 420, "Is it raining?"),
    _question(42, 421, "caf\udcff?"),  # lone surrogate: not a caption
    _question(7, 70, "   "),  # the only question of picture 7: the picture is rejected
    "not a question record",  # bad_records
    _question("nine", 5, "no integer image id"),  # bad_records
    _question(42, 90, "a question id seen before"),  # duplicate_question_id
    _question(9, 94, "Is there a cat?"),  # picture 9 again: its captions keep file order
    _question(8, 80, "What is this?"),  # no annotation
]
ANNOTATIONS = [
    _annotation(90, TEN_RED),
    _annotation(91, _answers(*"2223222122"), "number", "how many"),
    _annotation(92, _answers(*["yes"] * 10), "yes/no", "is there"),  # of a blank question: known, not a caption
    _annotation(94, [*_answers(*["yes"] * 9), {"answer": 5, "answer_id": 10}], "yes/no", "is there"),  # bad_answer
    _annotation(420, _answers(*["no"] * 10), "yes/no", "is it"),
    _annotation(70, _answers(*["a"] * 10)),
    _annotation(999, TEN_RED),  # annotation_without_question
    _annotation(90, _answers(*["blue"] * 10)),  # duplicate_annotation: the first one is used
    ["not an annotation"],  # bad_records
]
# 9 questions with ids (90-94, 420, 421, 70, 80), 6 of them annotated
READ_STATS = {
    "blank_question": 3, "question_not_utf8": 1, "bad_records": 3, "duplicate_question_id": 1,
    "annotation_without_question": 1, "duplicate_annotation": 1, "question_without_annotation": 3,
}  # fmt: skip


def _write(path: Path, doc: object) -> str:
    path.write_text(json.dumps(doc))  # json.dumps escapes the lone surrogate, as Python writes such files
    return str(path)


def _official(folder: Path, subtype: str = "val2014", annotations: bool = True) -> SourceSpec:
    questions = {"info": INFO, "task_type": "Open-Ended", "data_type": "mscoco", "license": {},
                 "data_subtype": subtype, "questions": QUESTIONS}  # fmt: skip
    files = {"questions": _write(folder / f"v2_OpenEnded_mscoco_{subtype}_questions.json", questions)}
    if annotations:
        doc = {"info": INFO, "license": {}, "data_subtype": subtype, "annotations": ANNOTATIONS}
        files["annotations"] = _write(folder / f"v2_mscoco_{subtype}_annotations.json", doc)
    return SourceSpec(name="vqa_val", format="vqa", images="/data/coco/val2014", files=files)


def test_official_rows_are_pictures_with_their_questions(tmp_path):
    stats = Counter()
    rows = list(vqa.read(_official(tmp_path), stats))
    assert [(r.key, r.image_path, r.status, r.captions) for r in rows] == [
        ("vqa_val-COCO_val2014_000000000009", "COCO_val2014_000000000009.jpg", "ok",
         ["What color is the cat?", "how many dogs?", "Is there a cat?"]),
        ("vqa_val-COCO_val2014_000000000042", "COCO_val2014_000000000042.jpg", "ok", ["Is it raining?"]),
        ("vqa_val-COCO_val2014_000000000007", "COCO_val2014_000000000007.jpg", R.EMPTY_CAPTION, []),
        ("vqa_val-COCO_val2014_000000000008", "COCO_val2014_000000000008.jpg", "ok", ["What is this?"]),
    ]  # fmt: skip
    assert "no usable question among 1" in rows[2].error
    assert all(r.image_root == "/data/coco/val2014" and not r.boxes for r in rows)
    assert rows[0].relevant == [{"boxes": [], "words": []}] * 3
    assert stats == READ_STATS


def test_answers_table_matches_the_rows_and_the_files(tmp_path):
    spec = _official(tmp_path)
    stats = Counter()
    table = vqa.answers_table(spec, stats)
    assert table.schema == vqa.ANSWERS_SCHEMA
    assert stats == READ_STATS | {"bad_answer": 1}  # the same counts as read gives, and the answers it dropped
    got = table.to_pylist()
    assert [(a["key"][-2:], a["index"], a["question_id"], a["question"]) for a in got] == [
        ("09", 0, 90, "What color is the cat?"), ("09", 1, 91, "how many dogs?"), ("09", 2, 94, "Is there a cat?"),
        ("42", 0, 420, "Is it raining?"), ("08", 0, 80, "What is this?"),
    ]  # fmt: skip
    # Every caption is one answers row, (key, index) and text alike.
    rows = list(read_source(spec))
    assert [(a["key"], a["index"], a["question"]) for a in got] == [
        (r.key, i, c) for r in rows if r.status == "ok" for i, c in enumerate(r.captions)
    ]
    # The answers are the file's raw answers, in order; the first annotation of a question is the one used.
    by_id = {a["question_id"]: a for a in got}
    assert by_id[90]["answers"] == [a["answer"] for a in TEN_RED]
    assert (by_id[90]["answer_type"], by_id[90]["question_type"]) == ("other", "what color")
    assert by_id[91]["answers"] == list("2223222122") and by_id[91]["answer_type"] == "number"
    assert by_id[94]["answers"] == ["yes"] * 9  # the number 5 is no answer text
    assert (by_id[80]["answers"], by_id[80]["answer_type"], by_id[80]["question_type"]) == ([], "", "")
    # Round trip through Parquet, as copa ingest writes it.
    pq.write_table(table, tmp_path / "answers.parquet", compression="zstd")
    assert pq.read_table(tmp_path / "answers.parquet").equals(table)


def test_test_dev_pictures_are_test2015_images_and_have_no_answers(tmp_path):
    spec = _official(tmp_path, "test-dev2015", annotations=False)
    stats = Counter()
    rows = list(vqa.read(spec, stats))
    assert rows[0].image_path == "COCO_test2015_000000000009.jpg"
    assert rows[0].key == "vqa_val-COCO_test2015_000000000009"
    assert stats == {"blank_question": 3, "question_not_utf8": 1, "bad_records": 2, "duplicate_question_id": 1}
    table = vqa.answers_table(spec)
    assert table.num_rows == sum(len(r.captions) for r in rows)
    assert set(map(len, table["answers"].to_pylist())) == {0}
    assert set(table["answer_type"].to_pylist()) == {""}


def test_unreadable_official_files_raise_naming_the_file(tmp_path):
    spec = _official(tmp_path)
    questions, annotations = spec.files["questions"], spec.files["annotations"]
    Path(questions).write_text(json.dumps({"data_subtype": "val2014", "questions": QUESTIONS})[:-20])
    with pytest.raises(ValueError, match=rf"{questions}: malformed JSON"):
        list(vqa.read(spec))
    Path(questions).write_text(json.dumps({"questions": QUESTIONS}))
    with pytest.raises(ValueError, match=rf"{questions}: 'data_subtype' must name"):
        list(vqa.read(spec))
    Path(questions).write_text(json.dumps({"data_subtype": "../etc", "questions": QUESTIONS}))
    with pytest.raises(ValueError, match="'data_subtype' must name"):
        list(vqa.read(spec))
    Path(questions).write_text(json.dumps({"data_subtype": "val2014", "annotations": ANNOTATIONS}))
    with pytest.raises(ValueError, match=rf"{questions}: no records under 'questions'"):
        list(vqa.read(spec))
    Path(questions).write_text(json.dumps({"data_subtype": "val2014", "questions": QUESTIONS}))
    Path(annotations).write_text(json.dumps({"data_subtype": "val2014", "questions": QUESTIONS}))
    with pytest.raises(ValueError, match=rf"{annotations}: no records under 'annotations'"):
        list(vqa.read(spec))


def test_sources_yaml_takes_the_vqa_settings(tmp_path):
    (tmp_path / "sources.yaml").write_text(
        "sources:\n"
        "  - {name: vqa_val, format: vqa, questions: q.json, annotations: a.json, images: val2014}\n"
        "  - {name: vqa_test, format: vqa, questions: t.json, images: test2015}\n"
        "  - {name: vqa_albef, format: vqa_json, annotations: vqa_train.json, images: coco}\n"
    )
    specs = load_sources(str(tmp_path / "sources.yaml"))
    assert [(s.format, sorted(s.files)) for s in specs] == [
        ("vqa", ["annotations", "questions"]), ("vqa", ["questions"]), ("vqa_json", ["annotations"])
    ]  # fmt: skip
    (tmp_path / "bad.yaml").write_text("sources:\n  - {name: v, format: vqa, annotations: a.json, images: x}\n")
    with pytest.raises(ValueError, match="format vqa needs the setting 'questions'"):
        load_sources(str(tmp_path / "bad.yaml"))


# --- the ALBEF/BLIP list --------------------------------------------------------------------------------------------

ENTRIES = [
    {"image": "train2014/COCO_train2014_000000000009.jpg", "question": "What color?", "question_id": 90,
     "answer": ["red", "red", "dark red"], "dataset": "vqa"},
    "not an entry",  # bad_record, keyed entry1
    {"image": "../outside.jpg", "question": "Where?", "question_id": 20},  # path_escapes_root, keyed entry2
    {"image": "./train2014/COCO_train2014_000000000009.jpg", "question": " How  many? ", "question_id": 91,
     "answer": "2"},  # the same picture, path normalized; a lone answer string
    {"image": "val2014/COCO_train2014_000000000009.jpg", "question": "Same stem?", "question_id": 92},  # duplicate_key
    {"image": "vg/1.jpg", "question": "  ", "question_id": 93, "dataset": "vg"},  # its only question is blank
    {"image": "vg/2.jpg", "question": "What is it?", "answer": ["a cat"], "dataset": "vg"},  # no question_id
    {"image": "vg/2.jpg", "question": "Again?", "question_id": 90},  # duplicate_question_id
    {"image": "vg/3.jpg", "question": "Answers?", "question_id": 95, "answer": ["ok", 5]},  # bad_answer
]  # fmt: skip


def _albef(folder: Path, entries: list = ENTRIES) -> SourceSpec:
    files = {"annotations": _write(folder / "vqa_train.json", entries)}
    return SourceSpec(name="vqa_albef", format="vqa_json", images="/data", files=files)


def test_albef_list_rows_group_entries_by_picture(tmp_path):
    stats = Counter()
    rows = list(vqa_json.read(_albef(tmp_path), stats))
    assert [(r.key, r.image_path, r.status, r.captions) for r in rows] == [
        ("vqa_albef-COCO_train2014_000000000009", "train2014/COCO_train2014_000000000009.jpg", "ok",
         ["What color?", "How many?"]),
        ("vqa_albef-entry1", "", "bad_record", []),
        ("vqa_albef-entry2", "", R.PATH_ESCAPES_ROOT, []),
        ("vqa_albef-entry4", "val2014/COCO_train2014_000000000009.jpg", R.DUPLICATE_KEY, []),
        ("vqa_albef-1", "vg/1.jpg", R.EMPTY_CAPTION, []),
        ("vqa_albef-2", "vg/2.jpg", "ok", ["What is it?"]),
        ("vqa_albef-3", "vg/3.jpg", "ok", ["Answers?"]),
    ]  # fmt: skip
    assert all(r.error for r in rows if r.status != "ok")
    assert stats == {"blank_question": 1, "no_question_id": 1, "duplicate_question_id": 1}


def test_albef_answers_table(tmp_path):
    spec = _albef(tmp_path)
    stats = Counter()
    table = vqa_json.answers_table(spec, stats)
    assert table.schema == vqa.ANSWERS_SCHEMA
    assert stats == {"blank_question": 1, "no_question_id": 1, "duplicate_question_id": 1, "bad_answer": 1}
    rows = list(vqa_json.read(spec))
    got = table.to_pylist()
    assert [(a["key"], a["index"], a["question"]) for a in got] == [
        (r.key, i, c) for r in rows if r.status == "ok" for i, c in enumerate(r.captions)
    ]
    assert [(a["question_id"], a["answers"], a["answer_type"], a["question_type"]) for a in got] == [
        (90, ["red", "red", "dark red"], "", ""), (91, ["2"], "", ""), (None, ["a cat"], "", ""), (95, ["ok"], "", ""),
    ]  # fmt: skip
    # A test file has no answers: every list is empty.
    test = [{k: v for k, v in e.items() if k != "answer"} for e in ENTRIES if isinstance(e, dict)]
    table = vqa_json.answers_table(_albef(tmp_path, test))
    assert table.num_rows == 4 and table["answers"].to_pylist() == [[]] * 4


def test_albef_list_that_is_no_list_raises(tmp_path):
    spec = _albef(tmp_path, {"questions": ENTRIES})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=rf"{spec.files['annotations']}: expected a non-empty JSON list"):
        list(vqa_json.read(spec))


def test_answers_helpers_keep_the_schema_without_questions():
    table = vqa.answers_of([], vqa.AnswerColumns())
    assert table.num_rows == 0 and table.schema == vqa.ANSWERS_SCHEMA
    assert isinstance(table["answers"].type, pa.ListType)
