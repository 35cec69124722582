"""reference_app/policy/failfast.py: the fourth attempt in the window trips fail-fast (002)."""
from __future__ import annotations

from loopfix.reference_app.policy import fail_fast_tripped, make_policy


def test_the_fourth_attempt_trips_and_the_third_does_not():
    fixed = make_policy("fixed")
    assert fail_fast_tripped(3, fixed) is False
    assert fail_fast_tripped(4, fixed) is True


def test_no_fail_fast_never_trips_however_many_attempts():
    assert fail_fast_tripped(4, make_policy("fixed", "no_fail_fast")) is False
    assert fail_fast_tripped(10**6, make_policy("before")) is False


def test_the_limit_is_the_policys():
    one = make_policy("fixed", overrides={"fail_fast_max_attempts": 1})
    assert (fail_fast_tripped(1, one), fail_fast_tripped(2, one)) == (False, True)
