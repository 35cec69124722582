"""reports/measures.py and sim/metrics.py on tiny literal histories: what the workers did after an
outage, the share of sessions that did not play, the model's capacity figures."""
from __future__ import annotations

from loopfix.reports import measures


def _e(t, kind, **kw):
    return {"t": float(t), "kind": kind, **kw}


def test_after_outage_counts_what_job_runs_did_until_the_backlog_recovered():
    """Three jobs wait out a 100 s outage; after it one run is deferred (re-enqueued) and three
    download; the backlog is back to normal at the 60 s sample after the outage."""
    history = [
        _e(10, "outage.start", target="workers"),
        _e(20, "job.enqueue", job_id="a"), _e(30, "job.enqueue", job_id="b"), _e(40, "job.enqueue", job_id="c"),
        _e(110, "outage.end", target="workers"),
        _e(111, "job.start", job_id="a"), _e(111, "job.end", job_id="a", outcome="deferred"),
        _e(112, "job.enqueue", job_id="a"),
        _e(113, "job.start", job_id="b"), _e(113, "download.start", job_id="b"),
        _e(114, "job.enqueue", job_id="d"),
        _e(120, "job.start", job_id="c"), _e(120, "download.start", job_id="c"),
        _e(125, "job.start", job_id="a"), _e(125, "download.start", job_id="a"),
        _e(200, "job.enqueue", job_id="e"),
        _e(400, "job.start", job_id="d"),
    ]
    after = measures.after_outage(history, until_s=1000)
    assert after == {"outage_end_s": 110.0, "recovery_s": 70.0, "window_s": 70.0, "waiting_at_outage_end": 3,
                     "waiting_at_window_end": 1, "job_runs": 4, "downloads": 3, "deferred": 1, "failed": 0,
                     "worker_sleeps": 0, "stuck": 0, "new_jobs": 1, "re_enqueued": 1}


def test_after_outage_of_a_backlog_that_never_recovers_runs_to_the_end_of_arrivals():
    history = [_e(0, "outage.start", target="workers"), *(_e(i, "job.enqueue", job_id=str(i)) for i in range(1, 9)),
               _e(10, "outage.end", target="workers"), _e(11, "job.stuck", job_id="1", call_sid="CA1", reason="age"),
               _e(11, "job.enqueue", job_id="1"), _e(500, "job.enqueue", job_id="late")]
    after = measures.after_outage(history, until_s=300)
    assert after["recovery_s"] is None and after["window_s"] == 290.0
    assert (after["waiting_at_outage_end"], after["stuck"], after["re_enqueued"], after["new_jobs"]) == (8, 1, 1, 0)
    assert measures.after_outage([_e(1, "job.enqueue", job_id="x")]) is None


def test_unplayed_share_leaves_out_sessions_for_calls_without_a_recording():
    assert measures.unplayed_share({"played": 97, "gave_up": 2, "worker_offline": 1, "not_found": 50}) == 0.03
    assert measures.unplayed_share({"not_found": 3}) is None
    assert measures.row_outcomes({"sessions_played": 4, "sessions_gave_up": None, "workers": 2}) == \
        {"played": 4, "gave_up": 0}


def test_jobs_per_recording_counts_distinct_job_ids_and_waits_run_from_the_latest_enqueue():
    """One pass gives a sweep row both: call 1 had job a (enqueued twice: one id) and job b, call 2
    job c; a's wait runs from its re-enqueue; a job enqueued before `after_t` has no wait."""
    history = [
        _e(1, "job.enqueue", job_id="a", call_sid="CA1"), _e(2, "job.enqueue", job_id="c", call_sid="CA2"),
        _e(5, "job.enqueue", job_id="a", call_sid="CA1"), _e(6, "job.start", job_id="a"),
        _e(7, "job.start", job_id="c"), _e(8, "job.enqueue", job_id="b", call_sid="CA1"),
        _e(11, "job.start", job_id="b"),
        _e(12, "download.end", job_id="b", recording_sid="RE1", ok=True, skipped=False),
        _e(13, "download.end", job_id="a", recording_sid="RE1", ok=True, skipped=True),
        _e(14, "download.end", job_id="c", recording_sid="RE2", ok=False, skipped=False),
    ]
    summary, waits = measures.summary_and_queue_waits(history, after_t=3)
    assert summary["jobs_per_recording"] == 1.5 and summary["downloads_per_recording"] == 1.0
    assert summary["sessions"] == 0 and waits == [1.0, 3.0]
    assert (summary, waits) == (measures.summary(history), measures.queue_waits(history, after_t=3))


def test_a_scan_fed_record_by_record_gives_the_figures_of_the_pass_and_counts_job_runs():
    """A model run feeds its records to a Scan's steps as it makes them (sweep_commands.run_for_row):
    the same figures as the pass over the history; the kinds it does not read go nowhere."""
    history = [
        _e(1, "job.enqueue", job_id="a", call_sid="CA1"), _e(2, "client.request", client="k", session=1,
                                                               call_sid="CA1", status=404),
        _e(3, "job.start", job_id="a"), _e(4, "job.end", job_id="a", outcome="done"),
        _e(5, "download.end", job_id="a", recording_sid="RE1", ok=True, skipped=False),
        _e(6, "client.request", client="k", session=1, call_sid="CA1", status=200),
        _e(7, "client.end", client="k", session=1, outcome="played"), _e(8, "job.start", job_id="z"),
    ]
    scan = measures.Scan(after_t=0.5)
    for e in history:
        if e["kind"] in scan.handlers:
            scan.handlers[e["kind"]](e)
    assert set(scan.handlers) == set(measures.Scan.KINDS)
    assert scan.summary_and_queue_waits() == measures.summary_and_queue_waits(history, after_t=0.5)
    assert scan.summary_and_queue_waits()[0]["playbacks"] == 1 and scan.job_runs() == 2


def _capacity_history():
    """Sessions that play at once, after a 503, never; a call enqueued twice under one job id and
    one under two; a recording downloaded before it was created, one without a URL."""
    def req(t, session, status):
        return _e(t, "client.request", client="u1", session=session, call_sid="CA1", status=status)

    return [
        req(1, 1, 200), req(2, 1, 200),  # played at once (its second request changes nothing)
        req(3, 2, 503), req(5, 2, 503), req(9, 2, 206), req(10, 2, 200),  # played 6 s after its first request
        req(4, 3, 404), _e(11, "client.end", client="u1", session=3, outcome="not_found"),
        _e(12, "client.end", client="u1", session=1, outcome="played"),
        _e(13, "job.enqueue", call_sid="CA1", job_id="1"), _e(14, "job.enqueue", call_sid="CA1", job_id="1"),
        _e(15, "job.enqueue", call_sid="CA2", job_id="2"), _e(16, "job.enqueue", call_sid="CA2", job_id="3"),
        _e(17, "job.enqueue", call_sid="CA2", job_id="4"), _e(18, "job.start", job_id="1"),
        _e(19, "job.start", job_id="1"),
        _e(20, "download.end", recording_sid="RE2", ok=True, skipped=False),  # before RE2 was created
        _e(21, "recording.created", recording_sid="RE1", has_url=True),
        _e(22, "recording.created", recording_sid="RE2", has_url=True),
        _e(23, "recording.created", recording_sid="RE3", has_url=False),
        _e(24, "download.end", recording_sid="RE2", ok=True, skipped=False),
        _e(25, "download.end", recording_sid="RE1", ok=True, skipped=True),
        _e(26, "download.end", recording_sid="RE1", ok=False, skipped=False),
        _e(27, "recording.created", recording_sid="RE2", has_url=True),  # again: its downloads stay
    ]


def test_history_metrics_times_sessions_to_their_first_play_and_counts_jobs_and_downloads():
    from loopfix.sim.metrics import history_metrics

    m = history_metrics(_capacity_history())
    assert m["events"] == 24
    def n_mean_max(figure):
        return m[figure]["n"], m[figure]["mean"], m[figure]["max"]

    assert n_mean_max("time_to_playable_s") == (2, 3.0, 6.0)  # 0 and 6 s
    assert n_mean_max("requests_per_playback") == (2, 3.0, 4)  # 2 and 4
    assert m["session_outcomes"] == {"not_found": 1, "played": 1}
    assert n_mean_max("jobs_per_recording") == (2, 2.0, 3)  # 1 and 3
    assert n_mean_max("downloads_per_recording") == (2, 1.0, 2)  # 0 and 2
    assert m["job_runs"] == 2


def test_history_metrics_given_the_count_of_a_kind_it_only_counts_gives_the_figures_of_the_pass():
    """sim.run.simulate feeds HistoryMetrics no job.start: the history counts them (add_count)."""
    from types import SimpleNamespace

    from loopfix.sim.metrics import HistoryMetrics, history_metrics

    history = _capacity_history()
    m = HistoryMetrics()
    for e in history:
        if e["kind"] in m.uncounted:
            m.uncounted[e["kind"]](e)
    m.take_counts(SimpleNamespace(count=lambda kind: sum(1 for e in history if e["kind"] == kind)))
    assert m.result(len(history)) == history_metrics(history)
