"""VQA in the ALBEF/BLIP/mPLUG form: one JSON list of questions, ``vqa_train.json``, ``vqa_test.json``, ``vg_qa.json``.

    [{"image": "train2014/COCO_train2014_000000458752.jpg", "question": "What is this photo taken looking through?",
      "question_id": 458752000, "answer": ["net", "net", "netting", ...], "dataset": "vqa"}, ...]

``answer`` is absent in test files; ``dataset`` ("vqa" or "vg") is not read. One row per picture, in the order of
its first entry. Rules:

- **Grouping and keys.** Entries are grouped by their normalized image path (relative to the source's ``images``
  root); the key is ``<source>-<file stem>``, else a hash of the path when the stem is not key-safe. A picture whose
  key another picture (another path) already holds is rejected as ``duplicate_key``.
- **Captions** are the picture's questions in file order (``rows.clean_captions``); a blank or non-string question
  is not a caption (``blank_question`` or ``question_not_utf8`` in ``stats``), so caption ``i`` is the ``i``-th
  usable question, as in the answers table. A picture left without a question is a rejected row with the reason.
- **Rejected rows, one per bad entry** (a bad entry cannot be grouped): an entry that is not an object
  (``bad_record``), a missing, absolute or non-UTF-8 image path (``bad_path``), one that climbs out of the root
  (``path_escapes_root``); they are keyed ``<source>-entry<N>``, N the entry's index in the list.
- **Counted** (``stats``): entries without an integer ``question_id`` (``no_question_id``: kept, with a null id in
  the answers table; the VQA evaluation needs ids, training does not), an id seen before
  (``duplicate_question_id``: the later entry is skipped), answers that are not valid UTF-8 strings
  (``bad_answer``).
- **Answers table** (``answers_table``, ``readers.vqa.ANSWERS_SCHEMA``): one row per caption with the entry's
  ``answer`` list (a lone string is a list of one), and ``answer_type`` and ``question_type`` "" (this form has
  none).

The list is streamed with ijson (``readers.jsonstream.JsonFile``); per picture only its path and its questions are
kept, and the answers go to Arrow arrays (``readers.vqa.AnswerColumns``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from pipeline.readers.common import (
    BAD_RECORD,
    PATH_ERRORS,
    BadRecord,
    Warner,
    check_image_path,
    keyed_rows,
    show,
)
from pipeline.readers.jsonstream import JsonFile
from pipeline.readers.vqa import (
    AnswerColumns,
    Question,
    answer_texts,
    answers_of,
    clean_question,
    question_id,
    question_row,
)
from pipeline.rows import NO_CAPTION, SourceRow
from pipeline.sources import SourceSpec


@dataclass(slots=True)
class _Picture:
    index: int  # of its first entry
    path: str
    questions: list[Question] = field(default_factory=list)
    num_raw: int = 0  # question entries, usable or not
    reason: str | None = None  # why the first unusable question was not a caption
    image_id: object = None  # keys come from the file stem (common.keyed_rows reads these three)
    key_id: str = ""
    duplicate_of: _Picture | None = None


def _answers(value: object, stats: Counter) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return answer_texts(value, stats)
    return answer_texts([value], stats)


def _entries(file: JsonFile, warn: Warner, answers: AnswerColumns | None) -> list[_Picture | BadRecord]:
    """Pictures (at their first entry) and bad entries, in list order."""
    path = file.path
    records: list[_Picture | BadRecord] = []
    by_path: dict[str, _Picture] = {}
    ids: set[int] = set()
    count = 0
    for count, entry in enumerate(file.items("item"), 1):
        index = count - 1
        if not isinstance(entry, dict):
            error = f"expected an object with 'image' and 'question', got {type(entry).__name__}"
            records.append(BadRecord(index, BAD_RECORD, f"{path} entry {index}: {error}"))
            continue
        rel, reason = check_image_path(entry.get("image"))
        if rel is None:
            error = f"{path} entry {index}: {PATH_ERRORS[reason]}: {show(entry.get('image'))}"
            records.append(BadRecord(index, reason, error))
            continue
        qid = question_id(entry.get("question_id"))
        if qid is None:
            warn.stats["no_question_id"] += 1
        elif qid in ids:
            warn("duplicate_question_id", f"{path} entry {index}: question id {qid} is used again; skipped")
            continue
        else:
            ids.add(qid)
        picture = by_path.get(rel)
        if picture is None:
            picture = by_path[rel] = _Picture(index, rel)
            records.append(picture)
        picture.num_raw += 1
        text, reason = clean_question(entry.get("question"), warn.stats)
        if text is None:
            picture.reason = picture.reason or reason
            continue
        question = Question(qid, text)
        if answers is not None:
            question.ref = answers.add(_answers(entry.get("answer"), warn.stats), "", "")
        picture.questions.append(question)
    if not count:
        raise ValueError(f"{path}: expected a non-empty JSON list of {{image, question, question_id}} objects")
    return records


def _rows(
    spec: SourceSpec, stats: Counter | None, answers: AnswerColumns | None
) -> Iterator[tuple[SourceRow, list[Question]]]:
    path = spec.files["annotations"]
    file = JsonFile(path, f"source {spec.name}: annotations")
    records = _entries(file, Warner(Counter() if stats is None else stats), answers)
    questions_of: dict[str, list[Question]] = {}

    def locate(record: _Picture | BadRecord) -> tuple[str, str, str]:
        return f"entry{record.index}", f"{path} entry {record.index}", f"entry {record.index}"

    def image_row(record: _Picture, where: str) -> SourceRow:
        row = question_row(spec, record.key_id, record.path, record.questions)
        if not row.captions:
            row.reject(record.reason or NO_CAPTION, f"{where}: no usable question among {record.num_raw}")
        questions_of[row.key] = record.questions
        return row

    for row in keyed_rows(spec, records, locate, image_row):
        yield row, questions_of.pop(row.key, [])


def read(spec: SourceSpec, stats: Counter | None = None) -> Iterator[SourceRow]:
    """Rows of one ALBEF-form VQA list, one per picture (see the module docstring)."""
    return (row for row, _ in _rows(spec, stats, None))


def answers_table(spec: SourceSpec, stats: Counter | None = None) -> pa.Table:
    """The answers table of one ALBEF-form VQA list (``readers.vqa.ANSWERS_SCHEMA``), keyed by the (key, index) of
    ``read``'s rows."""
    answers = AnswerColumns()
    return answers_of(_rows(spec, stats, answers), answers)
