"""A `Policy` from loose settings: strings from the environment, `--set k=v`, a scenario's [policy].

Nothing here reads the environment: `reference_app/config.py` (the app's entry point) and the
CLI read it and pass the strings in. Bad values raise ValueError with what to fix.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from loopfix.reference_app.policy.core import Policy
from loopfix.reference_app.policy.faults import FAULTS, SEED_LOCK_TTL_S

# The constants a setting may override by name (harness/scenario.py checks a [policy] table's keys
# against it); the variant and its faults have their own arguments.
_OVERRIDABLE = {f.name: f for f in dataclasses.fields(Policy) if f.init and f.name not in ("variant", "extra_faults")}


def parse_faults(text: str | None) -> frozenset[str]:
    """`'a,b'` → {'a','b'}; blanks ignored; unknown names raise ValueError listing the known ones."""
    names = frozenset(n.strip() for n in (text or "").split(",") if n.strip())
    unknown = sorted(names - set(FAULTS))
    if unknown:
        raise ValueError(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(sorted(FAULTS))}")
    return names


def _parse_value(name: str, raw: object) -> object:
    current = _OVERRIDABLE[name]
    kind = current.type if isinstance(current.type, str) else getattr(current.type, "__name__", "")
    try:
        if kind == "int":
            return int(raw)  # type: ignore[arg-type]
        if kind == "float":
            return float(raw)  # type: ignore[arg-type]
        if kind.startswith("tuple[float"):
            items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
            return tuple(float(x) for x in items)
        if name == "lock_ttl_s":
            return _parse_lock_ttls(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{name} takes a {kind}, not {raw!r}") from None
    raise ValueError(f"{name} cannot be overridden")


def _parse_lock_ttls(raw: object) -> tuple[tuple[str, float], ...]:
    """`'delete_leads_bulk:2,default:5'` (or a mapping) → seed 003's table with those entries
    replaced or added; the other operations keep their seed TTLs."""
    pairs = raw.items() if isinstance(raw, Mapping) else (
        item.split(":", 1) for item in str(raw).split(",") if item.strip())
    table = dict(SEED_LOCK_TTL_S)
    for op, ttl in pairs:
        table[str(op).strip()] = float(ttl)
    return tuple(table.items())


def make_policy(
    variant: str = "fixed",
    faults: str | Sequence[str] | None = None,
    time_scale: float | str = 1.0,
    overrides: Mapping[str, object] | None = None,
) -> Policy:
    """Build a Policy from loose settings (env strings, CLI `--set k=v`, a scenario's [policy]).

    Raises ValueError with a message that says what to fix.
    """
    extra = parse_faults(faults) if isinstance(faults, str) or faults is None else parse_faults(",".join(faults))
    try:
        scale = float(time_scale)
    except (TypeError, ValueError):
        raise ValueError(f"time_scale must be a number, not {time_scale!r}") from None
    values: dict[str, object] = {}
    for name, raw in (overrides or {}).items():
        key = {"max_retries": "max_recording_retries"}.get(name, name)
        if key not in _OVERRIDABLE or key in ("time_scale", "faults"):
            raise ValueError(f"unknown policy constant {name!r}; known: {', '.join(sorted(_OVERRIDABLE))}")
        values[key] = _parse_value(key, raw)
    return Policy(variant=variant, extra_faults=extra, time_scale=scale, **values)  # type: ignore[arg-type]
