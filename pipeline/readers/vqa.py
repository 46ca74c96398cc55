"""VQA v2 in its official files: questions, and annotations (answers) where the split has them.

    questions:   {"data_subtype": "train2014", "questions": [{"image_id": 9, "question": "...", "question_id": 9000},
                  ...], "info": ..., "license": ..., "task_type": ..., "data_type": "mscoco"}
    annotations: {"annotations": [{"question_id": 9000, "image_id": 9, "question_type": "what color",
                  "answer_type": "other", "multiple_choice_answer": "red",
                  "answers": [{"answer": "red", "answer_confidence": "yes", "answer_id": 1}, ... ten]}], ...}

One row per picture, in the order of its first question. Rules:

- **Image and key.** The picture is ``COCO_<data_subtype>_<image_id:012d>.jpg`` directly under the source's
  ``images`` root (test-dev's questions say ``test-dev2015``, its images are ``test2015``'s); the key is
  ``<source>-<file stem>`` (``vqa_train-COCO_train2014_000000000009``). Width and height are unknown (0).
- **Captions** are the picture's questions in file order, cleaned by ``rows.clean_captions``. A blank or non-string
  question is not a caption (counted as ``blank_question``, or ``question_not_utf8``), so caption ``i`` of a row is
  the ``i``-th usable question and the answers table indexes the same way. A picture left without a question is a
  rejected row with the reason (``empty_caption``, ``caption_not_utf8``).
- **Counted, not rows** (``stats``): a question record that is not an object or lacks an integer ``image_id`` or
  ``question_id`` (``bad_records``, logged with its position), a question id seen before (``duplicate_question_id``,
  the later one dropped); with an annotations file, an annotation of an unknown question
  (``annotation_without_question``), a second annotation of a question (``duplicate_annotation``) and questions
  without an annotation (``question_without_annotation``: kept, with no answers).
- **Answers table** (``answers_table``): one row per caption, (key, index) as the rows give them, with the ten raw
  answers, ``answer_type`` and ``question_type`` of its annotation (empty without one). An answer that is not a
  valid UTF-8 string is left out and counted as ``bad_answer``. ``ANSWERS_SCHEMA`` and the helpers that build the
  table are shared with the ALBEF form (``readers.vqa_json``).

Both files are streamed with ijson (``readers.jsonstream.JsonFile``): the train annotations are about 300 MB. The
answers are turned into Arrow arrays every 65,536 annotations, so the 4.4M answer strings of the train split are not
kept as Python objects. ``read`` and ``answers_table`` each parse the files; ``copa ingest`` calls both.
"""

from __future__ import annotations

import contextlib
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from manifests.schema import STATUS_OK, make_key
from pipeline.readers.common import Warner, file_stem, int_id, is_key_id
from pipeline.readers.jsonstream import JsonFile
from pipeline.rows import EMPTY_CAPTION, NO_CAPTION, SourceRow, clean_captions
from pipeline.sources import SourceSpec

ANSWERS_TABLE_VERSION = 1
ANSWERS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),  # the row's key
        pa.field("index", pa.int32(), nullable=False),  # the question's caption index in its row
        pa.field("question_id", pa.int64()),  # null only where an ALBEF-form entry has none
        pa.field("question", pa.string(), nullable=False),  # the caption, as cleaned
        pa.field("answers", pa.list_(pa.string()), nullable=False),  # the raw answers; empty without annotation
        pa.field("answer_type", pa.string(), nullable=False),  # "" when unknown
        pa.field("question_type", pa.string(), nullable=False),  # "" when unknown
    ],
    metadata={"copa_answers_table_version": str(ANSWERS_TABLE_VERSION)},
)

# --- shared with vqa_json --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Question:
    """A question that is a caption: its id, its cleaned text and where its answers are (``AnswerColumns``)."""

    question_id: int | None
    text: str
    ref: int = 0  # 0: no answers


def question_id(value: object) -> int | None:
    """A question id as a non-negative int that fits int64, else None."""
    qid = int_id(value)
    return qid if qid is not None and qid < 1 << 63 else None


def clean_question(raw: object, stats: Counter, what: str = "question") -> tuple[str | None, str | None]:
    """(the caption ``raw`` makes, None), or (None, the ``rows.clean_captions`` reason), counted in ``stats`` as
    ``blank_<what>`` or ``<what>_not_utf8``."""
    captions, reason = clean_captions([raw])
    if reason is not None:
        stats[f"blank_{what}" if reason == EMPTY_CAPTION else f"{what}_not_utf8"] += 1
        return None, reason
    return captions[0], None


def _utf8(text: object) -> bool:
    if not isinstance(text, str):
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def plain_text(value: object) -> str:
    """A type field as text: the string when it is valid UTF-8, else ""."""
    return value if _utf8(value) else ""


def answer_texts(answers: list, stats: Counter) -> list[str]:
    """The valid UTF-8 strings of ``answers``; the rest are counted as ``bad_answer``."""
    kept = [a for a in answers if _utf8(a)]
    if len(kept) != len(answers):
        stats["bad_answer"] += len(answers) - len(kept)
    return kept


class AnswerColumns:
    """Answers, answer type and question type per annotated question, appended one by one and turned into Arrow
    arrays every 65,536 entries. Entry 0 is the empty one, for questions without an annotation."""

    _CHUNK = 1 << 16

    def __init__(self) -> None:
        self._answers: list[list[str]] = []
        self._answer_types: list[str] = []
        self._question_types: list[str] = []
        self._batches: list[pa.RecordBatch] = []
        self.num_entries = 0
        self.add([], "", "")

    def add(self, answers: list[str], answer_type: str, question_type: str) -> int:
        """Append one entry; returns its position (a ``Question.ref``)."""
        self._answers.append(answers)
        self._answer_types.append(answer_type)
        self._question_types.append(question_type)
        self.num_entries += 1
        if len(self._answers) == self._CHUNK:
            self._flush()
        return self.num_entries - 1

    def _flush(self) -> None:
        if self._answers:
            columns = (self._answers, self._answer_types, self._question_types)
            types = (pa.list_(pa.string()), pa.string(), pa.string())
            arrays = [pa.array(values, type_) for values, type_ in zip(columns, types, strict=True)]
            self._batches.append(pa.record_batch(arrays, names=["answers", "answer_type", "question_type"]))
            for values in columns:
                values.clear()

    def table(self) -> pa.Table:
        self._flush()
        return pa.Table.from_batches(self._batches)


def question_row(spec: SourceSpec, key_id: str, path: str, questions: list[Question]) -> SourceRow:
    """The row of a picture whose captions are ``questions`` (already cleaned: cleaning again could drop one and
    shift the answers' indices). No boxes."""
    return SourceRow(
        key=make_key(spec.name, key_id),
        source=spec.name,
        image_id=key_id,
        image_root=spec.images,
        image_path=path,
        captions=[q.text for q in questions],
        relevant=[{"boxes": [], "words": []} for _ in questions],
    )


def answers_of(rows: Iterable[tuple[SourceRow, list[Question]]], answers: AnswerColumns) -> pa.Table:
    """The answers table (``ANSWERS_SCHEMA``) of the captions of ``rows``: each row with the questions its captions
    are, in caption order. Rejected rows have no captions, so none of theirs is in the table."""
    keys: list[str] = []
    index, refs = array("i"), array("q")
    ids: list[int | None] = []
    texts: list[str] = []
    for row, questions in rows:
        if row.status != STATUS_OK:
            continue
        assert len(questions) == len(row.captions), row.key
        for i, q in enumerate(questions):
            keys.append(row.key)
            index.append(i)
            ids.append(q.question_id)
            texts.append(q.text)
            refs.append(q.ref)
    looked_up = answers.table().take(pa.array(refs, pa.int64()))
    columns = {
        "key": pa.array(keys, pa.string()),
        "index": pa.array(index, pa.int32()),
        "question_id": pa.array(ids, pa.int64()),
        "question": pa.array(texts, pa.string()),
    }
    return pa.table(columns | {name: looked_up[name] for name in looked_up.column_names}, schema=ANSWERS_SCHEMA)


# --- the official files ----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Picture:
    questions: list[Question] = field(default_factory=list)
    num_raw: int = 0  # question records, usable or not
    reason: str | None = None  # why the first unusable question was not a caption


def _data_subtype(file: JsonFile) -> str:
    """The ``data_subtype`` of the questions file, which names the image files."""
    with contextlib.closing(file.items("data_subtype")) as values:  # closing: stop at the first value
        subtype = next(values, None)
    if not isinstance(subtype, str) or not is_key_id(subtype):
        raise ValueError(
            f"{file.path}: 'data_subtype' must name the images' folder, such as \"train2014\" (it makes the file "
            f"names COCO_<data_subtype>_<image id>.jpg), got {subtype!r}"
        )
    return subtype


def _questions(file: JsonFile, warn: Warner) -> tuple[dict[int, _Picture], set[int]]:
    """Pictures by image id, in the order of their first question, and the ids of every question read."""
    pictures: dict[int, _Picture] = {}
    ids: set[int] = set()
    count = 0
    for count, rec in enumerate(file.items("questions.item"), 1):
        image_id = int_id(rec.get("image_id")) if isinstance(rec, dict) else None
        qid = question_id(rec.get("question_id")) if isinstance(rec, dict) else None
        if image_id is None or qid is None:
            warn("bad_records", f"{file.path}: questions[{count - 1}] needs an integer 'image_id' and 'question_id'; "
                 f"skipped: {str(rec)[:120]}")  # fmt: skip
            continue
        if qid in ids:
            warn("duplicate_question_id", f"{file.path}: questions[{count - 1}] repeats question id {qid}; skipped")
            continue
        ids.add(qid)
        picture = pictures.setdefault(image_id, _Picture())
        picture.num_raw += 1
        text, reason = clean_question(rec.get("question"), warn.stats)
        if text is None:
            picture.reason = picture.reason or reason
        else:
            picture.questions.append(Question(qid, text))
    if not count:
        raise ValueError(f"{file.path}: no records under 'questions'; is this a VQA v2 questions file?")
    return pictures, ids


def _annotations(file: JsonFile, ids: set[int], warn: Warner, answers: AnswerColumns | None) -> dict[int, int]:
    """Question id -> its answers' position in ``answers`` (with ``answers`` None, only counted: position 0)."""
    refs: dict[int, int] = {}
    count = 0
    for count, rec in enumerate(file.items("annotations.item"), 1):
        qid = question_id(rec.get("question_id")) if isinstance(rec, dict) else None
        if qid is None:
            warn("bad_records", f"{file.path}: annotations[{count - 1}] has no integer 'question_id'; skipped")
            continue
        if qid not in ids:
            warn("annotation_without_question", f"{file.path}: annotation of unknown question {qid}")
            continue
        if qid in refs:
            warn("duplicate_annotation", f"{file.path}: question {qid} is annotated again; the first one is used")
            continue
        ref = 0
        if answers is not None:
            raw = rec.get("answers")
            raw = raw if isinstance(raw, list) else []
            texts = answer_texts([a.get("answer") if isinstance(a, dict) else a for a in raw], warn.stats)
            ref = answers.add(texts, plain_text(rec.get("answer_type")), plain_text(rec.get("question_type")))
        refs[qid] = ref
    if not count:
        raise ValueError(f"{file.path}: no records under 'annotations'; is this a VQA v2 annotations file?")
    if len(refs) < len(ids):
        warn.stats["question_without_annotation"] += len(ids) - len(refs)
    return refs


def _rows(
    spec: SourceSpec, stats: Counter | None, answers: AnswerColumns | None
) -> Iterator[tuple[SourceRow, list[Question]]]:
    warn = Warner(Counter() if stats is None else stats)
    file = JsonFile(spec.files["questions"], f"source {spec.name}: questions")
    subtype = _data_subtype(file)
    image_subtype = subtype.replace("test-dev", "test")  # test-dev is a subset of the test2015 images
    pictures, ids = _questions(file, warn)
    if "annotations" in spec.files:
        refs = _annotations(JsonFile(spec.files["annotations"], f"source {spec.name}: annotations"), ids, warn, answers)
        for picture in pictures.values():
            for q in picture.questions:
                q.ref = refs.get(q.question_id, 0)
    for image_id, picture in pictures.items():
        path = f"COCO_{image_subtype}_{image_id:012d}.jpg"
        row = question_row(spec, file_stem(path), path, picture.questions)
        if not row.captions:
            reason = picture.reason or NO_CAPTION
            row.reject(reason, f"{file.path}: image {image_id} has no usable question among {picture.num_raw}")
        yield row, picture.questions


def read(spec: SourceSpec, stats: Counter | None = None) -> Iterator[SourceRow]:
    """Rows of one VQA v2 source, one per picture (see the module docstring); ``stats`` gets the counts named there."""
    return (row for row, _ in _rows(spec, stats, None))


def answers_table(spec: SourceSpec, stats: Counter | None = None) -> pa.Table:
    """The answers table of one VQA v2 source (``ANSWERS_SCHEMA``): one row per question that is a caption, keyed
    by the (key, index) of ``read``'s rows. ``stats`` gets the same counts as ``read`` gives, and ``bad_answer``."""
    answers = AnswerColumns()
    return answers_of(_rows(spec, stats, answers), answers)
