"""Redis round trips per poll request (`GET /api/recordings/file/<call_sid>`), counted on a
private redis-server that nothing else talks to.

Totals come from `INFO commandstats` deltas. Commands a Lua script runs are counted there too,
so the same window is watched with MONITOR, which names the caller of each command (a client
address, or `lua`): round trips are the commands clients sent (a script call is one), and an
`ECHO` marker before each request splits them per request. A pipelined command would count as
its own round trip here (an upper bound); the poll path sends none. The app runs in-process
(Flask test client) against the real Redis, so every figure is a count, not a timing.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from loopfix.benchmarks import poll_targets
from loopfix.benchmarks.figures import Figure
from loopfix.reference_app import create_app
from loopfix.reference_app.config import Config
from loopfix.reference_app.policy import make_policy

MARK = "loopfix-bench:"
OWN_COMMANDS = {"info", "echo", "monitor"}  # what this module itself sends


@dataclass(frozen=True)
class Scenario:
    """A poll answer: the call's download `state`, whether a worker is alive, many calls (one poll each)."""

    label: str
    state: str
    worker_alive: bool
    one_poll_per_call: bool = False
    goal: str = ""


SCENARIOS = (
    Scenario("202 queued, worker alive", "queued", True, goal="value <= 1"),
    Scenario("202 running", "running", True, goal="value <= 1"),
    Scenario("202 queued, no worker alive", "queued", False, goal="value <= 1"),
    Scenario("202 first click (creates the job)", "none", True, one_poll_per_call=True),
    Scenario("200 ready", "ready", True),
)


@dataclass(frozen=True)
class Counts:
    requests: int
    statuses: tuple[int, ...]
    round_trips: tuple[int, ...]  # per request, client-sent commands
    commands: dict[str, int]  # commandstats deltas over the window, every caller

    @property
    def max_round_trips(self) -> int:
        return max(self.round_trips)

    @property
    def mean_round_trips(self) -> float:
        return sum(self.round_trips) / len(self.round_trips)

    @property
    def commands_per_request(self) -> float:
        return sum(self.commands.values()) / self.requests


def _commandstats(conn: redis.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in conn.info("commandstats").items()}


class _Watch:
    """MONITOR in a thread from construction until `close()`: client commands per marker."""

    def __init__(self, conn: redis.Redis, watcher: redis.Redis):
        self.buckets: list[int] = []
        self._conn = conn
        self._monitor = watcher.monitor().__enter__()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        for cmd in self._monitor.listen():
            words = cmd["command"].split(" ", 1)
            name = words[0].lower()
            if name == "echo" and len(words) > 1 and words[1].startswith(MARK):
                if words[1] == MARK + "end":
                    return
                self.buckets.append(0)
            elif name not in OWN_COMMANDS and cmd["client_type"] != "lua" and self.buckets:
                self.buckets[-1] += 1

    def mark(self, i: int) -> None:
        self._conn.echo(f"{MARK}{i}")

    def close(self) -> list[int]:
        self._conn.echo(MARK + "end")
        self._thread.join(10)
        self._monitor.__exit__()
        return self.buckets


def count_scenario(client, svc, conn: redis.Redis, watcher: redis.Redis, business: tuple[int, str], sc: Scenario,
                   requests: int) -> Counts:
    """Poll in scenario `sc` `requests` times after one warm-up poll of a call in the same state."""
    conn.flushdb()
    headers = {"Authorization": f"Bearer {business[1]}"}
    calls = [poll_targets.add_call(svc, business[0], sc.state) for _ in range(1 + (requests if sc.one_poll_per_call else 1))]
    if sc.worker_alive:
        svc.coord.worker_beat()
    client.get(f"/api/recordings/file/{calls[0]}", headers=headers)  # connections open, scripts loaded
    targets = calls[1:] if sc.one_poll_per_call else [calls[1]] * requests
    watch = _Watch(conn, watcher)  # before the snapshot: its connection's handshake is not the app's
    before = _commandstats(conn)
    statuses = []
    for i, call_sid in enumerate(targets):
        watch.mark(i)
        statuses.append(client.get(f"/api/recordings/file/{call_sid}", headers=headers).status_code)
    round_trips = watch.close()
    after = _commandstats(conn)
    deltas = {k: after[k] - before.get(k, 0) for k in after if k not in OWN_COMMANDS and after[k] != before.get(k, 0)}
    return Counts(len(targets), tuple(statuses), tuple(round_trips), deltas)


# The baseline: the same poll with one call per primitive (liveness, mark check, mark, INCR,
# EXPIRE), as before the gate script; these two faults keep that path reachable.
UNFOLDED = "playback_check_then_mark,fail_fast_incr_then_expire"


def measure(redis_url: str, work_dir: Path, variant: str, faults: str = "", requests: int = 20,
            scenarios=SCENARIOS) -> dict[str, Counts]:
    """Counts for each scenario against the app built for `variant` + `faults` (history off).

    Each scenario gets an app of its own: an app remembers a live worker for a while
    (coordination.LIVENESS_TRUST_S), and the previous scenario's worker is not this one's."""
    cfg = Config(redis_url=redis_url, data_dir=work_dir / f"{variant}-{len(faults)}", run_epoch=time.time(),
                 policy=make_policy(variant, faults, 1.0, {}))
    conn, watcher = redis.Redis.from_url(redis_url), redis.Redis.from_url(redis_url)
    conn.ping()
    counts = {}
    for sc in scenarios:
        app = create_app(cfg)
        svc = app.extensions["loopfix"]
        business = poll_targets.add_business(svc)
        counts[sc.label] = count_scenario(app.test_client(), svc, conn, watcher, business, sc, requests)
    return counts


def figures(redis_url: str, work_dir: Path, requests: int = 20) -> list[Figure]:
    """Round trips per poll in `fixed`, beside the same poll with one call per primitive."""
    fixed = measure(redis_url, work_dir, "fixed", requests=requests)
    seed = measure(redis_url, work_dir, "fixed", UNFOLDED, requests=requests)
    out = []
    for sc in SCENARIOS:
        f, s = fixed[sc.label], seed[sc.label]
        out.append(Figure(
            "redis", f"round trips / poll, {sc.label}", f.max_round_trips, "round trips",
            baseline=s.max_round_trips, baseline_name=f"one call per primitive (faults {UNFOLDED})", goal=sc.goal,
            note=f"max per request; mean {f.mean_round_trips:.2f} (one call per primitive: {s.mean_round_trips:.2f}); "
                 f"{f.commands_per_request:.2f} commands/request incl. inside scripts",
            details={"requests": f.requests, "statuses": sorted(set(f.statuses)), "commandstats": f.commands,
                     "baseline_commandstats": s.commands, "baseline_statuses": sorted(set(s.statuses))}))
    return out
