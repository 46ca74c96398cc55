"""The synthetic corpus' config and plan (counts, pictures, ids): the types every part of ``pipeline.synth`` reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

_IDS = 1 << 40  # stream base for id draws, far above any picture index


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
    karpathy_images: int = 0  # pictures of a downstream set in Karpathy's format (3/5 train, 1/5 val, 1/5 test)
    vqa_images: int = 0  # pictures of a synthetic VQA v2 set (4/5 train, 1/5 val)
    refexp_images: int = 0  # pictures of a synthetic RefCOCO+ set (3/5 train, 2/15 each val, testA, testB)

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
            "karpathy_images": self.karpathy_images == 0 or self.karpathy_images >= 5,
            "vqa_images": self.vqa_images == 0 or self.vqa_images >= 5,  # a picture in each split
            "refexp_images": self.refexp_images == 0 or self.refexp_images >= 15,  # two pictures in each split
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"SynthConfig.{name}={getattr(self, name)!r} is out of range")
        if CorpusPlan.counts(self)[2] < 2:
            raise ValueError(f"SynthConfig.num_images={self.num_images!r} leaves fewer than 2 web images")


@dataclass(frozen=True)
class CorpusPlan:
    """How many images each part gets, which pictures they show, and their ids.

    Pictures are numbered: COCO image k (in file order) is picture k; VG image j is picture j while j <
    num_overlap (the COCO picture it copies), else a picture of its own after the COCO ones; web pictures follow
    (CC3M, then SBU), then the pictures of fault rows. `pipeline.synth.formats.picture_scene` draws picture p.
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
        coco_ids = sparse_ids(cfg.seed, 0, num_coco, 1, max(600_000, 4 * num_coco))
        vg_ids = sparse_ids(cfg.seed, 1, num_vg, 1_000_000, 1_000_000 + max(1_400_000, 4 * num_vg))
        return cls(num_coco, num_vg, overlap, num_cc3m, num_web - num_cc3m, coco_ids, vg_ids)

    def vg_picture(self, j: int) -> int:
        return j if j < self.num_overlap else self.num_coco + j - self.num_overlap

    def web_picture(self, m: int) -> int:
        return self.num_coco + self.num_vg - self.num_overlap + m


def sparse_ids(seed: int, stream: int, n: int, low: int, high: int) -> tuple[int, ...]:
    """`n` distinct sorted ids from [low, high), drawn from id stream `stream` (0 COCO, 1 VG, 2 VQA, 3 refexp)."""
    rng = np.random.default_rng([seed, _IDS + stream])
    return tuple(sorted(int(i) for i in rng.choice(high - low, size=n, replace=False) + low))
