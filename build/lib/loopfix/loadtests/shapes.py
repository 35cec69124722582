"""Storm profiles: how many users click at each point of a run, as a data table and a pure
`users_at`. A table row is (from this fraction of the scenario's duration, this share of the
run's users); after the duration the users stay while the run drains (they start nothing
new, see load_context) and the shape ends once the drain is over.

`PROFILES` names the tables; `profile_shape(name)` is the LoadTestShape the locustfile exposes
(Locust uses the one shape class it finds in the locustfile). Locust is imported only there:
importing locust monkey-patches the process with gevent, which the `loopfix` CLI must not be.

Locust's own -u, -r and -t, when given on its command line (or in its web UI's form), win over
the run's (`Given`, the shape's `use_common_options`): -u is the profile's users (its peak; the
fixed users come on top, as with `loopfix loadtest --users`), -r the spawn rate, -t ends the
shape after that many wall seconds, drain or not. `Given.describe` is the one line the
locustfile logs about them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

Table = tuple[tuple[float, float], ...]

PROFILES: dict[str, Table] = {
    "steady": ((0.0, 1.0),),
    # a surge: a quarter of the users, everyone at once for the middle third, then a quarter
    "storm": ((0.0, 0.25), (1 / 3, 1.0), (2 / 3, 0.25)),
    # two surges with quiet between them
    "waves": ((0.0, 0.2), (0.15, 1.0), (0.35, 0.2), (0.6, 1.0), (0.8, 0.2)),
    # climbing in five steps to everyone
    "ramp": ((0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.0)),
    # no closed-loop users: recordings are opened at the scenario's rates, as in the model
    # (players.ScenarioArrivalsUser, one of the fixed users)
    "scenario": ((0.0, 0.0),),
}


def users_at(table: Table, t_s: float, duration_s: float, drain_s: float, users: int) -> int | None:
    """Users at `t_s` policy seconds into the run; None once duration and drain are over."""
    if t_s >= duration_s + drain_s:
        return None
    share = table[0][1]
    for start, value in table:
        if t_s >= start * duration_s:
            share = value
    if t_s >= duration_s:  # draining: keep whoever is there, they finish what they started
        share = table[-1][1]
    return max(1, math.ceil(share * users)) if share > 0 else 0


@dataclass(frozen=True)
class Given:
    """Locust's -u, -r and -t as given on its command line (None: not given)."""

    users: int | None = None
    spawn_rate: float | None = None
    run_time_s: float | None = None

    @classmethod
    def of(cls, options: Any) -> "Given":
        """From Locust's parsed options (num_users, spawn_rate, run_time; None or 0 when not given)."""
        return cls(getattr(options, "num_users", None) or None, getattr(options, "spawn_rate", None) or None,
                   getattr(options, "run_time", None) or None)

    def describe(self, profile: str, users: int) -> str:
        """What the shape runs with, and where each figure comes from."""
        peak = self.users or users
        parts = [f"profile {profile}: {peak} users at the peak" + (" (-u)" if self.users else " (the run's)"),
                 f"spawn rate {self.spawn_rate:g}/s (-r)" if self.spawn_rate else f"spawn rate {max(10, peak)}/s",
                 f"stops after {self.run_time_s:g} s (-t)" if self.run_time_s else "runs the scenario's duration "
                 "and drain"]
        return "; ".join(parts)


def shape_tick(table: Table, run_time_wall_s: float, time_scale: float, duration_s: float, drain_s: float,
               users: int, fixed_users: int, given: Given) -> tuple[int, float] | None:
    """(users, spawn rate) at `run_time_wall_s` into the run, or None when the shape is over:
    the profile's table, with -u/-r/-t taking the place of the run's figures where given."""
    if given.run_time_s is not None and run_time_wall_s >= given.run_time_s:
        return None
    peak = given.users or users
    n = users_at(table, run_time_wall_s / time_scale, duration_s, drain_s, peak)
    return None if n is None else (n + fixed_users, given.spawn_rate or max(10.0, float(peak)))


def profile_shape(name: str, users: int, fixed_users: int, duration_s: float, drain_s: float,
                  time_scale: float) -> Any:
    """A LoadTestShape class for profile `name` (KeyError when unknown). `fixed_users` (the
    webhook sender, the deleter) are added on top: Locust spawns fixed_count users first. Its
    `given` (Locust's -u/-r/-t, set by the locustfile once Locust has parsed its options) is
    empty until then; with `live_options` set instead (the web UI, whose form writes Locust's
    parsed options when a test starts) each tick reads them."""
    from locust import LoadTestShape

    table = PROFILES[name]

    class StormShape(LoadTestShape):
        __doc__ = f"profile {name}: {table}"
        use_common_options = True  # Locust passes -u/-r/-t through instead of ignoring them
        given = Given()
        live_options = None

        def tick(self):
            given = self.given if self.live_options is None else Given.of(self.live_options)
            return shape_tick(table, self.get_run_time(), time_scale, duration_s, drain_s, users, fixed_users, given)

    return StormShape
