"""Helpers shared by the web-caption readers (json_list, xvlm, img2dataset).

- ``SurrogateGuard``: lets ijson's fast C backend parse JSON holding lone surrogate escapes (``"\\udcff"``, what
  ``json.dumps`` writes for undecodable text) by marking them before the parser sees them; the readers restore
  them so such captions are rejected as ``caption_not_utf8``, as ``json.load`` would have it.
- image path checks with a reason (``check_image_path``), natural key ids and a ``KeyRegistry`` that keeps every
  key unique, rejected rows included.
- file opening through pyarrow filesystems (local paths and URIs), and pausing the garbage collector while
  millions of small objects are grouped.
- record helpers of the COCO and VG readers: ids and sizes from JSON values, a warner that logs a few and counts all.
"""

from __future__ import annotations

import codecs
import gc
import hashlib
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import ijson
import pyarrow.fs as pafs

from manifests.schema import KEY_RE, make_key
from pipeline.rows import (
    BAD_PATH,
    CAPTION_NOT_UTF8,
    DUPLICATE_KEY,
    EMPTY_CAPTION,
    NO_CAPTION,
    PATH_ESCAPES_ROOT,
    SourceRow,
    clean_captions,
    safe_relpath,
)
from pipeline.sources import SourceSpec

log = logging.getLogger(__name__)

# Not in pipeline.rows yet: a record that cannot be read at all (not JSON, not an object, no image member).
BAD_RECORD = "bad_record"

CAPTION_ERRORS = {
    EMPTY_CAPTION: "every caption is empty, blank or not a string",
    CAPTION_NOT_UTF8: "no caption is valid UTF-8 (lone surrogate escapes or undecodable bytes)",
    NO_CAPTION: "no caption",
}
PATH_ERRORS = {
    BAD_PATH: "image path is missing, not a string, absolute, a URL or not valid UTF-8",
    PATH_ESCAPES_ROOT: "image path leads outside the image root",
}

# --- file access -------------------------------------------------------------------------------------------------


def open_binary(path: str) -> BinaryIO:
    """A local path or a URI (``s3://...``, through pyarrow's filesystems) opened for reading bytes."""
    if "://" in path:
        fs, inner = pafs.FileSystem.from_uri(path)
        return fs.open_input_stream(inner)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: annotation file not found")
    return open(path, "rb")  # the caller closes it in a with block


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cycle collector while millions of acyclic objects are built: each collection rescans them
    all (a third of the grouping time of a 1M-entry list). Nothing built here forms a cycle, so nothing leaks."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def ijson_backend():
    """The C yajl2 backend (about 12x the pure-Python one), else the best ijson could load."""
    try:
        return ijson.get_backend("yajl2_c")
    except ImportError:  # no compiled yajl: ijson's module-level functions use the best backend it found
        return ijson


# --- lone surrogates ---------------------------------------------------------------------------------------------

_MARK = "\ufdd0"  # a Unicode noncharacter: never meant to appear in text, so it cannot clash with a caption
_MARKED = re.compile(_MARK + "([0-9a-f]{4})")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_LOW_ESCAPE = re.compile(r"\\u[dD][c-fC-F][0-9a-fA-F]{2}")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")  # where a chunk may hold one (or an escaped backslash)
_LONGEST_ESCAPE = 12  # a surrogate pair, "\ud83d\ude00"
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escaped(text: str, i: int) -> bool:
    """Whether the backslash at ``i`` is itself escaped (odd run of backslashes before it): "\\udcff" is text."""
    j = i
    while j > 0 and text[j - 1] == "\\":
        j -= 1
    return (i - j) % 2 == 1


def _safe_cut(text: str | bytes) -> int:
    """Where to stop this chunk: before the last backslash run near the end, which may be an unfinished escape.

    A run of backslashes starts between two escapes (every backslash of valid JSON starts or is an escape), so
    the held-back tail starts on an escape boundary and its backslash parity stays right.
    """
    backslash = "\\" if isinstance(text, str) else b"\\"
    i = text.rfind(backslash, max(0, len(text) - _LONGEST_ESCAPE))
    if i < 0:
        return len(text)
    while i > 0 and text[i - 1 : i] == backslash:
        i -= 1
    return i


def _mark(text: str, final: bool) -> tuple[bytes, str]:
    """(``text`` with lone surrogates marked, as UTF-8; the tail held back: an escape may continue past it)."""
    cut = len(text) if final else _safe_cut(text)
    pieces, pos, skip = [], 0, 0
    for m in _SURROGATE_ESCAPE.finditer(text, 0, cut):  # Python work only where a surrogate escape may be
        start = m.start()
        if start < skip or _escaped(text, start):
            continue
        if m.group()[3] in "89abAB":  # a high surrogate: valid only with a low one right after it
            low = _LOW_ESCAPE.match(text, m.end())
            if low:
                if low.end() > cut:  # keep the pair together in the next chunk
                    cut = start
                    break
                skip = low.end()
                continue
            if not final and m.end() + 6 > len(text):  # its low half may come with the next chunk
                cut = start
                break
        pieces += (text[pos:start], _MARK + m.group()[2:].lower())
        pos = m.end()
    pieces.append(text[pos:cut])
    done = "".join(pieces)
    try:
        return done.encode("utf-8"), text[cut:]
    except UnicodeEncodeError:  # raw bytes that were not UTF-8, decoded with surrogateescape: rarely worth a scan
        return mark_surrogates(done).encode("utf-8"), text[cut:]


def mark_surrogates(text: str) -> str:
    """``text`` with each lone surrogate replaced by the guard's marker, so that Arrow can hold it (valid UTF-8);
    ``restore_surrogates`` undoes it."""
    return _SURROGATE.sub(lambda s: f"{_MARK}{ord(s.group()):04x}", text)


def restore_surrogates(text: str) -> str:
    """Turn the guard's markers back into the lone surrogates they stand for."""
    if _MARK not in text:
        return text
    return _MARKED.sub(lambda m: chr(int(m.group(1), 16)), text)


class SurrogateGuard:
    """A binary file wrapper that hands ijson valid UTF-8 JSON with lone surrogates marked (see module docstring).

    Reads ``chunk_size`` bytes at a time and holds back at most one escape's worth of text between chunks.
    """

    def __init__(self, raw: BinaryIO, chunk_size: int = 1 << 20):
        self._raw = raw
        self._chunk_size = chunk_size
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        self._tail = ""  # decoded text held back: an escape may continue in the next chunk
        self._out, self._pos = b"", 0  # guarded bytes and how many were handed out
        self._eof = False
        self._started = False

    def _fill(self) -> None:
        data = self._raw.read(self._chunk_size)
        self._eof = not data
        if self._started and data.isascii() and self._tail.isascii() and not self._decoder.getstate()[0]:
            chunk = self._tail.encode("ascii") + data
            if not _SURROGATE_ESCAPE_BYTES.search(chunk):  # most chunks: ASCII and nothing to mark, passed as bytes
                cut = len(chunk) if self._eof else _safe_cut(chunk)
                self._out, self._tail, self._pos = chunk[:cut], chunk[cut:].decode("ascii"), 0
                return
        text = self._tail + self._decoder.decode(data, final=self._eof)
        if not self._started and text:
            text, self._started = text.removeprefix("\ufeff"), True  # a UTF-8 byte order mark is not JSON
        self._out, self._tail = _mark(text, final=self._eof)
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        while self._pos >= len(self._out) and not self._eof:
            self._fill()
        end = len(self._out) if size < 0 else self._pos + size
        data = self._out[self._pos : end]
        self._pos += len(data)
        return data

    def peek(self) -> bytes:
        """The first non-blank byte not yet read, or b"" at the end; reads nothing away."""
        while not self._eof and not self._out[self._pos :].strip():
            self._out, self._pos = b"", 0  # only blanks left: they can go
            self._fill()
        return self._out[self._pos :].lstrip()[:1]


# --- paths and keys (shared with the other web readers) ------------------------------------------------------------


def plain_path(path: str) -> bool:
    """A path that ``rows.safe_relpath`` would return unchanged: relative, no empty, "." or ".." parts, no
    backslash, no scheme. Checked with C-speed string methods because CC3M has 3M of them."""
    return not (
        path[:1] in ("", "/", ".") or path[-1] == "/" or "\\" in path or "//" in path or "/." in path or ":" in path
    )


def _climbs_out(path: str) -> bool:
    """Whether a relative path's ".." parts lead above its root (``a/..`` does not: it is the root itself)."""
    depth = 0
    for part in path.replace("\\", "/").split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def check_image_path(raw: object) -> tuple[str | None, str | None]:
    """(normalized relative image path, None), or (None, ``bad_path`` / ``path_escapes_root``)."""
    if isinstance(raw, str):
        if raw.isascii() and plain_path(raw):
            return raw, None
        raw = restore_surrogates(raw)
    rel = safe_relpath(raw)
    if rel is None:  # safe_relpath says None for absolute, empty and URL paths too: find out which it was
        relative = isinstance(raw, str) and raw[:1] not in ("/", "\\") and "://" not in raw
        return None, PATH_ESCAPES_ROOT if relative and _climbs_out(raw) else BAD_PATH
    if not rel.isascii() and _SURROGATE.search(rel):  # the manifest is Arrow, which stores valid UTF-8 only
        return None, BAD_PATH
    return rel, None


def show(value: object, limit: int = 120) -> str:
    """A short printable form of a bad value for an error message (repr escapes surrogates)."""
    text = repr(restore_surrogates(value) if isinstance(value, str) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_key_id(candidate: object) -> bool:
    """Whether ``candidate`` can be the id part of a key (manifests.schema's rule; fullmatch, so no newline)."""
    return isinstance(candidate, str) and KEY_RE.fullmatch(f"x-{candidate}") is not None


def path_hash(path: str) -> str:
    """A short stable key id for a path: 16 hex digits of blake2b."""
    return hashlib.blake2b(path.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def file_stem(path: str) -> str:
    """The file name without its last extension: ``a/000000123.jpg`` -> ``000000123`` (``.hidden`` stays)."""
    name = path.rpartition("/")[2]
    dot = name.rfind(".")
    return name[:dot] if dot > 0 else name


def natural_key_id(image_id: object, path: str) -> str:
    """The key id of an image: its key-safe ``image_id``, else its file stem, else a hash of its path."""
    if isinstance(image_id, int) and not isinstance(image_id, bool):
        image_id = str(image_id)
    if is_key_id(image_id):
        return image_id
    stem = file_stem(path)
    return stem if is_key_id(stem) else path_hash(path)


class KeyRegistry:
    """The key ids of one source. Natural ids are claimed first come, first served; rows without one get a
    fallback id (``entry12``, made unique with a ``_k`` suffix) that is never one claimed before it."""

    _FALLBACK = "a rejected row"

    def __init__(self, source: str):
        self.source = source
        self._owner: dict[str, object] = {}

    def claim(self, key_id: str, owner: object) -> object | None:
        """Give ``key_id`` to ``owner`` (not None) when it is free and return None; else return its holder."""
        holder = self._owner.get(key_id)
        if holder is None:
            self._owner[key_id] = owner
        return holder

    def fallback(self, base: str) -> str:
        """A free key id made from ``base`` (hashed when ``base`` is not key-safe)."""
        base = base if is_key_id(base) else path_hash(base)
        key_id, n = base, 0
        while key_id in self._owner:
            n += 1
            key_id = f"{base}_{n}"
        self._owner[key_id] = self._FALLBACK
        return key_id

    def key(self, key_id: str) -> str:
        return make_key(self.source, key_id)


def caption_row(spec: SourceSpec, key_id: str, path: str, raw_captions: list) -> tuple[SourceRow, str | None]:
    """A captions-only row (no boxes) and the caption rejection reason, if no caption is usable."""
    captions, reason = clean_captions([restore_surrogates(c) if isinstance(c, str) else c for c in raw_captions])
    row = SourceRow(
        key=make_key(spec.name, key_id),
        source=spec.name,
        image_id=key_id,
        image_root=spec.images,
        image_path=path,
        captions=captions,
        relevant=[{"boxes": [], "words": []} for _ in captions],
    )
    return row, reason


def rejected_row(spec: SourceSpec, keys: KeyRegistry, base: str, status: str, error: str, path: str = "") -> SourceRow:
    """A row for a record that has no image key of its own (bad path, bad record, duplicate)."""
    key_id = keys.fallback(base)
    row = SourceRow(key=keys.key(key_id), source=spec.name, image_id=key_id, image_root=spec.images, image_path=path)
    return row.reject(status, error)


# --- the reader --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class BadRecord:
    """A record of a per-image reader that cannot be a row: its place in the file, the reason and the details."""

    index: int
    status: str
    error: str


def keyed_rows(
    spec: SourceSpec,
    records: Iterable,
    locate: Callable[[object], tuple[str, str, str]],
    image_row: Callable[[object, str], SourceRow],
) -> Iterator[SourceRow]:
    """Rows of per-image records (json_list, xvlm), keyed so that every key is unique, rejected rows included.

    Every natural key is claimed before any fallback key is handed out; a later image with a taken key is rejected
    as ``duplicate_key``. ``locate(record)`` gives (fallback key tag, error prefix, short reference), e.g.
    ``("entry3", "x.json entry 3", "entry 3")``; ``image_row(record, where)`` builds the row of a good image.
    """
    records = list(records)
    keys = KeyRegistry(spec.name)
    for record in records:
        if not isinstance(record, BadRecord):
            record.key_id = natural_key_id(record.image_id, record.path)
            record.duplicate_of = keys.claim(record.key_id, record)
    for record in records:
        tag, where, _ = locate(record)
        if isinstance(record, BadRecord):
            yield rejected_row(spec, keys, tag, record.status, record.error)
        elif record.duplicate_of is not None:
            other = record.duplicate_of
            error = (
                f"{where}: image {record.path!r} has the key id {record.key_id!r} of image {other.path!r} "
                f"({locate(other)[2]})"
            )
            yield rejected_row(spec, keys, tag, DUPLICATE_KEY, error, record.path)
        else:
            yield image_row(record, where)


# --- annotation records (COCO, VG) -------------------------------------------------------------------------------

MAX_WARNINGS = 5  # per kind of bad record; the rest are only counted


def int_id(value: object) -> int | None:
    """An id field as a non-negative int (JSON has no int type of its own: 12.0 is accepted), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and value >= 0 else None


def image_size(value: object) -> int:
    """Image width/height; 0 (unknown: boxes are then checked, and clipped at pack time) when unusable."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or value != value:
        return 0
    return int(value) if value < 1 << 30 else 0


class Warner:
    """Logs the first few records of each kind of problem and counts all of them."""

    def __init__(self, stats: Counter):
        self.stats, self.seen = stats, Counter()

    def __call__(self, kind: str, message: str) -> None:
        self.stats[kind] += 1
        self.seen[kind] += 1
        if self.seen[kind] <= MAX_WARNINGS:
            log.warning("%s%s", message, " (further ones are only counted)" if self.seen[kind] == MAX_WARNINGS else "")
