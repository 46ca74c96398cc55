"""Streaming reads of big annotation JSON files that may hold what Python's ``json`` writes but yajl rejects.

Python's ``json`` writes ``NaN``/``Infinity`` for non-finite floats and ``\\udcff``-style lone surrogates, which the
fast yajl backend of ijson rejects. ``JsonFile`` scans each file once for them; only a file that has them is parsed
through a filter that turns the non-finite numbers into ``null`` (a ``null`` coordinate drops a box as ``nan_box``),
and lone surrogates switch that file to ijson's pure-Python backend (slower, but it returns them so that
``clean_captions`` can reject the caption as ``caption_not_utf8``). Used by the COCO and Visual Genome readers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import BinaryIO

import ijson

from pipeline.readers.common import ijson_backend, open_binary

log = logging.getLogger(__name__)

_PYTHON = ijson.get_backend("python")

_SCAN_CHUNK = 1 << 22
# A string (complete, or cut by the end of the buffer), or a non-finite number token outside strings.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:(?P<closed>")|\\?\Z)|-?Infinity|NaN', re.DOTALL)
_LONG_TOKEN = len(b"-Infinity")
# Where a number can stand: after [ , : or, when the whitespace before it reaches back past the scan buffer's start.
_BARE_NONFINITE = re.compile(rb"(?:\A|[\[,:])\s*-?(?:NaN|Infinity)")
_LONE_SURROGATE = re.compile(  # a high surrogate escape not followed by a low one, or a low one not preceded
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F]"
)


def scan_nonstandard(path: str) -> tuple[bool, bool]:
    """(has NaN/Infinity number tokens, has lone UTF-16 surrogate escapes), from one fast pass over the bytes.

    Byte searches run in C; a hit inside a string only costs the slower parse, never a wrong one.
    """
    nonfinite = surrogate = False
    tail = b""
    with open_binary(path) as f:
        while not (nonfinite and surrogate):
            chunk = f.read(_SCAN_CHUNK)
            if not chunk:
                break
            buf = tail + chunk
            if not nonfinite and (b"NaN" in buf or b"Infinity" in buf):
                nonfinite = _BARE_NONFINITE.search(buf) is not None
            if not surrogate and (b"\\ud" in buf or b"\\uD" in buf):
                surrogate = _LONE_SURROGATE.search(buf) is not None
            tail = buf[-16:]  # long enough for a token or an escape pair cut by the chunk border
    return nonfinite, surrogate


class NonFiniteToNull:
    """File-like filter over JSON bytes that turns ``NaN``, ``Infinity`` and ``-Infinity`` outside strings into
    ``null``. Strings are skipped whole (escapes included), so a caption that says "NaN" is left alone."""

    def __init__(self, raw: BinaryIO, chunk_size: int = 1 << 20):
        self._raw, self._chunk_size = raw, chunk_size
        self._carry, self._out, self._eof = b"", bytearray(), False

    def read(self, size: int = -1) -> bytes:
        while not self._eof and (size < 0 or len(self._out) < size):
            self._fill()
        size = len(self._out) if size < 0 else min(size, len(self._out))
        data = bytes(self._out[:size])
        del self._out[:size]
        return data

    def _fill(self) -> None:
        chunk = self._raw.read(self._chunk_size)
        buf = self._carry + chunk
        self._eof = not chunk
        # Keep back a possible token cut by the chunk border; at the end of the file everything goes out.
        cut = len(buf) if self._eof else max(len(buf) - _LONG_TOKEN, 0)
        pos = 0
        for m in _TOKEN.finditer(buf):
            start, end = m.span()
            is_string = buf[start] == 0x22
            if not self._eof and (end > cut or (is_string and m.group("closed") is None)):
                cut = start  # an unfinished string or token: hand it to the next round whole
                break
            if not is_string:
                self._out += buf[pos:start]
                self._out += b"null"
                pos = end
        self._out += buf[pos:cut]
        self._carry = buf[cut:]


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())[:300]


class JsonFile:
    """One JSON annotation file, read in streaming passes (``items(prefix)``), each pass from the start.

    ``what`` names the file in errors (e.g. ``"source coco: captions"``). The file is scanned once for
    non-standard tokens (see the module docstring) when it is opened.
    """

    def __init__(self, path: str, what: str):
        self.path, self.what = path, what
        try:
            self.nonfinite, self.lone_surrogates = scan_nonstandard(path)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{what} file {path} not found") from err
        if self.nonfinite or self.lone_surrogates:
            log.info("%s: non-standard JSON tokens (NaN/Infinity: %s, lone surrogates: %s), using the tolerant parser",
                     path, self.nonfinite, self.lone_surrogates)  # fmt: skip

    def items(self, prefix: str) -> Iterator[object]:
        """The values at ``prefix`` (ijson syntax: ``"images.item"``), floats as ``float``."""
        backend = _PYTHON if self.lone_surrogates else ijson_backend()
        with open_binary(self.path) as raw:
            stream = NonFiniteToNull(raw) if self.nonfinite else raw
            try:
                yield from backend.items(stream, prefix, use_float=True, buf_size=1 << 18)
            except (ijson.JSONError, UnicodeDecodeError) as err:
                raise ValueError(f"{self.path}: malformed JSON ({self.what}): {_one_line(err)}") from err
