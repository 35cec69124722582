"""reference_app/policy/backoff.py: the retry decision under the faults that change it (000, 001);
the schedule and the two budgets are in test_policy.py."""
from __future__ import annotations

from loopfix.reference_app.policy import make_policy, max_recording_runs, recording_retry_decision, run_attempt


def test_fixed_retries_after_the_backoff_and_fails_once_the_budget_is_spent():
    p = make_policy("fixed")
    d = recording_retry_decision(0, p)
    assert (d.action, d.attempt, d.delay_s) == ("retry", 1, 60)
    assert recording_retry_decision(p.max_recording_retries, p).action == "fail"


def test_backoff_not_applied_computes_the_delay_but_raises():
    d = recording_retry_decision(0, make_policy("fixed", "backoff_not_applied"))
    assert (d.action, d.attempt, d.delay_s) == ("raise", 1, 60)


def test_infinite_immediate_retry_reruns_at_once_past_any_budget():
    d = recording_retry_decision(10**6, make_policy("before"))
    assert (d.action, d.attempt, d.delay_s) == ("retry", 10**6 + 1, 0.0)


def test_a_run_counts_every_retry_of_both_budgets():
    assert run_attempt(0, 0) == 1 and run_attempt(2, 3) == 6


def test_the_run_bound_has_both_budgets_on_fixed_and_one_with_the_seeds_shared_budget():
    assert max_recording_runs(make_policy("fixed")) == 11
    assert max_recording_runs(make_policy("fixed", "shared_retry_budget")) == 6
