"""``copa bench loader``: the streaming loader's samples/s per worker against a plain webdataset decode-and-batch
loop over the same shards in the same run, and what augmentation and label recomputation cost.

Per worker means one process, one core: ``num_workers=0``, one torch thread, one OpenCV thread (albumentations
resizes the crops with OpenCV, whose own thread pool would otherwise use the other cores). At each image size S:

- **baseline**: ``wds.WebDataset(shards).decode("pil").to_tuple(...)`` -> the whole image resized to S square
  (the loader's filter: bilinear with box pre-reduction; the loader also decodes JPEGs at a reduced DCT scale,
  which a plain decode does not) -> float tensor scaled to [-1, 1] -> ``torch.stack`` in batches. Every member is
  decoded (jpg, txt, json, pta.npy), as ``decode("pil")`` does.
- **loader**: ``model.loader.StreamingLoader`` (patch 16, no augmentation, the default shuffle buffer) with a real
  WordPiece ``CaptionTokenizer`` built from the shards' captions before timing. Its labels are the stored
  ``pta.npy`` rows when S / 16 is the stored grid, otherwise recomputed from the boxes.
- **augment**: the same loader with random resized crop + flip (albumentations), coverage recomputed from the
  moved boxes for every sample. It decodes at full size and resizes only the crop, with OpenCV (bilinear).
- **regrid**: the same loader with the other label path at the same pixel work: another patch size, so that the
  grid is the stored one when the loader's is not, or half of it when it is. Loader against regrid is the cost of
  recomputing labels without augmentation.

Each pass reads all shards (warm page cache after a warm-up pass over the first shard); passes alternate in
rounds, in a rotating order, so drift hits them alike, and the best round counts. Every pass must deliver the same
set of keys. Rates count the CPU seconds of the process (one thread, so one core's time), with wall-clock rates
beside them: other work on a shared machine moves CPU time less than the wall clock, but it still moves it (shared
caches, sibling hyperthreads), so compare the ratios, not the rates of two runs. A second, in-memory part times the
stages one by one over the first samples ("where the time goes").

The shards are a synthetic corpus (``pipeline.synth``) ingested and packed in-process with ``ShardPacker`` (real
COPA shards: jpg, txt, json, pta.npy, sizes.json), pictures 384-640 px so the stored images are the pack default
(shorter side 384), a quarter COCO and a quarter VG images so that about half the samples carry boxes (VG copies
of COCO pictures merge at ingest); or ``--shards DIR``.

    copa bench loader [--quick] [--shards DIR] [--img-size 128 256] [--out bench_out/loader]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import albumentations
import cv2
import numpy as np
import PIL
import torch
import webdataset as wds
from PIL import Image

from jobs.bench.runner import write_report
from jobs.ingest import ingest
from jobs.pack import pack_in_process
from manifests.labels import patch_coverage
from manifests.samples import Sample, decode_sample
from model.loader import (
    LoaderConfig,
    SampleTransform,
    StreamingLoader,
    choose_caption,
    load_rgb,
    resolve_shards,
)
from model.tokenizer import CaptionTokenizer, build_wordpiece
from pipeline.pack import PackConfig
from pipeline.rows import read_source_table
from pipeline.sources import load_sources
from pipeline.synth import SynthConfig, generate

STAGE_SAMPLES = 256  # samples held in memory for the stage timings


@dataclass
class BenchLoaderConfig:
    num_images: int = 1200  # synthetic image records; VG copies of COCO pictures merge at ingest, so fewer samples
    samples_per_shard: int = 250  # shard size of the generated corpus
    coco_fraction: float = 0.25  # share of COCO images (5 captions, boxes, PTA labels)
    vg_fraction: float = 0.25  # share of VG images (10-30 region captions, boxes, PTA labels); the rest is web
    min_side: int = 384  # smallest synthetic picture side in pixels
    max_side: int = 640  # largest synthetic picture side (stored with the shorter side capped at 384)
    img_sizes: tuple[int, ...] = (128, 256)  # loader output sizes, each measured against its own baseline
    patch_size: int = 16  # the loader's patch size
    batch_size: int = 32  # samples per batch
    shuffle_buffer: int = LoaderConfig.shuffle_buffer  # the loader's shuffle buffer (the baseline has none)
    max_len: int = 40  # tokenizer length cap
    rounds: int = 5  # alternating rounds of every loop; the best counts
    shards: str | None = None  # an existing dataset folder to read instead of generating one
    data: str | None = None  # keep the generated corpus and shards here; a temporary folder when None
    seed: int = 0  # corpus, shuffle and augmentation seed
    out: str = "bench_out/loader"  # folder of bench_loader.json

    def __post_init__(self) -> None:
        self.img_sizes = tuple(self.img_sizes)
        for name in ("num_images", "samples_per_shard", "patch_size", "batch_size", "max_len", "rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"BenchLoaderConfig.{name} must be at least 1, got {getattr(self, name)}")
        if not self.img_sizes or any(s < 1 or s % self.patch_size for s in self.img_sizes):
            raise ValueError(f"BenchLoaderConfig.img_sizes {self.img_sizes} must be multiples of {self.patch_size}")
        if self.shuffle_buffer < 0:
            raise ValueError(f"BenchLoaderConfig.shuffle_buffer must be >= 0, got {self.shuffle_buffer}")
        if self.shards is not None and not os.path.isdir(self.shards):
            raise ValueError(f"BenchLoaderConfig.shards {self.shards!r} is not a folder")
        # the corpus settings are checked by SynthConfig itself
        SynthConfig(
            out=Path("."),
            num_images=self.num_images,
            seed=self.seed,
            coco_fraction=self.coco_fraction,
            vg_fraction=self.vg_fraction,
            min_side=self.min_side,
            max_side=self.max_side,
        )


def quick(**overrides) -> BenchLoaderConfig:
    """Small sizes for the test and a fast look; the figures are noisy."""
    sizes = dict(num_images=48, samples_per_shard=16, min_side=128, max_side=256, img_sizes=(128,), batch_size=8)
    return BenchLoaderConfig(**(sizes | {"rounds": 2} | overrides))


# --- the shards ----------------------------------------------------------------------------------------------------


def build_shards(cfg: BenchLoaderConfig, folder: Path) -> dict:
    """synth -> ingest -> pack (``jobs.pack.pack_in_process``: the real pack stages, without Ray)."""
    start = time.perf_counter()
    corpus, source, shards = folder / "corpus", str(folder / "source.parquet"), folder / "shards"
    synth = SynthConfig(
        out=corpus,
        num_images=cfg.num_images,
        seed=cfg.seed,
        coco_fraction=cfg.coco_fraction,
        vg_fraction=cfg.vg_fraction,
        min_side=cfg.min_side,
        max_side=cfg.max_side,
    )
    generate(synth)
    summaries = ingest(load_sources(str(corpus / "sources.yaml")), source, progress=False)
    rows = read_source_table(source).to_pylist()
    info, _ = pack_in_process(rows, str(shards), PackConfig(samples_per_shard=cfg.samples_per_shard))
    return {
        "shards": str(shards),
        "images": cfg.num_images,
        "merged_at_ingest": sum(s.merged for s in summaries.values()),
        "rejected": info.num_rejected,
        "seconds": time.perf_counter() - start,
    }


def raw_samples(urls: list[str]) -> Iterator[dict]:
    """Tar members grouped by key, undecoded (the loader's own first stage)."""
    yield from wds.WebDataset(urls, shardshuffle=False)


def describe(urls: list[str]) -> tuple[dict, list[str], list[dict]]:
    """What the shards hold, every caption (for the tokenizer) and the first samples' raw members (for stages)."""
    captions, sources, sizes, grids, first = [], Counter(), [], Counter(), []
    num, boxed = 0, 0
    for raw in raw_samples(urls):
        meta = json.loads(raw["json"])
        num += 1
        captions += meta["captions"]
        sources[meta["source"]] += 1
        sizes.append((meta["width"], meta["height"]))
        pta_shape = np.load(io.BytesIO(raw["pta.npy"])).shape  # [0, G, G] for an image without boxes
        grids[int(pta_shape[-1])] += 1
        boxed += pta_shape[0] > 0
        if len(first) < STAGE_SAMPLES:
            first.append(raw)
    if len(grids) > 1:
        raise ValueError(f"bench loader: the shards mix label grids {dict(grids)}")
    width, height = np.mean(sizes, axis=0)
    data = {
        "urls": len(urls),
        "samples": num,
        "sources": dict(sorted(sources.items())),
        "samples_with_labels": boxed,
        "stored_grid": next(iter(grids), None),
        "captions": len(captions),
        "mean_stored_width": float(width),
        "mean_stored_height": float(height),
        "tar_bytes": sum(os.path.getsize(u) for u in urls),
    }
    return data, captions, first


# --- the loops -----------------------------------------------------------------------------------------------------


def plain_image(size: int) -> Callable[[Image.Image], torch.Tensor]:
    """The baseline's image step: the whole picture resized to ``size`` square with the loader's filter, as a float
    tensor in [-1, 1]."""

    def image(picture: Image.Image) -> torch.Tensor:
        pixels = np.array(picture.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0))
        return (torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0 - 0.5) / 0.5

    return image


def baseline_loop(urls: list[str], size: int, batch_size: int) -> Callable[[], list[str]]:
    """A plain webdataset decode-and-batch loop: decode every member, resize to ``size`` square, stack."""

    def collate(samples: list[tuple]) -> tuple:
        keys, images, texts = zip(*samples, strict=True)
        return list(keys), torch.stack(images), list(texts)

    def run() -> list[str]:
        dataset = (
            wds.WebDataset(urls, shardshuffle=False)
            .decode("pil")
            .to_tuple("__key__", "jpg", "txt")
            .map_tuple(None, plain_image(size), None)
            .batched(batch_size, collation_fn=collate, partial=True)
        )
        keys = []
        for batch_keys, images, _ in dataset:
            assert images.shape == (len(batch_keys), 3, size, size)
            keys += batch_keys
        return keys

    return run


def loader_loop(loader: StreamingLoader) -> Callable[[], list[str]]:
    def run() -> list[str]:
        loader.set_epoch(0)  # the same epoch every round: the same crops, the same work
        keys = []
        for batch in loader:
            keys += batch["keys"]
        stats = loader.stats
        if stats.num_skipped or stats.num_samples != len(keys):
            raise RuntimeError(f"bench loader: the loader skipped samples: {stats.skipped} {stats.errors}")
        return keys

    return run


def regrid_patch(size: int, patch: int, stored: int | None) -> int | None:
    """A patch size giving the other label path than ``patch`` at ``size``: the stored grid when ``size // patch``
    is not it, half the stored grid when it is; None when no patch size divides ``size`` so."""
    if stored is None:
        return None
    grid = stored // 2 if size // patch == stored else stored
    return size // grid if grid > 0 and size % grid == 0 else None


def label_path(grid: int, stored: int | None, augment: bool) -> str:
    return "stored" if grid == stored and not augment else "recomputed"


def loops_at(cfg: BenchLoaderConfig, urls: list[str], size: int, stored: int | None, tokenize) -> dict:
    """name -> (what it is, the pass function) at ``size``."""

    def loader(patch: int, augment: bool) -> tuple[dict, Callable[[], list[str]]]:
        config = LoaderConfig(
            shards=list(urls),
            img_size=size,
            patch_size=patch,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            shuffle_buffer=cfg.shuffle_buffer,
            augment=augment,
            num_workers=0,
        )
        what = {"patch_size": patch, "grid": config.grid, "augment": augment}
        return what | {"labels": label_path(config.grid, stored, augment)}, loader_loop(
            StreamingLoader(config, tokenize, rank=0, world_size=1)
        )

    loops = {
        "baseline": ({"labels": None}, baseline_loop(urls, size, cfg.batch_size)),
        "loader": loader(cfg.patch_size, False),
        "augment": loader(cfg.patch_size, True),
    }
    other = regrid_patch(size, cfg.patch_size, stored)
    if other is not None:
        loops["regrid"] = loader(other, False)
    return loops


def measure(loops: dict, rounds: int, warm: dict) -> dict:
    """CPU and wall seconds of every pass, alternated in ``rounds`` (rotating order) after one warm-up pass of
    ``warm``'s. Rates count CPU seconds of this process: everything runs on one thread, so that is the time of one
    core, and other work on a shared machine does not slow it as it slows the wall clock."""
    for _, run in warm.values():
        run()
    names = list(loops)
    cpu: dict[str, list[float]] = {n: [] for n in names}
    wall: dict[str, list[float]] = {n: [] for n in names}
    keys: dict[str, set[str]] = {}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start, start_cpu = time.perf_counter(), time.process_time()
            got = loops[name][1]()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)
            if len(got) != len(set(got)):
                raise RuntimeError(f"bench loader: {name} delivered a sample twice")
            keys.setdefault(name, set(got))
            if keys[name] != keys[names[0]]:
                raise RuntimeError(f"bench loader: {name} read other samples than {names[0]}")
    out = {}
    for name in names:
        samples = len(keys[name])
        out[name] = loops[name][0] | {
            "samples": samples,
            "cpu_seconds": cpu[name],
            "wall_seconds": wall[name],
            "samples_per_s": samples / min(cpu[name]),
            "wall_samples_per_s": samples / min(wall[name]),
        }
    return out


def per_size(cfg: BenchLoaderConfig, urls: list[str], size: int, stored: int | None, tokenize) -> dict:
    loops = loops_at(cfg, urls, size, stored, tokenize)
    warm = loops_at(cfg, urls[:1], size, stored, tokenize)
    runs = measure(loops, cfg.rounds, warm)
    rate = {name: run["samples_per_s"] for name, run in runs.items()}
    per_round = [{n: runs[n]["cpu_seconds"][r] for n in runs} for r in range(cfg.rounds)]
    fig = {
        "img_size": size,
        "loops": runs,
        "loader_vs_baseline": rate["loader"] / rate["baseline"],
        "loader_vs_baseline_per_round": [s["baseline"] / s["loader"] for s in per_round],
        "augment_vs_loader": rate["augment"] / rate["loader"],
        "augment_vs_baseline": rate["augment"] / rate["baseline"],
    }
    if "regrid" in runs:
        recomputed, kept = ("loader", "regrid") if runs["loader"]["labels"] == "recomputed" else ("regrid", "loader")
        fig["recomputed_vs_stored_labels"] = rate[recomputed] / rate[kept]
    return fig


# --- where the time goes -------------------------------------------------------------------------------------------


def _per_sample_us(fn: Callable[[], object], count: int, repeats: int = 3) -> float:
    best = min(_timed(fn) for _ in range(repeats))
    return best / count * 1e6


def _timed(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def _transform_us(samples: list, size: int, cfg: BenchLoaderConfig, augment: bool) -> float:
    config = LoaderConfig(shards="unused", img_size=size, patch_size=cfg.patch_size, seed=cfg.seed, augment=augment)
    transform = SampleTransform(config)
    return _per_sample_us(lambda: [transform(s, 0) for s in samples], len(samples))


def stages(raws: list[dict], cfg: BenchLoaderConfig, tokenize) -> dict:
    """CPU microseconds per sample of each step, over the first samples held in memory (no tar reading)."""
    n = len(raws)
    members = [{k: v for k, v in r.items() if not k.startswith("__")} for r in raws]
    samples = [decode_sample(r["__key__"], m) for r, m in zip(raws, members, strict=True)]
    captions = [s.meta["captions"][0] for s in samples]
    batches = [captions[i : i + cfg.batch_size] for i in range(0, n, cfg.batch_size)]
    decoder = wds.autodecode.Decoder([wds.autodecode.imagehandler("pil")])
    out = {
        "samples": n,
        "json_loads": _per_sample_us(lambda: [json.loads(m["json"]) for m in members], n),
        "decode_sample": _per_sample_us(
            lambda: [decode_sample(r["__key__"], m) for r, m in zip(raws, members, strict=True)], n
        ),
        "wds_decode_all_members": _per_sample_us(lambda: [decoder(dict(r)) for r in raws], n),
        "tokenize": _per_sample_us(lambda: [tokenize(b) for b in batches], n),
        "jpeg_decode": _per_sample_us(lambda: [load_rgb(s.image) for s in samples], n),
    }
    labelled = [s for s in samples if s.pta is not None]  # the loader recomputes these only; per sample of all n

    def relabel(sample: Sample, grid: int) -> np.ndarray:
        c = choose_caption(len(sample.meta["captions"]), cfg.seed, 0, sample.key)
        return patch_coverage(sample.meta["boxes"], [sample.meta["relevant"][c]["boxes"]], grid)

    for size in cfg.img_sizes:
        image = plain_image(size)
        out[str(size)] = {
            "baseline_image": _per_sample_us(lambda image=image: [image(load_rgb(s.image)) for s in samples], n),
            "transform": _transform_us(samples, size, cfg, augment=False),
            "transform_augment": _transform_us(samples, size, cfg, augment=True),
            "recompute_labels": _per_sample_us(
                lambda grid=size // cfg.patch_size: [relabel(s, grid) for s in labelled], n
            ),
        }
    return out


# --- the report ----------------------------------------------------------------------------------------------------


def run(cfg: BenchLoaderConfig) -> dict:
    temporary = None if cfg.data or cfg.shards else tempfile.mkdtemp(prefix="copa_bench_loader_")
    threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)  # per worker = per core
    cv2.setNumThreads(1)
    report: dict = {
        "config": asdict(cfg),
        "machine": {
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "webdataset": wds.__version__,
            "albumentations": albumentations.__version__,
            "opencv": cv2.__version__,
            "pillow": PIL.__version__,
        },
    }
    started = time.perf_counter()
    try:
        if cfg.shards:
            root = cfg.shards
        else:
            folder = Path(cfg.data or temporary)
            shutil.rmtree(folder / "corpus", ignore_errors=True)  # left by an earlier run with --data
            shutil.rmtree(folder / "shards", ignore_errors=True)
            report["built"] = build_shards(cfg, folder)
            root = report["built"]["shards"]
        urls = resolve_shards(root)
        report["data"], captions, first = describe(urls)
        stored = report["data"]["stored_grid"]
        tokenizer = CaptionTokenizer(build_wordpiece(captions), max_len=cfg.max_len)
        report["tokenizer"] = {"vocab_size": tokenizer.vocab_size, "max_len": cfg.max_len}
        report["sizes"] = {str(s): per_size(cfg, urls, s, stored, tokenizer) for s in cfg.img_sizes}
        report["stages_us_per_sample"] = stages(first, cfg, tokenizer)
        report["seconds"] = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
    return report


def summary_lines(report: dict) -> list[str]:
    data, cfg = report["data"], report["config"]
    lines = [
        f"data: {data['samples']} samples in {data['urls']} shards ({data['tar_bytes'] / 1e6:.1f} MB), stored "
        f"{data['mean_stored_width']:.0f}x{data['mean_stored_height']:.0f} px on average, "
        f"{data['samples_with_labels']} with PTA labels (grid {data['stored_grid']}); batch {cfg['batch_size']}, "
        f"one worker, one thread, best of {cfg['rounds']} rounds, rates per CPU second (wall clock in brackets)"
    ]
    for size, fig in report["sizes"].items():
        loops = fig["loops"]
        base, load, aug = loops["baseline"], loops["loader"], loops["augment"]
        lines.append(
            f"baseline {size} px: plain webdataset decode-resize-batch {base['samples_per_s']:.1f} samples/s per "
            f"worker ({base['wall_samples_per_s']:.1f}/s)"
        )
        lines.append(
            f"loader {size} px (grid {load['grid']}, labels {load['labels']}): {load['samples_per_s']:.1f}/s "
            f"({load['wall_samples_per_s']:.1f}/s) = x{fig['loader_vs_baseline']:.2f} the baseline"
        )
        lines.append(
            f"augment {size} px (crop + flip, labels recomputed): {aug['samples_per_s']:.1f}/s "
            f"({aug['wall_samples_per_s']:.1f}/s) = x{fig['augment_vs_loader']:.2f} the loader, "
            f"x{fig['augment_vs_baseline']:.2f} the baseline"
        )
        if "regrid" in loops:
            reg = loops["regrid"]
            lines.append(
                f"regrid {size} px (patch {reg['patch_size']}, grid {reg['grid']}, labels {reg['labels']}): "
                f"{reg['samples_per_s']:.1f}/s ({reg['wall_samples_per_s']:.1f}/s); recomputed labels run at "
                f"x{fig['recomputed_vs_stored_labels']:.2f} the rate of stored ones"
            )
    st = report["stages_us_per_sample"]
    sized = ", ".join(
        f"{s} px: decode+resize+tensor {st[s]['baseline_image']:.0f}, loader transform {st[s]['transform']:.0f}, "
        f"with augment {st[s]['transform_augment']:.0f}, of which labels {st[s]['recompute_labels']:.0f}"
        for s in map(str, cfg["img_sizes"])
    )
    lines.append(
        f"stages (CPU us/sample over {st['samples']} in memory): json.loads {st['json_loads']:.0f}, decode_sample "
        f"{st['decode_sample']:.0f}, webdataset decode of all members {st['wds_decode_all_members']:.0f}, tokenize "
        f"{st['tokenize']:.0f}, JPEG decode {st['jpeg_decode']:.0f}; {sized}"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="copa bench loader", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a fast, noisy look (and the test)")
    parser.add_argument("--samples", type=int, help="synthetic image records to generate (default 1200)")
    parser.add_argument("--samples-per-shard", type=int, help="shard size of the generated corpus (default 250)")
    parser.add_argument("--shards", help="read this existing dataset folder instead of generating one")
    parser.add_argument("--img-size", type=int, nargs="+", help="loader output sizes in px (default 128 256)")
    parser.add_argument("--patch-size", type=int, help="the loader's patch size (default 16)")
    parser.add_argument("--batch-size", type=int, help="samples per batch (default 32)")
    parser.add_argument("--shuffle-buffer", type=int, help="the loader's shuffle buffer (default: the loader's)")
    parser.add_argument("--rounds", type=int, help="alternating rounds of every loop, best counts (default 5)")
    parser.add_argument("--data", help="keep the generated corpus and shards here (default: a temp folder)")
    parser.add_argument("--seed", type=int, default=0, help="corpus, shuffle and augmentation seed (default 0)")
    parser.add_argument("--out", default="bench_out/loader", help="folder of bench_loader.json (default: %(default)s)")
    args = parser.parse_args(argv)
    flags = {
        "num_images": args.samples,
        "samples_per_shard": args.samples_per_shard,
        "img_sizes": args.img_size,
        "patch_size": args.patch_size,
        "batch_size": args.batch_size,
        "shuffle_buffer": args.shuffle_buffer,
        "rounds": args.rounds,
    }
    settings = {k: v for k, v in flags.items() if v is not None}
    settings |= {"shards": args.shards, "data": args.data, "seed": args.seed, "out": args.out}
    try:
        cfg = quick(**settings) if args.quick else BenchLoaderConfig(**settings)
    except ValueError as err:
        parser.error(str(err))
    report = run(cfg)
    for line in summary_lines(report):
        print(line)
    write_report(os.path.join(cfg.out, "bench_loader.json"), report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
