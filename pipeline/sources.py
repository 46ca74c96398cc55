"""``sources.yaml``: which annotation files and image roots make up a corpus, one entry per source.

```yaml
sources:
  - {name: coco, format: coco, captions: coco/annotations/captions_train2017.json,
     instances: coco/annotations/instances_train2017.json, images: coco/train2017}
  - {name: vg, format: vg, image_data: vg/image_data.json, objects: vg/objects.json,
     regions: vg/region_descriptions.json, images: vg}
  - {name: cc3m, format: json_list, annotations: web/cc3m_train.json, images: web}
  - {name: grit, format: xvlm, annotations: grit/train.jsonl, images: grit/images}
  - {name: sbu, format: img2dataset, images: sbu_shards}
  - {name: coco_test, format: karpathy, annotations: karpathy/dataset_coco.json, splits: [test], images: coco}
  - {name: vqa_val, format: vqa, questions: vqa/v2_OpenEnded_mscoco_val2014_questions.json,
     annotations: vqa/v2_mscoco_val2014_annotations.json, images: coco/val2014}
  - {name: vqa_test, format: vqa_json, annotations: albef/vqa_test.json, images: coco}
  - {name: refcoco_val, format: refexp, annotations: mdetr/finetune_refcoco_val.json, images: coco/train2014}
```

A ``karpathy`` source reads the images of the listed ``splits`` (``train``, ``restval``, ``val``, ``test``; all when
left out) of a Karpathy split file: one source entry, and one ingest, per split to keep them apart.

``vqa`` reads the official VQA v2 questions file and, where the split has one, its annotations file; ``vqa_json``
the ALBEF/BLIP list form of the same questions (also their Visual Genome QA list); both give one row per picture
with its questions as captions, and ``copa ingest`` writes their answers beside the manifest. ``refexp`` reads
MDETR's RefCOCO/RefCOCO+/RefCOCOg JSON files (one row per picture, its referring expressions as captions, each
relevant to its referent's box).

Relative paths are resolved against the folder of the YAML file; URIs (``s3://...``) are kept as they are. The
source ``name`` becomes the key prefix (``coco-000000391895``), so it must be a valid key source. Errors name the
file, the entry and the setting.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import yaml

from manifests.schema import SOURCE_RE

# format -> (required file settings, optional file settings); every format also needs `images`
FORMATS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "coco": (("captions",), ("instances",)),
    "vg": (("image_data", "regions"), ("objects",)),
    "json_list": (("annotations",), ()),
    "xvlm": (("annotations",), ()),
    "img2dataset": ((), ()),
    "karpathy": (("annotations",), ()),
    "vqa": (("questions",), ("annotations",)),
    "vqa_json": (("annotations",), ()),
    "refexp": (("annotations",), ()),
}
KARPATHY_SPLITS = ("train", "restval", "val", "test")


@dataclass(frozen=True)
class SourceSpec:
    """One source of a corpus."""

    name: str  # key prefix, [a-z][a-z0-9_]*
    format: str  # one of FORMATS
    images: str  # image root: folder or URI (for img2dataset, the folder of its tars)
    files: dict[str, str]  # annotation file setting -> resolved path
    splits: tuple[str, ...] = ()  # karpathy: the splits read (all when empty)

    def __hash__(self) -> int:
        return hash((self.name, self.format, self.images, tuple(sorted(self.files.items())), self.splits))

    def to_json(self) -> str:
        return json.dumps(vars(self))

    @classmethod
    def from_json(cls, text: str) -> SourceSpec:
        fields = json.loads(text)
        return cls(**fields | {"splits": tuple(fields["splits"])})  # JSON has lists only


def _resolve(base: str, path: str) -> str:
    if "://" in path or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base, path))


def load_sources(path: str) -> list[SourceSpec]:
    """Parse and validate a sources.yaml; raises ``ValueError`` naming the file, entry and setting."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: sources file not found") from err
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(doc, dict) or not isinstance(doc.get("sources"), list) or not doc["sources"]:
        raise ValueError(f"{path}: expected a top-level 'sources:' list with at least one entry")
    base = os.path.dirname(os.path.abspath(path))
    specs, names = [], set()
    for i, entry in enumerate(doc["sources"]):
        where = f"{path}: sources[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(entry).__name__}")
        name, fmt = entry.get("name"), entry.get("format")
        if not isinstance(name, str) or not SOURCE_RE.fullmatch(name):
            raise ValueError(f"{where}: 'name' must match [a-z][a-z0-9_]* (it prefixes every key), got {name!r}")
        if name in names:
            raise ValueError(f"{where}: source name {name!r} used twice")
        names.add(name)
        if fmt not in FORMATS:
            raise ValueError(f"{where} ({name}): unknown format {fmt!r}; known: {', '.join(FORMATS)}")
        required, optional = FORMATS[fmt]
        allowed = {"name", "format", "images", *required, *optional} | ({"splits"} if fmt == "karpathy" else set())
        unknown = sorted(set(entry) - allowed)
        if unknown:
            raise ValueError(
                f"{where} ({name}): unknown settings {unknown} for format {fmt}; allowed {sorted(allowed)}"
            )
        for setting in ("images", *required):
            if not isinstance(entry.get(setting), str) or not entry[setting]:
                raise ValueError(f"{where} ({name}): format {fmt} needs the setting {setting!r} (a path)")
        files = {k: _resolve(base, entry[k]) for k in (*required, *optional) if entry.get(k)}
        splits = entry.get("splits", [])
        splits = [splits] if isinstance(splits, str) else splits
        if not isinstance(splits, list) or not set(splits) <= set(KARPATHY_SPLITS):
            raise ValueError(
                f"{where} ({name}): 'splits' must list some of {', '.join(KARPATHY_SPLITS)}, got {splits!r}"
            )
        images = _resolve(base, entry["images"])
        specs.append(SourceSpec(name=name, format=fmt, images=images, files=files, splits=tuple(splits)))
    return specs
