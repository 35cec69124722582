"""The recording API on real Redis without a worker: status semantics, fail-fast, dedup, playback
dedup, the semaphore's place, webhooks and bad input — each fix on `fixed`, and the loop or fault
on the variant that has it."""
from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select

from loopfix.reference_app.models import CallLog, RecordingRun
from tests.conftest import add_business, auth, sid, sign, signed_post

STUB = "https://api.twilio.com/2010-04-01/Accounts/{account}/Recordings/{sid}.mp3"


def runs(svc, call_sid=None) -> int:
    with svc.sessions() as s:
        q = select(func.count(RecordingRun.id))
        if call_sid:
            q = q.where(RecordingRun.call_sid == call_sid)
        return s.scalar(q)


# ----------------------------------------------------------------------------- status semantics (002)


def test_call_without_recording_url_answers_404_and_enqueues_nothing(app_factory):
    client, svc = app_factory()
    b = add_business(svc)
    r = client.get(f"/api/recordings/file/{b['calls'][0]['call_sid']}", headers=auth(b))
    assert r.status_code == 404 and r.json["error"] == "no_recording_url"
    assert runs(svc) == 0


def test_first_play_enqueues_and_answers_202_with_retry_after(app_factory):
    client, svc = app_factory()
    b = add_business(svc, recording_url=STUB)
    r = client.get(f"/api/recordings/file/{b['calls'][0]['call_sid']}", headers=auth(b))
    assert r.status_code == 202 and int(r.headers["Retry-After"]) >= 1
    assert runs(svc) == 1


def test_polling_an_active_job_answers_202_without_new_jobs(app_factory):
    client, svc = app_factory(time_scale=0.001)
    b = add_business(svc, recording_url=STUB)
    call = b["calls"][0]["call_sid"]
    for _ in range(5):
        r = client.get(f"/api/recordings/file/{call}", headers=auth(b))
        assert r.status_code == 202 and "Retry-After" in r.headers
    assert runs(svc) == 1


# ----------------------------------------------------------------------------- fail-fast (002)


def _poll(client, b, call, times, every_s):
    statuses = []
    for _ in range(times):
        statuses.append(client.get(f"/api/recordings/file/{call}", headers=auth(b)).status_code)
        time.sleep(every_s)
    return statuses


def _poll_until_stuck_each_time(client, b, call, times, svc):
    """Poll once per stuck timeout (+ the playback mark), as players would across sessions."""
    return _poll(client, b, call, times, svc.policy.wall(svc.policy.stuck_timeout_s + svc.policy.playback_mark_ttl_s) + 0.05)


def test_with_no_worker_three_attempts_then_500_worker_not_processing_queue(app_factory):
    client, svc = app_factory(time_scale=0.002)
    b = add_business(svc, recording_url=STUB)
    call = b["calls"][0]["call_sid"]
    statuses = _poll(client, b, call, 4, svc.policy.wall(svc.policy.playback_mark_ttl_s) + 0.01)
    assert statuses == [202, 202, 202, 500]
    r = client.get(f"/api/recordings/file/{call}", headers=auth(b))
    assert r.status_code == 500 and r.json["error"] == "worker_not_processing_queue"
    assert runs(svc, call) == 1  # no job was created for a queue nobody works


def test_with_a_live_worker_a_waiting_job_never_trips_fail_fast(app_factory):
    client, svc = app_factory(time_scale=0.002)
    b = add_business(svc, recording_url=STUB)
    call = b["calls"][0]["call_sid"]
    statuses = []
    for _ in range(6):
        svc.coord.worker_beat()
        statuses += _poll(client, b, call, 1, svc.policy.wall(svc.policy.playback_mark_ttl_s) + 0.01)
    assert statuses == [202] * 6


def test_seed_fail_fast_never_trips_when_only_stuck_jobs_count(app_factory):
    client, svc = app_factory(variant="seed", time_scale=0.001)
    b = add_business(svc, recording_url=STUB)
    call = b["calls"][0]["call_sid"]
    assert _poll_until_stuck_each_time(client, b, call, 5, svc) == [202] * 5
    assert runs(svc, call) == 5  # a new job every stuck timeout, for ever


def test_before_without_fail_fast_recreates_stuck_jobs_forever(app_factory):
    client, svc = app_factory(faults="no_fail_fast", time_scale=0.001)
    b = add_business(svc, recording_url=STUB)
    call = b["calls"][0]["call_sid"]
    assert _poll_until_stuck_each_time(client, b, call, 6, svc) == [202] * 6
    assert runs(svc, call) == 6


def test_before_answers_202_forever_for_a_stuck_job(app_factory):
    client, svc = app_factory(variant="before", time_scale=0.001)
    b = add_business(svc, recording_url=STUB)
    call = b["calls"][0]["call_sid"]
    statuses = _poll_until_stuck_each_time(client, b, call, 5, svc)
    assert statuses == [202] * 5  # never a 500, never a 200: the player's loop never ends


def test_fail_fast_counter_survives_a_crash_between_incr_and_expire_only_on_seed(make_config, tmp_path):
    import subprocess
    import sys

    import redis as redis_lib

    script = (
        "import sys, redis\n"
        "from loopfix.reference_app.coordination import Coordinator\n"
        "from loopfix.reference_app.policy import make_policy\n"
        "Coordinator(redis.Redis.from_url(sys.argv[1]), make_policy(sys.argv[2])).count_attempt('CAcrash')\n"
    )
    url = make_config().redis_url
    conn = redis_lib.Redis.from_url(url)
    results = {}
    for variant in ("seed", "fixed"):
        conn.delete("loopfix:failfast:CAcrash")
        env = {"LOOPFIX_CRASH_POINTS": "fail_fast_after_incr", "PATH": "/usr/bin:/bin"}
        proc = subprocess.run([sys.executable, "-c", script, url, variant], env=env, cwd=str(tmp_path.parent))
        results[variant] = (proc.returncode, conn.type("loopfix:failfast:CAcrash"), conn.pttl("loopfix:failfast:CAcrash"))
    assert results["seed"][0] == 137 and results["seed"][2] == -1  # a counter that never expires: blocked forever
    assert results["fixed"][0] == 0 and results["fixed"][2] > 0


# ----------------------------------------------------------------------------- enqueue dedup + tuple (001, 004)


def test_failed_enqueue_answers_500_and_leaves_no_dedup_key(app_factory):
    client, svc = app_factory(faults="retry_as_int")
    b = add_business(svc, recording_url=STUB)
    call = b["calls"][0]["call_sid"]
    for _ in range(3):
        r = client.post(f"/api/calls/{call}/recording/enqueue", headers=auth(b))
        assert r.status_code == 500 and r.json["reason"] == "error"


def test_before_failed_enqueue_answers_200_duplicate_forever(app_factory):
    client, svc = app_factory(variant="before")
    b = add_business(svc, recording_url=STUB)
    call = b["calls"][0]["call_sid"]
    answers = [client.post(f"/api/calls/{call}/recording/enqueue", headers=auth(b)) for _ in range(4)]
    assert [(r.status_code, r.json["reason"]) for r in answers] == [(200, "duplicate")] * 4
    with svc.sessions() as s:  # nothing was ever queued: the only run failed at enqueue
        assert s.scalars(select(RecordingRun.status)).all() == ["failed"]


def test_dedup_set_before_enqueue_alone_turns_one_failure_into_duplicates(app_factory):
    client, svc = app_factory(faults="retry_as_int,dedup_set_before_enqueue")
    b = add_business(svc, recording_url=STUB)
    call = b["calls"][0]["call_sid"]
    first = client.post(f"/api/calls/{call}/recording/enqueue", headers=auth(b))
    second = client.post(f"/api/calls/{call}/recording/enqueue", headers=auth(b))
    assert first.status_code == 500 and (second.status_code, second.json["reason"]) == (200, "duplicate")


def test_enqueue_then_duplicate_then_allowed_again_after_dedup_ttl(app_factory):
    client, svc = app_factory(time_scale=0.002)  # 120 s dedup = 0.24 s
    b = add_business(svc, recording_url=STUB)
    call = b["calls"][0]["call_sid"]
    assert client.post(f"/api/calls/{call}/recording/enqueue", headers=auth(b)).status_code == 202
    assert client.post(f"/api/calls/{call}/recording/enqueue", headers=auth(b)).json["reason"] == "duplicate"
    time.sleep(svc.policy.wall(svc.policy.enqueue_dedup_ttl_s) + 0.1)
    assert client.post(f"/api/calls/{call}/recording/enqueue", headers=auth(b)).json["reason"] == "enqueued"


def test_long_dedup_ttl_still_blocks_a_retry_after_the_short_window(app_factory):
    client, svc = app_factory(faults="long_dedup_ttl", time_scale=0.002)
    b = add_business(svc, recording_url=STUB)
    call = b["calls"][0]["call_sid"]
    client.post(f"/api/calls/{call}/recording/enqueue", headers=auth(b))
    time.sleep(svc.policy.wall(svc.policy.enqueue_dedup_ttl_s) + 0.1)
    assert client.post(f"/api/calls/{call}/recording/enqueue", headers=auth(b)).json["reason"] == "duplicate"


def _storm(client, b, call, clicks):
    barrier = threading.Barrier(clicks)
    statuses = []

    def click():
        barrier.wait()
        statuses.append(client.get(f"/api/recordings/file/{call}", headers=auth(b)).status_code)

    threads = [threading.Thread(target=click) for _ in range(clicks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def test_concurrent_play_clicks_enqueue_exactly_one_job(app_factory):
    client, svc = app_factory()
    b = add_business(svc, recording_url=STUB)
    call = b["calls"][0]["call_sid"]
    assert set(_storm(client, b, call, 20)) == {202}
    assert runs(svc, call) == 1


def test_seed_concurrent_play_clicks_enqueue_more_than_one_job(app_factory):
    worst = 0
    for _ in range(5):  # the race is real; a few storms make it show
        client, svc = app_factory(variant="seed")
        b = add_business(svc, recording_url=STUB)
        call = b["calls"][0]["call_sid"]
        _storm(client, b, call, 20)
        worst = max(worst, runs(svc, call))
        if worst > 1:
            break
    assert worst > 1


def test_second_click_within_15s_does_not_enqueue_even_after_the_job_failed(app_factory):
    client, svc = app_factory()
    b = add_business(svc, recording_url=STUB)
    call = b["calls"][0]["call_sid"]
    client.get(f"/api/recordings/file/{call}", headers=auth(b))
    with svc.sessions() as s:  # the job failed at once; a click inside the mark window must not re-enqueue
        for run in s.scalars(select(RecordingRun)):
            run.status = "failed"
        s.commit()
    assert client.get(f"/api/recordings/file/{call}", headers=auth(b)).status_code == 202
    assert runs(svc, call) == 1


def test_before_enqueues_on_every_click(app_factory):
    client, svc = app_factory(faults="enqueue_every_click,dedup_check_then_set", time_scale=0.0001)
    b = add_business(svc, recording_url=STUB)
    call = b["calls"][0]["call_sid"]
    for _ in range(3):
        client.get(f"/api/recordings/file/{call}", headers=auth(b))
        with svc.sessions() as s:
            for run in s.scalars(select(RecordingRun)):
                run.status = "failed"
            s.commit()
        time.sleep(svc.policy.wall(svc.policy.enqueue_dedup_ttl_s) + 0.02)
    assert runs(svc, call) == 3


def test_without_playback_dedup_every_click_enqueues_even_inside_the_dedup_window(app_factory):
    """enqueue_every_click: the play route predates both dedup layers (003), so back-to-back
    clicks each create a job — the same reading as the model's (policy.playback_dedups)."""
    client, svc = app_factory(faults="enqueue_every_click")
    b = add_business(svc, recording_url=STUB)
    call = b["calls"][0]["call_sid"]
    for _ in range(3):  # each click finds the last job failed at once: no wait for any TTL
        assert client.get(f"/api/recordings/file/{call}", headers=auth(b)).status_code == 202
        with svc.sessions() as s:
            for run in s.scalars(select(RecordingRun)):
                run.status = "failed"
            s.commit()
    assert runs(svc, call) == 3


def test_retry_as_int_fails_only_the_enqueue_api_so_play_clicks_still_enqueue(app_factory):
    """retry_as_int breaks seed 001's enqueue API, not the play or webhook paths
    (policy.enqueue_retry_is_int), so `before`'s other loops still run."""
    client, svc = app_factory(variant="before")
    b = add_business(svc, calls=2, recording_url=STUB)
    played, asked = b["calls"][0]["call_sid"], b["calls"][1]["call_sid"]
    assert client.get(f"/api/recordings/file/{played}", headers=auth(b)).status_code == 202
    r = client.post(f"/api/calls/{asked}/recording/enqueue", headers=auth(b))
    assert (r.status_code, r.json["reason"]) == (200, "duplicate")  # the failure hidden as a dedup hit
    with svc.sessions() as s:
        status = dict(s.execute(select(RecordingRun.call_sid, RecordingRun.status)).all())
    assert status == {played: "queued", asked: "failed"}


@pytest.mark.parametrize("faults, requeued", [("", 0), ("stuck_by_age", 1)])
def test_sweeper_leaves_a_queued_run_alone_while_a_worker_is_alive_but_not_by_age(app_factory, faults, requeued):
    """A long backlog is not a stuck job (fixed): with a live worker, a run queued far past the
    stuck timeout keeps its place and its retry budget; seed (stuck_by_age) re-queues it."""
    from loopfix.reference_app.jobs import cleanup_stuck_recording_jobs

    client, svc = app_factory(faults=faults)
    b = add_business(svc, recording_url=STUB)
    client.get(f"/api/recordings/file/{b['calls'][0]['call_sid']}", headers=auth(b))
    with svc.sessions() as s:  # queued twice the stuck timeout ago
        for run in s.scalars(select(RecordingRun)):
            run.created_at -= svc.policy.wall(2 * svc.policy.stuck_timeout_s)
        s.commit()
    svc.coord.worker_beat()
    assert cleanup_stuck_recording_jobs(svc) == requeued
    with svc.sessions() as s:
        assert s.scalar(select(RecordingRun.retry_count)) == requeued


# ----------------------------------------------------------------------------- semaphore placement (004)


def test_api_takes_no_download_slot_so_queued_jobs_hold_none(app_factory):
    client, svc = app_factory(slots_per_business=2)
    b = add_business(svc, calls=3, recording_url=STUB)
    statuses = [client.get(f"/api/recordings/file/{c['call_sid']}", headers=auth(b)).status_code for c in b["calls"]]
    assert statuses == [202, 202, 202] and runs(svc) == 3
    assert svc.coord.slots_in_use(b["id"]) == 0


def test_semaphore_in_api_leaks_slots_to_jobs_that_have_not_run(app_factory):
    client, svc = app_factory(faults="semaphore_in_api", slots_per_business=2)
    b = add_business(svc, calls=3, recording_url=STUB)
    for c in b["calls"]:
        client.get(f"/api/recordings/file/{c['call_sid']}", headers=auth(b))
    assert svc.coord.slots_in_use(b["id"]) == 2  # held by jobs no worker has started
    with svc.sessions() as s:
        assert sorted(s.scalars(select(RecordingRun.status))) == ["failed", "queued", "queued"]


# ----------------------------------------------------------------------------- webhooks, URLs (001)

BASE = "http://loopfix.test"


def _recording_form(b, call_sid, url, **extra):
    return {"AccountSid": b["account_sid"], "CallSid": call_sid, "RecordingSid": sid("RE"), "RecordingUrl": url,
            "RecordingStatus": "completed", "RecordingDuration": "12", **extra}


def test_recording_webhook_stores_mp3_url_commits_calllog_then_enqueues(app_factory):
    client, svc = app_factory()
    b = add_business(svc)
    call = b["calls"][0]["call_sid"]
    url = f"https://api.twilio.com/2010-04-01/Accounts/{b['account_sid']}/Recordings/{sid('RE')}.json"
    r = signed_post(client, BASE, "/webhooks/twilio/recording", b, _recording_form(b, call, url))
    assert r.status_code == 204
    with svc.sessions() as s:
        stored = s.scalar(select(CallLog.recording_url).where(CallLog.call_sid == call))
    assert stored == url[: -len(".json")] + ".mp3"
    assert runs(svc, call) == 1


def test_json_suffix_rewrite_touches_only_the_suffix_on_fixed_and_everything_on_seed(app_factory):
    results = {}
    for variant in ("fixed", "seed", "before"):
        client, svc = app_factory(variant=variant)
        b = add_business(svc)
        call = b["calls"][0]["call_sid"]
        url = f"https://api.twilio.com/2010-04-01/Accounts/{b['account_sid']}/Recordings.json.d/{sid('RE')}.json"
        signed_post(client, BASE, "/webhooks/twilio/recording", b, _recording_form(b, call, url))
        with svc.sessions() as s:
            results[variant] = s.scalar(select(CallLog.recording_url).where(CallLog.call_sid == call))
    assert results["fixed"].endswith(".mp3") and "/Recordings.json.d/" in results["fixed"]
    assert "/Recordings.mp3.d/" in results["seed"]
    assert results["before"].endswith(".json")


def test_unsigned_forged_and_foreign_webhooks_are_refused_and_write_nothing(app_factory):
    client, svc = app_factory()
    b = add_business(svc)
    other = add_business(svc)
    call = b["calls"][0]["call_sid"]
    url = f"https://api.twilio.com/2010-04-01/Accounts/{b['account_sid']}/Recordings/{sid('RE')}"
    form = _recording_form(b, call, url)
    assert client.post("/webhooks/twilio/recording", data=form, base_url=BASE).status_code == 403
    assert signed_post(client, BASE, "/webhooks/twilio/recording", b, form, token="0" * 32).status_code == 403
    tampered = dict(form, RecordingUrl=url + "x")
    sig = sign(b["auth_token"], BASE + "/webhooks/twilio/recording", form)
    r = client.post("/webhooks/twilio/recording", data=tampered, headers={"X-Twilio-Signature": sig}, base_url=BASE)
    assert r.status_code == 403
    # another business signing for this business's call
    foreign = dict(form, AccountSid=other["account_sid"])
    assert signed_post(client, BASE, "/webhooks/twilio/recording", other, foreign).status_code == 403
    assert runs(svc) == 0


def test_recording_on_a_host_that_is_not_allowed_is_refused(app_factory):
    client, svc = app_factory()
    b = add_business(svc)
    call = b["calls"][0]["call_sid"]
    for url in ("https://evil.example/2010-04-01/x.mp3", "http://api.twilio.com/x.mp3",
                "https://api.twilio.com@evil.example/x.mp3", "https://127.0.0.1/x.mp3", "file:///etc/passwd"):
        r = signed_post(client, BASE, "/webhooks/twilio/recording", b, _recording_form(b, call, url))
        assert r.status_code == 400 and r.json["error"] == "host_not_allowed", url
    assert runs(svc) == 0


def test_malformed_webhook_fields_answer_400(app_factory):
    client, svc = app_factory()
    b = add_business(svc)
    form = _recording_form(b, "not-a-call-sid", "https://api.twilio.com/x.mp3")
    assert signed_post(client, BASE, "/webhooks/twilio/recording", b, form).status_code == 400
    r = signed_post(client, BASE, "/webhooks/twilio/call-status", b, {"AccountSid": b["account_sid"]})
    assert r.status_code == 400 and "CallSid" in r.json["message"]


def test_call_status_webhook_creates_then_updates_the_calllog(app_factory):
    client, svc = app_factory()
    b = add_business(svc, calls=0)
    call = sid("CA")
    for status in ("ringing", "completed"):
        form = {"AccountSid": b["account_sid"], "CallSid": call, "From": "+15550001", "To": "+15550002",
                "CallStatus": status}
        assert signed_post(client, BASE, "/webhooks/twilio/call-status", b, form).status_code == 204
    with svc.sessions() as s:
        assert s.scalars(select(CallLog.call_status).where(CallLog.call_sid == call)).all() == ["completed"]


# ----------------------------------------------------------------------------- auth and tenants


def test_missing_or_unknown_token_answers_401(app_factory):
    client, svc = app_factory()
    b = add_business(svc, recording_url=STUB)
    call = b["calls"][0]["call_sid"]
    assert client.get(f"/api/recordings/file/{call}").status_code == 401
    assert client.get(f"/api/recordings/file/{call}", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get(f"/api/recordings/file/{call}", headers={"Authorization": "Basic x"}).status_code == 401


def test_another_business_call_and_unknown_call_both_answer_404(app_factory):
    client, svc = app_factory()
    b = add_business(svc, recording_url=STUB)
    other = add_business(svc, recording_url=STUB)
    mine = client.get(f"/api/recordings/file/{other['calls'][0]['call_sid']}", headers=auth(b))
    unknown = client.get(f"/api/recordings/file/{sid('CA')}", headers=auth(b))
    assert mine.status_code == unknown.status_code == 404 and mine.json == unknown.json
    for path in ("stream", "download"):
        assert client.get(f"/api/calls/{other['calls'][0]['call_sid']}/recording/{path}",
                          headers=auth(b)).status_code == 404
    assert client.post(f"/api/calls/{other['calls'][0]['call_sid']}/recording/enqueue",
                       headers=auth(b)).status_code == 404
    assert runs(svc) == 0


def test_redis_unreachable_answers_503_quickly_not_a_traceback(make_config, app_factory):
    cfg = make_config()
    from dataclasses import replace

    client, svc = app_factory(config=replace(cfg, redis_url="redis://127.0.0.1:1/0"))
    b = add_business(svc, recording_url=STUB)
    start = time.monotonic()
    r = client.get(f"/api/recordings/file/{b['calls'][0]['call_sid']}", headers=auth(b))
    assert r.status_code == 503 and r.json["error"] == "redis_unavailable"
    assert time.monotonic() - start < 1.0
