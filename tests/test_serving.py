"""`loopfix serve` under slow and oversized clients, through real gunicorn: 256 connections that
each send half a request line and wait hold no worker under the gevent worker class (the
default), while they stop a gthread app; a 50 MB body is refused 413 without being read,
declared or chunked; sendfile (gthread's, and the gevent worker's own) sends exactly the bytes
asked for, also of a file larger than the socket's buffers to a slow reader.

Time bounds are not constants: each comes from latencies this test measured on the idle app
first (BOUND_FACTOR × the slowest of them), and each positive check has a variant that must
break it (gthread; a cap above the body's size) under the same bound.
"""
from __future__ import annotations

import hashlib
import socket
import time
from dataclasses import replace

import pytest

from loopfix.benchmarks import poll_targets
from loopfix.benchmarks.slow_clients import BIG_BODY_BYTES, HalfOpen, chunked_body, latencies, oversized_body, request_status
from loopfix.reference_app.models import RecordingFile
from loopfix.reference_app.services import Services

pytestmark = [pytest.mark.redis, pytest.mark.stack]

HELD = 256
BOUND_FACTOR = 100  # an answer slower than 100 idle answers is no answer


@pytest.fixture
def served(stack_factory, make_config):
    """start(worker_class, **config changes) -> (app URL, Services, {name: (path, headers, status)})."""

    def start(worker_class: str = "gevent", **changes):
        stack = stack_factory(replace(make_config(history=False), **changes))
        url = stack.start_app(workers=1, threads=2, worker_class=worker_class)
        svc = Services(stack.config)
        business_id, token = poll_targets.add_business(svc)
        waiting = poll_targets.add_call(svc, business_id, "queued")
        svc.coord.worker_beat()
        auth = {"Authorization": f"Bearer {token}"}
        targets = {"healthz": ("/healthz", {}, 200), "poll": (f"/api/recordings/file/{waiting}", auth, 202)}
        return url, svc, targets, auth, business_id

    return start


def idle_bound(url: str, targets: dict) -> float:
    """BOUND_FACTOR × the slowest of 5 idle answers of every target."""
    slowest = max(latencies(url, p, h, e, samples=5, timeout=30).worst for p, h, e in targets.values())
    return BOUND_FACTOR * slowest


@pytest.mark.parametrize("worker_class, answers", [("gevent", True), ("gthread", False)])
def test_healthz_and_a_poll_answer_while_256_half_open_connections_are_held(served, worker_class, answers):
    url, _svc, targets, _auth, _b = served(worker_class)
    bound = idle_bound(url, targets)
    holder = HalfOpen(url, HELD)
    with holder.held():
        time.sleep(0.2)
        got = {name: request_status(url, path, headers, timeout=bound)[0] for name, (path, headers, _) in targets.items()}
    assert holder.failed == 0
    expected = {name: status if answers else None for name, (_, _, status) in targets.items()}
    assert got == expected, f"bound {bound:.3f} s"


@pytest.mark.parametrize("cap, refused", [(None, True), (100_000_000, False)])
def test_a_50_mb_body_is_refused_413_without_waiting_for_it(served, cap, refused):
    url, _svc, targets, auth, _b = served(**({"max_body_bytes": cap} if cap else {}))
    bound = idle_bound(url, targets)
    status, _took = oversized_body(url, "/api/leads/bulk-delete", auth, timeout=bound)
    # only 16 bytes of the 50 MB are sent: an app that reads the body waits for the rest, past the bound
    assert status == (413 if refused else None)


def test_a_chunked_body_past_the_cap_is_refused_413_long_before_its_end(served):
    url, svc, targets, auth, _b = served()
    bound = idle_bound(url, targets)
    status, sent, _took = chunked_body(url, "/api/leads/bulk-delete", auth, timeout=bound, limit=BIG_BODY_BYTES)
    # sent: the cap (1 MiB) and what the sockets' buffers took before the 413 came back
    assert (status, sent < BIG_BODY_BYTES // 4) == (413, True), sent


@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_each_worker_class_sends_whole_files_and_ranges_by_sendfile_exactly(served, worker_class):
    url, svc, _targets, auth, business_id = served(worker_class)
    call_sid = poll_targets.add_call(svc, business_id, "ready")
    data = bytes(range(256)) * (12 * 1024 * 1024 // 256)  # 12 MB: more than the socket buffers hold
    with svc.sessions() as s:
        row = s.query(RecordingFile).filter_by(call_sid=call_sid).one()
        with open(row.path, "wb") as f:
            f.write(data)
        row.sha256 = hashlib.sha256(data).hexdigest()
        s.commit()
    path = f"/api/calls/{call_sid}/recording/stream"
    for rng, want in ((None, data), ("bytes=1000000-1000099", data[1_000_000:1_000_100]),
                      ("bytes=-300000", data[-300_000:])):
        body = slow_get(url, path, {**auth, **({"Range": rng} if rng else {})})
        assert body == want, (rng, len(body))


def slow_get(url: str, path: str, headers: dict[str, str]) -> bytes:
    """The body of a GET read 64 kB at a time with pauses, so the server's socket fills and
    its sendfile has to wait for it to drain."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as s:
        lines = [f"GET {path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
        s.sendall(("\r\n".join(lines + [f"{k}: {v}" for k, v in headers.items()]) + "\r\n\r\n").encode())
        raw, reads = b"", 0
        while chunk := s.recv(65536):
            raw += chunk
            reads += 1
            if reads % 16 == 0:
                time.sleep(0.005)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] in (b"200", b"206"), head[:200]
    return body
