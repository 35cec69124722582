"""`loopfix report`: on a fresh install with no services it writes the page with every figure
and the claims ledger; a live run directory adds the calibration section; the page renders in
a real headless Chromium with no broken image (the screenshot is kept as an artefact)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness import history as history_mod
from harness.scenario import load_scenario, with_settings
from loopfix.cli import cli
from reports.claims import CLAIMS
from sim import simulate

ARTEFACTS = Path(__file__).resolve().parent.parent / "runs" / "test-artefacts"
FIGURES = ("ttp_cdf.png", "requests.png", "queue.png", "backoff.png", "capacity.png", "metastability.png")
SECTIONS = ("Time to playable", "Requests per playback", "Queue depth and jobs over time",
            "Backoff of one failing recording", "Capacity", "Metastability", "Claims ledger")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The quick report, built once from nothing (no run directories, no sweep file)."""
    base = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(cli, ["report", "--quick", "--out", str(base / "out"), "--runs", str(base / "runs")])
    assert result.exit_code == 0, result.output
    return base


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


def test_live_run_directory_adds_the_calibration_section_and_measures_the_worker_time(report, tmp_path):
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
    as_written, measured = json.loads((out / "calibration.json").read_text())
    assert measured["label"] == "retry-storm [fixed] at scale 1, model + live worker time 20.0 s/job"
    assert all(e == 0 for e in measured["errors"].values()), measured["errors"]
    assert section.count("+0% | within |") == 5 + sum(e == 0 for e in as_written["errors"].values())
    assert as_written["errors"]["ttp_p95_s"] > 0.15 and "OUTSIDE" in section
    assert "worker time per job besides the download 20 vs 0.5 s" in section
    assert "live: 1 runs of retry-storm" in markdown


def test_report_input_mistakes_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "not a run directory" in result.output and "Traceback" not in result.output


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed: .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return path


PROBE = """<script>
window.addEventListener('load', () => {
  const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  document.body.setAttribute('data-images', String(document.images.length));
  document.body.setAttribute('data-broken', JSON.stringify(broken));
});
</script></body>"""


@pytest.mark.browser
def test_page_renders_every_figure_in_headless_chromium(report):
    chromium = _chromium()
    out = report / "out"
    probe = out / "probe.html"
    probe.write_text((out / "index.html").read_text().replace("</body>", PROBE))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=10000"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    images = re.search(r'data-images="(\d+)"', dom)
    broken = re.search(r'data-broken="([^"]*)"', dom)
    assert images and broken, dom[-500:]
    assert int(images.group(1)) == len(FIGURES)
    assert json.loads(broken.group(1).replace("&quot;", '"')) == []
    shot = out / "screenshot.png"
    subprocess.run([chromium, *flags, "--window-size=1200,4000", f"--screenshot={shot}", (out / "index.html").as_uri()],
                   capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTEFACTS / "report-screenshot.png")
