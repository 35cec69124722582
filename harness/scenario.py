"""The scenario format: one TOML file drives both the SimPy model and a Locust load test.

A scenario says what the *environment* does — how many calls arrive, how slow and faulty
Twilio is, how late the CallLog commits, how many workers there are and when they go down,
what the clients click — and which variant of the system runs (`variant`, `faults`,
`[policy]` overrides of `loopfix.reference_app.policy.Policy`). It decides nothing about the system's
behaviour: that is `policy.py`'s job.

Every duration is in *policy seconds* (`_s` suffix); `time_scale` only matters to a live run,
which multiplies durations by it. Parsing validates everything up front: a bad field raises a
ValueError that names the field, says what it must be and what it got.

Layout (every table optional, every field has a default)::

    name, description, seed, duration_s, drain_s, variant, faults, time_scale, users, businesses
    [arrivals]     calls_per_hour, profile = [[start_s, calls_per_hour], ...]
    [recordings]   url_fraction, odd_url_fraction, archive_calls
    [twilio]       latency_median_s, latency_sigma, slow_fraction, slow_range_s, fault_rate
    [calllog]      commit_delay_s, late_fraction, late_delay_s
    [workers]      count, scheduler_tick_s, job_overhead_s, transcribe_s, crash_detect_s
    [[outages]]    target, how, at_s, duration_s, and per target:
                     workers   how = stop | crash, workers (how many, 0 = all)
                     redis     how = redis_pause (unreachable, keeps its keys) |
                               redis_restart (killed at at_s, a fresh empty one from the
                               end: every key and queued job is gone)
                     scheduler how = stop (delayed jobs are not promoted)
                     twilio    how = degrade, latency_median_s and/or fault_rate in force
                               for the window (the [twilio] values before and after)
    [clients]      play_fraction, play_delay_s, double_click_fraction, storm_fraction,
                   storm_clicks, storm_spread_s, refresh_fraction, refreshes, refresh_after_s,
                   archive_plays_per_hour
    [bulk_delete]  leads_per_business, requests_per_hour, clicks_per_request, click_spread_s,
                   batch_s, batch_failure_rate, resume_after_s
    [policy]       any Policy constant, e.g. stuck_timeout_s = 900
"""
from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from loopfix.reference_app import policy as policy_mod

SCENARIOS_DIR = Path(__file__).resolve().parent.parent / "scenarios"

# Field checks, by name in the field's metadata: (test, what it must be).
_CHECKS: dict[str, tuple[Any, str]] = {
    "fraction": (lambda v: 0.0 <= v <= 1.0, "a number between 0 and 1"),
    "nonneg": (lambda v: v >= 0, "a number >= 0"),
    "positive": (lambda v: v > 0, "a number > 0"),
    "count": (lambda v: v >= 1, "a whole number >= 1"),
    "count0": (lambda v: v >= 0, "a whole number >= 0"),
    "range": (lambda v: len(v) == 2 and 0 <= v[0] <= v[1], "a pair [low, high] with 0 <= low <= high"),
}


def _f(default: Any, check: str | None = None, choices: Sequence[str] = ()) -> Any:
    return field(default=default, metadata={"check": check, "choices": tuple(choices)})


@dataclass(frozen=True)
class Arrivals:
    """Poisson call arrivals: a constant rate, or a step profile of (start_s, calls_per_hour)."""

    calls_per_hour: float = _f(600.0, "nonneg")
    profile: tuple[tuple[float, float], ...] = _f(())

    def rate_at(self, t_s: float) -> float:
        """Calls per hour in force at `t_s`."""
        rate = self.calls_per_hour
        for start_s, per_hour in self.profile:
            if t_s >= start_s:
                rate = per_hour
        return rate


@dataclass(frozen=True)
class Recordings:
    """Which calls have a recording URL, how many carry '.json' in odd places, and how many
    older recordings (URL stored, file not local, no run) clients may open."""

    url_fraction: float = _f(0.97, "fraction")
    odd_url_fraction: float = _f(0.0, "fraction")
    archive_calls: int = _f(0, "count0")


@dataclass(frozen=True)
class Twilio:
    """Download time: lognormal around latency_median_s, with a slow_fraction taking
    slow_range_s (the seeds: large recordings take 5-10 min); fault_rate of fetches fail."""

    latency_median_s: float = _f(4.0, "positive")
    latency_sigma: float = _f(0.6, "nonneg")
    slow_fraction: float = _f(0.02, "fraction")
    slow_range_s: tuple[float, float] = _f((300.0, 600.0), "range")
    fault_rate: float = _f(0.01, "fraction")


@dataclass(frozen=True)
class CallLog:
    """When the CallLog row commits after the recording webhook: usually commit_delay_s, but a
    late_fraction of calls commit only after late_delay_s (the missing-CallLog case)."""

    commit_delay_s: tuple[float, float] = _f((0.0, 0.5), "range")
    late_fraction: float = _f(0.0, "fraction")
    late_delay_s: tuple[float, float] = _f((60.0, 600.0), "range")


@dataclass(frozen=True)
class Workers:
    """RQ workers on one queue, the scheduler's tick, and fixed costs of a job."""

    count: int = _f(4, "count")
    scheduler_tick_s: float = _f(1.0, "positive")
    job_overhead_s: float = _f(0.5, "positive")
    transcribe_s: tuple[float, float] = _f((0.0, 0.0), "range")
    crash_detect_s: float = _f(30.0, "nonneg")


# Which `how` each outage target takes (the first is its default).
OUTAGE_KINDS: dict[str, tuple[str, ...]] = {
    "workers": ("stop", "crash"),
    "redis": ("redis_pause", "redis_restart"),
    "scheduler": ("stop",),
    "twilio": ("degrade",),
}


@dataclass(frozen=True)
class Outage:
    """One window when a target is down or degraded. workers: how many workers (0 = all);
    latency_median_s / fault_rate: a twilio window's values (None: the [twilio] value)."""

    target: str = _f("workers", choices=tuple(OUTAGE_KINDS))
    how: str = _f("stop", choices=tuple(dict.fromkeys(h for hs in OUTAGE_KINDS.values() for h in hs)))
    at_s: float = _f(0.0, "nonneg")
    duration_s: float = _f(60.0, "positive")
    workers: int = _f(0, "count0")
    latency_median_s: float | None = _f(None, "positive")
    fault_rate: float | None = _f(None, "fraction")

    @property
    def end_s(self) -> float:
        return self.at_s + self.duration_s

    def workers_down(self, total: int) -> int:
        """The history's `workers` of this window (outage.start/end): how many of `total`
        workers it takes down, 0 = every one (and 0 for a window on another target)."""
        return 0 if self.target != "workers" or self.workers == 0 or self.workers >= total else self.workers


@dataclass(frozen=True)
class Clients:
    """The client mix. A share of new recordings is opened in the browser player (seed 002)
    play_delay_s after it was created; of those, some double-click, some storm (storm_clicks
    clicks within storm_spread_s), some refresh the page (refreshes reloads, refresh_after_s
    apart, while it does not play). archive_plays_per_hour opens older recordings."""

    play_fraction: float = _f(0.3, "fraction")
    play_delay_s: tuple[float, float] = _f((5.0, 300.0), "range")
    double_click_fraction: float = _f(0.1, "fraction")
    storm_fraction: float = _f(0.0, "fraction")
    storm_clicks: int = _f(8, "count")
    storm_spread_s: float = _f(0.3, "nonneg")
    refresh_fraction: float = _f(0.0, "fraction")
    refreshes: int = _f(3, "count")
    refresh_after_s: float = _f(30.0, "positive")
    archive_plays_per_hour: float = _f(0.0, "nonneg")


@dataclass(frozen=True)
class BulkDelete:
    """Bulk-deleters: requests_per_hour delete requests over all businesses, each a burst of
    clicks_per_request clicks; each deletes that business's remaining leads."""

    leads_per_business: int = _f(0, "count0")
    requests_per_hour: float = _f(0.0, "nonneg")
    clicks_per_request: int = _f(1, "count")
    click_spread_s: float = _f(0.3, "nonneg")
    batch_s: tuple[float, float] = _f((0.5, 1.5), "range")
    batch_failure_rate: float = _f(0.0, "fraction")
    resume_after_s: float = _f(60.0, "nonneg")


# How the media stand-in may answer one fetch (loadtests/twilio_stub.py serves them).
FETCH_MODES = ("ok", "429", "500", "503", "truncate", "stall", "timeout", "slow")


@dataclass(frozen=True)
class Conformance:
    """Target mode's conformance plan (scenarios/conformance.toml; loadtests/target/conformance.py):
    fresh recordings whose first fetches fail as `flaky` says (one recording per entry, its
    stand-in modes comma-separated), `slow` ones served slowly under a click storm, `doomed`
    ones whose every fetch fails (never clicked, watched past their whole schedule), `storms`
    fresh recordings under a click storm, `outage_recordings` created and played while every
    worker is stopped, `replays` recording callbacks sent twice, `unsigned` ones sent unsigned,
    and a bulk-delete click storm with `foreign_ids` of another tenant's leads mixed in."""

    flaky: tuple[str, ...] = _f(("503", "timeout,500", "stall,503,429"))
    slow: int = _f(1, "count0")
    slow_s: float = _f(400.0, "positive")  # a slow recording's healthy transfer time, past seed's 300 s stuck age
    doomed: int = _f(1, "count0")
    storms: int = _f(2, "count0")
    outage_recordings: int = _f(2, "count0")
    replays: int = _f(2, "count0")
    unsigned: int = _f(2, "count0")
    foreign_ids: int = _f(3, "count0")


@dataclass(frozen=True)
class Scenario:
    """One named scenario; `policy` holds overrides for `policy.make_policy`."""

    name: str = _f("unnamed")
    description: str = _f("")
    seed: int = _f(1, "count0")
    duration_s: float = _f(3600.0, "positive")
    drain_s: float = _f(3600.0, "nonneg")
    variant: str = _f("fixed", choices=policy_mod.VARIANTS)
    faults: tuple[str, ...] = _f(())
    time_scale: float = _f(1.0, "positive")
    users: int = _f(20, "count")
    businesses: int = _f(3, "count")
    arrivals: Arrivals = Arrivals()
    recordings: Recordings = Recordings()
    twilio: Twilio = Twilio()
    calllog: CallLog = CallLog()
    workers: Workers = Workers()
    outages: tuple[Outage, ...] = ()
    clients: Clients = Clients()
    bulk_delete: BulkDelete = BulkDelete()
    conformance: Conformance | None = None  # target mode's scripted plan, when the scenario has one
    policy: tuple[tuple[str, Any], ...] = ()

    def make_policy(self) -> policy_mod.Policy:
        """The Policy this scenario runs: variant, extra faults, time scale and [policy]."""
        return policy_mod.make_policy(self.variant, list(self.faults), self.time_scale, dict(self.policy))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for run.json and --json): tuples become lists, [policy] a table."""
        out = _plain(dataclasses.asdict(self))
        out["policy"] = dict(self.policy)
        return out


_TABLES: dict[str, type] = {
    "arrivals": Arrivals,
    "recordings": Recordings,
    "twilio": Twilio,
    "calllog": CallLog,
    "workers": Workers,
    "clients": Clients,
    "bulk_delete": BulkDelete,
    "conformance": Conformance,
}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _convert(where: str, f: dataclasses.Field, raw: Any) -> Any:
    """One field's raw TOML value → its typed, checked value, or a ValueError saying what to fix."""
    default = f.default
    check = f.metadata.get("check")
    choices = f.metadata.get("choices") or ()

    def bad(what: str) -> ValueError:
        return ValueError(f"{where} must be {what}, got {raw!r}")

    if default is None:  # an optional number (an outage window's override)
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise bad(_CHECKS[check][1] if check else "a number")
        value: Any = float(raw)
    elif isinstance(default, bool):
        if not isinstance(raw, bool):
            raise bad("true or false")
        value = raw
    elif isinstance(default, int):
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise bad(_CHECKS.get(check, (None, "a whole number"))[1] if check else "a whole number")
        value = raw
    elif isinstance(default, float):
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise bad(_CHECKS[check][1] if check else "a number")
        value = float(raw)
    elif isinstance(default, str):
        if not isinstance(raw, str):
            raise bad("a string")
        value = raw
    elif f.name == "profile":
        if not isinstance(raw, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, (int, float)) and x >= 0 for x in p) for p in raw
        ):
            raise bad("a list of [start_s, calls_per_hour] pairs of numbers >= 0")
        value = tuple(sorted((float(a), float(b)) for a, b in raw))
    elif f.name == "flaky":
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            raise bad('a list of comma-separated stand-in modes, e.g. ["503", "timeout,500"]')
        modes = {m.strip() for x in raw for m in x.split(",")}
        if not modes <= set(FETCH_MODES):
            raise bad(f"modes among {', '.join(FETCH_MODES)}")
        value = tuple(raw)
    elif f.name == "faults":
        items = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
            raise bad("a list of fault names")
        value = tuple(sorted(policy_mod.parse_faults(",".join(items))))
    elif isinstance(default, tuple):  # a [low, high] range
        if not isinstance(raw, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in raw):
            raise bad(_CHECKS[check][1])
        value = tuple(float(x) for x in raw)
    else:  # pragma: no cover - every field type is listed above
        raise bad("a supported value")
    if choices and value not in choices:
        raise bad(f"one of {', '.join(choices)}")
    if check and not _CHECKS[check][0](value):
        raise bad(_CHECKS[check][1])
    return value


def _build(cls: type, table: Any, where: str) -> Any:
    if not isinstance(table, dict):
        raise ValueError(f"[{where}] must be a table, got {table!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} in [{where}]; known: {', '.join(sorted(fields))}")
    return cls(**{k: _convert(f"{where}.{k}", fields[k], v) for k, v in table.items()})


def parse_scenario(data: Mapping[str, Any], name: str = "unnamed") -> Scenario:
    """A scenario from a parsed TOML table (or the same fields in Python), fully validated."""
    data = dict(data)
    data.setdefault("name", name)
    fields = {f.name: f for f in dataclasses.fields(Scenario)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} at the top level; known: {', '.join(sorted(fields))}")
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key == "conformance" and raw is None:  # plain data of a scenario without the table
            continue
        if key in _TABLES:
            values[key] = _build(_TABLES[key], raw, key)
        elif key == "outages":
            if not isinstance(raw, list):
                raise ValueError("outages must be an array of tables: [[outages]] target = ..., how = ..., at_s = ...")
            values[key] = tuple(_build(Outage, _outage_table(o), f"outages[{i}]") for i, o in enumerate(raw))
        elif key == "policy":
            if not isinstance(raw, dict):
                raise ValueError(f"[policy] must be a table of Policy constants, got {raw!r}")
            values[key] = tuple(sorted(raw.items()))
        else:
            values[key] = _convert(key, fields[key], raw)
    scenario = Scenario(**values)
    _check_consistency(scenario)
    return scenario


def _outage_table(o: Any) -> Any:
    """An [[outages]] table as given: None (plain data of an unset override) is left out, and
    `how` defaults to the target's first kind (so `target = "twilio"` alone means degrade)."""
    if not isinstance(o, dict):
        return o
    o = {k: v for k, v in o.items() if v is not None}
    if "how" not in o and o.get("target") in OUTAGE_KINDS:
        o["how"] = OUTAGE_KINDS[o["target"]][0]
    return o


def _check_consistency(s: Scenario) -> None:
    """Cross-field rules, after each field is valid on its own."""
    try:
        s.make_policy()
    except ValueError as exc:
        raise ValueError(f"[policy]: {exc}") from None
    for i, o in enumerate(s.outages):
        _check_outage(i, o)
        if o.workers > s.workers.count:
            raise ValueError(f"outages[{i}].workers is {o.workers} but [workers] count is {s.workers.count}")
    c = s.clients
    if c.double_click_fraction + c.storm_fraction + c.refresh_fraction > 1.0:
        raise ValueError(
            "[clients] double_click_fraction + storm_fraction + refresh_fraction must be <= 1 "
            f"(got {c.double_click_fraction + c.storm_fraction + c.refresh_fraction:g})"
        )


def _check_outage(i: int, o: Outage) -> None:
    """One outage's how and fields fit its target."""
    kinds = OUTAGE_KINDS[o.target]
    if o.how not in kinds:
        owner = next(t for t, hs in OUTAGE_KINDS.items() if o.how in hs)
        raise ValueError(f"outages[{i}]: a {o.target} outage must have how = "
                         f"{' or '.join(repr(k) for k in kinds)}, got {o.how!r} (a {owner} outage's)")
    window = [name for name in ("latency_median_s", "fault_rate") if getattr(o, name) is not None]
    if o.target == "twilio":
        if not window:
            raise ValueError(f"outages[{i}]: a twilio degrade window needs latency_median_s and/or fault_rate "
                             "(the stand-in's values for the window)")
        if o.workers:
            raise ValueError(f"outages[{i}]: workers applies to a workers outage, not to a twilio one")
    elif window:
        raise ValueError(f"outages[{i}]: {window[0]} applies only to target = 'twilio' (how = 'degrade'), "
                         f"not to a {o.target} outage")


def load_scenario(name_or_path: str | Path, scenarios_dir: Path = SCENARIOS_DIR) -> Scenario:
    """A scenario by name (a file under scenarios/) or by path; ValueError when missing or bad."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = scenarios_dir / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(list_scenarios(scenarios_dir)) or "none"
        raise ValueError(f"no scenario {str(name_or_path)!r}: give a path to a .toml file or one of: {known}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    try:
        return parse_scenario(data, name=path.stem)
    except ValueError as exc:
        raise ValueError(f"{path.name}: {exc}") from None


def list_scenarios(scenarios_dir: Path = SCENARIOS_DIR) -> list[str]:
    """Names of the scenario files under `scenarios_dir`."""
    return sorted(p.stem for p in scenarios_dir.glob("*.toml")) if scenarios_dir.is_dir() else []


def with_settings(
    s: Scenario,
    variant: str | None = None,
    seed: int | None = None,
    assignments: Mapping[str, str] | None = None,
) -> Scenario:
    """Apply command-line settings: --variant, --seed and --set NAME=VALUE.

    NAME is either a scenario field (`duration_s`, `workers.count`, `twilio.fault_rate`) or a
    Policy constant (`stuck_timeout_s`, or `policy.stuck_timeout_s`). Values are parsed as TOML
    scalars (`8`, `0.5`, `[1, 2]`, `"text"`), bare words as strings. ValueError when bad.
    """
    data = s.to_dict()
    if variant is not None:
        data["variant"] = variant
    if seed is not None:
        data["seed"] = seed
    policy_constants = set(policy_mod._OVERRIDABLE) | {"max_retries"}
    for name, text in (assignments or {}).items():
        value = _toml_scalar(text)
        head, _, tail = name.partition(".")
        if head == "policy" and tail:
            data["policy"][tail] = value
        elif tail and head in _TABLES:
            data[head][tail] = value
        elif not tail and name in data and name not in _TABLES and name not in ("outages", "policy"):
            data[name] = value
        elif not tail and name in policy_constants:
            data["policy"][name] = value
        else:
            raise ValueError(
                f"--set {name}: not a scenario field (e.g. duration_s, workers.count) nor a policy constant "
                f"(e.g. stuck_timeout_s)"
            )
    return parse_scenario(data, name=s.name)


def _toml_scalar(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
