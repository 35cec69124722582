"""Seed 002's AudioPlayer, written once for the model's players (sim/actors/clients.py) and the
load tests' Locust users (loadtests/players.py, and through them target mode's): poll the
playback endpoint, record each answer, retry only while policy.player_should_retry says so,
waiting policy.player_delay (the backoff, never shorter than the server's Retry-After), and
record how the session ended (policy.player_outcome).

The poll itself is the driver's (`PLAY`): the model asks its web actor in simulated time, a
Locust user sends the GET. Its result is (status, Retry-After in policy seconds or None, audio
ok on a 200 or None, extra fields for the client.request record or None).
"""
from __future__ import annotations

from typing import NamedTuple

from loopfix.reference_app.flows.effects import Emit, Flow, Sleep
from loopfix.reference_app.policy import Policy, player_delay, player_outcome, player_should_retry


class Play(NamedTuple):
    """One GET of the playback endpoint (the player's only request)."""


PLAY = Play()


def play_session(client: str, session: int, call_sid: str, role: str, p: Policy) -> Flow:
    """One player session on one recording; returns the status it stopped on."""
    yield (Emit, "client.start", {"client": client, "session": session, "call_sid": call_sid, "role": role})
    retries = n = 0
    while True:
        status, retry_after, audio_ok, extra = yield PLAY
        n += 1
        fields = {"client": client, "session": session, "call_sid": call_sid, "status": status,
                  "retry_after": retry_after, "n": n, "audio_ok": audio_ok}
        if extra:
            fields.update(extra)
        yield (Emit, "client.request", fields)
        if not player_should_retry(status, retries, p):
            break
        delay = player_delay(retries, retry_after, p)
        retries += 1
        yield Sleep(delay)
    yield (Emit, "client.end", {"client": client, "session": session, "call_sid": call_sid,
                              "outcome": player_outcome(status), "requests": n})
    return status
