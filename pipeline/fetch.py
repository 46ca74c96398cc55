"""Read the bytes of one source image: a local file, a file on any pyarrow filesystem (``s3://``, ``gs://``, ...),
or a member of an img2dataset tar (DESIGN section 9: no local-only paths assumed).

``ImageFetcher.fetch(root, path, member)`` returns the bytes, or raises ``ImageError`` whose reason (the manifest
status) is ``missing_file`` when the file or member is not there, ``unreadable_file`` when it cannot be read.

A tar's member index is built on first use and kept in a per-process LRU cache: a shard's rows are hash-ordered, so
one shard touches many tars, and Ray reuses its worker processes across shard tasks, so each process indexes each
tar about once. (Recording member offsets at ingest would remove even that; not done yet.)
"""

from __future__ import annotations

import os
import tarfile
from functools import lru_cache

import pyarrow.fs as pafs

from pipeline.images import ImageError

MISSING_FILE = "missing_file"
UNREADABLE_FILE = "unreadable_file"  # a folder, no permission, a tar that does not parse
TAR_INDEX_CACHE = 256  # tars whose member index a process keeps; about 1 MB each for 10,000-sample tars


@lru_cache(maxsize=64)
def filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path in it for a local folder or a URI (``s3://bucket/coco``)."""
    if "://" in root:
        return pafs.FileSystem.from_uri(root)
    return pafs.LocalFileSystem(), os.path.abspath(root)


@lru_cache(maxsize=TAR_INDEX_CACHE)
def _tar_index(root: str, path: str) -> dict[str, tuple[int, int]]:
    """Member name -> (data offset, size) of one tar, from one pass over its headers (data is skipped, not read)."""
    fs, base = filesystem(root)
    with fs.open_input_file(f"{base}/{path}") as f, tarfile.open(fileobj=f, mode="r:") as tar:
        return {m.name: (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()}


class ImageFetcher:
    """Reads source image bytes for the pack stage (see the module docstring)."""

    def fetch(self, root: str, path: str, member: str | None = None) -> tuple[bytes, str]:
        """(bytes, a printable location for the manifest's ``source_path``)."""
        fs, base = filesystem(root)
        location = f"{root}/{path}" + (f"::{member}" if member else "")
        full = f"{base}/{path}"
        try:
            if member is None:
                with fs.open_input_stream(full) as f:
                    return f.read(), location
            index = _tar_index(root, path)
            if member not in index:
                raise ImageError(MISSING_FILE, f"{location}: the tar has no member {member!r}")
            offset, size = index[member]
            with fs.open_input_file(full) as f:
                return f.read_at(size, offset), location
        except FileNotFoundError as err:
            raise ImageError(MISSING_FILE, f"{location}: not found") from err
        except (tarfile.TarError, OSError) as err:
            raise ImageError(UNREADABLE_FILE, f"{location}: cannot be read: {err}") from err
