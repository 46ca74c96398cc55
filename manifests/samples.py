"""Write and read one sample's tar members, deterministically.

``ShardWriter`` writes samples into a tar whose bytes depend only on the samples: members of a sample are
adjacent and sorted, and every header has the same mtime, owner and mode. (webdataset's own ``TarWriter`` stamps
the current time, so two runs would differ.) Any tar reader works on the result: ``webdataset``,
``ray.data.read_webdataset``, ``tarfile``, ``tar -tf``.
"""

from __future__ import annotations

import functools
import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from manifests.schema import (
    IMAGE_EXT,
    META_EXT,
    META_KEYS,
    PTA_EXT,
    REQUIRED_EXTS,
    TEXT_EXT,
    validate_key,
    validate_meta,
)

TAR_MTIME = 0  # fixed so that the same samples give the same bytes
TAR_MODE = 0o444


@dataclass
class Sample:
    """One image with its captions, as stored in a shard."""

    key: str
    image: bytes  # the encoded JPEG
    meta: dict  # the <key>.json member, see manifests.schema.META_FIELDS
    pta: np.ndarray | None  # uint8 [num_captions, G, G] coverage, or None when the image has no boxes

    # In a shard every sample carries the same members (column-typed readers such as Ray Data and Hugging Face
    # datasets need that): an image without boxes stores an empty [0, G, G] grid, read back as None.


def encode_pta(pta: np.ndarray) -> bytes:
    """Serialize a coverage grid as ``.npy`` (readable by ``numpy.load`` and by webdataset's npy decoder)."""
    check_pta(pta)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(pta), allow_pickle=False)
    return buf.getvalue()


def decode_pta(data: bytes) -> np.ndarray:
    return check_pta(np.load(io.BytesIO(data), allow_pickle=False))


def decode_labels(data: bytes | None) -> np.ndarray | None:
    """A sample's ``pta.npy`` as its grid, or None for an image without boxes (the empty ``[0, G, G]`` grid, or no
    member at all). An empty grid is a header-only ``.npy`` of at most 128 bytes, the same bytes for every such
    sample of a dataset, so it is parsed once (``np.load`` costs tens of microseconds, about 95% of the samples)."""
    if data is None:
        return None
    if len(data) <= _NPY_HEADER_BYTES:
        return _small_grid(data)
    return decode_pta(data)


_NPY_HEADER_BYTES = 128  # numpy pads the header of a 3-D uint8 array to 128 bytes; a non-empty grid adds its data


@functools.lru_cache(maxsize=16)
def _small_grid(data: bytes) -> None:
    if decode_pta(data).shape[0] != 0:
        raise ValueError(f"pta.npy of {len(data)} bytes holds a non-empty grid in its header's space")
    return None


def check_pta(pta: np.ndarray, num_captions: int | None = None) -> np.ndarray:
    if pta.dtype != np.uint8 or pta.ndim != 3 or pta.shape[1] != pta.shape[2]:
        raise ValueError(f"pta must be uint8 [num_captions, G, G], got {pta.dtype} {list(pta.shape)}")
    if num_captions is not None and pta.shape[0] != num_captions:
        raise ValueError(f"pta has {pta.shape[0]} caption grids for {num_captions} captions")
    return pta


def encode_meta(meta: dict) -> bytes:
    validate_meta(meta)
    ordered = {k: meta[k] for k in META_KEYS}
    return json.dumps(ordered, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def no_labels(grid: int) -> np.ndarray:
    """The stored grid of an image without boxes: no caption rows, the dataset's G x G."""
    return np.zeros((0, grid, grid), np.uint8)


@functools.lru_cache(maxsize=16)
def _no_labels_npy(grid: int) -> bytes:
    """The ``pta.npy`` of an image without boxes, the same bytes for every such sample (most of a web corpus)."""
    return encode_pta(no_labels(grid))


def encode_sample(sample: Sample, grid: int) -> dict[str, bytes]:
    """Member extension -> bytes, in the order they are written (sorted by extension); ``grid`` is the dataset's
    G, the shape of the empty grid stored for an image without boxes."""
    validate_key(sample.key)
    meta = sample.meta
    if not meta["captions"]:
        raise ValueError(f"sample {sample.key}: a stored sample needs at least one caption")
    if f"{meta['source']}-{meta['image_id']}" != sample.key:
        raise ValueError(f"sample {sample.key}: meta names {meta['source']}-{meta['image_id']}")
    members = {IMAGE_EXT: sample.image, META_EXT: encode_meta(meta), TEXT_EXT: meta["captions"][0].encode("utf-8")}
    if sample.pta is not None:
        check_pta(sample.pta, len(meta["captions"]))
        if sample.pta.shape[-1] != grid:
            raise ValueError(f"sample {sample.key}: pta grid {sample.pta.shape[-1]} in a dataset of grid {grid}")
        members[PTA_EXT] = encode_pta(sample.pta)
    elif meta["boxes"]:
        raise ValueError(f"sample {sample.key}: has boxes but no pta grid")
    else:
        members[PTA_EXT] = _no_labels_npy(grid)
    return dict(sorted(members.items()))


def decode_sample(key: str, members: dict[str, bytes]) -> Sample:
    """Inverse of ``encode_sample``; refuses a different schema version or missing members."""
    missing = [ext for ext in REQUIRED_EXTS if ext not in members]
    if missing:
        raise ValueError(f"sample {key}: missing members {missing}")
    try:
        meta = json.loads(members[META_EXT].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"sample {key}: {META_EXT} member is not valid JSON: {err}") from err
    validate_meta(meta)
    pta = decode_labels(members[PTA_EXT])
    if pta is not None:
        check_pta(pta, len(meta["captions"]))
    return Sample(key=key, image=members[IMAGE_EXT], meta=meta, pta=pta)


class ShardWriter:
    """Writes samples to one tar, byte-reproducibly. Use as a context manager over a binary file object; ``grid``
    is the dataset's label grid G (``encode_sample``)."""

    def __init__(self, fileobj: BinaryIO, grid: int):
        self.grid = grid
        # closed by close() / __exit__: the writer owns the tar for its lifetime
        self._tar = tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self._keys: set[str] = set()
        self.num_samples = 0

    def write(self, sample: Sample) -> int:
        """Add one sample; returns the bytes of its members."""
        if sample.key in self._keys:
            raise ValueError(f"sample {sample.key} written twice to one shard")
        self._keys.add(sample.key)
        size = 0
        for ext, data in encode_sample(sample, self.grid).items():
            info = tarfile.TarInfo(f"{sample.key}.{ext}")
            info.size, info.mtime, info.mode = len(data), TAR_MTIME, TAR_MODE
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
            size += len(data)
        self.num_samples += 1
        return size

    def close(self) -> None:
        self._tar.close()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_tar_samples(fileobj: BinaryIO) -> Iterator[Sample]:
    """Read samples back from a shard tar (plain ``tarfile``, streaming, members grouped by key)."""
    key, members = None, {}
    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
        for info in tar:
            if not info.isfile():
                continue
            member_key, _, ext = info.name.partition(".")
            if member_key != key:
                if key is not None:
                    yield decode_sample(key, members)
                key, members = member_key, {}
            members[ext] = tar.extractfile(info).read()
    if key is not None:
        yield decode_sample(key, members)
