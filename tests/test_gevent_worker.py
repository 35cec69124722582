"""`loopfix serve`'s gevent worker (reference_app/gevent_worker.py) sends a recording whole and
exactly: os.sendfile on gevent's sockets from the file's position, the headers sent with
MSG_MORE (held for the file's first bytes) — a whole body, a Range, a 304 and a HEAD, one after
another on one keep-alive connection, so a byte held back or sent twice would show in the next
answer."""
from __future__ import annotations

import http.client

import pytest

from loopfix.benchmarks import poll_targets
from loopfix.reference_app.services import Services

pytestmark = [pytest.mark.redis, pytest.mark.stack]


def test_the_gevent_worker_sends_files_exactly_on_one_keep_alive_connection(stack_factory, make_config):
    stack = stack_factory(make_config(history=False))
    url = stack.start_app(workers=1)
    svc = Services(stack.config)
    business_id, token = poll_targets.add_business(svc)
    call_sid = poll_targets.add_call(svc, business_id, "ready")
    audio, path = poll_targets.AUDIO, f"/api/recordings/file/{call_sid}"
    auth = {"Authorization": f"Bearer {token}"}
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)

    def get(method: str = "GET", **headers: str) -> tuple[int, http.client.HTTPResponse, bytes]:
        conn.request(method, path, headers={**auth, **headers})
        resp = conn.getresponse()
        return resp.status, resp, resp.read()

    try:
        for _ in range(3):
            status, resp, body = get()
            assert (status, body) == (200, audio)
            assert resp.getheader("Content-Length") == str(len(audio)) and not resp.will_close
        etag = resp.getheader("ETag")
        status, resp, body = get(Range="bytes=100-199")
        assert (status, body, resp.getheader("Content-Range")) == (206, audio[100:200], f"bytes 100-199/{len(audio)}")
        status, resp, body = get(Range=f"bytes=-{len(audio) - 1}")  # from byte 1: an offset past the start
        assert (status, body) == (206, audio[1:])
        assert get(**{"If-None-Match": etag})[::2] == (304, b"")
        status, resp, body = get("HEAD")
        assert (status, body, resp.getheader("Content-Length")) == (200, b"", str(len(audio)))
        assert get()[::2] == (200, audio)  # nothing left over from the answers before
    finally:
        conn.close()
