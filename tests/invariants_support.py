"""Shared by the checker tests (test_invariants*.py): the fixed policy, a live-event builder, and
`only`, which asserts a verdict is broken by exactly one anomaly type."""
from __future__ import annotations

from loopfix.harness import invariants as inv
from loopfix.reference_app.policy import make_policy
from loopfix.reference_app.policy.events import event

P = make_policy("fixed")


def ev(kind, t, **fields):
    return event(kind, t, "live", "test", **fields)


def only(verdict, anomaly_type):
    """The verdict is broken by exactly this anomaly type; return its anomalies."""
    assert verdict.valid is False, inv.render_verdict(verdict)
    assert set(verdict.anomalies) == {anomaly_type}, inv.render_verdict(verdict)
    return verdict.anomalies[anomaly_type]
