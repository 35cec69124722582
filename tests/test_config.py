"""reference_app/config.py: the paths a user gives are made absolute against the working
directory once, when the Config is built, so every process and Flask's send_file agree."""
from __future__ import annotations

from pathlib import Path

from loopfix.reference_app.config import Config


def test_relative_paths_resolve_against_the_working_directory_when_built(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = Config.from_env({"LOOPFIX_DATA_DIR": "a/../data", "LOOPFIX_HISTORY_DIR": "hist",
                           "DATABASE_URL": "sqlite:///db/x.db?timeout=5"})
    assert cfg.data_dir == tmp_path / "data" and cfg.recordings_dir == tmp_path / "data" / "recordings"
    assert cfg.history_dir == tmp_path / "hist"
    assert cfg.sqlalchemy_url == f"sqlite:///{tmp_path}/db/x.db?timeout=5"
    monkeypatch.chdir(tmp_path / "..")  # built once: a later chdir changes nothing, nor does a copy
    assert Config.from_env(cfg.to_env()).data_dir == tmp_path / "data"
    assert Config().data_dir == Path.cwd() / "data"
    assert Config(data_dir=Path("data")).sqlalchemy_url == f"sqlite:///{Path.cwd() / 'data' / 'loopfix.db'}"


def test_absolute_memory_and_server_database_urls_are_left_alone():
    for url in ("sqlite:////srv/x.db", "sqlite://", "sqlite:///:memory:", "postgresql://u:p@db:5432/loopfix?x=1"):
        assert Config(database_url=url).database_url == url
