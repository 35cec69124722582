"""flows.player, driven with canned poll answers: seed 002's AudioPlayer as the model's players
and the Locust users both run it — retry on 202 only, wait the larger of the backoff and
Retry-After, give up after the policy's retries; `before` retries everything but 200/404."""
from __future__ import annotations

from loopfix.reference_app.flows.effects import EmitValues, Sleep, drive, fields_of
from loopfix.reference_app.flows.player import Play, play_session
from loopfix.reference_app.policy import make_policy

FIXED = make_policy("fixed")


def run(answers, p=FIXED):
    answers, done = list(answers), []

    def handle(effect):
        done.append(effect)
        return answers.pop(0) if type(effect) is Play else None

    return drive(play_session("u1", 1, "CA1", "player", p), handle), done


def test_a_202_then_a_200_waits_at_least_the_retry_after_and_ends_played():
    status, done = run([(202, 30.0, None, None), (200, None, True, {"latency_s": 0.1})])
    sleeps = [e.seconds for e in done if type(e) is Sleep]
    assert status == 200 and sleeps == [max(30.0, FIXED.player_base_s)]
    requests = [fields_of(e) for e in done if type(e) is tuple and e[0] is EmitValues and e[1] == "client.request"]
    assert requests == [{"client": "u1", "session": 1, "call_sid": "CA1", "status": 202, "retry_after": 30.0, "n": 1,
                         "audio_ok": None},
                        {"client": "u1", "session": 1, "call_sid": "CA1", "status": 200, "retry_after": None, "n": 2,
                         "audio_ok": True, "latency_s": 0.1}]
    assert fields_of(done[0]) == {"client": "u1", "session": 1, "call_sid": "CA1", "role": "player"}
    assert fields_of(done[-1]) == {"client": "u1", "session": 1, "call_sid": "CA1", "outcome": "played", "requests": 2}


def test_the_player_gives_up_after_its_retries():
    n = FIXED.player_max_retries
    status, done = run([(202, None, None, None)] * (n + 1))
    end = fields_of(done[-1])
    assert status == 202 and end["outcome"] == "gave_up" and end["requests"] == n + 1
    sleeps = [e.seconds for e in done if type(e) is Sleep]
    assert sleeps == [min(FIXED.player_base_s * 2**i, FIXED.player_cap_s) for i in range(n)]


def test_a_500_stops_at_once_but_before_retries_it():
    status, done = run([(500, None, None, None)])
    assert status == 500 and fields_of(done[-1])["outcome"] == "worker_offline"
    before = make_policy("before")
    status, done = run([(500, None, None, None), (200, None, True, None)], before)
    assert status == 200 and sum(type(e) is Play for e in done) == 2
