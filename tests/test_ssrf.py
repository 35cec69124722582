"""SSRF: a RecordingUrl is fetched with the business's Twilio credentials by a worker inside the
network, so it must never reach anything but an allowed media host. Attacked three ways:

- the allowlist check itself (reference_app.media.media_host_allowed), with hypothesis-built URLs — other
  hosts, IP literals (v4, v6, decimal, octal, hex), `user@host` tricks, ports, schemes,
  percent-encoding, trailing dots, look-alike names — checked against what requests/urllib3
  would actually connect to;
- the webhook: every such URL in a validly signed callback is a 400 and nothing is enqueued;
- the download: a tiny "media host" on the allowlist answers redirects to a "target" server
  that is not on it (301/302/303/307/308, absolute, protocol-relative, decimal-IP forms): the
  target sees 0 requests and the run fails at once (a refusal is not retried); redirects that
  stay on the allowlist are followed, at most `media_redirects_max` of them. Fault
  `redirect_followed_anywhere` (requests' default) shows the target being fetched.
"""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from urllib3.util import parse_url

from loopfix.loadtests.twilio_stub import wav_bytes
from loopfix.reference_app.jobs import process_recording
from loopfix.reference_app.models import RecordingFile, RecordingRun
from loopfix.reference_app.media import media_host_allowed
from tests.conftest import add_business, sid, signed_post

TWILIO = "api.twilio.com"
LOCAL = "127.0.0.1:8010"  # a stand-in entry: http or https, on exactly this port
ALLOWED = (TWILIO, LOCAL)
ALLOWED_ENDPOINTS = {("https", TWILIO, 443), ("http", "127.0.0.1", 8010), ("https", "127.0.0.1", 8010)}

# ----------------------------------------------------------------------------- URL building blocks

SCHEMES = ["https", "http", "HTTPS", "ftp", "file", "gopher", "dict", "ws", "javascript", ""]
USERINFO = ["", "user@", "user:pass@", f"{TWILIO}@", f"{TWILIO}:443@", "127.0.0.1@", f"{TWILIO}%40@"]
HOSTS = [
    TWILIO, "API.TWILIO.COM", f"{TWILIO}.", f"{TWILIO}.evil.example", f"evil{TWILIO}", f"evil.example#{TWILIO}",
    f"evil.example?{TWILIO}", f"evil.example\\{TWILIO}", "api%2Etwilio%2Ecom", "api.twilio.com%00.evil.example",
    "apі.twilio.com",  # Cyrillic і
    "evil.example", "localhost", "127.0.0.1", "127.1", "0.0.0.0", "0", "2130706433", "0177.0.0.1", "0x7f.0.0.1",
    "0x7f000001", "017700000001", "127.000.000.001", "169.254.169.254", "[::1]", "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]", "[0:0:0:0:0:0:0:1]", "[fe80::1%25eth0]", "10.0.0.1", "192.168.0.1", "metadata.google.internal",
]
PORTS = ["", ":443", ":0443", ":80", ":8010", ":8443", ":22", ":65536", ":-1", ":abc", ": 443"]
PATHS = ["/2010-04-01/Accounts/AC1/Recordings/RE1.mp3", "", "/x", "?a=b", "#frag", "/..%2f..%2fadmin", "/%0d%0aHost:evil"]


@st.composite
def urls(draw) -> str:
    scheme = draw(st.sampled_from(SCHEMES))
    sep = draw(st.sampled_from(["://", ":/", ":", ":///", "://\t", "://\\\\"])) if scheme else draw(
        st.sampled_from(["//", "", "///"]))
    return (scheme + sep + draw(st.sampled_from(USERINFO)) + draw(st.sampled_from(HOSTS)) + draw(st.sampled_from(PORTS))
            + draw(st.sampled_from(PATHS)) + draw(st.text(max_size=4)))


def endpoint(url: str) -> tuple[str, str, int] | None:
    """Where requests would connect for `url` (scheme, host, port), or None when it would not."""
    try:
        prepared = requests.Request("GET", url).prepare()
        parsed = parse_url(prepared.url)
    except Exception:
        return None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return None
    return parsed.scheme, parsed.host.lower(), parsed.port or (443 if parsed.scheme == "https" else 80)


SSRF_FUZZ = settings(max_examples=2000, deadline=None)


@SSRF_FUZZ
@given(urls())
def test_an_allowed_url_connects_only_to_an_allowed_endpoint(url):
    if media_host_allowed(url, ALLOWED):
        assert endpoint(url) in ALLOWED_ENDPOINTS, url


@SSRF_FUZZ
@given(st.text(max_size=60).map(lambda t: "https://" + t))
def test_random_text_after_the_scheme_never_escapes_the_allowlist(url):
    if media_host_allowed(url, ALLOWED):
        assert endpoint(url) in ALLOWED_ENDPOINTS, url


@pytest.mark.parametrize("url", [
    "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1.mp3",
    "https://API.twilio.com:443/r.mp3",
    "http://127.0.0.1:8010/r.wav",
    "https://127.0.0.1:8010/r.wav",
])
def test_the_allowed_origins_themselves_are_allowed(url):
    assert media_host_allowed(url, ALLOWED)


@pytest.mark.parametrize("url", [
    "http://api.twilio.com/r.mp3",  # plain http to a name entry
    "https://api.twilio.com:8443/r.mp3",
    "https://api.twilio.com@evil.example/r.mp3",
    "https://evil.example\\@api.twilio.com/r.mp3",
    "https://api.twilio.com.evil.example/r.mp3",
    "https://api.twilio.com./r.mp3",
    "http://2130706433:8010/r.wav", "http://0177.0.0.1:8010/r.wav", "http://0x7f000001:8010/r.wav",
    "http://127.1:8010/r.wav", "http://[::ffff:127.0.0.1]:8010/r.wav", "http://localhost:8010/r.wav",
    "http://127.0.0.1:8011/r.wav", "http://127.0.0.1/r.wav",
    "file:///etc/passwd", "ftp://api.twilio.com/r.mp3", "//api.twilio.com/r.mp3", "api.twilio.com/r.mp3",
    "https://api%2Etwilio%2Ecom/r.mp3", "https:///api.twilio.com/r.mp3", "",
    # urlsplit strips these where requests refuses or reads otherwise: a parser differential
    "https://\tapi.twilio.com/r.mp3", " https://api.twilio.com/r.mp3", "https://api.twilio.com/r.mp3\n",
    "https://api.twilio.com/r\u00e9.mp3",
])
def test_hostile_urls_are_refused(url):
    assert not media_host_allowed(url, ALLOWED)


# ----------------------------------------------------------------------------- the webhook

BASE = "http://loopfix.test"


def test_every_hostile_recording_url_in_a_signed_callback_is_a_400_and_enqueues_nothing(app_factory):
    client, svc = app_factory(media_hosts=ALLOWED, history=False)
    b = add_business(svc)
    tried = 0

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(urls())
    def attack(url):
        nonlocal tried
        assume(endpoint(url) not in ALLOWED_ENDPOINTS)
        tried += 1
        form = {"AccountSid": b["account_sid"], "CallSid": b["calls"][0]["call_sid"], "RecordingSid": sid("RE"),
                "RecordingUrl": url, "RecordingStatus": "completed"}
        r = signed_post(client, BASE, "/webhooks/twilio/recording", b, form)
        assert r.status_code == 400 and r.json["error"] in ("host_not_allowed", "bad_request"), (url, r.json)

    attack()
    with svc.sessions() as s:
        assert s.scalar(select(func.count(RecordingRun.id))) == 0
    assert svc.redis.keys() == []
    print(f"\nhostile RecordingUrl callbacks tried: {tried}")


# ----------------------------------------------------------------------------- the download

class Server:
    """A tiny HTTP server on 127.0.0.1 that answers from `routes` (path → (status, headers, body))
    and counts every request it receives."""

    def __init__(self):
        self.routes: dict[str, tuple[int, dict, bytes]] = {}
        self.hits: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args):
                pass

            def do_GET(self):
                server.hits.append(self.path)
                status, headers, body = server.routes.get(self.path.split("?")[0], (404, {}, b"no"))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def media_and_target():
    media, target = Server(), Server()
    target.routes["/secret"] = (200, {"Content-Type": "audio/wav"}, wav_bytes(2000))
    yield media, target
    media.close()
    target.close()


def download(app_factory, media, url: str, faults: str = "") -> dict:
    """Run the recording job in-process for a call whose RecordingUrl is `url` (a path: on `media`)."""
    url = media.url + url if url.startswith("/") else url
    _client, svc = app_factory(media_hosts=(f"127.0.0.1:{media.port}",), faults=faults, history=False)
    b = add_business(svc, recording_url=url)
    call = b["calls"][0]
    with svc.sessions() as s:
        run = RecordingRun(business_id=b["id"], call_sid=call["call_sid"], recording_sid=call["recording_sid"],
                           recording_url=url, job_type="download_only", status="queued", created_at=time.time())
        s.add(run)
        s.commit()
        run_id = run.id
    process_recording(run_id)
    with svc.sessions() as s:
        run = s.get(RecordingRun, run_id)
        files = s.scalar(select(func.count(RecordingFile.id)))
    return {"status": run.status, "retries": run.retry_count, "error": run.error or "", "files": files,
            "queued": svc.redis.keys("loopfix:delayed:*")}


def redirect(status: int, location: str) -> tuple[int, dict, bytes]:
    return status, {"Location": location}, b""


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("location", ["{target}/secret", "//127.0.0.1:{port}/secret", "http://2130706433:{port}/secret",
                                      "http://localhost:{port}/secret", "http://[::ffff:127.0.0.1]:{port}/secret"])
def test_a_redirect_off_the_allowlist_fetches_nothing_and_fails_without_retry(app_factory, media_and_target, status,
                                                                              location):
    media, target = media_and_target
    media.routes["/rec.wav"] = redirect(status, location.format(target=target.url, port=target.port))
    out = download(app_factory, media, "/rec.wav")
    assert target.hits == []
    assert (out["status"], out["retries"], out["files"], out["queued"]) == ("failed", 0, 0, [])
    assert "not an allowed media host" in out["error"]


def test_the_hostile_redirect_forms_do_reach_the_target_when_followed_naively(media_and_target):
    """The forms above are real routes to the target (so its 0 hits mean something)."""
    _media, target = media_and_target
    for form in ("//127.0.0.1:{port}/secret", "http://2130706433:{port}/secret", "http://localhost:{port}/secret"):
        url = form.format(port=target.port)
        requests.get(url if url.startswith("http") else "http:" + url, timeout=5)
    assert len(target.hits) == 3


def test_with_redirects_followed_anywhere_the_target_is_fetched(app_factory, media_and_target):
    media, target = media_and_target
    media.routes["/rec.wav"] = redirect(302, f"{target.url}/secret")
    out = download(app_factory, media, "/rec.wav", faults="redirect_followed_anywhere")
    assert target.hits == ["/secret"] and out["status"] == "done" and out["files"] == 1


def test_a_redirect_that_stays_on_the_allowlist_is_followed(app_factory, media_and_target):
    media, target = media_and_target
    media.routes["/rec.wav"] = redirect(302, "/cdn/rec.wav")
    media.routes["/cdn/rec.wav"] = (200, {"Content-Type": "audio/wav"}, wav_bytes(4000))
    out = download(app_factory, media, "/rec.wav")
    assert (out["status"], out["files"]) == ("done", 1)
    assert media.hits == ["/rec.wav", "/cdn/rec.wav"] and target.hits == []


def test_a_redirect_loop_on_the_allowed_host_stops_after_the_limit(app_factory, media_and_target):
    media, _ = media_and_target
    media.routes["/rec.wav"] = redirect(302, "/rec.wav")
    out = download(app_factory, media, "/rec.wav")
    assert out["status"] == "failed" and "redirects" in out["error"]
    assert len(media.hits) == 4  # the first request and media_redirects_max (3) redirects


def test_a_stored_url_off_the_allowlist_is_never_fetched(app_factory, media_and_target):
    """A RecordingUrl stored before the allowlist changed (or written by hand) is refused by the
    worker too, before any connection."""
    media, target = media_and_target
    out = download(app_factory, media, target.url.replace("127.0.0.1", "2130706433") + "/secret")
    assert (out["status"], out["retries"], out["files"]) == ("failed", 0, 0)
    assert target.hits == []
