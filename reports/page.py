"""Write the report: figures (reports/figures.py), one HTML page and its Markdown twin.

`write_report(data, out_dir)` takes everything already measured and checked — run summaries
with their verdicts, sweep rows, the claims ledger, calibration pairs — draws the figures and
writes `index.html`, `report.md` and the PNGs into `out_dir`. It reads results and writes files;
it decides nothing.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from reports import capacity, figures
from reports.measures import CALIBRATION_METRICS

CALIBRATION_TOLERANCE = 0.15
MARK = {True: "✓", False: "✗", "unknown": "?", None: "–"}


@dataclass
class ReportData:
    runs: list[dict[str, Any]]  # label, scenario, variant, source, ttp, summary, backlog, outages, verdicts
    sweep_rows: list[dict[str, Any]]
    ledger: list[dict[str, Any]]
    schedule_s: list[float]
    backoff: list[tuple[str, Mapping[str, Any] | None]]
    recover_within_s: float
    calibration: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    command: str = "loopfix report"


@dataclass
class Section:
    title: str
    figure: str | None
    text: str
    table: tuple[list[str], list[list[str]]] | None = None


def write_report(data: ReportData, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = _sections(data, out_dir)
    html_path = out_dir / "index.html"
    md_path = out_dir / "report.md"
    html_path.write_text(_html(sections, data), encoding="utf-8")
    md_path.write_text(_markdown(sections, data), encoding="utf-8")
    if data.calibration:  # the figures of the calibration table, small: no histories
        (out_dir / "calibration.json").write_text(json.dumps(data.calibration, indent=1, default=str) + "\n",
                                                  encoding="utf-8")
    return {"html": html_path, "markdown": md_path,
            **{s.figure: out_dir / s.figure for s in sections if s.figure}}


def _sections(data: ReportData, out: Path) -> list[Section]:
    sim = [r for r in data.runs if r["source"] == "sim"]
    rows = [r for r in data.sweep_rows if not r.get("mmc")]
    cap_rows = [r for r in rows if float(r["outage_s"]) == 0 and r["variant"] == "fixed"
                and r.get("grid") == "capacity"]
    meta_rows = [r for r in rows if r.get("grid") == "metastability"]
    mmc = capacity.mmc_agreement(data.sweep_rows)
    outage_runs = [r for r in sim if r["outages"]][:3] or sim[:3]
    s: list[Section] = [
        Section("Time to playable", figures.ttp_cdf(sim, out / "ttp_cdf.png").name,
                "From a session's first request to its 200, per variant; one panel per headline scenario."),
        Section("Requests per playback", figures.requests_per_playback(sim, out / "requests.png").name,
                "Requests a browser session made until it played (log scale): the retry loops show here."),
        Section("Queue depth and jobs over time", figures.queue_timeline(outage_runs, out / "queue.png").name,
                "Jobs waiting (enqueued, not started) and job runs per minute; outage windows shaded."),
        Section("Backoff of one failing recording",
                figures.backoff_timeline(data.backoff, data.schedule_s, out / "backoff.png").name,
                "The recording with the most retries in each variant's missing-CallLog run: the gap from "
                "each retry to the job's next run, against the configured schedule."),
    ]
    mmc_rows = [[str(a["workers"]), f"{a['utilisation']:.2f}", f"{a['measured_wait_s']:.3f}",
                 f"{a['erlang_c_wait_s']:.3f}", f"{a['relative_error']:+.1%}", str(a["jobs"])] for a in mmc]
    s.append(Section("Capacity", figures.capacity(cap_rows, mmc, out / "capacity.png").name,
                     "Left: p95 time to playable and mean queue wait of the model against workers, with the "
                     "Erlang C mean wait for the measured job rate and service time. Right: the M/M/c special "
                     "case of the sweep (exponential downloads, nothing else) against Erlang C.",
                     (["workers", "utilisation", "model wait (s)", "Erlang C (s)", "error", "jobs"], mmc_rows)))
    cells = capacity.metastability(meta_rows, data.recover_within_s)
    recovery = {(r["variant"], float(r["outage_s"]), float(r["calls_per_hour"])): r.get("recovery_s")
                for r in meta_rows}
    s.append(Section("Metastability", figures.metastability(cells, recovery, data.recover_within_s,
                                                            out / "metastability.png").name,
                     "Outage length x load: seconds until the backlog is back to its pre-outage level while the "
                     "load continues ('never': still high when arrivals stop)."))
    if data.calibration:
        table = [[p["label"], m, _num(p["sim"].get(m)), _range(p.get("seed_range", {}).get(m)), _num(p["live"].get(m)),
                  "–" if p["errors"].get(m) is None else f"{p['errors'][m]:+.0%}",
                  "–" if p["errors"].get(m) is None else
                  "within" if abs(p["errors"][m]) <= CALIBRATION_TOLERANCE else "OUTSIDE"]
                 for p in data.calibration for m in CALIBRATION_METRICS]
        causes = "".join(f" {p['label']}: {p['explanation']}" for p in data.calibration if p.get("explanation"))
        runs = {(p["live_run"], p["time_scale"], str(p["load_avg"])) for p in data.calibration if p.get("live_run")}
        causes += "".join(f" Live run {Path(r).name}: time scale {scale:g}, load average at its start {load}."
                          for r, scale, load in sorted(runs))
        s.append(Section("Calibration: model vs live",
                         figures.calibration(data.calibration, CALIBRATION_METRICS, out / "calibration.png").name,
                         f"The same scenario run by the model and by the live stack, measured by the same "
                         f"functions. Tolerance ±{CALIBRATION_TOLERANCE:.0%}.{causes}",
                         (["run", "figure", "model", "model over seeds (min–max)", "live", "error", "±15 %"], table)))
    ledger_rows = [[c["seed"], c["claim"], c["status"],
                    *(MARK[c["variants"][v]["holds"]] for v in ("before", "seed", "fixed")),
                    _evidence(c), c["figure"], "; ".join(c["where"])] for c in data.ledger]
    s.append(Section("Claims ledger", None,
                     "Every claim of the seed write-ups, against the checker's verdicts per variant (✓ holds in "
                     "every run, ✗ broken somewhere, – not exercised) and the stated numbers as measured.",
                     (["seed", "claim", "status", "before", "seed", "fixed", "evidence", "figure", "where measured"],
                      ledger_rows)))
    return s


def _range(lo_hi: Sequence[float] | None) -> str:
    return "–" if not lo_hi else f"{_num(lo_hi[0])}–{_num(lo_hi[1])}"


def _num(x: Any) -> str:
    return "–" if x is None else f"{x:.3g}" if isinstance(x, float) else str(x)


def _evidence(c: Mapping[str, Any]) -> str:
    parts = []
    if c.get("number"):
        parts.append(c["number"]["text"])
    w = next((c["variants"][v]["witness"] for v in ("seed", "fixed", "before") if c["variants"][v]["witness"]), None)
    if w:
        parts.append(f"{c['invariant']} broken in {w['where']}: {w['type']} {_facts(w['facts'])}")
    return " | ".join(parts) or f"{c['invariant']} holds in every run"


def _facts(facts: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in list(facts.items())[:4])


def _html(sections: Sequence[Section], data: ReportData) -> str:
    body = []
    for sec in sections:
        body.append(f"<h2>{html.escape(sec.title)}</h2><p>{html.escape(sec.text)}</p>")
        if sec.figure:
            body.append(f'<img src="{sec.figure}" alt="{html.escape(sec.title)}">')
        if sec.table:
            head, rows = sec.table
            body.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                        + "</table>")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in data.notes)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>loopfix report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}img{{max-width:100%}}
table{{border-collapse:collapse;font-size:12px}}td,th{{border:1px solid #ccc;padding:3px 6px;vertical-align:top}}</style>
</head><body><h1>loopfix report</h1><p>Generated by <code>{html.escape(data.command)}</code>.</p><ul>{notes}</ul>
{''.join(body)}</body></html>
"""


def _markdown(sections: Sequence[Section], data: ReportData) -> str:
    lines = ["# loopfix report", "", f"Generated by `{data.command}`.", ""] + [f"- {n}" for n in data.notes]
    for sec in sections:
        lines += ["", f"## {sec.title}", "", sec.text, ""]
        if sec.figure:
            lines += [f"![{sec.title}]({sec.figure})", ""]
        if sec.table:
            head, rows = sec.table
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
