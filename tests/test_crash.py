"""Worker crashes mid-download (issue 7 item 1), on real processes: gunicorn, RQ workers with
loopfix's ticker, a private Redis, the Twilio stand-in slowed so each kill lands mid-transfer.

A trial enqueues one recording, waits until the stand-in's ledger shows its bytes flowing,
then SIGKILLs either the RQ work horse alone (the worker survives and RQ re-runs the job with
the retries it has left) or the whole worker, horse included (RQ's own cleanup would take
minutes; loopfix's heartbeat sweep re-queues the run), and starts a replacement worker. After
the trials: every recording is downloaded (nothing lost), each exactly once by the stand-in's
ledger, the RecordingFile rows and the history's checker, and every killed job's download slot
and in-flight claim were freed within the in-flight TTL.

The downloads last 400 policy seconds, the seeds' "5-10 minute" range: on `seed` the run that
replaces the killed one is itself declared stuck by age after 300 s (fault 8), its in-flight
claim released, and a third job fetches the recording again — the duplicate the checker shows.
"""
from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
import redis
import requests
from sqlalchemy import func, select

from loopfix.harness.invariants import check_no_duplicate_download
from loopfix.loadtests.stack import children
from loopfix.reference_app.coordination import INFLIGHT_KEY, SLOTS_KEY
from loopfix.reference_app.models import RecordingFile
from tests.conftest import add_business, auth, read_events
from tests.test_recording_pipeline import start, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.stack]

SIZE_BYTES, BANDWIDTH_BPS = 64_000, 160  # 400 policy s a download
SCALE = 0.01


def running_worker(stack, call_sid: str) -> str:
    """The stack's name of the worker whose horse last started a job for `call_sid`."""
    starts = [e for e in read_events(stack.config.history_dir) if e["kind"] == "job.start" and e["call_sid"] == call_sid]
    return starts[-1]["worker"]


def held_claims(conn: redis.Redis, business_id: int, recording_sid: str) -> set[str]:
    """Owners holding a slot of the business or the recording's in-flight claim."""
    owners = {m.decode() for m in conn.zrange(SLOTS_KEY.format(business_id=business_id), 0, -1)}
    inflight = conn.get(INFLIGHT_KEY.format(recording_sid=recording_sid))
    return owners | ({inflight.decode()} if inflight else set())


def crash_trial(stack, svc, business: dict, call: dict, whole_worker: bool, rng: random.Random) -> dict:
    """Kill the worker downloading `call`'s recording mid-transfer; return what recovery took
    (policy seconds from the kill until the recording's download started again, and until the
    killed job's slot and in-flight claim were gone: released, or finished by its own re-run)."""
    rec, call_sid = call["recording_sid"], call["call_sid"]
    conn = redis.Redis.from_url(stack.config.redis_url)
    r = requests.post(f"{stack.app_url}/api/calls/{call_sid}/recording/enqueue", headers=auth(business), timeout=10)
    assert r.status_code == 202, r.text
    wait_for(lambda: stack.ledger().get(rec, {}).get("sending", 0) >= 1, 60, "the transfer to start")
    time.sleep(rng.uniform(0.05, 0.5) * svc.policy.wall(SIZE_BYTES / BANDWIDTH_BPS))  # somewhere mid-transfer
    name = running_worker(stack, call_sid)
    horses = children(stack.procs[name].pid)
    assert horses, f"{name} has no work horse mid-download"
    claims = held_claims(conn, business["id"], rec)
    before = stack.ledger()[rec]
    assert before["sending"] >= 1 and before["completed"] == 0  # the kill lands mid-transfer
    killed_at = time.time()
    if whole_worker:
        stack.kill_worker(name)
        stack.restart_worker(name)  # the workers return
    else:
        for pid in horses:
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: stack.ledger()[rec]["requests"] > before["requests"], 120, "the download to start again")
    restarted_s = svc.policy.policy_seconds(time.time() - killed_at)
    wait_for(lambda: not (claims & held_claims(conn, business["id"], rec)), 120, "the killed job's claims to go")
    freed_s = svc.policy.policy_seconds(time.time() - killed_at)
    return {"recording_sid": rec, "whole_worker": whole_worker, "restarted_s": restarted_s, "claims_freed_s": freed_s}


def downloaded(svc, recording_sid: str) -> bool:
    with svc.sessions() as s:
        row = s.scalar(select(RecordingFile).where(RecordingFile.recording_sid == recording_sid))
        return row is not None and Path(row.path).is_file() and row.size == Path(row.path).stat().st_size


def run_trials(stack_factory, make_config, variant: str, trials: int, seed: int = 7, whole_first: bool = False):
    """`trials` crash trials in one stack, one recording each, alternating horse / whole-worker kills."""
    stack, svc = start(stack_factory, make_config, workers=2, variant=variant, time_scale=SCALE,
                       stub={"size_bytes": SIZE_BYTES, "bandwidth_bps": BANDWIDTH_BPS})
    b = add_business(svc, calls=trials, recording_url=stack.stub_url + "/2010-04-01/Accounts/{account}/Recordings/{sid}.mp3")
    rng = random.Random(seed)
    results = []
    for i, call in enumerate(b["calls"]):
        results.append(crash_trial(stack, svc, b, call, whole_worker=(i % 2 == 0) == whole_first, rng=rng))
        if variant == "fixed":
            wait_for(lambda: downloaded(svc, call["recording_sid"]), 120, "the recording to be downloaded")
    return stack, svc, b, results


def assert_each_downloaded_once(stack, svc, business, results):
    recs = [c["recording_sid"] for c in business["calls"]]
    ledger = stack.ledger()
    assert {rec: ledger[rec]["completed"] for rec in recs} == {rec: 1 for rec in recs}
    assert all(downloaded(svc, rec) for rec in recs)  # nothing lost, never a partial file
    with svc.sessions() as s:
        rows = s.scalar(select(func.count()).select_from(RecordingFile).where(RecordingFile.recording_sid.in_(recs)))
    assert rows == len(recs)
    verdict = check_no_duplicate_download(read_events(stack.config.history_dir), svc.policy)
    assert verdict.valid is True, verdict
    assert max(r["claims_freed_s"] for r in results) <= svc.policy.inflight_ttl_s
    # RQ re-runs a job whose horse died under the same id: it takes its own in-flight claim
    # back at once instead of deferring until the claim's TTL lapses
    assert max(r["restarted_s"] for r in results if not r["whole_worker"]) < svc.policy.inflight_ttl_s / 4


def test_three_worker_kills_mid_download_lose_nothing_and_download_each_recording_once(stack_factory, make_config):
    stack, svc, b, results = run_trials(stack_factory, make_config, "fixed", trials=3)
    assert_each_downloaded_once(stack, svc, b, results)


@pytest.mark.slow
def test_twenty_worker_kills_mid_download_lose_nothing_and_download_each_recording_once(stack_factory, make_config):
    stack, svc, b, results = run_trials(stack_factory, make_config, "fixed", trials=20, seed=20)
    assert_each_downloaded_once(stack, svc, b, results)
    for kind, whole in (("horse", False), ("whole worker", True)):
        mine = [r for r in results if r["whole_worker"] is whole]
        restarted, freed = [max(r[k] for r in mine) for k in ("restarted_s", "claims_freed_s")]
        print(f"\n{len(mine)} {kind} kills: download restarted within {restarted:.0f} policy s, claims freed "
              f"within {freed:.0f} (in-flight TTL {svc.policy.inflight_ttl_s:.0f})")


def test_seed_downloads_a_crashed_recording_twice_and_the_checker_shows_it(stack_factory, make_config):
    stack, svc, b, _ = run_trials(stack_factory, make_config, "seed", trials=1, whole_first=True)
    rec = b["calls"][0]["recording_sid"]
    wait_for(lambda: stack.ledger()[rec]["completed"] >= 2, 60, "a second completed download")
    # the stand-in counts the last byte sent; the worker writes download.end after its commit
    wait_for(lambda: sum(e["kind"] == "download.end" and e["ok"] and not e["skipped"]
                         for e in read_events(stack.config.history_dir)) >= 2, 30, "the worker to record it")
    verdict = check_no_duplicate_download(read_events(stack.config.history_dir), svc.policy)
    assert verdict.valid is False
    witnesses = [w for group in verdict.anomalies.values() for a in group for w in a.witnesses]
    assert rec in {w["recording_sid"] for w in witnesses}
