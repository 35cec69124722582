"""Request bodies past a cap (Config.max_body_bytes) are refused with 413, not read.

A body whose Content-Length says it is too large is refused before a byte of it is read (and
before the request touches the database). A chunked body has no length up front: it is read
through `CappedInput`, which raises 413 as soon as a read would go past the cap — werkzeug's own
limit (MAX_CONTENT_LENGTH) stops a chunked read at exactly the cap and hands the route a
truncated body (a 400 for bad JSON instead of a 413), so the app does not use it.
"""
from __future__ import annotations

from werkzeug.exceptions import RequestEntityTooLarge


def too_large(cap: int) -> RequestEntityTooLarge:
    return RequestEntityTooLarge(f"request body over {cap} bytes (LOOPFIX_MAX_BODY_BYTES); refused unread")


class CappedInput:
    """A WSGI input stream that raises 413 when more than `cap` bytes would be read from it."""

    def __init__(self, stream, cap: int) -> None:
        self._stream, self._cap, self._read = stream, cap, 0

    def _count(self, data: bytes) -> bytes:
        self._read += len(data)
        if self._read > self._cap:
            raise too_large(self._cap)
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:  # read it all: at most one byte past the cap
            size = self._cap - self._read + 1
        return self._count(self._stream.read(min(size, self._cap - self._read + 1)))

    def readline(self, size: int | None = -1) -> bytes:
        limit = self._cap - self._read + 1
        return self._count(self._stream.readline(limit if size is None or size < 0 else min(size, limit)))

    def __iter__(self):
        while line := self.readline():
            yield line


def check_body(environ: dict, cap: int) -> None:
    """Before anything reads the body: 413 for a declared length past `cap`; a chunked body's
    stream replaced by a CappedInput."""
    try:
        declared = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0  # werkzeug treats an invalid length as none: an empty body
    if declared > cap:
        raise too_large(cap)
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        environ["wsgi.input"] = CappedInput(environ["wsgi.input"], cap)
