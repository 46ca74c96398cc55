"""Keys, shard names and the sample-meta validator."""

import copy
import math

import pyarrow as pa
import pytest

from manifests import (
    MANIFEST_SCHEMA,
    META_FIELDS,
    SCHEMA_VERSION,
    make_key,
    shard_files,
    shard_name,
    split_key,
    validate_meta,
)
from manifests.schema import MANIFEST_FIELDS, META_TYPE
from tests.conftest import make_sample


@pytest.mark.parametrize("key", ["coco-000000391895", "vg-2417890", "cc3m-000123456", "sbu-a_b-c", "x1_y-Z9"])
def test_good_keys(key):
    assert make_key(*key.split("-", 1)) == key
    assert "-".join(split_key(key)) == key


@pytest.mark.parametrize(
    "key",
    [
        "coco-0001.jpg",
        "coco/0001",
        "coco-",
        "-0001",
        "Coco-1",
        "coco-a b",
        "coco0001",
        "co.co-1",
        "../coco-1",
        "coco-1/",
    ],
)
def test_bad_keys_rejected(key):
    with pytest.raises(ValueError, match="bad sample key"):
        make_key(*key.split("-", 1)) if "-" in key else make_key(key, "")


def test_shard_names():
    assert shard_name(12) == "000012"
    assert shard_files("000012") == {"tar": "000012.tar", "manifest": "000012.parquet", "stats": "000012_stats.json"}
    with pytest.raises(ValueError):
        shard_name(-1)
    with pytest.raises(ValueError):
        shard_files("12")


def test_arrow_schemas_derive_from_fields():
    assert MANIFEST_SCHEMA.names == [f.name for f in MANIFEST_FIELDS]
    assert [f.name for f in META_TYPE] == [f.name for f in META_FIELDS]
    assert MANIFEST_SCHEMA.metadata[b"copa_schema_version"] == str(SCHEMA_VERSION).encode()
    assert MANIFEST_SCHEMA.field("pos_fraction").type == pa.list_(pa.float32())


def test_valid_meta_passes():
    meta = make_sample().meta
    assert validate_meta(meta) is meta


def _broken(mutate):
    meta = copy.deepcopy(make_sample().meta)
    mutate(meta)
    return meta


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m.pop("captions"), "missing fields"),
        (lambda m: m.update(extra=1), "unknown fields"),
        (lambda m: m.update(schema_version=SCHEMA_VERSION + 1), "schema_version"),
        (lambda m: m.update(width=1.5), "'width' must be an int"),
        (lambda m: m.update(width=0), "width must be positive"),
        (lambda m: m.update(captions=["ok", None]), "'captions' is or contains null"),
        (lambda m: m.update(captions="not a list"), "'captions' must be a list"),
        (lambda m: m.update(captions=[1, 2]), "does not match the schema"),
        (lambda m: m["boxes"].__setitem__(0, [0.5, 0.1, 0.2, 0.6]), "box 0"),
        (lambda m: m["boxes"].__setitem__(0, [0.1, 0.1, 1.2, 0.6]), "box 0"),
        (lambda m: m["boxes"].__setitem__(0, [math.nan, 0.1, 0.2, 0.6]), "box 0"),
        (lambda m: m["boxes"].__setitem__(0, [0.1, 0.2, 0.6]), "does not match the schema"),
        (lambda m: m["box_labels"].pop(), "box_labels has 1 entries for 2 boxes"),
        (lambda m: m["relevant"].pop(), "relevant has 1 entries for 2 captions"),
        (lambda m: m["relevant"][1].update(boxes=[5]), r"names boxes \[5\]"),
        (lambda m: m.update(source="Bad.Source"), "bad sample key"),
    ],
)
def test_bad_meta_rejected_with_field_name(mutate, message):
    with pytest.raises(ValueError, match=message):
        validate_meta(_broken(mutate))
