"""loopfix.sim.records: the model's per-kind recorders build exactly reference_app.events.event's record."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import simpy

from loopfix.reference_app import events
from loopfix.reports import measures
from loopfix.sim.records import CompactHistory, recorder_name, recorders


def sample_fields(kind: str) -> dict:
    return {f: f"{f}-value" for f in events.EVENT_FIELDS[kind]}


def test_every_kind_records_what_events_event_builds_at_the_rounded_clock():
    env = simpy.Environment()
    history: list[dict] = []
    rec = recorders(env, history)
    env.run(until=12.34567891)
    for kind in events.EVENT_FIELDS:
        getattr(rec, recorder_name(kind))("worker-0", **sample_fields(kind))
    assert len(history) == len(events.EVENT_FIELDS)
    for record, kind in zip(history, events.EVENT_FIELDS):
        assert record == events.event(kind, env.now, "sim", "worker-0", **sample_fields(kind))
        assert events.dumps(record) == events.dumps(events.event(kind, env.now, "sim", "worker-0", **sample_fields(kind)))


def test_records_keep_the_model_key_order_fields_first():
    env = simpy.Environment()
    history: list[dict] = []
    recorders(env, history).job_start("worker-1", job_id="7", call_sid="CA7", attempt=1, worker="worker-1")
    assert list(history[0]) == ["job_id", "call_sid", "attempt", "worker", "t", "kind", "source", "proc"]
    assert history[0]["t"] == 0.0 and isinstance(history[0]["t"], float)


def test_the_clock_is_read_at_each_record_not_cached_across_time():
    env = simpy.Environment()
    history: list[dict] = []
    rec = recorders(env, history)

    def proc():
        rec.outage_start("env", target="workers", how="stop", workers=0)
        yield env.timeout(1.0000004)
        rec.outage_end("env", target="workers", how="stop", workers=0)

    env.process(proc())
    env.run()
    assert [r["t"] for r in history] == [0.0, 1.0]
    assert [r["kind"] for r in history] == ["outage.start", "outage.end"]


def test_a_compact_history_reads_back_each_record_a_list_got_with_t_rounded_as_it_was_made():
    # the compact history keeps the raw clock and rounds t when a record is read; a list's records
    # are rounded as they are made: the two must read the same, near halves and far out included
    env = simpy.Environment()
    plain: list[dict] = []
    compact = CompactHistory()
    recs = recorders(env, plain), recorders(env, compact)

    def proc():
        for t in (0.0, 2.5e-6, 0.1 + 0.2, 1.0000005, 12.34567891, 86_400.0000015, 2e6 + 1e-7):
            yield env.timeout(t - env.now)
            for rec in recs:
                rec.job_start("worker-0", job_id="7", call_sid="CA7", attempt=1, worker="worker-0")
                rec.outage_end("env", target="workers", how="stop", workers=0)

    env.process(proc())
    env.run()
    assert len(plain) == 14 and list(compact) == plain and [compact[i] for i in range(14)] == plain
    assert [events.dumps(r) for r in compact] == [events.dumps(r) for r in plain]


def test_a_missing_or_unknown_field_is_refused():
    rec = recorders(simpy.Environment(), [])
    with pytest.raises(TypeError):
        rec.job_end("worker-0", job_id="1", call_sid="CA1")  # outcome missing
    with pytest.raises(TypeError):
        rec.job_end("worker-0", job_id="1", call_sid="CA1", outcome="done", extra=1)


def test_micro_round_is_round_to_six_places_bit_for_bit_near_halves_and_far_out():
    import random

    from loopfix.sim.records import micro_round

    rng = random.Random(7)
    times = [rng.uniform(0, 1e5) for _ in range(200_000)] + [rng.expovariate(0.01) for _ in range(50_000)]
    times += [k / 1e6 + 5e-7 + nudge for k in range(0, 10**6, 97) for nudge in (-1e-13, 0.0, 1e-13)]  # halves
    times += [sum([0.1] * n) for n in range(3000)] + [1e7 + 0.1234565, 3e7 + 1e-7, 0.0, 5e-7, 1.5e-6]
    assert [t for t in times if micro_round(t) != round(t, 6)] == []


def test_a_routed_kind_whose_handler_has_a_step_calls_the_step_with_the_fields_it_names():
    """A handler with a `step` (reports.measures.from_record, as Scan's) is skipped: its step is
    called with the fields it names, by keyword, and no record is built; a step naming a field
    its kind lacks is refused."""
    got = []

    def job_start(job_id, t, kind, missing="default"):
        got.append((job_id, t, kind, missing))

    handler = measures.from_record(job_start)
    router = SimpleNamespace(tally=[0], append=print, route=lambda kind: handler if kind == "job.start" else None)
    env = simpy.Environment()
    env.run(until=1.23456789)
    recorders(env, router).job_start("worker-1", job_id="7", call_sid="CA7", attempt=1, worker="worker-1")
    assert got == [("7", 1.234568, "job.start", "default")] and router.tally == [1]
    handler({"job_id": "8", "t": 2.0, "kind": "job.start", "source": "sim", "proc": "w"})
    assert got[-1] == ("8", 2.0, "job.start", "default")

    def needs(job_id, lead):
        pass

    router.route = lambda kind: measures.from_record(needs) if kind == "job.start" else None
    with pytest.raises(ValueError, match="'lead'"):
        recorders(env, router)


def test_a_compact_historys_fed_kind_whose_handler_has_a_step_gets_the_fields_and_keeps_the_record():
    """A CompactHistory's feed handler with a `step` (as policy.events.from_record's, as
    HistoryMetrics') has its step called with the fields it names, no dict built; the record is
    kept all the same, and a handler without a step still gets the record's dict."""
    from loopfix.sim.records import CompactHistory

    got, dicts = [], []

    def job_start(job_id, t, proc):
        got.append((job_id, t, proc))

    def as_record(e):  # what the recorder must not call: it has the fields
        got.append(("as a record", e))

    as_record.step = job_start
    history = CompactHistory(feed={"job.start": as_record, "job.end": dicts.append})
    env = simpy.Environment()
    env.run(until=1.23456789)
    rec = recorders(env, history)
    rec.job_start("worker-1", job_id="7", call_sid="CA7", attempt=1, worker="worker-1")
    rec.job_end("worker-1", **sample_fields("job.end"))
    assert got == [("7", 1.234568, "worker-1")]
    assert list(history) == [events.event("job.start", 1.23456789, "sim", "worker-1", job_id="7", call_sid="CA7",
                                          attempt=1, worker="worker-1"),
                             events.event("job.end", 1.23456789, "sim", "worker-1", **sample_fields("job.end"))]
    assert dicts == list(history)[1:]


def test_a_compact_history_counts_its_records_of_a_kind_those_appended_as_dicts_too():
    from loopfix.sim.records import CompactHistory

    history = CompactHistory()
    rec = recorders(simpy.Environment(), history)
    for _ in range(3):
        rec.job_start("worker-1", **sample_fields("job.start"))
    rec.job_end("worker-1", **sample_fields("job.end"))
    assert (history.count("job.start"), history.count("job.end"), history.count("job.retry")) == (3, 1, 0)
    history.append(events.event("job.start", 1.0, "live", "rq", **sample_fields("job.start")))
    assert history.count("job.start") == 4 == sum(1 for e in history if e["kind"] == "job.start")
