"""The shard contract (DESIGN sections 3-4): sample schema, keys, members, manifests, dataset files.

The contract modules (schema, samples, dataset, labels) import only the standard library, numpy and pyarrow: the
pipeline writes through them and the trainer reads through them, so both agree on every byte without importing
each other. The inspection modules add what drawing and querying need, each imported only by the module that uses
it: Pillow (``pictures``), matplotlib (``histograms``) and DuckDB (``query``, for ``copa inspect --where``).
Nothing here imports torch, Ray or another package of the project (``tests/test_imports.py``). ``offline`` is
imported first by every package: it keeps dependencies off the network (``manifests/offline.py``).
"""

from manifests import offline  # noqa: F401  (first: before any dependency is imported)
from manifests.dataset import (
    DatasetInfo,
    Geometry,
    ShardStats,
    manifest_table,
    ok_row,
    read_dataset_info,
    read_manifest,
    read_sizes,
    read_stats,
    rejected_row,
    write_dataset_info,
    write_manifest,
    write_sizes,
    write_stats,
)
from manifests.samples import (
    Sample,
    ShardWriter,
    decode_pta,
    decode_sample,
    encode_pta,
    encode_sample,
    iter_tar_samples,
)
from manifests.schema import (
    MANIFEST_SCHEMA,
    META_FIELDS,
    SCHEMA_VERSION,
    make_key,
    shard_files,
    shard_name,
    split_key,
    validate_key,
    validate_meta,
)

__all__ = [
    "MANIFEST_SCHEMA",
    "META_FIELDS",
    "SCHEMA_VERSION",
    "DatasetInfo",
    "Geometry",
    "Sample",
    "ShardStats",
    "ShardWriter",
    "decode_pta",
    "decode_sample",
    "encode_pta",
    "encode_sample",
    "iter_tar_samples",
    "make_key",
    "manifest_table",
    "ok_row",
    "read_dataset_info",
    "read_manifest",
    "read_sizes",
    "read_stats",
    "rejected_row",
    "shard_files",
    "shard_name",
    "split_key",
    "validate_key",
    "validate_meta",
    "write_dataset_info",
    "write_manifest",
    "write_sizes",
    "write_stats",
]
