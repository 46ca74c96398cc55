"""Source readers: one module per annotation format, each ``read(spec, stats=None) -> Iterator[SourceRow]``.

Every reader yields one normalized ``SourceRow`` per image (``pipeline.rows``), with boxes clipped
(``pipeline.geometry``), captions cleaned (``rows.clean_captions``), image paths checked with a reason
(``readers.common.check_image_path``) and captions aligned to boxes (``pipeline.align``). A record that cannot be
used becomes a rejected row with a reason; a file that cannot be parsed at all raises ``ValueError`` naming the file
(and the record where that makes sense). ``stats`` (a ``Counter``, optional) receives what rows do not say on their
own, such as dropped boxes by reason (``pipeline.geometry``: ``nan_box``, ``empty_box``, ``outside_image``). A reader
that builds its rows as columns also has ``read_table(spec, stats) -> pyarrow.Table`` (the same rows, in the
source-manifest schema), which ``copa ingest`` writes without a Python object per row.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Iterator
from types import ModuleType

import pyarrow as pa

from pipeline.rows import SourceRow
from pipeline.sources import FORMATS, SourceSpec


def reader(spec: SourceSpec) -> ModuleType:
    """The reader module of ``spec.format``."""
    if spec.format not in FORMATS:
        raise ValueError(f"source {spec.name}: unknown format {spec.format!r}")
    return importlib.import_module(f"pipeline.readers.{spec.format}")


def read_source(spec: SourceSpec, stats: Counter | None = None) -> Iterator[SourceRow]:
    """Rows of one source, dispatched on ``spec.format``."""
    return reader(spec).read(spec, stats)


def read_source_columns(spec: SourceSpec, stats: Counter | None = None) -> pa.Table | None:
    """The rows of one source as an Arrow table in the source-manifest schema, from the readers that build columns
    (``read_table``: the web-caption lists, see ``readers.columnar``); None for the readers that build rows."""
    module = reader(spec)
    return module.read_table(spec, stats) if hasattr(module, "read_table") else None
