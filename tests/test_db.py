"""reference_app/db.py: creating the schema is safe when several processes start at once on a
fresh database (a Procfile or compose file starting `serve` and `worker` together: both create
the tables, and before this one of them died about one start in eight on "table already exists").

PROCESSES processes create the schema on a fresh SQLite file at the same moment, ROUNDS times:
in each round every process builds its services, says it is ready and waits for the round's go
file, so all of them create the tables at once; a failure is written down, not fatal, so the
next rounds still run."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, inspect

from loopfix.reference_app.models import Base

PROCESSES = 6
ROUNDS = 8
CREATE_SCHEMA = """
import sys, time, traceback
from pathlib import Path
from loopfix.reference_app.config import Config
from loopfix.reference_app.services import Services
base, me, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for r in range(rounds):
    svc = Services(Config(data_dir=base / f"round{r}"))
    (base / f"ready-{r}-{me}").touch()
    deadline = time.monotonic() + 60
    while not (base / f"go-{r}").exists() and time.monotonic() < deadline:
        time.sleep(0.001)
    try:
        svc.engine  # creates the tables
    except Exception:
        (base / f"error-{r}-{me}").write_text(traceback.format_exc())
    if "engine" in vars(svc):  # built, even when the CREATE failed in it
        svc.engine.dispose()
"""


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not after {timeout:.0f} s"
        time.sleep(0.01)


def test_processes_creating_the_schema_at_once_on_a_fresh_sqlite_file_all_succeed(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", CREATE_SCHEMA, str(tmp_path), str(i), str(ROUNDS)],
                              stderr=subprocess.PIPE, text=True) for i in range(PROCESSES)]
    try:
        for r in range(ROUNDS):
            wait_for(lambda: all((tmp_path / f"ready-{r}-{i}").exists() for i in range(PROCESSES)), 120,
                     f"round {r}: every process ready")
            (tmp_path / f"go-{r}").touch()
        codes = [p.wait(120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    errors = {f.name: f.read_text()[-400:] for f in sorted(tmp_path.glob("error-*"))}
    assert errors == {}
    assert codes == [0] * PROCESSES, [p.stderr.read()[-600:] for p in procs]
    for r in range(ROUNDS):
        tables = inspect(create_engine(f"sqlite:///{tmp_path / f'round{r}' / 'loopfix.db'}")).get_table_names()
        assert set(tables) == set(Base.metadata.tables)
