"""Redis trouble under a request storm (issue 7 item 2), on real processes: gunicorn, two RQ
workers with loopfix's ticker, the Twilio stand-in and a private redis-server this test starts,
pauses (SIGSTOP) and restarts empty (every key lost). Never the shared Redis.

Client threads poll recordings the way the browser player does and send signed recording
webhooks for new calls throughout (a third before, during the pause and across the restart;
downloads are slow enough that a backlog waits in Redis when it restarts). While Redis is unreachable every request is answered promptly — a normal
answer or a 503 `redis_unavailable`, never a hang and never a bare 500 — and afterwards the app
recovers by itself: every recording whose webhook was accepted is downloaded, each once (the
database is the source of truth: runs whose RQ job Redis lost are enqueued again by the
sweeper). With `orphan_runs_not_swept` (the seeds trusted Redis) the restart loses recordings,
and the nothing-lost checker names them.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

import pytest
import requests
from sqlalchemy import select

from loopfix.harness.invariants import check_no_duplicate_download, check_nothing_lost
from loopfix.reference_app.models import RecordingFile, RecordingRun
from loopfix.reference_app.services import Services
from tests.conftest import add_business, auth, read_events
from tests.test_recording_pipeline import post_signed, recording_form, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.stack]

SCALE = 0.01
ANSWER_BOUND_S = 1.0  # the bound for every answer
SLACK_S = 1.0  # scheduling slack on a loaded 2-core CI machine; a hang is the 5 s client timeout


@dataclass
class Answer:
    action: str
    started: float
    elapsed: float
    status: int  # 0: no answer (client timeout or connection error)
    error: str | None


class Storm:
    """Client threads hitting the app until stopped; every answer kept with its latency.
    Webhooks go out once each for the calls fed to it (`sent` holds the accepted ones; a
    refused one goes back to be sent again, as Twilio's retry would)."""

    def __init__(self, stack, business: dict, threads: int = 4, seed: int = 1):
        self.stack, self.b, self.threads = stack, business, threads
        self.fresh: list[dict] = []
        self.sent: list[dict] = []
        self.answers: list[Answer] = []
        self.lock, self.stop_event = threading.Lock(), threading.Event()
        self.rng = random.Random(seed)
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> "Storm":
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(self.threads)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        for t in self._threads:
            t.join(10)

    def _loop(self) -> None:
        app, headers = self.stack.app_url, auth(self.b)
        while not self.stop_event.is_set():
            with self.lock:
                call = self.fresh.pop() if self.fresh and self.rng.random() < 0.5 else None
                known = self.rng.choice(self.sent) if self.sent else None
            if call is None and known is None:
                time.sleep(0.01)
                continue
            started = time.monotonic()
            try:
                if call is not None:
                    action = "webhook"
                    form = recording_form(self.stack, self.b, call["call_sid"], call["recording_sid"], ".mp3")
                    r = post_signed(self.stack, "/webhooks/twilio/recording", self.b, form)
                else:  # a player: polling never re-creates a run that waits in the queue
                    action = "play"
                    r = requests.get(f"{app}/api/recordings/file/{known['call_sid']}", headers=headers, timeout=5)
                status = r.status_code
                error = (r.json() or {}).get("error") if r.headers.get("Content-Type", "").startswith(
                    "application/json") else None
            except requests.RequestException as exc:
                status, error = 0, type(exc).__name__
            with self.lock:
                self.answers.append(Answer(action, started, time.monotonic() - started, status, error))
                if call is not None:
                    if status == 204:
                        self.sent.append(call)
                    else:
                        self.fresh.append(call)  # Twilio would retry it later
            time.sleep(0.01)

    def feed(self, calls: list[dict]) -> None:
        with self.lock:
            self.fresh += calls

    def between(self, start: float, end: float) -> list[Answer]:
        with self.lock:
            return [a for a in self.answers if start <= a.started < end]


def redis_stack(stack_factory, make_config, **cfg):
    stack = stack_factory(make_config(media_hosts=(), time_scale=SCALE, **cfg))
    stack.start_redis()  # this test's own server: it is paused and restarted
    stack.start_stub(size_bytes=16_000, bandwidth_bps=320)  # 50 policy s a download: a backlog forms
    stack.start_app(workers=1, threads=8)
    stack.start_worker()
    stack.start_worker()
    return stack, Services(stack.config)


def downloaded_sids(svc) -> set[str]:
    with svc.sessions() as s:
        return set(s.scalars(select(RecordingFile.recording_sid)))


def assert_prompt_and_well_formed(answers: list[Answer], during: str) -> dict:
    assert answers, f"no request was answered {during}"
    slow = [a for a in answers if a.elapsed > ANSWER_BOUND_S + SLACK_S or a.status == 0]
    assert not slow, f"requests hung {during}: {slow[:5]}"
    bad = [a for a in answers if a.status >= 500 and (a.status != 503 or a.error != "redis_unavailable")]
    assert not bad, f"5xx other than 503 redis_unavailable {during}: {bad[:5]}"
    return {"requests": len(answers), "max_s": max(a.elapsed for a in answers),
            "over_1s": sum(a.elapsed > ANSWER_BOUND_S for a in answers),
            "503": sum(a.status == 503 for a in answers)}


def storm_through_pause_and_restart(stack, svc, business, pause_s: float = 3.0) -> dict:
    figures, calls = {}, business["calls"]
    third = len(calls) // 3
    with Storm(stack, business) as storm:
        storm.feed(calls[:third])
        time.sleep(1.0)
        t0 = time.monotonic()
        stack.pause_redis()
        storm.feed(calls[third:2 * third])  # webhooks while Redis is paused
        time.sleep(pause_s)
        stack.resume_redis()
        t1 = time.monotonic()
        figures["pause"] = assert_prompt_and_well_formed(storm.between(t0, t1), "while Redis was paused")
        time.sleep(1.0)
        t2 = time.monotonic()
        storm.feed(calls[2 * third:])  # and across the restart
        stack.restart_redis()  # every key lost: queued jobs, parked retries, claims, dedup keys
        time.sleep(1.5)
        figures["restart"] = assert_prompt_and_well_formed(storm.between(t2, time.monotonic()),
                                                           "across the Redis restart")
    figures["all"] = assert_prompt_and_well_formed(storm.answers, "in the storm")
    figures["accepted"] = [c["recording_sid"] for c in storm.sent]
    figures["webhooks_accepted_while_paused"] = sum(
        a.action == "webhook" and a.status == 204 for a in storm.between(t0, t1))
    return figures


def test_redis_pause_and_restart_under_a_storm_answer_promptly_and_lose_no_recording(stack_factory, make_config):
    stack, svc = redis_stack(stack_factory, make_config)
    b = add_business(svc, calls=24)
    figures = storm_through_pause_and_restart(stack, svc, b)
    accepted = set(figures["accepted"])
    assert figures["pause"]["503"] > 0  # the pause was felt, and answered with 503s
    assert figures["webhooks_accepted_while_paused"] > 0  # kept in the database, enqueued later
    assert len(accepted) == len(b["calls"])
    try:
        wait_for(lambda: accepted <= downloaded_sids(svc), 90, "every accepted recording to be downloaded")
    except AssertionError:
        with svc.sessions() as s:
            runs = s.scalars(select(RecordingRun).where(RecordingRun.recording_sid.in_(accepted - downloaded_sids(svc))))
            states = [(r.id, r.status, r.rq_job_id, svc.coord.job_status(r.rq_job_id)[0], r.error) for r in runs]
        raise AssertionError(f"not downloaded; their runs (id, status, job, job status, error): {states}") from None
    ledger = stack.ledger()
    assert {rec: ledger[rec]["completed"] for rec in accepted} == {rec: 1 for rec in accepted}
    events = read_events(stack.config.history_dir)
    assert check_no_duplicate_download(events, svc.policy).valid is True
    assert check_nothing_lost(events, svc.policy).valid is True
    assert any(e["kind"] == "job.enqueue" and e.get("via") == "orphan" for e in events)  # the sweeper's doing
    print(f"\nredis pause/restart storm: {figures['all']}; pause {figures['pause']}; restart {figures['restart']}; "
          f"{len(accepted)} recordings accepted ({figures['webhooks_accepted_while_paused']} while paused), "
          f"all downloaded once")


def test_without_the_orphan_sweep_a_redis_restart_loses_queued_recordings(stack_factory, make_config):
    stack, svc = redis_stack(stack_factory, make_config, faults="orphan_runs_not_swept")
    b = add_business(svc, calls=24)
    figures = storm_through_pause_and_restart(stack, svc, b)
    accepted = set(figures["accepted"])
    # room to recover: the sweep's grace and every download, two at a time
    time.sleep(svc.policy.wall(3 * svc.policy.heartbeat_timeout_s + len(accepted) * 50 / 2))
    assert not accepted <= downloaded_sids(svc)
    verdict = check_nothing_lost(read_events(stack.config.history_dir), svc.policy)
    assert verdict.valid is False
    lost = {w["recording_sid"] for a in verdict.anomalies["recording-not-downloaded"] for w in a.witnesses}
    assert lost and lost <= accepted - downloaded_sids(svc)
