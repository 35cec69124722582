"""Capacity answers from sweep results: read rows, answer the planning questions.

A sweep (`loopfix sweep`) writes one row per grid point — the point's settings and what was
measured there (see `loopfix/sweep_commands.py`). This module only reads those rows:

- `min_workers`: the fewest workers whose p95 time to playable is at most a target at a load;
- `longest_outage`: the longest outage after which the backlog recovers within a bound;
- `mmc_agreement`: the M/M/c special case's measured mean queue wait against Erlang C;
- `metastability`: per variant, outage length x load -> recovered in time or not.

Rows go to disk as JSON Lines (`.jsonl`) or CSV (`.csv`); both read back to the same values.
"""
from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
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


def min_workers(rows: Sequence[Row], p95_target_s: float, calls_per_hour: float,
                variant: str = "fixed") -> list[dict[str, Any]]:
    """For each latency and outage length swept at `calls_per_hour`: the fewest workers whose
    p95 time to playable is <= the target on every seed (None when no swept count meets it)."""
    groups: dict[tuple[float, float], dict[int, list[Row]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if not r.get("mmc") and r.get("variant") == variant and _near(r["calls_per_hour"], calls_per_hour):
            groups[(float(r["latency_median_s"]), float(r["outage_s"]))][int(r["workers"])].append(r)
    out = []
    for (latency, outage), by_workers in sorted(groups.items()):
        ok = [w for w, rs in sorted(by_workers.items())
              if all(r.get("ttp_p95_s") is not None and r["ttp_p95_s"] <= p95_target_s for r in rs)]
        out.append({"latency_median_s": latency, "outage_s": outage, "workers": ok[0] if ok else None,
                    "swept_workers": sorted(by_workers),
                    "p95_by_workers": {w: max((r.get("ttp_p95_s") or math.inf) for r in rs)
                                       for w, rs in sorted(by_workers.items())}})
    return out


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
