"""SQL conditions over a dataset's Parquet manifests, with DuckDB (``copa inspect DATASET --where ...``).

``query_reader(root, where, columns, limit)`` selects the manifest rows that satisfy ``where`` (any DuckDB SQL
condition over the manifest columns of ``MANIFEST_FIELDS``, e.g. ``source = 'vg' AND num_captions > 40`` or
``list_max(pos_fraction) > 0.5``) and returns them batch by batch, with only ``columns``; ``query`` reads them into
one table. DuckDB reads only the selected columns and those the condition names, skips row groups by their
statistics, and stops at ``limit``; rows come in manifest order (shard, then key). Local manifests are read by
DuckDB's own Parquet reader; on another pyarrow filesystem (``s3://...``) they are scanned as a
``pyarrow.dataset`` that DuckDB queries with the same projection and filter pushdown.

DuckDB is the one dependency here beyond numpy and pyarrow: it turns a user's SQL condition into a streaming,
projected, predicate-pushed Parquet scan without pandas. It is imported by this module only, so ``import
manifests`` does not load it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from manifests.dataset import check_manifest_schema
from manifests.inspect import _rows, dataset_files
from manifests.schema import MANIFEST_SCHEMA

DEFAULT_COLUMNS = ["key", "source", "status", "num_captions", "num_relevant", "pos_fraction", "shard"]
BATCH_ROWS = 65_536  # rows per batch handed back: bounded memory when writing a whole dataset's rows to a file


def _columns(columns: list[str] | None) -> list[str]:
    columns = list(columns or DEFAULT_COLUMNS)
    unknown = [c for c in columns if c not in MANIFEST_SCHEMA.names]
    if unknown:
        raise ValueError(f"unknown columns {unknown}; manifest columns: {', '.join(MANIFEST_SCHEMA.names)}")
    if len(set(columns)) != len(columns):
        raise ValueError(f"columns repeated in {columns}")
    return columns


def _scan(con: duckdb.DuckDBPyConnection, fs: pafs.FileSystem, manifests: list[str]) -> tuple[str, dict | None]:
    """The SQL table expression that scans ``manifests`` and its parameters."""
    if isinstance(fs, pafs.LocalFileSystem):
        return "read_parquet($manifests)", {"manifests": manifests}
    con.register("manifests", pads.dataset(manifests, schema=MANIFEST_SCHEMA, format="parquet", filesystem=fs))
    return "manifests", None


def _named(err: duckdb.Error, where: str | None) -> ValueError:
    first = str(err).splitlines()[0]  # DuckDB adds the query text and a caret below
    return ValueError(f"condition {where!r}: {first}; manifest columns: {', '.join(MANIFEST_SCHEMA.names)}")


def query_reader(
    root: str, where: str | None = None, columns: list[str] | None = None, limit: int | None = None
) -> pa.RecordBatchReader:
    """The manifest rows of ``root`` that satisfy the SQL condition ``where`` (all rows when None), ``columns`` only
    (default ``DEFAULT_COLUMNS``), at most ``limit`` (None: all), streamed with ``MANIFEST_SCHEMA``'s column types.

    A condition that does not parse, names an unknown column or does not type-check raises ``ValueError`` naming
    the condition and listing the manifest columns."""
    columns = _columns(columns)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    fs, _, manifests = dataset_files(root)
    for path in manifests:  # footers only: refuse another schema version or an unreadable file, naming the file
        try:
            schema = pq.read_schema(path, filesystem=fs)
        except (pa.ArrowInvalid, OSError) as err:
            raise ValueError(f"{path}: not a readable Parquet manifest ({err})") from err
        check_manifest_schema(schema, path)
    schema = pa.schema([MANIFEST_SCHEMA.field(c) for c in columns])
    if not manifests:
        return pa.RecordBatchReader.from_batches(schema, [])
    con = duckdb.connect()
    table, params = _scan(con, fs, manifests)
    quoted = ", ".join(f'"{c}"' for c in columns)
    sql = f"SELECT {quoted} FROM {table}"
    sql += f" WHERE ({where}\n)" if where else ""  # the newline ends a trailing "-- comment" in the condition
    sql += f" LIMIT {int(limit)}" if limit is not None else ""
    try:
        if len(duckdb.extract_statements(sql)) != 1:
            raise ValueError(f"condition {where!r}: must be one SQL condition, without ';'")
        reader = con.sql(sql, params=params).to_arrow_reader(BATCH_ROWS)
    except duckdb.Error as err:
        con.close()
        raise _named(err, where) from None
    except ValueError:
        con.close()
        raise

    def batches() -> Iterator[pa.RecordBatch]:
        try:  # DuckDB names list items "l"; cast back to the manifest types, so outputs round-trip exactly
            for batch in reader:
                yield batch.cast(schema)
        except duckdb.Error as err:  # errors found while running, e.g. a failed CAST
            raise _named(err, where) from None
        finally:
            con.close()

    return pa.RecordBatchReader.from_batches(schema, batches())


def query(root: str, where: str | None = None, columns: list[str] | None = None, limit: int | None = None) -> pa.Table:
    """``query_reader`` read into one table (mind ``limit`` on big datasets)."""
    return query_reader(root, where, columns, limit).read_all()


def flat_for_csv(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with its list columns as JSON text (CSV has no lists), so ``json.loads`` gives the values back."""
    arrays = [
        pa.array([None if v is None else json.dumps(v) for v in col.to_pylist()], pa.string())
        if pa.types.is_list(col.type)
        else col
        for col in batch.columns
    ]
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def csv_schema(schema: pa.Schema) -> pa.Schema:
    """The schema of ``flat_for_csv``'s batches: list columns become strings."""
    return pa.schema([pa.field(f.name, pa.string()) if pa.types.is_list(f.type) else f for f in schema])


def _cell(value, max_items: int, max_chars: int) -> str:
    if isinstance(value, list):
        shown = ", ".join(_cell(v, max_items, max_chars // 2) for v in value[:max_items])
        more = f", ... +{len(value) - max_items}" if len(value) > max_items else ""
        return f"[{shown}{more}]"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = "null" if value is None else str(value).replace("\n", " ")
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def format_table(table: pa.Table, max_items: int = 3, max_chars: int = 48) -> str:
    """Rows as plain aligned text, like the summary's tables; lists show their first ``max_items`` and how many
    more, long text is cut at ``max_chars``."""
    rows = [[_cell(row[c], max_items, max_chars) for c in table.column_names] for row in table.to_pylist()]
    return "\n".join(_rows(table.column_names, rows))
