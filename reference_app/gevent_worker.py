"""gunicorn's gevent worker, sending files the way gthread and nginx do: with os.sendfile.

gevent's sockets send a file in 8 kB read+send pairs (gevent's `socket.sendfile` gives up on
`os.sendfile`, which does not yield to other greenlets by itself). This worker's sockets call
`os.sendfile` on the non-blocking socket and wait, cooperatively, for it to drain when the
kernel's buffer is full: one system call for a 64 kB recording instead of eight reads and eight
sends, no copy through Python. Its responses' headers (a write of their own in gunicorn) wait
for the file's first bytes and leave in the same TCP segment (the socket corked, TCP_CORK,
while gunicorn sends a file: what nginx's `tcp_nopush` does with sendfile): one segment, one
wake-up of the client less per recording. Served by `loopfix serve` (the default `--worker-class gevent`;
serving.py). Importing this module imports gevent and gunicorn: only gunicorn's workers do.
"""
from __future__ import annotations

import os
import socket

from gevent import socket as gsocket
from gevent.socket import wait_write
from gunicorn.http import wsgi as gunicorn_wsgi
from gunicorn.workers.ggevent import GeventWorker as _GunicornGeventWorker


def cooperative_sendfile(sock, file, offset: int = 0, count: int | None = None, stall_s: float | None = None) -> int:
    """socket.sendfile for a gevent socket: os.sendfile until `count` bytes (or the file's end)
    are sent, waiting for the socket to become writable (cooperatively) when it would block —
    for at most the socket's timeout, or `stall_s` when it has none (a reader that stops reading
    then gets socket.timeout, and gunicorn closes its connection). Falls back to gevent's send
    loop for what os.sendfile cannot send (not a regular file)."""
    try:
        fileno = file.fileno()
        left = (os.fstat(fileno).st_size - offset) if count is None else count  # gunicorn gives count
    except (AttributeError, OSError):
        return sock._sendfile_use_send(file, offset, count)
    timeout = sock.gettimeout()
    sockno, timeout, sent_total = sock.fileno(), stall_s if timeout is None else timeout, 0
    try:
        while left > 0:
            try:
                sent = os.sendfile(sockno, fileno, offset + sent_total, min(left, 1 << 30))
            except BlockingIOError:
                wait_write(sockno, timeout=timeout, timeout_exc=TimeoutError("sendfile: the reader stalled"))
                continue
            if sent == 0:
                break  # the file is shorter than asked
            sent_total += sent
            left -= sent
        return sent_total
    finally:
        if sent_total and hasattr(file, "seek"):
            file.seek(offset + sent_total)


def corked(sendfile):
    """gunicorn's `Response.sendfile(respiter)` with the socket corked while it runs (headers
    and file in full segments; module docstring); as it was on a socket that cannot cork (Unix)."""

    def send(resp, respiter) -> bool:
        sock = resp.sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        except OSError:
            return sendfile(resp, respiter)
        try:
            return sendfile(resp, respiter)
        finally:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)  # sends what is held
            except OSError:  # the connection is gone: gunicorn closes it
                pass

    send.corked = True
    return send


class GeventWorker(_GunicornGeventWorker):
    """gunicorn's gevent worker whose sockets send files with os.sendfile (module docstring)."""

    def patch(self) -> None:
        super().patch()  # monkey.patch_all(), the listening sockets made gevent's
        stall_s = float(self.cfg.timeout) or None  # gunicorn's --timeout (30 s): how long a reader may stall

        def sendfile(sock, file, offset=0, count=None):
            return cooperative_sendfile(sock, file, offset, count, stall_s)

        gsocket.socket.sendfile = sendfile
        if not getattr(gunicorn_wsgi.Response.sendfile, "corked", False):
            gunicorn_wsgi.Response.sendfile = corked(gunicorn_wsgi.Response.sendfile)
