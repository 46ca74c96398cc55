"""Writers for the synthetic corpus: COCO 2017, Visual Genome and ALBEF/BLIP json lists, in their real layouts.

Field names and key order follow the files the projects ship: COCO `images`/`annotations`/`categories` with
bbox [x, y, width, height] floats, polygon or uncompressed-RLE segmentations and separate caption/instance id
spaces; VG `image_data.json` (with `coco_id`), `objects.json` (x, y, w, h) and `region_descriptions.json`
(x, y, width, height) in integer pixels; web rows {"image": path relative to the web root, "caption": str or
list of str}. JSON is written compact and ASCII-escaped, so the bytes depend on nothing but the content.

Picture `p` of a corpus is drawn from `numpy.random.default_rng([seed, p, stream])`; `picture_scene` is that
mapping and doubles as the debug hook tests use to look at the objects behind a file.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from pipeline.coco_categories import CATEGORY_BY_NAME, COCO_CATEGORIES
from pipeline.synth.config import CorpusPlan, SynthConfig
from pipeline.synth.draw import Scene, SceneObject, full_mask, make_scene, mask_to_rle, outline_polygon, render
from pipeline.synth.text import CATEGORY_WORDS, Text, Thing, make_caption, make_region

Tick = Callable[[], object]  # advances a progress bar by one image

# Generator streams per picture: pixels must not depend on how many texts are drawn for it, and a VG copy of a
# COCO picture must get the same pixels but its own texts.
_PIXELS, _VG_TEXT, _COCO_TEXT, _WEB_TEXT = 0, 1, 2, 3
_VG_URL = "https://cs.stanford.edu/people/rak248/{folder}/{id}.jpg"
_DATE = "2017-01-01 00:00:00"  # fixed, so the bytes do not depend on the clock
_INFO = {
    "description": "COPA synthetic corpus in COCO 2017 format",
    "url": "",
    "version": "1.0",
    "year": 2017,
    "contributor": "copa synth",
    "date_created": "2017/01/01",
}
_LICENSES = [{"url": "", "id": 1, "name": "Synthetic image, no restrictions"}]


def picture_rng(cfg: SynthConfig, picture: int, stream: int) -> np.random.Generator:
    """The generator of one stream of one picture: independent of every other picture and of generation order."""
    return np.random.default_rng([cfg.seed, picture, stream])


def picture_scene(cfg: SynthConfig, picture: int) -> Scene:
    """The scene of picture `picture`: COCO image k (in file order) is picture k; see CorpusPlan for the rest."""
    rng = picture_rng(cfg, picture, _PIXELS)
    width, height = (int(s) for s in rng.integers(cfg.min_side, cfg.max_side + 1, size=2))
    return make_scene(rng, width, height, cfg.max_objects)


def save_jpeg(pixels: np.ndarray, path: Path, quality: int) -> None:
    """Baseline JPEG at a fixed quality: the same pixels always give the same bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    path.write_bytes(buffer.getvalue())


def dump(path: Path, data: object) -> None:
    # Compact like the real COCO/VG files; ASCII escapes keep lone surrogates writable; NaN stays NaN.
    path.write_text(json.dumps(data, separators=(",", ":")), encoding="ascii")


def _groups(scene: Scene) -> list[list[SceneObject]]:
    """COCO's view of a scene: every object on its own, except crowd members, which form one group."""
    singles = [[o] for o in scene.objects if o.group < 0]
    crowds: dict[int, list[SceneObject]] = {}
    for o in scene.objects:
        if o.group >= 0:
            crowds.setdefault(o.group, []).append(o)
    return singles + list(crowds.values())


def _instance(ann_id: int, image_id: int, group: list[SceneObject], scene: Scene) -> dict:
    """A COCO instance annotation: polygon for one object, uncompressed RLE for a crowd group."""
    if len(group) == 1 and group[0].group < 0:
        obj = group[0]
        segmentation: list | dict = [outline_polygon(obj)]
        area, box, crowd = int(obj.mask.sum()), obj.box, 0
    else:
        mask = np.logical_or.reduce([full_mask(o, scene.width, scene.height) for o in group])
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        box = (int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))
        segmentation, area, crowd = mask_to_rle(mask), int(mask.sum()), 1
    return {
        "segmentation": segmentation,
        "area": float(area),
        "iscrowd": crowd,
        "image_id": image_id,
        "bbox": [float(v) for v in box],
        "category_id": CATEGORY_BY_NAME[group[0].category].id,
        "id": ann_id,
    }


def _truth(text: Text, id_key: str, text_id: int, image_id: int, keys_name: str) -> dict:
    keys = sorted({k for m in text.mentions for k in m.keys})
    mentions = [
        {"word": m.word, "category_id": CATEGORY_BY_NAME[m.category].id, keys_name: list(m.keys)} for m in text.mentions
    ]
    categories = sorted({CATEGORY_BY_NAME[m.category].id for m in text.mentions})
    return {
        id_key: text_id,
        "image_id": image_id,
        keys_name: keys,
        "category_ids": categories,
        "words": [m.word for m in text.mentions],
        "mentions": mentions,
    }


@dataclass
class Coco:
    """The COCO part in memory until it is written (faults may still append bad boxes to `instances`)."""

    images: list[dict] = field(default_factory=list)
    captions: list[dict] = field(default_factory=list)
    instances: list[dict] = field(default_factory=list)
    truth: list[dict] = field(default_factory=list)


def build_coco(cfg: SynthConfig, plan: CorpusPlan, tick: Tick) -> Coco:
    """Write the COCO pictures; keep the annotations in memory (faults may still add boxes)."""
    root = cfg.out / "coco" / "train2017"
    root.mkdir(parents=True, exist_ok=True)
    coco = Coco()
    next_ann, next_caption = 1, 10_000_001  # disjoint id ranges make caption/instance mix-ups visible
    for k, image_id in enumerate(plan.coco_ids):
        scene = picture_scene(cfg, k)
        file_name = f"{image_id:012d}.jpg"
        save_jpeg(render(scene), root / file_name, cfg.jpeg_quality)
        coco.images.append(
            {
                "license": 1,
                "file_name": file_name,
                "coco_url": f"http://images.cocodataset.org/train2017/{file_name}",
                "height": scene.height,
                "width": scene.width,
                "date_captured": _DATE,
                "flickr_url": f"http://farm1.staticflickr.com/synth/{image_id}.jpg",
                "id": image_id,
            }
        )
        things = []
        for group in _groups(scene):
            ann = _instance(next_ann, image_id, group, scene)
            coco.instances.append(ann)
            box = tuple(int(v) for v in ann["bbox"])
            things.append(Thing(next_ann, group[0].category, group[0].colour, box, bool(ann["iscrowd"])))
            next_ann += 1
        rng = picture_rng(cfg, k, _COCO_TEXT)
        for _ in range(cfg.captions_per_coco_image):
            text = make_caption(rng, things, scene.width, scene.height, scene.background.kind, sentence=True)
            coco.captions.append({"image_id": image_id, "id": next_caption, "caption": text.text})
            coco.truth.append(_truth(text, "caption_id", next_caption, image_id, "ann_ids"))
            next_caption += 1
        tick()
    return coco


def write_coco(cfg: SynthConfig, coco: Coco) -> None:
    """captions_train2017.json and instances_train2017.json, sharing `info`, `licenses` and `images`."""
    annotations = cfg.out / "coco" / "annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    head = {"info": _INFO, "licenses": _LICENSES, "images": coco.images}
    categories = [{"supercategory": c.supercategory, "id": c.id, "name": c.name} for c in COCO_CATEGORIES]
    dump(annotations / "captions_train2017.json", {**head, "annotations": coco.captions})
    dump(annotations / "instances_train2017.json", {**head, "annotations": coco.instances, "categories": categories})


@dataclass
class Vg:
    """What writing the VG part returns: region truth and counts."""

    truth: list[dict] = field(default_factory=list)
    num_regions: int = 0
    num_objects: int = 0


def write_vg(cfg: SynthConfig, plan: CorpusPlan, tick: Tick) -> Vg:
    """Write the VG part: pictures, image_data, objects (w/h) and region descriptions (width/height)."""
    image_data, objects, regions, vg = [], [], [], Vg()
    next_object, next_region = 1_000_001, 1
    for j, vg_id in enumerate(plan.vg_ids):
        picture = plan.vg_picture(j)
        scene = picture_scene(cfg, picture)
        folder = "VG_100K" if j % 2 == 0 else "VG_100K_2"  # real VG spreads its images over both folders
        (cfg.out / "vg" / folder).mkdir(parents=True, exist_ok=True)
        save_jpeg(render(scene), cfg.out / "vg" / folder / f"{vg_id}.jpg", cfg.jpeg_quality)
        url = _VG_URL.format(folder=folder, id=vg_id)
        rng = picture_rng(cfg, picture, _VG_TEXT)
        image_data.append(
            {
                "width": scene.width,
                "url": url,
                "height": scene.height,
                "image_id": vg_id,
                "coco_id": plan.coco_ids[j] if j < plan.num_overlap else None,
                "flickr_id": int(rng.integers(10**8, 10**10)) if rng.random() < 0.8 else None,
            }
        )
        things, records = [], []
        for obj in scene.objects:  # VG has no crowd annotations: a crowd group's members are objects of their own
            words = CATEGORY_WORDS[obj.category]
            x, y, w, h = obj.box
            name = words.singular[int(rng.integers(len(words.singular)))]
            records.append(
                {"synsets": [words.synset], "h": h, "object_id": next_object, "names": [name], "w": w, "y": y, "x": x}
            )
            things.append(Thing(next_object, obj.category, obj.colour, obj.box))
            next_object += 1
        objects.append({"image_id": vg_id, "objects": records, "image_url": url})
        image_regions = []
        for _ in range(int(rng.integers(cfg.min_regions_per_vg_image, cfg.max_regions_per_vg_image + 1))):
            text, (x, y, w, h) = make_region(rng, things, scene.width, scene.height)
            image_regions.append(
                {
                    "region_id": next_region,
                    "width": w,
                    "height": h,
                    "image_id": vg_id,
                    "phrase": text.text,
                    "y": y,
                    "x": x,
                }
            )
            vg.truth.append(_truth(text, "region_id", next_region, vg_id, "object_ids"))
            next_region += 1
        regions.append({"regions": image_regions, "id": vg_id})
        tick()
    dump(cfg.out / "vg" / "image_data.json", image_data)
    dump(cfg.out / "vg" / "objects.json", objects)
    dump(cfg.out / "vg" / "region_descriptions.json", regions)
    vg.num_regions, vg.num_objects = next_region - 1, next_object - 1_000_001
    return vg


def web_sample(cfg: SynthConfig, picture: int) -> tuple[np.ndarray, list[str]]:
    """Picture and 1-3 web-style captions (lower case, no full stop, no boxes anywhere)."""
    scene = picture_scene(cfg, picture)
    rng = picture_rng(cfg, picture, _WEB_TEXT)
    things = [Thing(i, o.category, o.colour, o.box) for i, o in enumerate(scene.objects)]
    num = 1 if rng.random() < 0.7 else int(rng.integers(2, 4))
    texts = [make_caption(rng, things, scene.width, scene.height, scene.background.kind, False) for _ in range(num)]
    return render(scene), [t.text for t in texts]


def build_web(cfg: SynthConfig, source: str, first_picture: int, count: int, tick: Tick) -> list[dict]:
    """Write one web source's pictures; CC3M rows get one caption, SBU rows sometimes a list of them."""
    root = cfg.out / "web" / "images" / source
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for m in range(count):
        pixels, captions = web_sample(cfg, first_picture + m)
        rel = f"images/{source}/{m:09d}.jpg"
        save_jpeg(pixels, cfg.out / "web" / rel, cfg.jpeg_quality)
        rows.append({"image": rel, "caption": captions if source == "sbu" and len(captions) > 1 else captions[0]})
        tick()
    return rows


KARPATHY_PICTURES = 1 << 30  # picture numbers of the downstream set: far from every picture of the corpus
KARPATHY_SPLITS = ("train", "train", "train", "val", "test")  # picture k is in split KARPATHY_SPLITS[k % 5]
_KARPATHY_TEXT = 4


def write_karpathy(cfg: SynthConfig, tick: Tick) -> int:
    """A downstream set in Karpathy's format, of pictures the corpus does not have: ``karpathy/dataset_synth.json``
    (five COCO-style captions per image, splits by ``KARPATHY_SPLITS``), the images in ``karpathy/images/`` and one
    ``karpathy/sources_<split>.yaml`` per split (sources ``synth_train``, ``synth_val``, ``synth_test``): each split is
    ingested and packed on its own, apart from the pretraining corpus. Returns the number of captions."""
    root = cfg.out / "karpathy"
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, num_captions = [], 0
    for k in range(cfg.karpathy_images):
        scene = picture_scene(cfg, KARPATHY_PICTURES + k)
        save_jpeg(render(scene), root / "images" / f"{k:06d}.jpg", cfg.jpeg_quality)
        things = [Thing(i, o.category, o.colour, o.box) for i, o in enumerate(scene.objects)]
        rng = picture_rng(cfg, KARPATHY_PICTURES + k, _KARPATHY_TEXT)
        # every reference describes the picture, as the benchmarks' do (no unrelated captions)
        texts = [make_caption(rng, things, scene.width, scene.height, scene.background.kind, True, False).text
                 for _ in range(cfg.captions_per_coco_image)]  # fmt: skip
        sentences = [{"raw": t, "tokens": re.findall(r"[a-z0-9]+", t.lower()), "imgid": k} for t in texts]
        images.append({"filepath": "images", "filename": f"{k:06d}.jpg", "imgid": k,
                       "split": KARPATHY_SPLITS[k % 5], "sentences": sentences})  # fmt: skip
        num_captions += len(texts)
        tick()
    dump(root / "dataset_synth.json", {"images": images, "dataset": "synth"})
    for split in ("train", "val", "test"):
        source = {"name": f"synth_{split}", "format": "karpathy", "annotations": "dataset_synth.json",
                  "splits": [split], "images": "."}  # fmt: skip
        text = f"# Written by `copa synth`: the {split} split of the downstream set; paths relative to this folder.\n"
        (root / f"sources_{split}.yaml").write_text(text + yaml.safe_dump({"sources": [source]}, sort_keys=False))
    return num_captions


def write_sources(out: Path) -> None:
    """sources.yaml: every annotation file and image root, relative to the yaml's folder, for `copa ingest`."""
    sources = [
        {
            "name": "coco",
            "format": "coco",
            "captions": "coco/annotations/captions_train2017.json",
            "instances": "coco/annotations/instances_train2017.json",
            "images": "coco/train2017",
        },
        {
            "name": "vg",
            "format": "vg",
            "image_data": "vg/image_data.json",
            "objects": "vg/objects.json",
            "regions": "vg/region_descriptions.json",
            "images": "vg",
        },
        {"name": "cc3m", "format": "json_list", "annotations": "web/cc3m_train.json", "images": "web"},
        {"name": "sbu", "format": "json_list", "annotations": "web/sbu_train.json", "images": "web"},
    ]
    text = "# Written by `copa synth`; paths are relative to this file's folder.\n"
    (out / "sources.yaml").write_text(text + yaml.safe_dump({"sources": sources}, sort_keys=False))
