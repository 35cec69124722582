"""benchmarks/profile_poll.py's in-process measure: it drives the app's WSGI callable the way
gunicorn does (file wrapper included) and each poll state gets its answer, or it refuses to
report a figure."""
from __future__ import annotations

import pytest

from loopfix.benchmarks import profile_poll


def test_in_process_measures_each_state_after_checking_its_answer():
    best = profile_poll.in_process(["ready", "queued", "none"], requests=3, repeat=1)
    assert set(best) == {"bare", "ready", "queued", "none"} and all(v > 0 for v in best.values())


def test_in_process_refuses_a_state_that_answers_otherwise(monkeypatch):
    monkeypatch.setitem(profile_poll.EXPECTED_STATUS, "ready", 202)
    with pytest.raises(RuntimeError, match="ready: answered 200"):
        profile_poll.in_process(["ready"], requests=1, repeat=1)
