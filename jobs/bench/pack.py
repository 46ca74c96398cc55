"""``copa bench pack``: packing samples/s per worker against a bare decode-resize-encode loop over the same images in
the same run, scaling from 1 to 2 Ray workers, and the seconds and peak memory of planning 4,000,000 rows.

Three figures (DESIGN sections 9 and 11):

- **Per worker.** One process, one core, no Ray: ``ShardPacker.pack`` (fetch, checks, decode, resize, encode, PTA
  labels, tar, Parquet manifest, stats) over generated COCO-sized JPEGs (640x480, quality 90, photo-like content of
  about 150 KB each, 5 captions and 7 boxes per image), against ``bare_decode_resize_encode`` over the same files
  (decode, resize with the same filter to the same size, encode with the same settings, nothing else), and
  ``process_image`` alone to show where the difference goes. Every loop reads each file from disk (warm page
  cache) for each image. Loops alternate in rounds, in a rotating order, so drift hits them alike. A second set of
  1600x1200 JPEGs shows the reduced-size decoding lever: the bare loop runs with and without ``draft``.
- **Pass-through.** 512x384 JPEGs, already at the stored size as img2dataset stores CC3M and SBU, in rows as ingest
  reads such a corpus (one caption, no boxes): the pipeline validates and stores them byte for byte, by their
  structure (the default) and by a 1/8-scale decode; the baseline is a plain tar rewrite of the same members (JPEG,
  caption, JSON), no checks. Each file is then given six kinds of fault, and the figure counts which each check
  rejects (``faults_caught``).
- **Against img2dataset**, with ``--vs-img2dataset PYTHON`` (an interpreter whose environment has img2dataset): both
  tools on the same 640x480 files, alternated, per worker-second, whole command and per CPU-second
  (``jobs/bench/vs_img2dataset.py``). A run, not a published figure: hardware, image sizes and settings match.
- **Scaling.** The whole Ray job (``jobs.pack.main``, wall clock, nothing excluded) with 1 and with 2 workers on
  the same source (the 640x480 files, each under several keys) into fresh folders, and on a 2-row source to show
  the fixed cost of starting and stopping Ray. On a 2-core machine the driver and Ray's own processes share the
  cores with the 2 workers, so x2 is out of reach.
- **Planning.** ``jobs.pack.source_key_hashes`` (the ``key`` column read and hashed batch by batch) and
  ``plan_shards`` of a 4,000,000-row source manifest, exactly what ``copa pack`` runs, in a fresh interpreter so
  that its peak memory (``VmHWM``) is its own; a second interpreter with the same imports and nothing else gives
  the floor.

    copa bench pack [--quick] [--no-ray] [--out bench_out/pack.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import PIL
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFilter, features

from jobs.bench.runner import mb, run_fresh, write_report
from pipeline.coco_categories import COCO_CATEGORIES
from pipeline.images import (
    DECODE_ERRORS,
    RESAMPLE_FILTERS,
    ImageConfig,
    bare_decode_resize_encode,
    jpeg_structure_error,
    process_image,
    stored_size,
)
from pipeline.pack import PackConfig, ShardPacker
from pipeline.rows import SOURCE_SCHEMA, SourceRow, read_source_table, write_source_table

OVERHEAD_AIM = 0.15  # the pipeline may cost at most 15% more than the bare loop


@dataclass
class BenchPackConfig:
    num_images: int = 200  # COCO-sized JPEGs (640x480) for the per-worker figure
    num_large: int = 40  # 1600x1200 JPEGs, where reduced-size decoding pays
    num_sized: int = 200  # 512x384 JPEGs, already at the stored size (as img2dataset stores CC3M and SBU)
    rounds: int = 3  # alternating rounds of every per-worker loop
    ray_rows: int = 800  # source rows of the 1- and 2-worker Ray runs (the COCO-sized files, reused)
    ray_shards: int = 8  # shards of those runs: enough that both workers stay busy
    plan_rows: int = 4_000_000  # keys planned into shards
    samples_per_shard: int = 5000  # shard size of the planning figure
    max_short_side: int = 384  # stored image size, as in the pack config
    resample: str = ImageConfig.resample  # resize filter of the pipeline and of the bare loop
    seed: int = 0  # generator seed
    ray: bool = True  # run the Ray scaling figure
    vs_img2dataset: str | None = None  # interpreter of an environment with img2dataset: the side-by-side figures
    data: str | None = None  # folder for the generated files; a temporary one when None
    out: str = "bench_out/pack.json"  # JSON result file

    def __post_init__(self) -> None:
        positive = (
            "num_images",
            "num_large",
            "num_sized",
            "rounds",
            "ray_rows",
            "ray_shards",
            "plan_rows",
            "samples_per_shard",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"BenchPackConfig.{name} must be at least 1, got {getattr(self, name)}")
        if self.ray_rows < 2 * self.ray_shards:
            raise ValueError(f"BenchPackConfig.ray_rows ({self.ray_rows}) must be at least 2 per shard")
        ImageConfig(max_short_side=self.max_short_side, resample=self.resample)  # validates both


def quick(**overrides) -> BenchPackConfig:
    """Small sizes for the test and a fast look; the figures are noisy."""
    sizes = dict(num_images=16, num_large=4, num_sized=16, rounds=2, ray_rows=32, ray_shards=4, plan_rows=200_000)
    return BenchPackConfig(**(sizes | overrides))


# --- generated images and source manifests -----------------------------------------------------------------------


def _field(rng: np.random.Generator, width: int, height: int, cells: int, channels: int) -> np.ndarray:
    """Smooth random field of unit scale with about ``cells`` features across, as float32 [H, W, C] or [H, W]."""
    small = rng.standard_normal((max(2, cells * height // width), cells, channels), dtype=np.float32)
    small = np.clip(small * 40 + 128, 0, 255).astype(np.uint8)
    up = Image.fromarray(small if channels == 3 else small[:, :, 0]).resize((width, height), Image.Resampling.BICUBIC)
    return (np.asarray(up, np.float32) - 128) / 40


def photo_like(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """uint8 [H, W, 3] that compresses like a photo: luminance texture at several scales, milder colour, flat shapes
    with soft edges, and grain. A 640x480 one is about 150 KB as a quality-90 JPEG, as COCO's are on average."""
    luma = sum(amp * _field(rng, width, height, cells, 1) for cells, amp in ((3, 50), (12, 28), (48, 18), (160, 20)))
    chroma = 25 * _field(rng, width, height, 4, 3) + 8 * _field(rng, width, height, 24, 3)
    pixels = luma[:, :, None] + chroma + rng.uniform(70, 180, 3).astype(np.float32)
    picture = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for _ in range(int(rng.integers(6, 14))):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(0.05, 0.4) * width, rng.uniform(0.05, 0.4) * height
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x0 + w, y0 + h], fill=color)
    grain = rng.integers(-24, 25, (height, width, 1), dtype=np.int16)
    return np.clip(np.asarray(picture.filter(ImageFilter.BoxBlur(1)), np.int16) + grain, 0, 255).astype(np.uint8)


_WORDS = [c.name for c in COCO_CATEGORIES]


def source_row(rng: np.random.Generator, key: str, root: Path, name: str, width: int, height: int) -> SourceRow:
    """A COCO-like row: 5 captions, 7 boxes in pixels, each caption naming 1-3 of them (so PTA labels are made)."""
    corners = np.sort(rng.random((7, 2, 2)), axis=1) * [width, height]  # [box, (lo, hi), (x, y)]
    boxes = [[float(b[0, 0]), float(b[0, 1]), float(b[1, 0]) + 1, float(b[1, 1]) + 1] for b in corners]
    boxes = [[min(v, lim) for v, lim in zip(b, (width, height, width, height), strict=True)] for b in boxes]
    labels = [_WORDS[i] for i in rng.integers(0, len(_WORDS), 7)]
    relevant, captions = [], []
    for _ in range(5):
        chosen = sorted(rng.choice(7, size=int(rng.integers(1, 4)), replace=False).tolist())
        relevant.append({"boxes": chosen, "words": [labels[b] for b in chosen]})
        captions.append("A photo of a " + " and a ".join(labels[b] for b in chosen) + " in a room.")
    source, image_id = key.split("-", 1)
    return SourceRow(
        key=key,
        source=source,
        image_id=image_id,
        image_root=str(root),
        image_path=name,
        width=width,
        height=height,
        captions=captions,
        boxes=boxes,
        box_labels=labels,
        box_crowd=[False] * 7,
        relevant=relevant,
    )


def web_row(key: str, root: Path, name: str) -> SourceRow:
    """A row as ingest reads an img2dataset corpus: one caption, no boxes, no annotated size."""
    source, image_id = key.split("-", 1)
    caption = f"a picture number {image_id} taken from the web"
    return SourceRow(key=key, source=source, image_id=image_id, image_root=str(root), image_path=name,
                     captions=[caption], relevant=[{"boxes": [], "words": []}])  # fmt: skip


def generate(folder: Path, cfg: BenchPackConfig) -> dict:
    """The JPEG sets and their source manifests: ``coco.parquet`` (640x480), ``large.parquet`` (1600x1200),
    ``ray.parquet`` (the 640x480 files again under other keys, ``ray_rows`` rows) and ``tiny.parquet`` (2 rows)."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    made: dict = {"sets": {}}
    rows: dict[str, list[SourceRow]] = {}
    for name, source, (width, height), count in (
        ("coco", "coco", (640, 480), cfg.num_images),
        ("large", "web", (1600, 1200), cfg.num_large),
        ("sized", "cc3m", (512, 384), cfg.num_sized),
    ):
        rows[name], total = [], 0
        for i in range(count):
            file = f"{name}_{i:06d}.jpg"
            with open(images / file, "wb") as f:
                Image.fromarray(photo_like(rng, width, height)).save(f, format="JPEG", quality=90)
                total += f.tell()
            key = f"{source}-{i:012d}"
            rows[name].append(
                web_row(key, images, file) if name == "sized" else source_row(rng, key, images, file, width, height)
            )
        made["sets"][name] = {"images": count, "width": width, "height": height, "mean_jpeg_bytes": total / count}
    coco = rows["coco"]
    rows["ray"] = [
        SourceRow(**(asdict(coco[i % len(coco)]) | {"key": f"coco-{i:012d}", "image_id": f"{i:012d}"}))
        for i in range(cfg.ray_rows)
    ]
    rows["tiny"] = rows["ray"][:2]
    for name, table in rows.items():
        made[name] = str(folder / f"{name}.parquet")
        write_source_table(table, made[name])
    return made


# --- per worker ----------------------------------------------------------------------------------------------------


def _tar_rewrite(rows: list[dict], path: Path) -> None:
    """The plain rewrite of the same members a sample of an img2dataset tar has: the JPEG bytes, its caption and a
    small JSON, into one tar; no check of anything."""
    with tarfile.open(path, "w") as tar:
        for row in rows:
            jpeg = Path(f"{row['image_root']}/{row['image_path']}").read_bytes()
            meta = json.dumps({"key": row["key"], "caption": row["captions"][0]}).encode()
            for ext, data in (("jpg", jpeg), ("txt", row["captions"][0].encode()), ("json", meta)):
                info = tarfile.TarInfo(f"{row['key']}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _loops(rows: list[dict], cfg: ImageConfig, work: Path, kind: str) -> dict:
    """name -> a function that runs one loop over all ``rows`` and returns how many images it produced."""
    paths = [f"{r['image_root']}/{r['image_path']}" for r in rows]
    config = PackConfig(samples_per_shard=len(rows), image=cfg)
    count = {"runs": 0}

    def pack(packing: PackConfig = config) -> int:
        count["runs"] += 1
        out = work / f"pack_{count['runs']}"  # a fresh folder each time, as a new shard would be
        out.mkdir(parents=True)
        stats = ShardPacker(str(out), packing).pack(0, rows)
        if stats.num_ok != len(rows):  # a rejected row would make the pipeline look fast
            raise RuntimeError(f"bench pack: the packer rejected rows: {stats.rejected}")
        return stats.num_ok

    def stage() -> int:
        for path in paths:
            process_image(Path(path).read_bytes(), cfg)
        return len(paths)

    def bare(draft: bool) -> int:
        for path in paths:
            bare_decode_resize_encode(Path(path).read_bytes(), cfg, draft=draft)
        return len(paths)

    def rewrite() -> int:
        count["runs"] += 1
        work.mkdir(parents=True, exist_ok=True)
        _tar_rewrite(rows, work / f"rewrite_{count['runs']}.tar")
        return len(rows)

    if kind == "sized":  # nothing to resize: the pipeline validates and passes through; a tar rewrite is the floor
        decoding = PackConfig(samples_per_shard=len(rows), image=replace(cfg, pass_through_check="decode"))
        return {
            "pack": pack,
            "pack_decode_check": lambda: pack(decoding),
            "process_image": stage,
            "tar_rewrite": rewrite,
        }
    loops = {"pack": pack, "process_image": stage, "bare": lambda: bare(False)}
    if kind == "large":  # at 640x480 -> 512x384 there is nothing to draft: the loop would repeat "bare"
        loops["bare_draft"] = lambda: bare(True)
    return loops


def per_worker(rows: list[dict], cfg: ImageConfig, rounds: int, work: Path, kind: str) -> dict:
    """Rates of each loop over the same images, alternated in ``rounds`` after one warm-up pass."""
    loops = _loops(rows, cfg, work, kind)
    warm_rows = rows[: min(4, len(rows))]
    for fn in _loops(warm_rows, cfg, work / "warm", kind).values():
        fn()
    names = list(loops)
    seconds = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order each round
            start = time.perf_counter()
            done = loops[name]()
            seconds[name].append(time.perf_counter() - start)
            assert done == len(rows)
        shutil.rmtree(work, ignore_errors=True)  # the shards written this round (outside the timings)
    rates = {name: len(rows) * rounds / sum(s) for name, s in seconds.items()}
    per_round = [{n: seconds[n][r] for n in names} for r in range(rounds)]
    fig = {"images": len(rows), "rounds": rounds, "seconds": seconds, "rates": rates}
    if kind == "sized":
        if not all(process_image(Path(f"{r['image_root']}/{r['image_path']}").read_bytes(), cfg).passed_through
                   for r in rows):  # fmt: skip
            raise RuntimeError("bench pack: the already-sized JPEGs were not all passed through")
        fig["pack_vs_tar_rewrite"] = rates["pack"] / rates["tar_rewrite"]
        fig["pack_vs_tar_rewrite_per_round"] = [s["tar_rewrite"] / s["pack"] for s in per_round]
        fig["pack_decode_check_vs_tar_rewrite"] = rates["pack_decode_check"] / rates["tar_rewrite"]
        fig["faults_caught"] = faults_caught([Path(f"{r['image_root']}/{r['image_path']}").read_bytes() for r in rows])
        return fig
    fig |= {
        "cost_vs_bare": rates["bare"] / rates["pack"],
        "cost_vs_bare_per_round": [s["pack"] / s["bare"] for s in per_round],
        "process_image_cost_vs_bare": rates["bare"] / rates["process_image"],
    }
    if kind == "large":
        fig["cost_vs_bare_draft"] = rates["bare_draft"] / rates["pack"]
        fig["cost_vs_bare_draft_per_round"] = [s["pack"] / s["bare_draft"] for s in per_round]
    return fig


def _decodes(data: bytes, scale: int) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as im:
            if scale > 1:
                im.draft("RGB", (-(-im.width // scale), -(-im.height // scale)))
            im.load()
        return True
    except DECODE_ERRORS:
        return False


def faults_caught(files: list[bytes], seed: int = 0) -> dict:
    """How many of ``files``, each given one fault of each kind, the structure walk, a 1/8-scale decode and a full
    decode reject: what validating a pass-through JPEG by its structure gives up against decoding it."""
    rng = np.random.default_rng(seed)
    checks = {
        "structure": lambda data: jpeg_structure_error(data) is None,
        "decode_1_8": lambda data: _decodes(data, 8),
        "decode_full": lambda data: _decodes(data, 1),
    }
    caught: dict[str, dict[str, int]] = {}
    for data in files:
        sos = data.index(b"\xff\xda")
        scan = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")  # where the entropy-coded data starts
        cut, lost, flip = (int(v) for v in rng.integers(scan, len(data) - 120, 3))
        header = int(rng.integers(20, scan))
        faults = {
            "cut_short": data[:cut],
            "cut_short_eoi_put_back": data[:cut] + b"\xff\xd9",
            "100_scan_bytes_lost": data[:lost] + data[lost + 100 :],
            "16_scan_bytes_zeroed": data[:lost] + bytes(16) + data[lost + 16 :],
            "one_scan_byte_changed": data[:flip] + bytes([data[flip] ^ 0x5A]) + data[flip + 1 :],
            "one_header_byte_changed": data[:header] + bytes([data[header] ^ 0x5A]) + data[header + 1 :],
        }
        for fault, bad in faults.items():
            row = caught.setdefault(fault, dict.fromkeys(checks, 0))
            for name, passes in checks.items():
                row[name] += not passes(bad)
    return {"files": len(files), "caught": caught}


# --- scaling with Ray ----------------------------------------------------------------------------------------------


def ray_run(source: str, out: Path, workers: int, config_file: str) -> tuple[float, dict]:
    """Wall-clock seconds of one ``copa pack`` run (its console output swallowed) and its ``dataset.json``."""
    from jobs.pack import main as pack_main  # imported here: Ray is only needed for this figure

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        rc = pack_main(
            ["--source", source, "--out", str(out), "--config", config_file, "--workers", str(workers), "--quiet"]
        )
    seconds = time.perf_counter() - start
    if rc != 0:
        raise RuntimeError(f"bench pack: copa pack with {workers} workers exited with {rc}")
    info = json.loads((out / "dataset.json").read_text())
    if info["num_rejected"]:
        raise RuntimeError(f"bench pack: copa pack rejected {info['num_rejected']} rows")
    return seconds, info


def scaling(made: dict, cfg: BenchPackConfig, image: ImageConfig, work: Path) -> dict:
    samples_per_shard = -(-cfg.ray_rows // cfg.ray_shards)
    config_file = work / "pack_config.json"  # JSON is YAML: the job reads it with --config
    work.mkdir(parents=True, exist_ok=True)
    config_file.write_text(json.dumps(PackConfig(samples_per_shard=samples_per_shard, image=image).to_dict()))
    fixed, _ = ray_run(made["tiny"], work / "tiny", 1, str(config_file))
    fig: dict = {"cpus": os.cpu_count(), "rows": cfg.ray_rows, "startup_seconds": fixed}
    for workers in (1, 2):
        seconds, info = ray_run(made["ray"], work / f"workers_{workers}", workers, str(config_file))
        fig["shards"] = info["num_shards"]
        fig[f"workers_{workers}"] = {
            "seconds": seconds,
            "samples_per_s": cfg.ray_rows / seconds,
            # None when noise made the run no longer than the 2-row one: there is nothing left to divide by
            "samples_per_s_after_startup": cfg.ray_rows / (seconds - fixed) if seconds > fixed else None,
        }
    one, two = fig["workers_1"]["samples_per_s_after_startup"], fig["workers_2"]["samples_per_s_after_startup"]
    fig["speedup"] = fig["workers_2"]["samples_per_s"] / fig["workers_1"]["samples_per_s"]
    fig["speedup_after_startup"] = two / one if one and two else None
    return fig


# --- planning ------------------------------------------------------------------------------------------------------

_PRELUDE = """
import time
import numpy as np
from jobs.pack import source_key_hashes
from pipeline.pack import plan_shards
args = json.loads(sys.argv[1])
"""
_PROGRAMS = {
    "bare": "result = {}",
    "plan": """
start = time.perf_counter()
hashes = source_key_hashes(args["source"])  # what copa pack runs: key column batch by batch, hashed
hashed = time.perf_counter()
plan = plan_shards(hashes, args["samples_per_shard"])
planned = time.perf_counter()
result = dict(read_and_hash_seconds=hashed - start, plan_seconds=planned - hashed, rows=plan.num_rows,
              shards=plan.num_shards, min_shard=min(plan.sizes), max_shard=max(plan.sizes))
""",
}


def _repeat(value: object, type_: pa.DataType, n: int) -> pa.Array:
    """``value`` ``n`` times; lists through their offsets (``pa.repeat`` of a list of structs takes seconds)."""
    if not pa.types.is_list(type_):
        return pa.repeat(pa.scalar(value, type_), n)
    items = pa.array(value, type_.value_type)
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * len(items))
    return pa.ListArray.from_arrays(offsets, items.take(np.tile(np.arange(len(items)), n)), type=type_)


def write_key_table(path: str, num_rows: int) -> None:
    """A source manifest of ``num_rows`` keys mixed like COCO + Visual Genome + CC3M. Only ``key`` is real; the
    other columns hold one placeholder value each (planning reads the key column alone)."""
    n_coco, n_vg = min(118_287, num_rows // 3), min(108_077, num_rows // 3)
    keys = [f"coco-{i:012d}" for i in range(n_coco)] + [f"vg-{i + 1}" for i in range(n_vg)]
    keys += [f"cc3m-{i:09d}" for i in range(num_rows - n_coco - n_vg)]
    placeholder = asdict(
        SourceRow(key="x-0", source="x", image_id="0", image_root="images", image_path="0.jpg", captions=["a photo"])
    )
    columns = {"key": pa.array(keys, pa.string())}
    del keys
    for f in SOURCE_SCHEMA:
        if f.name != "key":
            columns[f.name] = _repeat(placeholder[f.name], f.type, num_rows)
    pq.write_table(pa.table(columns, schema=SOURCE_SCHEMA), path, compression="zstd")


def _child(name: str, args: dict) -> dict:
    return run_fresh(_PRELUDE + _PROGRAMS[name], args, f"bench pack: {name}")


def planning(cfg: BenchPackConfig, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    source = str(work / "keys.parquet")
    start = time.perf_counter()
    write_key_table(source, cfg.plan_rows)
    generate_seconds = time.perf_counter() - start
    args = {"source": source, "samples_per_shard": cfg.samples_per_shard}
    bare, plan = _child("bare", args), _child("plan", args)
    plan["seconds"] = plan["read_and_hash_seconds"] + plan["plan_seconds"]
    return plan | {
        "generate_seconds": generate_seconds,
        "parquet_bytes": os.path.getsize(source),
        "samples_per_shard": cfg.samples_per_shard,
        "bare_peak_rss_bytes": bare["peak_rss_bytes"],
        "peak_rss_above_bare_bytes": plan["peak_rss_bytes"] - bare["peak_rss_bytes"],
    }


# --- the report ----------------------------------------------------------------------------------------------------


def run(cfg: BenchPackConfig) -> dict:
    folder = Path(cfg.data) if cfg.data else Path(tempfile.mkdtemp(prefix="copa_bench_pack_"))
    image = ImageConfig(max_short_side=cfg.max_short_side, resample=cfg.resample)
    report: dict = {
        "config": asdict(cfg),
        "machine": {
            "cpus": os.cpu_count(),
            "pillow": PIL.__version__,
            "libjpeg_turbo": bool(features.check_feature("libjpeg_turbo")),
        },
    }
    started = time.perf_counter()
    try:
        for part in ("work", "ray", "plan"):  # left by an earlier run with --data: never resume into it
            shutil.rmtree(folder / part, ignore_errors=True)
        start = time.perf_counter()
        made = generate(folder / "data", cfg)
        report["generated"] = made["sets"] | {"seconds": time.perf_counter() - start}
        per = {}
        for name in ("coco", "large", "sized"):
            rows = read_source_table(made[name]).to_pylist()  # the dicts a Ray worker hands to ShardPacker
            per[name] = per_worker(rows, image, cfg.rounds, folder / "work" / name, kind=name)
            per[name]["stored_size"] = stored_size(
                made["sets"][name]["width"], made["sets"][name]["height"], cfg.max_short_side
            )
        shutil.rmtree(folder / "work", ignore_errors=True)
        report["per_worker"] = per
        if cfg.vs_img2dataset:
            from jobs.bench.vs_img2dataset import side_by_side

            rows = read_source_table(made["coco"]).to_pylist()
            report["vs_img2dataset"] = side_by_side(
                cfg.vs_img2dataset, rows, made["coco"], image, cfg.rounds, folder / "vs_img2dataset"
            )
        if cfg.ray:
            report["scaling"] = scaling(made, cfg, image, folder / "ray")
        report["planning"] = planning(cfg, folder / "plan")
        report["seconds"] = time.perf_counter() - started
    finally:
        if not cfg.data:
            shutil.rmtree(folder, ignore_errors=True)
    return report


def _num(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def summary_lines(report: dict) -> list[str]:
    per, gen = report["per_worker"], report["generated"]
    resample = report["config"]["resample"]
    lines = []
    for name in ("coco", "large", "sized"):
        fig, rates, sizes = per[name], per[name]["rates"], gen[name]
        what = (
            f"per worker, {sizes['width']}x{sizes['height']} ({sizes['mean_jpeg_bytes'] / 1e3:.0f} KB) -> "
            f"{fig['stored_size'][0]}x{fig['stored_size'][1]} {resample}, {fig['images']} images x "
            f"{fig['rounds']} rounds"
        )
        if name == "coco":
            overhead = fig["cost_vs_bare"] - 1
            lines.append(
                f"{what}: pack {rates['pack']:.1f}/s, bare decode-resize-encode {rates['bare']:.1f}/s: pack costs "
                f"x{fig['cost_vs_bare']:.2f} ({overhead:+.0%}; aim <= +{OVERHEAD_AIM:.0%}); process_image alone "
                f"{rates['process_image']:.1f}/s (x{fig['process_image_cost_vs_bare']:.2f})"
            )
        elif name == "sized":
            lines.append(
                f"{what}, all passed through: pack {rates['pack']:.1f}/s, a plain tar rewrite of the same members "
                f"{rates['tar_rewrite']:.1f}/s: pack = x{fig['pack_vs_tar_rewrite']:.2f} the rewrite (aim >= x0.8); "
                f"process_image alone {rates['process_image']:.1f}/s; with pass_through_check=decode pack "
                f"{rates['pack_decode_check']:.1f}/s (x{fig['pack_decode_check_vs_tar_rewrite']:.2f})"
            )
            faults = fig["faults_caught"]
            lines.append(
                f"faults caught in {faults['files']} passed-through JPEGs (structure / 1/8 decode / full decode): "
                + "; ".join(
                    f"{fault} {'/'.join(str(v) for v in row.values())}" for fault, row in faults["caught"].items()
                )
            )
        else:
            lines.append(
                f"{what}: pack {rates['pack']:.1f}/s, bare loop {rates['bare']:.1f}/s decoding at full size (pack "
                f"x{rates['pack'] / rates['bare']:.2f} its rate), {rates['bare_draft']:.1f}/s with draft: pack costs "
                f"x{fig['cost_vs_bare_draft']:.2f} ({fig['cost_vs_bare_draft'] - 1:+.0%}); process_image alone "
                f"{rates['process_image']:.1f}/s"
            )
    if "vs_img2dataset" in report:
        from jobs.bench.vs_img2dataset import summary_lines as side_by_side_lines

        lines += side_by_side_lines(report["vs_img2dataset"])
    else:
        lines.append("against img2dataset: run with --vs-img2dataset PYTHON (an interpreter that has img2dataset)")
    if "scaling" in report:
        sc = report["scaling"]
        lines.append(f"ray start-up and shutdown (copa pack of a 2-row source): {sc['startup_seconds']:.1f} s")
        for workers in (1, 2):
            fig = sc[f"workers_{workers}"]
            net = fig["samples_per_s_after_startup"]
            line = (
                f"ray {workers} worker{'s' if workers > 1 else ''}: {sc['rows']} samples in {sc['shards']} shards in "
                f"{fig['seconds']:.1f} s = {fig['samples_per_s']:.1f}/s ({_num(net, '.1f')}/s after start-up)"
            )
            if workers == 2:
                line += (
                    f"; x{sc['speedup']:.2f} vs 1 worker (x{_num(sc['speedup_after_startup'], '.2f')} after start-up) "
                    f"on this {sc['cpus']}-core machine"
                )
            lines.append(line)
    pl = report["planning"]
    peak, above = mb(pl["peak_rss_bytes"]), mb(pl["peak_rss_above_bare_bytes"])
    lines.append(
        f"plan {pl['rows']:,} rows -> {pl['shards']} shard{'s' * (pl['shards'] != 1)} of {pl['samples_per_shard']}: "
        f"read and hash the keys {pl['read_and_hash_seconds']:.1f} s + plan {pl['plan_seconds']:.1f} s = "
        f"{pl['seconds']:.1f} s; peak RSS {peak}, {above} above bare"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="copa bench pack", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a fast, noisy look (and the test)")
    parser.add_argument("--images", type=int, help="640x480 JPEGs for the per-worker figure (default 200)")
    parser.add_argument("--large", type=int, help="1600x1200 JPEGs for the draft figure (default 40)")
    parser.add_argument("--sized", type=int, help="512x384 JPEGs for the pass-through figure (default 200)")
    parser.add_argument("--rounds", type=int, help="alternating rounds of the per-worker loops (default 3)")
    parser.add_argument("--ray-rows", type=int, help="source rows of the 1- and 2-worker Ray runs (default 800)")
    parser.add_argument("--plan-rows", type=int, help="keys planned into shards (default 4,000,000)")
    parser.add_argument("--max-short-side", type=int, default=384, help="stored image size (default: %(default)s)")
    parser.add_argument(
        "--resample",
        choices=sorted(RESAMPLE_FILTERS),
        default=ImageConfig.resample,
        help="resize filter of the pipeline and the bare loop (default: %(default)s)",
    )
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray scaling figure")
    parser.add_argument(
        "--vs-img2dataset",
        metavar="PYTHON",
        help="interpreter of an environment where img2dataset is installed: run both tools side by side on the "
        "640x480 files (alternated, --rounds times) and report the ratios",
    )
    parser.add_argument("--data", help="keep the generated files and Ray outputs here (default: a temp folder)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--out", default="bench_out/pack.json", help="JSON results (default: %(default)s)")
    args = parser.parse_args(argv)
    flags = {
        "num_images": args.images,
        "num_large": args.large,
        "num_sized": args.sized,
        "rounds": args.rounds,
        "ray_rows": args.ray_rows,
        "plan_rows": args.plan_rows,
    }
    settings = {k: v for k, v in flags.items() if v is not None} | {
        "max_short_side": args.max_short_side,
        "resample": args.resample,
        "seed": args.seed,
        "ray": not args.no_ray,
        "vs_img2dataset": args.vs_img2dataset,
        "data": args.data,
        "out": args.out,
    }
    try:
        cfg = quick(**settings) if args.quick else BenchPackConfig(**settings)
    except ValueError as err:
        parser.error(str(err))
    report = run(cfg)
    for line in summary_lines(report):
        print(line)
    write_report(cfg.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
