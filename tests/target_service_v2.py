"""tests/target_service.py behind other routes and a session cookie: a service reference_app's
routes do not fit, for the README's adapter to drive (tests/test_target_mode.py).

    python tests/target_service_v2.py --port 8000 --fixtures fixtures.json --media-host 127.0.0.1:9100 ...

Differences from openapi.yaml, put in front of the same service as a WSGI layer:
- `POST /v2/login` (form `token=<api_token>`) answers 204 with `Set-Cookie: sid=...`;
- every /api/ route takes that cookie and refuses a Bearer token (401);
- the player polls `GET /v2/calls/<call_sid>/audio`, bulk deletes go to `POST /v2/leads/delete`;
  their /api/ paths answer 404.
Webhooks, the job and lead routes and the admin hooks keep their paths.
"""
from __future__ import annotations

import secrets
import sys
import threading
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs

sys.path.insert(0, str(Path(__file__).resolve().parent))
import target_service  # noqa: E402 - the service itself, beside this file

MOVED = {"/api/recordings/file/": "/v2/calls/", "/api/leads/bulk-delete": "/v2/leads/delete"}


class CookieRoutes:
    """WSGI: /v2 routes and cookie sessions in front of `app`."""

    def __init__(self, app):
        self.app, self.sessions, self.lock = app, {}, threading.Lock()

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/v2/login" and environ["REQUEST_METHOD"] == "POST":
            size = int(environ.get("CONTENT_LENGTH") or 0)
            token = parse_qs(environ["wsgi.input"].read(size).decode()).get("token", [""])[0]
            sid = secrets.token_hex(8)
            with self.lock:
                self.sessions[sid] = token
            start_response("204 No Content", [("Set-Cookie", f"sid={sid}; HttpOnly; Path=/")])
            return [b""]
        if any(path.startswith(old) for old in MOVED):
            return self.refuse(start_response, "404 Not Found")
        if path.startswith("/v2/calls/") and path.endswith("/audio"):
            environ["PATH_INFO"] = "/api/recordings/file/" + path[len("/v2/calls/"):-len("/audio")]
        elif path == "/v2/leads/delete":
            environ["PATH_INFO"] = "/api/leads/bulk-delete"
        if environ["PATH_INFO"].startswith("/api/"):
            cookie = SimpleCookie(environ.get("HTTP_COOKIE", ""))
            with self.lock:
                token = self.sessions.get(cookie["sid"].value) if "sid" in cookie else None
            if token is None or environ.get("HTTP_AUTHORIZATION"):
                return self.refuse(start_response, "401 Unauthorized")
            environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        return self.app(environ, start_response)

    @staticmethod
    def refuse(start_response, status: str):
        body = b'{"error": "' + status.split(" ", 1)[1].lower().replace(" ", "_").encode() + b'"}'
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


if __name__ == "__main__":
    plain = target_service.make_app
    target_service.make_app = lambda svc: CookieRoutes(plain(svc))
    sys.exit(target_service.main())
