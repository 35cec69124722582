"""The scenario's outage windows, applied to the running stack on the scenario's clock.

| outage                        | live                                                        |
|-------------------------------|-------------------------------------------------------------|
| workers / stop                | SIGTERM (RQ's warm shutdown: the running job finishes), restart at the end |
| workers / crash               | SIGKILL of the worker and its work horse, restart at the end |
| redis / redis_pause           | SIGSTOP of redis-server, SIGCONT at the end                  |
| redis / redis_restart         | SIGKILL of redis-server; an empty one on the same port at the end |
| scheduler / stop              | SIGSTOP of the workers (their ticker promotes delayed jobs), SIGCONT at the end |
| twilio / degrade              | the stand-in's latency and/or error rate set (its /_config) for the window |

`workers = 0` means all of them. Each window is recorded as outage.start / outage.end (proc
`env`), which the checker needs: nothing-lost is judged only once outages are over.

Twilio's [twilio] table: the stand-in runs at the median latency and the fault rate; a
`slow_fraction` of the time (in windows of SLOW_PERIOD_S) its latency is set, via its
/_config, to a draw from `slow_range_s`, so that share of downloads is slow. A degrade window
replaces the median latency and/or the fault rate while it lasts (the slow tail goes on); both
threads set the stand-in through `twilio_settings`, so neither undoes the other.
"""
from __future__ import annotations

import random
import signal
import threading
import time
from typing import Callable

from loopfix.harness.scenario import Outage, Scenario
from loopfix.loadtests.stack import Stack
from loopfix.reference_app.events import HistoryWriter

SLOW_PERIOD_S = 100.0  # policy seconds per slow/normal latency cycle


class FaultPlan(threading.Thread):
    """Runs the outage windows (and Twilio's slow windows) from `load_start` (wall epoch s)."""

    def __init__(self, stack: Stack, scenario: Scenario, load_start: float, history: HistoryWriter):
        super().__init__(name="loopfix-faults", daemon=True)
        self.stack, self.scenario, self.load_start, self.history = stack, scenario, load_start, history
        self.scale = stack.config.policy.time_scale
        self.stop_event = threading.Event()
        self.outages_over = threading.Event()
        self.errors: list[str] = []
        self.twilio_lock = threading.Lock()
        self.twilio_slow: float | None = None  # the slow draw in force, if any
        self.twilio_window: Outage | None = None  # the degrade window in force, if any

    def at(self, policy_s: float) -> bool:
        """Sleep until `policy_s` into the load; False when the plan was stopped first."""
        return not self.stop_event.wait(max(0.0, self.load_start + policy_s * self.scale - time.time()))

    def run(self) -> None:
        steps: list[tuple[float, int, Callable[[], None]]] = []
        for i, o in enumerate(self.scenario.outages):
            targets = self.targets(o)
            steps.append((o.at_s, 2 * i, lambda o=o, t=targets: self.begin(o, t)))
            steps.append((o.end_s, 2 * i + 1, lambda o=o, t=targets: self.end(o, t)))
        if self.scenario.twilio.slow_fraction > 0:
            threading.Thread(target=self.slow_windows, name="loopfix-slow-twilio", daemon=True).start()
        for when, _order, step in sorted(steps, key=lambda s: (s[0], s[1])):
            if not self.at(when):
                break
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - recorded and reported; the run goes on
                self.errors.append(f"at {when:g} s: {type(exc).__name__}: {exc}")
        self.outages_over.set()

    def targets(self, o: Outage) -> list[str]:
        workers = self.stack.workers()
        return workers if o.target != "workers" or o.workers == 0 else workers[: o.workers]

    def begin(self, o: Outage, workers: list[str]) -> None:
        self.history.emit("outage.start", target=o.target, how=o.how, workers=o.workers_down(len(self.stack.workers())))
        if o.how == "redis_restart":
            self.stack.kill_redis()
        elif o.target == "redis":
            self.stack.pause_redis()
        elif o.target == "twilio":
            self.set_twilio(window=o)
        elif o.target == "scheduler":
            for name in workers:
                self.stack.procs[name].signal(signal.SIGSTOP)
        elif o.how == "crash":
            for name in workers:
                self.stack.kill_worker(name)
        else:
            for name in workers:
                self.stack.procs[name].signal(signal.SIGTERM)
            for name in workers:
                self.stack.stop_worker(name)

    def end(self, o: Outage, workers: list[str]) -> None:
        if o.how == "redis_restart":
            self.stack.start_redis()
        elif o.target == "redis":
            self.stack.resume_redis()
        elif o.target == "twilio":
            self.set_twilio(window=None)
        elif o.target == "scheduler":
            for name in workers:
                self.stack.procs[name].signal(signal.SIGCONT)
        else:
            for name in workers:
                self.stack.restart_worker(name, wait=False)
            self.stack.wait_workers(workers)
        self.history.emit("outage.end", target=o.target, how=o.how, workers=o.workers_down(len(self.stack.workers())))

    def slow_windows(self) -> None:
        tw = self.scenario.twilio
        rng = random.Random(self.scenario.seed)
        t = 0.0
        while t < self.scenario.duration_s + self.scenario.drain_s:
            slow_for = tw.slow_fraction * SLOW_PERIOD_S
            try:
                if not self.at(t):
                    return
                self.set_twilio(slow=rng.uniform(*tw.slow_range_s))
                if not self.at(t + slow_for):
                    return
                self.set_twilio(slow=None)
            except Exception as exc:  # noqa: BLE001 - the stand-in may be gone (a stop, Ctrl-C) or answer half
                if self.stop_event.is_set():
                    return  # the run is ending: its stand-in goes with it
                self.errors.append(f"twilio latency change at {t:g} s: {type(exc).__name__}: {exc}")
            t += SLOW_PERIOD_S

    _KEEP = object()

    def set_twilio(self, slow: float | None | object = _KEEP, window: Outage | None | object = _KEEP) -> dict:
        """Change the slow draw or the degrade window in force and send the stand-in the result."""
        with self.twilio_lock:
            if slow is not self._KEEP:
                self.twilio_slow = slow
            if window is not self._KEEP:
                self.twilio_window = window
            return self.stack.stub_config(**twilio_settings(self.scenario, self.twilio_slow, self.twilio_window))

    def stop(self) -> None:
        self.stop_event.set()


def twilio_settings(scenario: Scenario, slow_s: float | None, window: Outage | None) -> dict:
    """The stand-in's /_config for the moment: the [twilio] table, a degrade window's median
    latency and fault rate over it, a slow draw (fixed latency, as the model's uniform slow
    draw) over the latency."""
    tw = scenario.twilio
    latency = window.latency_median_s if window is not None and window.latency_median_s is not None \
        else tw.latency_median_s
    rate = window.fault_rate if window is not None and window.fault_rate is not None else tw.fault_rate
    if slow_s is not None:
        return {"latency_s": slow_s, "latency_sigma": 0.0, "error_rate": rate}
    return {"latency_s": latency, "latency_sigma": tw.latency_sigma, "error_rate": rate}
