"""tests/target_service.py — the separately written service target mode's tests plant bugs in —
driven from outside only, as target mode drives it: loopfix's default adapter (OpenApiTarget)
over HTTP, and loopfix's Twilio stand-in in this process, whose ledger shows every fetch.

Each test starts the service as a subprocess (stopped by pid at teardown) on a free port with
fixtures of its own; time runs at SCALE (0.01: a 60 s backoff is 0.6 s wall). Waits poll for
their condition with a deadline derived from the scale, never sleep and then count.
"""
from __future__ import annotations

import json
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import requests

from loopfix.loadtests.target.adapter import Business, OpenApiTarget, PlainHttp
from loopfix.loadtests.target.config import TargetConfig
from loopfix.loadtests.twilio_stub import StubServer, StubSettings, recording_body, serve

SERVICE = Path(__file__).with_name("target_service.py")
SCALE = 0.01
STUB_BYTES = 2000
LEADS = 100  # per business: A has 1..100, B has 1001..1100


def sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout_s: float, what: str, every_s: float = 0.005):
    """condition()'s first truthy value, polled until the deadline (AssertionError after it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout_s:g} s")
        time.sleep(every_s)


@dataclass
class Running:
    """A started service: the adapter over it, its two businesses, the stand-in it fetches from."""

    target: OpenApiTarget
    a: Business
    b: Business
    url: str
    stub: StubServer
    proc: subprocess.Popen
    time_scale: float

    def wall(self, policy_s: float) -> float:
        return policy_s * self.time_scale

    def recording_url(self, business: Business, recording_sid: str, ext: str = ".json",
                      host: str | None = None) -> str:
        host = host or f"127.0.0.1:{self.stub.server_port}"
        return f"http://{host}/2010-04-01/Accounts/{business.account_sid}/Recordings/{recording_sid}{ext}"

    def record(self, business: Business | None = None, call: int = 0) -> tuple[str, str]:
        """Send the signed recording webhook for one of the business's fixture calls."""
        business = business or self.a
        call_sid, recording_sid = business.calls[call]["call_sid"], business.calls[call]["recording_sid"]
        status = self.target.send_recording_webhook(business, call_sid, recording_sid,
                                                    self.recording_url(business, recording_sid))
        assert status == 204
        return call_sid, recording_sid

    def ledger(self, recording_sid: str) -> dict[str, int]:
        empty = {"requests": 0, "completed": 0, "bytes": 0, "sending": 0, "partial": 0}
        return self.stub.ledger.snapshot()["recordings"].get(recording_sid, empty)

    def fetch_times(self, recording_sid: str, count: int, timeout_s: float) -> list[float]:
        """Monotonic times the recording's first `count` fetches reached the stand-in."""
        arrivals = self.stub.arrivals.setdefault(recording_sid, [])
        wait_for(lambda: len(arrivals) >= count, timeout_s, f"{count} fetches of {recording_sid}")
        return arrivals[:count]

    def play_until_settled(self, business: Business, call_sid: str, timeout_s: float):
        """Poll the player's endpoint until it answers anything but 202."""
        return wait_for(lambda: (ans := self.target.play(business, call_sid)).status != 202 and ans,
                        timeout_s, f"answer but 202 for {call_sid}", every_s=0.02)


@pytest.fixture
def stub():
    """The stand-in, serving; `arrivals[RE]` holds the time each fetch of RE reached it (its
    ledger counts them as they arrive, so a wrapper around the count times them exactly)."""
    server = serve("127.0.0.1", 0, StubSettings(time_scale=SCALE, size_bytes=STUB_BYTES))
    server.arrivals, count = {}, server.ledger.add

    def count_and_time(sid: str, key: str, n: int = 1) -> None:
        if key == "requests":
            server.arrivals.setdefault(sid, []).append(time.monotonic())
        count(sid, key, n)

    server.ledger.add = count_and_time
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def fixtures() -> dict:
    def business(n: int, first_lead: int) -> dict:
        return {"id": n, "name": f"biz {n}", "api_token": secrets.token_urlsafe(18), "account_sid": sid("AC"),
                "auth_token": secrets.token_hex(16),
                "calls": [{"call_sid": sid("CA"), "recording_sid": sid("RE")} for _ in range(3)],
                "lead_ids": list(range(first_lead, first_lead + LEADS))}
    return {"businesses": [business(1, 1), business(2, 1001)]}


@pytest.fixture
def start(stub, tmp_path):
    """start(*bugs, time_scale=SCALE, workers=2) → Running; every process stopped at teardown."""
    procs: list[subprocess.Popen] = []

    def _start(*bugs: str, time_scale: float = SCALE, workers: int = 2) -> Running:
        fx = fixtures()
        path = tmp_path / f"fixtures-{len(procs)}.json"
        path.write_text(json.dumps(fx), encoding="utf-8")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, str(SERVICE), "--port", str(port), "--fixtures", str(path), "--media-host",
               f"127.0.0.1:{stub.server_port}", "--time-scale", str(time_scale), "--workers", str(workers)]
        for bug in bugs:
            cmd += ["--bug", bug]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(proc)

        def healthy() -> bool:
            assert proc.poll() is None, f"service exited {proc.returncode}: {proc.stderr.read().decode()}"
            try:
                return requests.get(url + "/healthz", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(healthy, 10, "healthy service", every_s=0.05)
        hooks = {op: f"curl -fsS -X POST {url}/_admin/workers/{op.split('_')[1]}"
                 for op in ("workers_stop", "workers_start")}
        config = TargetConfig(url=url, fixtures=fx, media_port=stub.server_port, time_scale=time_scale,
                              hooks=hooks)
        a, b = (Business.from_fixture(x) for x in fx["businesses"])
        return Running(OpenApiTarget(config, PlainHttp(url)), a, b, url, stub, proc, time_scale)

    yield _start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stderr.close()


# webhooks and playback -------------------------------------------------------------------------


def test_a_signed_recording_webhook_makes_the_stand_ins_bytes_playable(start):
    svc = start()
    call_sid, recording_sid = sid("CA"), sid("RE")
    assert svc.target.create_call(svc.a, call_sid) == 204
    assert svc.target.send_recording_webhook(svc.a, call_sid, recording_sid,
                                             svc.recording_url(svc.a, recording_sid)) == 204
    answer = svc.play_until_settled(svc.a, call_sid, timeout_s=5)
    assert (answer.status, answer.content_type, answer.body) == (200, "audio/mpeg",
                                                                 recording_body(recording_sid, ".mp3", STUB_BYTES))
    assert svc.ledger(recording_sid)["completed"] == 1


def test_unsigned_or_wrongly_signed_webhooks_are_refused_with_403_and_store_nothing(start):
    svc = start()
    call_sid, recording_sid = svc.a.calls[0]["call_sid"], svc.a.calls[0]["recording_sid"]
    url = svc.recording_url(svc.a, recording_sid)
    assert svc.target.create_call(svc.a, sid("CA"), signed=False) == 403
    assert svc.target.send_recording_webhook(svc.a, call_sid, recording_sid, url, signed=False) == 403
    wrong_key = replace(svc.a, auth_token=svc.b.auth_token)
    assert svc.target.send_recording_webhook(wrong_key, call_sid, recording_sid, url) == 403
    assert svc.target.play(svc.a, call_sid).status == 404  # no recording was stored
    assert svc.ledger(recording_sid)["requests"] == 0


def test_a_recording_url_off_the_media_host_is_refused_with_400(start):
    svc = start()
    call_sid, recording_sid = svc.a.calls[0]["call_sid"], svc.a.calls[0]["recording_sid"]
    media = f"127.0.0.1:{svc.stub.server_port}"
    for url in (svc.recording_url(svc.a, recording_sid, host=f"127.0.0.1:{free_port()}"),
                svc.recording_url(svc.a, recording_sid).replace("http://", "https://"),
                svc.recording_url(svc.a, recording_sid, host=f"user@{media}"),
                svc.recording_url(svc.a, recording_sid, host="api.twilio.com")):
        assert svc.target.send_recording_webhook(svc.a, call_sid, recording_sid, url) == 400, url
    assert svc.target.play(svc.a, call_sid).status == 404
    assert svc.ledger(recording_sid)["requests"] == 0


def test_another_business_s_call_answers_404_like_an_unknown_one(start):
    svc = start()
    call_sid, _ = svc.record(svc.a)
    svc.play_until_settled(svc.a, call_sid, timeout_s=5)
    assert svc.target.play(svc.b, call_sid).status == 404
    assert svc.target.play(svc.a, sid("CA")).status == 404


@pytest.mark.parametrize("bugs, retry_after", [((), "1"), (("no_retry_after",), None)])
def test_a_processing_answer_carries_retry_after_in_whole_wall_seconds(start, bugs, retry_after):
    svc = start(*bugs)
    svc.target.workers_stop()
    call_sid, _ = svc.record()
    answer = svc.target.play(svc.a, call_sid)
    assert (answer.status, answer.retry_after) == (202, retry_after)
    assert json.loads(answer.body) == {"status": "processing"}


@pytest.mark.parametrize("bugs, completed", [((), 1), (("downloads_twice",), 2)])
def test_a_replayed_recording_webhook_enqueues_nothing(start, bugs, completed):
    """One worker takes jobs in order: once a later recording is fetched, every fetch of the
    replayed one (a second job, or a second fetch in its job) has happened."""
    svc = start(*bugs, workers=1)
    svc.target.workers_stop()
    call_sid, recording_sid = svc.record(call=0)
    assert svc.target.send_recording_webhook(svc.a, call_sid, recording_sid,
                                             svc.recording_url(svc.a, recording_sid)) == 204
    _, sentinel = svc.record(call=1)
    svc.target.workers_start()
    wait_for(lambda: svc.ledger(sentinel)["completed"], 5, "fetch of the later recording")
    assert svc.ledger(recording_sid)["completed"] == completed
    assert svc.target.play(svc.a, call_sid).status == 200


# retries ---------------------------------------------------------------------------------------


def test_after_two_503s_the_third_fetch_succeeds_after_backoffs_of_60_then_120_policy_seconds(start, stub):
    svc = start()
    stub.settings.script = ["503", "503"]
    call_sid, recording_sid = svc.record()
    first, second, third = svc.fetch_times(recording_sid, 3, timeout_s=svc.wall(180) + 5)
    assert svc.wall(60) * 0.95 <= second - first < svc.wall(120), second - first
    assert svc.wall(120) * 0.95 <= third - second < svc.wall(240), third - second
    answer = svc.play_until_settled(svc.a, call_sid, timeout_s=5)
    assert (answer.status, answer.body) == (200, recording_body(recording_sid, ".mp3", STUB_BYTES))


def test_without_backoff_the_retries_come_at_once(start, stub):
    svc = start("no_backoff")
    stub.settings.script = ["503", "503"]
    _, recording_sid = svc.record()
    first, second, third = svc.fetch_times(recording_sid, 3, timeout_s=5)
    assert second - first < svc.wall(60) / 2 and third - second < svc.wall(120) / 2, (first, second, third)


def test_a_cut_short_and_a_stalled_body_are_retried_until_the_whole_body_plays(start, stub):
    svc = start()
    stub.settings.script = ["truncate", "stall"]
    call_sid, recording_sid = svc.record()
    answer = svc.play_until_settled(svc.a, call_sid, timeout_s=svc.wall(180) + 5)
    assert (answer.status, answer.body) == (200, recording_body(recording_sid, ".mp3", STUB_BYTES))
    assert (svc.ledger(recording_sid)["requests"], svc.ledger(recording_sid)["completed"]) == (3, 1)


FAST = 0.001  # the whole schedule, 60+120+240+480+960 policy s, in under 2 s wall


def test_a_recording_that_always_fails_is_fetched_once_and_retried_five_times_on_the_schedule(start, stub):
    svc = start(time_scale=FAST)
    stub.settings.error_rate = 1.0
    _, recording_sid = svc.record()
    times = svc.fetch_times(recording_sid, 6, timeout_s=svc.wall(1860) + 5)
    gaps = [later - earlier for earlier, later in zip(times, times[1:])]
    assert all(gap >= svc.wall(backoff) * 0.95 for gap, backoff in zip(gaps, (60, 120, 240, 480, 960))), gaps
    # nothing more for 1.5 x the longest backoff (the cap) after the last allowed retry
    while time.monotonic() < times[-1] + svc.wall(1200) * 1.5:
        assert svc.ledger(recording_sid)["requests"] == 6
        time.sleep(0.01)


def test_with_retries_forever_a_failing_recording_is_fetched_a_seventh_time(start, stub):
    svc = start("retries_forever", time_scale=FAST)
    stub.settings.error_rate = 1.0
    _, recording_sid = svc.record()
    times = svc.fetch_times(recording_sid, 7, timeout_s=svc.wall(1860 + 1200) + 5)
    assert times[6] - times[5] >= svc.wall(1200) * 0.95  # on the schedule (at the cap), only without an end


@pytest.mark.parametrize("bugs, status", [((), 200), (("loses_recording",), 404)])
def test_one_failed_fetch_is_retried_and_the_recording_plays(start, stub, bugs, status):
    svc = start(*bugs)
    stub.settings.script = ["503"]
    call_sid, recording_sid = svc.record()
    assert svc.play_until_settled(svc.a, call_sid, timeout_s=svc.wall(60) + 5).status == status
    assert svc.target.play(svc.a, call_sid).status == status  # for good
    assert svc.ledger(recording_sid)["requests"] == (2 if status == 200 else 1)


# fail-fast -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bugs, fourth", [((), 500), (("no_fail_fast",), 202)])
def test_with_workers_stopped_the_fourth_marked_poll_answers_500(start, bugs, fourth):
    """Polls 15 policy s apart each take the playback mark and count an attempt; a poll inside
    the mark counts nothing. The recording still plays once workers start again."""
    svc = start(*bugs)
    svc.target.workers_stop()
    call_sid, _ = svc.record()
    answers = []
    for i in range(4):
        if i:
            time.sleep(svc.wall(16))
        answers.append(svc.target.play(svc.a, call_sid))
        if i == 0:
            answers.append(svc.target.play(svc.a, call_sid))  # inside the first mark: not an attempt
    assert [a.status for a in answers] == [202, 202, 202, 202, fourth]
    if fourth == 500:
        assert answers[-1].error == "worker_not_processing_queue"
    svc.target.workers_start()
    assert svc.play_until_settled(svc.a, call_sid, timeout_s=5).status == 200


# bulk delete -----------------------------------------------------------------------------------


def test_bulk_delete_clicks_while_a_job_is_active_join_it_and_spare_other_tenants(start):
    svc = start()
    svc.target.workers_stop()  # delete jobs wait queued while workers are stopped
    first = svc.target.bulk_delete(svc.a, list(range(1, 61)) + [1001, 1002])
    again = svc.target.bulk_delete(svc.a, list(range(61, 71)))
    assert (first.status, first.existing, again.status, again.existing) == (202, False, 202, True)
    assert again.job_id == first.job_id
    assert svc.target.job_status(svc.a, first.job_id).state == "queued"
    assert svc.target.job_status(svc.b, first.job_id).status == 404
    svc.target.workers_start()
    done = wait_for(lambda: (s := svc.target.job_status(svc.a, first.job_id)).state == "completed" and s, 5,
                    "completed delete job")
    assert done.succeeded == 60
    assert svc.target.list_leads(svc.a) == list(range(61, 101))
    assert svc.target.list_leads(svc.b) == list(range(1001, 1101))


def test_with_new_delete_job_per_click_two_clicks_make_two_jobs(start):
    svc = start("new_delete_job_per_click")
    svc.target.workers_stop()
    first, again = (svc.target.bulk_delete(svc.a, [1, 2]) for _ in range(2))
    assert (first.existing, again.existing) == (False, False) and first.job_id != again.job_id
    assert [svc.target.job_status(svc.a, j).state for j in (first.job_id, again.job_id)] == ["queued", "queued"]


# the process -----------------------------------------------------------------------------------


def test_sigterm_stops_the_service_with_exit_code_0(start):
    svc = start()
    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(5) == 0


@pytest.mark.parametrize("args, message", [
    (["--fixtures", "/nonexistent/fixtures.json"], "--fixtures: cannot read"),
    (["--bug", "no_such_bug"], "argument --bug: invalid choice"),
    (["--time-scale", "0"], "--time-scale 0: must be a positive number"),
])
def test_bad_command_lines_exit_2_with_one_line_naming_the_option(tmp_path, args, message):
    path = tmp_path / "fixtures.json"
    path.write_text(json.dumps(fixtures()), encoding="utf-8")
    cmd = [sys.executable, str(SERVICE), "--port", str(free_port()), "--fixtures", str(path), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert message in done.stderr.strip().splitlines()[-1]


def test_a_taken_port_exits_1_with_one_line(tmp_path):
    path = tmp_path / "fixtures.json"
    path.write_text(json.dumps(fixtures()), encoding="utf-8")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        cmd = [sys.executable, str(SERVICE), "--port", str(taken.getsockname()[1]), "--fixtures", str(path)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "cannot listen on 127.0.0.1:" in done.stderr
