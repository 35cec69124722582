"""The report's figures: matplotlib (Agg, no display), one PNG each, small on disk.

Each function takes results already measured (reports/measures.py, sweep rows, verdict
tallies) and draws them; none computes a verdict. One figure answers one question (its title
says which), every axis names its unit, a target is drawn as a line, and legends sit below the
axes, never on them: figures use constrained layout so that no title, label, tick label or
legend overlaps another (tests/test_reports.py measures that on the drawn figures). PNGs are
saved at a low DPI and quantised to a 64-colour palette so that a committed example report
stays small.
"""
from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogFormatter  # noqa: E402
from PIL import Image  # noqa: E402  (matplotlib depends on Pillow)

from loopfix.reports import measures  # noqa: E402

COLOURS = {"before": "#c0392b", "seed": "#e67e22", "fixed": "#27ae60", "sim": "#2c6fbb", "live": "#8e44ad"}
DPI = 80


LOADS = plt.get_cmap("viridis")


def save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    buf.seek(0)
    Image.open(buf).convert("RGB").quantize(colors=64).save(path, optimize=True)
    return path


def _figure(nrows: int, ncols: int, width_in: float, height_in: float, **kw: Any) -> tuple[Any, Any]:
    """A figure of `nrows` x `ncols` axes laid out by matplotlib's constrained layout (which
    keeps titles, labels and legends apart), axes always as a 2-D array."""
    return plt.subplots(nrows, ncols, figsize=(width_in, height_in), squeeze=False, layout="constrained", **kw)


def _legend_below(fig: Any, handles: Sequence[Any] | None = None, labels: Sequence[str] | None = None,
                  ncols: int = 3) -> None:
    """One legend for the whole figure, under the axes (never on the data)."""
    if handles is None:
        seen: dict[str, Any] = {}
        for ax in fig.axes:
            for h, label in zip(*ax.get_legend_handles_labels()):
                seen.setdefault(label, h)
        handles, labels = list(seen.values()), list(seen)
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(ncols, len(handles)), fontsize=8,
                   frameon=False)


def _log_axis(axis: Any) -> None:
    """A log-scaled axis labelled in plain numbers (0.1, 1, 10, 100), not powers of ten; minor
    ticks labelled only when the axis spans less than a decade or two."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(_PlainMinorLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


class _PlainMinorLogFormatter(LogFormatter):
    """Labels the minor ticks matplotlib's LogFormatter would label, as plain numbers."""

    def __call__(self, x: float, pos: Any = None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


def _label_bottom_row(axes: Any, xlabel: str, ylabel: str, shown: int) -> None:
    """The x label under each lowest panel of a grid (no figure-wide label to collide with
    the legend below), the y label beside the first column."""
    rows, cols = axes.shape
    for i in range(shown):
        r, c = divmod(i, cols)
        if (r + 1) * cols + c >= shown:  # nothing drawn below: its ticks are shown even on a shared axis
            axes[r, c].set_xlabel(xlabel, fontsize=8)
            axes[r, c].tick_params(axis="x", labelbottom=True)
        if c == 0:
            axes[r, c].set_ylabel(ylabel, fontsize=8)


def _load_colour(i: int, n: int) -> Any:
    return LOADS(0.85 * i / max(1, n - 1))


def ttp_cdf(runs: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """How soon does a playback play, per variant? Time-to-playable CDF, one panel per scenario."""
    scenarios = list(dict.fromkeys(r["scenario"] for r in runs))
    cols = min(4, len(scenarios))
    rows = (len(scenarios) + cols - 1) // cols
    fig, axes = _figure(rows, cols, 2.6 * cols, 2.1 * rows + 0.9, sharex=True, sharey=True)
    for ax, name in zip(axes.flat, scenarios):
        for r in (r for r in runs if r["scenario"] == name):
            xs = sorted(r["ttp"])
            if xs:
                ax.step([max(x, 0.1) for x in xs], [(i + 1) / len(xs) for i in range(len(xs))], where="post",
                        color=COLOURS.get(r["variant"]), label=r["variant"])
        ax.set_xscale("log")
        _log_axis(ax.xaxis)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(scenarios):]:
        ax.axis("off")
    _label_bottom_row(axes, "time to playable (s, log;\n0 s drawn at 0.1 s)", "fraction of playbacks",
                      len(scenarios))
    fig.suptitle("How soon does a playback play? Time to playable per variant (model)", fontsize=10)
    _legend_below(fig)
    return save(fig, path)


def requests_per_playback(runs: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """How many requests does a session make until it plays, per scenario and variant?"""
    scenarios = list(dict.fromkeys(r["scenario"] for r in runs))
    variants = [v for v in COLOURS if any(r["variant"] == v for r in runs)]
    fig, axes = _figure(1, 1, 8, 3.4)
    ax = axes[0, 0]
    width = 0.8 / max(1, len(variants))
    for j, v in enumerate(variants):
        ys = [next((r["summary"]["requests_per_playback"] or 0 for r in runs
                    if r["scenario"] == s and r["variant"] == v), 0) for s in scenarios]
        ax.bar([i + j * width for i in range(len(scenarios))], ys, width, color=COLOURS[v], label=v)
    ax.set_xticks([i + width * (len(variants) - 1) / 2 for i in range(len(scenarios))], scenarios, fontsize=8)
    ax.set_xlabel("scenario", fontsize=9)
    ax.set_ylabel("requests per playback\n(mean count, log scale)", fontsize=9)
    ax.set_yscale("log")
    _log_axis(ax.yaxis)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("How many requests until a session plays? (the retry loops)", fontsize=10)
    _legend_below(fig)
    return save(fig, path)


def queue_timeline(runs: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Does the backlog drain after an outage? Jobs waiting and job runs per minute over time,
    one panel per run, outage windows shaded."""
    fig, axes = _figure(len(runs), 1, 8, 1.7 * len(runs) + 0.9, sharex=True)
    handles: dict[str, Any] = {}
    for ax, r in zip(axes.flat, runs):
        series = r["backlog"]
        ts = [t for t, _, _ in series]
        line, = ax.plot(ts, [w for _, w, _ in series], color=COLOURS.get(r["variant"], "#2c6fbb"))
        handles.setdefault("jobs waiting (left axis, count)", line)
        ax2 = ax.twinx()
        runs_line, = ax2.plot(ts, [n for _, _, n in series], color="#555", lw=0.8, alpha=0.6)
        handles.setdefault("job runs started per minute (right axis)", runs_line)
        for start, end, target in r["outages"]:
            handles.setdefault(f"{target} outage", ax.axvspan(start, end, color="#999", alpha=0.25))
        ax.set_ylabel("jobs", fontsize=8)
        ax2.set_ylabel("runs / min", fontsize=8)
        ax.tick_params(labelsize=8)
        ax2.tick_params(labelsize=8)
        ax.set_title(f"{r['scenario']} [{r['variant']}]", fontsize=9)
    axes.flat[-1].set_xlabel("time (policy seconds)", fontsize=9)
    fig.suptitle("Does the backlog drain after the outage?", fontsize=10)
    _legend_below(fig, list(handles.values()), list(handles))
    return save(fig, path)


def backoff_timeline(timelines: Sequence[tuple[str, Mapping[str, Any] | None]], schedule: Sequence[float],
                     path: Path) -> Path:
    """Does a failing recording wait as long as the schedule says? Each retry's gap to the job's
    next run, against the configured schedule."""
    fig, axes = _figure(1, 1, 7, 3.8)
    ax = axes[0, 0]
    n = range(1, len(schedule) + 1)
    ax.plot(list(n), list(schedule), "k--", marker="s", label="configured schedule")
    for variant, tl in timelines:
        if not tl:
            continue
        rows = tl["retries"][: max(len(schedule), 8)]
        gaps = [(i + 1, (row["next_start_t"] - row["t"]) if row["next_start_t"] is not None else None)
                for i, row in enumerate(rows)]
        xs = [i for i, g in gaps if g is not None]
        ax.plot(xs, [max(g, 0.01) for _, g in gaps if g is not None], marker="o", color=COLOURS.get(variant),
                label=f"{variant}: job {tl['job_id']}, {len(tl['retries'])} retries")
    ax.set_yscale("log")
    _log_axis(ax.yaxis)
    ax.set_xlabel("retry number", fontsize=9)
    ax.set_ylabel("seconds until the next run\n(s, log scale)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.set_title("Does a failing recording back off as configured?", fontsize=10)
    _legend_below(fig, ncols=2)
    return save(fig, path)


def _by_load(rows: Sequence[Mapping[str, Any]]) -> dict[float, dict[int, list[Mapping[str, Any]]]]:
    out: dict[float, dict[int, list[Mapping[str, Any]]]] = {}
    for r in rows:
        out.setdefault(float(r["calls_per_hour"]), {}).setdefault(int(r["workers"]), []).append(r)
    return {load: dict(sorted(ws.items())) for load, ws in sorted(out.items())}


def capacity_workers(rows: Sequence[Mapping[str, Any]], slo_p95_s: float, unplayed_bound: float, path: Path) -> Path:
    """How many workers hold the SLO at each load? Top: p95 time to playable against workers,
    one line per load, the SLO as a line; bottom: the share of sessions that did not play
    (gave up or got an error), the bound as a line. A point with several rows (seeds,
    latencies) is drawn at its worst."""
    fig, axes = _figure(2, 1, 7, 5.4, sharex=True)
    top, bottom = axes[0, 0], axes[1, 0]
    loads = _by_load(rows)
    for i, (load, by_workers) in enumerate(loads.items()):
        colour = _load_colour(i, len(loads))
        p95 = [(w, max(r["ttp_p95_s"] for r in rs)) for w, rs in by_workers.items()
               if all(r.get("ttp_p95_s") is not None for r in rs)]
        top.plot([w for w, _ in p95], [max(p, 0.1) for _, p in p95], marker="o", color=colour,
                 label=f"{load:g} calls/h")
        unplayed = [(w, max(measures.unplayed_share(measures.row_outcomes(r)) or 0.0 for r in rs))
                    for w, rs in by_workers.items()]
        bottom.plot([w for w, _ in unplayed], [100 * u for _, u in unplayed], marker="o", color=colour)
    top.axhline(slo_p95_s, color="k", ls="--", lw=1, label=f"SLO: p95 ≤ {slo_p95_s:g} s")
    bottom.axhline(100 * unplayed_bound, color="#c0392b", ls=":", lw=1,
                   label=f"bound: < {100 * unplayed_bound:g} % not played")
    top.set_yscale("log")
    _log_axis(top.yaxis)
    top.set_ylabel("p95 time to playable\n(s, log scale)", fontsize=9)
    bottom.set_yscale("symlog", linthresh=1)
    bottom.set_ylim(0, 100)
    bottom.set_yticks([0, 1, 10, 100], ["0 %", "1 %", "10 %", "100 %"])
    bottom.yaxis.set_minor_locator(plt.NullLocator())
    bottom.set_ylabel("sessions not played\n(% gave up or error)", fontsize=9)
    bottom.set_xlabel("workers", fontsize=9)
    bottom.set_xticks(sorted({w for ws in loads.values() for w in ws}))
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    fig.suptitle(f"How many workers hold p95 ≤ {slo_p95_s:g} s with < {100 * unplayed_bound:g} % not played?",
                 fontsize=10)
    _legend_below(fig, ncols=4)
    return save(fig, path)


def queue_wait(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Does the model's queue wait follow Erlang C? Mean queue wait against workers, one panel
    per load: the model's measured wait and Erlang C's for the job rate and run time the model
    showed. Waits of 0 s (and Erlang C where the load is unstable) have no point on a log axis."""
    loads = _by_load(rows)
    cols = min(3, max(1, len(loads)))
    nrows = (len(loads) + cols - 1) // cols
    fig, axes = _figure(nrows, cols, max(6.0, 2.8 * cols + 0.6), 2.4 * nrows + 1.0, sharex=True, sharey=True)
    for ax, (load, by_workers) in zip(axes.flat, loads.items()):
        model = [(w, sum(r.get("queue_wait_mean_s") or 0.0 for r in rs) / len(rs)) for w, rs in by_workers.items()]
        erlang = [(w, rs[0]["erlang_c_wait_s"]) for w, rs in by_workers.items() if rs[0].get("erlang_c_wait_s")]
        ax.plot([w for w, m in model if m > 0], [m for _, m in model if m > 0], marker="o", color="#2c6fbb",
                label="model: mean queue wait")
        ax.plot([w for w, _ in erlang], [e for _, e in erlang], ls="--", marker="x", color="#555",
                label="Erlang C (the model's job rate and run time)")
        ax.set_yscale("log")
        _log_axis(ax.yaxis)
        ax.set_title(f"{load:g} calls/h", fontsize=9)
        ax.set_xticks(list(by_workers))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(loads):]:
        ax.axis("off")
    _label_bottom_row(axes, "workers", "mean queue wait (s, log)", len(loads))
    fig.suptitle("Does the model's queue wait follow Erlang C?", fontsize=10)
    _legend_below(fig, ncols=2)
    return save(fig, path)


def mmc(agreement: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Is the model right where queueing theory has the answer? The M/M/c special case's
    measured mean queue wait (dots) against Erlang C (dashed), per worker count."""
    fig, axes = _figure(1, 1, 6, 3.8)
    ax = axes[0, 0]
    counts = sorted({a["workers"] for a in agreement})
    for k, c in enumerate(counts):
        pts = sorted((a for a in agreement if a["workers"] == c), key=lambda a: a["utilisation"])
        colour = _load_colour(k, len(counts))
        ax.plot([a["utilisation"] for a in pts], [a["erlang_c_wait_s"] for a in pts], "--", marker="x", color=colour)
        ax.plot([a["utilisation"] for a in pts], [a["measured_wait_s"] for a in pts], "o", color=colour,
                label=f"{c} worker{'s' if c != 1 else ''}")
    ax.plot([], [], "k--", marker="x", label="Erlang C")
    ax.plot([], [], "ko", label="model (measured)")
    ax.set_yscale("log")
    _log_axis(ax.yaxis)
    ax.set_xlabel("utilisation (offered load / workers)", fontsize=9)
    ax.set_ylabel("mean queue wait (s, log scale)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)
    ax.set_title("M/M/c special case: does the model match Erlang C?", fontsize=10)
    _legend_below(fig, ncols=3)
    return save(fig, path)


def metastability(cells: Mapping[str, Mapping[tuple[float, float], bool]], recovery: Mapping[tuple, float | None],
                  within_s: float, path: Path) -> Path:
    """Which outages does each variant recover from, at which load? Outage length x load, green
    where the backlog is back to normal within `within_s`, each cell labelled with the time."""
    variants = [v for v in ("before", "seed", "fixed") if v in cells]
    fig, axes = _figure(1, len(variants), 3.1 * len(variants) + 0.4, 3.6, sharey=True)
    for ax, v in zip(axes.flat, variants):
        outages = sorted({o for o, _ in cells[v]})
        loads = sorted({c for _, c in cells[v]})
        grid = [[1.0 if cells[v].get((o, c)) else 0.0 for o in outages] for c in loads]
        ax.imshow(grid, cmap="RdYlGn", vmin=-0.3, vmax=1.3, origin="lower", aspect="auto")
        for yi, c in enumerate(loads):
            for xi, o in enumerate(outages):
                rec = recovery.get((v, o, c))
                ax.text(xi, yi, "never" if rec is None else f"{rec:.0f} s", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(outages)), [f"{o:g}" for o in outages], fontsize=8)
        ax.set_yticks(range(len(loads)), [f"{c:g}" for c in loads], fontsize=8)
        ax.set_title(v, fontsize=9)
    _label_bottom_row(axes, "outage length (s)", "load (calls/h)", len(variants))
    fig.suptitle(f"Which outages does each variant recover from within {within_s:g} s?", fontsize=10)
    cmap = plt.get_cmap("RdYlGn")
    _legend_below(fig, [Patch(color=cmap(0.77)), Patch(color=cmap(0.23))],
                  [f"recovers within {within_s:g} s (label: seconds after the outage)",
                   "does not ('never': still high when arrivals stop)"], ncols=2)
    return save(fig, path)


METRIC_NAMES = {"ttp_p50_s": "p50 time to playable", "ttp_p95_s": "p95 time to playable",
                "requests_per_playback": "requests per playback", "jobs_per_recording": "jobs per recording",
                "downloads_per_recording": "downloads per recording"}
CALIBRATION_CLIP = (-100.0, 300.0)  # % — errors beyond are drawn at the edge, their value written beside


def calibration(pairs: Sequence[Mapping[str, Any]], metrics: Sequence[str], path: Path) -> Path:
    """Does the model agree with the live stack? Relative error live vs model (%) per figure,
    one row per live run and model twin, the tolerance shaded."""
    from loopfix.reports.page import CALIBRATION_TOLERANCE

    fig, axes = _figure(1, 1, 8, 0.5 * len(pairs) + 1.8)
    ax = axes[0, 0]
    lo, hi = CALIBRATION_CLIP
    ax.axvspan(-100 * CALIBRATION_TOLERANCE, 100 * CALIBRATION_TOLERANCE, color="#27ae60", alpha=0.15,
               label=f"within ±{CALIBRATION_TOLERANCE:.0%}")
    markers = "osD^v<>"
    for k, m in enumerate(metrics):
        ys, xs = [], []
        for y, p in enumerate(pairs):
            err = p["errors"].get(m)
            if err is not None:
                ys.append(y + (k - (len(metrics) - 1) / 2) * 0.12)
                xs.append(min(max(100 * err, lo), hi))
        ax.plot(xs, ys, markers[k % len(markers)], ls="none", label=METRIC_NAMES.get(m, m))
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(pairs)), [textwrap.fill(p["label"], 44) for p in pairs], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(lo - 10, hi + 10)
    ax.set_xlabel(f"relative error, live vs model (%; beyond {lo:g}…+{hi:g} % drawn at the edge)", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_title("Does the model agree with the live stack?", fontsize=10)
    _legend_below(fig, ncols=3)
    return save(fig, path)
