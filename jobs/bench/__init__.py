"""``copa bench <what>``: benchmarks that compare against a baseline measured in the same run, one module
each (``labels``, ``align``, ``ingest``, ``pack``, ``loader``, ``model`` with ``model_cost``, ``inspect``), and
``runner``: the dispatcher and the helpers they share."""

from jobs.bench.runner import main

__all__ = ["main"]
