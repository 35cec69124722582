"""A Locust ramp-down never cuts a player's session (issue 5: the rare hung player).

Locust stops a user it finds in its think time (`_state == "waiting"`) by killing its greenlet,
and gevent delivers that kill on a later turn of the loop. A user whose think time ends in the
same turn wakes first, starts its next session, sends its first request, and the kill lands in
the middle of that request: the session has a client.start and never a request nor an end (live
worker-crash on fixed, where the storm profile ramps down from 20 users to 5 at 2,400 s, just as
the second crash begins: loops-terminate, unterminated-session, in 1 of 17 runs measured).

The test drives that interleaving exactly, with Locust's own `User.stop` against the real stack:
a PlayerUser whose think time is 0 s (its wake-up is already queued when Locust looks at it) is
stopped as the ramp-down does, at the moment it is waiting. Locust runs in a subprocess: it
monkey-patches the process with gevent, which pytest's must not be.
"""
from __future__ import annotations

if __name__ == "__main__":  # the Locust subprocess: gevent's patching before anything else imports
    from gevent import monkey

    monkey.patch_all()

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.redis, pytest.mark.stack, pytest.mark.live]

SESSION_END_WAIT_S = 60.0  # wall seconds the stopped user's session gets to end (a 202 chain at scale 0.01 takes ~8)


def _stop_a_user_as_it_wakes(run_dir: str) -> None:
    """In the Locust subprocess: one PlayerUser with no think time; once it has played a whole
    session and is waiting, Locust's graceful stop (what the ramp-down calls); then wait until
    every session it started has ended, or SESSION_END_WAIT_S."""
    import gevent
    import gevent.pool
    from locust.env import Environment
    from locust.user.task import LOCUST_STATE_WAITING

    from loopfix.loadtests import players
    from loopfix.loadtests.load_context import load_context

    ctx = load_context()

    class NoThinkPlayer(players.PlayerUser):
        host = ctx.info["app_url"]

        def wait_time(self) -> float:
            return 0.0

    user = NoThinkPlayer(Environment(user_classes=[NoThinkPlayer], stop_timeout=60))
    group = gevent.pool.Group()
    user.start(group)
    history = Path(run_dir) / f"locust-{os.getpid()}.jsonl"
    while not (history.is_file() and '"client.end"' in history.read_text(encoding="utf-8")
               and user._state == LOCUST_STATE_WAITING):
        gevent.sleep(0)
    stopped_at = time.time()
    user.stop(force=False)  # Locust's runner.stop_users with a --stop-timeout
    group.join(timeout=SESSION_END_WAIT_S)
    while time.time() - stopped_at < SESSION_END_WAIT_S:
        text = history.read_text(encoding="utf-8")
        if text.count('"client.start"') == text.count('"client.end"'):
            break
        gevent.sleep(0.1)


def test_a_user_stopped_as_its_think_time_ends_still_ends_the_session_it_started(tmp_path):
    from loopfix.harness import history as history_mod
    from loopfix.harness import invariants as inv
    from loopfix.loadtests import runner
    from loopfix.loadtest_commands import build_scenario

    scenario = build_scenario("steady", "fixed", ("workers.count=1",), 0.01, None)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stack = runner.start_stack(runner.LoadOptions(scenario, users=1), run_dir, time.time())
    try:
        env = {**stack.env("locust"), "LOOPFIX_LOAD_DIR": str(run_dir)}
        subprocess.run([sys.executable, __file__, str(run_dir)], env=env, check=True,
                       timeout=SESSION_END_WAIT_S + 60, cwd=Path(__file__).resolve().parent.parent)
    finally:
        stack.stop()
    history = history_mod.read_history(run_dir)
    starts = [e for e in history if e["kind"] == "client.start"]
    ends = {(e["client"], e["session"]): e for e in history if e["kind"] == "client.end"}
    assert len(starts) >= 2  # the played session, and the one started as the user was stopped
    cut = [e for e in starts if (e["client"], e["session"]) not in ends]
    assert cut == [], f"sessions the stop cut: {cut}"
    assert {e["outcome"] for e in ends.values()} <= set(inv.TERMINAL_OUTCOMES)
    p = history_mod.policy_from_run_info(history_mod.read_run_info(run_dir))
    assert inv.check_loops_terminate(history, p).valid is True


if __name__ == "__main__":
    _stop_a_user_as_it_wakes(sys.argv[1])
