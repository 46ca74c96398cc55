"""A real packed corpus for the trainer, evaluation and inspect tests: synth -> ingest -> pack, without Ray.

Packing is ``jobs.pack.pack_in_process``: the plan, ``ShardPacker`` and ``finalize`` of ``copa pack`` in this
process, so the shards are the real thing (jpg, txt, json, pta.npy; manifests; sizes.json, dataset.json) at a
fraction of the start-up.
"""

from __future__ import annotations

from pathlib import Path

from jobs import ingest, synth
from jobs.pack import pack_in_process
from manifests.dataset import Geometry
from pipeline.pack import PackConfig
from pipeline.rows import read_source_table


def packed_corpus(
    root: Path,
    images: int = 300,
    seed: int = 0,
    coco_fraction: float = 0.5,
    vg_fraction: float = 0.25,
    samples_per_shard: int = 60,
    image_size: int = 64,
    patch_size: int = 8,
) -> Path:
    """Shards in ``root/shards``: most images annotated (the demo's mix), labels at the given canonical grid."""
    corpus, source, shards = root / "corpus", root / "source.parquet", root / "shards"
    args = ["--out", str(corpus), "--images", str(images), "--seed", str(seed)]
    assert synth.main([*args, "--coco-fraction", str(coco_fraction), "--vg-fraction", str(vg_fraction)]) == 0
    assert ingest.main(["--config", str(corpus / "sources.yaml"), "--out", str(source), "--quiet"]) == 0
    config = PackConfig(samples_per_shard=samples_per_shard, geometry=Geometry(image_size, patch_size))
    pack_in_process(read_source_table(str(source)).to_pylist(), str(shards), config)
    return shards


def packed_karpathy(root: Path, images: int = 100, seed: int = 0, image_size: int = 64, patch_size: int = 8) -> dict:
    """``copa synth --karpathy`` ingested and packed per split: {"train": shards, "test": shards} (3/5 and 1/5 of
    ``images``, five captions each), labels at the given grid."""
    corpus = root / "corpus"
    assert synth.main(["--out", str(corpus), "--images", "10", "--karpathy", str(images), "--seed", str(seed)]) == 0
    config = PackConfig(samples_per_shard=1000, geometry=Geometry(image_size, patch_size))
    out = {}
    for split in ("train", "test"):
        source = root / f"{split}.parquet"
        sources = corpus / "karpathy" / f"sources_{split}.yaml"
        assert ingest.main(["--config", str(sources), "--out", str(source), "--quiet"]) == 0
        out[split] = root / f"{split}_shards"
        pack_in_process(read_source_table(str(source)).to_pylist(), str(out[split]), config)
    return out
