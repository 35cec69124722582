"""A real browser plays a recording: headless Chromium loads a page whose <audio> element points
at `GET /api/calls/<sid>/recording/stream`, its media stack fetches the audio with Range
requests, and the page reports the media events back; the test asserts playback reached
`ended` and that the audio came as 206 partial content.

The app is served over real HTTP (werkzeug's threaded server, in this process) on the real
Redis. The stream needs `Authorization: Bearer`, which an <audio> element cannot send, so a
WSGI wrapper that exists only in this test stands in for a logged-in front end: it serves the
player page, collects the page's event reports, and adds the business's token to the page's
requests — except those marked `?anonymous=1`, which must be refused (the app's auth is
untouched). The audio is the Twilio stand-in's PCM WAV (loadtests/twilio_stub.py).

Without Chromium the test skips — except when CI=true, where it fails (.ci/run installs it).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from hashlib import sha256

import pytest
from werkzeug.serving import make_server

from loopfix.loadtests.stack import free_port
from loopfix.loadtests.twilio_stub import wav_bytes
from loopfix.reference_app.models import RecordingFile
from tests.conftest import add_business, required_program

pytestmark = [pytest.mark.redis, pytest.mark.browser]

AUDIO_S = 2.0
WAV_BYTES_PER_S = 16_000  # the stand-in's WAV: 8 kHz, 16-bit, mono

PAGE = """<!doctype html><html><body>
<audio id="player" src="/api/calls/{sid}/recording/stream"></audio>
<audio id="anonymous" src="/api/calls/{sid}/recording/stream?anonymous=1"></audio>
<script>
const report = (who, what) => fetch("/_test/event", {{method: "POST", body: JSON.stringify({{who, what}})}});
for (const id of ["player", "anonymous"]) {{
  const a = document.getElementById(id);
  for (const name of ["loadedmetadata", "playing", "ended"])
    a.addEventListener(name, () => report(id, name + " " + a.currentTime.toFixed(2) + "/" + a.duration.toFixed(2)));
  a.addEventListener("error", () => report(id, "error " + (a.error && a.error.code)));
  a.play().catch(e => report(id, "play-rejected " + e.name));
}}
</script></body></html>"""


def chromium() -> str:
    return required_program(("chromium", "chromium-browser"), "apt-get install -y chromium")


class LoggedInFrontEnd:
    """The test-only WSGI wrapper (see the module docstring); records media events and every
    stream request's Range header and status."""

    def __init__(self, app, token: str, call_sid: str):
        self.app, self.token, self.call_sid = app, token, call_sid
        self.events: list[tuple[str, str]] = []
        self.requests: list[tuple[str, str | None, int]] = []  # (who, Range, status)

    def __call__(self, environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/_test/player":
            body = PAGE.format(sid=self.call_sid).encode()
            start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(body)))])
            return [body]
        if path == "/_test/event":
            event = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
            self.events.append((event["who"], event["what"]))
            start_response("204 No Content", [])
            return []
        anonymous = "anonymous=1" in environ.get("QUERY_STRING", "")
        if not anonymous:
            environ["HTTP_AUTHORIZATION"] = f"Bearer {self.token}"

        def recording_start(status, headers, exc_info=None):
            if path.startswith("/api/"):
                who = "anonymous" if anonymous else "player"
                self.requests.append((who, environ.get("HTTP_RANGE"), int(status.split()[0])))
            return start_response(status, headers, exc_info)

        return self.app(environ, recording_start)

    def saw(self, who: str, what: str) -> bool:
        return any(w == who and e.startswith(what) for w, e in self.events)


def test_headless_chromium_plays_a_recording_to_the_end_through_the_stream_endpoint(app_factory, tmp_path):
    binary = chromium()
    client, svc = app_factory(history=False)
    b = add_business(svc, recording_url="https://api.twilio.com/2010-04-01/Accounts/{account}/Recordings/{sid}.wav")
    call = b["calls"][0]
    audio = wav_bytes(int(AUDIO_S * WAV_BYTES_PER_S) + 44)
    path = svc.config.recordings_dir / f"{call['recording_sid']}.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(audio)
    with svc.sessions() as s:
        s.add(RecordingFile(business_id=b["id"], recording_sid=call["recording_sid"], call_sid=call["call_sid"],
                            path=str(path), size=len(audio), sha256=sha256(audio).hexdigest(),
                            content_type="audio/wav", created_at=time.time()))
        s.commit()

    front = LoggedInFrontEnd(client.application, b["token"], call["call_sid"])
    port = free_port()
    server = make_server("127.0.0.1", port, front, threaded=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    browser = subprocess.Popen(
        [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--mute-audio", "--no-first-run",
         "--autoplay-policy=no-user-gesture-required", "--remote-debugging-port=0",
         f"--user-data-dir={tmp_path / 'chromium'}", f"http://127.0.0.1:{port}/_test/player"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90  # generous: a loaded machine starts Chromium slowly
        while time.monotonic() < deadline and not (front.saw("player", "ended") and front.saw("anonymous", "error")):
            assert browser.poll() is None, f"chromium exited with {browser.returncode}"
            time.sleep(0.1)
    finally:
        os.killpg(browser.pid, signal.SIGKILL)
        browser.wait(10)
        server.shutdown()
        server.server_close()

    assert front.saw("player", "ended"), front.events
    ended = next(e for w, e in front.events if w == "player" and e.startswith("ended"))
    position, duration = map(float, ended.split()[1].split("/"))
    assert abs(duration - AUDIO_S) < 0.05 and position == pytest.approx(duration, abs=0.05), ended
    played = [(rng, status) for who, rng, status in front.requests if who == "player"]
    assert played and all(rng and rng.startswith("bytes=") and status == 206 for rng, status in played), played
    # the same stream without the token: refused, and the browser's player reports an error
    assert front.saw("anonymous", "error") and not front.saw("anonymous", "playing"), front.events
    assert {status for who, _, status in front.requests if who == "anonymous"} == {401}
