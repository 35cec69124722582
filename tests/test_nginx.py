"""The README's nginx front, for real: nginx proxies to `loopfix serve --sendfile-header
X-Accel-Redirect`, the app checks the token and names the file, nginx sends it (whole, a
Range, a 304 on its own validators), refuses an oversized body at the edge, and never lets a
client reach the internal location or see the redirect header.

Needs nginx (`apt-get install -y nginx-light`; or LOOPFIX_NGINX=/path/to/nginx): skipped
without it, failed without it when CI=true.
"""
from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from dataclasses import replace

import pytest

from loopfix.benchmarks import poll_targets
from loopfix.benchmarks.slow_clients import oversized_body
from loopfix.loadtests.stack import free_port, http_ok, wait_until
from loopfix.reference_app.services import Services
from tests.conftest import required_program

pytestmark = [pytest.mark.redis, pytest.mark.stack]

CONF = """
daemon off;
user root;
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {run}/body; proxy_temp_path {run}/proxy; fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi; scgi_temp_path {run}/scgi;
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 1m;
        client_header_timeout 10s;
        client_body_timeout 10s;
        location / {{
            proxy_pass http://127.0.0.1:{app_port};
            proxy_set_header Host $host;
        }}
        location /_recordings/ {{
            internal;
            alias {recordings}/;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    return required_program(("nginx",), "apt-get install -y nginx-light, or set LOOPFIX_NGINX", "LOOPFIX_NGINX")


def get(url: str, headers: dict[str, str]) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_nginx_sends_the_recording_the_app_names_with_x_accel_redirect(stack_factory, make_config, tmp_path):
    binary = nginx_binary()
    stack = stack_factory(replace(make_config(history=False), sendfile_header="X-Accel-Redirect"))
    app_url = stack.start_app(workers=1)
    svc = Services(stack.config)
    business_id, token = poll_targets.add_business(svc)
    call_sid = poll_targets.add_call(svc, business_id, "ready")
    audio = poll_targets.AUDIO
    run = tmp_path / "nginx"
    run.mkdir()
    port = free_port()
    (run / "nginx.conf").write_text(CONF.format(run=run, port=port, app_port=app_url.rsplit(":", 1)[1],
                                                recordings=stack.config.recordings_dir))
    proc = subprocess.Popen([binary, "-p", str(run), "-c", str(run / "nginx.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        front = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_ok(front + "/healthz"), 20, "nginx", proc, run / "error.log")
        auth = {"Authorization": f"Bearer {token}"}
        stored = next(svc.config.recordings_dir.glob("*.mp3"))
        nginx_etag = f'"{int(stored.stat().st_mtime):x}-{len(audio):x}"'  # nginx's own: the app's is the SHA-256's
        for path in (f"/api/recordings/file/{call_sid}", f"/api/calls/{call_sid}/recording/download"):
            status, headers, body = get(front + path, auth)
            assert (status, body) == (200, audio), path
            assert "X-Accel-Redirect" not in headers and headers["Content-Type"] == "audio/mpeg"
            assert headers["ETag"] == nginx_etag  # sent by nginx, not by the app
            status, headers_206, body = get(front + path, {**auth, "Range": "bytes=100-199"})
            assert (status, body, headers_206["Content-Range"]) == (206, audio[100:200], f"bytes 100-199/{len(audio)}")
            status, _, body = get(front + path, {**auth, "If-None-Match": headers["ETag"]})
            assert (status, body) == (304, b"")
        assert get(front + f"/api/recordings/file/{call_sid}", {})[0] == 401  # the app still decides
        assert get(front + "/_recordings/" + stored.name, auth)[0] == 404  # internal: only a redirect reaches it
        status, _took = oversized_body(front, "/api/leads/bulk-delete", auth, timeout=10)
        assert status == 413
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
