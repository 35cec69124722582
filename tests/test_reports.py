"""`loopfix report`: on a fresh install with no services it writes the page with every figure
and the claims ledger; a live run directory adds the calibration section; no figure's titles,
labels, tick labels or legends overlap (measured on the drawn matplotlib figures); the page
opens with the capacity recommendation and explains each variant's metastability map from
measured figures; it renders in a real headless Chromium at 1280 and 390 px wide with no broken
image and nothing wider than the window (the screenshots are kept as artefacts)."""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from matplotlib.backends.backend_agg import FigureCanvasAgg

from loopfix.harness import history as history_mod
from loopfix.harness.scenario import load_scenario, with_settings
from loopfix.cli import cli
from loopfix.reports import figures
from loopfix.reports.claims import CLAIMS
from loopfix.reports import capacity
from loopfix.reports.page import recommendation_line, recovery_sentence
from loopfix.sim import simulate
from tests.conftest import required_program

ARTEFACTS = Path(__file__).resolve().parent.parent / "runs" / "test-artefacts"
FIGURES = ("ttp_cdf.png", "requests.png", "queue.png", "backoff.png", "capacity.png", "queue_wait.png", "mmc.png",
           "metastability.png")
SECTIONS = ("Time to playable", "Requests per playback", "Queue depth and jobs over time",
            "Backoff of one failing recording", "Capacity: workers for the SLO",
            "Capacity: queue wait against Erlang C", "Capacity: the M/M/c special case", "Metastability",
            "Claims ledger")
SLO_S = 45.0


def _text_boxes(fig):
    """(name, window extent) of every piece of text matplotlib draws on `fig`: titles, axis
    labels, tick labels that are drawn, texts, legends."""
    FigureCanvasAgg(fig)  # a closed figure keeps only a bare canvas
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    out = []

    def add(name, artist):
        if artist is None or not artist.get_visible():
            return
        if hasattr(artist, "get_text") and not artist.get_text().strip():
            return
        box = artist.get_window_extent(renderer)
        if box.width > 0 and box.height > 0:
            out.append((name, box))

    for i, t in enumerate(fig.texts):
        add(f"figure text {t.get_text()!r}", t)
    for legend in fig.legends:
        add("figure legend", legend)
    for n, ax in enumerate(fig.axes):
        if not ax.get_visible() or not ax.axison:
            continue
        add(f"axes {n} title", ax.title)
        for which, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            if not axis.get_visible():  # a twin's shared axis
                continue
            add(f"axes {n} {which} label", axis.label)
            for tick in axis._update_ticks():  # the ticks matplotlib draws (inside the view)
                for label in (tick.label1, tick.label2):
                    add(f"axes {n} {which} tick {label.get_text()!r}", label)
        for t in ax.texts:
            add(f"axes {n} text {t.get_text()!r}", t)
        add(f"axes {n} legend", ax.get_legend())
    return out


def overlapping_text(fig):
    """Pairs of text on `fig` whose boxes intersect (by more than a pixel)."""
    boxes = [(name, box.expanded(1, 1).padded(-1)) for name, box in _text_boxes(fig)]
    return [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:] if box_a.overlaps(box_b)]


@pytest.fixture(scope="module")
def drawn():
    """Every figure the module's reports draw, by file name, kept open after saving."""
    kept = {}
    save = figures.save

    def keep_and_save(fig, path):
        kept[path.name] = fig  # closing a figure leaves it drawable
        return save(fig, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(figures, "save", keep_and_save)
        yield kept
    assert save is figures.save


@pytest.fixture(scope="module")
def report(tmp_path_factory, drawn):
    """The quick report, built once from nothing (no run directories, no sweep file), with an
    SLO of 45 s."""
    base = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(cli, ["report", "--quick", "--slo", str(SLO_S), "--out", str(base / "out"),
                                      "--runs", str(base / "runs")])
    assert result.exit_code == 0, result.output
    return base


def test_no_figure_has_overlapping_titles_labels_ticks_or_legends(report, drawn):
    assert set(FIGURES) <= set(drawn)
    overlaps = {name: overlapping_text(fig) for name, fig in drawn.items()}
    assert {name: pairs for name, pairs in overlaps.items() if pairs} == {}


def test_every_axis_with_numbers_names_what_they_measure(report, drawn):
    unlabelled = [(name, n, which) for name, fig in drawn.items() for n, ax in enumerate(fig.axes) if ax.axison
                  for which, axis, shared in (("x", ax.xaxis, ax.get_shared_x_axes()),
                                              ("y", ax.yaxis, ax.get_shared_y_axes()))
                  if axis.get_visible()
                  and any(t.label1.get_visible() and t.label1.get_text() for t in axis._update_ticks())
                  and not any(getattr(other, f"{which}axis").label.get_text() for other in shared.get_siblings(ax))]
    assert unlabelled == []


def test_capacity_figure_draws_the_given_slo_as_a_line(report, drawn):
    top = drawn["capacity.png"].axes[0]
    slo = [line for line in top.get_lines() if line.get_label().startswith("SLO")]
    assert len(slo) == 1 and list(slo[0].get_ydata()) == [SLO_S, SLO_S]
    assert f"p95 ≤ {SLO_S:g} s" in drawn["capacity.png"].texts[0].get_text()


def test_report_opens_with_the_recommendation_line(report):
    out = report / "out"
    markdown = (out / "report.md").read_text().splitlines()
    page = (out / "index.html").read_text()
    assert markdown[2].startswith("**Recommendation:** ") and f"<= {SLO_S:g} s" in markdown[2]
    line = markdown[2].removeprefix("**Recommendation:** ")
    assert page.index('class="recommendation"') < page.index("<h2>")
    assert line.replace("<", "&lt;") in page


def test_metastability_map_says_per_variant_why_it_recovers_or_not(report):
    section = (report / "out" / "report.md").read_text().split("## Metastability", 1)[1].split("##")[0]
    for variant in ("Before", "Seed", "Fixed"):
        sentence = re.search(rf"\n- {variant} recovers within 1200 s in \d of 4 cells; at \d+ calls/h after a \d+ s "
                             rf"outage (it took \d+ s|it does not recover)[^.]*: of its \d+ job runs[^.]*\.\n",
                             section)
        assert sentence, (variant, section)


def test_report_from_nothing_has_every_figure_and_the_claims_ledger(report):
    out = report / "out"
    page = (out / "index.html").read_text()
    markdown = (out / "report.md").read_text()
    for name in FIGURES:
        assert (out / name).stat().st_size > 1000
        assert f'src="{name}"' in page and f"]({name})" in markdown
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page and f"## {title}" in markdown
    ledger = markdown.split("## Claims ledger", 1)[1]
    rows = [line for line in ledger.splitlines() if re.match(r"\| 00\d \|", line)]
    assert len(rows) == len(CLAIMS)
    by_claim = {line.split(" | ")[1]: line.split(" | ")[2] for line in rows}
    assert by_claim[CLAIMS[0].quote] == "fails"  # ~52 minutes: the schedule sums to 31
    assert "holds only on fixed" in by_claim.values()
    assert "1860 s = 31 min" in ledger
    assert "Calibration" not in markdown and "no live run directories given" in markdown


def _live_format_dir(directory: Path, scenario, described=None) -> None:
    """A directory in the live layout (run.json with the scenario — or `described` —, one
    *.jsonl per process, source live), its events taken from a model run of `scenario`: it
    exercises the reading and the calibration section, not the live stack."""
    result = simulate(scenario)
    by_proc: dict[str, list] = {}
    for e in result.history:
        by_proc.setdefault(str(e["proc"]).split("-")[0], []).append({**e, "source": "live"})
    for proc, events in by_proc.items():
        history_mod.write_history(directory / f"{proc}-1.jsonl", events)
    history_mod.write_run_info(directory, {**result.run_info(), "source": "live",
                                           "scenario_data": (described or scenario).to_dict()})


@pytest.mark.slow  # CI time: a live run first (the report's other tests read the model's runs)
def test_live_run_directory_adds_the_calibration_section_and_measures_the_worker_time(report, drawn, tmp_path):
    """A "live" run whose workers spend 20 s per job besides the download (the model run with
    job_overhead_s 20, in the live layout): the scenario's own twin (0.5 s) disagrees and the
    page names the measured worker times; the twin given the worker time measured from the
    live history agrees exactly."""
    live = tmp_path / "live-retry-storm"
    described = with_settings(load_scenario("retry-storm"), assignments={"duration_s": "600", "drain_s": "600"})
    _live_format_dir(live, with_settings(described, assignments={"workers.job_overhead_s": "20"}), described)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["report", str(report / "runs"), str(report / "runs" / "sweep.jsonl"), str(live),
                                      "--out", str(out), "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    markdown = (out / "report.md").read_text()
    section = markdown.split("## Calibration: model vs live", 1)[1].split("## Claims ledger")[0]
    assert (out / "calibration.png").stat().st_size > 1000
    assert overlapping_text(drawn["calibration.png"]) == []
    as_written, measured = json.loads((out / "calibration.json").read_text())
    assert measured["label"] == "retry-storm [fixed] at scale 1, model + live worker time 20.0 s/job"
    assert all(e == 0 for e in measured["errors"].values()), measured["errors"]
    assert section.count("+0% | within |") == 5 + sum(e == 0 for e in as_written["errors"].values())
    assert as_written["errors"]["ttp_p95_s"] > 0.15 and "OUTSIDE" in section
    assert "worker time per job besides the download 20 vs 0.5 s" in section
    assert "live: 1 runs of retry-storm" in markdown


@pytest.mark.slow  # CI time: test_cli draws the report of a `loopfix sweep` file's default output
def test_report_from_a_plain_sweep_file_draws_what_its_rows_answer(report, tmp_path):
    """A `loopfix sweep` file (rows without the report's grid tags, no M/M/c rows): the capacity
    figures and the metastability map from its rows; the M/M/c grid it lacks the report sweeps
    itself, as for anything missing."""
    rows = [json.loads(line) for line in (report / "runs" / "sweep.jsonl").read_text().splitlines()]
    plain = tmp_path / "sweep.jsonl"
    plain.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "grid"}) + "\n"
                             for r in rows if not r["mmc"]))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["report", "--quick", str(report / "runs"), str(plain), "--out", str(out),
                                      "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    markdown = (out / "report.md").read_text()
    assert "](capacity.png)" in markdown and "](metastability.png)" in markdown and "](mmc.png)" in markdown
    assert markdown.splitlines()[2].startswith("**Recommendation:** ")


def test_report_input_mistakes_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "not a run directory" in result.output and "Traceback" not in result.output


CAPACITY_ROWS = [  # (load, workers, p95 s, sessions played, gave up)
    (300, 1, 20.0, 100, 0), (300, 2, 10.0, 100, 0),
    (600, 1, 90.0, 100, 0), (600, 2, 40.0, 100, 2), (600, 4, 30.0, 100, 0),
    (1200, 1, 300.0, 10, 90), (1200, 2, 200.0, 50, 50), (1200, 4, 150.0, 90, 10),
]


def _capacity_row(load, workers, p95, played, gave_up, drained=True):
    return {"calls_per_hour": float(load), "workers": workers, "ttp_p95_s": p95, "sessions": played + gave_up + 5,
            "sessions_played": played, "sessions_gave_up": gave_up, "sessions_not_found": 5, "recovery_s": 0.0,
            "outage_s": 0.0, "latency_median_s": 2.0, "drained": drained, "variant": "fixed", "mmc": False}


def test_the_pages_recommendation_is_the_sweeps_answer_counting_every_session():
    """One wording, the sweep's (reports/capacity.py): at 600 calls/h 2 workers are within the
    target but 2 % of sessions gave up, so only 1 worker count holds every load up to 300; a
    point that did not drain never meets it, whatever its p95."""
    rows = [_capacity_row(*r) for r in CAPACITY_ROWS]
    line = recommendation_line(rows, 60.0)
    assert line == capacity.recommendation_lines(rows, 60.0)[0] + "."  # one latency swept: one line
    assert line.startswith("1 workers hold p95 time-to-playable <= 60 s with < 1 % gave up and < 1 % errors up to "
                           "300 calls/h; at 1200 calls/h no worker count meets it")
    undrained = [_capacity_row(300, w, 5.0, 100, 0, drained=False) for w in (1, 2)]
    assert recommendation_line(undrained, 60.0).startswith("No swept worker count (1-2) holds")


def test_each_variant_is_explained_at_the_cell_where_it_lags_the_fastest_variant_most():
    """fixed lags before by 600 s at (900 s, 480/h); seed never recovers at (300 s, 720/h) where
    before takes 180 s; before is never behind: its own slowest recovery, (900 s, 720/h)."""
    from loopfix.report_commands import _explained_cells

    recovery = {("before", 300, 480): 180, ("before", 900, 480): 660, ("before", 300, 720): 180,
                ("before", 900, 720): 2000, ("fixed", 300, 480): 180, ("fixed", 900, 480): 1260,
                ("fixed", 300, 720): 180, ("fixed", 900, 720): 2100, ("seed", 300, 480): 180,
                ("seed", 900, 480): 700, ("seed", 300, 720): None, ("seed", 900, 720): None}
    rows = [{"variant": v, "outage_s": o, "calls_per_hour": c, "recovery_s": r, "observe_s": 3600}
            for (v, o, c), r in recovery.items()]
    rows.append({"variant": "fixed", "outage_s": 0, "calls_per_hour": 720, "recovery_s": 0.0, "observe_s": 3600})
    assert _explained_cells(rows) == {"before": (900.0, 720.0), "fixed": (900.0, 480.0), "seed": (300.0, 720.0)}


def test_recovery_sentence_is_worded_from_the_measured_figures():
    after = {"before": {"recovery_s": 660.0, "window_s": 660.0, "waiting_at_outage_end": 169,
                        "waiting_at_window_end": 2, "job_runs": 306, "downloads": 306, "deferred": 0, "failed": 0,
                        "worker_sleeps": 0, "stuck": 0, "new_jobs": 137, "re_enqueued": 0},
             "fixed": {"recovery_s": 1260.0, "window_s": 1260.0, "waiting_at_outage_end": 216,
                       "waiting_at_window_end": 0, "job_runs": 696, "downloads": 385, "deferred": 227, "failed": 0,
                       "worker_sleeps": 0, "stuck": 0, "new_jobs": 258, "re_enqueued": 222}}
    cells = {"fixed": {(900.0, 480.0): False, (300.0, 480.0): True}}
    sentence = recovery_sentence({"variant": "fixed", "cell": (900.0, 480.0), "after": after, "fastest": "before"},
                                 cells, 1200.0)
    assert sentence == (
        "Fixed recovers within 1200 s in 1 of 2 cells; at 480 calls/h after a 900 s outage it took 1260 s "
        "(before: 660 s): of its 696 job runs in that time 385 downloaded (before: 306 of 306), 227 were deferred "
        "for a business's busy slots and 222 jobs re-enqueued, with 216 jobs waiting when the workers returned "
        "(before: 169) and 258 new jobs arriving.")


def _chromium() -> str:
    return required_program(("chromium", "chromium-browser"), "apt-get install -y chromium")


PROBE = """<script>
window.addEventListener('load', () => {
  const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  const wide = [...document.body.querySelectorAll('*')].filter(e => !e.closest('.table'))
    .filter(e => e.getBoundingClientRect().right > innerWidth + 0.5)
    .map(e => e.tagName + ' ' + (e.getAttribute('src') || ''));
  parent.postMessage({width: innerWidth, scrollWidth: document.documentElement.scrollWidth,
                      images: document.images.length, broken, wide,
                      scaled: [...document.images].filter(i => i.width < i.naturalWidth).length}, '*');
});
</script></body>"""
# Headless Chromium will not make a window narrower than 500 px: the page is measured and shot
# inside an iframe of the width wanted, its probe reporting to the frame around it.
FRAME = """<!doctype html><html><body style="margin:0">
<iframe src="{src}" style="width:{width}px;height:{height}px;border:0;display:block"></iframe>
<script>addEventListener('message', e => document.body.setAttribute('data-probe', JSON.stringify(e.data)));</script>
</body></html>"""
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=10000",
         "--allow-file-access-from-files")


def _render(chromium: str, out: Path, width: int, height: int) -> tuple[dict, Path]:
    """The page at `width` CSS pixels: what its probe measured, and a screenshot."""
    probe = out / "probe.html"
    probe.write_text((out / "index.html").read_text().replace("</body>", PROBE))
    frame = out / f"frame-{width}.html"
    frame.write_text(FRAME.format(src=probe.name, width=width, height=height))
    dom = subprocess.run([chromium, *FLAGS, f"--window-size={max(width, 500)},{height}", "--dump-dom",
                          frame.as_uri()], capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, dom[-500:]
    shot = out / f"screenshot-{width}.png"
    subprocess.run([chromium, *FLAGS, f"--window-size={max(width, 500)},{height}", f"--screenshot={shot}",
                    frame.as_uri()], capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTEFACTS / f"report-screenshot-{width}.png")
    return json.loads(html.unescape(found.group(1))), shot


@pytest.mark.browser
@pytest.mark.parametrize("width", [1280, 390])
def test_page_fits_the_window_with_every_figure_in_headless_chromium(report, width):
    """At a desktop's and a phone's width: every image loads, nothing is wider than the window
    (wide tables scroll inside their own box), and images shrink to fit."""
    seen, _ = _render(_chromium(), report / "out", width, 9000)
    assert seen["width"] == width
    assert seen["images"] == len(FIGURES) and seen["broken"] == []
    assert seen["wide"] == [] and seen["scrollWidth"] <= width
    if width < 500:
        assert seen["scaled"] > 0
