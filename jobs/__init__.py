"""Thin entry points that wire the packages together; each runs as ``copa <job>`` and ``python -m jobs.<job>``."""

import manifests.offline  # noqa: F401  (before any dependency: keeps them off the network)
