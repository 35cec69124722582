"""Write the report: figures (reports/figures.py), one HTML page and its Markdown twin.

`write_report(data, out_dir)` takes everything already measured and checked — run summaries
with their verdicts, sweep rows, the claims ledger, calibration pairs, what the workers did after
an outage — draws the figures and writes `index.html`, `report.md` and the PNGs into `out_dir`.
It reads results and writes files; it decides nothing: the recommendation line and the
metastability sentences are the measured figures put into words (`recommendation_line`,
`recovery_sentence`).
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from loopfix.reports import capacity, measures
from loopfix.reports.measures import CALIBRATION_METRICS

CALIBRATION_TOLERANCE = 0.15
SLO_P95_S = 60.0  # p95 time to playable target (s): README's `loopfix sweep --p95-target` example
UNPLAYED_BOUND = 0.01  # a capacity point holds the SLO only with fewer sessions than this not played
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
    slo_p95_s: float = SLO_P95_S
    unplayed_bound: float = UNPLAYED_BOUND
    # per variant: the metastability cell explained and `measures.after_outage` of each
    # variant's history there (see `recovery_sentence`)
    recovery: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Section:
    title: str
    figure: str | None
    text: str
    table: tuple[list[str], list[list[str]]] | None = None
    points: list[str] = field(default_factory=list)  # a list under the text


def write_report(data: ReportData, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = _sections(data, out_dir)
    recommendation = recommendation_line(capacity_rows(data.sweep_rows), data.slo_p95_s, data.unplayed_bound)
    html_path = out_dir / "index.html"
    md_path = out_dir / "report.md"
    html_path.write_text(_html(sections, data, recommendation), encoding="utf-8")
    md_path.write_text(_markdown(sections, data, recommendation), encoding="utf-8")
    if data.calibration:  # the figures of the calibration table, small: no histories
        (out_dir / "calibration.json").write_text(json.dumps(data.calibration, indent=1, default=str) + "\n",
                                                  encoding="utf-8")
    return {"html": html_path, "markdown": md_path,
            **{s.figure: out_dir / s.figure for s in sections if s.figure}}


def _sections(data: ReportData, out: Path) -> list[Section]:
    from loopfix.reports import figures  # matplotlib: only when drawing (the CLI imports this module for its defaults)

    sim = [r for r in data.runs if r["source"] == "sim"]
    cap_rows = capacity_rows(data.sweep_rows)
    meta_rows = metastability_rows(data.sweep_rows)
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
    bound = f"{100 * data.unplayed_bound:g} %"
    none = "No such rows in the sweep results. "

    def drawn(rows: Any, draw: Any) -> str | None:  # no figure of nothing: the text says so
        return draw().name if rows else None

    s.append(Section("Capacity: workers for the SLO",
                     drawn(cap_rows, lambda: figures.capacity_workers(cap_rows, data.slo_p95_s, data.unplayed_bound,
                                                                      out / "capacity.png")),
                     ("" if cap_rows else none)
                     + f"The fixed variant with no outage, per load: p95 time to playable (of the sessions that "
                     f"played) against workers with the SLO of {data.slo_p95_s:g} s as a line, and the share of "
                     f"sessions that did not play (gave up or got an error) with the bound of {bound}. A worker "
                     f"count holds the SLO at a load where both lie under their lines. "
                     + recommendation_line(cap_rows, data.slo_p95_s, data.unplayed_bound)))
    s.append(Section("Capacity: queue wait against Erlang C",
                     drawn(cap_rows, lambda: figures.queue_wait(cap_rows, out / "queue_wait.png")),
                     ("" if cap_rows else none)
                     + "The model's mean queue wait against workers, one panel per load, beside Erlang C's mean "
                     "wait for the job rate and mean job run time the model showed (no Erlang C point where that load "
                     "exceeds the workers; no point for a wait of 0 s on the log axis)."))
    s.append(Section("Capacity: the M/M/c special case", drawn(mmc, lambda: figures.mmc(mmc, out / "mmc.png")),
                     ("" if mmc else none)
                     + "The sweep's M/M/c special case (exponential downloads, nothing else): the model's measured "
                     "mean queue wait against Erlang C.",
                     (["workers", "utilisation", "model wait (s)", "Erlang C (s)", "error", "jobs"], mmc_rows)))
    cells = capacity.metastability(meta_rows, data.recover_within_s)
    recovery = {(r["variant"], float(r["outage_s"]), float(r["calls_per_hour"])): r.get("recovery_s")
                for r in meta_rows}
    s.append(Section("Metastability",
                     drawn(cells, lambda: figures.metastability(cells, recovery, data.recover_within_s,
                                                                out / "metastability.png")),
                     ("" if cells else none)
                     + "Outage length x load: seconds until the backlog is back to its pre-outage level while the "
                     "load continues ('never': still high when arrivals stop). Why each variant recovers or not, "
                     "measured at the cell where it lags the fastest variant most (the model run again there):",
                     points=[recovery_sentence(e, cells, data.recover_within_s) for e in data.recovery]))
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


def capacity_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows the capacity answer reads: the fixed variant with no outage, outside the M/M/c
    special case (the report's own capacity grid, or a `loopfix sweep` file's rows)."""
    return [r for r in rows if not r.get("mmc") and float(r["outage_s"]) == 0 and r["variant"] == "fixed"
            and r.get("grid") in (None, "capacity")]


def metastability_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows the metastability map reads: outside the M/M/c special case, the report's own
    metastability grid or a `loopfix sweep` file's rows."""
    return [r for r in rows if not r.get("mmc") and r.get("grid") in (None, "metastability")]


def recommendation_line(rows: Sequence[Mapping[str, Any]], slo_p95_s: float,
                        unplayed_bound: float = UNPLAYED_BOUND) -> str:
    """The capacity answer in one line, as `loopfix sweep --p95-target` words it
    (reports/capacity.py: every session counted, a point that did not drain never meets it)."""
    lines = capacity.recommendation_lines(rows, slo_p95_s, unplayed_bound)
    if not lines:
        return (f"No capacity rows (fixed) to answer p95 time-to-playable <= {slo_p95_s:g} s with "
                f"< {100 * unplayed_bound:g} % gave up.")
    return " ".join(line[0].upper() + line[1:] for line in lines) + "."


def recovery_sentence(explained: Mapping[str, Any], cells: Mapping[str, Mapping[tuple[float, float], bool]],
                      within_s: float) -> str:
    """One sentence on why a variant recovers or does not, worded from what was measured: how
    many map cells it recovers in, and at the cell explained (`explained["cell"]`: outage and
    load) how long its backlog took, what its job runs did in that time (downloaded, deferred,
    slept, declared stuck, re-enqueued), the jobs waiting when the workers returned and the new
    jobs arriving — beside the variant that recovered fastest there (`explained["fastest"]`).
    `explained["after"]`: variant -> `measures.after_outage` of its history at that cell."""
    v, (outage, load) = explained["variant"], explained["cell"]
    a = explained["after"][v]
    fastest = explained.get("fastest")
    b = explained["after"].get(fastest) if fastest and fastest != v else None
    ok = sum(bool(x) for x in cells.get(v, {}).values())
    if a["recovery_s"] is not None:
        took = f"it took {a['recovery_s']:.0f} s" + (f" ({fastest}: {_took(b)})" if b else "")
    else:
        took = (f"it does not recover in the {_s(a['window_s'])} of load after it ({a['waiting_at_window_end']} "
                f"jobs still waiting when arrivals stop" + (f"; {fastest}: {_took(b)})" if b else ")"))
    besides = _and([_count(a["deferred"], "was deferred", "were deferred") + " for a business's busy slots"
                    if a["deferred"] else "",
                    f"workers slept {_count(a['worker_sleeps'], 'time', 'times')}" if a["worker_sleeps"] else "",
                    _count(a["failed"], "failed", "failed"),
                    _count(a["stuck"], "job was declared stuck", "jobs were declared stuck"),
                    _count(a["re_enqueued"], "job re-enqueued", "jobs re-enqueued")])
    runs = (f"of its {a['job_runs']} job runs in that time {a['downloads']} downloaded"
            + (f" ({fastest}: {b['downloads']} of {b['job_runs']})" if b else "")
            + (f", {besides}" if besides else ""))
    waiting = f"{a['waiting_at_outage_end']} jobs waiting when the workers returned" + (
        f" ({fastest}: {b['waiting_at_outage_end']})" if b else "")
    return (f"{v.capitalize()} recovers within {within_s:g} s in {ok} of {len(cells.get(v, {}))} cells; "
            f"at {load:g} calls/h after a {outage:g} s outage {took}: {runs}, with {waiting} and "
            f"{a['new_jobs']} new jobs arriving.")


def _count(n: int, one: str, many: str) -> str:
    """'1 job re-enqueued', '3 jobs re-enqueued'; '' for none."""
    return "" if not n else f"{n} {one if n == 1 else many}"


def _took(a: Mapping[str, Any] | None) -> str:
    return "–" if a is None else f"{a['recovery_s']:.0f} s" if a["recovery_s"] is not None else "does not recover"


def _s(seconds: float | None) -> str:
    return "rest of the run" if seconds is None else f"{seconds:.0f} s"


def _and(parts: Sequence[str]) -> str:
    parts = [p for p in parts if p]
    return ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + (parts[-1] if parts else "")


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


def _html(sections: Sequence[Section], data: ReportData, recommendation: str) -> str:
    body = []
    for sec in sections:
        body.append(f"<h2>{html.escape(sec.title)}</h2><p>{html.escape(sec.text)}</p>")
        if sec.points:
            body.append("<ul>" + "".join(f"<li>{html.escape(p)}</li>" for p in sec.points) + "</ul>")
        if sec.figure:  # on a phone the figure is small: a tap opens it at full size
            body.append(f'<a href="{sec.figure}"><img src="{sec.figure}" alt="{html.escape(sec.title)}"></a>')
        if sec.table:
            head, rows = sec.table
            body.append('<div class="table"><table><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in head)
                        + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                        + "</table></div>")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in data.notes)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>loopfix report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em;color:#222}}
p,li{{overflow-wrap:anywhere}}img{{max-width:100%;height:auto;display:block}}
.table{{overflow-x:auto}}.table table{{min-width:720px}}td{{overflow-wrap:break-word}}
.recommendation{{font-size:1.1em;border-left:4px solid #27ae60;padding:.4em .8em;background:#f4faf6}}
table{{border-collapse:collapse;font-size:12px}}td,th{{border:1px solid #ccc;padding:3px 6px;vertical-align:top}}</style>
</head><body><h1>loopfix report</h1>
<p class="recommendation"><strong>Recommendation:</strong> {html.escape(recommendation)}</p>
<p>Generated by <code>{html.escape(data.command)}</code>.</p><ul>{notes}</ul>
{''.join(body)}</body></html>
"""


def _markdown(sections: Sequence[Section], data: ReportData, recommendation: str) -> str:
    lines = (["# loopfix report", "", f"**Recommendation:** {recommendation}", "", f"Generated by `{data.command}`.",
              ""] + [f"- {n}" for n in data.notes])
    for sec in sections:
        lines += ["", f"## {sec.title}", "", sec.text, ""]
        if sec.points:
            lines += [f"- {p}" for p in sec.points] + [""]
        if sec.figure:
            lines += [f"![{sec.title}]({sec.figure})", ""]
        if sec.table:
            head, rows = sec.table
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
