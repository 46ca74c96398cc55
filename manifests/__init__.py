"""The shard contract (DESIGN sections 3-4): sample schema, keys, members, manifests, dataset files.

May import only the standard library, numpy and pyarrow: the pipeline writes through it and the trainer reads
through it, so both agree on every byte without importing each other.
"""

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
