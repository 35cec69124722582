"""`loopfix target check` (loadtests/target/doctor.py).

First on fakes in this process (a Target whose answers a test sets; no service): each check
fails on the mistake it exists for, with one line. Then end to end (marked `stack`) against
reference_app served by hand as a user would: a private Redis, `loopfix seed --json` into
fixtures.json, `loopfix serve` and `loopfix worker` with LOOPFIX_MEDIA_HOSTS naming the media
port; a good target file passes, and a wrong api_token, a wrong auth_token, an unreachable url
and a media port the service does not allow each give exactly one failing line naming the fix.
"""
from __future__ import annotations

import json
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from loopfix.loadtests.stack import Stack, free_port
from loopfix.loadtests.target import doctor
from loopfix.loadtests.target.adapter import PlayAnswer
from loopfix.loadtests.target.config import TargetConfig, load_target
from loopfix.reference_app.config import Config
from loopfix.reference_app.policy import make_policy

AC = "AC" + "ab" * 16
BUSINESSES = {"businesses": [{"id": 1, "api_token": "t1", "account_sid": AC, "auth_token": "a1", "lead_ids": [1]}]}


class FakeHttp:
    """healthz only: answers `status` with the service's time scale."""

    def __init__(self, status: int = 200, time_scale: float = 0.01):
        self.status, self.time_scale = status, time_scale

    def request(self, method, path, *, name, headers=None, data=None):
        return SimpleNamespace(status_code=self.status, json=lambda: {"ok": True, "time_scale": self.time_scale})


class FakeService:
    """A Target with settable answers; `fetches` True makes it download each recording from the
    URL it is sent (in a thread, as a worker would) and play back what it read."""

    def __init__(self, **answers):
        self.signed, self.unsigned, self.recording = answers.get("signed", 204), answers.get("unsigned", 403), \
            answers.get("recording", 204)
        self.leads = answers.get("leads", [1])
        self.fetches = answers.get("fetches", True)
        self.mangle = answers.get("mangle", False)
        self.hooks = answers.get("hooks", {})  # name -> None (runs) or the error it raises
        self.stop_stops, self.start_starts = answers.get("stop_stops", True), answers.get("start_starts", True)
        self.stopped = False
        self.queued: list[tuple[str, str]] = []
        self.bodies: dict[str, bytes] = {}
        self.ran: list[str] = []

    def create_call(self, business, call_sid, *, signed=True):
        return self.signed if signed else self.unsigned

    def send_recording_webhook(self, business, call_sid, recording_sid, recording_url, *, signed=True):
        if self.recording < 300 and self.fetches:
            self.queued.append((call_sid, recording_url))
            if not self.stopped:
                self.fetch_queued()
        return self.recording

    def fetch_queued(self):
        def fetch(call_sid, url):
            with urllib.request.urlopen(url + ".mp3", timeout=5) as resp:
                self.bodies[call_sid] = resp.read() + (b"x" if self.mangle else b"")
        for call_sid, url in self.queued:
            threading.Thread(target=fetch, args=(call_sid, url), daemon=True).start()
        self.queued = []

    def play(self, business, call_sid):
        if call_sid in self.bodies:
            return PlayAnswer(200, None, "audio/mpeg", self.bodies[call_sid])
        return PlayAnswer(202, "0")

    def list_leads(self, business):
        return self.leads

    def supports(self, operation):
        return operation in self.hooks

    def workers_stop(self):
        self.ran.append("workers_stop")
        if self.hooks["workers_stop"]:
            raise RuntimeError(self.hooks["workers_stop"])
        self.stopped = self.stop_stops

    def workers_start(self):
        self.ran.append("workers_start")
        self.stopped = False
        if self.start_starts:
            self.fetch_queued()


def config(**changes) -> TargetConfig:
    base = TargetConfig(url="http://127.0.0.1:1", fixtures=BUSINESSES, media_port=free_port(), time_scale=0.01,
                        source=Path("t.toml"), fixtures_path=Path("fixtures.json"))
    return replace(base, **changes)


def failing(findings) -> list[str]:
    return [f.line() for f in findings if not f.ok]


@pytest.fixture
def short_waits(monkeypatch):
    monkeypatch.setattr(doctor, "FETCH_WAIT_MIN_S", 0.5)
    monkeypatch.setattr(doctor, "FETCH_WAIT_MAX_S", 0.5)


def test_a_service_that_does_everything_right_passes_with_hooks_skipped():
    findings = doctor.check(config(), http=FakeHttp(), target=FakeService())
    assert failing(findings) == []
    assert [f.name for f in findings] == ["reach", "api_token", "signed_webhook", "unsigned_webhook", "media",
                                          "fetch", "play", "hooks"]
    assert findings[-1].skipped is True and "not observable" in findings[-1].detail


def test_an_unreachable_service_is_one_finding_naming_url():
    findings = doctor.check(config(url=f"http://127.0.0.1:{free_port()}"))
    assert len(findings) == 1 and findings[0].ok is False
    assert "cannot reach" in findings[0].detail and "check `url` in t.toml" in findings[0].fix


def test_a_service_that_accepts_unsigned_webhooks_fails_that_check_only():
    findings = doctor.check(config(), http=FakeHttp(), target=FakeService(unsigned=204))
    assert failing(findings) == ["FAIL the service accepts unsigned webhooks (204) — check X-Twilio-Signature on "
                                 "every webhook and answer 403 when it does not match"]


def test_a_recording_accepted_but_never_fetched_asks_whether_workers_run(short_waits):
    lines = failing(doctor.check(config(), http=FakeHttp(), target=FakeService(fetches=False)))
    assert len(lines) == 1 and "never fetched it" in lines[0] and "are its workers running?" in lines[0]


def test_a_played_body_other_than_the_stand_ins_fails_play():
    lines = failing(doctor.check(config(), http=FakeHttp(), target=FakeService(mangle=True)))
    assert len(lines) == 1 and "are not the stand-in's" in lines[0]


def test_a_taken_media_port_is_one_finding():
    cfg = config()
    with socket.socket() as taken:
        taken.bind((cfg.media_host, cfg.media_port))
        taken.listen()
        lines = failing(doctor.check(cfg, http=FakeHttp(), target=FakeService()))
    assert len(lines) == 1 and f"cannot serve the media stand-in on 127.0.0.1:{cfg.media_port}" in lines[0]


def test_a_time_scale_other_than_the_services_is_a_finding():
    lines = failing(doctor.check(config(time_scale=1.0), http=FakeHttp(time_scale=0.01), target=FakeService()))
    assert len(lines) == 1 and "set time_scale = 0.01 in t.toml" in lines[0]


def test_a_failing_workers_stop_still_runs_workers_start():
    service = FakeService(hooks={"workers_stop": "hook exited 7: nope", "workers_start": None})
    lines = failing(doctor.check(config(), http=FakeHttp(), target=service))
    assert service.ran == ["workers_stop", "workers_start"]
    assert lines == ["FAIL hook workers_stop failed: hook exited 7: nope — fix [hooks] workers_stop in t.toml "
                     "(it must exit 0)"]


def test_hooks_that_stop_and_start_the_workers_pass_both_probes():
    service = FakeService(hooks={"workers_stop": None, "workers_start": None})
    findings = doctor.check(config(), http=FakeHttp(), target=service)
    assert failing(findings) == []
    assert [f.name for f in findings][-4:] == ["workers_stop", "workers_stop", "workers_start", "workers_start"]
    assert "nothing was fetched" in findings[-3].detail and "fetch again" in findings[-1].detail


def test_a_workers_stop_hook_that_does_not_stop_them_fails():
    service = FakeService(hooks={"workers_stop": None, "workers_start": None}, stop_stops=False)
    lines = failing(doctor.check(config(), http=FakeHttp(), target=service))
    assert lines == ["FAIL the service fetched a recording while its workers were stopped — [hooks] workers_stop in "
                     "t.toml must stop every worker that fetches recordings"]


def test_a_workers_start_hook_that_does_not_start_them_fails(short_waits):
    service = FakeService(hooks={"workers_stop": None, "workers_start": None}, start_starts=False)
    lines = failing(doctor.check(config(), http=FakeHttp(), target=service))
    assert len(lines) == 1 and "never fetched" in lines[0] and "workers_start" in lines[0]


def test_leads_missing_from_the_service_are_a_finding():
    lines = failing(doctor.check(config(), http=FakeHttp(), target=FakeService(leads=[2, 3])))
    assert len(lines) == 1 and "1 of the 1 lead_ids" in lines[0] and "lead_ids" in lines[0]


class LaxService(BaseHTTPRequestHandler):
    """A service that answers every request as if all were well and never fetches a recording."""

    def log_message(self, *_args):
        pass

    def do_GET(self):
        body = json.dumps({"ok": True, "time_scale": 0.01, "leads": [{"id": 1}], "next_after": None}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(204)
        self.end_headers()


def test_ctrl_c_while_waiting_for_a_fetch_exits_130(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), LaxService)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp_path / "fixtures.json").write_text(json.dumps(BUSINESSES))
    (tmp_path / "t.toml").write_text(f'url = "http://127.0.0.1:{server.server_address[1]}"\ntime_scale = 0.01\n'
                                     f'fixtures = "fixtures.json"\n[media]\nport = {free_port()}\n')
    proc = subprocess.Popen([sys.executable, "-m", "loopfix.cli", "target", "check", str(tmp_path / "t.toml")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    seen = []
    try:
        while not any("is accepted (204)" in line and "recording" in line for line in seen):
            seen.append(lines.get(timeout=60))  # the doctor now waits for a fetch that never comes
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
        server.shutdown()
        server.server_close()
    assert "FAIL the service accepts unsigned webhooks (204)" in "".join(seen)
    err = proc.stderr.read()
    assert err.strip() == "interrupted", err


# --------------------------------------------------------------------------- end to end


def check(target_file: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loopfix.cli", "target", "check", str(target_file), *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """reference_app as a user serves it: Redis, `loopfix serve`, one `loopfix worker`, fixtures
    from `loopfix seed --json`; the media allowlist names `media_port` only."""
    run = tmp_path_factory.mktemp("served")
    data = (run / "data").resolve()
    data.mkdir()  # `loopfix seed --database-url sqlite:///...` does not create the folder
    database = f"sqlite:///{data / 'loopfix.db'}"
    media_port, other_port = free_port(), free_port()
    cfg = Config(data_dir=data, database_url=database, media_hosts=(f"127.0.0.1:{media_port}",),
                 policy=make_policy("fixed", [], 0.01))
    stack = Stack(run, cfg)
    try:
        stack.start_redis()
        seeded = subprocess.run([sys.executable, "-m", "loopfix.cli", "seed", "--businesses", "2", "--calls", "2",
                                 "--leads", "5", "--json", "--database-url", database, "--data-dir", str(data)],
                                env=stack.env("seed"), capture_output=True, text=True, timeout=60, check=True)
        (run / "fixtures.json").write_text(seeded.stdout)
        stack.start_app(workers=1, threads=4)
        worker = stack.start_worker()
        yield SimpleNamespace(run=run, stack=stack, url=stack.app_url, media_port=media_port, other_port=other_port,
                              worker_pid=worker.pid, fixtures=json.loads(seeded.stdout))
    finally:
        stack.stop()


def target_file(served, name: str, fixtures: dict | None = None, url: str | None = None,
                media_port: int | None = None, hooks: bool = False) -> Path:
    fixtures_name = "fixtures.json"
    if fixtures is not None:
        fixtures_name = f"{name}-fixtures.json"
        (served.run / fixtures_name).write_text(json.dumps(fixtures))
    text = (f'url = "{url or served.url}"\ntime_scale = 0.01\nfixtures = "{fixtures_name}"\n'
            f'[media]\nhost = "127.0.0.1"\nport = {media_port or served.media_port}\n')
    if hooks:  # stop and continue the worker process by pid, as a user's script might
        def signal_worker(sig: str) -> str:
            code = f"import os, signal; os.kill({served.worker_pid}, signal.{sig})"
            return json.dumps(f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}")
        text += f"[hooks]\nworkers_stop = {signal_worker('SIGSTOP')}\nworkers_start = {signal_worker('SIGCONT')}\n"
    path = served.run / f"{name}.toml"
    path.write_text(text)
    load_target(path)  # a valid file: what fails below is the service's answer, not the file
    return path


def with_business(fixtures: dict, index: int, **changes) -> dict:
    businesses = [dict(b) for b in fixtures["businesses"]]
    businesses[index].update(changes)
    return {"businesses": businesses}


def fail_lines(done: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in done.stderr, done.stderr
    return [line for line in done.stdout.splitlines() if line.startswith("FAIL")]


@pytest.mark.stack
def test_a_good_target_file_passes_every_check(served):
    done = check(target_file(served, "good", hooks=True))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines and all(line.startswith("ok   ") for line in lines), lines
    assert any("plays: 200" in line for line in lines) and any("fetch again" in line for line in lines)


@pytest.mark.stack
def test_a_wrong_api_token_is_one_failing_line_naming_the_token_fix(served):
    fixtures = with_business(served.fixtures, 1, api_token="not-the-token")
    done = check(target_file(served, "token", fixtures=fixtures))
    assert done.returncode == 1, done.stdout + done.stderr
    lines = fail_lines(done)
    business = fixtures["businesses"][1]["id"]
    assert lines == [f"FAIL business {business}: api_token refused (GET /api/leads did not answer 200) — "
                     f"update api_token in the fixtures (token-fixtures.json)"]


@pytest.mark.stack
def test_a_wrong_auth_token_is_one_failing_line_naming_auth_token(served):
    fixtures = with_business(served.fixtures, 0, auth_token="0" * 32)
    done = check(target_file(served, "auth", fixtures=fixtures), "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    failed = [f for f in report["findings"] if not f["ok"]]
    assert report["ok"] is False and len(failed) == 1, failed
    assert failed[0]["name"] == "signed_webhook" and "auth_token" in failed[0]["fix"]


@pytest.mark.stack
def test_an_unreachable_url_is_one_line_naming_url(served):
    done = check(target_file(served, "down", url=f"http://127.0.0.1:{free_port()}"))
    assert done.returncode == 1
    assert done.stdout.splitlines() == fail_lines(done) and len(fail_lines(done)) == 1
    assert "cannot reach" in done.stdout and "check `url` in down.toml" in done.stdout


@pytest.mark.stack
def test_a_media_port_the_service_refuses_is_one_line_naming_its_allowlist(served):
    done = check(target_file(served, "media", media_port=served.other_port))
    assert done.returncode == 1, done.stdout + done.stderr
    media = f"127.0.0.1:{served.other_port}"
    assert fail_lines(done) == [f"FAIL the service refuses recording URLs on {media} (400) — add {media} to its "
                                f"media allowlist (reference_app: LOOPFIX_MEDIA_HOSTS={media})"]
