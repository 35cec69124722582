"""README's "Run it by hand" stack, started as a user starts it: `loopfix twilio-stub`, `loopfix
serve`, `loopfix worker`, `loopfix seed --json`, a recording webhook signed with the business's
auth token, then play until the recording plays.

Each command is its own process with the environment README names and nothing loopfix-internal
(no absolute paths handed down by a test harness): `serve` and `seed` in one directory with the
default data dir (`data`), the worker in another with `--data-dir` relative to its own working
directory. Paths are resolved against each process's working directory once, at start; before
that the worker wrote `<cwd>/data/recordings/RE....mp3` and the app's `send_file` looked in
`reference_app/data/recordings/` and answered 500 on every play.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from twilio.request_validator import RequestValidator

from loopfix.loadtests.fixtures import recording_url
from loopfix.loadtests.stack import Proc, free_port, http_ok, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.stack]

ROOT = Path(__file__).resolve().parent.parent
PLAY_DEADLINE_S = 90.0  # wall seconds from the webhook to a 200 (the download itself takes ~3 s)


def user_env(redis_url: str, stub_port: int) -> dict[str, str]:
    """A shell's environment as README sets it up: REDIS_URL and LOOPFIX_MEDIA_HOSTS only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPFIX_") and k not in ("DATABASE_URL",)}
    env.update(REDIS_URL=redis_url, LOOPFIX_MEDIA_HOSTS=f"api.twilio.com,127.0.0.1:{stub_port}",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               PYTHONUNBUFFERED="1")
    return env


def loopfix(*args: str) -> list[str]:
    return [sys.executable, "-m", "loopfix.cli", *args]


@pytest.fixture
def started(tmp_path):
    """start(name, args, cwd, env) -> Proc in its own session; every one stopped by pid at teardown."""
    procs: list[Proc] = []

    def start(name: str, args: list[str], cwd: Path, env: dict[str, str]) -> Proc:
        log = tmp_path / f"{name}.log"
        with open(log, "ab") as fh:
            popen = subprocess.Popen(args, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        procs.append(Proc(name, popen, log))
        return procs[-1]

    yield start
    for proc in reversed(procs):
        proc.stop()


def get(url: str, token: str) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_the_by_hand_stack_from_readme_plays_a_recording(tmp_path, redis_url, started):
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    stub_port, app_port = free_port(), free_port()
    env = user_env(redis_url, stub_port)

    stub = started("twilio-stub", loopfix("twilio-stub", "--port", str(stub_port), "--bandwidth-bps", "20000"),
                   here, env)
    stub_url = f"http://127.0.0.1:{stub_port}"
    wait_until(lambda: http_ok(stub_url + "/_config"), 30, "twilio-stub", stub.popen, stub.log)
    app = started("serve", loopfix("serve", "--port", str(app_port), "--variant", "seed"), here, env)
    app_url = f"http://127.0.0.1:{app_port}"
    wait_until(lambda: http_ok(app_url + "/healthz"), 60, "serve", app.popen, app.log)
    worker = started("worker", loopfix("worker", "--variant", "seed", "--data-dir", "../here/data"), elsewhere, env)

    seeded = subprocess.run(loopfix("seed", "--businesses", "2", "--calls", "5", "--leads", "100", "--json"),
                            cwd=here, env=env, capture_output=True, text=True, timeout=120)
    assert seeded.returncode == 0, seeded.stderr[-2000:]
    business = json.loads(seeded.stdout)["businesses"][0]
    call = business["calls"][0]

    hook = app_url + "/webhooks/twilio/recording"
    form = {"AccountSid": business["account_sid"], "CallSid": call["call_sid"], "RecordingSid": call["recording_sid"],
            "RecordingUrl": recording_url(stub_url, business["account_sid"], call["recording_sid"], ""),
            "RecordingStatus": "completed", "RecordingDuration": "30"}
    signature = RequestValidator(business["auth_token"]).compute_signature(hook, form)
    req = urllib.request.Request(hook, data=urllib.parse.urlencode(form).encode(), method="POST",
                                 headers={"X-Twilio-Signature": signature})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 204

    play = f"{app_url}/api/recordings/file/{call['call_sid']}"
    seen: list[int] = []
    deadline = time.monotonic() + PLAY_DEADLINE_S
    while time.monotonic() < deadline:
        assert worker.alive, worker.log.read_text()[-2000:]
        status, headers, body = get(play, business["api_token"])
        seen.append(status)
        if status != 202:
            break
        time.sleep(0.25)
    assert status == 200, (seen[-5:], body[:300], app.log.read_text()[-2000:], worker.log.read_text()[-2000:])
    assert headers.get("Content-Type", "").startswith("audio/") and body[:4].startswith((b"\xff\xfb", b"RIFF", b"ID3"))
    assert len(body) == 64_000  # the stand-in's whole recording
    assert (here / "data" / "recordings").is_dir() and not (elsewhere / "data").exists()
