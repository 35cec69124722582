"""The wheel a user installs: one top-level package, `loopfix`, carrying the scenarios and the
OpenAPI document, and `loopfix demo` running from it with no checkout in sight.

Built from a copy of the tracked files (a wheel build writes build/ beside its sources), with the
setuptools already installed (no build isolation: no download).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def tracked_copy(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout to know the tracked files")
    src = tracked_copy(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "-w", str(out), str(src)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]  # the dev extra brings setuptools >= 68
    (found,) = out.glob("loopfix-*.whl")
    return found


def test_the_wheel_installs_one_top_level_package_with_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"loopfix"}
    scenarios = {p.name for p in (ROOT / "scenarios").glob("*.toml")}
    assert scenarios and {Path(n).name for n in names if n.startswith("loopfix/scenarios/")} >= scenarios
    assert "loopfix/reference_app/openapi.yaml" in names
    for package in ("sim", "harness", "loadtests", "reports", "benchmarks", "reference_app"):
        assert f"loopfix/{package}/__init__.py" in names


def test_demo_runs_from_the_installed_wheel_outside_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, text=True)
    assert sorted(p.name for p in site.iterdir() if not p.name.endswith(".dist-info") and p.name != "bin") == ["loopfix"]
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import loopfix.sim.engine, loopfix; print(loopfix.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(site)
    run = subprocess.run([sys.executable, "-m", "loopfix.cli", "demo", "--format", "plain", "--scenario", "steady"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "steady" in run.stdout and "fixed" in run.stdout


@pytest.mark.slow
def test_pip_install_of_the_wheel_in_a_clean_venv_runs_demo(wheel, tmp_path):
    """What a new user does: a fresh venv, the wheel and its dependencies from the registry."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)], check=True, timeout=900)
    version = subprocess.run([str(venv / "bin" / "loopfix"), "--version"], cwd=tmp_path, capture_output=True,
                             text=True, check=True).stdout
    assert version.startswith("loopfix ")
    run = subprocess.run([str(venv / "bin" / "loopfix"), "demo", "--format", "plain"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
