"""A real packed corpus for the trainer, evaluation and inspect tests: synth -> ingest -> pack, without Ray.

Packing is ``jobs.pack.pack_in_process``: the plan, ``ShardPacker`` and ``finalize`` of ``copa pack`` in this
process, so the shards are the real thing (jpg, txt, json, pta.npy; manifests; sizes.json, dataset.json) at a
fraction of the start-up.
"""

from __future__ import annotations

from pathlib import Path

from jobs import ingest, pack, synth
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


def packed_tasks(root: Path, vqa: int = 500, refexp: int = 500, image_size: int = 64, patch_size: int = 8) -> dict:
    """``copa synth --vqa --refexp`` ingested and packed per split with ``copa pack --engine local`` (which also
    copies the VQA answers table): {"vqa_train", "vqa_val", "refexp_train", "refexp_val", "refexp_testA",
    "refexp_testB"} -> shards folder."""
    corpus = root / "corpus"
    args = ["--out", str(corpus), "--images", "10", "--vqa", str(vqa), "--refexp", str(refexp)]
    assert synth.main(args) == 0
    splits = [("vqa", s) for s in ("train", "val")] + [("refexp", s) for s in ("train", "val", "testA", "testB")]
    out = {}
    for folder, split in splits:
        name = f"{folder}_{split}"
        source, out[name] = root / f"{name}.parquet", root / name
        assert (
            ingest.main(["--config", str(corpus / folder / f"sources_{split}.yaml"), "--out", str(source), "--quiet"])
            == 0
        )
        args = ["--source", str(source), "--out", str(out[name]), "--engine", "local", "--image-size", str(image_size),
                "--patch-size", str(patch_size), "--quiet"]  # fmt: skip
        assert pack.main(args) == 0
    return out
