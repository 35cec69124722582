"""What a long model run holds (issue 18): the world forgets the runs nothing can ask about again
(sim.world.World.forget_unreachable_runs) and the history is the same with or without it. No
test here measures memory: `python benchmarks/bench_stream.py` does."""
from __future__ import annotations

from loopfix.harness.scenario import load_scenario, with_settings
from loopfix.reference_app.events import dumps
from loopfix.sim import world
from loopfix.sim.model import Call, Run, simulate_model
from loopfix.sim.records import CompactHistory


def _busy_day(hours: float = 0.5):
    """bench's day scenario, cut short: 10,000 calls/h, a third of them played."""
    return with_settings(load_scenario("steady"), assignments={
        "duration_s": str(hours * 3600), "drain_s": "1800", "arrivals.calls_per_hour": "10000",
        "workers.count": "24", "businesses": "40", "clients.play_fraction": "0.3"})


def _run(s):
    history = CompactHistory()
    model = simulate_model(s, s.make_policy(), history=history)
    return model, [dumps(e) for e in history]


def test_a_long_run_keeps_only_the_runs_something_can_still_ask_about_and_its_history_is_unchanged(monkeypatch):
    s = _busy_day()
    model, history = _run(s)
    calls = sum(1 for line in history if '"kind":"recording.created"' in line)
    assert calls > 4000
    monkeypatch.setattr(world.World, "forget_unreachable_runs", lambda self: None)
    kept, history_kept = _run(s)
    # a call nobody opens is never remembered (sim.actors.web); every opened call's run would
    # stay to the end, after its player is gone
    opened = calls * s.recordings.url_fraction * s.clients.play_fraction
    assert len(kept.latest_run) >= opened * 0.9
    assert len(model.latest_run) < len(kept.latest_run) / 2
    assert history_kept == history


def _latest(call_sid: str = "CA1") -> tuple[dict[str, Run], Call]:
    call = Call(call_sid, "RE1", 1, True, 0.0, 1.0)
    return {call_sid: Run("1", call, "full", "done", 0.0, 3)}, call


def test_a_run_is_forgotten_only_when_neither_it_nor_its_call_is_held_elsewhere():
    latest, call = _latest()
    assert world._unreachable(latest) == []  # a player still holds the call: it may poll
    del call
    assert [r.job_id for r in world._unreachable(latest)] == ["1"]
    run = latest["CA1"]
    active = {run.job_id: run}  # queued, parked, running, orphaned: held by the world
    del run
    assert world._unreachable(latest) == []
    active.clear()
    assert len(world._unreachable(latest)) == 1


def test_simulate_keeps_its_history_where_young_collections_do_not_scan_it():
    """sim.run.simulate: the history's values, one untracked-by-content list, is in the oldest
    generation, not among the young objects the next collections go through."""
    import gc

    from loopfix.sim import simulate

    r = simulate(_busy_day(0.05))
    assert len(r.history.values) > 10_000 and not any(gc.is_tracked(v) for v in r.history.values[:1000])
    assert any(o is r.history.values for o in gc.get_objects(2))
    assert not any(o is r.history.values for o in gc.get_objects(0))




def test_a_simulated_history_is_freed_as_soon_as_its_result_is_dropped():
    """sim.run.simulate disposes of the model after the run (Model.dispose), which no longer
    holds the history: dropping the result frees it by reference counting, the cyclic collector
    off — not at the collector's next full pass, after going through every value of it."""
    import gc
    import weakref

    from loopfix.sim import simulate

    gc.disable()
    try:
        result = simulate(_busy_day(0.05))
        history = weakref.ref(result.history)
        assert len(result.history) > 4000 and result.metrics["job_runs"] > 400
        del result
        assert history() is None
    finally:
        gc.enable()


def test_a_disposed_model_its_coordination_and_its_env_are_freed_without_the_collector():
    """Model.dispose breaks the model's cycles — its coordination's op table (bound methods of
    the adapter), the idle workers in the job queue's line and the line in them — so what the
    run built goes by reference counting once the caller drops the model."""
    import gc
    import weakref

    from loopfix.sim.model import simulate_model

    s = _busy_day(0.02)
    gc.disable()
    try:
        model = simulate_model(s, s.make_policy())
        assert model.coord.ops["release_slot"] and len(model.queue.waiters) > 0
        made = [weakref.ref(o) for o in (model, model.coord, model.coord.keys, model.env, model.queue)]
        model.dispose()
        del model
        assert [ref() for ref in made] == [None] * len(made)
    finally:
        gc.enable()
