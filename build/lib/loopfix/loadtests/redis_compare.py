"""How the embedded fakeredis fallback compares with redis-server on the same short load run.

    python -m loopfix.loadtests.redis_compare --pairs 4 [--runs-dir runs/redis-compare]

Runs `steady` on `fixed` (4 s of load at time scale 0.01, 12 users, drain up to 24 s) with a
private redis-server and with fakeredis's TCP server (loadtests/fake_redis.py), alternating, and
prints one JSON line per run, then the medians per kind and their ratios (fakeredis /
redis-server). Each run's figures: wall time from nothing to verdict, drain time, Locust's
request count and median response time, the median time from a recording's webhook to its
completed download (policy seconds), whether every invariant held, and the machine's load
average at the start (a shared machine moves every live figure).
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from pathlib import Path
from typing import Any

from loopfix.loadtests import runner
from loopfix.loadtests.live_scenario import live_scenario
from loopfix.loadtests.verdicts import check_run

KINDS = ("redis-server", "fakeredis")
FIGURES = ("wall_s", "drain_wall_s", "requests", "req_median_ms", "created_to_downloaded_s")


def one_run(kind: str, runs_dir: Path) -> dict[str, Any]:
    s = live_scenario("steady", "fixed", ("drain_s=2400",), 0.01, 4)
    started = time.monotonic()
    result = runner.run_load(runner.LoadOptions(s, users=12, runs_root=runs_dir, redis_kind=kind))
    wall = time.monotonic() - started
    history, verdicts = check_run(result.run_dir)
    with open(result.run_dir / "locust_stats.csv", newline="", encoding="utf-8") as fh:
        total = next(r for r in csv.DictReader(fh) if r["Name"] == "Aggregated")
    created = {e["recording_sid"]: e["t"] for e in history if e["kind"] == "recording.created" and e.get("has_url")}
    done: dict[str, float] = {}
    for e in history:
        if e["kind"] == "download.end" and e.get("ok") and not e.get("skipped"):
            done.setdefault(e["recording_sid"], e["t"])
    waits = [done[sid] - t for sid, t in created.items() if sid in done]
    info = json.loads((result.run_dir / "run.json").read_text(encoding="utf-8"))
    return {"kind": kind, "wall_s": round(wall, 1), "drain_wall_s": round(result.drain_wall_s, 2),
            "settled": result.settled, "requests": result.requests,
            "req_median_ms": float(total["Median Response Time"]),
            "created_to_downloaded_s": round(statistics.median(waits), 1) if waits else None,
            "all_hold": all(v.valid is True for v in verdicts), "load_avg": info["load_avg_start"],
            "run_dir": str(result.run_dir)}


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per kind and the ratio fakeredis / redis-server of each figure."""
    med = {k: {f: statistics.median([r[f] for r in rows if r["kind"] == k and r[f] is not None])
               for f in FIGURES} for k in KINDS if any(r["kind"] == k for r in rows)}
    out: dict[str, Any] = {"medians": med, "runs": {k: sum(r["kind"] == k for r in rows) for k in med}}
    if len(med) == 2:
        out["ratio_fakeredis_over_redis_server"] = {
            f: round(med["fakeredis"][f] / med["redis-server"][f], 2) for f in FIGURES if med["redis-server"][f]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/redis-compare"))
    args = parser.parse_args()
    rows = []
    for _ in range(args.pairs):
        for kind in KINDS:
            rows.append(one_run(kind, args.runs_dir))
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps(summary(rows)))


if __name__ == "__main__":
    main()
