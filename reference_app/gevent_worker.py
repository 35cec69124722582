"""gunicorn's gevent worker, sending files the way gthread and nginx do: with os.sendfile.

gevent's sockets send a file in 8 kB read+send pairs (gevent's `socket.sendfile` gives up on
`os.sendfile`, which does not yield to other greenlets by itself). This worker's sockets call
`os.sendfile` on the non-blocking socket and wait, cooperatively, for it to drain when the
kernel's buffer is full: one system call for a 64 kB recording instead of eight reads and eight
sends, no copy through Python. A response with a file body (`Response.sendfile` below) sends
its headers with MSG_MORE, so the kernel holds them for the file's first bytes and both leave
in one TCP segment (what nginx's `tcp_nopush` does with sendfile): one segment and one wake-up
of the client less per recording, and no seek of the file before and after (gunicorn's own
asks and restores its position). Served by `loopfix serve` (the default `--worker-class
gevent`; serving.py). Importing this module imports gevent and gunicorn: only gunicorn's
workers do.
"""
from __future__ import annotations

import os
import socket

from gevent import socket as gsocket
from gevent.socket import wait_write
from gunicorn.http import wsgi as gunicorn_wsgi
from gunicorn.util import has_fileno
from gunicorn.workers.ggevent import GeventWorker as _GunicornGeventWorker


def send_from(sock, fileno: int, offset: int, count: int, stall_s: float | None = None) -> int:
    """os.sendfile of `count` bytes of `fileno` from `offset` (fewer at the file's end) to the
    gevent socket `sock`, waiting for it to become writable (cooperatively) when it would block —
    for at most the socket's timeout, or `stall_s` when it has none (a reader that stops reading
    then gets socket.timeout, and gunicorn closes its connection). Returns the bytes sent; the
    file's position is not used or moved."""
    timeout = sock.gettimeout()
    sockno, timeout, sent_total = sock.fileno(), stall_s if timeout is None else timeout, 0
    while sent_total < count:
        try:
            sent = os.sendfile(sockno, fileno, offset + sent_total, min(count - sent_total, 1 << 30))
        except BlockingIOError:
            wait_write(sockno, timeout=timeout, timeout_exc=TimeoutError("sendfile: the reader stalled"))
            continue
        if sent == 0:
            break  # the file is shorter than asked
        sent_total += sent
    return sent_total


def cooperative_sendfile(sock, file, offset: int = 0, count: int | None = None, stall_s: float | None = None) -> int:
    """socket.sendfile for a gevent socket (send_from), the file's position moved past what was
    sent, as socket.sendfile does. Falls back to gevent's send loop for what os.sendfile cannot
    send (not a regular file)."""
    try:
        fileno = file.fileno()
        count = (os.fstat(fileno).st_size - offset) if count is None else count
    except (AttributeError, OSError):
        return sock._sendfile_use_send(file, offset, count)
    sent = 0
    try:
        sent = send_from(sock, fileno, offset, count, stall_s)
        return sent
    finally:
        if sent and hasattr(file, "seek"):
            file.seek(offset + sent)


def send_all(sock, data: bytes, flags: int = 0) -> None:
    """All of `data` on the gevent socket `sock` (its `send` waits, cooperatively, while the socket
    would block). gevent's own `sendall` asks the socket's buffer size first (a getsockopt) to
    send large data in chunks; a response's headers are one small send."""
    view = memoryview(data)
    while view:
        view = view[sock.send(view, flags):]


def file_sender(gunicorn_sendfile, stall_s: float | None):
    """gunicorn's `Response.sendfile(respiter)` for this worker (module docstring): a file body of
    a known length on plain TCP goes as headers (gunicorn's, sent with MSG_MORE) then send_from
    the file's position; anything else (TLS, chunked, a response that must omit its body, headers
    already sent, sendfile switched off) is gunicorn's own."""

    def sendfile(resp, respiter) -> bool:
        file = respiter.filelike
        if (resp.cfg.is_ssl or not resp.can_sendfile() or resp.headers_sent or resp.chunked
                or not resp.response_length or getattr(resp, "_omits_body", True) or not has_fileno(file)):
            return gunicorn_sendfile(resp, respiter)
        fileno = file.fileno()
        try:
            offset = os.lseek(fileno, 0, os.SEEK_CUR)
        except OSError:
            return gunicorn_sendfile(resp, respiter)
        head = resp.default_headers()  # as gunicorn's send_headers, but held for the file's bytes
        head.extend(["%s: %s\r\n" % (k, v) for k, v in resp.headers])
        send_all(resp.sock, ("%s\r\n" % "".join(head)).encode("latin-1"), socket.MSG_MORE)
        resp.headers_sent = True
        send_from(resp.sock, fileno, offset, resp.response_length, stall_s)
        return True

    sendfile.gunicorn_sendfile = gunicorn_sendfile
    return sendfile


class GeventWorker(_GunicornGeventWorker):
    """gunicorn's gevent worker whose sockets send files with os.sendfile (module docstring)."""

    def patch(self) -> None:
        super().patch()  # monkey.patch_all(), the listening sockets made gevent's
        stall_s = float(self.cfg.timeout) or None  # gunicorn's --timeout (30 s): how long a reader may stall

        def sendfile(sock, file, offset=0, count=None):
            return cooperative_sendfile(sock, file, offset, count, stall_s)

        gsocket.socket.sendfile = sendfile
        response = gunicorn_wsgi.Response
        response.sendfile = file_sender(getattr(response.sendfile, "gunicorn_sendfile", response.sendfile), stall_s)
