"""The verdict of a live run: every invariant on the run directory's merged history, against
the policy its run.json describes — the model's checkers, with the backoff tolerance a live
stack needs stated.

A live retry is promoted by a worker's ticker, which polls every `tick` wall seconds (half a
policy second, at least 5 ms); on a loaded machine the promotion can come later still, by
the time the ticker thread waits for a CPU. The backoff check's absolute tolerance is
therefore one tick plus LIVE_LAG_WALL_S, in policy seconds (at time_scale 0.01:
(0.005 + 0.25) / 0.01 = 25.5 s), beside its relative 2 %. Measured on this 2-core machine
shared with other test runs (load average ~10): promotions up to ~0.2 s late under a storm.
A quiet run measures far tighter (see tests/test_loadtest.py's backoff test).
"""
from __future__ import annotations

from pathlib import Path

from loopfix.harness import history as history_mod
from loopfix.harness import invariants as inv
from loopfix.reference_app.config import Config
from loopfix.reference_app.policy import Policy
from loopfix.reference_app.services import Services
from loopfix.reference_app.worker import tick_seconds

LIVE_LAG_WALL_S = 0.25  # scheduling delay allowed to a ticker on a loaded 2-core machine


def backoff_abs_tolerance_s(p: Policy) -> float:
    """Policy seconds a live promotion may lag: one ticker tick plus LIVE_LAG_WALL_S."""
    return p.policy_seconds(tick_seconds(Services(Config(policy=p))) + LIVE_LAG_WALL_S)


def check_live(history: list[dict], p: Policy) -> list[inv.Verdict]:
    """Every invariant, in DESIGN.md's order; backoff-schedule with the live tolerance."""
    tol = backoff_abs_tolerance_s(p)
    return [inv.check_backoff_schedule(history, p, abs_tol_s=tol) if name == "backoff-schedule"
            else inv.CHECKERS[name](history, p) for name in inv.INVARIANTS]


def check_run(run_dir: Path) -> tuple[list[dict], list[inv.Verdict]]:
    """(merged history, verdicts) of a run directory."""
    history = history_mod.read_history(run_dir)
    return history, check_live(history, history_mod.policy_from_run_info(history_mod.read_run_info(run_dir) or {}))
