"""Capacity answers from sweep results: read rows, answer the planning questions.

A sweep (`loopfix sweep`) writes one row per grid point — the point's settings and what was
measured there (see `loopfix/sweep_commands.py`). This module only reads those rows:

- `judge`: whether one point meets a service level — it counts every session (played, gave
  up, errored), and a point whose backlog had not drained when observation ended is *not
  drained (overloaded)*, never a pass;
- `min_workers`: the fewest workers that meet the service level at a load;
- `recommendation_lines`: the one-line answer `loopfix sweep` prints and the report can show
  ("N workers hold p95 ... up to Y calls/h; at Z calls/h no worker count recovers");
- `longest_outage`: the longest outage after which the backlog recovers within a bound;
- `mmc_agreement`: the M/M/c special case's measured mean queue wait against Erlang C;
- `metastability`: per variant, outage length x load -> recovered in time or not.

Rows go to disk as JSON Lines (`.jsonl`) or CSV (`.csv`); both read back to the same values.
`merge_shards` joins the rows of a grid's shards (`loopfix sweep --shard K/N`) into grid order.

Sessions, as the model's players end them: *played* (a 200/206), *gave up* (the player stopped
retrying), *not found* (a 404: the call has no recording to play — not a capacity failure, and
still counted among the sessions), and *errors*: everything else (a 500 "worker offline", a
session still open at the end).
"""
from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

Row = Mapping[str, Any]
# Columns that identify a point (the rest is measured).
POINT_KEYS = ("base", "variant", "workers", "calls_per_hour", "latency_median_s", "outage_s", "seed", "mmc",
              "utilisation_target")


def write_rows(path: Path, rows: Iterable[Row]) -> Path:
    rows = list(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        columns = list(dict.fromkeys(k for r in rows for k in r))
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, columns)
            writer.writeheader()
            for r in rows:
                writer.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in r.items()})
    else:
        path.write_text("".join(json.dumps(dict(r), sort_keys=True) + "\n" for r in rows), encoding="utf-8")
    return path


# Columns every row of a sweep needs, besides which the rest may be missing (None).
REQUIRED_COLUMNS = ("workers", "calls_per_hour", "variant", "outage_s", "latency_median_s")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a sweep file (.jsonl or .csv); ValueError when it is not one (a row that is not
    an object, or lacks one of REQUIRED_COLUMNS: a history, or any other table)."""
    if not path.is_file():
        raise ValueError(f"{path}: no such sweep results file")
    if path.suffix == ".csv":
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                rows: list[Any] = [{k: _cell(v) for k, v in r.items()} for r in csv.DictReader(fh)]
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a CSV file ({exc})") from None
    else:
        rows = []
        for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path} line {i}: not JSON ({exc.msg})") from None
    for i, r in enumerate(rows, 1):
        missing = [c for c in REQUIRED_COLUMNS if c not in r] if isinstance(r, dict) else list(REQUIRED_COLUMNS)
        if missing:
            raise ValueError(f"{path}: not sweep results from `loopfix sweep` (row {i} has no "
                             f"{', '.join(missing)})")
    return rows


def _cell(text: str) -> Any:
    if text == "":
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"True": True, "False": False}.get(text, text)


def _near(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)


MAX_FAILED = 0.01  # the default bound on the gave-up and the error rate: each under 1 % of sessions
NOT_DRAINED = "not drained (overloaded)"


@dataclass(frozen=True)
class Judgement:
    """One row against a service level: the counts it rests on and, when it misses, why."""

    sessions: int
    played: int
    gave_up: int
    errors: int
    ttp_p95_s: float | None
    drained: bool | None  # None: a row written before sweeps measured it
    recovered: bool
    reasons: tuple[str, ...]  # empty when the row meets the level

    @property
    def meets(self) -> bool:
        return not self.reasons

    @property
    def gave_up_rate(self) -> float:
        return self.gave_up / self.sessions if self.sessions else 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.sessions if self.sessions else 0.0


def session_counts(row: Row) -> dict[str, int]:
    """sessions, played, gave_up, not_found and errors (every other ending) of a row."""
    total = int(row.get("sessions") or 0)
    played, gave_up, not_found = (int(row.get(f"sessions_{k}") or 0) for k in ("played", "gave_up", "not_found"))
    return {"sessions": total, "played": played, "gave_up": gave_up, "not_found": not_found,
            "errors": total - played - gave_up - not_found}


def judge(row: Row, p95_target_s: float, max_failed: float = MAX_FAILED) -> Judgement:
    """Does the point meet "p95 time to playable <= target, fewer than `max_failed` of the
    sessions gave up and fewer errored, and the run recovered"? Recovered: its backlog drained
    before observation ended and, after an outage, got back to normal while the load went on."""
    n = session_counts(row)
    drained, p95 = row.get("drained"), row.get("ttp_p95_s")
    recovered = row.get("recovery_s") is not None
    reasons = []
    if drained is False:
        reasons.append(NOT_DRAINED)
    elif drained is None:
        reasons.append("no drain figure in the row (a sweep from before loopfix measured it: run it again)")
    if drained is not False and not recovered:
        reasons.append("did not recover from the outage while the load went on")
    if n["sessions"] == 0:
        reasons.append("no playback sessions")
    else:
        if n["gave_up"] / n["sessions"] >= max_failed:
            reasons.append(f"{_pct(n['gave_up'] / n['sessions'])} gave up")
        if n["errors"] / n["sessions"] >= max_failed:
            reasons.append(f"{_pct(n['errors'] / n['sessions'])} errors")
    if p95 is None:
        reasons.append("nothing played")
    elif p95 > p95_target_s:
        reasons.append(f"p95 {p95:.1f} s")
    return Judgement(n["sessions"], n["played"], n["gave_up"], n["errors"], p95, drained, recovered, tuple(reasons))


def _pct(x: float) -> str:
    return f"{x * 100:.1f} %"


def min_workers(rows: Sequence[Row], p95_target_s: float, calls_per_hour: float,
                variant: str = "fixed", max_failed: float = MAX_FAILED) -> list[dict[str, Any]]:
    """For each latency and outage length swept at `calls_per_hour`: the fewest workers that
    meet the level (`judge`) on every seed (None when no swept count does), and each worker
    count's judgement on its worst seed."""
    groups: dict[tuple[float, float], dict[int, list[Row]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if not r.get("mmc") and r.get("variant") == variant and _near(r["calls_per_hour"], calls_per_hour):
            groups[(float(r["latency_median_s"]), float(r["outage_s"]))][int(r["workers"])].append(r)
    out = []
    for (latency, outage), by_workers in sorted(groups.items()):
        judged = {w: [judge(r, p95_target_s, max_failed) for r in rs] for w, rs in sorted(by_workers.items())}
        ok = [w for w, js in judged.items() if all(j.meets for j in js)]
        out.append({"latency_median_s": latency, "outage_s": outage, "workers": ok[0] if ok else None,
                    "swept_workers": sorted(by_workers),
                    "judgement_by_workers": {w: _worst(js) for w, js in judged.items()},
                    "p95_by_workers": {w: max((r.get("ttp_p95_s") or math.inf) for r in rs)
                                       for w, rs in sorted(by_workers.items())}})
    return out


def _worst(js: Sequence[Judgement]) -> Judgement:
    return max(js, key=lambda j: (len(j.reasons), j.gave_up_rate + j.error_rate, j.ttp_p95_s or math.inf))


@dataclass(frozen=True)
class Recommendation:
    """The capacity answer of one latency (and outage length) swept: `workers` (N) meet the
    level at every swept load up to `up_to_calls_per_hour` (Y); at `fails_at_calls_per_hour`
    (Z), the lowest load where no swept worker count meets it, `none_recovers` says whether
    that is because no worker count even drained or recovered."""

    p95_target_s: float
    max_failed: float
    latency_median_s: float
    outage_s: float
    swept_workers: tuple[int, ...]
    swept_loads: tuple[float, ...]
    workers: int | None
    up_to_calls_per_hour: float | None
    fails_at_calls_per_hour: float | None
    none_recovers: bool


def recommendations(rows: Sequence[Row], p95_target_s: float, max_failed: float = MAX_FAILED,
                    variant: str = "fixed") -> list[Recommendation]:
    """One Recommendation per latency swept, over the rows without an outage (steady load: the
    outage rows answer `longest_outage`), or over the shortest outage swept when none is 0."""
    rows = [r for r in rows if not r.get("mmc") and r.get("variant") == variant]
    if not rows:
        return []
    outage = min(float(r["outage_s"]) for r in rows)
    out = []
    for latency in sorted({float(r["latency_median_s"]) for r in rows}):
        cells: dict[float, dict[int, list[Row]]] = defaultdict(lambda: defaultdict(list))
        for r in rows:
            if _near(r["outage_s"], outage) and _near(r["latency_median_s"], latency):
                cells[float(r["calls_per_hour"])][int(r["workers"])].append(r)
        loads = sorted(cells)
        meeting = {load: {w for w, rs in by_w.items() if all(judge(r, p95_target_s, max_failed).meets for r in rs)}
                   for load, by_w in cells.items()}
        common: set[int] | None = None
        workers = up_to = None
        for load in loads:
            common = set(meeting[load]) if common is None else common & meeting[load]
            if not common:
                break
            workers, up_to = min(common), load
        fails_at = next((load for load in loads if not meeting[load]), None)
        none_recovers = fails_at is not None and all(
            r.get("drained") is False or r.get("recovery_s") is None for rs in cells[fails_at].values() for r in rs)
        out.append(Recommendation(p95_target_s, max_failed, latency, outage,
                                  tuple(sorted({w for by_w in cells.values() for w in by_w})), tuple(loads),
                                  workers, up_to, fails_at, none_recovers))
    return out


def recommendation_line(rec: Recommendation, name_latency: bool = False) -> str:
    """The recommendation in words (`name_latency`: say which latency, when several were swept)."""
    bound = f"{rec.max_failed * 100:g} %"
    where = []
    if name_latency:
        where.append(f"Twilio latency {rec.latency_median_s:g} s")
    if rec.outage_s > 0:
        where.append(f"a {rec.outage_s:g} s outage")
    prefix = f"[{', '.join(where)}] " if where else ""
    level = f"p95 time-to-playable <= {rec.p95_target_s:g} s with < {bound} gave up and < {bound} errors"
    swept = f"swept {_span(rec.swept_workers)} workers"
    if rec.workers is None:
        head = f"no swept worker count ({_span(rec.swept_workers)}) holds {level} at any swept load"
    else:
        head = f"{rec.workers} workers hold {level} up to {rec.up_to_calls_per_hour:g} calls/h"
    if rec.fails_at_calls_per_hour is None:
        return f"{prefix}{head}, the highest load swept"
    tail = "no worker count recovers" if rec.none_recovers else "no worker count meets it"
    return f"{prefix}{head}; at {rec.fails_at_calls_per_hour:g} calls/h {tail} ({swept})"


def recommendation_lines(rows: Sequence[Row], p95_target_s: float, max_failed: float = MAX_FAILED,
                         variant: str = "fixed") -> list[str]:
    """What `loopfix sweep --p95-target` prints and the report shows: one line per latency swept
    (one line for a grid of one latency)."""
    recs = recommendations(rows, p95_target_s, max_failed, variant)
    return [recommendation_line(r, name_latency=len(recs) > 1) for r in recs]


def _span(ws: Sequence[int]) -> str:
    return f"{ws[0]}-{ws[-1]}" if len(ws) > 1 else str(ws[0])


def not_drained(rows: Sequence[Row]) -> list[Row]:
    """The rows whose backlog had not drained when observation ended (overloaded points)."""
    return [r for r in rows if not r.get("mmc") and r.get("drained") is False]


def merge_shards(tables: Sequence[tuple[str, Sequence[Row]]]) -> list[dict[str, Any]]:
    """The rows of a grid's shards (name, rows) as one run writes them: every point once, in
    grid order. ValueError naming the file when a row has no grid place, the files come from
    different grids, a point is in two files, or points are in none (a shard missing or a
    point that failed)."""
    if not tables:
        raise ValueError("nothing to merge: give the shards' result files")
    placed: dict[int, tuple[str, Row]] = {}
    grid: tuple[Any, Any, str] | None = None
    for name, rows in tables:
        for r in rows:
            if r.get("grid_index") is None or r.get("grid_size") is None:
                raise ValueError(f"{name}: rows without grid_index/grid_size (not from `loopfix sweep`)")
            this = (r["grid_size"], r.get("grid_digest"), name)
            if grid is None:
                grid = this
            elif this[:2] != grid[:2]:
                raise ValueError(f"{name} and {grid[2]} come from different grids")
            i = int(r["grid_index"])
            if i in placed:
                raise ValueError(f"point {i} is in both {placed[i][0]} and {name}")
            placed[i] = (name, r)
    if grid is None:
        raise ValueError("the files hold no rows")
    missing = sorted(set(range(int(grid[0]))) - set(placed))
    if missing:
        shown = ", ".join(map(str, missing[:8])) + (", ..." if len(missing) > 8 else "")
        raise ValueError(f"{len(missing)} of {grid[0]} points are in none of the files (points {shown}): "
                         f"a shard missing, or a point that failed")
    return [dict(placed[i][1]) for i in sorted(placed)]


def longest_outage(rows: Sequence[Row], within_s: float) -> list[dict[str, Any]]:
    """For each variant, workers, load and latency: the longest swept outage that, like every
    shorter one, recovers within `within_s` on every seed (None when even the shortest does not)."""
    groups: dict[tuple, dict[float, list[Row]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if not r.get("mmc"):
            key = (r["variant"], int(r["workers"]), float(r["calls_per_hour"]), float(r["latency_median_s"]))
            groups[key][float(r["outage_s"])].append(r)
    out = []
    for (variant, workers, cph, latency), by_outage in sorted(groups.items()):
        best = None
        for outage, rs in sorted(by_outage.items()):
            if not all(r.get("recovery_s") is not None and r["recovery_s"] <= within_s for r in rs):
                break
            best = outage
        out.append({"variant": variant, "workers": workers, "calls_per_hour": cph, "latency_median_s": latency,
                    "longest_outage_s": best, "swept_outages": sorted(by_outage)})
    return out


def mmc_agreement(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """M/M/c rows pooled over seeds per (workers, utilisation): measured mean queue wait
    (weighted by jobs), Erlang C's, and the relative error."""
    groups: dict[tuple[int, float], list[Row]] = defaultdict(list)
    for r in rows:
        if r.get("mmc") and r.get("queue_wait_n"):
            groups[(int(r["workers"]), float(r["utilisation_target"]))].append(r)
    out = []
    for (c, rho), rs in sorted(groups.items()):
        n = sum(int(r["queue_wait_n"]) for r in rs)
        measured = sum(float(r["queue_wait_mean_s"]) * int(r["queue_wait_n"]) for r in rs) / n
        expected = float(rs[0]["erlang_c_wait_s"])
        out.append({"workers": c, "utilisation": rho, "jobs": n, "seeds": len(rs), "measured_wait_s": measured,
                    "erlang_c_wait_s": expected, "relative_error": (measured - expected) / expected})
    return out


def metastability(rows: Sequence[Row], within_s: float) -> dict[str, dict[tuple[float, float], bool]]:
    """variant -> {(outage_s, calls_per_hour): whether every run at that cell (over the
    workers, latencies and seeds swept) recovered within `within_s`}."""
    cells: dict[str, dict[tuple[float, float], list[Row]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if not r.get("mmc"):
            cells[r["variant"]][(float(r["outage_s"]), float(r["calls_per_hour"]))].append(r)
    return {v: {k: all(r.get("recovery_s") is not None and r["recovery_s"] <= within_s for r in rs)
                for k, rs in sorted(c.items())} for v, c in sorted(cells.items())}
