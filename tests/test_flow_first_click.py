"""Issue 18: the first click (the poll that creates the call's run, its dedup claim and its RQ
job) costs at most 3 Redis round trips — the gate script, the dedup claim, and RQ's enqueue with
the queued-set script in one pipeline — counted by the app's own Redis connections (a count,
not a timing); the same count sees more when the gate is one call per primitive."""
from __future__ import annotations

from loopfix.benchmarks import app_bench


def test_a_first_click_costs_at_most_three_round_trips(redis_url, tmp_path):
    counts = app_bench.first_click_round_trips(redis_url, tmp_path, clicks=5)
    assert max(counts) <= 3, counts


def test_the_count_sees_the_gates_separate_calls(redis_url, tmp_path):
    counts = app_bench.first_click_round_trips(redis_url, tmp_path, app_bench.FIRST_CLICK_UNFOLDED, clicks=5)
    assert min(counts) > 3, counts
