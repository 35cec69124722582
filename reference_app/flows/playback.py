"""The playback poll (seeds 002, 003), once for the app's GET /api/recordings/file/<call_sid>
and the model's players: decide with policy.playback_decision for a live and a dead worker,
ask the gate (liveness, the playback mark, the fail-fast count) only what that decision needs,
then serve, wait, fail the stuck run, trip fail-fast or enqueue, as policy.playback_action says.

`poll` is two parts a driver may also run apart: `decide` (pure: the decisions and the gate's
question, or the Reply itself when no gate is needed) and `gate_and_act` (the flow from the
gate on). The model answers most polls (a file ready) with `decide` alone.

The gate is one Coordination step (`playback_gate`), except under the seed's racy faults: there
the mark is a check, a gap and a set (`playback_check_then_mark`) and the count its own step, so
their races stay reachable in both drivers. Finding the call (404 when there is none) and
serving the file are the drivers'.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from loopfix.reference_app.flows.coordination import PlaybackGate
from loopfix.reference_app.flows.effects import Coord, EmitValues, Enqueue, FailStuck, Flow, Gap, in_schema_order
from loopfix.reference_app.policy import (
    ACTIVE_RUN_STATUSES,
    WAITING_RUN_STATUSES,
    PlaybackDecision,
    PlaybackGateAsk,
    PlaybackState,
    Policy,
    RunState,
    playback_action,
    playback_decision,
    playback_dedups,
    playback_gate_ask,
)

NO_GATE = PlaybackGate(None, None, 0)
in_schema_order("flows.playback", {"fail_fast.trip": ("call_sid", "count"),
                                   "enqueue.result": ("call_sid", "reason", "status")})  # its EmitValues


class PollCall(NamedTuple):
    """What the poll knows of the call before it decides: its recording, file and latest run.
    (NamedTuples here: immutable, and cheap to build on every poll of the model.)"""

    business_id: int
    call_sid: str
    has_recording_url: bool
    file_ready: bool
    run: RunState | None


class Reply(NamedTuple):
    """The poll's answer: status, JSON body (None: empty), Retry-After (policy seconds); `serve`:
    send the file."""

    status: int
    body: dict | None = None
    retry_after_s: float | None = None
    serve: bool = False


SERVED = Reply(200, serve=True)  # the file is ready (most polls' answer; a Reply is immutable)


def poll(call: PollCall, now: float, p: Policy) -> Flow:
    """One poll of `call` at `now` (policy seconds); returns its Reply."""
    first = decide(call, now, p)
    if first.__class__ is Reply:
        return first
    return (yield from gate_and_act(call, first, p))


class Gated(NamedTuple):
    """A poll's decisions with a live and a dead worker, and its question for the gate."""

    if_alive: PlaybackDecision
    if_dead: PlaybackDecision
    ask: PlaybackGateAsk
    round_trip: bool


def decide(call: PollCall, now: float, p: Policy) -> Reply | Gated:
    """The poll up to its first effect: its Reply when it needs none (no gate to ask: most polls,
    a file ready), else its decisions and what it must ask the gate (for gate_and_act). A driver
    with the Reply runs no flow (the model: no generator made, sent and ended in a StopIteration
    per poll; measured -8.7 M instructions of the day's `full 1`, about 2,500 a poll)."""
    run, url, ready = call.run, call.has_recording_url, call.file_ready
    # Liveness matters only for a waiting run, and only when it changes the answer.
    if run is not None and run.status in WAITING_RUN_STATUSES:
        if_alive = playback_decision(PlaybackState(url, ready, run, True), now, p)
        if_dead = playback_decision(PlaybackState(url, ready, run, False), now, p)
    else:
        if_alive = if_dead = playback_decision(PlaybackState(url, ready, run, None), now, p)
    ask, round_trip = gate_question(if_alive, if_dead)
    if not round_trip:
        reply = settled(if_dead)  # no liveness read: if_alive is if_dead
        if reply is not None:
            return reply
    return Gated(if_alive, if_dead, ask, round_trip)


def settled(decision: PlaybackDecision) -> Reply | None:
    """The Reply of a decision that needs nothing more (serve, not_found, wait), else None."""
    kind = decision.kind
    if kind == "serve":
        return SERVED
    if kind == "not_found":
        return Reply(404, {"error": "no_recording_url", "message": decision.reason})
    if kind == "wait":
        return Reply(202, {"status": "processing"}, decision.retry_after_s)
    return None


def gate_and_act(call: PollCall, gated: Gated, p: Policy) -> Flow:
    """The rest of the poll decided `gated`: ask the gate, then answer, fail the stuck run, trip
    fail-fast or enqueue, as policy.playback_action says; returns its Reply."""
    if not gated.round_trip:
        gate = NO_GATE
    elif p.has("playback_check_then_mark") or p.has("fail_fast_incr_then_expire"):
        gate = yield from racy_gate(call, gated.ask, p)
    else:
        gate = yield (Coord, "playback_gate", (call.business_id, call.call_sid, gated.ask))
    decision = gated.if_alive if gate.alive else gated.if_dead
    reply = settled(decision)
    if reply is not None:
        return reply
    run = call.run
    stuck = decision.kind == "start" and run is not None and run.status in ACTIVE_RUN_STATUSES
    attempts = gate.attempts
    act = playback_action(decision, stuck, bool(gate.marked), attempts, p)
    if act.fail_stuck:
        yield FailStuck(decision.reason)
    if act.trip:
        yield (EmitValues, "fail_fast.trip", (call.call_sid, attempts))
    counted = {"attempt": attempts, "max_attempts": p.fail_fast_max_attempts}
    if not act.enqueue:
        if act.error:
            message = f"{attempts - 1} attempts in the window; the worker is not processing"
            return Reply(act.status, {"error": act.error, "message": message})
        return Reply(act.status, {"status": "processing", **(counted if gate.marked else {})}, act.retry_after_s)
    reason = yield Enqueue("download_only", "playback", playback_dedups(p))
    yield (EmitValues, "enqueue.result", (call.call_sid, reason, 202 if reason != "error" else 500))
    if reason == "error":
        return Reply(500, {"error": "enqueue_failed"})
    return Reply(202, {"status": "processing", **counted}, act.retry_after_s)


@lru_cache(maxsize=64)
def gate_question(if_alive: PlaybackDecision, if_dead: PlaybackDecision) -> tuple[PlaybackGateAsk, bool]:
    """playback_gate_ask's question and whether it needs Redis at all (its round_trip),
    remembered: the policy's answer is a pure function of the two decisions and most polls
    bring the same few (a file ready: 'serve' twice)."""
    ask = playback_gate_ask(if_alive, if_dead)
    return ask, ask.round_trip


def racy_gate(call: PollCall, ask, p: Policy) -> Flow:
    """The seed's gate as separate steps: liveness, then the mark as check-gap-set
    (`playback_check_then_mark`) or one SET NX, then the count (its own step, so
    `fail_fast_incr_then_expire`'s crash window stays reachable)."""
    b, cs = call.business_id, call.call_sid
    alive = (yield (Coord, "worker_alive", ())) if ask.read_alive else None
    if not (ask.gate_if_alive if alive else ask.gate_if_dead):
        return PlaybackGate(alive, None, 0)
    if playback_dedups(p):
        if p.has("playback_check_then_mark"):
            if (yield (Coord, "playback_marked", (b, cs))):
                return PlaybackGate(alive, False, 0)
            yield Gap()
            yield (Coord, "set_playback_mark", (b, cs))
        elif not (yield (Coord, "mark_playback", (b, cs))):
            return PlaybackGate(alive, False, 0)
    return PlaybackGate(alive, True, (yield (Coord, "count_attempt", (cs,))))
