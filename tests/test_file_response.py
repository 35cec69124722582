"""Serving a stored recording through the app (Flask test client, real Redis and database):
conditional requests (304, If-Range), HEAD, the sendfile wrapper's exact bytes, the proxy
hand-off (X-Accel-Redirect, X-Sendfile), and the request-body cap (413 before reading)."""
from __future__ import annotations

import io
import secrets
import time
from dataclasses import replace

import pytest
from werkzeug.wsgi import FileWrapper

from loopfix.reference_app.models import RecordingFile
from tests.conftest import add_business, auth

pytestmark = pytest.mark.redis

LENGTH = 200_000
STUB = "https://api.twilio.com/2010-04-01/Accounts/{account}/Recordings/{sid}.mp3"


@pytest.fixture
def recording(app_factory, make_config):
    """build(**config changes) -> (client, get(endpoint, headers, **kw), the file's bytes, path)."""

    def build(**changes):
        cfg = replace(make_config(history=False), **changes)
        client, svc = app_factory(config=cfg)
        b = add_business(svc, recording_url=STUB)
        call = b["calls"][0]
        data = secrets.token_bytes(LENGTH)
        path = svc.config.recordings_dir / "2026" / f"{call['recording_sid']}.mp3"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        with svc.sessions() as s:
            s.add(RecordingFile(business_id=b["id"], recording_sid=call["recording_sid"], call_sid=call["call_sid"],
                                path=str(path), size=LENGTH, sha256="ab" * 32, content_type="audio/mpeg",
                                created_at=time.time()))
            s.commit()

        def get(endpoint: str = "file", headers: dict | None = None, method: str = "GET", **kw):
            url = (f"/api/recordings/file/{call['call_sid']}" if endpoint == "file"
                   else f"/api/calls/{call['call_sid']}/recording/{endpoint}")
            return client.open(url, method=method, headers={**auth(b), **(headers or {})}, **kw)

        return client, get, data, path, b

    return build


def test_a_player_that_has_the_file_gets_304_without_a_body(recording):
    _client, get, data, _path, _b = recording()
    first = get()
    assert first.status_code == 200 and first.data == data
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert etag == '"' + "ab" * 16 + '"' and first.headers["Cache-Control"] == "no-cache"
    for endpoint in ("file", "stream", "download"):
        again = get(endpoint, {"If-None-Match": etag})
        assert (again.status_code, again.data, again.headers["ETag"]) == (304, b"", etag), endpoint
        assert get(endpoint, {"If-Modified-Since": modified}).status_code == 304
        assert get(endpoint, {"If-None-Match": '"another"'}).data == data


def test_if_range_resumes_only_the_same_file(recording):
    _client, get, data, _path, _b = recording()
    etag = get().headers["ETag"]
    part = get("stream", {"Range": "bytes=1000-", "If-Range": etag})
    assert part.status_code == 206 and part.data == data[1000:]
    assert part.headers["Content-Range"] == f"bytes 1000-{LENGTH - 1}/{LENGTH}"
    changed = get("stream", {"Range": "bytes=1000-", "If-Range": '"an-older-file"'})
    assert changed.status_code == 200 and changed.data == data


def test_head_describes_the_file_without_sending_it(recording):
    _client, get, _data, _path, _b = recording()
    r = get("download", method="HEAD")
    assert r.status_code == 200 and r.data == b"" and r.headers["Content-Length"] == str(LENGTH)
    assert r.headers["Content-Disposition"].startswith("attachment; filename=CA")


@pytest.mark.parametrize("header, first, last", [(None, 0, LENGTH - 1), ("bytes=70000-70009", 70000, 70009),
                                                 ("bytes=-5", LENGTH - 5, LENGTH - 1)])
def test_a_server_file_wrapper_sends_exactly_the_bytes_asked_for(recording, header, first, last):
    """With the server's wsgi.file_wrapper (gunicorn's sends by sendfile; werkzeug's reads to the
    end of what it is given), a range in the middle of the file stops where it should."""
    _client, get, data, _path, _b = recording()
    r = get("stream", {"Range": header} if header else {}, environ_overrides={"wsgi.file_wrapper": FileWrapper})
    assert r.status_code == (206 if header else 200)
    assert r.data == data[first:last + 1] and r.headers["Content-Length"] == str(last - first + 1)


def test_behind_nginx_the_app_names_the_file_and_sends_no_bytes(recording):
    _client, get, _data, path, _b = recording(sendfile_header="X-Accel-Redirect", accel_prefix="/_rec/")
    for endpoint in ("file", "stream", "download"):
        r = get(endpoint, {"Range": "bytes=0-9"})
        assert r.status_code == 200 and r.data == b"", endpoint  # nginx answers the Range itself
        assert r.headers["X-Accel-Redirect"] == f"/_rec/2026/{path.name}"
        assert r.headers["Content-Type"] == "audio/mpeg"
    assert get("download").headers["Content-Disposition"].startswith("attachment; filename=CA")


def test_behind_apache_x_sendfile_names_the_absolute_path(recording):
    _client, get, _data, path, _b = recording(sendfile_header="X-Sendfile")
    r = get()
    assert (r.status_code, r.data, r.headers["X-Sendfile"]) == (200, b"", str(path))


def test_a_file_outside_the_recordings_folder_is_sent_by_the_app_even_behind_nginx(recording, tmp_path):
    _client, get, data, path, _b = recording(sendfile_header="X-Accel-Redirect")
    moved = tmp_path / "elsewhere.mp3"
    path.rename(moved)
    from loopfix.reference_app.services import get_services

    with get_services().sessions() as s:
        s.query(RecordingFile).update({"path": str(moved)})
        s.commit()
    r = get()
    assert r.status_code == 200 and r.data == data and "X-Accel-Redirect" not in r.headers


def test_a_declared_body_over_the_cap_is_refused_413_before_auth_or_reading(recording):
    client, _get, _data, _path, b = recording(max_body_bytes=1000)
    body = io.BytesIO(b'{"lead_ids": [1]}')  # far shorter than declared: nothing may wait for the rest
    for headers in ({}, auth(b)):  # no token: still 413, the body is judged before anything else
        r = client.post("/api/leads/bulk-delete", input_stream=body, headers=headers,
                        environ_overrides={"CONTENT_LENGTH": "50000000"}, content_type="application/json")
        assert r.status_code == 413 and r.json["error"] == "request_entity_too_large", r.data
    small = client.post("/api/leads/bulk-delete", json={"lead_ids": [1]}, headers=auth(b))
    assert small.status_code == 202, small.data


@pytest.mark.parametrize("size, status", [(999, 400), (1001, 413), (5_000_000, 413)])
def test_a_chunked_body_is_read_up_to_the_cap_then_refused_413(recording, size, status):
    client, _get, _data, _path, b = recording(max_body_bytes=1000)
    stream = io.BytesIO(b" " * size)  # whitespace: JSON's parser would wait for a value (400 when short)
    r = client.post("/api/leads/bulk-delete", input_stream=stream, headers={**auth(b), "Transfer-Encoding": "chunked"},
                    content_type="application/json", environ_overrides={"wsgi.input_terminated": True})
    assert r.status_code == status, r.data
    assert stream.tell() <= 1001  # never read past the cap


def test_a_file_response_sends_its_header_list_as_is_and_a_later_header_change_too():
    from loopfix.reference_app.file_response import FileResponse

    environ = {"REQUEST_METHOD": "GET", "SERVER_NAME": "h", "SERVER_PORT": "80", "wsgi.url_scheme": "http"}
    listed = [("Content-Type", "audio/mpeg"), ("Content-Length", "3")]
    body, status, headers = FileResponse([b"abc"], 206, list(listed)).get_wsgi_response(environ)
    assert (list(body), status, headers) == ([b"abc"], "206 PARTIAL CONTENT", listed)
    changed = FileResponse([b"abc"], 200, list(listed))
    changed.headers["X-Extra"] = "1"  # as an after_request hook would
    _body, _status, headers = changed.get_wsgi_response(environ)
    assert headers == [*listed, ("X-Extra", "1")]
    head = FileResponse([b"abc"], 200, list(listed))
    assert list(head.get_wsgi_response({**environ, "REQUEST_METHOD": "HEAD"})[0]) == []


def test_a_bounded_file_reads_its_count_and_closes_its_descriptor_once(tmp_path):
    """BoundedFile owns a bare descriptor: a second close (a server's wrapper and the response's
    call_on_close) must not close whatever file got that number since."""
    import os

    from loopfix.reference_app.file_response import BoundedFile

    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    fd = os.open(path, os.O_RDONLY)
    os.lseek(fd, 2, os.SEEK_SET)
    body = BoundedFile(fd, 5)
    assert body.read(3) + body.read() + body.read() == b"23456"
    body.close()
    other = os.open(path, os.O_RDONLY)  # likely the number just freed
    try:
        body.close()
        assert os.read(other, 2) == b"01"  # still open
    finally:
        os.close(other)
    with pytest.raises(ValueError):
        body.fileno()
