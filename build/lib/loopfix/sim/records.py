"""The model's event recorders: one function per event kind, generated from the schema.

`recorders(env, history)` returns a namespace with, for every kind in
`loopfix.reference_app.events.EVENT_FIELDS`, a function named after it (`job.start` → `job_start`)
taking `proc` and exactly that kind's fields as parameters:

    rec.job_start(proc, job_id=..., call_sid=..., attempt=..., worker=...)

Each appends the record `loopfix.reference_app.events.event` would build — the fields, then `t` (the
clock rounded to 6 places by micro_round, the rounding reused while the clock stands still),
`kind`, `source: sim` and `proc`, in the key order the model always used (verdicts.json prints
witness records in it) — as one dict display, so the dict is born with all its keys: no keyword dict
to fill in and grow afterwards, which is what a generic `emit(kind, proc, **fields)` costs on
every one of the model's events. A field missing or misspelt at a call site is a TypeError.
"""
from __future__ import annotations

import keyword
from types import SimpleNamespace
from typing import Any

from loopfix.reference_app.policy.events import EVENT_FIELDS

_TEMPLATE = '''
def {name}(proc, {params}):
    now = env._now
    if now != clock[0]:
        clock[0], clock[1] = now, micro_round(now)
    append({{{items}"t": clock[1], "kind": {kind!r}, "source": "sim", "proc": proc}})
'''


def micro_round(t: float) -> float:
    """round(t, 6), bit for bit, without its decimal conversion: round(t * 1e6) / 1e6 is the same
    float whenever t * 1e6 is not within its own rounding error of a half (round(t, 6) rounds
    t's exact decimal value; k / 1e6 is the float nearest k / 10**6 either way); near a half,
    or past 10**12 µs (about 11 days) where that error grows, round(t, 6) itself."""
    x = t * 1e6
    k = round(x)
    if x < 1e12 and abs(abs(x - k) - 0.5) > 1e-3:
        return k / 1e6
    return round(t, 6)


def recorder_name(kind: str) -> str:
    return kind.replace(".", "_")


def recorders(env: Any, history: list[dict[str, Any]]) -> SimpleNamespace:
    """One recorder per event kind, appending to `history` at `env`'s clock."""
    # clock: the last raw time seen and its rounding (0.0 for both at the start, as before)
    namespace: dict[str, Any] = {"env": env, "append": history.append, "clock": [0.0, 0.0],
                                  "micro_round": micro_round}
    made: dict[str, Any] = {}
    for kind, fields in EVENT_FIELDS.items():
        for f in fields:
            if not f.isidentifier() or keyword.iskeyword(f) or f in ("proc", "now") or f in namespace:
                raise ValueError(f"event field {f!r} of {kind!r} cannot be a recorder parameter")
        name = recorder_name(kind)
        exec(_TEMPLATE.format(name=name, kind=kind, params=", ".join(fields),
                              items="".join(f"{f!r}: {f}, " for f in fields)), namespace)
        made[name] = namespace.pop(name)
    return SimpleNamespace(**made)
