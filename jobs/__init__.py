"""Thin entry points that wire the packages together; each runs as ``copa <job>`` and ``python -m jobs.<job>``."""
