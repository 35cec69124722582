"""A stored recording as an HTTP response, the way file servers send one: the bytes go from the
file to the socket by the WSGI server's `wsgi.file_wrapper` (gunicorn turns it into
`sendfile(2)`: no copy through Python), or, behind a proxy that serves files itself, by a
header naming the file (`X-Accel-Redirect` for nginx, `X-Sendfile` for Apache/lighttpd) and no
body at all. Conditional requests and Range (conditional.select) are answered here: 304 with no
body for a player that has the file, 206 for the range asked, 412 / 416 as RFC 9110 says.

Cheap on purpose (it is the playback poll's 200 path): one open and one fstat (of a bare
descriptor), the headers as one list; werkzeug's send_file cost more than the poll's database work.
"""
from __future__ import annotations

import os
from email.utils import formatdate
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

from flask import Response
from werkzeug.datastructures import Headers
from werkzeug.exceptions import PreconditionFailed, RequestedRangeNotSatisfiable

from loopfix.reference_app.conditional import CONDITIONAL_HEADERS, Representation, select

_ENVIRON_KEY = {name: "HTTP_" + name.upper().replace("-", "_") for name in CONDITIONAL_HEADERS}
BLOCK = 64 * 1024  # read size where the server has no sendfile (the test client, werkzeug's server)
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
try:  # close(2) itself: under gevent (`loopfix serve`) os.close is gevent's, which first checks
    # the descriptor with fcntl and fstat (is it a socket a greenlet waits on? a file never is)
    from posix import close as close_fd
except ImportError:  # not a POSIX system
    close_fd = os.close
CACHE_CONTROL = "no-cache"  # a player may keep it, but asks again (If-None-Match → 304)


class BoundedFile:
    """The part of an open file (a descriptor, this object's to close) that a response sends:
    from its current position, `count` bytes. It has the file's `fileno()`, so gunicorn sends it
    with sendfile (from the position, Content-Length bytes); any other server reads it, and
    reading stops at `count`. A bare descriptor, not a Python file: opening one costs an fstat
    and an object more on every 200 poll."""

    __slots__ = ("_fd", "_left")

    def __init__(self, fd: int, count: int) -> None:
        self._fd, self._left = fd, count

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("I/O operation on closed file")
        return self._fd

    def read(self, size: int = -1) -> bytes:
        n = self._left if size is None or size < 0 else min(size, self._left)
        if n <= 0:
            return b""
        data = os.read(self.fileno(), n)
        self._left -= len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return os.lseek(self.fileno(), offset, whence)

    def tell(self) -> int:
        return os.lseek(self.fileno(), 0, os.SEEK_CUR)

    def close(self) -> None:  # once: a descriptor closed twice may be another file's by then
        fd, self._fd = self._fd, -1
        if fd >= 0:
            close_fd(fd)


class FileResponse(Response):
    """A Response (Flask and tests treat it as any other) whose headers, written whole by this
    module, go to the WSGI server as the list they are: werkzeug would validate each header into
    a `Headers` and, when the response is sent, copy and fix them up (Location, Content-Length
    of a buffered body: nothing to do here), ~9 µs of the 200 path. Reading or changing
    `headers` (an after_request hook, a test) builds the `Headers`, and the response is then
    sent werkzeug's way, changes included."""

    def __init__(self, body, status: int, headers: list[tuple[str, str]]) -> None:
        # Response.__init__'s attributes, without the Headers it would build (and the default
        # Content-Type it would add: the list has the file's).
        self.status = status
        self.direct_passthrough = True
        self._on_close = []
        self.response = body
        self._header_list: list[tuple[str, str]] | None = headers

    @property
    def headers(self) -> Headers:
        found = self.__dict__.get("_headers")
        if found is None:
            found = self.__dict__["_headers"] = Headers(self._header_list)
            self._header_list = None
        return found

    @headers.setter
    def headers(self, value: Headers) -> None:
        self.__dict__["_headers"], self._header_list = value, None

    def get_wsgi_response(self, environ: dict):
        if self._header_list is None:
            return super().get_wsgi_response(environ)
        return self.get_app_iter(environ), self.status, self._header_list


@lru_cache(maxsize=4096)
def http_date(epoch_s: int) -> str:
    """An HTTP date (Last-Modified); cached: files are few and their times do not change."""
    return formatdate(epoch_s, usegmt=True)


def disposition(as_attachment: bool, filename: str) -> str:
    """Content-Disposition for an ASCII file name (a sid and an extension), RFC 6266."""
    return f"{'attachment' if as_attachment else 'inline'}; filename={filename}"


def proxied_response(path: str, content_type: str, download_name: str, as_attachment: bool,
                     header: str, recordings_dir: Path, prefix: str) -> Response | None:
    """Behind a proxy: an empty 200 whose `header` tells the proxy which file to send (the
    proxy then answers Range and the conditional headers itself). None when the file is not
    under `recordings_dir` (an X-Accel-Redirect URI can only name what the internal location
    maps), so the app sends it itself."""
    if header == "X-Sendfile":
        target = path
    else:
        try:
            relative = Path(path).relative_to(recordings_dir)
        except ValueError:
            return None
        target = prefix.rstrip("/") + "/" + quote(relative.as_posix())
    return Response(b"", 200, [("Content-Type", content_type),
                               ("Content-Disposition", disposition(as_attachment, download_name)),
                               ("Cache-Control", CACHE_CONTROL), (header, target)])


def file_response(environ: dict, path: str, content_type: str, etag: str, download_name: str,
                  as_attachment: bool = False) -> Response:
    """The response to a GET or HEAD of the file at `path` (which must exist: the caller found
    it), with `etag` (unquoted) as its strong validator. 412 and 416 are raised as werkzeug's
    HTTPExceptions (the app's JSON error body; 416 with `Content-Range: bytes */len`). Raises
    OSError when the file cannot be opened."""
    method = environ["REQUEST_METHOD"]
    fd = os.open(path, _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        rep = Representation(st.st_size, f'"{etag}"', int(st.st_mtime))
        chosen = select(method, lambda name: environ.get(_ENVIRON_KEY[name]), rep)
        if chosen.status == 412:
            raise PreconditionFailed()
        if chosen.status == 416:
            raise RequestedRangeNotSatisfiable(length=rep.length)
        headers = [("ETag", rep.etag), ("Last-Modified", http_date(rep.last_modified)),
                   ("Cache-Control", CACHE_CONTROL), ("Accept-Ranges", "bytes")]
        if chosen.status == 304:
            close_fd(fd)
            return FileResponse([], 304, headers)
        headers += [("Content-Type", content_type), ("Content-Length", str(chosen.length)),
                    ("Content-Disposition", disposition(as_attachment, download_name))]
        if chosen.status == 206:
            headers.append(("Content-Range", f"bytes {chosen.first}-{chosen.last}/{rep.length}"))
        if method == "HEAD" or not chosen.length:
            close_fd(fd)
            return FileResponse([], chosen.status, headers)
        if chosen.first:
            os.lseek(fd, chosen.first, os.SEEK_SET)
        body = BoundedFile(fd, chosen.length)
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is not None:
            return FileResponse(wrapper(body, BLOCK), chosen.status, headers)
        resp = FileResponse(iter(lambda: body.read(BLOCK), b""), chosen.status, headers)
        resp.call_on_close(body.close)
        return resp
    except BaseException:
        close_fd(fd)
        raise
