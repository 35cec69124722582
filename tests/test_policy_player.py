"""reference_app/policy/player.py: the browser player retries 202 only, at most 12 times (002)."""
from __future__ import annotations

import pytest

from loopfix.reference_app.policy import make_policy, player_delay, player_outcome, player_should_retry

FIXED = make_policy("fixed")
UNBOUNDED = make_policy("fixed", "player_unbounded")


def test_the_player_retries_202_twelve_times_then_gives_up():
    assert player_should_retry(202, 11, FIXED) is True
    assert player_should_retry(202, 12, FIXED) is False


def test_the_unbounded_player_retries_202_past_any_limit():
    assert player_should_retry(202, 12, UNBOUNDED) is True
    assert player_should_retry(202, 10**6, make_policy("before")) is True


@pytest.mark.parametrize("status", [500, 503, 429])
def test_the_player_stops_on_errors_but_the_unbounded_one_retries_them(status):
    assert player_should_retry(status, 0, FIXED) is False
    assert player_should_retry(status, 0, UNBOUNDED) is True


@pytest.mark.parametrize("status", [200, 206, 404])
def test_no_player_retries_a_terminal_answer(status):
    assert player_should_retry(status, 0, FIXED) is False
    assert player_should_retry(status, 0, UNBOUNDED) is False


def test_the_wait_doubles_from_one_second_up_to_the_cap():
    assert [player_delay(n, None, FIXED) for n in (0, 1, 2, 4, 5, 50)] == [1, 2, 4, 16, 20, 20]


def test_the_wait_is_never_shorter_than_the_servers_retry_after():
    assert player_delay(0, 5.0, FIXED) == 5.0 and player_delay(4, 5.0, FIXED) == 16


@pytest.mark.parametrize("status,outcome", [(200, "played"), (206, "played"), (404, "not_found"),
                                            (500, "worker_offline"), (202, "gave_up"), (503, "gave_up")])
def test_a_session_ends_with_the_outcome_of_its_last_status(status, outcome):
    assert player_outcome(status) == outcome
