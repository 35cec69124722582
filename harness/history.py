"""Histories on disk: JSON Lines read and write, merging a run directory, schema validation.

A history is a list of plain event records (`loopfix.reference_app.policy.events.event`), time in policy
seconds, one schema for `source: sim` and `source: live`. A live run writes one `*.jsonl` per
process into `runs/<run-id>/`; `read_history(dir)` merges them into one list ordered by `t`
(ties keep file-name order, then line order, so a merge is deterministic).

Beside the events a run directory may hold `run.json`: the settings the checker needs to
know the bounds it checks against — `{"variant": ..., "faults": [...], "policy": {...}}` plus
anything informative (scenario, seed, source). `read_run_info` reads it; `policy_from_run_info`
turns it into the `Policy` the invariants take as an argument. Without it the checker uses the
policy it is given (the CLI: `--variant`/`--set`, default `fixed`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from loopfix.reference_app.policy import events as events_mod
from loopfix.reference_app import policy as policy_mod

Event = dict[str, Any]
HISTORY_FILE = "history.jsonl"
RUN_INFO_FILE = "run.json"
_BASE_FIELDS = ("t", "kind", "source", "proc")
SOURCES = ("sim", "live", "target")


def write_history(path: str | os.PathLike, history: Iterable[Event]) -> Path:
    """Write `history` as canonical JSON Lines (byte-identical for equal histories)."""
    with HistoryFile(path) as out:
        for record in history:
            out.write(record)
    return out.path


# events.dumps' encoding, built once (json.dumps with options builds an encoder per call)
_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


class HistoryFile:
    """A history written as it happens: `write(record)` appends one canonical JSON line (the
    bytes write_history writes, events.dumps'), buffered; `close()` at the end (also a context
    manager)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "w", encoding="utf-8", newline="\n", buffering=1 << 20)
        put = self._fh.write

        def write(record: Event) -> None:
            put(_ENCODE(record) + "\n")

        self.write = write

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "HistoryFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl(path: str | os.PathLike) -> list[Event]:
    """One JSON Lines file → records (a torn last line dropped: see `read_jsonl_torn`)."""
    return read_jsonl_torn(path)[0]


def read_jsonl_torn(path: str | os.PathLike) -> tuple[list[Event], int | None]:
    """One JSON Lines file → (records, the number of a torn last line or None). Blank lines
    are skipped; a last line that is not JSON (a process killed mid-write) is left out and its
    number returned, so that the caller can say so; any other bad line raises ValueError
    naming file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path.name}: not a JSON Lines history (not UTF-8 text)") from None
    out: list[Event] = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines) and out:
                return out, i  # torn last write of a crashed process
            raise ValueError(f"{path.name} line {i}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path.name} line {i}: expected a JSON object, got {type(record).__name__}")
        out.append(record)
    return out, None


def merge(histories: Iterable[list[Event]]) -> list[Event]:
    """Merge several histories into one, ordered by `t` (stable: ties keep the given order)."""
    tagged = [(float(r.get("t", 0.0)), i, j, r) for i, h in enumerate(histories) for j, r in enumerate(h)]
    tagged.sort(key=lambda x: (x[0], x[1], x[2]))
    return [r for *_, r in tagged]


def read_history(path: str | os.PathLike) -> list[Event]:
    """A history from a `.jsonl` file or a directory of them (merged by `t`)."""
    return read_history_torn(path)[0]


def read_history_torn(path: str | os.PathLike) -> tuple[list[Event], list[tuple[Path, int]]]:
    """A history from a `.jsonl` file or a directory of them (merged by `t`), and the torn last
    lines left out of it: (file, line number) each."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise ValueError(f"{path}: no *.jsonl history files in this directory")
    elif path.is_file():
        files = [path]
    else:
        raise ValueError(f"{path}: no such history file or directory")
    read = [(f, *read_jsonl_torn(f)) for f in files]
    return merge(records for _, records, _ in read), [(f, torn) for f, _, torn in read if torn is not None]


def validate(history: Iterable[Event]) -> list[str]:
    """Schema problems, one line each (empty when the history is well formed).

    Each record needs t (a number), kind (one of events.EVENT_FIELDS), source (sim | live | target),
    proc, and every field its kind lists (a field may be null; extra fields are allowed).
    """
    problems: list[str] = []
    for i, r in enumerate(history):
        where = f"event {i}"
        missing = [f for f in _BASE_FIELDS if f not in r]
        if missing:
            problems.append(f"{where}: missing {', '.join(missing)}")
            continue
        if isinstance(r["t"], bool) or not isinstance(r["t"], (int, float)):
            problems.append(f"{where}: t must be a number of policy seconds, got {r['t']!r}")
        kind = r["kind"]
        if kind not in events_mod.EVENT_FIELDS:
            problems.append(f"{where}: unknown kind {kind!r}")
            continue
        if r["source"] not in SOURCES:
            problems.append(f"{where} ({kind}): source must be one of {', '.join(SOURCES)}, got {r['source']!r}")
        lacking = [f for f in events_mod.EVENT_FIELDS[kind] if f not in r]
        if lacking:
            problems.append(f"{where} ({kind} at t={r['t']}): missing field(s) {', '.join(lacking)}")
    return problems


def write_run_info(directory: str | os.PathLike, info: Mapping[str, Any]) -> Path:
    path = Path(directory) / RUN_INFO_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(info), sort_keys=True, indent=2) + "\n", encoding="utf-8")
    return path


def read_run_info(directory: str | os.PathLike) -> dict[str, Any] | None:
    """`run.json` of a run directory, or None when there is none."""
    path = Path(directory) / RUN_INFO_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc.msg})") from None
    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return info


def policy_from_run_info(info: Mapping[str, Any]) -> policy_mod.Policy:
    """The Policy a run used, from its run.json (variant, faults, policy overrides, time_scale)."""
    return policy_mod.make_policy(
        str(info.get("variant", "fixed")),
        list(info.get("faults") or []),
        info.get("time_scale", 1.0),
        dict(info.get("policy") or {}),
    )
