"""The sample schema (DESIGN section 4), written once.

Everything that names a field of a sample or a manifest column lives here; the Arrow schemas, the tar member
names and the validators are derived from the tables below, never typed twice.

A sample is one *image* with all its captions. In a shard it is a group of adjacent tar members:

    <key>.jpg      the stored image (shorter side capped at pack time)
    <key>.json     SampleMeta: captions, source, sizes, normalized boxes, per-caption relevance
    <key>.pta.npy  uint8 [num_captions, G, G] patch coverage of each caption's relevant boxes; [0, G, G] for an
                   image without boxes, so that every sample carries the same members (schema version 2)
    <key>.txt      the first caption, so CLIP-style WebDataset readers work on our shards unchanged

Keys are ``<source>-<id>``: the source is lower-case ``[a-z][a-z0-9_]*`` (no dash, so the first dash splits the
key), the id ``[A-Za-z0-9_-]+``. Dots are forbidden because WebDataset splits a member name at the first dot of
its basename; slashes because they would make directories inside the tar.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pyarrow as pa

SCHEMA_VERSION = 2  # 2: every sample has pta.npy (empty [0, G, G] without boxes); 1: pta.npy only with boxes

KEY_RE = re.compile(r"^(?P<source>[a-z][a-z0-9_]*)-(?P<id>[A-Za-z0-9_-]+)$")
SOURCE_RE = re.compile(r"^[a-z][a-z0-9_]*$")

# Tar member extensions. Sorted member order within a sample is jpg < json < pta.npy < txt.
IMAGE_EXT = "jpg"
META_EXT = "json"
PTA_EXT = "pta.npy"
TEXT_EXT = "txt"
MEMBER_EXTS = (IMAGE_EXT, META_EXT, PTA_EXT, TEXT_EXT)
REQUIRED_EXTS = MEMBER_EXTS  # every sample carries every member

STATUS_OK = "ok"


def make_key(source: str, image_id: str | int) -> str:
    """Build and validate the key of one image, e.g. ``make_key("coco", "000000391895")``."""
    return validate_key(f"{source}-{image_id}")


def validate_key(key: str) -> str:
    """Return ``key`` unchanged, or raise ``ValueError`` saying what is wrong with it."""
    if not isinstance(key, str):
        raise TypeError(f"sample key must be a str, got {type(key).__name__}")
    if KEY_RE.fullmatch(key) is None:
        raise ValueError(
            f"bad sample key {key!r}: expected '<source>-<id>' with source [a-z][a-z0-9_]* and id "
            "[A-Za-z0-9_-]+ (no dots, slashes or spaces)"
        )
    return key


def split_key(key: str) -> tuple[str, str]:
    """``"coco-0001"`` -> ``("coco", "0001")``."""
    match = KEY_RE.fullmatch(validate_key(key))
    return match["source"], match["id"]


@dataclass(frozen=True)
class Field:
    """One field of the schema: its Arrow type and what it means."""

    name: str
    type: pa.DataType
    doc: str
    nullable: bool = False

    def arrow(self) -> pa.Field:
        return pa.field(self.name, self.type, nullable=self.nullable, metadata={"doc": self.doc})


RELEVANT_TYPE = pa.struct([pa.field("boxes", pa.list_(pa.int32())), pa.field("words", pa.list_(pa.string()))])

# The <key>.json member. Field order here is the key order of the written JSON.
META_FIELDS: tuple[Field, ...] = (
    Field("schema_version", pa.int32(), "SCHEMA_VERSION of the writer"),
    Field("source", pa.string(), "source name, the part of the key before the first dash"),
    Field("image_id", pa.string(), "the image's id in its source, the part of the key after the first dash"),
    Field("captions", pa.list_(pa.string()), "all captions of the image, in source order"),
    Field("orig_width", pa.int32(), "width of the source image in pixels"),
    Field("orig_height", pa.int32(), "height of the source image in pixels"),
    Field("width", pa.int32(), "width of the stored image in pixels"),
    Field("height", pa.int32(), "height of the stored image in pixels"),
    Field("boxes", pa.list_(pa.list_(pa.float32(), 4)), "boxes as x0,y0,x1,y1 normalized to [0,1] of the image"),
    Field("box_labels", pa.list_(pa.string()), "per box: category name or phrase"),
    Field("box_crowd", pa.list_(pa.bool_()), "per box: COCO iscrowd (a group, not one object)"),
    Field("relevant", pa.list_(RELEVANT_TYPE), "per caption: indices of its text-relevant boxes, matched words"),
)

# One row per *input* image in <shard>.parquet, failures included.
MANIFEST_FIELDS: tuple[Field, ...] = (
    Field("key", pa.string(), "sample key <source>-<id>"),
    Field("shard", pa.string(), "shard name, e.g. 000012"),
    Field("source", pa.string(), "source name"),
    Field("image_id", pa.string(), "id in the source"),
    Field("source_path", pa.string(), "where the image was read from"),
    Field("status", pa.string(), "'ok', or the reason the row was rejected"),
    Field("error", pa.string(), "details of a rejection", nullable=True),
    Field("orig_width", pa.int32(), "source image width (0 when unreadable)"),
    Field("orig_height", pa.int32(), "source image height (0 when unreadable)"),
    Field("width", pa.int32(), "stored image width (0 when rejected)"),
    Field("height", pa.int32(), "stored image height (0 when rejected)"),
    Field("num_captions", pa.int32(), "number of captions"),
    Field("num_boxes", pa.int32(), "number of boxes kept"),
    Field("captions", pa.list_(pa.string()), "the captions, for queries"),
    Field("num_relevant", pa.list_(pa.int32()), "per caption: number of relevant boxes"),
    Field("pos_fraction", pa.list_(pa.float32()), "per caption: fraction of patches with coverage > 0"),
    Field("image_bytes", pa.int64(), "bytes of the stored image (0 when rejected)"),
)

META_TYPE = pa.struct([f.arrow() for f in META_FIELDS])
MANIFEST_SCHEMA = pa.schema([f.arrow() for f in MANIFEST_FIELDS], metadata={"copa_schema_version": str(SCHEMA_VERSION)})
META_KEYS = tuple(f.name for f in META_FIELDS)


def validate_meta(meta: dict) -> dict:
    """Check a ``<key>.json`` dict against ``META_FIELDS``; return it, or raise ``ValueError`` naming the field.

    Types are checked by converting through Arrow (the same schema the manifests use); the rules that types cannot
    express (box ranges, per-caption lengths, index bounds) are checked by hand.
    """
    if not isinstance(meta, dict):
        raise TypeError(f"sample meta must be a dict, got {type(meta).__name__}")
    missing = [k for k in META_KEYS if k not in meta]
    extra = sorted(set(meta) - set(META_KEYS))
    if missing or extra:
        raise ValueError(f"sample meta: missing fields {missing}, unknown fields {extra}")
    if meta["schema_version"] != SCHEMA_VERSION:
        raise ValueError(
            f"sample meta has schema_version {meta['schema_version']!r}, this toolkit reads {SCHEMA_VERSION}; "
            "re-pack the dataset with this version"
        )
    for field in META_FIELDS:  # Arrow would truncate 1.5 to an int and read a str as a list of characters
        value = meta[field.name]
        if pa.types.is_integer(field.type) and type(value) is not int:
            raise ValueError(f"sample meta field {field.name!r} must be an int, got {value!r}")
        if pa.types.is_list(field.type) and not isinstance(value, list):
            raise ValueError(f"sample meta field {field.name!r} must be a list, got {type(value).__name__}")
    try:
        arr = pa.array([meta], type=META_TYPE)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as err:
        raise ValueError(f"sample meta does not match the schema: {err}") from err
    for i, field in enumerate(META_FIELDS):
        child = arr.field(i)
        if _has_nulls(child):
            raise ValueError(f"sample meta field {field.name!r} is or contains null")
    validate_key(f"{meta['source']}-{meta['image_id']}")
    num_boxes = len(meta["boxes"])
    for name in ("box_labels", "box_crowd"):
        if len(meta[name]) != num_boxes:
            raise ValueError(f"sample meta: {name} has {len(meta[name])} entries for {num_boxes} boxes")
    for i, (x0, y0, x1, y1) in enumerate(meta["boxes"]):
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise ValueError(f"sample meta: box {i} {[x0, y0, x1, y1]} is not a normalized x0<x1, y0<y1 in [0,1]")
    if len(meta["relevant"]) != len(meta["captions"]):
        raise ValueError(
            f"sample meta: relevant has {len(meta['relevant'])} entries for {len(meta['captions'])} captions"
        )
    for i, rel in enumerate(meta["relevant"]):
        if set(rel) != {"boxes", "words"}:
            raise ValueError(f"sample meta: relevant[{i}] must have exactly the keys 'boxes' and 'words'")
        bad = [b for b in rel["boxes"] if type(b) is not int or not 0 <= b < num_boxes]
        if bad:
            raise ValueError(f"sample meta: relevant[{i}] names boxes {bad} but there are {num_boxes}")
    for name in ("orig_width", "orig_height", "width", "height"):
        if meta[name] <= 0:
            raise ValueError(f"sample meta: {name} must be positive, got {meta[name]}")
    return meta


def _has_nulls(arr: pa.Array) -> bool:
    """Whether ``arr`` or anything nested in it is null. Uses ``.values`` and ``.field(i)`` (plain attribute access)
    rather than ``flatten`` (a compute call each): the array was just built from Python, so its children hold
    exactly its values."""
    if arr.null_count:
        return True
    if pa.types.is_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
        return _has_nulls(arr.values)
    if pa.types.is_struct(arr.type):
        return any(_has_nulls(arr.field(i)) for i in range(arr.type.num_fields))
    return False


def shard_name(index: int) -> str:
    """Shard ``index`` -> ``"000012"``; the tar, manifest and stats files add their suffixes to it."""
    if index < 0 or index > 999_999:
        raise ValueError(f"shard index {index} out of range 0..999999")
    return f"{index:06d}"


SHARD_RE = re.compile(r"^\d{6}$")


def shard_files(name: str) -> dict[str, str]:
    """File names of one shard: its tar, its Parquet manifest and its stats (the done-marker, written last)."""
    if SHARD_RE.fullmatch(name) is None:
        raise ValueError(f"bad shard name {name!r}: expected six digits")
    return {"tar": f"{name}.tar", "manifest": f"{name}.parquet", "stats": f"{name}_stats.json"}


DATASET_FILE = "dataset.json"
SIZES_FILE = "sizes.json"
