"""The report's figures: matplotlib (Agg, no display), one PNG each, small on disk.

Each function takes results already measured (reports/measures.py, sweep rows, verdict
tallies) and draws them; none computes a verdict. PNGs are saved at a low DPI and quantised
to a 64-colour palette so that a committed example report stays small.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402  (matplotlib depends on Pillow)

from reports import measures  # noqa: E402

COLOURS = {"before": "#c0392b", "seed": "#e67e22", "fixed": "#27ae60", "sim": "#2c6fbb", "live": "#8e44ad"}
DPI = 80


def save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    buf.seek(0)
    Image.open(buf).convert("RGB").quantize(colors=64).save(path, optimize=True)
    return path


def log_panel(ax: Any, xlabel: str, ylabel: str, title: str, legend_size: int = 7, title_size: int | None = None) -> None:
    """The labelling every log-scaled line panel shares."""
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)
    ax.set_title(title, fontsize=title_size)


def ttp_cdf(runs: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Time-to-playable CDF per variant, one panel per scenario."""
    scenarios = list(dict.fromkeys(r["scenario"] for r in runs))
    cols = min(4, len(scenarios))
    rows = (len(scenarios) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, scenarios):
        for r in (r for r in runs if r["scenario"] == name):
            xs = sorted(r["ttp"])
            if xs:
                ax.step([max(x, 0.1) for x in xs], [(i + 1) / len(xs) for i in range(len(xs))], where="post",
                        color=COLOURS.get(r["variant"]), label=r["variant"])
        ax.set_xscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("time to playable (s)", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(scenarios):]:
        ax.axis("off")
    axes.flat[0].set_ylabel("fraction of playbacks")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Time to playable, CDF per variant (model)")
    return save(fig, path)


def requests_per_playback(runs: Sequence[Mapping[str, Any]], path: Path) -> Path:
    scenarios = list(dict.fromkeys(r["scenario"] for r in runs))
    variants = [v for v in COLOURS if any(r["variant"] == v for r in runs)]
    fig, ax = plt.subplots(figsize=(9, 3.2))
    width = 0.8 / max(1, len(variants))
    for j, v in enumerate(variants):
        ys = [next((r["summary"]["requests_per_playback"] or 0 for r in runs
                    if r["scenario"] == s and r["variant"] == v), 0) for s in scenarios]
        ax.bar([i + j * width for i in range(len(scenarios))], ys, width, color=COLOURS[v], label=v)
    ax.set_xticks([i + width * (len(variants) - 1) / 2 for i in range(len(scenarios))], scenarios, fontsize=8)
    ax.set_ylabel("requests per playback (mean)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("Requests per playback: each session's requests until it played")
    return save(fig, path)


def queue_timeline(runs: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Backlog and job runs over time per variant, outage windows shaded."""
    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 2.0 * len(runs)), sharex=True, squeeze=False)
    for ax, r in zip(axes.flat, runs):
        series = r["backlog"]
        ts = [t for t, _, _ in series]
        ax.plot(ts, [w for _, w, _ in series], color=COLOURS.get(r["variant"]), label="jobs waiting")
        ax2 = ax.twinx()
        ax2.plot(ts, [n for _, _, n in series], color="#555", lw=0.8, alpha=0.6, label="job runs / min")
        for start, end, target in r["outages"]:
            ax.axvspan(start, end, color="#999", alpha=0.25, label=f"{target} outage")
        ax.set_ylabel("waiting", fontsize=8)
        ax2.set_ylabel("runs/min", fontsize=8)
        ax.set_title(f"{r['scenario']} [{r['variant']}]", fontsize=9)
        ax.legend(loc="upper left", fontsize=7)
    axes.flat[-1].set_xlabel("time (policy seconds)")
    return save(fig, path)


def backoff_timeline(timelines: Sequence[tuple[str, Mapping[str, Any] | None]], schedule: Sequence[float],
                     path: Path) -> Path:
    """Each retry's announced delay and the gap to the job's next run, against the schedule."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
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
                label=f"{variant}: measured gap (job {tl['job_id']}, {len(tl['retries'])} retries)")
    log_panel(ax, "retry number", "seconds until the next run", "Backoff of one failing recording against the schedule")
    return save(fig, path)


def capacity(rows: Sequence[Mapping[str, Any]], mmc: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Left: the model's mean queue wait against workers per load, Erlang C dashed. Right: the
    M/M/c special case, measured against Erlang C, with the relative error."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    loads = sorted({r["calls_per_hour"] for r in rows})
    cmap = plt.get_cmap("viridis")
    for i, load in enumerate(loads):
        rs = sorted((r for r in rows if r["calls_per_hour"] == load), key=lambda r: r["workers"])
        colour = cmap(i / max(1, len(loads) - 1))
        left.plot([r["workers"] for r in rs], [r["ttp_p95_s"] for r in rs], marker="o", color=colour,
                  label=f"{load:g} calls/h: p95 time to playable")
        pred = [(r["workers"], r.get("erlang_c_wait_s")) for r in rs if r.get("erlang_c_wait_s") is not None]
        if pred:
            left.plot([w for w, _ in pred], [max(p, 1e-3) for _, p in pred], ls="--", color=colour,
                      label=f"{load:g} calls/h: Erlang C mean wait")
            left.plot([r["workers"] for r in rs], [max(r.get("queue_wait_mean_s") or 1e-3, 1e-3) for r in rs],
                      ls=":", marker=".", color=colour, label=f"{load:g} calls/h: model mean wait")
    log_panel(left, "workers", "seconds", "Capacity: the model against Erlang C", legend_size=6, title_size=10)
    for k, c in enumerate(sorted({a["workers"] for a in mmc})):
        pts = [a for a in mmc if a["workers"] == c]
        colour = cmap(k / 4)
        right.plot([a["utilisation"] for a in pts], [a["erlang_c_wait_s"] for a in pts], "--", color=colour)
        right.plot([a["utilisation"] for a in pts], [a["measured_wait_s"] for a in pts], "o", color=colour,
                   label=f"c={c}")
        for a in pts:
            right.annotate(f"{a['relative_error']:+.1%}", (a["utilisation"], a["measured_wait_s"]), fontsize=7,
                           xytext=(4, 4), textcoords="offset points")
    log_panel(right, "utilisation", "mean queue wait (s)", "M/M/c special case: model (dots) vs Erlang C (dashed)",
              title_size=10)
    return save(fig, path)


def metastability(cells: Mapping[str, Mapping[tuple[float, float], bool]], recovery: Mapping[tuple, float | None],
                  within_s: float, path: Path) -> Path:
    variants = [v for v in ("before", "seed", "fixed") if v in cells]
    fig, axes = plt.subplots(1, len(variants), figsize=(3.6 * len(variants), 3.2), squeeze=False)
    for ax, v in zip(axes.flat, variants):
        outages = sorted({o for o, _ in cells[v]})
        loads = sorted({c for _, c in cells[v]})
        grid = [[1.0 if cells[v].get((o, c)) else 0.0 for o in outages] for c in loads]
        ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, origin="lower", aspect="auto")
        for yi, c in enumerate(loads):
            for xi, o in enumerate(outages):
                rec = recovery.get((v, o, c))
                ax.text(xi, yi, "never" if rec is None else f"{rec:.0f}s", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(outages)), [f"{o:g}" for o in outages], fontsize=7)
        ax.set_yticks(range(len(loads)), [f"{c:g}" for c in loads], fontsize=7)
        ax.set_xlabel("outage (s)")
        ax.set_title(v)
    axes.flat[0].set_ylabel("calls per hour")
    fig.suptitle(f"Metastability: recovers within {within_s:g} s after the outage (green) or not (red)")
    return save(fig, path)


def calibration(pairs: Sequence[Mapping[str, Any]], metrics: Sequence[str], path: Path) -> Path:
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.6 * len(metrics), 3.2), squeeze=False)
    for ax, m in zip(axes.flat, metrics):
        labels = [p["label"] for p in pairs]
        sim = [p["sim"].get(m) or 0 for p in pairs]
        live = [p["live"].get(m) or 0 for p in pairs]
        xs = range(len(pairs))
        ax.bar([x - 0.2 for x in xs], sim, 0.4, color=COLOURS["sim"], label="model")
        ax.bar([x + 0.2 for x in xs], live, 0.4, color=COLOURS["live"], label="live")
        for x, p in zip(xs, pairs):
            err = p["errors"].get(m)
            if err is not None:
                ax.annotate(f"{err:+.0%}", (x, max(sim[x], live[x])), ha="center", fontsize=7,
                            xytext=(0, 3), textcoords="offset points")
        ax.set_xticks(list(xs), labels, fontsize=6, rotation=20)
        ax.set_title(m, fontsize=8)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Calibration: the same scenario in the model and live (relative error live vs model)")
    return save(fig, path)
