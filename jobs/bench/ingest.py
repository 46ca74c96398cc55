"""``copa bench ingest``: every reader's rows/s and peak memory, against a plain conversion of the same files in the
same run.

Generates annotation-only files of real-dataset size (no images): COCO with 120,000 images, 600,000 captions and
860,000 instance boxes (with polygon segmentations, so the instances file is about as big as train2017's);
Visual Genome with 100,000 images, 5,000,000 region descriptions and 2,000,000 objects; an ALBEF-style JSON list of
3,000,000 CC3M entries (one image in 20 with a second caption, one entry in 997 bad in one of eleven ways); an
img2dataset folder of 3,000,000 URLs in 300 shards (Parquet sidecars, 95% stored); an X-VLM file of 100,000 lines
of five boxed phrases each. ``--scale 0.05`` makes
everything 20 times smaller. Then, each in a fresh interpreter so that peak memory is its own:

- ``bare``: the same imports and nothing else (the floor every figure includes);
- ``coco reader`` / ``vg reader``: every row of ``pipeline.readers.coco.read`` / ``vg.read``;
- ``coco json.load`` / ``vg json.load``: ``json.load`` of the same files, all held at once as a naive reader would;
- ``web reader`` / ``img2dataset reader`` / ``xvlm reader``: ``copa ingest`` of the list / the folder / the file
  to a source manifest;
- ``web plain``: ``json.load`` of the list, ``pyarrow.Table.from_pylist`` of the entries Arrow takes, and
  ``pq.write_table``; ``img2dataset plain``: the sidecars read and written as one Parquet file; ``xvlm plain``:
  ``json.loads`` of every line, ``from_pylist`` and ``write_table``. The conversions
  check nothing, group nothing and key nothing: the floor for a reader of those files;
- ``ray 1`` / ``ray 2``: ``copa ingest --engine ray`` with 1 and 2 workers of four JSON lists of a quarter of the
  entries each (one task per list), wall clock with Ray's start-up.

The web figures alternate reader and baseline in ``--rounds`` rounds (3) and report the run of median time.

Peak memory is the child's own high-water mark (``VmHWM`` in ``/proc/self/status``; Linux only). Prints one line
per figure and writes JSON with ``--out``.

    copa bench ingest [--scale 1.0] [--data DIR] [--keep] [--no-baseline] [--no-ray] [--rounds 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from jobs.bench.runner import mb, run_fresh, write_report
from pipeline.coco_categories import COCO_CATEGORIES
from pipeline.lexicon.curated import SYNONYMS as COCO_SYNONYMS  # curated words: the generator's stable vocabulary

FULL = {  # real-dataset sizes (COCO train2017, Visual Genome 1.4 rounded)
    "coco_images": 120_000,
    "coco_captions": 600_000,
    "coco_boxes": 860_000,
    "vg_images": 100_000,
    "vg_regions": 5_000_000,
    "vg_objects": 2_000_000,
    "web_rows": 3_000_000,  # an ALBEF-style CC3M caption list
    "i2d_rows": 3_000_000,  # URLs of an img2dataset folder of CC3M (300 shards of 10,000)
    "xvlm_lines": 100_000,  # an X-VLM region file of Visual Genome's images, 5 boxed phrases per line
}


@dataclass
class BenchIngestConfig:
    scale: float = 1.0  # fraction of the real-dataset sizes in FULL
    data: str | None = None  # folder for the generated files; a temporary one when None
    keep: bool = False  # keep the generated files (always kept when --data is given)
    seed: int = 0  # generator seed
    baseline: bool = True  # also measure json.load of the same files
    ray: bool = True  # also ingest four JSON lists on Ray with 1 and 2 workers
    rounds: int = 3  # alternated runs of each web reader and its plain conversion (medians reported)
    out: str | None = None  # JSON result file

    def __post_init__(self) -> None:
        if not 0 < self.scale <= 4:
            raise ValueError(f"BenchIngestConfig.scale must be in (0, 4], got {self.scale}")
        if self.rounds < 1:
            raise ValueError(f"BenchIngestConfig.rounds must be at least 1, got {self.rounds}")

    def sizes(self) -> dict[str, int]:
        return {name: max(3, round(n * self.scale)) for name, n in FULL.items()}


# --- generators -----------------------------------------------------------------------------------------------

_ADJECTIVES = ("red", "white", "black", "small", "large", "old", "wooden", "green", "blue", "tall", "shiny", "dark")
_PLACES = ("on a street", "in a field", "near the water", "in a kitchen", "on the beach", "in a park", "at night",
           "in a room", "on a table", "next to a building", "under a tree", "in the snow")  # fmt: skip
_VG_WORDS = (
    "tree", "sky", "shirt", "building", "window", "grass", "wall", "cloud", "leaf", "pole", "head", "hand", "water",
    "road", "fence", "hair", "ground", "light", "door", "jacket", "pants", "ear", "rock", "line", "plate", "shadow",
    "wheel", "snow", "street", "sidewalk", "roof", "leg", "tail", "letter", "flower",
)  # fmt: skip
_PREPOSITIONS = ("on", "next to", "behind", "in front of", "near", "under", "beside", "with")


def _writer(path: Path):
    return open(path, "w", encoding="utf-8", buffering=1 << 20)


def generate_coco(folder: Path, sizes: dict[str, int], seed: int) -> dict[str, str]:
    """captions_train2017.json and instances_train2017.json in the real layout (keys in the real order)."""
    rng = np.random.default_rng([seed, 0])
    pick = random.Random(seed)
    n_img, n_cap, n_box = sizes["coco_images"], sizes["coco_captions"], sizes["coco_boxes"]
    ids = rng.choice(max(600_000, 5 * n_img), size=n_img, replace=False) + 1
    widths, heights = rng.integers(320, 641, n_img), rng.integers(240, 641, n_img)
    caps_per = np.full(n_img, n_cap // n_img) + rng.multinomial(n_cap % n_img, np.full(n_img, 1 / n_img))
    boxes_per = rng.multinomial(n_box, np.full(n_img, 1 / n_img))
    box_image = np.repeat(np.arange(n_img), boxes_per)
    cats = np.array([c.id for c in COCO_CATEGORIES])
    weights = np.where(cats == 1, 30.0, 1.0)  # person dominates COCO, as in the real files
    box_cat = rng.choice(cats, size=n_box, p=weights / weights.sum())
    bw, bh = widths[box_image], heights[box_image]
    x, y = rng.random(n_box) * bw * 0.8, rng.random(n_box) * bh * 0.8
    w, h = rng.random(n_box) * (bw - x) * 0.9 + 1, rng.random(n_box) * (bh - y) * 0.9 + 1
    crowd = rng.random(n_box) < 0.01
    names = {c.id: c.name for c in COCO_CATEGORIES}
    polygons = [", ".join(f"{v:.2f}" for v in rng.random(2 * k) * 500) for k in rng.integers(6, 26, 4000)]

    header = '{"info": {"description": "copa bench ingest", "version": "1.0", "year": 2017}, "licenses": [], '
    cap_path, inst_path = folder / "captions_train2017.json", folder / "instances_train2017.json"
    image_records = [
        f'{{"license": 1, "file_name": "{i:012d}.jpg", "coco_url": "http://images.cocodataset.org/train2017/'
        f'{i:012d}.jpg", "height": {hh}, "width": {ww}, "date_captured": "2013-11-14 11:18:45", '
        f'"flickr_url": "http://farm4.staticflickr.com/1/{i}.jpg", "id": {i}}}'
        for i, ww, hh in zip(ids.tolist(), widths.tolist(), heights.tolist(), strict=True)
    ]
    starts = np.concatenate([[0], np.cumsum(boxes_per)])
    with _writer(cap_path) as f:
        f.write(header + '"images": [' + ", ".join(image_records) + '], "annotations": [')
        ann_id, first = 1, True
        for k, image_id in enumerate(ids.tolist()):
            objects = [names[c] for c in box_cat[starts[k] : starts[k + 1]].tolist()] or ["thing"]
            parts = []
            for _ in range(int(caps_per[k])):
                name = pick.choice(objects)
                word = pick.choice((name, *COCO_SYNONYMS.get(name, ())))
                other = pick.choice(objects)
                where = pick.choice(_PLACES)
                text = f"A {pick.choice(_ADJECTIVES)} {word} {pick.choice(_PREPOSITIONS)} a {other} {where}."
                parts.append(f'{{"image_id": {image_id}, "id": {ann_id}, "caption": "{text}"}}')
                ann_id += 1
            if parts:
                f.write(("" if first else ", ") + ", ".join(parts))
                first = False
        f.write("]}")
    order = rng.permutation(n_box)  # the real files are not grouped by image
    with _writer(inst_path) as f:
        f.write(header + '"images": [' + ", ".join(image_records) + '], "annotations": [')
        chunk = []
        for n, j in enumerate(order.tolist()):
            if crowd[j]:
                counts = ", ".join(str(v) for v in rng.integers(0, 400, 40).tolist())
                seg = f'{{"counts": [{counts}], "size": [{bh[j]}, {bw[j]}]}}'
            else:
                seg = f"[[{polygons[j % len(polygons)]}]]"
            chunk.append(
                f'{{"segmentation": {seg}, "area": {w[j] * h[j] * 0.6:.4f}, "iscrowd": {int(crowd[j])}, '
                f'"image_id": {ids[box_image[j]]}, "bbox": [{x[j]:.2f}, {y[j]:.2f}, {w[j]:.2f}, {h[j]:.2f}], '
                f'"category_id": {box_cat[j]}, "id": {n + 1}}}'
            )
            if len(chunk) == 10_000:
                f.write(("" if n < 10_000 else ", ") + ", ".join(chunk))
                chunk = []
        if chunk:
            f.write(("" if n_box <= len(chunk) else ", ") + ", ".join(chunk))
        categories = ", ".join(
            f'{{"supercategory": "{c.supercategory}", "id": {c.id}, "name": "{c.name}"}}' for c in COCO_CATEGORIES
        )
        f.write(f'], "categories": [{categories}]}}')
    return {"captions": str(cap_path), "instances": str(inst_path)}


def generate_vg(folder: Path, sizes: dict[str, int], seed: int) -> dict[str, str]:
    """image_data.json, region_descriptions.json and objects.json in the real layout (VG 1.2/1.4 field names)."""
    rng = np.random.default_rng([seed, 1])
    pick = random.Random(seed + 1)
    n_img, n_reg, n_obj = sizes["vg_images"], sizes["vg_regions"], sizes["vg_objects"]
    ids = np.sort(rng.choice(max(2_500_000, 5 * n_img), size=n_img, replace=False) + 1)
    widths, heights = rng.integers(300, 801, n_img), rng.integers(300, 801, n_img)
    coco = rng.random(n_img) < 0.5
    regions_per = rng.multinomial(n_reg, np.full(n_img, 1 / n_img))
    objects_per = rng.multinomial(n_obj, np.full(n_img, 1 / n_img))
    # Names: COCO words and common VG words, then a long tail, so that the name sets of images rarely repeat.
    common = sorted({w for c, syn in COCO_SYNONYMS.items() for w in (c, *syn)} | set(_VG_WORDS))
    vocabulary = common + [f"{a} {b}" for a in _ADJECTIVES for b in _VG_WORDS] + [f"part{k}" for k in range(3000)]
    p = 1.0 / (np.arange(len(vocabulary)) + 20.0)
    name_draws = rng.choice(len(vocabulary), size=n_obj, p=p / p.sum())

    paths = {name: folder / f"{name}.json" for name in ("image_data", "regions", "objects")}
    paths["regions"] = folder / "region_descriptions.json"
    urls = [
        f"https://cs.stanford.edu/people/rak248/VG_100K{'_2' if k % 3 == 2 else ''}/{i}.jpg"
        for k, i in enumerate(ids.tolist())
    ]
    with _writer(paths["image_data"]) as f:
        records = (
            f'{{"width": {ww}, "url": "{u}", "height": {hh}, "image_id": {i}, '
            f'"coco_id": {rng.integers(1, 600_000) if c else "null"}, "flickr_id": {rng.integers(10**9, 10**10)}}}'
            for i, ww, hh, u, c in zip(
                ids.tolist(), widths.tolist(), heights.tolist(), urls, coco.tolist(), strict=True
            )
        )
        f.write("[" + ", ".join(records) + "]")
    region_id = object_id = 0
    obj_start = np.concatenate([[0], np.cumsum(objects_per)])
    with _writer(paths["regions"]) as fr, _writer(paths["objects"]) as fo:
        fr.write("[")
        fo.write("[")
        for k, image_id in enumerate(ids.tolist()):
            ww, hh = int(widths[k]), int(heights[k])
            names = [vocabulary[v] for v in name_draws[obj_start[k] : obj_start[k + 1]].tolist()]
            m = len(names) + int(regions_per[k])
            u = rng.random((m, 4))
            bx, by = (u[:, 0] * ww * 0.9).astype(int), (u[:, 1] * hh * 0.9).astype(int)
            bw = np.maximum(1, u[:, 2] * (ww - bx) * 0.7).astype(int)
            bh = np.maximum(1, u[:, 3] * (hh - by) * 0.7).astype(int)
            boxes = np.stack([bx, by, bw, bh], axis=1).tolist()
            objects = []
            for (ox, oy, ow, oh), name in zip(boxes[: len(names)], names, strict=True):
                object_id += 1
                synset = name.split()[-1] + ".n.01"
                objects.append(
                    f'{{"synsets": ["{synset}"], "h": {oh}, "object_id": {object_id}, "names": ["{name}"], '
                    f'"w": {ow}, "y": {oy}, "x": {ox}}}'
                )
            fo.write(("" if k == 0 else ", ") + f'{{"image_id": {image_id}, "objects": [{", ".join(objects)}], '
                     f'"image_url": "{urls[k]}"}}')  # fmt: skip
            regions = []
            for rx, ry, rw, rh in boxes[len(names) :]:
                region_id += 1
                first = pick.choice(names) if names and pick.random() < 0.7 else pick.choice(common)
                if pick.random() < 0.5:
                    phrase = (
                        f"{pick.choice(_ADJECTIVES)} {first} {pick.choice(_PREPOSITIONS)} the {pick.choice(common)}"
                    )
                else:
                    phrase = f"the {first} is {pick.choice(_ADJECTIVES)}"
                regions.append(
                    f'{{"region_id": {region_id}, "width": {rw}, "height": {rh}, "image_id": {image_id}, '
                    f'"phrase": "{phrase}", "y": {ry}, "x": {rx}}}'
                )
            fr.write(("" if k == 0 else ", ") + f'{{"regions": [{", ".join(regions)}], "id": {image_id}}}')
        fr.write("]")
        fo.write("]")
    return {name: str(path) for name, path in paths.items()}


# Entries that the web reader must reject or treat with care, one of them every _BAD_EVERY entries, in turn.
_BAD_ENTRIES = (
    '{"image": "/abs/path.jpg", "caption": "an absolute path"}',
    '{"image": "../up/x.jpg", "caption": "a path that climbs out"}',
    '{"image": "web/empty%d.jpg", "caption": "  "}',
    '{"image": "web/null%d.jpg", "caption": null}',
    '{"image": "web/nocaption%d.jpg"}',
    '{"image": "web/surrogate%d.jpg", "caption": "bad \\udcff text"}',
    '"not an object"',
    '{"image": 12345, "caption": "an image that is a number"}',
    '{"image": "web/list%d.jpg", "caption": ["first of two", "", "second of two"]}',
    '{"image": "web/dup_id_%d.jpg", "caption": "an image id another image holds", "image_id": "000000007"}',
    '{"image": "web/spaces%d.jpg", "caption": "  extra   white\\tspace  "}',
)
_BAD_EVERY = 997


def generate_web(folder: Path, rows: int, seed: int, name: str = "web_list.json") -> dict[str, str]:
    """An ALBEF/BLIP-style JSON list (``cc3m_train.json``): ``rows`` entries of ``{"image", "caption"}``; one image in
    20 gets a second entry (caption) further on, and one entry in 997 is one of ``_BAD_ENTRIES``."""
    rng = random.Random(seed)
    path = folder / name
    with _writer(path) as f:
        f.write("[")
        pending: list[int] = []
        for i in range(rows):
            if i:
                f.write(",\n")
            if i % _BAD_EVERY == _BAD_EVERY - 1:
                bad = _BAD_ENTRIES[(i // _BAD_EVERY) % len(_BAD_ENTRIES)]
                f.write(bad % i if "%d" in bad else bad)
                continue
            if pending and rng.random() < 0.05:
                image = pending.pop(rng.randrange(len(pending)))
            else:
                image = i
                if rng.random() < 0.05:
                    pending.append(i)
            caption = f"a {rng.choice(_ADJECTIVES)} {rng.choice(_VG_WORDS)} {rng.choice(_PLACES)}"
            f.write(json.dumps({"image": f"cc3m/train/{image:09d}.jpg", "caption": caption}))
        f.write("]")
    return {"annotations": str(path)}


def generate_xvlm(folder: Path, lines: int, seed: int) -> dict[str, str]:
    """An X-VLM-style JSON Lines file: per line an image, its size, one caption and five boxed phrases (``elems``)
    with attributes, of COCO category words and VG words."""
    rng = random.Random(seed)
    path = folder / "xvlm_regions.jsonl"
    words = [*_VG_WORDS, *(c.name for c in COCO_CATEGORIES)]
    with _writer(path) as f:
        for i in range(lines):
            elems = []
            for _ in range(5):
                x, y = rng.uniform(0, 700), rng.uniform(0, 500)
                box = [round(x, 1), round(y, 1), round(rng.uniform(5, 800 - x), 1), round(rng.uniform(5, 600 - y), 1)]
                elems.append({"caption": rng.choice(words), "bb": box, "attributes": [rng.choice(_ADJECTIVES)]})
            caption = f"a {elems[0]['caption']} and a {elems[1]['caption']} {rng.choice(_PLACES)}"
            line = {"image": f"vg/VG_100K/{i}.jpg", "image_w": 800, "image_h": 600, "caption": caption, "elems": elems}
            f.write(json.dumps(line) + "\n")
    return {"annotations": str(path)}


def generate_img2dataset(folder: Path, rows: int, seed: int, shard_rows: int = 10_000) -> dict[str, str]:
    """An img2dataset output folder of ``rows`` URLs in shards of ``shard_rows``: the Parquet sidecars in the schema
    img2dataset writes (95% of the URLs stored, the rest failed), and tars that hold only the first sample's members
    (the reader reads nothing else from a tar that has a sidecar)."""
    import io
    import tarfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    root = folder / "img2dataset"
    root.mkdir(parents=True, exist_ok=True)
    for shard, start in enumerate(range(0, rows, shard_rows)):
        n = min(shard_rows, rows - start)
        keys = [f"{shard:05d}{i:04d}" for i in range(n)]
        ok = rng.random(n) < 0.95
        words = rng.integers(0, len(_VG_WORDS), n)
        captions = [f"a {_ADJECTIVES[w % len(_ADJECTIVES)]} {_VG_WORDS[w]} {_PLACES[w % len(_PLACES)]}" for w in words]
        table = pa.table({
            "url": [f"http://example.com/{shard}/{i}.jpg" for i in range(n)],
            "caption": captions,
            "key": keys,
            "status": np.where(ok, "success", "failed_to_download").tolist(),
            "error_message": [None if o else "404" for o in ok],
            "width": np.where(ok, 384, 0).astype(np.int32),
            "height": np.where(ok, 288, 0).astype(np.int32),
            "original_width": np.where(ok, 640, 0).astype(np.int32),
            "original_height": np.where(ok, 480, 0).astype(np.int32),
        })  # fmt: skip
        pq.write_table(table, root / f"{shard:05d}.parquet")
        first = keys[int(np.argmax(ok))]
        with tarfile.open(root / f"{shard:05d}.tar", "w") as tar:
            for ext, data in (("jpg", b"\xff\xd8\xff\xd9"), ("json", b"{}"), ("txt", b"a caption")):
                info = tarfile.TarInfo(f"{first}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return {"folder": str(root)}


def _generated(folder: Path, sizes: dict[str, int], seed: int) -> dict[str, dict[str, str]]:
    """The files for these sizes and seed: reused when an earlier run left them in ``folder``, else generated."""
    marker = folder / "bench_ingest_files.json"
    wanted = {"sizes": sizes, "seed": seed}
    if marker.exists():
        made = json.loads(marker.read_text())
        if made["made_for"] == wanted and all(
            Path(p).exists() for group in made["files"].values() for p in group.values()
        ):
            return made["files"]
        marker.unlink()
    files = {
        "coco": generate_coco(folder, sizes, seed),
        "vg": generate_vg(folder, sizes, seed),
        "web": generate_web(folder, sizes["web_rows"], seed),
        "img2dataset": generate_img2dataset(folder, sizes["i2d_rows"], seed),
        "xvlm": generate_xvlm(folder, sizes["xvlm_lines"], seed),
        "web_parts": {  # the same number of entries in four lists, for the Ray figure: one task per list
            f"p{i}": generate_web(folder, sizes["web_rows"] // 4, seed + 1 + i, f"web_part{i}.json")["annotations"]
            for i in range(4)
        },
    }
    marker.write_text(json.dumps({"made_for": wanted, "files": files}))  # written last: the files are complete
    return files


# --- measuring ------------------------------------------------------------------------------------------------

_PRELUDE = """
import json, sys, time
from collections import Counter
import ijson, numpy
from pipeline.readers import coco, vg
from pipeline.sources import SourceSpec
files = json.loads(sys.argv[1])
"""
_PROGRAMS = {
    "bare": "result = {}",
    "coco reader": """
spec = SourceSpec(name="coco", format="coco", images="images", files=files["coco"])
start = time.perf_counter()
stats = Counter()
rows = captions = boxes = 0
for row in coco.read(spec, stats):
    rows += 1; captions += len(row.captions); boxes += len(row.boxes)
result = dict(seconds=time.perf_counter() - start, rows=rows, captions=captions, boxes=boxes, stats=dict(stats))
""",
    "vg reader": """
spec = SourceSpec(name="vg", format="vg", images="images", files=files["vg"])
start = time.perf_counter()
stats = Counter()
rows = captions = boxes = 0
for row in vg.read(spec, stats):
    rows += 1; captions += len(row.captions); boxes += len(row.boxes)
result = dict(seconds=time.perf_counter() - start, rows=rows, captions=captions, boxes=boxes, stats=dict(stats))
""",
    "web plain": """
import pyarrow as pa, pyarrow.parquet as pq
def usable(entry):  # what Arrow takes: an object with a string image and caption, valid UTF-8
    if type(entry) is not dict or type(entry.get("image")) is not str or type(entry.get("caption")) is not str:
        return False
    try:
        entry["caption"].encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
start = time.perf_counter()
with open(files["web"]["annotations"], encoding="utf-8") as f:
    entries = json.load(f)
table = pa.Table.from_pylist([e for e in entries if usable(e)])
pq.write_table(table, files["out"] + "/web_plain.parquet")
result = dict(seconds=time.perf_counter() - start, rows=table.num_rows)
""",
    "img2dataset plain": """
import glob, pyarrow as pa, pyarrow.parquet as pq
start = time.perf_counter()
sidecars = sorted(glob.glob(files["img2dataset"]["folder"] + "/*.parquet"))
table = pa.concat_tables([pq.read_table(path) for path in sidecars])
pq.write_table(table, files["out"] + "/i2d_plain.parquet")
result = dict(seconds=time.perf_counter() - start, rows=table.num_rows)
""",
    "xvlm plain": """
import pyarrow as pa, pyarrow.parquet as pq
start = time.perf_counter()
with open(files["xvlm"]["annotations"], encoding="utf-8") as f:
    lines = [json.loads(line) for line in f if line.strip()]
table = pa.Table.from_pylist(lines)
pq.write_table(table, files["out"] + "/xvlm_plain.parquet")
result = dict(seconds=time.perf_counter() - start, rows=table.num_rows)
""",
    "coco json.load": """
start = time.perf_counter()
held = [json.load(open(path, encoding="utf-8")) for path in files["coco"].values()]
result = dict(seconds=time.perf_counter() - start, rows=len(held[0]["images"]))
""",
    "vg json.load": """
start = time.perf_counter()
held = [json.load(open(path, encoding="utf-8")) for path in files["vg"].values()]
result = dict(seconds=time.perf_counter() - start, rows=len(held[0]))
""",
}


_READER = """
from jobs.ingest import ingest
start = time.perf_counter()
spec = SourceSpec(name="web", format="{format}", images={images}, files={files})
summary = ingest([spec], files["out"] + "/{format}.parquet", progress=False)["web"]
result = dict(seconds=time.perf_counter() - start, rows=summary.images, ok=summary.ok)
"""
_PROGRAMS |= {
    "web reader": _READER.format(format="json_list", images='"images"', files='files["web"]'),
    "img2dataset reader": _READER.format(format="img2dataset", images='files["img2dataset"]["folder"]', files="{}"),
    "xvlm reader": _READER.format(format="xvlm", images='"images"', files='files["xvlm"]'),
}
_RAY = """
from jobs.ingest import main
start = time.perf_counter()
main(["--config", files["config"], "--out", files["out"] + "/ray{workers}.parquet", "--engine", "ray",
      "--workers", "{workers}", "--quiet"])
result = dict(seconds=time.perf_counter() - start)
"""
_PROGRAMS |= {f"ray {workers}": _RAY.format(workers=workers) for workers in (1, 2)}


def measure(name: str, files: dict) -> dict:
    """Run one program in a fresh interpreter; its own peak RSS and what it reports."""
    return run_fresh(_PRELUDE + _PROGRAMS[name], files, f"bench ingest: {name}")


def run(cfg: BenchIngestConfig) -> dict:
    sizes = cfg.sizes()
    folder = Path(cfg.data) if cfg.data else Path(tempfile.mkdtemp(prefix="copa_bench_ingest_"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        files = _generated(folder, sizes, cfg.seed)
        generate_seconds = time.perf_counter() - start
        file_bytes = {f"{src}/{k}": _size_on_disk(p) for src, group in files.items() for k, p in group.items()}
        work = folder / "out"
        work.mkdir(exist_ok=True)
        config = work / "sources.yaml"
        parts = [{"name": name, "format": "json_list", "annotations": path, "images": "images"}
                 for name, path in files["web_parts"].items()]  # fmt: skip
        config.write_text(json.dumps({"sources": parts}))
        args = files | {"out": str(work), "config": str(config)}
        names = ["bare", "coco reader", "vg reader"] + (["coco json.load", "vg json.load"] if cfg.baseline else [])
        results = {name: measure(name, args) for name in names}
        # The web figures pair a reader with its baseline; the pairs alternate in rounds and report medians.
        paired = ["web reader", "web plain", "img2dataset reader", "img2dataset plain", "xvlm reader", "xvlm plain"]
        paired += ["ray 1", "ray 2"] if cfg.ray else []
        rounds: dict[str, list[dict]] = {name: [] for name in paired}
        for r in range(cfg.rounds):
            for name in paired[r % 2 :] + paired[: r % 2]:
                rounds[name].append(measure(name, args))
        results |= {name: _median_run(runs) | {"rounds": runs} for name, runs in rounds.items()}
    finally:
        if not cfg.data and not cfg.keep:
            shutil.rmtree(folder, ignore_errors=True)
        elif cfg.keep:
            print(f"generated files kept in {folder}")
    bare = results["bare"]["peak_rss_bytes"]
    figures = {}
    for src in ("coco", "vg"):
        reader = results[f"{src} reader"]
        fig = {
            "rows": reader["rows"],
            "rows_per_s": reader["rows"] / reader["seconds"],
            "seconds": reader["seconds"],
            "peak_rss_bytes": reader["peak_rss_bytes"],
            "peak_rss_above_bare_bytes": reader["peak_rss_bytes"] - bare,
        }
        if f"{src} json.load" in results:
            base = results[f"{src} json.load"]
            fig |= {
                "json_load_seconds": base["seconds"],
                "json_load_peak_rss_bytes": base["peak_rss_bytes"],
                "time_vs_json_load": reader["seconds"] / base["seconds"],
                "memory_above_bare_vs_json_load": (reader["peak_rss_bytes"] - bare) / (base["peak_rss_bytes"] - bare),
            }
        figures[src] = fig
    for src in ("web", "img2dataset", "xvlm"):
        reader, plain = results[f"{src} reader"], results[f"{src} plain"]
        figures[src] = {
            "rows": reader["rows"],
            "rows_per_s": reader["rows"] / reader["seconds"],
            "seconds": reader["seconds"],
            "peak_rss_bytes": reader["peak_rss_bytes"],
            "plain_seconds": plain["seconds"],
            "plain_peak_rss_bytes": plain["peak_rss_bytes"],
            "time_vs_plain": reader["seconds"] / plain["seconds"],
        }
        figures[src]["time_vs_plain_per_round"] = [
            a["seconds"] / b["seconds"] for a, b in zip(reader["rounds"], plain["rounds"], strict=True)
        ]
    if cfg.ray:
        one, two = results["ray 1"]["seconds"], results["ray 2"]["seconds"]
        figures["ray"] = {"workers_1_seconds": one, "workers_2_seconds": two, "speedup": one / two}
    return {
        "config": asdict(cfg),
        "sizes": sizes,
        "file_bytes": file_bytes,
        "generate_seconds": generate_seconds,
        "bare_peak_rss_bytes": bare,
        "runs": results,
        "figures": figures,
    }


def _median_run(runs: list[dict]) -> dict:
    """The run of median time (its peak memory with it)."""
    return sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]


def _size_on_disk(path: str) -> int:
    return (
        sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
        if os.path.isdir(path)
        else os.path.getsize(path)
    )


def summary_lines(report: dict) -> list[str]:
    bare = report["bare_peak_rss_bytes"]
    lines = [f"bare interpreter with the reader imports: peak RSS {mb(bare)}"]
    what = {
        "web": "JSON list (ALBEF cc3m_train.json)",
        "img2dataset": "img2dataset folder (Parquet sidecars)",
        "xvlm": "X-VLM JSON Lines (5 boxed phrases a line, aligned)",
    }
    for src in what:
        fig = report["figures"][src]
        lines.append(
            f"{what[src]}: copa ingest {fig['rows']:,} rows in {fig['seconds']:.1f} s = {fig['rows_per_s']:,.0f} "
            f"rows/s, peak RSS {mb(fig['peak_rss_bytes'])}; plain conversion to Parquet {fig['plain_seconds']:.1f} s, "
            f"peak RSS {mb(fig['plain_peak_rss_bytes'])}: x{fig['time_vs_plain']:.2f} its time (aim <= x2; rounds "
            + ", ".join(f"x{r:.2f}" for r in fig["time_vs_plain_per_round"])
            + ")"
        )
    if "ray" in report["figures"]:
        fig = report["figures"]["ray"]
        lines.append(
            f"four JSON lists on Ray, one task each (whole command, start-up included): 1 worker "
            f"{fig['workers_1_seconds']:.1f} s, 2 workers {fig['workers_2_seconds']:.1f} s: x{fig['speedup']:.2f}"
        )
    for src, fig in report["figures"].items():
        if src not in ("coco", "vg"):
            continue
        size = sum(v for k, v in report["file_bytes"].items() if k.startswith(src))
        lines.append(
            f"{src} reader: {fig['rows']:,} rows in {fig['seconds']:.1f} s = {fig['rows_per_s']:,.0f} rows/s "
            f"({size / 2**20 / fig['seconds']:.0f} MB/s of JSON); peak RSS {mb(fig['peak_rss_bytes'])} "
            f"({mb(fig['peak_rss_above_bare_bytes'])} above bare)"
        )
        if "json_load_seconds" in fig:
            peak = fig["json_load_peak_rss_bytes"]
            lines.append(
                f"{src} json.load baseline: {fig['json_load_seconds']:.1f} s, peak RSS {mb(peak)} "
                f"({mb(peak - bare)} above bare)"
            )
            lines.append(
                f"{src} reader vs json.load: time x{fig['time_vs_json_load']:.2f}, memory above bare "
                f"x{fig['memory_above_bare_vs_json_load']:.3f}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="copa bench ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of real-dataset size (default 1.0)")
    parser.add_argument(
        "--data", help="folder for the generated files, kept and reused by a later run with the same sizes and seed"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary files and print where they are")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-baseline", action="store_true", help="skip the json.load baseline (it needs GBs)")
    parser.add_argument("--no-ray", action="store_true", help="skip the 1- and 2-worker Ray runs")
    parser.add_argument("--rounds", type=int, default=3, help="alternated runs of the web figures (default 3)")
    parser.add_argument("--out", help="write the full report as JSON here")
    args = parser.parse_args(argv)
    try:
        cfg = BenchIngestConfig(scale=args.scale, data=args.data, keep=args.keep, seed=args.seed,
                                baseline=not args.no_baseline, ray=not args.no_ray, rounds=args.rounds,
                                out=args.out)  # fmt: skip
    except ValueError as err:
        parser.error(str(err))
    sizes = cfg.sizes()
    print("generating " + ", ".join(f"{k}={v:,}" for k, v in sizes.items()), flush=True)
    report = run(cfg)
    sizes_mb = ", ".join(f"{k} {mb(v)}" for k, v in report["file_bytes"].items())
    print(f"generated (or reused) in {report['generate_seconds']:.0f} s: {sizes_mb}")
    for line in summary_lines(report):
        print(line)
    if cfg.out:
        write_report(cfg.out, report)
        print(f"wrote {cfg.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
