"""The streaming loader (DESIGN section 8): shards -> the batch dict ``model.copa.COPA`` trains on.

A webdataset pipeline of small explicit stages, each a plain generator:

    shard list (directory, list of paths/URLs, brace pattern) -> shuffle shards by (seed, epoch) -> split by rank
    -> split by DataLoader worker -> tar members grouped by key -> shuffle buffer -> decode (``decode_sample``)
    -> pick one caption by (seed, epoch, key) -> image to ``img_size`` square (whole image resized, or a random
    resized crop + horizontal flip with the boxes moved by albumentations) -> coverage grid -> batch + tokenize.

Labels stay *coverage* (uint8 0..255); the trainer turns them into 0/1 with its ``tau``. Without augmentation and
when ``img_size // patch_size`` equals the grid stored in ``pta.npy`` the stored row is used as it is (the stored
geometry is the whole image resized square, so only the grid matters); otherwise coverage is recomputed from the
(moved) boxes with ``manifests.labels.patch_coverage``, the function the packer used. Flips are not applied to the
captions: words like "left"/"right" stay as they are, a known label noise that the PTA grid itself does not have.

``has_labels`` is True when the sample has boxes and the chosen caption names at least one of them: a caption that
alignment matched to no box says nothing about where its content is, so its all-zero grid is not supervised.

Bad samples (unreadable tar, invalid JSON, truncated JPEG, a member missing) are skipped and counted per reason.
Each DataLoader worker counts its own; every batch carries the worker's position (batches, raw samples consumed,
counters) to the main process, and each worker ends with one counters-only item, so ``StreamingLoader.stats`` is
complete at the end of an epoch. Counters restart with each epoch (workers are started per epoch).

Exact resume: the position of the batches yielded so far is ``StreamingLoader.state_dict()``. Every stage is
deterministic in (seed, epoch, rank, worker), so a worker resumes by replaying its consumed raw samples through
the shard reader and the shuffle buffer without decoding them, and the main process restores the fixed batch order.

Resampled mode (multi-node): each rank and worker draws shards with replacement, so no rank runs dry before the
others; an epoch is then a nominal ``sizes.json`` total / world size, in full batches.

Shape legend: B batch, S ``img_size``, G grid (``img_size // patch_size``), T text tokens.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice

import albumentations as A
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import webdataset as wds
from PIL import Image

from manifests.dataset import read_dataset_info, read_sizes
from manifests.labels import patch_coverage
from manifests.samples import Sample, decode_sample
from manifests.schema import DATASET_FILE, SHARD_RE

# Pixels are scaled to [-1, 1]: the model has no normalisation layer of its own.
IMAGE_MEAN = 0.5
IMAGE_STD = 0.5
STATS_KEY = "__stats__"  # a batch's worker position; removed by StreamingLoader before the batch is yielded

Tokenize = Callable[[list[str]], dict]  # captions -> {"input_ids": long [B, T], "attention_mask": [B, T]}


@dataclass
class LoaderConfig:
    """What the loader reads and how it turns samples into batches."""

    shards: str | list[str]  # a dataset directory, a list of shard paths/URLs, or a brace pattern ("d/{000..009}.tar")
    img_size: int = 256  # model input side in pixels (square)
    patch_size: int = 16  # pixels per patch side; the coverage grid is img_size // patch_size
    batch_size: int = 32  # samples per batch per rank
    seed: int = 0  # drives shard order, the shuffle buffer, caption choice and augmentation
    shuffle_buffer: int = 1000  # samples held for shuffling per worker; 0 keeps shard order
    shuffle_shards: bool = True  # reorder shards every epoch (identically on every rank)
    augment: bool = False  # random resized crop + horizontal flip, boxes moved with the image
    crop_scale: tuple[float, float] = (0.5, 1.0)  # area fraction of the random crop
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio range of the random crop
    flip_p: float = 0.5  # probability of a horizontal flip (1.0 forces it)
    num_workers: int = 2  # DataLoader worker processes per rank; 0 iterates in the calling process
    drop_last: bool = False  # drop each worker's final partial batch
    resampled: bool = False  # draw shards with replacement per rank and worker; epochs of sizes.json / world size
    answers: str | None = None  # VQA: an answers table (answers.parquet); each question gets one answer per epoch

    def __post_init__(self):
        if isinstance(self.shards, tuple):
            self.shards = list(self.shards)
        if not isinstance(self.shards, str | list) or not self.shards:
            raise ValueError(f"shards must be a non-empty path, pattern or list, got {self.shards!r}")
        if self.img_size <= 0 or self.patch_size <= 0 or self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} must be a positive multiple of patch_size {self.patch_size}")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {self.shuffle_buffer}")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")
        lo, hi = self.crop_ratio
        if not 0.0 < lo <= hi:
            raise ValueError(f"crop_ratio must satisfy 0 < lo <= hi, got {self.crop_ratio}")
        if not 0.0 <= self.flip_p <= 1.0:
            raise ValueError(f"flip_p must be in [0, 1], got {self.flip_p}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size


@dataclass
class LoaderStats:
    """Counters of one worker (or, summed, of one rank) for one epoch."""

    num_samples: int = 0  # samples delivered in batches
    num_skipped: int = 0  # bad samples skipped
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    errors: list[str] = field(default_factory=list)  # the first few error messages, for the log

    MAX_ERRORS = 10

    def skip(self, reason: str, err: BaseException) -> None:
        self.num_skipped += 1
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.errors) < self.MAX_ERRORS:
            self.errors.append(f"{reason}: {type(err).__name__}: {err}")

    def add(self, other: LoaderStats) -> None:
        self.num_samples += other.num_samples
        self.num_skipped += other.num_skipped
        for reason, count in other.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + count
        self.errors.extend(other.errors[: max(0, self.MAX_ERRORS - len(self.errors))])


# ---- shard lists and epoch length -------------------------------------------------------------------------------


def resolve_shards(shards: str | list[str]) -> list[str]:
    """A dataset directory (its ``NNNNNN.tar`` files), a list of paths/URLs, or a brace pattern -> shard URLs."""
    if isinstance(shards, list):
        return [str(s) for s in shards]
    if os.path.isdir(shards):
        names = sorted(n for n in os.listdir(shards) if n.endswith(".tar") and SHARD_RE.fullmatch(n[:-4]))
        if not names:
            raise ValueError(f"shards: no NNNNNN.tar files in {shards}")
        return [os.path.join(shards, n) for n in names]
    return wds.shardlists.expand_urls(shards)  # brace ranges, "::" lists, pipe: and remote URLs


ANSWERS_FILE = "answers.parquet"  # a VQA dataset's answers table, beside its shards


def answers_table(urls: list[str]) -> str:
    """The answers table of the dataset the shards ``urls`` come from: ``answers.parquet`` in their folder."""
    path = os.path.join(os.path.dirname(urls[0]) or ".", ANSWERS_FILE)
    if not os.path.isfile(path):
        raise ValueError(
            f"{path}: no answers table beside the shards; VQA shards are packed from a source manifest whose "
            "answers table 'copa ingest' wrote (<manifest>.answers.parquet), which 'copa pack' copies there"
        )
    return path


def check_datasets(urls: list[str]) -> None:
    """Refuse shards of a dataset packed with another schema version: the ``dataset.json`` of every local folder
    the shards come from (where it has one) must read, and the error names the file and both versions."""
    for root in sorted({os.path.dirname(u) or "." for u in urls if os.path.isfile(u)}):
        if os.path.isfile(os.path.join(root, DATASET_FILE)):
            read_dataset_info(root)


def epoch_samples(cfg: LoaderConfig, sizes_root: str | None = None) -> int:
    """Samples in one pass over ``cfg.shards``, from ``sizes.json`` (in ``sizes_root``, default the shards' folder)."""
    urls = resolve_shards(cfg.shards)
    root = sizes_root or (cfg.shards if isinstance(cfg.shards, str) and os.path.isdir(cfg.shards) else None)
    root = root or os.path.dirname(urls[0])
    sizes = read_sizes(root)
    missing = [u for u in urls if os.path.basename(u) not in sizes]
    if missing:
        raise ValueError(f"{root}/sizes.json does not list shards {missing[:3]}")
    return sum(sizes[os.path.basename(u)] for u in urls)


def batches_per_epoch(cfg: LoaderConfig, world_size: int = 1, sizes_root: str | None = None) -> int:
    """Batches one rank gets per epoch if samples were spread evenly (shard-level splits make it approximate)."""
    per_rank = epoch_samples(cfg, sizes_root) // world_size
    return per_rank // cfg.batch_size if cfg.drop_last else -(-per_rank // cfg.batch_size)


# ---- per-sample stages ------------------------------------------------------------------------------------------


def stable_seed(*parts) -> int:
    """A 63-bit seed from ``parts``, the same in every process and Python run (``hash()`` is salted)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def choose_caption(num_captions: int, seed: int, epoch: int, key: str) -> int:
    return stable_seed("caption", seed, epoch, key) % num_captions


def build_augment(cfg: LoaderConfig) -> A.Compose:
    return A.Compose(
        [
            A.RandomResizedCrop(size=(cfg.img_size, cfg.img_size), scale=cfg.crop_scale, ratio=cfg.crop_ratio, p=1.0),
            A.HorizontalFlip(p=cfg.flip_p),
        ],
        # min_visibility 0: a sliver of a box left in the crop still covers its patches.
        bbox_params=A.BboxParams(format="albumentations", label_fields=["box_ids"], clip=True, min_visibility=0.0),
    )


def load_rgb(data: bytes, at_least: int | None = None) -> Image.Image:
    """Decoded RGB image; with ``at_least``, a JPEG is decoded at a reduced scale (DCT scaling, 1/2 to 1/8) that
    keeps both sides >= ``at_least`` pixels, which halves the decode of a 384 px image for a 128 px model."""
    image = Image.open(io.BytesIO(data))
    if at_least is not None:
        image.draft("RGB", (at_least, at_least))
    return image.convert("RGB")  # forces the decode, so a truncated JPEG raises here


def square_pixels(data: bytes, size: int) -> np.ndarray:
    """The canonical geometry (DESIGN section 5): the whole image resized to ``size`` x ``size``, uint8 [S, S, 3].

    Bilinear with Pillow's box pre-reduction (``reducing_gap``): antialiased, and about 1.7x cheaper than bicubic
    on a 420 px image (``copa bench loader``)."""
    rgb = load_rgb(data, at_least=size)
    return np.array(rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0))


def to_tensor(pixels_HWC: np.ndarray) -> torch.Tensor:
    image_CHW = torch.from_numpy(np.ascontiguousarray(pixels_HWC)).permute(2, 0, 1).float() / 255.0
    return (image_CHW - IMAGE_MEAN) / IMAGE_STD


def canonical_coverage(sample: Sample, captions: list[int], grid: int) -> np.ndarray:
    """uint8 [len(captions), G, G] coverage of those captions at the canonical geometry (the whole image resized
    square): the stored ``pta.npy`` rows when the grid is the packer's, else recomputed from the boxes (the function
    the packer used); zeros for a sample without boxes."""
    if sample.pta is None:
        return np.zeros((len(captions), grid, grid), np.uint8)
    if sample.pta.shape[-1] == grid:
        return sample.pta[captions]
    boxes = np.asarray(sample.meta["boxes"], dtype=np.float64).reshape(-1, 4)
    return patch_coverage(boxes, [list(sample.meta["relevant"][c]["boxes"]) for c in captions], grid)


def load_answers(path: str) -> dict[tuple[str, int], list[str]]:
    """(key, question index) -> the question's answers, from an answers table (``copa ingest`` writes it for VQA
    sources, ``copa pack`` copies it to ``<dataset>/answers.parquet``)."""
    try:
        table = pq.read_table(path, columns=["key", "index", "answers"])
    except (FileNotFoundError, pa.ArrowInvalid) as err:
        raise ValueError(f"{path}: not a readable answers table ({err})") from err
    keys, index, answers = (table[name].to_pylist() for name in ("key", "index", "answers"))
    return {(k, i): a for k, i, a in zip(keys, index, answers, strict=True) if a}


class SampleTransform:
    """One decoded sample -> image, caption and coverage for one epoch. Deterministic in (seed, epoch, key).

    Also the caption's first relevant box (normalized x0, y0, x1, y1, moved with the image; for grounding, where
    the caption is a referring expression and the box its referent) and, with ``cfg.answers``, one of the
    question's answers, drawn by (seed, epoch, key) so an answer given by more people is drawn more often."""

    def __init__(self, cfg: LoaderConfig):
        self.cfg = cfg
        self.augment = build_augment(cfg) if cfg.augment else None
        self.answers = load_answers(cfg.answers) if cfg.answers else None

    def __call__(self, sample: Sample, epoch: int) -> dict:
        cfg, meta = self.cfg, sample.meta
        c = choose_caption(len(meta["captions"]), cfg.seed, epoch, sample.key)
        group = list(meta["relevant"][c]["boxes"])
        boxes = np.asarray(meta["boxes"], dtype=np.float64).reshape(-1, 4)
        has_labels = sample.pta is not None and len(group) > 0
        if self.augment is None:
            pixels = square_pixels(sample.image, cfg.img_size)
            coverage = canonical_coverage(sample, [c], cfg.grid)[0]
            box = boxes[group[0]] if group else None
        else:
            self.augment.set_random_seed(stable_seed("augment", cfg.seed, epoch, sample.key))
            # albumentations refuses empty boxes; they cover nothing, so they are simply not passed
            keep = [i for i in range(len(boxes)) if boxes[i, 2] > boxes[i, 0] and boxes[i, 3] > boxes[i, 1]]
            image = np.asarray(load_rgb(sample.image))
            out = self.augment(image=image, bboxes=boxes[keep].reshape(-1, 4), box_ids=keep)
            pixels = out["image"]
            moved = np.asarray(out["bboxes"], dtype=np.float64).reshape(-1, 4)
            position = {int(i): j for j, i in enumerate(out["box_ids"])}
            moved_group = [position[i] for i in group if i in position]  # boxes cropped away cover nothing
            coverage = patch_coverage(moved, [moved_group], cfg.grid)[0]
            box = moved[moved_group[0]] if moved_group else None
        item = {
            "key": sample.key,
            "image": to_tensor(pixels),
            "caption": meta["captions"][c],
            "coverage": torch.from_numpy(np.ascontiguousarray(coverage, dtype=np.uint8)),
            "has_labels": has_labels,
            "box": torch.tensor(box if box is not None else [0.0] * 4, dtype=torch.float32),
            "has_box": box is not None,
        }
        if self.answers is not None:
            answers = self.answers.get((sample.key, c))
            if not answers:
                raise LookupError(f"sample {sample.key} question {c}: no answers in {cfg.answers}")
            item["answer"] = answers[stable_seed("answer", cfg.seed, epoch, sample.key) % len(answers)]
        return item


# ---- the pipeline -----------------------------------------------------------------------------------------------


@dataclass
class WorkerPosition:
    """How far one DataLoader worker got in an epoch: batches delivered, raw samples consumed, its counters."""

    batches: int = 0
    consumed: int = 0
    stats: dict | None = None
    done: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def worker_info() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class ShardStream(torch.utils.data.IterableDataset):
    """One rank's stream of batches for ``epoch``; each DataLoader worker runs its own copy with its own counters."""

    def __init__(self, cfg: LoaderConfig, tokenize: Tokenize, rank: int, world_size: int):
        self.cfg, self.tokenize, self.rank, self.world_size = cfg, tokenize, rank, world_size
        self.urls = resolve_shards(cfg.shards)
        self.transform = SampleTransform(cfg)
        self.epoch = 0
        self.start: dict[int, WorkerPosition] = {}  # per worker, where to resume inside the epoch

    def shard_list(self) -> Iterator[dict]:
        urls = list(self.urls)
        if self.cfg.shuffle_shards:  # same seed on every rank, so the rank split below is a partition
            random.Random(stable_seed("shards", self.cfg.seed, self.epoch)).shuffle(urls)
        for url in islice(urls, self.rank, None, self.world_size):
            yield {"url": url}

    def decoded(self, raw: Iterator[dict], stats: LoaderStats) -> Iterator[Sample]:
        for item in raw:
            members = {k: v for k, v in item.items() if not k.startswith("__")}
            try:
                yield decode_sample(item["__key__"], members)
            except (ValueError, TypeError, KeyError) as err:
                stats.skip("decode", err)

    def transformed(self, samples: Iterator[Sample], stats: LoaderStats) -> Iterator[dict]:
        for sample in samples:
            try:
                yield self.transform(sample, self.epoch)
            except (OSError, ValueError, SyntaxError) as err:  # PIL raises OSError for truncated/unknown images
                stats.skip("image", err)
            except LookupError as err:  # a VQA question without answers
                stats.skip("answer", err)

    def collate(self, items: list[dict]) -> dict:
        tokens = self.tokenize([it["caption"] for it in items])
        batch = {
            "image": torch.stack([it["image"] for it in items]),
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
            "coverage": torch.stack([it["coverage"] for it in items]),
            "has_labels": torch.tensor([it["has_labels"] for it in items], dtype=torch.bool),
            "box": torch.stack([it["box"] for it in items]),
            "has_box": torch.tensor([it["has_box"] for it in items], dtype=torch.bool),
            "keys": [it["key"] for it in items],
            "captions": [it["caption"] for it in items],
        }
        if self.cfg.answers:
            answers = [it["answer"] for it in items]
            tokens = self.tokenize(answers)
            batch |= {"answer_ids": tokens["input_ids"], "answer_mask": tokens["attention_mask"], "answers": answers}
        return batch

    def __iter__(self) -> Iterator[dict]:
        worker, num_workers = worker_info()
        start = self.start.get(worker) or WorkerPosition()
        stats = LoaderStats(**start.stats) if start.stats else LoaderStats()
        skipping = start.consumed > 0  # replaying consumed samples: their tar errors are in the saved stats already

        def on_tar_error(err: BaseException) -> bool:
            if not skipping:
                stats.skip("tar", err)
            return True  # keep going with the next member or shard

        usable = 0  # samples replayed or transformed: what tells the resampled draw that its shards give samples
        if self.cfg.resampled:
            urls = self.resampled_shards(worker, lambda: usable)
            quota = self.resampled_quota(worker, num_workers)
        else:
            urls, quota = wds.split_by_worker(self.shard_list()), None
        raw = wds.tarfile_to_samples(handler=on_tar_error)(urls)
        if self.cfg.shuffle_buffer:
            rng = random.Random(stable_seed("samples", self.cfg.seed, self.epoch, self.rank, worker))
            initial = min(100, self.cfg.shuffle_buffer)
            raw = wds.filters._shuffle(raw, bufsize=self.cfg.shuffle_buffer, initial=initial, rng=rng)
        # Resume: replay the raw samples consumed before (tar reads and the shuffle, no decoding), so the shuffle
        # buffer and the shard position are exactly where they were.
        for _ in islice(raw, start.consumed):
            usable += 1
        skipping, consumed = False, start.consumed

        def counted(items: Iterator[dict]) -> Iterator[dict]:
            nonlocal consumed
            for item in items:
                consumed += 1
                yield item

        def used(items: Iterator[dict]) -> Iterator[dict]:
            nonlocal usable
            for item in items:
                usable += 1
                yield item

        items = used(self.transformed(self.decoded(counted(raw), stats), stats))
        index = start.batches
        while quota is None or index < quota:
            batch = list(islice(items, self.cfg.batch_size))
            if not batch or (len(batch) < self.cfg.batch_size and self.cfg.drop_last):
                break
            out = self.collate(batch)
            stats.num_samples += len(batch)
            index += 1
            out[STATS_KEY] = (worker, WorkerPosition(index, consumed, asdict(stats)).to_json())
            yield out
        # Always last: the final counters (bad samples after the last batch count too) and "this worker is done".
        yield {STATS_KEY: (worker, WorkerPosition(index, consumed, asdict(stats), done=True).to_json())}

    def resampled_shards(self, worker: int, usable: Callable[[], int]) -> Iterator[dict]:
        """Resampled mode: shards drawn with replacement, forever; each rank and worker its own draw.

        ``usable()`` counts the samples that came through so far. When many draws in a row (every shard several
        times over, plus what the shuffle buffer takes in before anything comes out) add none, the shards are all
        bad, and a RuntimeError ends the run instead of drawing forever."""
        rng = random.Random(stable_seed("resample", self.cfg.seed, self.epoch, self.rank, worker))
        limit = 3 * len(self.urls) + self.cfg.shuffle_buffer
        barren, before = 0, usable()
        while True:
            now = usable()
            barren, before = (0 if now > before else barren + 1), now
            if barren > limit:
                raise RuntimeError(
                    f"LoaderConfig.shards {self.cfg.shards!r}: {barren} shards drawn in a row (resampled mode) gave "
                    f"no usable sample; every shard looks bad"
                )
            yield {"url": rng.choice(self.urls)}

    def resampled_quota(self, worker: int, num_workers: int) -> int:
        """Resampled mode: a nominal epoch (``sizes.json`` / world size) of full batches, spread over workers."""
        per_rank = epoch_samples(self.cfg) // self.world_size // self.cfg.batch_size
        return per_rank // num_workers + (worker < per_rank % num_workers)


class StreamingLoader:
    """Iterate one epoch of batches for one rank; ``stats`` holds this epoch's counters, summed over workers.

    Batches come in a fixed order whatever the timing of the workers: batch i of every worker, by worker, then batch
    i + 1 (the round-robin order DataLoader itself uses, restored after a resume). ``state_dict`` is the position
    after the batches yielded so far; ``load_state_dict`` makes the next iteration continue from it, yielding the
    same batches an uninterrupted run would have (same ``num_workers`` required).

    ``rank``/``world_size`` default to what webdataset detects (``RANK``/``WORLD_SIZE`` or torch.distributed).
    """

    def __init__(self, cfg: LoaderConfig, tokenize: Tokenize, rank: int | None = None, world_size: int | None = None):
        if (rank is None) != (world_size is None):
            raise ValueError("rank and world_size go together")
        if rank is None:
            rank, world_size, _, _ = wds.utils.pytorch_worker_info()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.cfg = cfg
        self.dataset = ShardStream(cfg, tokenize, rank, world_size)
        self.epoch = 0
        self.positions: dict[int, WorkerPosition] = {}  # per worker, after the batches yielded so far
        self.resume_from: dict[int, WorkerPosition] = {}

    @property
    def num_workers(self) -> int:
        return max(1, self.cfg.num_workers)

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning at the next iteration."""
        self.epoch, self.positions, self.resume_from = epoch, {}, {}

    @property
    def worker_stats(self) -> dict[int, LoaderStats]:
        return {w: LoaderStats(**p.stats) for w, p in self.positions.items() if p.stats}

    @property
    def stats(self) -> LoaderStats:
        total = LoaderStats()
        for _, stats in sorted(self.worker_stats.items()):
            total.add(stats)
        return total

    def state_dict(self) -> dict:
        """JSON-able position: the epoch and, per worker, what the batches yielded so far consumed."""
        return {
            "epoch": self.epoch,
            "num_workers": self.num_workers,
            "workers": {str(w): asdict(p) for w, p in self.positions.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        workers = {int(w): WorkerPosition(**p) for w, p in state["workers"].items()}
        if workers and state["num_workers"] != self.num_workers:
            raise ValueError(
                f"loader position was saved with num_workers {state['num_workers']}; resuming inside an epoch needs "
                f"the same number, got {self.num_workers}"
            )
        self.epoch, self.positions, self.resume_from = state["epoch"], dict(workers), dict(workers)

    def __iter__(self) -> Iterator[dict]:
        # workers start per epoch and take a copy of the dataset with this epoch and start positions
        self.dataset.epoch, self.dataset.start = self.epoch, self.resume_from
        self.resume_from = {}
        emitted = {w: self.positions.get(w, WorkerPosition()).batches for w in range(self.num_workers)}
        pending: dict[int, deque] = {w: deque() for w in range(self.num_workers)}
        finished: set[int] = set()
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_size=None,
            num_workers=self.cfg.num_workers,
            persistent_workers=False,
            generator=torch.Generator(),  # its own seed draw, so the global torch RNG (dropout, masking) is untouched
        )
        for item in loader:
            worker, position = item.pop(STATS_KEY)
            pending[int(worker)].append((WorkerPosition(**json.loads(position)), item))
            while len(finished) < self.num_workers:  # yield what the fixed order allows
                w = min((w for w in emitted if w not in finished), key=lambda w: (emitted[w], w))
                if not pending[w]:
                    break
                position, batch = pending[w].popleft()
                self.positions[w] = WorkerPosition(position.batches, position.consumed, position.stats)
                if position.done:
                    finished.add(w)
                    continue
                emitted[w] += 1
                yield batch


__all__ = [
    "LoaderConfig",
    "LoaderStats",
    "SampleTransform",
    "StreamingLoader",
    "WorkerPosition",
    "batches_per_epoch",
    "choose_caption",
    "epoch_samples",
    "resolve_shards",
]
