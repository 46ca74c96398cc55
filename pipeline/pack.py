"""Pack stage: the source rows of one shard -> its tar, Parquet manifest and stats (DESIGN sections 4, 5, 10).

No Ray here: ``jobs/pack.py`` maps ``ShardPacker`` onto Ray Data, and tests call it directly.

- **Plan.** Every source row (ingest's rejected rows included, so counts add up) goes to the shard given by the
  rank of its key's 64-bit blake2b hash: rows sorted by (hash, key), cut every ``samples_per_shard``. The plan is
  kept as the hashes where shards start (``ShardPlan``), so a worker finds a row's shard from its key alone, and
  the plan does not depend on the number of workers or the order anything runs in.
- **Per row.** A row ingest rejected stays rejected. Otherwise the image is fetched (``pipeline.fetch``) and
  processed (``pipeline.images``); boxes (pixels of the annotated size) are clipped and normalized, and
  ``pta.npy`` is the caption-wise patch coverage for the canonical geometry (``manifests.labels``). A box that
  lies outside the image at pack time (sources without an annotated size are only clipped here) is dropped and
  counted, and caption box indices are renumbered. If the annotated size has another aspect ratio than the
  decoded image (width and height swapped, a different file under the same name), boxes would land in the wrong
  place: a row with boxes is then rejected as ``size_mismatch``; without boxes, it does not matter.
- **Per shard.** Rows are written in plan order, except that the first sample with a grounded caption leads
  (``grounded_first``, for readers that type columns from a shard's first samples); every sample carries the same
  members (an image without boxes stores an empty ``[0, G, G]`` grid). The tar and the manifest go to temporary
  names and are renamed when complete, then the stats file, the done-marker, is written last
  (``manifests.dataset``). The same rows and config give the same bytes, whichever worker runs the shard and however
  often it is retried.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from hashlib import blake2b

import cv2
import numpy as np
import pyarrow as pa

from manifests.dataset import Geometry, ShardStats, ok_row, rejected_row, write_manifest, write_stats
from manifests.labels import patch_coverage
from manifests.samples import Sample, ShardWriter
from manifests.schema import SCHEMA_VERSION, STATUS_OK, shard_files, shard_name, split_key
from pipeline.fetch import ImageFetcher, filesystem
from pipeline.geometry import clip_xyxy, normalize
from pipeline.images import ImageConfig, ImageError, StoredImage, library_versions, process_image

# What decides a shard's bytes besides the config and the source: the JPEG codec, numpy (the PTA grids) and pyarrow
# (the Parquet manifest). Recorded in every shard's stats and in dataset.json.
LIBRARIES = library_versions() | {"numpy": np.__version__, "pyarrow": pa.__version__}

SIZE_MISMATCH = "size_mismatch"
ASPECT_TOLERANCE = 0.02  # relative aspect-ratio difference still taken as the same picture (rounded sizes)
KILL_HOOK = "COPA_TEST_KILL_WORKER"  # tests: a path; the first worker to create it kills itself mid-shard


@dataclass
class PackConfig:
    """How source rows become shards. Everything here is recorded in ``dataset.json`` and must match to resume."""

    samples_per_shard: int = 5000  # input rows per shard (rejected rows included), DESIGN section 4
    image: ImageConfig = field(default_factory=ImageConfig)  # the stored <key>.jpg
    geometry: Geometry = field(default_factory=Geometry)  # canonical PTA label geometry

    def __post_init__(self) -> None:
        if not isinstance(self.samples_per_shard, int) or self.samples_per_shard < 1:
            raise ValueError(f"PackConfig.samples_per_shard must be a positive integer, got {self.samples_per_shard!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "pack config") -> PackConfig:
        """Build from nested dicts (a YAML file, ``dataset.json``); unknown keys are errors naming ``where``."""
        parts = {"image": ImageConfig, "geometry": Geometry}
        _check_keys(data, {f.name for f in fields(cls)}, where)
        kwargs = {}
        for name, value in data.items():
            if name in parts:
                if not isinstance(value, dict):
                    raise ValueError(f"{where}: '{name}' must be a mapping, got {value!r}")
                _check_keys(value, {f.name for f in fields(parts[name])}, f"{where}: {name}")
                value = parts[name](**value)
            kwargs[name] = value
        return cls(**kwargs)


def _check_keys(data: object, known: set[str], where: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown settings {unknown}; known: {sorted(known)}")


# --- the shard plan ------------------------------------------------------------------------------------------------


def key_hashes(keys: list[str], chunk: int = 1 << 16) -> np.ndarray:
    """64-bit blake2b of each key, as uint64: the order of samples across shards (DESIGN section 4). Hashed in
    chunks, so only ``chunk`` digests exist as Python objects at a time."""
    out = np.empty(len(keys), dtype=np.uint64)
    for start in range(0, len(keys), chunk):
        digests = b"".join(blake2b(key.encode("utf-8"), digest_size=8).digest() for key in keys[start : start + chunk])
        out[start : start + chunk] = np.frombuffer(digests, dtype=">u8")
    return out


@dataclass(frozen=True)
class ShardPlan:
    """Where each shard starts in hash order; ``shard_of`` places any key without the other keys."""

    num_rows: int
    boundaries: np.ndarray  # uint64 [num_shards - 1]: the smallest hash of shards 1, 2, ...
    sizes: tuple[int, ...]  # rows per shard

    @property
    def num_shards(self) -> int:
        return len(self.sizes)

    def shard_of(self, hashes: np.ndarray) -> np.ndarray:
        return shard_index(self.boundaries, hashes)


def shard_index(boundaries: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """The shard of each hash, given where shards start (``ShardPlan.boundaries``)."""
    return np.searchsorted(boundaries, hashes, side="right")


def plan_shards(hashes: np.ndarray, samples_per_shard: int) -> ShardPlan:
    """Cut the sorted hashes every ``samples_per_shard``. Rows whose hash equals a boundary all go to the later
    shard, so a (astronomically rare) tie can make a shard one row shorter; the plan stays deterministic."""
    ordered = np.sort(hashes)
    boundaries = ordered[samples_per_shard::samples_per_shard].copy()
    sizes = np.bincount(shard_index(boundaries, ordered), minlength=len(boundaries) + 1) if len(ordered) else []
    return ShardPlan(len(ordered), boundaries, tuple(int(n) for n in sizes))


# --- one sample ----------------------------------------------------------------------------------------------------


def source_location(row: dict) -> str:
    location = f"{row['image_root']}/{row['image_path']}" if row["image_path"] else row["image_root"]
    return location + (f"::{row['image_member']}" if row.get("image_member") else "")


def grounded_first(rows: list[dict]) -> list[dict]:
    """``rows`` in plan order, except that the first one with a caption grounded to a box leads the shard.

    Hugging Face ``datasets`` types every column from the first five samples of the first shard; a web sample's
    empty ``boxes`` and ``relevant`` lists carry no element type, so a shard that opens with web samples could not
    be loaded there. One grounded sample in front types them all. Still a function of the rows alone."""
    first = next((i for i, row in enumerate(rows) if any(rel["boxes"] for rel in row["relevant"])), None)
    return rows if not first else [rows[first], *rows[:first], *rows[first + 1 :]]


def make_sample(row: dict, image: StoredImage, geometry: Geometry, box_drops: Counter) -> Sample:
    """The stored sample of a source row whose image was processed; raises ``ImageError`` on ``size_mismatch``."""
    width, height = row["width"] or image.orig_width, row["height"] or image.orig_height
    source_boxes = row["boxes"] or []
    if source_boxes and abs(width * image.orig_height - height * image.orig_width) > ASPECT_TOLERANCE * max(
        width * image.orig_height, height * image.orig_width
    ):
        raise ImageError(
            SIZE_MISMATCH,
            f"annotated size {width}x{height} and image size {image.orig_width}x{image.orig_height} differ in "
            "aspect ratio: the boxes would not fit the picture",
        )
    boxes, renumber = [], {}
    for i, box in enumerate(source_boxes):
        clipped, status = clip_xyxy(box, width, height)
        normalized = normalize(clipped, width, height) if clipped is not None else None
        if normalized is None or normalized[2] <= normalized[0] or normalized[3] <= normalized[1]:
            box_drops[status if clipped is None else "empty_box"] += 1
            continue
        renumber[i] = len(boxes)
        boxes.append(normalized)
    kept = list(renumber)
    relevant = [
        {"boxes": [renumber[b] for b in rel["boxes"] if b in renumber], "words": list(rel["words"])}
        for rel in row["relevant"]
    ]
    source, image_id = split_key(row["key"])
    meta = {
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "image_id": image_id,
        "captions": list(row["captions"]),
        "orig_width": image.orig_width,
        "orig_height": image.orig_height,
        "width": image.width,
        "height": image.height,
        "boxes": boxes,
        "box_labels": [row["box_labels"][i] for i in kept],
        "box_crowd": [bool(row["box_crowd"][i]) for i in kept],
        "relevant": relevant,
    }
    pta = patch_coverage(boxes, [rel["boxes"] for rel in relevant], geometry.grid) if boxes else None
    return Sample(key=row["key"], image=image.jpeg, meta=meta, pta=pta)


# --- one shard -----------------------------------------------------------------------------------------------------


class ShardPacker:
    """Packs whole shards into the output folder ``out`` (a local path or a URI)."""

    def __init__(self, out: str, config: PackConfig):
        self.fs, self.root = filesystem(out)
        self.fs.create_dir(self.root, recursive=True)
        self.config = config
        self.fetcher = ImageFetcher()
        # A pack worker is one core (Ray runs one per CPU): OpenCV's thread pool, which the bilinear resize would
        # otherwise spread over every core, only adds contention. Process-wide, as OpenCV offers it.
        cv2.setNumThreads(1)

    def _outcome(self, row: dict, shard: str, box_drops: Counter) -> tuple[Sample | None, dict]:
        """(the sample or None, its manifest row)."""
        location = source_location(row)
        if row["status"] != STATUS_OK:
            return None, rejected_row(row["key"], shard, location, row["status"], row["error"] or "", row["captions"])
        try:
            data, location = self.fetcher.fetch(row["image_root"], row["image_path"], row.get("image_member"))
            sample = make_sample(row, process_image(data, self.config.image), self.config.geometry, box_drops)
        except ImageError as err:
            return None, rejected_row(row["key"], shard, location, err.reason, err.message, row["captions"])
        return sample, ok_row(sample, shard, location, len(sample.image))

    def pack(self, index: int, rows: list[dict]) -> ShardStats:
        """Write shard ``index`` from its rows (any order: they are put in plan order here)."""
        start = time.perf_counter()
        name = shard_name(index)
        files = shard_files(name)
        hashes = key_hashes([r["key"] for r in rows]).tolist()
        rows = grounded_first([rows[i] for i in sorted(range(len(rows)), key=lambda i: (hashes[i], rows[i]["key"]))])
        tmp = {kind: f"{self.root}/{files[kind]}.tmp-{uuid.uuid4().hex}" for kind in ("tar", "manifest")}
        manifest, rejected, box_drops = [], Counter(), Counter()
        with self.fs.open_output_stream(tmp["tar"]) as f, ShardWriter(f, self.config.geometry.grid) as writer:
            for i, row in enumerate(rows):
                if i == len(rows) // 2:
                    _maybe_kill_for_test()
                sample, record = self._outcome(row, name, box_drops)
                if sample is None:
                    rejected[record["status"]] += 1
                else:
                    writer.write(sample)
                manifest.append(record)
        write_manifest(manifest, tmp["manifest"], self.fs)
        for kind, path in tmp.items():
            self.fs.move(path, f"{self.root}/{files[kind]}")
        stats = ShardStats(
            shard=name,
            num_input=len(rows),
            num_ok=len(rows) - sum(rejected.values()),
            num_rejected=sum(rejected.values()),
            rejected=dict(sorted(rejected.items())),
            tar_bytes=self.fs.get_file_info(f"{self.root}/{files['tar']}").size,
            seconds=round(time.perf_counter() - start, 3),
            boxes_dropped=dict(sorted(box_drops.items())),
            libraries=LIBRARIES,
        )
        write_stats(self.root, stats, self.fs)
        return stats


def _maybe_kill_for_test() -> None:
    """Fault injection for the retry test: with ``COPA_TEST_KILL_WORKER`` set to a path, the first worker to
    create that file dies here, half-way through a shard, as a crashed or preempted node would."""
    path = os.environ.get(KILL_HOOK)
    if not path:
        return
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)
