"""The Coordination contract, every case against both adapters (`redis`: the app's Lua-backed
Coordinator on a real Redis; `model`: the model's in-memory adapter), with the clock moved by
the test: the same operations at the same times give the same answers.

Fail-fast counts in a sliding window, (t - window, t], in both (the issue's attempt sequence
below); the seed's INCR-then-EXPIRE fixed window stays reachable through its fault.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopfix.reference_app.flows.coordination import Coordination, PlaybackGate
from loopfix.reference_app.policy import PlaybackGateAsk, fail_fast_tripped, make_policy

from adapters import build

OP = "delete_leads_bulk"


def at_times(subject, times, action):
    """Run `action()` at each of `times` (policy seconds from now); the answers in order."""
    answers, now = [], 0.0
    for t in times:
        subject.advance(t - now)
        now = t
        answers.append(action())
    return answers


def test_both_adapters_implement_the_protocol(make):
    assert isinstance(make().coord, Coordination) is True


# ----------------------------------------------------------------------------- fail-fast (002)

ISSUE_ATTEMPTS = (0, 500, 590, 610, 620)


def test_fail_fast_counts_a_sliding_window_and_trips_on_the_fifth_attempt_of_the_issue(make):
    subject = make()
    counts = at_times(subject, ISSUE_ATTEMPTS, lambda: subject.coord.count_attempt("CA1"))
    assert counts == [1, 2, 3, 3, 4]  # at 620 the window (20, 620] holds 500, 590, 610, 620
    p = make_policy("fixed")
    assert [fail_fast_tripped(n, p) for n in counts] == [False, False, False, False, True]


def test_seed_fail_fast_counts_a_fixed_window_from_the_first_attempt(make):
    subject = make("fixed", "fail_fast_incr_then_expire")
    counts = at_times(subject, ISSUE_ATTEMPTS, lambda: subject.coord.count_attempt("CA1"))
    assert counts == [1, 2, 3, 1, 2]  # the window opened at 0 closed at 600: never trips


def test_an_attempt_exactly_one_window_old_no_longer_counts(make):
    subject = make()
    assert at_times(subject, (0, 599, 600), lambda: subject.coord.count_attempt("CA1")) == [1, 2, 2]


def test_fail_fast_counts_each_call_on_its_own(make):
    coord = make().coord
    assert [coord.count_attempt("CA1"), coord.count_attempt("CA1"), coord.count_attempt("CA2")] == [1, 2, 1]


# ----------------------------------------------------------------------------- the poll's gate


def test_a_gate_with_nothing_to_ask_answers_without_touching_state(make):
    coord = make().coord
    assert coord.playback_gate(1, "CA1", PlaybackGateAsk(False, True, False)) == PlaybackGate(None, None, 0)
    assert coord.playback_marked(1, "CA1") is False


def test_the_gate_takes_the_mark_and_counts_only_when_its_liveness_is_gated(make):
    subject = make()
    coord = subject.coord
    dead_gated = PlaybackGateAsk(True, False, True)
    assert coord.playback_gate(1, "CA1", dead_gated) == PlaybackGate(False, True, 1)
    assert coord.playback_gate(1, "CA1", dead_gated) == PlaybackGate(False, False, 0)  # the mark is held
    subject.advance(15)
    assert coord.playback_gate(1, "CA1", dead_gated) == PlaybackGate(False, True, 2)
    coord.worker_beat()
    assert coord.playback_gate(1, "CA1", dead_gated) == PlaybackGate(True, None, 0)


def test_a_gate_that_does_not_read_liveness_still_gates(make):
    coord = make().coord
    assert coord.playback_gate(1, "CA1", PlaybackGateAsk(False, True, True)) == PlaybackGate(None, True, 1)


# ----------------------------------------------------------------------------- playback mark (003)


@pytest.mark.parametrize("faults", ["", "playback_check_then_mark"])
def test_a_second_click_within_the_mark_ttl_is_not_marked(make, faults):
    subject = make("fixed", faults)
    marks = at_times(subject, (0, 14, 15), lambda: subject.coord.mark_playback(1, "CA1"))
    assert marks == [True, False, True]


def test_every_click_is_marked_when_marks_are_off(make):
    coord = make("before").coord
    assert [coord.mark_playback(1, "CA1"), coord.mark_playback(1, "CA1")] == [True, True]


# ----------------------------------------------------------------------------- enqueue dedup (001, 004)


def test_a_dedup_claim_blocks_a_second_claim_until_its_ttl(make):
    subject = make()
    coord = subject.coord
    assert coord.claim_dedup("CA1", "full") is not None
    subject.advance(119)
    assert coord.claim_dedup("CA1", "full") is None
    assert coord.claim_dedup("CA1", "download_only") is not None
    subject.advance(1)
    assert coord.claim_dedup("CA1", "full") is not None


def test_only_the_claims_owner_releases_it(make):
    coord = make().coord
    token = coord.claim_dedup("CA1", "full")
    assert coord.release_dedup("CA1", "full", "not-the-owner") is False
    assert coord.dedup_held("CA1", "full") is True
    assert coord.release_dedup("CA1", "full", token) is True
    assert coord.dedup_held("CA1", "full") is False
    assert coord.release_dedup("CA1", "full", token) is False


def test_set_dedup_holds_for_the_ttl_and_clear_forgets_it(make):
    subject = make()
    coord = subject.coord
    coord.set_dedup("CA1", "full")
    assert coord.claim_dedup("CA1", "full") is None
    coord.clear_dedup("CA1", "full")
    assert coord.dedup_held("CA1", "full") is False
    coord.set_dedup("CA1", "full")
    subject.advance(120)
    assert coord.dedup_held("CA1", "full") is False


# ----------------------------------------------------------------------------- slots and claims (004)


def test_a_business_has_its_slots_and_one_owner_takes_one_at_most(make):
    coord = make().coord
    assert [coord.acquire_slot(1, o) for o in ("a", "a", "b", "c")] == [True, True, True, False]
    assert coord.acquire_slot(2, "c") is True
    assert coord.release_slot(1, "c") is False
    assert coord.release_slot(1, "a") is True
    assert coord.release_slot(1, "a") is False
    assert coord.acquire_slot(1, "c") is True


def test_a_slot_lapses_after_the_inflight_ttl_unless_refreshed(make):
    subject = make()
    coord = subject.coord
    coord.acquire_slot(1, "a")
    coord.acquire_slot(1, "b")
    subject.advance(800)
    assert coord.refresh_slot(1, "a") is True
    subject.advance(99)
    assert coord.slots_in_use(1) == 2
    subject.advance(1)  # b's slot lapsed at 900; a's runs to 1700
    assert coord.slots_in_use(1) == 1
    assert coord.refresh_slot(1, "b") is False
    assert coord.acquire_slot(1, "c") is True
    assert coord.acquire_slot(1, "d") is False


def test_a_recording_in_flight_is_claimed_by_one_owner_until_released_or_lapsed(make):
    subject = make()
    coord = subject.coord
    assert coord.claim_inflight("RE1", "a") is True
    assert coord.claim_inflight("RE1", "a") is True
    assert coord.claim_inflight("RE1", "b") is False
    assert coord.release_inflight("RE1", "b") is False
    assert coord.release_inflight("RE1", "a") is True
    assert coord.claim_inflight("RE1", "b") is True
    subject.advance(899)
    assert coord.refresh_inflight("RE1", "a") is False
    assert coord.refresh_inflight("RE1", "b") is True
    subject.advance(900)
    assert coord.claim_inflight("RE1", "a") is True


# ----------------------------------------------------------------------------- owner-token locks (003)


def test_a_lock_is_released_only_by_its_owner(make):
    coord = make().coord
    assert coord.acquire_lock(1, OP, "job1") is True
    assert coord.acquire_lock(1, OP, "job2") is False
    assert coord.release_lock(1, OP, "job2") == (False, "job1")
    assert coord.lock_holder(1, OP) == "job1"
    assert coord.release_lock(1, OP, "job1") == (True, "job1")
    assert coord.lock_holder(1, OP) is None
    assert coord.release_lock(1, OP, "job1") == (False, None)


def test_a_lock_lapses_after_its_ttl_unless_its_owner_refreshes_it(make):
    subject = make()
    coord = subject.coord
    coord.acquire_lock(1, OP, "job1")  # delete_leads_bulk: 3600 s
    subject.advance(3500)
    assert coord.refresh_lock(1, OP, "job2") is False
    assert coord.refresh_lock(1, OP, "job1") is True
    subject.advance(3599)
    assert coord.lock_holder(1, OP) == "job1"
    subject.advance(1)
    assert coord.lock_holder(1, OP) is None
    assert coord.refresh_lock(1, OP, "job1") is False
    assert coord.acquire_lock(1, OP, "job2", ttl_s=10) is True
    subject.advance(10)
    assert coord.acquire_lock(1, OP, "job3") is True


def test_seed_release_frees_another_owners_lock(make):
    coord = make("seed").coord
    coord.acquire_lock(1, OP, "job2")
    assert coord.release_lock(1, OP, "job1") == (True, "job2")
    assert coord.lock_holder(1, OP) is None


def test_seed_refresh_extends_another_owners_lock(make):
    subject = make("seed")
    coord = subject.coord
    coord.acquire_lock(1, OP, "job2", ttl_s=100)
    subject.advance(50)
    assert coord.refresh_lock(1, OP, "job1", ttl_s=100) is True
    subject.advance(99)
    assert coord.lock_holder(1, OP) == "job2"


# ----------------------------------------------------------------------------- liveness


def test_a_worker_is_alive_for_one_heartbeat_timeout_after_its_beat(make):
    subject = make()
    coord = subject.coord
    assert coord.worker_alive() is False
    coord.worker_beat()
    subject.advance(59)
    assert coord.worker_alive() is True
    subject.advance(1)
    assert coord.worker_alive() is False


# ----------------------------------------------------------------------------- generated sequences

CALLS, OWNERS = ("CA1", "CA2"), ("a", "b", "c")
ASKS = [PlaybackGateAsk(r, a, d) for r in (False, True) for a in (False, True) for d in (False, True)]
STEPS = st.tuples(st.just("advance"), st.sampled_from([1, 5, 10, 14, 15, 59, 60, 119, 120, 300, 599, 600, 899, 900])
                  | st.integers(1, 1000))  # steps that land on the TTLs' and the window's edges, and others
AREAS = {  # operations that share state, generated together so that they meet
    "requests": st.one_of(
        STEPS,
        st.tuples(st.sampled_from(["claim_dedup", "release_dedup", "dedup_held", "set_dedup", "clear_dedup",
                                   "mark_playback", "playback_marked", "set_playback_mark",
                                   "count_attempt"]), st.sampled_from(CALLS)),
        st.tuples(st.just("playback_gate"), st.sampled_from(CALLS), st.sampled_from(ASKS)),
        st.tuples(st.sampled_from(["worker_beat", "worker_alive"]))),
    "slots": st.one_of(STEPS, st.tuples(
        st.sampled_from(["acquire_slot", "refresh_slot", "release_slot", "claim_inflight", "refresh_inflight",
                         "release_inflight", "slots_in_use"]), st.sampled_from(OWNERS))),
    "locks": st.one_of(STEPS, st.tuples(
        st.sampled_from(["acquire_lock", "refresh_lock", "release_lock", "lock_holder"]), st.sampled_from(OWNERS))),
}


def apply(subject, op: tuple, tokens: dict):
    """One generated operation; answers comparable across adapters (a dedup token as 'token')."""
    name, *args = op
    coord = subject.coord
    if name == "advance":
        return subject.advance(args[0])
    if name in ("claim_dedup", "release_dedup", "dedup_held", "set_dedup", "clear_dedup"):
        if name == "claim_dedup":
            token = coord.claim_dedup(args[0], "full")
            tokens[args[0]] = token or tokens.get(args[0], "none")
            return token is not None
        if name == "release_dedup":
            return coord.release_dedup(args[0], "full", tokens.get(args[0], "none"))
        return getattr(coord, name)(args[0], "full")
    if name in ("mark_playback", "playback_marked", "set_playback_mark"):
        return getattr(coord, name)(1, args[0])
    if name == "count_attempt":
        return coord.count_attempt(args[0])
    if name == "playback_gate":
        return coord.playback_gate(1, args[0], args[1])
    if name == "slots_in_use":
        return coord.slots_in_use(1)
    if name in ("acquire_slot", "refresh_slot", "release_slot"):
        return getattr(coord, name)(1, args[0])
    if name in ("claim_inflight", "refresh_inflight", "release_inflight"):
        return getattr(coord, name)("RE1", args[0])
    if name == "lock_holder":
        return coord.lock_holder(1, OP)
    if name in ("acquire_lock", "refresh_lock", "release_lock"):
        return getattr(coord, name)(1, OP, args[0])
    return getattr(coord, name)()


@pytest.mark.parametrize("area", sorted(AREAS))
def test_generated_operations_and_clock_steps_get_the_same_answers_from_both_adapters(redis_url, area):
    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(variant=st.sampled_from(["fixed", "seed"]), ops=st.lists(AREAS[area], min_size=3, max_size=40))
    def same_answers(variant, ops):
        policy = make_policy(variant)
        redis_side, model_side = build("redis", policy, redis_url), build("model", policy)
        redis_tokens: dict = {}
        model_tokens: dict = {}
        for i, op in enumerate(ops):
            got = apply(redis_side, op, redis_tokens), apply(model_side, op, model_tokens)
            assert got[0] == got[1], f"step {i} {op}: redis {got[0]!r}, model {got[1]!r}"

    same_answers()
