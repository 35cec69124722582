"""End to end on real processes: gunicorn app, RQ workers with loopfix's ticker, real Redis, the
Twilio stand-in; on SQLite and on PostgreSQL (`database_url`: a schema of the test's own on the
CI machine's server) where the database does the work. Webhook → job → download → playback; the
missing-CallLog backoff measured against the schedule; the seed's retries without delays; slow
downloads with and without a heartbeat; Range requests."""
from __future__ import annotations

import threading
import time

import pytest
import redis
import requests

from loopfix.harness.invariants import check_backoff_schedule, check_worker_never_blocks
from loopfix.loadtests.verdicts import backoff_abs_tolerance_s
from loopfix.reference_app.services import Services
from tests.conftest import add_business, read_events, sid, sign

# How long a wait for something that must happen may run past its scheduled time before the test
# gives up: a bound on liveness only (a passing wait returns as soon as it sees the event), wide
# enough for a machine whose other processes starve the worker's forks for many seconds.
LIVENESS_S = 120

pytestmark = [pytest.mark.redis, pytest.mark.stack]


def start(stack_factory, make_config, workers=1, stub=None, app=True, **cfg):
    stack = stack_factory(make_config(media_hosts=(), **cfg))
    stack.start_stub(**(stub or {}))
    if app:
        stack.start_app(workers=1, threads=8)
    for _ in range(workers):
        stack.start_worker()
    return stack, Services(stack.config)


def post_signed(stack, path, business, form):
    url = stack.app_url + path
    sig = sign(business["auth_token"], url, form)
    return requests.post(url, data=form, headers={"X-Twilio-Signature": sig}, timeout=5)


def recording_form(stack, business, call_sid, rec_sid, ext=""):
    url = f"{stack.stub_url}/2010-04-01/Accounts/{business['account_sid']}/Recordings/{rec_sid}{ext}"
    return {"AccountSid": business["account_sid"], "CallSid": call_sid, "RecordingSid": rec_sid,
            "RecordingUrl": url, "RecordingStatus": "completed", "RecordingDuration": "30"}


def play_until_done(stack, business, call_sid, timeout=20.0):
    """A browser player: poll the file endpoint honouring Retry-After (scaled) until not 202."""
    deadline = time.monotonic() + timeout
    while True:
        r = requests.get(f"{stack.app_url}/api/recordings/file/{call_sid}",
                         headers={"Authorization": f"Bearer {business['token']}"}, timeout=5)
        if r.status_code != 202 or time.monotonic() > deadline:
            return r
        time.sleep(min(0.2, int(r.headers["Retry-After"]) * stack.config.policy.time_scale))


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_webhook_to_playback_downloads_exactly_once(database_url, stack_factory, make_config):
    stack, svc = start(stack_factory, make_config, time_scale=0.01, database_url=database_url)
    b = add_business(svc)
    call, rec = b["calls"][0]["call_sid"], sid("RE")
    assert post_signed(stack, "/webhooks/twilio/recording", b, recording_form(stack, b, call, rec, ".json")).status_code == 204
    r = play_until_done(stack, b, call)
    assert r.status_code == 200 and r.headers["Content-Type"] == "audio/mpeg" and r.content[:2] == b"\xff\xfb"
    for _ in range(3):  # more plays are served from disk
        assert play_until_done(stack, b, call).status_code == 200
    assert stack.ledger()[rec]["completed"] == 1
    ranged = requests.get(f"{stack.app_url}/api/calls/{call}/recording/stream",
                          headers={"Authorization": f"Bearer {b['token']}", "Range": "bytes=0-99"}, timeout=5)
    assert ranged.status_code == 206 and len(ranged.content) == 100
    assert ranged.headers["Content-Range"].startswith("bytes 0-99/") and ranged.headers["Accept-Ranges"] == "bytes"
    bad = requests.get(f"{stack.app_url}/api/calls/{call}/recording/stream",
                       headers={"Authorization": f"Bearer {b['token']}", "Range": "bytes=999999999-"}, timeout=5)
    assert bad.status_code == 416
    junk = requests.get(f"{stack.app_url}/api/calls/{call}/recording/stream",
                        headers={"Authorization": f"Bearer {b['token']}", "Range": "bytes=zz"}, timeout=5)
    assert junk.status_code == 416  # a clear 4xx, never a 500


def _gaps(events, job_id, until="job.start"):
    """(attempt, configured delay, measured gap) from each job.retry to the next `until` event
    of the job (job.start: the run began; job.enqueue: the ticker promoted it to its queue)."""
    mine = [e for e in events if e.get("job_id") == job_id and e["kind"] in ("job.retry", until)]
    out = []
    for prev, nxt in zip(mine, mine[1:]):
        if prev["kind"] == "job.retry" and nxt["kind"] == until:
            out.append((prev["attempt"], prev["delay"], nxt["t"] - prev["t"]))
    return out


class Lateness(threading.Thread):
    """How late this machine runs a turn like the workers' ticker's while a test runs: sleep a
    tick, then what a promotion costs — ask Redis for due jobs and read a run through a
    database session, as record_promotion does; `worst` is the longest such turn past its tick
    (wall seconds). A busy machine delays the ticker as much, so the live bound on lateness is
    derived from it."""

    def __init__(self, svc: Services, tick_s: float = 0.005):
        super().__init__(daemon=True)
        self.svc, self.tick_s, self.worst, self.done = svc, tick_s, 0.0, threading.Event()

    def run(self) -> None:
        from loopfix.reference_app.models import RecordingRun

        conn = redis.Redis.from_url(self.svc.config.redis_url)
        while not self.done.is_set():
            asked = time.monotonic()
            time.sleep(self.tick_s)
            conn.zrangebyscore("loopfix:lateness-probe", "-inf", time.time(), start=0, num=100)
            with self.svc.sessions() as s:
                s.get(RecordingRun, 0)
            self.worst = max(self.worst, time.monotonic() - asked - self.tick_s)


def test_missing_calllog_retries_five_times_on_schedule_then_fails(stack_factory, make_config, tmp_path):
    scale = 0.004
    stack, svc = start(stack_factory, make_config, time_scale=scale)
    b = add_business(svc, calls=0)
    call, rec = sid("CA"), sid("RE")  # the call-status webhook never comes
    assert post_signed(stack, "/webhooks/twilio/recording", b, recording_form(stack, b, call, rec, ".mp3")).status_code == 204
    budget = svc.policy.wall(sum([60, 120, 240, 480, 960])) + 10
    lateness = Lateness(svc)
    lateness.start()
    try:
        events = wait_for(lambda: (ev := read_events(stack.config.history_dir)) and
                          any(e["kind"] == "job.end" and e.get("outcome") == "failed" for e in ev) and ev,
                          budget, "permanent failure")
    finally:
        lateness.done.set()
    job_id = next(e["job_id"] for e in events if e["kind"] == "job.start")
    gaps = _gaps(events, job_id)
    assert [a for a, _, _ in gaps] == [1, 2, 3, 4, 5]
    assert [d for _, d, _ in gaps] == [60, 120, 240, 480, 960]
    # the run never starts early, however busy the machine
    assert all(delay <= gap for _, delay, gap in gaps), gaps
    # the schedule is the ticker's: it promotes each retry at most 2 % + a tick + three times the
    # worst turn of a ticker-like loop measured meanwhile after it fell due (the turn in progress
    # when it fell due, a sweep's, and its own; what follows the promotion — the worker's dequeue
    # and fork — is the machine's speed, not the schedule)
    promoted = _gaps(events, job_id, until="job.enqueue")
    assert [d for _, d, _ in promoted] == [60, 120, 240, 480, 960]
    tolerance_abs = (0.005 + 3 * lateness.worst) / scale
    for _attempt, delay, gap in promoted:
        assert delay <= gap <= delay * 1.02 + tolerance_abs, (delay, gap, lateness.worst)
    assert {e["phase"] for e in events if e["kind"] == "job.retry"} == {"calllog"}
    starts = [e for e in events if e["kind"] == "job.start"]
    assert len(starts) == 6 and stack.ledger() == {}


@pytest.mark.parametrize("faults,outcome", [("", "done"), pytest.param("shared_retry_budget", "failed",
                                                                         marks=pytest.mark.slow)])
def test_a_calllog_after_the_fifth_retry_then_a_failed_fetch_is_downloaded_on_the_fetch_budget(
        stack_factory, make_config, faults, outcome):
    """fixed: the fetch failure spends the fetch budget (retry 1 after 60 s) and the recording
    is downloaded; the seeds' one budget (shared_retry_budget) is spent already: lost."""
    scale = 0.004
    stack, svc = start(stack_factory, make_config, time_scale=scale, faults=faults)
    p = svc.policy
    b = add_business(svc, calls=0)
    call, rec = sid("CA"), sid("RE")  # the recording webhook beats the CallLog
    assert post_signed(stack, "/webhooks/twilio/recording", b, recording_form(stack, b, call, rec, ".mp3")).status_code == 204
    waits = [60, 120, 240, 480, 960]
    wait_for(lambda: any(e["kind"] == "job.retry" and e["attempt"] == p.max_recording_retries
                         for e in read_events(stack.config.history_dir)),
             p.wall(sum(waits[:-1])) + LIVENESS_S, "the CallLog's last retry")
    stack.stub_config(script=["503"])  # the first fetch once the CallLog is there fails
    form = {"AccountSid": b["account_sid"], "CallSid": call, "From": "+1555", "To": "+1556", "CallStatus": "completed"}
    assert post_signed(stack, "/webhooks/twilio/call-status", b, form).status_code == 204
    events = wait_for(lambda: (ev := read_events(stack.config.history_dir)) and
                      any(e["kind"] == "job.end" and e.get("outcome") in ("done", "failed") for e in ev) and ev,
                      p.wall(waits[-1] + waits[0]) + LIVENESS_S, "the run to finish")
    retries = [(e["phase"], e["attempt"], e["delay"]) for e in events if e["kind"] == "job.retry"]
    calllog = [("calllog", n, d) for n, d in enumerate(waits, 1)]
    ledger = stack.ledger()[rec]
    assert [e["outcome"] for e in events if e["kind"] == "job.end" and e["outcome"] != "retry"] == [outcome]
    if outcome == "done":
        assert retries == calllog + [("fetch", 1, 60)]
        assert [e["attempt"] for e in events if e["kind"] == "job.start"] == list(range(1, 8))  # every run counted
        assert (ledger["requests"], ledger["completed"]) == (2, 1)  # the 503, then the whole file
        verdict = check_backoff_schedule(events, p, abs_tol_s=backoff_abs_tolerance_s(p))  # a live ticker's lag
        assert verdict.valid is True and verdict.figure["gaps_checked_by_phase"] == {"calllog": 5, "fetch": 1}
        assert play_until_done(stack, b, call).status_code == 200
    else:
        assert retries == calllog and (ledger["requests"], ledger["completed"]) == (1, 0)


def test_calllog_arriving_late_lets_the_waiting_run_finish(database_url, stack_factory, make_config):
    stack, svc = start(stack_factory, make_config, time_scale=0.005, database_url=database_url)
    b = add_business(svc, calls=0)
    call, rec = sid("CA"), sid("RE")
    post_signed(stack, "/webhooks/twilio/recording", b, recording_form(stack, b, call, rec, ".mp3"))
    wait_for(lambda: any(e["kind"] == "job.retry" for e in read_events(stack.config.history_dir)), 30,
             "the run's first retry (no CallLog yet)")
    form = {"AccountSid": b["account_sid"], "CallSid": call, "From": "+1555", "To": "+1556", "CallStatus": "completed"}
    assert post_signed(stack, "/webhooks/twilio/call-status", b, form).status_code == 204
    assert play_until_done(stack, b, call, timeout=30).status_code == 200
    assert stack.ledger()[rec]["completed"] == 1


def test_seed_retries_without_the_documented_delays_and_stops_at_rqs_three(stack_factory, make_config):
    stack, svc = start(stack_factory, make_config, variant="seed", time_scale=0.02)
    b = add_business(svc, calls=0)
    call = sid("CA")
    post_signed(stack, "/webhooks/twilio/recording", b, recording_form(stack, b, call, sid("RE"), ".mp3"))
    time.sleep(svc.policy.wall(150))
    events = read_events(stack.config.history_dir)
    job_id = next(e["job_id"] for e in events if e["kind"] == "job.start")
    gaps = _gaps(events, job_id)
    swept = min([e["t"] for e in events if e["kind"] == "job.stuck"], default=float("inf"))
    starts = [e for e in events if e["kind"] == "job.start" and e["t"] < swept]
    assert len(starts) == 4  # RQ's Retry(max=3), not the job's 5; later the stuck sweep re-creates it
    assert all(gap < delay / 4 for _, delay, gap in gaps)  # computed 60..240 s, re-run at once


@pytest.mark.parametrize("variant,completed", [("fixed", 1), ("seed", 2)])
def test_a_slow_download_is_fetched_once_with_a_heartbeat_and_twice_when_judged_by_age(
        stack_factory, make_config, variant, completed):
    # 64 kB at 100 B/s = 640 policy s: longer than the seed's 300 s stuck timeout
    stack, svc = start(stack_factory, make_config, workers=2, variant=variant, time_scale=0.005,
                       stub={"size_bytes": 64_000, "bandwidth_bps": 100})
    b = add_business(svc)
    call, rec = b["calls"][0]["call_sid"], sid("RE")
    post_signed(stack, "/webhooks/twilio/recording", b, recording_form(stack, b, call, rec, ".mp3"))
    wait_for(lambda: stack.ledger().get(rec, {}).get("completed", 0) >= 1, 30, "first download")
    if completed > 1:  # judged stuck by age: a second job fetches it again
        wait_for(lambda: stack.ledger()[rec]["completed"] >= completed, 30, "the second download")
    else:  # nothing marks a download that never happens: give one the time it would take
        time.sleep(svc.policy.wall(700))
    assert stack.ledger()[rec]["completed"] == completed


@pytest.mark.parametrize("variant,faults,sleeps", [("fixed", "", False), ("seed", "", True),
                                                   ("fixed", "blocking_slot_loop", True)])
def test_slot_contention_defers_the_job_and_the_worker_never_sleeps(stack_factory, make_config, variant, faults,
                                                                    sleeps):
    stack, svc = start(stack_factory, make_config, workers=2, variant=variant, faults=faults, time_scale=0.01,
                       slots_per_business=1, stub={"size_bytes": 32_000, "bandwidth_bps": 3_200})  # 10 policy s each
    b = add_business(svc, calls=3)
    for c in b["calls"]:
        post_signed(stack, "/webhooks/twilio/recording", b, recording_form(stack, b, c["call_sid"], c["recording_sid"], ".mp3"))
    for c in b["calls"]:
        assert play_until_done(stack, b, c["call_sid"], timeout=30).status_code == 200
    events = read_events(stack.config.history_dir)
    verdict = check_worker_never_blocks(events, svc.policy)
    assert verdict.valid is (not sleeps)
    witnesses = [w for group in verdict.anomalies.values() for a in group for w in a.witnesses]
    assert {(w["kind"], w["reason"]) for w in witnesses} == ({("worker.sleep", "slot")} if sleeps else set())
    if not faults:  # blocking_slot_loop waits for the slot in the worker instead of deferring
        assert any(e["kind"] == "job.end" and e.get("outcome") == "deferred" for e in events)
