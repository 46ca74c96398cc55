"""A real packed corpus for the trainer, evaluation and inspect tests: synth -> ingest -> pack, without Ray.

Packing goes through the same stage functions the Ray job maps (``plan_shards``, ``ShardPacker``) in this process,
so the shards are the real thing (jpg, txt, json, pta.npy; manifests; sizes.json, dataset.json) at a fraction of
the start-up.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from jobs import ingest, synth
from manifests.dataset import DatasetInfo, Geometry, write_dataset_info, write_sizes
from pipeline.pack import PackConfig, ShardPacker, key_hashes, plan_shards, shard_index
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
    rows = read_source_table(str(source)).to_pylist()
    hashes = key_hashes([r["key"] for r in rows])
    plan = plan_shards(hashes, samples_per_shard)
    groups: dict[int, list[dict]] = defaultdict(list)
    for row, shard in zip(rows, shard_index(plan.boundaries, hashes), strict=True):
        groups[int(shard)].append(row)
    config = PackConfig(samples_per_shard=samples_per_shard, geometry=Geometry(image_size, patch_size))
    packer = ShardPacker(str(shards), config)
    sizes, rejected, sources = {}, 0, {}
    for index in sorted(groups):
        stats = packer.pack(index, groups[index])
        sizes[f"{index:06d}.tar"] = stats.num_ok
        rejected += stats.num_rejected
    for row in rows:
        sources.setdefault(row["key"].split("-", 1)[0], {"input": 0, "ok": 0, "rejected": 0})["input"] += 1
    write_sizes(str(shards), sizes)
    info = DatasetInfo(len(sizes), sum(sizes.values()), rejected, config.geometry, sources, config.to_dict())
    write_dataset_info(str(shards), info)
    return shards
