"""Synthetic pretraining corpus in the real source formats: COCO 2017, Visual Genome and ALBEF/BLIP json lists.

`generate(SynthConfig(out=...))` writes a small corpus that the same readers serve as real data (DESIGN.md
section 2), so tests, the demo and benchmarks need no downloads:

    out/synth_config.json                 the resolved config (also marks the folder as ours to overwrite)
    out/sources.yaml                      every annotation file and image root, for `copa ingest`
    out/coco/annotations/{captions,instances}_train2017.json, out/coco/train2017/<12-digit id>.jpg
    out/vg/{image_data,objects,region_descriptions}.json, out/vg/VG_100K{,_2}/<id>.jpg
    out/web/{cc3m,sbu}_train.json, out/web/images/{cc3m,sbu}/<9-digit id>.jpg
    out/synth_truth.json                  which objects each COCO caption and VG region mentions
    out/faults.json, out/outside.jpg      only with faults=True (see pipeline.synth_faults)

Pictures are glyphs of 12 COCO categories on varied backgrounds (pipeline.synth_draw) with exact boxes; texts
name some of the objects (pipeline.synth_text); pipeline.synth_formats writes the files and pipeline.synth_faults
the bad items. This module holds the config, the plan of counts and ids, and `generate`.

`num_images` counts image records over all parts: about 2.5% are COCO, 2.5% VG (at least 3 each; half of VG are
copies of COCO pictures with `coco_id` set, as in real VG), the rest web images without boxes. Each picture and
its texts come from generators seeded with (seed, picture index, stream), so the output is byte-identical for a
seed and does not depend on generation order.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline.synth_faults import ESCAPE_FILE, FaultContext, write_faults
from pipeline.synth_formats import Coco, build_coco, build_web, dump, web_sample, write_coco, write_sources, write_vg

_IDS = 1 << 40  # stream base for id draws, far above any picture index
_OWN_ENTRIES = {
    "coco",
    "vg",
    "web",
    "sources.yaml",
    "synth_truth.json",
    "synth_config.json",
    "faults.json",
    ESCAPE_FILE,
}


@dataclass
class SynthConfig:
    """What `generate` makes."""

    out: Path  # output folder: absent, empty, or an earlier synth output (which is replaced)
    num_images: int = 1000  # image records over all parts (COCO + VG + web); a VG copy of a COCO picture counts again
    seed: int = 0  # same seed, same bytes; another seed, another corpus
    faults: bool = False  # also write a handful of deliberately bad items, listed in faults.json
    coco_fraction: float = 0.025  # share of images that are COCO images (at least 3)
    vg_fraction: float = 0.025  # share of images that are VG images (at least 3)
    vg_coco_overlap: float = 0.5  # share of VG images that are copies of COCO pictures (coco_id set)
    min_side: int = 128  # smallest picture width/height in pixels
    max_side: int = 256  # largest picture width/height in pixels
    max_objects: int = 5  # objects per picture are 1..max_objects (a crowd group counts once)
    captions_per_coco_image: int = 5  # COCO ships five
    min_regions_per_vg_image: int = 10  # region descriptions per VG image, lower bound
    max_regions_per_vg_image: int = 30  # region descriptions per VG image, upper bound
    jpeg_quality: int = 90  # fixed, so the bytes are reproducible

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        checks = {
            "seed": self.seed >= 0,
            "coco_fraction": 0.0 <= self.coco_fraction <= 0.5,
            "vg_fraction": 0.0 <= self.vg_fraction <= 0.5,
            "vg_coco_overlap": 0.0 <= self.vg_coco_overlap <= 1.0,
            "min_side": 64 <= self.min_side <= 4096,
            "max_side": self.min_side <= self.max_side <= 4096,
            "max_objects": 1 <= self.max_objects <= 10,
            "captions_per_coco_image": self.captions_per_coco_image >= 1,
            "min_regions_per_vg_image": self.min_regions_per_vg_image >= 1,
            "max_regions_per_vg_image": self.max_regions_per_vg_image >= self.min_regions_per_vg_image,
            "jpeg_quality": 1 <= self.jpeg_quality <= 95,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"SynthConfig.{name}={getattr(self, name)!r} is out of range")
        if CorpusPlan.counts(self)[2] < 2:
            raise ValueError(f"SynthConfig.num_images={self.num_images!r} leaves fewer than 2 web images")


@dataclass(frozen=True)
class PartReport:
    """What one part of the corpus got."""

    name: str  # coco, vg, cc3m or sbu
    num_images: int  # image records
    num_captions: int  # captions (VG: region descriptions)
    num_boxes: int  # COCO instance annotations / VG objects; 0 for web
    num_files: int  # files written, images and annotation files
    seconds: float  # wall time spent on this part


@dataclass(frozen=True)
class SynthReport:
    """What `generate` wrote."""

    out: Path
    parts: tuple[PartReport, ...]
    num_faults: int  # entries of faults.json (0 without faults)
    seconds: float


@dataclass(frozen=True)
class CorpusPlan:
    """How many images each part gets, which pictures they show, and their ids.

    Pictures are numbered: COCO image k (in file order) is picture k; VG image j is picture j while j <
    num_overlap (the COCO picture it copies), else a picture of its own after the COCO ones; web pictures follow
    (CC3M, then SBU), then the pictures of fault rows. `pipeline.synth_formats.picture_scene` draws picture p.
    """

    num_coco: int
    num_vg: int
    num_overlap: int  # the first num_overlap VG images show the first num_overlap COCO pictures
    num_cc3m: int
    num_sbu: int
    coco_ids: tuple[int, ...]
    vg_ids: tuple[int, ...]

    @staticmethod
    def counts(cfg: SynthConfig) -> tuple[int, int, int, int]:
        """(COCO, VG, web, VG-COCO overlap) image counts."""
        num_coco = max(3, int(cfg.num_images * cfg.coco_fraction + 0.5))
        num_vg = max(3, int(cfg.num_images * cfg.vg_fraction + 0.5))
        overlap = int(num_vg * cfg.vg_coco_overlap + 0.5)
        if 0 < cfg.vg_coco_overlap < 1:  # keep both kinds of VG image whenever both were asked for
            overlap = min(max(overlap, 1), num_vg - 1)
        return num_coco, num_vg, cfg.num_images - num_coco - num_vg, min(overlap, num_coco)

    @classmethod
    def from_config(cls, cfg: SynthConfig) -> CorpusPlan:
        num_coco, num_vg, num_web, overlap = cls.counts(cfg)
        num_cc3m = (num_web * 3 + 4) // 5
        # COCO and VG ids are sparse like the real ones, and from disjoint ranges so they cannot be confused.
        coco_ids = _sparse_ids(cfg.seed, 0, num_coco, 1, max(600_000, 4 * num_coco))
        vg_ids = _sparse_ids(cfg.seed, 1, num_vg, 1_000_000, 1_000_000 + max(1_400_000, 4 * num_vg))
        return cls(num_coco, num_vg, overlap, num_cc3m, num_web - num_cc3m, coco_ids, vg_ids)

    def vg_picture(self, j: int) -> int:
        return j if j < self.num_overlap else self.num_coco + j - self.num_overlap

    def web_picture(self, m: int) -> int:
        return self.num_coco + self.num_vg - self.num_overlap + m


def _sparse_ids(seed: int, stream: int, n: int, low: int, high: int) -> tuple[int, ...]:
    rng = np.random.default_rng([seed, _IDS + stream])
    return tuple(sorted(int(i) for i in rng.choice(high - low, size=n, replace=False) + low))


def _add_faults(cfg: SynthConfig, plan: CorpusPlan, coco: Coco, web: dict[str, list[dict]]) -> list[dict]:
    first_picture = plan.web_picture(plan.num_cc3m + plan.num_sbu)  # fault pictures come after every clean one

    def sample(j: int) -> tuple[np.ndarray, str]:
        pixels, captions = web_sample(cfg, first_picture + j)
        return pixels, captions[0]

    context = FaultContext(
        out=cfg.out,
        coco_image=coco.images[0],
        coco_instances=coco.instances,
        next_annotation_id=max(a["id"] for a in coco.instances) + 1,
        web_lists=web,
        make_sample=sample,
        jpeg_quality=cfg.jpeg_quality,
    )
    faults = write_faults(context)
    dump(cfg.out / "faults.json", faults)
    return faults


def _prepare_out(out: Path) -> None:
    """Create `out`, or clear an earlier synth output there; refuse a folder holding anything else."""
    if out.exists() and any(out.iterdir()):
        names = {p.name for p in out.iterdir()}
        if "synth_config.json" not in names or not names <= _OWN_ENTRIES:
            raise ValueError(f"SynthConfig.out={str(out)!r} is not empty and not an earlier `copa synth` output")
        for name in sorted(names):
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


class _Timer:
    """Adds up wall time per part name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def generate(cfg: SynthConfig, progress: bool = False) -> SynthReport:
    """Write the corpus described in the module docstring and return what was made."""
    start = time.perf_counter()
    _prepare_out(cfg.out)
    # The folder itself is left out, so a corpus is byte-identical wherever it is written.
    dump(cfg.out / "synth_config.json", {k: v for k, v in asdict(cfg).items() if k != "out"})
    plan = CorpusPlan.from_config(cfg)
    timer = _Timer()
    web_sources = (("cc3m", 0, plan.num_cc3m), ("sbu", plan.num_cc3m, plan.num_sbu))

    # Pictures first; COCO and web annotations stay in memory until the optional faults are added to them.
    bar = _progress(cfg.num_images, progress)
    with timer("coco"):
        coco = build_coco(cfg, plan, bar.update)
    with timer("vg"):
        vg = write_vg(cfg, plan, bar.update)
    web: dict[str, list[dict]] = {}
    for source, first, count in web_sources:
        with timer(source):
            web[source] = build_web(cfg, source, plan.web_picture(first), count, bar.update)
    bar.close()
    num_clean_boxes = len(coco.instances)
    faults = _add_faults(cfg, plan, coco, web) if cfg.faults else []

    with timer("coco"):
        write_coco(cfg, coco)
    for source, rows in web.items():
        with timer(source):
            dump(cfg.out / "web" / f"{source}_train.json", rows)
    write_sources(cfg.out)
    dump(cfg.out / "synth_truth.json", {"seed": cfg.seed, "coco_captions": coco.truth, "vg_regions": vg.truth})

    parts = [
        PartReport(
            "coco", plan.num_coco, len(coco.captions), num_clean_boxes, plan.num_coco + 2, timer.seconds["coco"]
        ),
        PartReport("vg", plan.num_vg, vg.num_regions, vg.num_objects, plan.num_vg + 3, timer.seconds["vg"]),
    ]
    for source, _, count in web_sources:
        num_captions = sum(len(r["caption"]) if isinstance(r["caption"], list) else 1 for r in web[source][:count])
        parts.append(PartReport(source, count, num_captions, 0, count + 1, timer.seconds[source]))
    return SynthReport(cfg.out, tuple(parts), len(faults), time.perf_counter() - start)


class _Bar(Protocol):
    def update(self, n: int = 1) -> object: ...

    def close(self) -> None: ...


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool) -> _Bar:
    """A tqdm bar when asked for and tqdm is there (it hides itself when stderr is not a terminal)."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency, but a progress bar is not worth failing for
        return _NoBar()
    return tqdm(total=total, unit="img", disable=None, desc="synth")
