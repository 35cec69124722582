"""Single faults of the recording pipeline switched on alone (LOOPFIX_FAULTS on top of `fixed`),
each beside the run that lacks it, on real processes: gunicorn, RQ workers, Redis, the Twilio
stand-in. The variant tests elsewhere show each tier's loops together; these show that each
named toggle is the one that causes its own, and that the checker reports it.
"""
from __future__ import annotations

import time

import pytest
import requests

from loopfix.harness.invariants import check_backoff_schedule, check_no_duplicate_download
from tests.conftest import add_business, read_events, sid
from tests.test_recording_pipeline import post_signed, recording_form, start, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.stack]


def _witnesses(verdict):
    return [w for group in verdict.anomalies.values() for a in group for w in a.witnesses]


def _job_starts(events, job_id):
    return [e for e in events if e["kind"] == "job.start" and e["job_id"] == job_id]


def test_infinite_immediate_retry_alone_re_runs_a_waiting_job_at_once_and_never_gives_up(stack_factory, make_config):
    stack, svc = start(stack_factory, make_config, faults="infinite_immediate_retry", time_scale=0.05)
    b = add_business(svc, calls=0)
    post_signed(stack, "/webhooks/twilio/recording", b, recording_form(stack, b, sid("CA"), sid("RE"), ".mp3"))
    limit = svc.policy.max_recording_retries
    wait_for(lambda: len([e for e in read_events(stack.config.history_dir) if e["kind"] == "job.start"]) > 2 * limit,
             30, f"more than {2 * limit} attempts")
    events = read_events(stack.config.history_dir)
    job_id = next(e["job_id"] for e in events if e["kind"] == "job.start")
    starts = _job_starts(events, job_id)
    gaps = [b["t"] - a["t"] for a, b in zip(starts, starts[1:])]
    assert max(gaps) < svc.policy.backoff_base_s / 2  # re-run at once, not after 60, 120, ... s
    assert not any(e["kind"] == "job.end" and e.get("outcome") == "failed" for e in events)
    verdict = check_backoff_schedule(events, svc.policy)
    assert verdict.valid is False and {e["job_id"] for e in _witnesses(verdict)} == {job_id}


@pytest.mark.parametrize("faults,completed", [
    ("", 1),
    pytest.param("no_heartbeat,stuck_202_forever", 1,  # the 900 s claim outlives the download even unrefreshed
                 marks=pytest.mark.slow),  # CI time: the cases either side hold once and break
    ("no_heartbeat,stuck_202_forever,short_inflight_ttl", 2),
])
def test_a_second_job_downloads_again_only_when_the_inflight_claim_expires_mid_download(
        stack_factory, make_config, faults, completed):
    # 128 kB at 100 B/s: 1,280 policy s, longer than 004's 120 s in-flight TTL, shorter than 900 s + more
    stack, svc = start(stack_factory, make_config, workers=2, faults=faults, time_scale=0.005,
                       stub={"size_bytes": 128_000, "bandwidth_bps": 100})
    b = add_business(svc, recording_url=stack.stub_url + "/2010-04-01/Accounts/{account}/Recordings/{sid}.mp3")
    call, rec = b["calls"][0]["call_sid"], b["calls"][0]["recording_sid"]
    headers = {"Authorization": f"Bearer {b['token']}"}
    enqueue = f"{stack.app_url}/api/calls/{call}/recording/enqueue"
    assert requests.post(enqueue, headers=headers, timeout=5).status_code == 202
    wait_for(lambda: any(e["kind"] == "download.start" for e in read_events(stack.config.history_dir)), 30,
             "the first download to start")
    time.sleep(svc.policy.wall(svc.policy.enqueue_dedup_ttl_s + 30))  # past the dedup window and 120 s
    assert requests.post(enqueue, headers=headers, timeout=5).status_code == 202  # a second job, same recording
    wait_for(lambda: stack.ledger().get(rec, {}).get("completed", 0) >= 1, 60, "the first download to complete")
    if completed > 1:  # the claim expired mid-download: the second job fetches it again
        wait_for(lambda: stack.ledger()[rec]["completed"] >= completed, 60, "the second download to complete")
        # the stand-in counts a transfer at its last byte; the job records it once the file is in place
        wait_for(lambda: sum(1 for e in read_events(stack.config.history_dir) if e["kind"] == "download.end"
                             and e.get("ok") and not e.get("skipped")) >= completed, 60,
                 "the second download's download.end")
    else:  # nothing marks a download that never happens: room for a second transfer to finish, if one started
        time.sleep(svc.policy.wall(400))
    assert stack.ledger()[rec]["completed"] == completed
    verdict = check_no_duplicate_download(read_events(stack.config.history_dir), svc.policy)
    assert verdict.valid is (completed == 1)
    if completed > 1:
        assert {w["recording_sid"] for w in _witnesses(verdict)} == {rec}
