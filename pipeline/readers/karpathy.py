"""Karpathy split files: ``dataset_coco.json``, ``dataset_flickr30k.json``, ``dataset_flickr8k.json``.

The files that fix the splits of the standard image-text retrieval and captioning benchmarks (5k test images for
COCO, 1k for Flickr30k, 5 captions each):

    {"dataset": "coco", "images": [{"filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg",
      "split": "test", "cocoid": 391895, "imgid": 0, "sentences": [{"raw": "A man with a red helmet ...",
      "tokens": [...]}, ...]}, ...]}

Flickr files have no ``filepath``. Rules:

- **Splits.** Only images whose ``split`` is one of the source's ``splits`` (sources.yaml; all four when left out)
  are rows of this source; the others are not read into it (declare one source per split to keep them apart:
  ``coco_test`` with ``splits: [test]``, ``coco_train`` with ``splits: [train, restval]``, as ALBEF trains).
- **Rows**: image path ``<filepath>/<filename>`` under the source's image root, captions the ``raw`` of each
  sentence (``rows.clean_captions``), no boxes.
- **Keys** ``<source>-<file stem>`` (``COCO_val2014_000000391895``, ``1000092795``), else a hash of the path; a second
  image with a taken key is rejected as ``duplicate_key``. Bad records (no usable file name) are rejected rows keyed
  ``image<N>``, N their index in ``images``; a record that is not an object has no split, so every source of the
  file rejects it.
- The ALBEF/BLIP forms of the same splits (``coco_karpathy_train.json``: ``{image, caption, image_id}`` rows;
  ``coco_karpathy_test.json``, ``flickr30k_test.json``: ``{image, caption: [...]}``) are one file per split and are
  read by the ``json_list`` format.

The file is streamed with ijson (``dataset_coco.json`` is 150 MB with its tokens, which are not read).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import ijson

from pipeline.readers.common import (
    BAD_RECORD,
    CAPTION_ERRORS,
    PATH_ERRORS,
    BadRecord,
    caption_row,
    check_image_path,
    ijson_backend,
    keyed_rows,
    open_binary,
    show,
)
from pipeline.rows import SourceRow
from pipeline.sources import KARPATHY_SPLITS, SourceSpec


@dataclass(slots=True)
class _Image:
    index: int
    path: str
    captions: list
    image_id: object = None  # not used for keys: the file stem is (see the module docstring)
    key_id: str = ""
    duplicate_of: _Image | None = None


def _records(path: str, splits: set[str], stats: Counter) -> list[_Image | BadRecord]:
    records: list[_Image | BadRecord] = []
    count = 0
    with open_binary(path) as raw:
        try:
            for count, image in enumerate(ijson_backend().items(raw, "images.item", use_float=True), 1):
                index = count - 1
                if not isinstance(image, dict):
                    error = f"{path} images[{index}]: expected an object, got {type(image).__name__}"
                    records.append(BadRecord(index, BAD_RECORD, error))
                    continue
                if image.get("split") not in splits:
                    stats[f"split_{image.get('split')}"] += 1  # another split's image: not a row of this source
                    continue
                filename, filepath = image.get("filename"), image.get("filepath")
                raw_path = f"{filepath}/{filename}" if isinstance(filepath, str) and filepath else filename
                rel, reason = check_image_path(raw_path)
                if rel is None:
                    records.append(
                        BadRecord(index, reason, f"{path} images[{index}]: {PATH_ERRORS[reason]}: {show(raw_path)}")
                    )
                    continue
                sentences = image.get("sentences")
                sentences = sentences if isinstance(sentences, list) else []
                captions = [s.get("raw") if isinstance(s, dict) else None for s in sentences]
                records.append(_Image(index, rel, captions))
        except ijson.JSONError as err:
            raise ValueError(f"{path}: malformed or truncated JSON after {count} images: {err}") from err
    if not count:
        raise ValueError(f"{path}: no 'images' list (expected a Karpathy split file such as dataset_coco.json)")
    return records


def read(spec: SourceSpec, stats: Counter | None = None) -> Iterator[SourceRow]:
    """Rows of the images of ``spec.splits`` (all splits when empty), in file order. ``stats`` counts the images of
    the other splits (``split_<name>``), which are not rows of this source."""
    path = spec.files["annotations"]
    records = _records(path, set(spec.splits or KARPATHY_SPLITS), stats if stats is not None else Counter())

    def locate(record: _Image | BadRecord) -> tuple[str, str, str]:
        return f"image{record.index}", f"{path} images[{record.index}]", f"images[{record.index}]"

    def image_row(record: _Image, where: str) -> SourceRow:
        row, reason = caption_row(spec, record.key_id, record.path, record.captions)
        return row.reject(reason, f"{where}: {CAPTION_ERRORS[reason]}") if reason else row

    return keyed_rows(spec, records, locate, image_row)
