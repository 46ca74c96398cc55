"""Source readers: one module per annotation format, each ``read(spec, stats=None) -> Iterator[SourceRow]``.

Every reader yields one normalized ``SourceRow`` per image (``pipeline.rows``), with boxes clipped
(``pipeline.geometry``), captions cleaned (``rows.clean_captions``), image paths checked with a reason
(``readers.common.check_image_path``) and captions aligned to boxes (``pipeline.align``). A record that cannot be
used becomes a rejected row with a reason; a file that cannot be parsed at all raises ``ValueError`` naming the file
(and the record where that makes sense). ``stats`` (a ``Counter``, optional) receives what rows do not say on their
own, such as dropped boxes by reason (``pipeline.geometry``: ``nan_box``, ``empty_box``, ``outside_image``).
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Iterator

from pipeline.rows import SourceRow
from pipeline.sources import FORMATS, SourceSpec


def read_source(spec: SourceSpec, stats: Counter | None = None) -> Iterator[SourceRow]:
    """Rows of one source, dispatched on ``spec.format``."""
    if spec.format not in FORMATS:
        raise ValueError(f"source {spec.name}: unknown format {spec.format!r}")
    module = importlib.import_module(f"pipeline.readers.{spec.format}")
    return module.read(spec, stats)
