"""The streaming loader over tiny shards written with our own ShardWriter: split, labels, augmentation, bad samples."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from manifests import SCHEMA_VERSION, Sample
from manifests.dataset import write_sizes
from manifests.labels import patch_coverage
from manifests.samples import ShardWriter
from model.loader import LoaderConfig, StreamingLoader, batches_per_epoch, choose_caption, epoch_samples

GRID = 4  # canonical grid of the test shards: img_size 32, patch 8


def tokenize(captions: list[str]) -> dict:
    ids = torch.tensor([[len(c), sum(map(ord, c)) % 1000] for c in captions], dtype=torch.long)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def make_sample(key: str, num_captions: int = 3, boxes: list | None = None, size: int = 32) -> Sample:
    """A sample whose pta grid is the true coverage of each caption's relevant boxes (caption c: boxes[:c+1])."""
    source, image_id = key.split("-", 1)
    rng = np.random.default_rng(sum(map(ord, key)))
    boxes = [[0.1, 0.2, 0.4, 0.7], [0.5, 0.1, 0.9, 0.5]] if boxes is None else boxes
    groups = [list(range(min(c + 1, len(boxes)))) for c in range(num_captions)]
    meta = {
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "image_id": image_id,
        "captions": [f"caption {c} of {key}" for c in range(num_captions)],
        "orig_width": size,
        "orig_height": size,
        "width": size,
        "height": size,
        "boxes": boxes,
        "box_labels": [f"thing{i}" for i in range(len(boxes))],
        "box_crowd": [False] * len(boxes),
        "relevant": [{"boxes": g, "words": ["thing"] * len(g)} for g in groups],
    }
    pta = patch_coverage(boxes, groups, GRID) if boxes else None
    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    return Sample(key=key, image=jpeg(pixels), meta=meta, pta=pta)


def write_dataset(root, samples_per_shard: list[list[Sample]]) -> list[str]:
    sizes = {}
    for s, samples in enumerate(samples_per_shard):
        name = f"{s:06d}.tar"
        with open(root / name, "wb") as f, ShardWriter(f, GRID) as writer:
            for sample in samples:
                writer.write(sample)
        sizes[name] = len(samples)
    write_sizes(str(root), sizes)
    return [s.key for shard in samples_per_shard for s in shard]


def config(root, **kw) -> LoaderConfig:
    base = {"shards": str(root), "img_size": 32, "patch_size": 8, "batch_size": 3, "num_workers": 0}
    return LoaderConfig(**{**base, **kw})


def collect(loader: StreamingLoader) -> dict[str, dict]:
    seen = {}
    for batch in loader:
        B = len(batch["keys"])
        assert batch["image"].shape == (B, 3, 32, 32) and batch["image"].dtype == torch.float32
        assert batch["coverage"].shape == (B, GRID, GRID) and batch["coverage"].dtype == torch.uint8
        assert batch["input_ids"].shape[0] == B and batch["has_labels"].dtype == torch.bool
        for i, key in enumerate(batch["keys"]):
            assert key not in seen, f"{key} seen twice"
            seen[key] = {k: batch[k][i] for k in ("image", "coverage", "has_labels", "captions", "box", "has_box")}
    return seen


@pytest.fixture
def dataset(tmp_path):
    # 4 shards of 5; sample 2 of each shard has no boxes
    shards = [
        [make_sample(f"coco-{s}{i:02d}", num_captions=1 + i % 4, boxes=[] if i == 2 else None) for i in range(5)]
        for s in range(4)
    ]
    return tmp_path, write_dataset(tmp_path, shards)


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="patch_size"):
        LoaderConfig(shards=str(tmp_path), img_size=30, patch_size=8)
    with pytest.raises(ValueError, match="flip_p"):
        LoaderConfig(shards=str(tmp_path), flip_p=2.0)
    with pytest.raises(ValueError, match="shards"):
        LoaderConfig(shards=[])


def test_every_sample_once_per_epoch_across_ranks_and_workers(dataset):
    root, keys = dataset
    cfg = config(root, num_workers=2, shuffle_buffer=4)
    assert epoch_samples(cfg) == len(keys) == 20
    assert batches_per_epoch(cfg, world_size=2) == 4
    for epoch in (0, 1):
        per_rank = []
        for rank in range(2):
            loader = StreamingLoader(cfg, tokenize, rank=rank, world_size=2)
            loader.set_epoch(epoch)
            per_rank.append(set(collect(loader)))
            assert loader.stats.num_skipped == 0 and loader.stats.num_samples == len(per_rank[-1])
            assert len(loader.worker_stats) == 2  # both workers reported
        assert per_rank[0].isdisjoint(per_rank[1])
        assert per_rank[0] | per_rank[1] == set(keys)


def test_canonical_geometry_returns_the_stored_pta_row(dataset):
    root, keys = dataset
    seen = collect(StreamingLoader(config(root), tokenize, rank=0, world_size=1))
    assert set(seen) == set(keys)
    for s in range(4):
        for i in range(5):
            key = f"coco-{s}{i:02d}"
            sample = make_sample(key, num_captions=1 + i % 4, boxes=[] if i == 2 else None)
            c = choose_caption(len(sample.meta["captions"]), 0, 0, key)
            assert seen[key]["captions"] == sample.meta["captions"][c]
            if sample.pta is None:
                assert not seen[key]["has_labels"] and not seen[key]["coverage"].any()
            else:
                assert seen[key]["has_labels"]
                np.testing.assert_array_equal(seen[key]["coverage"].numpy(), sample.pta[c])


def test_other_grid_recomputes_coverage_from_boxes(dataset):
    root, _ = dataset
    seen = collect_any(StreamingLoader(config(root, img_size=64), tokenize, rank=0, world_size=1))
    sample = make_sample("coco-001", num_captions=2)
    c = choose_caption(2, 0, 0, sample.key)
    expected = patch_coverage(sample.meta["boxes"], [sample.meta["relevant"][c]["boxes"]], 8)[0]
    np.testing.assert_array_equal(seen[sample.key].numpy(), expected)


def collect_any(loader: StreamingLoader) -> dict[str, torch.Tensor]:
    return {k: batch["coverage"][i] for batch in loader for i, k in enumerate(batch["keys"])}


def test_flip_moves_coverage_with_the_image(tmp_path):
    # A box on the left half; a whole-image crop (scale 1, ratio 1 on a square image) and a forced flip.
    left_box = [[0.0, 0.25, 0.5, 0.75]]
    write_dataset(tmp_path, [[make_sample("vg-1", num_captions=1, boxes=left_box)]])
    plain = collect(StreamingLoader(config(tmp_path), tokenize, rank=0, world_size=1))["vg-1"]
    aug_cfg = config(tmp_path, augment=True, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=1.0)
    flipped = collect(StreamingLoader(aug_cfg, tokenize, rank=0, world_size=1))["vg-1"]
    cov = plain["coverage"].numpy()
    assert cov[1:3, : GRID // 2].all() and cov[:, GRID // 2 :].sum() == 0  # left half only
    np.testing.assert_array_equal(flipped["coverage"].numpy(), cov[:, ::-1])
    assert flipped["coverage"][:, : GRID // 2].sum() == 0 and flipped["coverage"][1:3, GRID // 2 :].all()
    # the caption's referent box moves too (grounding's target)
    assert plain["box"].tolist() == left_box[0] and plain["has_box"]
    torch.testing.assert_close(flipped["box"], torch.tensor([0.5, 0.25, 1.0, 0.75]))
    # the pixels moved too (resize interpolation differs a little between PIL and OpenCV)
    assert (flipped["image"] - plain["image"].flip(-1)).abs().mean() < 0.1
    assert (flipped["image"] - plain["image"]).abs().mean() > 0.3


def test_augmentation_is_deterministic_per_epoch(dataset):
    root, _ = dataset
    cfg = config(root, augment=True)

    def run(epoch):
        loader = StreamingLoader(cfg, tokenize, rank=0, world_size=1)
        loader.set_epoch(epoch)
        return collect_any(loader)

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_corrupt_members_are_skipped_and_counted(tmp_path):
    good = [make_sample(f"coco-{i}") for i in range(6)]
    write_dataset(tmp_path, [good[:3], good[3:]])
    # Rewrite shard 1 with a truncated JPEG in one sample and invalid JSON in another, as raw tar members.
    import tarfile

    path = tmp_path / "000001.tar"
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            if info.name == "coco-3.jpg":
                data = data[: len(data) // 2]
            if info.name == "coco-4.json":
                data = b'{"captions": ['
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    loader = StreamingLoader(config(tmp_path, num_workers=2), tokenize, rank=0, world_size=1)
    seen = collect(loader)
    assert set(seen) == {"coco-0", "coco-1", "coco-2", "coco-5"}
    assert loader.stats.num_skipped == 2 and loader.stats.skipped == {"image": 1, "decode": 1}
    assert loader.stats.num_samples == 4
    assert any("JSON" in e for e in loader.stats.errors)


def broken_json(tar_bytes: bytes, at: int) -> bytes:
    """A tar whose JSON member holding ``at`` no longer parses (a byte flipped in place, so the tar stays valid)."""
    assert at >= 0
    return tar_bytes[:at] + b"[" + tar_bytes[at + 1 :]


def test_counts_a_bad_sample_after_the_last_batch(tmp_path):
    write_dataset(tmp_path, [[make_sample("coco-0"), make_sample("coco-1")]])
    path = tmp_path / "000000.tar"
    data = path.read_bytes()
    path.write_bytes(broken_json(data, data.rfind(b'"schema_version"')))  # the last sample: no batch follows it
    # batch_size 1: the good sample's batch is reported before the bad one is read
    loader = StreamingLoader(config(tmp_path, shuffle_buffer=0, batch_size=1), tokenize, rank=0, world_size=1)
    seen = collect(loader)
    assert len(seen) == 1 and loader.stats.num_skipped == 1 and loader.stats.skipped == {"decode": 1}


def test_rank_comes_from_the_environment(dataset, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    loader = StreamingLoader(config(dataset[0]), tokenize)
    assert (loader.dataset.rank, loader.dataset.world_size) == (1, 2)


def test_caption_choice_is_deterministic_and_changes_across_epochs(dataset):
    root, _ = dataset

    def captions(epoch, seed=0):
        loader = StreamingLoader(config(root, seed=seed), tokenize, rank=0, world_size=1)
        loader.set_epoch(epoch)
        return {k: v["captions"] for k, v in collect(loader).items()}

    e0 = captions(0)
    assert captions(0) == e0
    e1 = captions(1)
    multi = [k for k in e0 if not k.endswith(("00", "04"))]  # i % 4 == 0: one caption
    assert any(e0[k] != e1[k] for k in multi)
    assert all(e0[k] == e1[k] for k in e0 if k not in multi)
    assert json.dumps(captions(0, seed=1)) != json.dumps(e0)


def batches_of(loader, limit: int | None = None) -> list[tuple[list[str], torch.Tensor]]:
    out = []
    for batch in loader:
        out.append((batch["keys"], batch["image"]))
        if limit is not None and len(out) == limit:
            break
    return out


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_mid_epoch_yields_the_same_batches(dataset, num_workers):
    root, _ = dataset
    cfg = config(root, num_workers=num_workers, shuffle_buffer=4, augment=True, seed=3)

    def fresh():
        loader = StreamingLoader(cfg, tokenize, rank=0, world_size=1)
        loader.set_epoch(1)
        return loader

    full_loader = fresh()
    full = batches_of(full_loader)
    assert len(full) == (7 if num_workers == 0 else 8)  # each worker batches its own 10 samples: 4 batches each
    for cut in (1, 4):
        first = fresh()
        head = batches_of(first, limit=cut)
        state = json.loads(json.dumps(first.state_dict()))  # it travels in a checkpoint as JSON
        resumed = StreamingLoader(cfg, tokenize, rank=0, world_size=1)
        resumed.load_state_dict(state)
        tail = batches_of(resumed)
        assert [k for k, _ in head + tail] == [k for k, _ in full]
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(head + tail, full, strict=True))
        assert resumed.stats.num_samples == full_loader.stats.num_samples == 20


def test_resume_keeps_the_counts_of_bad_samples_already_passed(tmp_path):
    write_dataset(tmp_path, [[make_sample(f"coco-{i}") for i in range(6)]])
    path = tmp_path / "000000.tar"
    data = path.read_bytes()
    path.write_bytes(broken_json(data, data.find(b'"schema_version"')))  # the first sample of the shard
    cfg = config(tmp_path, shuffle_buffer=0, batch_size=2)
    first = StreamingLoader(cfg, tokenize, rank=0, world_size=1)
    head = batches_of(first, limit=1)
    resumed = StreamingLoader(cfg, tokenize, rank=0, world_size=1)
    resumed.load_state_dict(first.state_dict())
    tail = batches_of(resumed)
    assert [k for keys, _ in head + tail for k in keys] == [f"coco-{i}" for i in range(1, 6)]
    assert resumed.stats.skipped == {"decode": 1} and resumed.stats.num_samples == 5


def test_resume_refuses_another_worker_count(dataset):
    root, _ = dataset
    first = StreamingLoader(config(root, num_workers=2), tokenize, rank=0, world_size=1)
    batches_of(first, limit=1)
    other = StreamingLoader(config(root, num_workers=1), tokenize, rank=0, world_size=1)
    with pytest.raises(ValueError, match="num_workers 2"):
        other.load_state_dict(first.state_dict())


@pytest.mark.timeout(60)  # without the guard it would draw bad shards forever
def test_resampled_mode_stops_when_every_shard_is_bad(tmp_path):
    write_dataset(tmp_path, [[make_sample(f"coco-{s}{i}") for i in range(3)] for s in range(2)])
    for path in tmp_path.glob("*.tar"):  # every sample's JSON is broken
        path.write_bytes(path.read_bytes().replace(b'"schema_version":', b'"schema_version"['))
    loader = StreamingLoader(config(tmp_path, resampled=True, shuffle_buffer=4), tokenize, rank=0, world_size=1)
    with pytest.raises(RuntimeError, match="no usable sample"):
        batches_of(loader)


def test_resampled_mode_gives_every_rank_a_full_nominal_epoch(dataset):
    root, keys = dataset
    cfg = config(root, resampled=True, num_workers=2, batch_size=3)
    per_rank = []
    for rank in range(2):
        loader = StreamingLoader(cfg, tokenize, rank=rank, world_size=2)
        batches = batches_of(loader)
        assert len(batches) == 20 // 2 // 3  # nominal epoch from sizes.json, full batches only
        assert all(len(k) == 3 for k, _ in batches)
        per_rank.append([k for keys_, _ in batches for k in keys_])
        assert set(per_rank[-1]) <= set(keys)
        assert per_rank[-1] == [
            k for keys_, _ in batches_of(StreamingLoader(cfg, tokenize, 0 + rank, 2)) for k in keys_
        ]
    assert per_rank[0] != per_rank[1]  # each rank draws its own shards


def test_vqa_answers_are_drawn_per_epoch_by_how_many_gave_them(dataset, tmp_path):
    root, keys = dataset
    table = tmp_path / "answers.parquet"
    rows = [{"key": k, "index": 0, "answers": ["red", "red", "red", "blue"]} for k in keys[1:]]  # keys[0]: none
    pq.write_table(pa.Table.from_pylist(rows), table)
    drawn, skipped = [], 0
    for epoch in range(12):
        loader = StreamingLoader(config(root, answers=str(table)), tokenize, rank=0, world_size=1)
        loader.set_epoch(epoch)
        for batch in loader:
            assert batch["answer_ids"].shape[0] == len(batch["keys"]) == len(batch["answers"])
            drawn += [a for a, c in zip(batch["answers"], batch["captions"], strict=True) if c.startswith("caption 0")]
        skipped += loader.stats.skipped.get("answer", 0)
    assert skipped >= 1  # a question without answers is skipped and counted, epoch after epoch
    share = drawn.count("red") / len(drawn)
    assert set(drawn) == {"red", "blue"} and 0.6 < share < 0.9  # 3 of 4 gave "red"
