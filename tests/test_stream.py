"""Histories that stream (issue 18): the invariants and the metrics fed record by record as the
model makes them give what checking the whole history gives; the compact history reads back as
the same dicts; `loopfix sim` writes its history as it runs and says how far it is."""
from __future__ import annotations

import gc
import json

import pytest
from click.testing import CliRunner

from loopfix.cli import cli
from loopfix.harness import history as history_mod
from loopfix.harness import invariants as inv
from loopfix.harness.checks_runs import FailFast, OneJobPerStorm
from loopfix.harness.scenario import load_scenario, with_settings
from loopfix.reference_app.policy import events
from loopfix.sim import simulate, simulate_checked
from loopfix.sim.records import CompactHistory, recorders

import simpy


def dicts(verdicts):
    return json.loads(json.dumps([v.to_dict() for v in verdicts], default=str))


# retry-storm [before] breaks six invariants (storms, fail-fast, backoff, downloads, audio);
# delete-storm [seed] the delete and lock ones; steady [fixed] holds all ten
CASES = [("retry-storm", "before"), ("delete-storm", "seed"), ("steady", "fixed")]


@pytest.mark.parametrize("name,variant", CASES)
def test_checking_as_the_model_runs_gives_the_verdicts_and_metrics_of_the_whole_history(name, variant):
    s = with_settings(load_scenario(name), variant=variant)
    whole = simulate(s)
    streamed = simulate_checked(s)
    assert dicts(streamed.verdicts) == dicts(inv.check_all(whole.history, whole.policy))
    assert streamed.metrics == whole.metrics
    assert streamed.events == len(whole.history)
    assert inv.overall(streamed.verdicts) is (variant == "fixed")


def test_forgetting_closed_storm_bursts_and_past_fail_fast_windows_changes_no_verdict(monkeypatch):
    s = with_settings(load_scenario("retry-storm"), variant="before")
    history, p = simulate(s).history, s.make_policy()
    whole = inv.check_all(history, p)
    monkeypatch.setattr(OneJobPerStorm, "SWEEP_MIN", 1)
    monkeypatch.setattr(FailFast, "SWEEP_MIN", 1)
    fan = inv.online(p, ordered=True).feed(history)
    swept = fan.verdicts()
    assert dicts(swept) == dicts(whole)
    storm, ff = (v for v in swept if v.name in ("one-job-per-storm", "fail-fast"))
    assert storm.valid is False and ff.valid is False
    # the sweeps did forget: most clicked recordings are held as their place alone
    held = [c for c in fan.checks if isinstance(c, OneJobPerStorm)][0].bursts.values()
    assert sum(type(b) is int for b in held) > len(held) / 2


def test_a_history_read_from_jsonl_is_judged_the_same_and_its_witnesses_are_the_records_read(tmp_path):
    s = with_settings(load_scenario("retry-storm"), variant="before")
    result = simulate(s)
    path = history_mod.write_history(tmp_path / "h.jsonl", result.history)
    read = history_mod.read_history(path)
    from_file = inv.check_all(read, result.policy)
    assert dicts(from_file) == dicts(inv.check_all(result.history, result.policy))
    witness = next(w for v in from_file for group in v.anomalies.values() for a in group for w in a.witnesses)
    assert list(witness) == sorted(witness)  # the file's key order (sorted), not the model's
    assert witness in read


def test_live_fields_beyond_the_schema_stay_in_the_witnesses():
    p = with_settings(load_scenario("steady"), variant="fixed").make_policy()
    req = {"client": "c1", "session": 1, "call_sid": "CA1", "status": 200, "retry_after": None, "n": 1,
           "audio_ok": False, "latency_s": 0.25, "t": 5.0, "kind": "client.request", "source": "live", "proc": "p"}
    v = inv.check_status_semantics([req], p)
    assert v.valid is False
    assert v.anomalies["200-without-audio"][0].witnesses == (req,)


def test_a_check_that_fails_on_an_event_is_unknown_and_the_others_still_decide():
    p = with_settings(load_scenario("steady"), variant="fixed").make_policy()
    bad = {"kind": "job.enqueue", "t": "soon", "job_id": "1", "call_sid": "CA1", "job_type": "full", "via": "playback"}
    verdicts = {v.name: v for v in inv.check_all([bad], p)}
    assert verdicts["fail-fast"].valid == inv.UNKNOWN  # float("soon")
    assert "checker-error" in verdicts["fail-fast"].anomalies
    assert verdicts["loops-terminate"].valid == inv.UNKNOWN  # its end time needs every t
    assert verdicts["no-duplicate-download"].valid is True


def test_the_compact_history_reads_back_the_records_a_list_gets():
    def run(history):
        env = simpy.Environment()
        rec = recorders(env, history)

        def proc():
            for i in range(3):
                rec.job_start("worker-1", job_id=str(i), call_sid=f"CA{i}", attempt=1, worker="worker-1")
                yield env.timeout(0.1234567)
                rec.download_end("worker-1", job_id=str(i), call_sid=f"CA{i}", recording_sid=f"RE{i}", ok=True,
                                 skipped=False, bytes=10)

        env.process(proc())
        env.run()
        return history

    plain, compact = run([]), run(CompactHistory())
    assert len(compact) == len(plain) == 6
    assert list(compact) == plain and compact == plain
    assert [list(r) for r in compact] == [list(r) for r in plain]  # key order too
    assert compact[1] == plain[1] and compact[-2:] == plain[-2:]
    assert not any(gc.is_tracked(v) for v in compact.values)  # nothing for the collector to scan
    odd = {"kind": "odd", "t": 1.0, "x": [1]}  # a record appended as a dict is kept as it is
    compact.append(odd)
    plain.append(odd)
    assert compact[6] is odd and compact[-1] is odd and list(compact) == plain and compact[::-2] == plain[::-2]
    assert compact[-7] == plain[0] and len(compact) == 7
    with pytest.raises(IndexError):
        compact[7]
    compact.append(odd)  # appended after it was indexed
    plain.append(odd)
    assert [compact[i] for i in (7, 2, -1, 0, 5)] == [plain[i] for i in (7, 2, -1, 0, 5)]
    with pytest.raises(IndexError):
        compact[-9]
    assert plain[0] == events.event("job.start", 0.0, "sim", "worker-1", job_id="0", call_sid="CA0", attempt=1,
                                    worker="worker-1")


def test_a_fanout_makes_the_recorders_of_the_kinds_it_reads_and_counts_every_kind():
    """The model's recorder of a kind a consumer reads is the fan-out's (Fanout.recorder): the
    consumer's step gets the fields at the rounded clock; every record is counted by kind, those
    of a kind nothing reads and those appended as dicts too; the end time is the last record's."""
    from loopfix.harness.stream import Fanout

    got = []

    class Starts:
        def __init__(self):
            self.handlers = {"job.start": events.from_record(self.on_start)}

        def on_start(self, job_id, t):
            got.append((job_id, t))

    fan, env = Fanout([Starts()]), simpy.Environment()
    rec = recorders(env, fan)

    def proc():
        yield env.timeout(1.23456789)
        for i in "12":
            rec.job_start("w", job_id=i, call_sid="CA" + i, attempt=1, worker="w")
        yield env.timeout(1.0)
        rec.slot_acquire("w", job_id="2", business_id="b", ok=True)  # nothing reads it

    env.process(proc())
    env.run()
    assert got == [("1", 1.234568), ("2", 1.234568)]
    assert (fan.count("job.start"), fan.count("slot.acquire"), fan.count("job.end")) == (2, 1, 0)
    assert fan.events == 3 and fan.last_t() == 2.234568
    fan.append(events.event("job.start", 3.0, "live", "p", job_id="3", call_sid="CA3", attempt=1, worker="w"))
    assert got[-1] == ("3", 3.0) and fan.count("job.start") == 3 and fan.events == 4 and fan.last_t() == 3.0
    with pytest.raises(TypeError):  # a value too many is refused, as by any recorder
        rec.job_start("w", "4", "CA4", 1, "w", got.append)


def test_loopfix_sim_writes_the_history_as_it_runs_and_logs_its_progress(tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(cli, ["sim", "retry-storm", "--variant", "before", "--out", str(out), "--format", "plain"])
    assert r.exit_code == 1, r.output  # before breaks invariants
    s = with_settings(load_scenario("retry-storm"), variant="before")
    whole = simulate(s)
    expected = "".join(events.dumps(r) + "\n" for r in whole.history)
    assert (out / history_mod.HISTORY_FILE).read_text(encoding="utf-8") == expected
    assert json.loads((out / "verdicts.json").read_text()) == dicts(inv.check_all(whole.history, whole.policy))
    assert history_mod.read_run_info(out)["variant"] == "before"
    progress = [line for line in r.stderr.splitlines() if line.startswith("sim: retry-storm [before]: ")]
    assert progress[-1].startswith("sim: retry-storm [before]: 100% (") and f"{len(whole.history):,} events" in progress[-1]
    assert len(progress) == 11  # the start, then each tenth of the simulated time


def test_a_check_fed_by_hand_gives_the_verdict_of_its_function():
    s = with_settings(load_scenario("retry-storm"), variant="before")
    history, p = simulate(s).history, s.make_policy()
    for name in ("loops-terminate", "fail-fast", "backoff-schedule"):
        c = inv.CHECKS[name](p)
        for e in history:
            c.feed(e)
        assert dicts([c.verdict()]) == dicts([inv.CHECKERS[name](history, p)])
    assert inv.check_fail_fast(history, p).valid is False


def ev(kind, t, **fields):
    return events.event(kind, t, "live", "p", **fields)


def test_a_list_out_of_time_order_is_judged_as_a_whole_history():
    p = with_settings(load_scenario("steady"), variant="fixed").make_policy()
    job = {"job_id": "1", "call_sid": "CA1"}
    retry = ev("job.retry", 0.0, attempt=1, delay=60.0, phase="calllog", **job)
    requeue = ev("job.enqueue", 200.0, job_type="full", via="retry", **job)
    start = ev("job.start", 201.0, attempt=2, worker="w", **job)
    # every worker down from 50 s to 199 s: the retry due at 60 s could not be promoted before 199 s
    outage = [ev("outage.start", 50.0, target="workers", how="stop", workers=0),
              ev("outage.end", 199.0, target="workers", how="stop", workers=0)]
    late = inv.check_backoff_schedule([retry, requeue, start], p)
    assert late.valid is False and "retry-too-late" in late.anomalies
    assert inv.check_backoff_schedule([retry, requeue, start] + outage, p).valid is True  # outage listed after
    # a session's request listed after its end still belongs to it
    session = {"client": "c", "session": 1, "call_sid": "CA1"}
    listed = [ev("client.start", 0.0, role="player", **session),
              ev("client.end", 5.0, outcome="played", requests=1, **session),
              ev("client.request", 4.0, status=200, retry_after=None, n=1, audio_ok=True, **session)]
    v = inv.check_loops_terminate(listed, p)
    assert v.valid is True and v.figure["sessions"] == 1


def _broken_on_record(calls):
    def broken(self, e):  # reads whole records: the dispatcher builds the dict for it
        calls.append(e["t"])
        raise KeyError("recording_sid")
    return broken


def _broken_on_fields(calls):
    def broken(self, ok=None, t=None):  # a step of the fields it names: no dict built for it
        calls.append(t)
        raise KeyError("recording_sid")
    return broken


@pytest.mark.parametrize("handler", [_broken_on_record, _broken_on_fields])
def test_a_check_that_fails_on_the_models_stream_is_unknown_no_longer_fed_and_the_others_still_decide(
        monkeypatch, handler):
    from loopfix.harness.checks_runs import NoDuplicateDownload

    calls = []
    monkeypatch.setattr(NoDuplicateDownload, "on_end", handler(calls))
    s = with_settings(load_scenario("steady"), variant="fixed")
    verdicts = {v.name: v for v in simulate_checked(s).verdicts}
    assert verdicts["no-duplicate-download"].valid == inv.UNKNOWN
    assert "KeyError" in verdicts["no-duplicate-download"].anomalies["checker-error"][0].facts["error"]
    assert len(calls) == 1  # its first event failed it: it is not fed again
    assert all(v.valid is True for name, v in verdicts.items() if name != "no-duplicate-download")


def test_simulate_measures_as_the_model_runs_what_a_pass_over_its_history_measures():
    from loopfix.sim.metrics import history_metrics

    for name, variant in CASES:
        result = simulate(with_settings(load_scenario(name), variant=variant))
        after = history_metrics(list(result.history))
        assert {k: v for k, v in result.metrics.items() if k in after} == after


def test_a_checked_run_lets_go_of_its_checks_without_the_garbage_collector(monkeypatch):
    import gc
    import weakref

    from loopfix.harness.stream import Fanout

    refs, close = [], Fanout.close

    def watched(self):
        refs.extend(weakref.ref(c) for c in self.checks)
        close(self)

    monkeypatch.setattr(Fanout, "close", watched)
    gc.disable()
    try:
        run = simulate_checked(with_settings(load_scenario("steady"), variant="fixed"))
        assert len(refs) == len(inv.INVARIANTS) + 1  # and the metrics
        assert all(r() is None for r in refs)  # freed by reference counting as it returned
    finally:
        gc.enable()
    assert all(v.valid is True for v in run.verdicts)
