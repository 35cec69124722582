"""The live app and the model make the same fail-fast decisions for polls at the same times:
the app's GET /api/recordings/file/<call_sid> through Flask's test client against real Redis,
and the model's poll (sim.model.Model.request_playback), both running flows.playback.poll over their
own Coordination adapter. Time is controlled on both sides: the model's is SimPy's; the app's
clock (policy_now, and the clock recordings.py stamps runs with) is a fake, and Redis's is moved
by ageing its keys (adapters.RedisClock). No worker runs on either side.

The times are the issue's, with the last poll at 630 s rather than 620 s: a poll 10 s after the
previous one meets that poll's 15 s playback mark and counts nothing (in both). At 630 s the
sliding window (30, 630] holds four attempts and trips; a fixed window from the first attempt
(the app before issue 16) would have restarted at 610 and answered 202.
"""
from __future__ import annotations

import math
import types

import pytest

from adapters import RedisClock
from loopfix.harness.scenario import load_scenario
from loopfix.reference_app import recordings
from loopfix.sim.model import Call, Model
from tests.conftest import add_business, auth

STUB = "https://api.twilio.com/2010-04-01/Accounts/{account}/Recordings/{sid}.mp3"
TIMES = (0, 500, 590, 610, 630)


def app_statuses(app_factory, monkeypatch, times):
    client, svc = app_factory()
    svc.coord.liveness_trust_s = 0.0
    b = add_business(svc, recording_url=STUB)
    call = b["calls"][0]["call_sid"]
    clock = RedisClock(svc.redis, svc.policy)
    epoch = svc.config.run_epoch
    monkeypatch.setattr(svc, "policy_now", lambda: clock.t)
    monkeypatch.setattr(recordings, "time", types.SimpleNamespace(time=lambda: epoch + clock.t))
    answers = []
    for t in times:
        clock.advance(t - clock.t)
        r = client.get(f"/api/recordings/file/{call}", headers=auth(b))
        answers.append((r.status_code, (r.json or {}).get("error")))
    return answers


def model_statuses(times):
    scenario = load_scenario("steady")
    model = Model(scenario, scenario.make_policy())
    model.worker_down = [True] * len(model.worker_down)
    model.all_down_since = -math.inf  # no worker has beaten, as in the app's Redis
    call = Call("CA1", "RE1", 1, True, 0.0, 30.0, archive=True, served="audio")
    answers = []

    def poller():
        for t in times:
            yield model.env.timeout(t - model.env.now)
            status, _retry_after, _audio = yield from model.request_playback(call)
            answers.append((status, "worker_not_processing_queue" if status == 500 else None))

    model.spawn(poller())
    model.env.run()
    return answers


def test_the_model_and_the_live_app_trip_fail_fast_on_the_same_poll(app_factory, monkeypatch):
    expected = [(202, None)] * 4 + [(500, "worker_not_processing_queue")]
    assert model_statuses(TIMES) == expected
    assert app_statuses(app_factory, monkeypatch, TIMES) == expected


@pytest.mark.parametrize("times", [(0, 20, 40, 60, 80), (0, 300, 599, 600, 601), (0, 16, 900, 1500, 1516)])
def test_the_model_and_the_live_app_answer_other_poll_times_alike(app_factory, monkeypatch, times):
    assert app_statuses(app_factory, monkeypatch, times) == model_statuses(times)
