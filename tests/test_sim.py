"""The SimPy model: deterministic, valid histories, M/M/c waits match Erlang C, and each
fault shows up in the invariant it must break (behaviour driven through the model)."""
from __future__ import annotations

import statistics

import pytest

from loopfix.harness import history as H
from loopfix.harness import invariants as inv
from loopfix.harness.scenario import load_scenario, parse_scenario, with_settings
from loopfix.reference_app.events import dumps
from loopfix.sim import simulate
from loopfix.sim.keys import KeyStore
from loopfix.sim.queueing import erlang_c, mmc_mean_wait, mmc_wait_experiment


def run(name, variant="fixed", faults=(), **sets):
    s = with_settings(load_scenario(name), variant=variant, assignments={k.replace("__", "."): str(v)
                                                                          for k, v in sets.items()})
    if faults:
        s = with_settings(s, assignments={"faults": "[" + ",".join(f'"{f}"' for f in faults) + "]"})
    return simulate(s)


def verdict(result, name):
    return inv.CHECKERS[name](result.history, result.policy)


# --------------------------------------------------------------------------- determinism, schema


def test_same_seed_gives_the_same_history_byte_for_byte(tmp_path):
    a = H.write_history(tmp_path / "a.jsonl", run("retry-storm", "seed").history)
    b = H.write_history(tmp_path / "b.jsonl", run("retry-storm", "seed").history)
    assert a.read_bytes() == b.read_bytes()


def test_another_seed_gives_another_history():
    a = run("steady", duration_s=600).history
    b = simulate(with_settings(load_scenario("steady"), seed=99, assignments={"duration_s": "600"})).history
    assert [dumps(e) for e in a] != [dumps(e) for e in b]


def test_model_histories_follow_the_event_schema_in_time_order():
    for name in ("worker-crash", "delete-storm"):
        h = run(name, "before").history
        assert H.validate(h) == []
        assert all(x["t"] <= y["t"] for x, y in zip(h, h[1:]))
        assert {e["source"] for e in h} == {"sim"}


def test_metrics_report_playback_jobs_downloads_and_utilisation():
    m = run("steady").metrics
    assert m["time_to_playable_s"]["n"] > 0 and m["time_to_playable_s"]["max"] > 0
    assert m["requests_per_playback"]["mean"] >= 1
    assert m["downloads_per_recording"]["max"] == 1
    assert 0 < m["utilisation"]["mean"] <= 1 and m["timeline"][0]["t"] == 0


# --------------------------------------------------------------------------- queueing theory


def test_erlang_c_of_one_server_is_its_utilisation():
    assert erlang_c(1, 0.5, 1.0) == pytest.approx(0.5)
    assert mmc_mean_wait(1, 0.5, 1.0) == pytest.approx(1.0)  # rho / (mu - lam)
    with pytest.raises(ValueError, match="unstable"):
        erlang_c(2, 2.0, 1.0)


@pytest.mark.parametrize("c, rho", [(1, 0.5), (3, 0.7), (4, 0.8)])
def test_model_queue_mean_wait_matches_erlang_c_within_ten_percent(c, rho):
    mu = 1.0
    lam = rho * c * mu
    waits = [mmc_wait_experiment(c, lam, mu, jobs=30_000, seed=s).mean_wait_s for s in range(4)]
    expected = mmc_mean_wait(c, lam, mu)
    assert abs(statistics.mean(waits) - expected) / expected < 0.10, (waits, expected)


# --------------------------------------------------------------------------- Redis keys


def test_keys_expire_with_their_ttl_and_nx_refuses_a_live_key():
    k = KeyStore()
    assert k.set("a", 1, now=0, ttl_s=15, nx=True)
    assert not k.set("a", 2, now=14.9, ttl_s=15, nx=True)
    assert k.set("a", 3, now=15.0, ttl_s=15, nx=True)
    assert k.incr("n", 0) == 1 and k.ttl("n", 0) == float("inf")


# --------------------------------------------------------------------------- the faults, through the model


def test_fixed_variant_holds_every_invariant_under_load_and_outages():
    for name in ("steady", "worker-crash"):
        result = run(name)
        assert inv.overall(inv.check_all(result.history, result.policy)) is True


def test_seed_variant_downloads_slow_recording_twice():
    """stuck_by_age: a healthy 5-10 min download is declared stuck at 300 s and re-run."""
    v = verdict(run("slow-twilio", "fixed", faults=["stuck_by_age", "download_not_idempotent"]), "no-duplicate-download")
    a = v.anomalies["duplicate-download"][0]
    assert v.valid is False and {w["kind"] for w in a.witnesses} == {"download.end"}
    assert verdict(run("slow-twilio", "seed"), "no-duplicate-download").valid is False
    assert verdict(run("slow-twilio", "fixed"), "no-duplicate-download").valid is True


def test_heartbeat_keeps_a_slow_download_alive_even_when_a_rerun_would_download_again():
    assert verdict(run("slow-twilio", "fixed", faults=["download_not_idempotent"]), "no-duplicate-download").valid is True


def test_crash_rerun_downloads_again_unless_the_download_is_idempotent():
    broken = run("worker-crash", "fixed", faults=["download_not_idempotent"])
    v = verdict(broken, "no-duplicate-download")
    assert v.valid is False
    # the lost job is re-run by RQ after the restart, or by the heartbeat sweeper before that
    rerun = {e["job_id"] for e in broken.history
             if (e["kind"] == "job.end" and e["outcome"] == "crashed") or e["kind"] == "job.stuck"}
    assert any(set(a.facts["job_ids"]) & rerun for a in v.anomalies["duplicate-download"])
    fixed = run("worker-crash", "fixed")
    assert verdict(fixed, "no-duplicate-download").valid is True
    assert any(e["kind"] == "download.end" and e["skipped"] for e in fixed.history)



@pytest.mark.parametrize("faults, lost", [((), False), (("orphan_runs_not_swept",), True)])
def test_a_crash_after_a_worker_popped_a_job_but_before_it_started_leaves_the_run_to_the_orphan_sweep(faults, lost):
    """A 20 s job start-up (seed 2): the crash of every worker at 1200 s hits a job popped but not
    started. RQ never marked it started, so only the sweep (policy.run_orphaned, 'dequeued')
    enqueues it again; without the sweep, nothing-lost names the recording."""
    result = run("worker-crash", faults=faults, seed=2, workers__job_overhead_s=20)
    orphans = [e for e in result.history if e["kind"] == "job.enqueue" and e["via"] == "orphan"]
    v = verdict(result, "nothing-lost")
    if lost:
        assert v.valid is False and not orphans
        assert all(a.witnesses for a in v.anomalies["recording-not-downloaded"])
    else:
        assert v.valid is True and orphans

def test_seed_variant_enqueues_several_jobs_for_concurrent_clicks():
    v = verdict(run("retry-storm", "seed"), "one-job-per-storm")
    assert v.valid is False
    a = v.anomalies["storm-duplicate-enqueue"][0]
    assert a.facts["jobs"] >= 2 and {w["via"] for w in a.witnesses} == {"playback"}
    assert verdict(run("retry-storm", "fixed"), "one-job-per-storm").valid is True


def test_atomic_enqueue_dedup_alone_stops_a_check_then_mark_race():
    assert verdict(run("retry-storm", "fixed", faults=["playback_check_then_mark"]), "one-job-per-storm").valid is True


def test_before_variant_retries_a_missing_calllog_immediately_and_forever():
    result = run("missing-calllog", "before")
    loops = verdict(result, "loops-terminate")
    backoff = verdict(result, "backoff-schedule")
    assert loops.valid is False and "job-rerun-unbounded" in loops.anomalies
    assert backoff.valid is False and {"retry-too-soon", "too-many-attempts"} <= set(backoff.anomalies)
    assert backoff.anomalies["retry-too-soon"][0].witnesses[0]["delay"] == 0.0


def test_before_variant_players_poll_past_their_bound_while_no_worker_runs():
    v = verdict(run("worker-outage", "before"), "loops-terminate")
    assert v.valid is False and {"unbounded-session", "looping-session"} & set(v.anomalies)
    assert verdict(run("worker-outage", "fixed"), "loops-terminate").valid is True


def test_seed_backoff_is_computed_but_not_applied():
    result = run("missing-calllog", "fixed", faults=["backoff_not_applied"])
    v = verdict(result, "backoff-schedule")
    soon = v.anomalies["retry-too-soon"][0]
    assert v.valid is False and soon.facts["expected_s"] == 60 and soon.facts["gap_s"] < 60
    assert [w["kind"] for w in soon.witnesses] == ["job.retry", "job.start"]
    assert verdict(result, "nothing-lost").valid is False  # Retry(max=3) gives up before the CallLog lands


def test_fixed_backoff_measures_the_configured_schedule():
    v = verdict(run("missing-calllog", "fixed", calllog__late_fraction=1.0, calllog__late_delay_s="[4000, 5000]",
                    duration_s=600), "backoff-schedule")
    assert v.valid is True and v.figure["jobs_with_full_schedule"] > 0
    assert v.figure["measured_full_schedule_total_s"] == pytest.approx(1860, rel=0.02)


def test_a_recording_whose_calllog_took_every_retry_survives_a_fetch_fault_on_its_own_budget():
    # seed 1: CA000547's CallLog lands after its 5th CallLog retry, then its first fetch fails
    fixed = run("missing-calllog", "fixed", seed=1)
    assert verdict(fixed, "nothing-lost").valid is True
    retries = [(e["phase"], e["attempt"]) for e in fixed.history if e["kind"] == "job.retry" and e["call_sid"] == "CA000547"]
    calllog = [("calllog", n) for n in range(1, fixed.policy.max_recording_retries + 1)]
    assert retries[:len(calllog)] == calllog and retries[len(calllog):][:1] == [("fetch", 1)]
    assert verdict(fixed, "backoff-schedule").valid is True and verdict(fixed, "loops-terminate").valid is True
    starts = [e["attempt"] for e in fixed.history if e["kind"] == "job.start" and e["call_sid"] == "CA000547"]
    assert starts == list(range(1, len(retries) + 2))  # every run of the job numbered, fetch retries too
    shared = run("missing-calllog", "fixed", faults=["shared_retry_budget"], seed=1)
    (lost,) = verdict(shared, "nothing-lost").anomalies["recording-not-downloaded"]
    assert lost.facts["call_sid"] == "CA000547" and lost.witnesses


def test_seed_fetch_retries_rerun_at_once_and_the_checker_names_the_fetch_phase():
    result = run("steady", "fixed", faults=["backoff_not_applied"], twilio__fault_rate=0.3, duration_s=900)
    v = verdict(result, "backoff-schedule")
    soon = v.anomalies["retry-too-soon"]
    assert v.valid is False and {a.facts["phase"] for a in soon} == {"fetch"}
    assert soon[0].witnesses[0]["kind"] == "job.retry" and soon[0].witnesses[0]["phase"] == "fetch"
    assert soon[0].facts["gap_s"] < soon[0].facts["expected_s"]


def test_fail_fast_answers_500_when_no_worker_processes_the_queue():
    fixed = run("worker-outage")
    trips = [e for e in fixed.history if e["kind"] == "fail_fast.trip"]
    assert trips and verdict(fixed, "fail-fast").valid is True
    assert fixed.metrics["session_outcomes"].get("worker_offline", 0) > 0


def test_a_stuck_run_found_as_fail_fast_trips_is_left_for_the_workers_not_lost():
    """While every worker is stopped (no sweep runs: it lives in the workers), a poll finds a
    run stuck just as fail-fast trips. fixed (policy.fails_stuck_run) leaves the run queued and
    the returning workers fetch it; stuck_failed_before_fail_fast (seed 002's order) fails it
    with no job to replace it, and nothing-lost names the recording."""
    fixed = run("worker-outage", seed=5)
    assert verdict(fixed, "nothing-lost").valid is True
    broken = run("worker-outage", faults=["stuck_failed_before_fail_fast"], seed=5)
    v = verdict(broken, "nothing-lost")
    assert v.valid is False
    lost = {a.facts["call_sid"] for a in v.anomalies["recording-not-downloaded"]}
    assert lost and lost <= _stuck_as_fail_fast_trips(broken.history)
    assert not _stuck_as_fail_fast_trips(fixed.history)


def _stuck_as_fail_fast_trips(history):
    """Calls whose run was marked stuck by the poll that tripped fail-fast (same call, same t)."""
    trips = {(e["t"], e["call_sid"]) for e in history if e["kind"] == "fail_fast.trip"}
    return {e["call_sid"] for e in history if e["kind"] == "job.stuck" and (e["t"], e["call_sid"]) in trips}


def test_slot_contention_makes_the_seed_worker_sleep():
    v = verdict(run("steady", "fixed", faults=["slot_defer_sleeps"]), "worker-never-blocks")
    assert v.valid is False and v.anomalies["worker-slept"][0].witnesses[0]["reason"] == "slot"



def test_with_the_slot_taken_in_the_api_the_worker_never_waits_for_one_and_a_click_can_find_none_free():
    """`semaphore_in_api` (before), as the app: a click's download_only enqueue takes the slot
    (the worker takes none, so it never sleeps for one; `blocking_slot_loop` is unreachable) and
    fails when the business's slots are held by jobs that have not run yet. `blocking_slot_loop`
    alone: the worker waits in 1 s sleeps and worker-never-blocks names them."""
    api = run("retry-storm", faults=["semaphore_in_api"])
    assert not [e for e in api.history if e["kind"] in ("slot.acquire", "worker.sleep")]
    assert [e for e in api.history if e["kind"] == "enqueue.result" and e["reason"] == "error"]
    assert verdict(api, "worker-never-blocks").valid is True
    blocking = verdict(run("retry-storm", faults=["blocking_slot_loop"]), "worker-never-blocks")
    assert blocking.valid is False
    assert {w["kind"] for a in blocking.anomalies.values() for x in a for w in x.witnesses} == {"worker.sleep"}

def test_json_recording_urls_answer_200_without_audio():
    v = verdict(run("steady", "fixed", faults=["json_recording_url"], duration_s=900), "status-semantics")
    assert v.valid is False and "200-without-audio" in v.anomalies


def test_json_replace_everywhere_breaks_urls_with_json_elsewhere():
    result = run("steady", "fixed", faults=["json_replace_everywhere"], recordings__odd_url_fraction=0.5,
                 duration_s=900, drain_s=3000)
    assert verdict(result, "nothing-lost").valid is False
    assert verdict(run("steady", "fixed", recordings__odd_url_fraction=0.5, duration_s=900), "nothing-lost").valid is True


def test_seed_bulk_delete_races_into_two_jobs_and_an_unowned_release():
    result = run("delete-storm", "seed")
    assert verdict(result, "idempotent-delete").valid is False
    lock = verdict(result, "lock-exclusive")
    assert lock.valid is False and "concurrent-delete-jobs" in lock.anomalies
    fixed = run("delete-storm", "fixed")
    assert all(verdict(fixed, n).valid is True for n in ("idempotent-delete", "lock-exclusive", "nothing-lost"))


def test_before_bulk_delete_creates_a_job_per_click():
    v = verdict(run("delete-storm", "before"), "idempotent-delete")
    assert v.valid is False and v.anomalies["second-job-while-active"][0].witnesses[1]["existing"] is False


def test_scenario_parameters_are_validated_before_the_model_runs():
    with pytest.raises(ValueError, match="workers.count"):
        simulate(parse_scenario({"workers": {"count": 0}}))


def test_recording_urls_normalised_per_shape_match_the_policy_per_url():
    from loopfix.reference_app.policy import make_policy, normalise_recording_url
    from loopfix.sim.model import ODD_RECORDING_URL, RECORDING_URL

    for variant in ("before", "seed", "fixed"):
        p = make_policy(variant)
        for shape in (RECORDING_URL, ODD_RECORDING_URL):
            assert normalise_recording_url(shape, p).format(n="000042") == \
                normalise_recording_url(shape.format(n="000042"), p)


# --------------------------------------------------------------------------- readings shared with the app


def test_retry_as_int_fails_only_the_enqueue_api_so_webhook_jobs_still_run():
    """policy.enqueue_retry_is_int, as the app reads it: the enqueue API errors (hidden as a
    200 'duplicate' in before) while webhook and play enqueues go through."""
    for variant, api_status in (("fixed", 500), ("before", 200)):
        faults = ["retry_as_int"] if variant == "fixed" else []
        h = run("retry-storm", variant, faults=faults, duration_s=600).history
        vias = {e["via"] for e in h if e["kind"] == "job.enqueue"}
        refused = [e for e in h if e["kind"] == "enqueue.result" and e["reason"] in ("error", "duplicate")
                   and e["status"] == api_status]  # only the enqueue API answers 200 or 500 to a failure
        assert refused and "enqueue_api" not in vias and {"webhook", "playback"} <= vias
        assert any(e["kind"] == "job.start" for e in h)


def test_without_playback_dedup_repeated_clicks_each_enqueue():
    """policy.playback_dedups, as the app reads it: enqueue_every_click skips the playback mark
    and the enqueue dedup, so one storm gives one job per click; fixed gives one job."""
    broken = verdict(run("retry-storm", "fixed", faults=["enqueue_every_click"]), "one-job-per-storm")
    assert broken.valid is False and broken.anomalies["storm-duplicate-enqueue"][0].facts["jobs"] >= 2
    assert verdict(run("retry-storm", "fixed"), "one-job-per-storm").valid is True


def test_a_long_backlog_behind_busy_workers_is_waiting_not_stuck():
    """One worker, three times the work it can do: jobs wait far past the 300 s stuck timeout.
    fixed: none is declared stuck and all are downloaded; stuck_by_age (seed) re-queues them
    until their retry budget is spent and recordings are lost."""
    backlog = dict(workers__count=1, arrivals__calls_per_hour=2000, duration_s=1800, drain_s=7200,
                   recordings__archive_calls=0, clients__archive_plays_per_hour=0)
    fixed = run("steady", **backlog)
    assert not [e for e in fixed.history if e["kind"] == "job.stuck"]
    assert verdict(fixed, "nothing-lost").valid is True
    lost = verdict(run("steady", faults=["stuck_by_age"], **backlog), "nothing-lost")
    assert lost.valid is False and lost.anomalies["recording-not-downloaded"]


# --------------------------------------------------------------------------- bulk delete, as the app's job runs it


def _deletes_by_job(history):
    order = {}
    for e in history:
        if e["kind"] == "lead.delete":
            order.setdefault(e["job_id"], []).append(e["lead_id"])
    return order


def test_a_failed_delete_batch_is_retried_before_any_later_batch():
    """The app's batch is one transaction: a failure rolls it back and the cursor stays, so
    leads are deleted in request order; ten failures in a row fail the job."""
    result = run("delete-storm", bulk_delete__batch_failure_rate=0.3)
    deleted = _deletes_by_job(result.history)
    assert deleted and all(ids == sorted(ids) for ids in deleted.values())
    assert verdict(result, "nothing-lost").valid is True


def test_a_crash_kills_the_running_delete_job_and_the_user_resumes_it():
    """A crash loses the running delete job mid-batch; its lock stays (TTL), and once it has
    no heartbeat the user's resume starts a new run that keeps the lock and finishes the job:
    every lead deleted once, never two runs at once."""
    base = load_scenario("delete-storm")
    first = next(e for e in simulate(base).history if e["kind"] == "lead_job.start")
    data = base.to_dict()
    data["outages"] = [{"target": "workers", "how": "crash", "at_s": first["t"] + 30, "duration_s": 120}]
    result = simulate(parse_scenario(data, name="delete-crash"))
    h = result.history
    crash = next(e["t"] for e in h if e["kind"] == "outage.start")
    job = [e for e in h if e.get("job_id") == first["job_id"] and e["kind"] in ("lead_job.start", "lead_job.pause", "lead_job.end")]
    before = [e["kind"] for e in job if e["t"] < crash]
    after = [e["kind"] for e in job if e["t"] > crash]
    assert before[-1] == "lead_job.start" and after[0] == "lead_job.start"  # killed, then resumed
    assert all(verdict(result, n).valid is True for n in ("nothing-lost", "lock-exclusive"))


def test_no_retry_is_promoted_while_every_worker_is_down_and_the_due_ones_go_at_the_end():
    """The scheduler is the workers' ticker (reference_app/worker.py): while every worker is
    stopped nothing is promoted; retries that fell due in the window are promoted when it ends,
    and the backoff checker does not call them late for it."""
    s = with_settings(load_scenario("worker-outage"), assignments={
        "calllog.late_fraction": "0.5", "calllog.late_delay_s": "[30, 3000]"})
    result = simulate(s)
    (start,) = [e["t"] for e in result.history if e["kind"] == "outage.start"]
    (end,) = [e["t"] for e in result.history if e["kind"] == "outage.end"]
    promoted = [e["t"] for e in result.history if e["kind"] == "job.enqueue" and e["via"] == "retry"]
    assert not [t for t in promoted if start < t < end]
    assert end in promoted  # the retries due inside the window, at its end
    assert inv.check_backoff_schedule(result.history, result.policy).valid is True


def test_a_job_that_finds_its_recording_in_flight_elsewhere_holds_its_slot_until_its_job_ends():
    """retry-storm on seed: concurrent clicks give several jobs for one recording, so a job that
    took a slot can find the recording in flight in another job's hands. As the app's
    _download_with_slot, it defers holding the slot — the seed's sleep included — and the slot
    is released last, after the job's end (the `finally`), on every path through the slot."""
    result = run("retry-storm", "seed")
    held: dict[str, list[str]] = {}  # job id -> what it did since it took a slot
    in_flight_deferrals = 0
    for e in result.history:
        job = e.get("job_id")
        if e["kind"] == "slot.acquire" and e["ok"]:
            held[job] = []
        elif job in held and e["kind"] == "slot.release":
            done = held.pop(job)
            assert done and done[-1].startswith("job.end"), f"job {job} released its slot before its end: {done}"
            in_flight_deferrals += done == ["worker.sleep", "job.end:deferred"]
        elif job in held and e["kind"] in ("worker.sleep", "job.end"):
            held[job].append(e["kind"] if e["kind"] == "worker.sleep" else f"job.end:{e['outcome']}")
    assert in_flight_deferrals


def test_without_the_orphan_sweep_a_callback_while_redis_is_gone_gets_503_and_no_enqueue_result():
    """redis-restart on seed (`orphan_runs_not_swept`: nothing falls back on the database): the
    app's dedup claim cannot reach Redis, so its error handler answers 503 redis_unavailable
    before any run or enqueue.result exists. The model's callbacks in the window record none,
    and their recordings are the ones nothing-lost names."""
    result = run("redis-restart", "seed")
    (start,) = [e["t"] for e in result.history if e["kind"] == "outage.start" and e["target"] == "redis"]
    (end,) = [e["t"] for e in result.history if e["kind"] == "outage.end" and e["target"] == "redis"]
    during = {e["call_sid"] for e in result.history
              if e["kind"] == "recording.created" and e["has_url"] and start <= e["t"] < end}
    results = [e for e in result.history if e["kind"] == "enqueue.result" and start <= e["t"] < end]
    assert during and not [e for e in results if e["call_sid"] in during]
    lost = {a.facts["call_sid"] for a in verdict(result, "nothing-lost").anomalies["recording-not-downloaded"]}
    assert during <= lost
