"""The checkers on generated histories that are valid by construction (hypothesis): every
invariant holds on each."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from loopfix.harness import invariants as inv
from loopfix.reference_app.policy import backoff_delay, player_delay
from tests.invariants_support import P, ev



@st.composite
def valid_histories(draw):
    """Recordings that each wait out some retries on schedule and download once, players that
    stop within their bounds, delete jobs one at a time per business: valid by construction."""
    h: list[dict] = []
    n_calls = draw(st.integers(1, 6))
    t_clock = 0.0
    for i in range(n_calls):
        call, sid, job = f"CA{i}", f"RE{i}", str(i)
        t = t_clock + draw(st.floats(0, 50))
        h.append(ev("recording.created", t, call_sid=call, recording_sid=sid, business_id=1, has_url=True))
        h.append(ev("job.enqueue", t, job_id=job, call_sid=call, job_type="full", via="webhook"))
        t += draw(st.floats(0, 30))
        retries = draw(st.integers(0, P.max_recording_retries))
        for n in range(1, retries + 1):
            h.append(ev("job.start", t, job_id=job, call_sid=call, attempt=n, worker="w"))
            d = backoff_delay(n, P)
            h += [ev("job.retry", t + 0.1, job_id=job, call_sid=call, attempt=n, delay=d),
                  ev("job.end", t + 0.1, job_id=job, call_sid=call, outcome="retry")]
            promote = t + 0.1 + d + draw(st.floats(0, 1))
            h.append(ev("job.enqueue", promote, job_id=job, call_sid=call, job_type="full", via="retry"))
            t = promote + draw(st.floats(0, 100))
        h.append(ev("job.start", t, job_id=job, call_sid=call, attempt=retries + 1, worker="w"))
        h.append(ev("download.start", t, job_id=job, call_sid=call, recording_sid=sid))
        t += draw(st.floats(0.1, 600))
        h.append(ev("download.end", t, job_id=job, call_sid=call, recording_sid=sid, ok=True, skipped=False,
                    bytes=1))
        h.append(ev("job.end", t, job_id=job, call_sid=call, outcome="done"))
        polls = draw(st.integers(1, 1 + P.player_max_retries))
        tp = t_clock + draw(st.floats(0, 20))
        h.append(ev("client.start", tp, client=f"u{i}", session=1, call_sid=call, role="player"))
        for k in range(polls):
            last = k == polls - 1
            status = 200 if last and draw(st.booleans()) else 202
            h.append(ev("client.request", tp, client=f"u{i}", session=1, call_sid=call, status=status,
                        retry_after=None if status == 200 else 3.0, n=k + 1, audio_ok=status == 200))
            tp += player_delay(k, 3.0, P)
        outcome = "played" if status == 200 else "gave_up"
        h.append(ev("client.end", tp, client=f"u{i}", session=1, call_sid=call, outcome=outcome, requests=polls))
        t_clock = t
    t = t_clock
    for j in range(draw(st.integers(0, 3))):
        job = f"L{j}"
        h.append(ev("lead_job.request", t, business_id=1, job_id=job, existing=False, client="d"))
        h.append(ev("lead.requested", t, business_id=1, lead_id=j, job_id=job))
        for _ in range(draw(st.integers(0, 3))):
            h.append(ev("lead_job.request", t + 0.01, business_id=1, job_id=job, existing=True, client="d"))
        h.append(ev("lock.acquire", t + 1, business_id=1, op="delete_leads_bulk", owner=job, ok=True))
        h.append(ev("lead_job.start", t + 1, business_id=1, job_id=job))
        h.append(ev("lead.delete", t + 2, business_id=1, lead_id=j, job_id=job))
        h.append(ev("lead_job.end", t + 3, business_id=1, job_id=job, status="completed", processed=1))
        h.append(ev("lock.release", t + 3, business_id=1, op="delete_leads_bulk", owner=job, freed=True, holder=job))
        t += 4
    h.sort(key=lambda e: e["t"])
    return h


@settings(max_examples=60, deadline=None, database=None)
@given(valid_histories())
def test_generated_valid_histories_satisfy_every_invariant(history):
    verdicts = inv.check_all(history, P)
    assert all(v.valid is True for v in verdicts), "\n".join(inv.render_verdict(v) for v in verdicts)
