"""The backoff-schedule checker on tiny literal histories: retries on schedule hold; a retry too
soon, a re-run with no retry event, a requeue much later than its delay, an attempt past the
budget break it — per budget (CallLog, fetch) — with its witnesses."""
from __future__ import annotations

import pytest

from loopfix.harness import invariants as inv
from loopfix.reference_app.policy import backoff_delay
from tests.invariants_support import P, ev, only


# --------------------------------------------------------------------------- backoff-schedule


def retry_cycle(job, attempt, t, delay, start_after, requeue=True):
    h = [ev("job.retry", t, job_id=job, call_sid="CA1", attempt=attempt, delay=delay),
         ev("job.end", t, job_id=job, call_sid="CA1", outcome="retry")]
    if requeue:
        h.append(ev("job.enqueue", t + delay + 0.5, job_id=job, call_sid="CA1", job_type="full", via="retry"))
    h.append(ev("job.start", t + start_after, job_id=job, call_sid="CA1", attempt=attempt + 1, worker="w"))
    return h


def full_schedule(job="1", wait=0.7):
    h, t = [ev("job.start", 0.0, job_id=job, call_sid="CA1", attempt=1, worker="w")], 0.0
    for n in range(1, 6):
        d = backoff_delay(n, P)
        h += retry_cycle(job, n, t + 1, d, d + wait)
        t += 1 + d + wait
    h.append(ev("job.end", t + 1, job_id=job, call_sid="CA1", outcome="failed"))
    return h


def test_retries_on_schedule_hold_and_the_total_is_measured():
    v = inv.check_backoff_schedule(full_schedule(), P)
    assert v.valid is True, inv.render_verdict(v)
    assert v.figure["configured_total_s"] == 1860
    assert abs(v.figure["measured_full_schedule_total_s"] - 1860 - 5 * 0.7) < 1e-6
    assert v.figure["rel_tol"] == 0.02 and v.figure["abs_tol_s"] == 1.0
    assert v.figure["claim_52_min"]["six_retries_total_s"] == 3060


def test_retry_with_zero_delay_that_reruns_at_once_breaks_it():
    h = [ev("job.start", 0, job_id="1", call_sid="CA1", attempt=1, worker="w")] + retry_cycle("1", 1, 1.0, 0.0, 0.5,
                                                                                              requeue=False)
    v = inv.check_backoff_schedule(h, P)
    assert set(v.anomalies) == {"delay-not-policy", "retry-too-soon"}
    (soon,) = v.anomalies["retry-too-soon"]
    assert soon.facts["expected_s"] == 60 and [w["kind"] for w in soon.witnesses] == ["job.retry", "job.start"]


def test_rerun_after_a_failed_attempt_with_no_retry_event_breaks_it():
    h = [ev("job.start", 0, job_id="1", call_sid="CA1", attempt=1, worker="w"),
         ev("job.end", 1, job_id="1", call_sid="CA1", outcome="failed"),
         ev("job.start", 1.2, job_id="1", call_sid="CA1", attempt=2, worker="w")]
    (a,) = only(inv.check_backoff_schedule(h, P), "rerun-without-backoff")
    assert [w["kind"] for w in a.witnesses] == ["job.end", "job.start"]


def test_requeue_much_later_than_the_delay_breaks_it():
    h = retry_cycle("1", 1, 0.0, 60.0, 200.0, requeue=False)
    h.insert(2, ev("job.enqueue", 150.0, job_id="1", call_sid="CA1", job_type="full", via="retry"))
    only(inv.check_backoff_schedule(h, P), "retry-too-late")


@pytest.mark.parametrize("down, late", [(0, False), (3, True)])
def test_a_retry_due_while_every_worker_is_down_is_late_only_past_the_outage(down, late):
    """Due at 60 s inside a 50-400 s outage, re-queued at 401 s: with every worker down
    (workers 0) nothing could promote it sooner; with 3 of them down the rest could."""
    h = retry_cycle("1", 1, 0.0, 60.0, 410.0, requeue=False)
    h.insert(2, ev("job.enqueue", 401.0, job_id="1", call_sid="CA1", job_type="full", via="retry"))
    h += [ev("outage.start", 50.0, target="workers", how="crash", workers=down),
          ev("outage.end", 400.0, target="workers", how="crash", workers=down)]
    h.sort(key=lambda e: e["t"])
    v = inv.check_backoff_schedule(h, P)
    if late:
        (a,) = only(v, "retry-too-late")
        assert [w["kind"] for w in a.witnesses] == ["job.retry", "job.enqueue"]
    else:
        assert v.valid is True, inv.render_verdict(v)


def test_queue_wait_after_a_timely_requeue_is_not_lateness():
    assert inv.check_backoff_schedule(retry_cycle("1", 1, 0.0, 60.0, 400.0), P).valid is True


def test_attempt_past_the_maximum_breaks_it():
    h = retry_cycle("1", 6, 0.0, 1200.0, 1200.5)
    only(inv.check_backoff_schedule(h, P), "too-many-attempts")


def retry_cycle_in(phase, job, attempt, t, delay, start_after):
    return [{**e, "phase": phase} if e["kind"] == "job.retry" else e
            for e in retry_cycle(job, attempt, t, delay, start_after)]


def calllog_then_fetch(fetch_retries, fetch_gap=lambda d: d + 0.7, first_fetch_attempt=1):
    """A job that waits out the whole CallLog budget, then retries `fetch_retries` failed fetches."""
    h = full_schedule()[:-1]  # without its final 'failed'
    t = h[-1]["t"]
    for n in range(first_fetch_attempt, first_fetch_attempt + fetch_retries):
        d = backoff_delay(n, P)
        h += retry_cycle_in("fetch", "1", n, t + 1, d, fetch_gap(d))
        t = h[-1]["t"]
    return h


def test_fetch_retries_after_the_whole_calllog_schedule_hold_on_their_own_budget():
    v = inv.check_backoff_schedule(calllog_then_fetch(P.max_fetch_retries), P)
    assert v.valid is True, inv.render_verdict(v)
    assert v.figure["gaps_checked_by_phase"] == {"calllog": P.max_recording_retries, "fetch": P.max_fetch_retries}
    assert v.figure["jobs_with_full_schedule_by_phase"] == {"calllog": 1, "fetch": 1}
    assert v.figure["measured_full_schedule_total_s_by_phase"]["fetch"] == pytest.approx(
        sum(backoff_delay(n, P) for n in range(1, P.max_fetch_retries + 1)) + 0.7 * P.max_fetch_retries)


def test_a_fetch_retry_too_soon_breaks_it_with_the_fetch_phase_in_its_witness():
    h = calllog_then_fetch(2, fetch_gap=lambda d: 0.5)
    v = inv.check_backoff_schedule(h, P)
    soon = only(v, "retry-too-soon")
    assert [a.facts["phase"] for a in soon] == ["fetch", "fetch"]
    assert [a.facts["expected_s"] for a in soon] == [backoff_delay(1, P), backoff_delay(2, P)]
    assert soon[0].witnesses[0]["kind"] == "job.retry" and soon[0].witnesses[0]["phase"] == "fetch"
    assert "fetch retry 1" in inv.render_anomaly(soon[0])


def test_fetch_retries_counted_on_the_calllog_budget_break_it_past_that_budget():
    # the seeds' one retry_count numbers a fetch retry after five CallLog retries as attempt 6
    h = calllog_then_fetch(1, first_fetch_attempt=P.max_recording_retries + 1)
    (a,) = only(inv.check_backoff_schedule(h, P), "too-many-attempts")
    assert a.facts["phase"] == "fetch" and a.facts["max"] == P.max_fetch_retries


def test_tolerance_is_a_parameter():
    h = retry_cycle("1", 1, 0.0, 60.0, 57.0)  # 3 s early: outside 2 % + 1 s, inside 5 s
    assert inv.check_backoff_schedule(h, P).valid is False
    assert inv.check_backoff_schedule(h, P, abs_tol_s=5.0).valid is True


def test_anomalies_are_in_the_order_of_each_jobs_first_start_retry_or_failed_run_not_of_its_other_ends():
    # job A's run that ended done (its start before the history began) gives A no place: A's
    # too-soon retry is listed after B's, whose first start came before A's
    h = [ev("job.end", 0.0, job_id="A", call_sid="CA1", outcome="done"),
         ev("job.start", 1.0, job_id="B", call_sid="CA2", attempt=1, worker="w"),
         ev("job.start", 2.0, job_id="A", call_sid="CA1", attempt=1, worker="w")]
    h += retry_cycle("A", 1, 3.0, 60.0, 1.0, requeue=False)
    h += [dict(e, call_sid="CA2") for e in retry_cycle("B", 1, 4.0, 60.0, 1.0, requeue=False)]
    soon = only(inv.check_backoff_schedule(h, P), "retry-too-soon")
    assert [a.facts["job_id"] for a in soon] == ["B", "A"]
