"""The model's speed work (issue 18) changes no behaviour: the ticker promotes at the ticks it
always did without an event per tick, the stuck sweep's sleep and the leaner SimPy loop leave
every history as it was, and a sweep point's fast lane gives the row the whole history gives.
No test here times anything: `loopfix bench --only model` measures."""
from __future__ import annotations

import pytest
import simpy

from loopfix.benchmarks import customer_bench, model_bench
from loopfix.harness.scenario import load_scenario, with_settings
from loopfix.reference_app.events import dumps
from loopfix.reports import measures
from loopfix.sim import simulate, sweep
from loopfix.sim.model import Model
from loopfix.sim.world import Call, Entry, Run
from loopfix.sweep_commands import MMC_ROW_KINDS, measure_point, row_kinds, run_for_row


def _history(model_cls, s, **kw):
    model = model_cls(s, s.make_policy(), **kw)
    model.start()
    model.env.run(until=s.duration_s + s.drain_s)
    return model, [dumps(e) for e in model.history]


def _promotions_against_due(tick: float):
    """(due, promoted at) for every backoff retry of missing-calllog with `tick`."""
    s = with_settings(load_scenario("missing-calllog"), assignments={"workers.scheduler_tick_s": str(tick)})
    h = simulate(s).history
    due: dict[str, float] = {}
    pairs = []
    for e in h:
        if e["kind"] == "job.retry":
            due[e["job_id"]] = e["t"] + e["delay"]
        elif e["kind"] == "job.enqueue" and e["via"] == "retry":
            pairs.append((due.pop(e["job_id"]), e["t"]))
    return pairs


def test_a_parked_retry_is_promoted_at_the_first_tick_at_or_after_its_due_time():
    """As the app's ticker (reference_app/worker.py): promote_due runs on every tick, so a retry
    waits for the first tick at or after it is due — never longer, never earlier."""
    for tick in (1.0, 0.5):
        pairs = _promotions_against_due(tick)
        assert len(pairs) > 20
        for due, at in pairs:
            first_tick = -(-round(due * 1e6) // round(tick * 1e6)) * tick  # ceil on the µs the history keeps
            assert abs(at - first_tick) < 1e-5, (tick, due, at)
    # the tick is the scenario's: at 1 s some retries wait longer than at 0.5 s
    assert any(at - due > 0.5 + 1e-5 for due, at in _promotions_against_due(1.0))


def test_the_leaner_simpy_loop_runs_every_event_as_simpy_does():
    """sim.process.Env against simpy.Environment on a run with crashes (interrupts), outages and
    players: the same history, record for record."""
    s = with_settings(load_scenario("worker-crash"), variant="before")
    assert _history(Model, s)[1] == _history(Model, s, env=simpy.Environment())[1]


def test_the_calls_runs_and_queue_entries_made_bare_on_every_call_are_what_their_classes_make():
    """sim.world.new_object: new_call, insert_run and push set every field, defaults included,
    as the classes' own calls would (a field left unset fails the comparison)."""
    s = with_settings(load_scenario("steady"), seed=1)
    model = Model(s, s.make_policy())  # not started: no worker waits, the entry stays queued
    for _ in range(3):
        call = model.new_call()
        assert call == Call(call.call_sid, call.recording_sid, call.business_id, call.has_url, call.calllog_at,
                            call.download_s, call.archive, call.served)
        run = model.insert_run(call, "full", "webhook")
        assert run == Run(run.job_id, call, "full", "queued", model.env.now, model.enqueue_retry_max, token=1)
        assert model.queue.items[-1] == Entry(run, 1)


class SweepsAlways(Model):
    """The model with a stuck sweep that never sleeps (a sweep every interval)."""

    def sweeper_idle(self):
        return
        yield


def test_the_stuck_sweep_sleeps_only_where_a_sweep_would_find_nothing():
    """Sleeping between outages changes no history (crashes, a Redis restart, stuck runs of
    the seed variant), and it does sleep: fewer SimPy events."""
    for name, variant in (("worker-crash", "fixed"), ("redis-restart", "fixed"), ("worker-outage", "seed"),
                          ("steady", "fixed")):
        s = with_settings(load_scenario(name), variant=variant)
        lean, history = _history(Model, s)
        ticking, reference = _history(SweepsAlways, s)
        assert history == reference, (name, variant)
        if name == "steady":
            assert next(lean.env._eid) < next(ticking.env._eid)


def _fast_lane_points():
    grid = sweep.Grid(workers=(2, 4), calls_per_hour=(600.0,), outage_s=(0.0, 900.0),
                      variants=("fixed", "seed", "before"), observe_s=900.0)
    return list(sweep.points(grid)) + sweep.mmc_grid([2], [0.7], hours=2.0)


def test_a_sweep_points_fast_lane_gives_the_row_of_its_whole_history():
    """Kept kinds, and an M/M/c point's kinds measured online (fed to a Scan, none kept)."""
    for point in _fast_lane_points():
        fast = run_for_row(point)
        whole = sweep.run_point(point)
        assert fast.events == whole.events == len(whole.history) > len(fast.history)
        assert (fast.fed is not None) == point["mmc"] and (fast.history == []) == point["mmc"]
        assert sweep.jobs_started(fast) == sweep.jobs_started(whole) > 0
        assert measure_point(point, fast) == measure_point(point, whole), point
        if point["mmc"]:
            assert measure_point(point, sweep.run_point(point, keep=row_kinds(point))) == measure_point(point, whole)


def test_a_fast_lane_without_a_kind_its_row_reads_gives_another_row():
    """The equality above can fail: keeping one kind too few changes the row."""
    point = sweep.mmc_grid([2], [0.7], hours=2.0)[0]
    short = sweep.run_point(point, keep=MMC_ROW_KINDS - {"job.start"})
    row = measure_point(point, sweep.run_point(point, keep=MMC_ROW_KINDS))
    assert row["queue_wait_n"] > 0
    assert measure_point(point, short) != row


def test_a_fast_lane_asked_for_a_kind_the_schema_lacks_says_which():
    with pytest.raises(ValueError, match="job.begin"):
        sweep.KeptKinds({"job.start", "job.begin"})


def test_a_fast_lane_counts_a_record_appended_without_a_recorder_and_keeps_it_by_its_kind():
    fed = []
    kept = sweep.KeptKinds({"job.start"}, feed={"job.enqueue": fed.append})
    kept.append({"kind": "job.start", "job_id": "1"})
    kept.append({"kind": "job.end", "job_id": "1"})
    kept.append({"kind": "job.enqueue", "job_id": "2"})
    assert kept.events == 3 and kept.records == [{"kind": "job.start", "job_id": "1"}]
    assert fed == [{"kind": "job.enqueue", "job_id": "2"}]


def test_a_fast_lane_hands_a_record_appended_without_a_recorder_to_a_step_that_takes_fields():
    scan = measures.Scan()
    kept = sweep.KeptKinds((), feed=scan.handlers)
    kept.append({"job_id": "1", "call_sid": "CA1", "t": 1.0, "kind": "job.enqueue", "source": "sim", "proc": "web"})
    kept.append({"job_id": "1", "call_sid": "CA1", "attempt": 1, "worker": "w", "t": 3.0, "kind": "job.start",
                 "source": "sim", "proc": "w"})
    assert kept.events == 2 and scan.job_runs() == 1 and scan.summary_and_queue_waits()[1] == [2.0]


def test_a_fast_lane_feeds_a_kind_or_keeps_it_never_both():
    with pytest.raises(ValueError, match="job.start"):
        sweep.KeptKinds({"job.start"}, feed={"job.start": print})
    with pytest.raises(ValueError, match="job.begin"):
        sweep.KeptKinds((), feed={"job.begin": print})


def test_bench_measures_cpu_per_customer_against_ciw_with_waits_against_erlang_c():
    tools = customer_bench.measure(customer_bench.PointRow(run_for_row, measure_point), customers=2000, repeat=1,
                                   seeds=(1,))
    assert set(tools) == {"ciw", "simpy", "point", "full"}
    for name, t in tools.items():
        assert t.us_per_customer > 0 and 1500 < t.customers < 2500, name
    assert tools["point"].wait_ratio is not None and tools["full"].wait_ratio is None
    figures = model_bench.per_customer_figures(tools, customer_bench.full_hours_for(2000), 1)
    by_goal = {f.goal: f for f in figures if f.goal}
    assert set(by_goal) == {"ratio <= 1.0", "ratio <= 1.3"}
    assert all(f.baseline == tools["ciw"].us_per_customer for f in by_goal.values())


def test_expired_redis_keys_leave_the_models_store_so_a_long_run_holds_the_live_ones():
    from loopfix.sim.keys import PURGE_FLOOR, KeyStore

    k = KeyStore()
    for i in range(10_000):  # a dedup mark per enqueue, one a second, each living 120 s
        assert k.set(f"dedup:CA{i}:full", "t", now=float(i), ttl_s=120, nx=True)
    assert k.get("dedup:CA9999:full", 9999.0) == "t" and k.get("dedup:CA0:full", 9999.0) is None
    assert not k.set("dedup:CA9990:full", "u", now=9999.0, ttl_s=120, nx=True)  # still live: NX refuses
    assert k.flush() <= 2 * PURGE_FLOOR  # held then, expired ones included: not one per key ever set


def _garbage_after_a_point(monkeypatch=None) -> int:
    import gc

    point = next(iter(sweep.points(sweep.Grid(base="worker-crash", workers=(4,), calls_per_hour=(600.0,),
                                              outage_s=(600.0,), variants=("seed",), observe_s=900.0))))
    gc.collect()
    run = sweep.run_point(point)
    found = gc.collect()
    assert run.events == len(run.history) > 1000
    return found


def test_a_sweep_points_model_is_freed_at_once_not_left_to_the_cyclic_collector(monkeypatch):
    """Model.dispose breaks the run's reference cycles (processes' frames, the model, its
    events): the collector finds next to nothing after a point, where it found the model, its
    processes and events and the calls still held (468 objects at this point: a call nobody opens
    is freed with its run as it ends, Web.insert_run's `remember`)."""
    assert _garbage_after_a_point() < 100
    monkeypatch.setattr(Model, "dispose", lambda self: None)
    assert _garbage_after_a_point() > 300


def test_the_model_remembers_the_runs_of_calls_someone_opens_and_frees_the_others():
    """Web.insert_run's `remember`: a later request finds the run of every call whose recording
    is opened (the player's polls were answered from it), while a call nobody opens, decided at
    its arrival, leaves no entry in latest_run — its run and call are freed when the job ends."""
    s = with_settings(load_scenario("steady"), assignments={"duration_s": "900"})
    model = Model(s, s.make_policy())
    model.start()
    model.env.run(until=s.duration_s + s.drain_s)
    requested = {e["call_sid"] for e in model.history if e["kind"] == "client.request"}
    enqueued = {e["call_sid"] for e in model.history if e["kind"] == "job.enqueue"}
    assert requested and enqueued - requested
    assert set(model.latest_run) == requested & enqueued
