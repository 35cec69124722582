"""reference_app/policy/slots.py: the download semaphore's defer schedule and in-flight TTL (004)."""
from __future__ import annotations

from loopfix.reference_app.policy import inflight_ttl, make_policy, slot_defer_delay


def test_a_job_without_a_slot_defers_2_5_10_20_40_then_40_again():
    p = make_policy("fixed")
    assert [slot_defer_delay(n, p) for n in range(7)] == [2, 5, 10, 20, 40, 40, 40]


def test_the_defer_schedule_is_the_policys():
    p = make_policy("fixed", overrides={"slot_defer_s": "1,3"})
    assert [slot_defer_delay(n, p) for n in range(3)] == [1, 3, 3]


def test_the_inflight_ttl_outlasts_slow_downloads_except_with_short_inflight_ttl():
    assert inflight_ttl(make_policy("fixed")) == 900
    assert inflight_ttl(make_policy("fixed", "short_inflight_ttl")) == 120
