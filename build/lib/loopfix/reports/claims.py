"""The claims ledger: every claim the seed write-ups make, against what was measured.

Each claim names the invariant whose verdicts test it (verdicts come from the checker,
`harness/invariants.py`; this module only tallies them per variant) and, where the claim states
a number, the figure that measures it. A claim's status is read off the tallies:

- `holds`: the seeds' code as written (variant `seed`) keeps it in every run;
- `holds only on fixed`: `seed` breaks it somewhere, the reference fixes keep it everywhere;
- `fails`: `fixed` breaks it too, or its number is wrong whatever the code;
- `not exercised`: no run produced the events that would test it (or its stated number).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

VARIANTS = ("before", "seed", "fixed")


@dataclass(frozen=True)
class Claim:
    seed: str  # which write-up (../shared/seeds/NNN_*.txt)
    quote: str
    invariant: str
    figure: str  # the report figure that shows the evidence
    number: str | None = None  # a stated number checked separately: 52min | lock12x | dedup120


CLAIMS: tuple[Claim, ...] = (
    Claim("000", "Max retry time: ~52 minutes (60+120+240+480+960 seconds) before permanent failure",
          "backoff-schedule", "backoff", "52min"),
    Claim("000", "No infinite retry loop - max 5 retries with backoff 60s→120s→240s→480s→960s",
          "backoff-schedule", "backoff"),
    Claim("000", "Duplicate API calls return the same job_id (idempotent)", "idempotent-delete", "ledger"),
    Claim("000", "Job doesn't fail when leads are already deleted; every lead deleted once",
          "nothing-lost", "queue"),
    Claim("001", "Dedup key only set after a successful enqueue; HTTP 500 on a real failure (breaks loop)",
          "status-semantics", "requests"),
    Claim("002", "Worker offline: 3 attempts in 10 minutes, then 500 worker_not_processing_queue",
          "fail-fast", "queue"),
    Claim("002", "UI retries only on 202 and stops on 404/500: no infinite polling loop", "loops-terminate",
          "requests"),
    Claim("002", "200 ready / 202 with Retry-After / 404 only when there is no recording URL",
          "status-semantics", "requests"),
    Claim("003", "PlaybackDedup: clicks within 15 seconds do not enqueue again", "one-job-per-storm",
          "requests"),
    Claim("003", "Lock stays held during pause, released only on completed/failed: no duplicates in long jobs",
          "lock-exclusive", "ledger"),
    Claim("003", "Lock TTL 3600 s is 12x MAX_RUNTIME 300 s, refreshed on every heartbeat: the lock never lapses",
          "lock-exclusive", "ledger", "lock12x"),
    Claim("004", "INFLIGHT_TTL 900 s > max download time: no more duplicate downloads", "no-duplicate-download",
          "ttp_cdf"),
    Claim("004", "Worker re-enqueues with backoff 2→40 s and continues: it never blocks", "worker-never-blocks",
          "capacity"),
    Claim("004", "Dedup 120 s: users can retry 2 minutes after a failure instead of 30", "nothing-lost",
          "ledger", "dedup120"),
    Claim("000", "Recordings eventually process (or fail gracefully) instead of looping forever",
          "loops-terminate", "metastability"),
)


def tally(runs: Sequence[Mapping[str, Any]], invariant: str) -> dict[str, dict[str, Any]]:
    """variant -> {holds: True/False/"unknown"/None (no run), runs, broken_in: [where], witness}."""
    out: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        found = [(r, v) for r in runs if r["variant"] == variant for v in r["verdicts"] if v["name"] == invariant]
        broken = [(r, v) for r, v in found if v["valid"] is False]
        undecided = [(r, v) for r, v in found if v["valid"] not in (True, False)]
        holds: Any = None if not found else False if broken else "unknown" if undecided else True
        witness = None
        if broken:
            r, v = broken[0]
            anomaly = next(iter(v["anomalies"].values()))[0]
            witness = {"where": r["label"], "type": anomaly["type"], "facts": anomaly["facts"],
                       "events": anomaly["witnesses"][:2]}
        out[variant] = {"holds": holds, "runs": len(found), "broken_in": sorted({r["label"] for r, _ in broken}),
                        "witness": witness}
    return out


def status(per_variant: Mapping[str, Mapping[str, Any]], number_holds: bool | None = True) -> str:
    seed, fixed = per_variant["seed"]["holds"], per_variant["fixed"]["holds"]
    if seed is None and fixed is None:
        return "not exercised"
    if number_holds is False or fixed is False:
        return "fails"
    if seed is True and fixed is True:
        return "holds"
    if fixed is True:
        return "holds only on fixed"
    return "unknown"


def ledger(runs: Sequence[Mapping[str, Any]], numbers: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per claim. `numbers` holds the stated-number checks by key (each with
    `holds` and a one-line `text`), measured by the caller."""
    out = []
    for c in CLAIMS:
        per_variant = tally(runs, c.invariant)
        number = numbers.get(c.number) if c.number else None
        number_holds = None if number is None else number.get("holds")
        checked = [r for r in runs if any(v["name"] == c.invariant for v in r["verdicts"])]
        where = [f"{src}: {len([r for r in checked if r['source'] == src])} runs of "
                 + ", ".join(sorted({r["scenario"] for r in checked if r["source"] == src}))
                 for src in sorted({r["source"] for r in checked})]
        verdict = "not exercised" if c.number and number_holds is None else status(per_variant, number_holds)
        out.append({"seed": c.seed, "claim": c.quote, "invariant": c.invariant, "figure": c.figure,
                    "status": verdict, "variants": per_variant,
                    "number": number, "where": where})
    return out
