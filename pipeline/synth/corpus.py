"""``generate``: the synthetic corpus (see ``pipeline.synth``) written part by part, timed, with progress."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline.synth.config import CorpusPlan, SynthConfig
from pipeline.synth.faults import ESCAPE_FILE, FaultContext, write_faults
from pipeline.synth.formats import (
    Coco,
    build_coco,
    build_web,
    dump,
    web_sample,
    write_coco,
    write_karpathy,
    write_sources,
    write_vg,
)
from pipeline.synth.tasks import write_refexp, write_vqa

_OWN_ENTRIES = {
    "coco",
    "vg",
    "web",
    "karpathy",
    "vqa",
    "refexp",
    "sources.yaml",
    "synth_truth.json",
    "synth_config.json",
    "faults.json",
    ESCAPE_FILE,
}


@dataclass(frozen=True)
class PartReport:
    """What one part of the corpus got."""

    name: str  # coco, vg, cc3m, sbu, karpathy, vqa or refexp
    num_images: int  # image records
    num_captions: int  # captions (VG: region descriptions, VQA: questions, refexp: expressions)
    num_boxes: int  # COCO instance annotations / VG objects / refexp referent boxes; 0 for web
    num_files: int  # files written, images and annotation files
    seconds: float  # wall time spent on this part


@dataclass(frozen=True)
class SynthReport:
    """What `generate` wrote."""

    out: Path
    parts: tuple[PartReport, ...]
    num_faults: int  # entries of faults.json (0 without faults)
    seconds: float


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
    if cfg.karpathy_images:
        bar = _progress(cfg.karpathy_images, progress)
        with timer("karpathy"):
            karpathy_captions = write_karpathy(cfg, bar.update)
        bar.close()
    tasks = {"vqa": (cfg.vqa_images, write_vqa), "refexp": (cfg.refexp_images, write_refexp)}
    written = {}
    for name, (count, write) in tasks.items():
        if count:
            bar = _progress(count, progress)
            with timer(name):
                written[name] = write(cfg, bar.update)
            bar.close()
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
    if cfg.karpathy_images:
        n = cfg.karpathy_images
        parts.append(PartReport("karpathy", n, karpathy_captions, 0, n + 2, timer.seconds["karpathy"]))
    for name, (num_texts, num_files) in written.items():
        num_boxes = num_texts if name == "refexp" else 0  # one box per expression
        parts.append(PartReport(name, tasks[name][0], num_texts, num_boxes, num_files, timer.seconds[name]))
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
