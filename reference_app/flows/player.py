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

from loopfix.reference_app.flows.effects import EmitValues, Flow, Sleep, in_schema_order
from loopfix.reference_app.policy import Policy, player_delay, player_outcome, player_should_retry

# The session's records are EmitValues, their values in these fields' order (the model's players
# call their recorders positionally: about 2,100 instructions less per record than by keyword,
# measured); a change of the schema stops the import rather than misfile them.
RECORDS = {"client.start": ("client", "session", "call_sid", "role"),
           "client.request": ("client", "session", "call_sid", "status", "retry_after", "n", "audio_ok"),
           "client.end": ("client", "session", "call_sid", "outcome", "requests")}
in_schema_order("flows.player", RECORDS)


class Play(NamedTuple):
    """One GET of the playback endpoint (the player's only request)."""


PLAY = Play()


def play_session(client: str, session: int, call_sid: str, role: str, p: Policy) -> Flow:
    """One player session on one recording; returns the status it stopped on."""
    yield (EmitValues, "client.start", (client, session, call_sid, role))
    retries = n = 0
    while True:
        status, retry_after, audio_ok, extra = yield PLAY
        n += 1
        values = (client, session, call_sid, status, retry_after, n, audio_ok)
        yield (EmitValues, "client.request", values, extra) if extra else (EmitValues, "client.request", values)
        if not player_should_retry(status, retries, p):
            break
        delay = player_delay(retries, retry_after, p)
        retries += 1
        yield Sleep(delay)
    yield (EmitValues, "client.end", (client, session, call_sid, player_outcome(status), n))
    return status
