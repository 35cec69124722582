"""The effects a flow yields, and the plain driver that runs a flow synchronously.

A flow yields one of these and is sent the result; each is an immutable record that names what
to do, never how (the app's driver does it with Redis, RQ, SQLAlchemy and the history writer;
the model's with SimPy and its world; a test with a list of canned results).

The two the model meets on every job, call and poll — a Coordination call and a record — are
plain tuples tagged by their first item, written as literals in the flows: `(Coord, op, args)`
and `(Emit, kind, fields)`. A plain tuple costs a fraction of a NamedTuple to build, and these
are most of the model's effects (measured: the day scenario's model time fell by about a tenth).
`Coord(op, args)` and `Emit(kind, fields)` build the same tuples (tests); a driver tells them
apart by `effect.__class__ is tuple`, then `effect[0]`. The other effects are NamedTuples, told
apart by their class.

- `(Coord, op, args)`: call `op` on the Coordination adapter (flows/coordination.py); result: its
  answer. An unreachable store raises out of the driver, not into the flow.
- `(Coord, op, args, kind, values)`: the same call, then record `kind` with `values` (a tuple, in
  the schema's field order) and the answer as its last field: one effect where a call's answer
  is always recorded at once (the recording job's slot take, on every job: a separate Emit
  costs the model about five times the record itself, measured).
- `(Release, claim, slot, values)`: the recording job's end, its two Coordination calls in one
  effect: `release_inflight(*claim)` (unless `claim` is None: not claimed), then
  `release_slot(*slot)`, recorded as slot.release with `values` and its answer; result: None
  (the job needs neither answer). A call that raises leaves the rest undone, as two effects
  did. One resume of the job less, and its last answer None: the model ends the job's flow
  with `next(flow, default)`, no StopIteration to raise (sim/actors/workers.py).
- `Gap()`: a round trip passes here, where a concurrent request can slip in (the seed's
  check-then-set races). The app's own round trip is the gap; the model lets REDIS_RTT_S pass.
- `(Emit, kind, fields)`: record one history event (reference_app/events.py's schema).
- `(EmitValues, kind, values[, extra])`: the same record, its fields' values a tuple in the
  schema's order (and a dict of fields beyond the schema's: the load tests' latency), which the
  model passes to the recorder positionally rather than a dict unpacked by keyword (the player's
  records: 24 M instructions less in the day scenario's hour, about 2,100 a record, measured).
  `fields_of(effect)`: its fields by name, for a driver that records by keyword.
- `Enqueue(job_type, via, dedup)`: the recording enqueue with its dedup; result: 'enqueued' |
  'duplicate' | 'error' as the caller reports it (policy.reported_enqueue_reason).
- `FailStuck(reason)`: mark the stuck run the flow found failed (once; a compare-and-set).
- `CreateRun(job_type, via)`: create the run row and put its job on the queue; result: True,
  or False when the enqueue raised. (With Redis unreachable, flows.enqueue.pending_run: the row
  alone, queued, for the workers' sweep to enqueue.)
- `ActiveRun()`: has the call an active run (queued, running, retry_wait)? result: bool.

The recording job's steps (flows/recording.py) act on the run the driver holds:
- `Save(fields)`: set the run's columns and commit; `next_attempt_in_s` sets next_attempt_at
  that many policy seconds from now (each driver on its own clock).
- `Park(delay_s, via)`: put the run's job back on the queue after `delay_s` (0: now).
- `Sleep(seconds)`: the worker itself sleeps (only the seeds' faults do).
- `Finish(status, error)`: end the run done or failed (and record job.end).
- `RetryByRQ(error)`: the seed's retry: raise, and let RQ's Retry re-run the job at once.
- `ClaimRun(fields, fresh_job)`: compare-and-set the run as the sweep read it: set `fields` (with
  `created_now`, created_at = now) and commit; result False when another sweep changed it first.
  `fresh_job` (an orphan): the run gets a fresh job id, and the compare is on its old one (else
  on its heartbeat).
- `StartRun()`: mark the run running (started and beating now, owned by this job), look up the
  call's CallLog and recording, and record job.start (`attempt`: policy.run_attempt of the run's
  retry counts; `worker`: the job's process) — as `Finish` records job.end: one effect on every
  job, not a second one for the record (measured: a flow's Emit costs the model about five times
  a recorder called directly); result: None (no CallLog yet), '' (no recording URL) or the
  RecordingSid.
- `FetchAudio()`: download the recording once (the app keeps the run's heartbeat meanwhile);
  result: 'ok' | 'skipped' | 'missing' | 'transient' | 'refused'.
- `ClaimJob()`: the delete run takes its job, queued → running (only the run the row names);
  result: False when another run owns it now (superseded).
- `DeleteBatch()`: one batch's transaction, uncommitted — stamp the heartbeat, delete the
  batch's remaining leads of this business; result: ('superseded',) | ('done',) |
  ('error', why) (the transaction failed, rolled back) | ('batch', asked, deleted ids, left after).
- `Commit(keep)`: commit the open transaction (`keep` False: roll it back).
- `EndJob(status, reason)`: set the delete job's end (completed | failed | paused) if this run
  still owns it (paused: committed at once; else left open for the lock release before the
  commit); result: the job's processed count, None when it no longer owns it.
- `Clock()`: the driver's now, in policy seconds.
- `ActiveLeadJob()` / `NewLeadJob(join)`: the business's active delete job (its id or None) /
  insert a job (`join`: or, losing to the one-active-job constraint, join the winner);
  result: (job id, existing) or None (the jobs changed too fast).
- `OwnedLeads()`: which of the request's lead ids are the business's now, in request order.
- `EnqueueLeadJob(job_id)`: put the delete job's first run on the leads queue.
- `Transcribe()`: the model's transcription of a full job (no step of the reference app: its
  driver answers at once).
"""
from __future__ import annotations

from typing import Any, Callable, Generator, NamedTuple

from loopfix.reference_app.policy.events import EVENT_FIELDS


class _Tag:
    """The first item of a tagged-tuple effect; calling it builds one: Coord(op, args) is
    (Coord, op, args)."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __call__(self, what: str, data: Any = ()) -> tuple:
        return (self, what, data)

    def __repr__(self) -> str:
        return self.name


Coord = _Tag("Coord")  # (Coord, op, args): call `op` on the Coordination adapter
Emit = _Tag("Emit")  # (Emit, kind, fields): record one history event
Release = _Tag("Release")  # (Release, claim, slot, values): free a recording job's claim and slot
EmitValues = _Tag("EmitValues")  # (EmitValues, kind, values[, extra]): the same, its values in schema order


def fields_of(effect: tuple) -> dict[str, Any]:
    """An (EmitValues, kind, values[, extra]) record's fields, by name (for a driver that records
    them by keyword)."""
    fields = dict(zip(EVENT_FIELDS[effect[1]], effect[2], strict=True))
    if len(effect) > 3:
        fields.update(effect[3])
    return fields


def in_schema_order(where: str, records: dict[str, tuple[str, ...]]) -> None:
    """ImportError unless every kind in `records` has exactly these fields, in this order, in the
    schema: `where` builds those records' values positionally (EmitValues, or a recorder called
    by position), so a schema change stops its import rather than misfiling them."""
    changed = [kind for kind, fields in records.items() if EVENT_FIELDS[kind] != fields]
    if changed:
        raise ImportError(f"{where} records {', '.join(changed)} positionally: the schema changed their fields")


def tagged(effect: tuple, coord: Any, emit: Callable[..., Any]) -> Any:
    """A tagged-tuple effect carried out: (Coord, op, args) calls `op` on the adapter `coord`
    (and with `kind, values` records its answer), (Release, ...) its two calls and record,
    (Emit, kind, fields) records through `emit(kind, **fields)`. The app's drivers share it;
    the model's hot loops inline the same lines (a call per effect is a measurable share there)."""
    tag = effect[0]
    if tag is Coord:
        answer = getattr(coord, effect[1])(*effect[2])
        if len(effect) > 3:
            _record(emit, effect[3], effect[4], answer)
        return answer
    if tag is Release:
        if effect[1] is not None:
            coord.release_inflight(*effect[1])
        _record(emit, "slot.release", effect[3], coord.release_slot(*effect[2]))
        return None
    return emit(effect[1], **effect[2])


def _record(emit: Callable[..., Any], kind: str, values: tuple, answer: Any) -> None:
    """Record `kind` with `values` and a call's answer as its last field, by field name."""
    emit(kind, **dict(zip(EVENT_FIELDS[kind], (*values, answer), strict=True)))


def effect_type(effect: Any) -> Any:
    """A tagged tuple's tag (Coord, Emit, EmitValues, Release), else the effect's class (for tests and messages)."""
    return effect[0] if effect.__class__ is tuple else effect.__class__


class Gap(NamedTuple):
    pass


class Enqueue(NamedTuple):
    job_type: str
    via: str
    dedup: bool


class FailStuck(NamedTuple):
    reason: str


class CreateRun(NamedTuple):
    job_type: str
    via: str


class ActiveRun(NamedTuple):
    pass


class Save(NamedTuple):
    fields: dict


class Park(NamedTuple):
    delay_s: float
    via: str


class Sleep(NamedTuple):
    seconds: float


class Finish(NamedTuple):
    status: str
    error: str | None


class RetryByRQ(NamedTuple):
    error: str


class ClaimRun(NamedTuple):
    fields: dict
    fresh_job: bool = False


class StartRun(NamedTuple):
    pass


class FetchAudio(NamedTuple):
    pass


class Transcribe(NamedTuple):
    pass


class ClaimJob(NamedTuple):
    pass


class DeleteBatch(NamedTuple):
    pass


class Commit(NamedTuple):
    keep: bool = True


class EndJob(NamedTuple):
    status: str
    reason: str | None


class Clock(NamedTuple):
    pass


class ActiveLeadJob(NamedTuple):
    pass


class NewLeadJob(NamedTuple):
    join: bool


class OwnedLeads(NamedTuple):
    pass


class EnqueueLeadJob(NamedTuple):
    job_id: str


Effect = (tuple | Gap | Enqueue | FailStuck | CreateRun | ActiveRun | Save | Park | Sleep | Finish | RetryByRQ
          | ClaimRun | StartRun | FetchAudio | Transcribe | ClaimJob | DeleteBatch | Commit | EndJob | Clock
          | ActiveLeadJob | NewLeadJob | OwnedLeads | EnqueueLeadJob)
Flow = Generator[Effect, Any, Any]


def drive(flow: Flow, handle: Callable[[Effect], Any]) -> Any:
    """Run `flow` to its end, doing each effect with `handle(effect)` and sending back its result;
    returns the flow's value. An exception from `handle` is thrown into the flow, so its
    `finally` steps are done too, and propagates out of it."""
    send, result = flow.send, None
    while True:
        try:
            effect = send(result)
        except StopIteration as stop:
            return stop.value
        try:
            result, send = handle(effect), flow.send
        except BaseException as exc:  # noqa: BLE001 - thrown into the flow, out of it again
            result, send = exc, flow.throw


def drive_with(flow: Flow, results: list) -> tuple[list[Effect], Any]:
    """A test's driver: answer the flow's effects with `results` in order; (effects, value)."""
    effects: list[Effect] = []
    answers = iter(results)

    def handle(effect: Effect) -> Any:
        effects.append(effect)
        return next(answers)

    return effects, drive(flow, handle)
