"""The model's event recorders: one function per event kind, generated from the schema, and
the compact history they can write to.

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

Where the records go is `history`'s choice: anything with `append` gets each record as that dict
(a list; a harness.stream.Fanout checking it as it happens; a writer), while a `CompactHistory`
keeps only the record's values, flat, and gives the dicts back only when it is read (iterated or
indexed), the same dicts in the same key order.
"""
from __future__ import annotations

import inspect
import keyword
from array import array
from itertools import accumulate
from types import SimpleNamespace
from typing import Any, Iterator, Sequence

from loopfix.reference_app.policy.events import EVENT_FIELDS, define

# Every recorder starts the same way: the clock read, its rounding reused while it stands still.
_CLOCK = """    now = env._now
    if now != clock[0]:
        clock[0], clock[1] = now, micro_round(now)
"""
_HEAD = "\ndef {name}(proc, {params}):\n" + _CLOCK
_RECORD = '{{{items}"t": clock[1], "kind": {kind!r}, "source": "sim", "proc": proc}}'  # the dict display
# a record to anything with `append`
_TEMPLATE = _HEAD + "    append(" + _RECORD + ")\n"
# A compact history's record: its kind's index, then its values, with the clock as it is (t is
# rounded when the record is read: most records are never read one by one, and rounding as they
# were made cost a comparison each and a micro_round per instant, measured); no head but the
# clock's read, unless a consumer reads t as the record is made
_RAW_HEAD = """
def {name}(proc, {params}):
    now = env._now
"""
_COMPACT = "    order({index})\n    extend(({values}now, proc))\n"
# ... that a consumer also reads as it is made (CompactHistory(feed=...)), as a dict
_COMPACT_FED = _HEAD + _COMPACT + "    {name}_to(" + _RECORD + ")\n"
# ... whose handler has a step taking the record's fields: those it names, no dict built
_COMPACT_FED_FIELDS = _COMPACT + "    {name}_to({arguments})\n"
# a kind a router sends nowhere: counted (in its kind's cell of the router's tally, or its one
# cell), no record built
_SKIP = _HEAD + "    tally[{cell}] += 1\n"
# a router's kind, as a dict
_ROUTED = _SKIP + "    {name}_to(" + _RECORD + ")\n"
# a router's kind whose handler has a step taking the record's fields: those it names
_ROUTED_FIELDS = _SKIP + "    {name}_to({arguments})\n"
# a kind whose recorder a maker of recorders makes (harness.stream.Fanout.recorder): it starts so
_PROLOGUE = _CLOCK + "    tally[{cell}] += 1\n    t = clock[1]\n"

# kind index (a CompactHistory's order) -> the kind; one past the last: a record appended as a dict
KINDS: tuple[str, ...] = tuple(EVENT_FIELDS)
_INDEX = {kind: i for i, kind in enumerate(KINDS)}
_DICT = len(KINDS)
assert _DICT < 256, "a kind index is one byte"
# how a record of each kind reads back — (its dict from the values from i on, how many values) —
# in the key order the recorders give it: the fields, then t, kind, source, proc
_READ = '''
def read(v, i):
    return {{{items}"t": micro_round(v[i + {n}]), "kind": {kind!r}, "source": "sim", "proc": v[i + {n} + 1]}}
'''


def _reader(kind: str) -> tuple[Any, int]:
    fields = EVENT_FIELDS[kind]
    space: dict[str, Any] = {"micro_round": micro_round}
    define(_READ.format(items="".join(f"{f!r}: v[i + {j}], " for j, f in enumerate(fields)), n=len(fields),
                        kind=kind), space, f"reader of {kind}")
    return space["read"], len(fields) + 2



class CompactHistory(Sequence[dict[str, Any]]):
    """The model's history, read as dicts, kept as the records' values in one flat list (`values`:
    a record's fields, then t and proc — its kind and source are known) and, per record, its
    kind's index (`order`, one byte a record). Nothing it keeps per record is a container the
    cyclic collector tracks: a run's million records are not scanned when the collector resumes,
    and each costs its values' references and a byte (a tuple per record: ~100 bytes). A record
    appended as a dict is kept as it is (one value, kind index `_DICT`). `feed`: kind -> a
    function the model's recorders also hand each record of that kind to, as its dict, when they
    make it (a consumer's `handlers`, e.g. sim.metrics.HistoryMetrics: measured in the same
    pass, no dict rebuilt afterwards), or, where that function has a `step`, the fields the
    step names, no dict built (as a router's)."""

    def __init__(self, feed: dict[str, Any] | None = None) -> None:
        self.values: list[Any] = []
        self.order = bytearray()  # (an array("B")'s append costs more: it parses its argument)
        self.feed = dict(feed or {})
        self._starts = array("q", [0])  # where records start in values, as far as indexing needed

    def append(self, record: dict[str, Any]) -> None:
        self.order.append(_DICT)
        self.values.append(record)

    def __len__(self) -> int:
        return len(self.order)

    def count(self, kind: str) -> int:
        """How many of its records are of `kind`: its kind's bytes in `order`, no record read
        (unless some were appended as dicts)."""
        if _DICT in self.order:
            return sum(1 for e in self if e.get("kind") == kind)
        return self.order.count(_INDEX[kind])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        v, readers, i = self.values, _READERS, 0
        for k in self.order:
            read, n = readers[k]
            yield read(v, i)
            i += n

    def __getitem__(self, i: Any) -> Any:  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        order = self.order
        k = order[i]  # IndexError as a list's
        i = i if i >= 0 else i + len(order)
        starts = self._starts
        if i >= len(starts):  # extended to every record appended so far
            starts.extend(accumulate(map(_SIZES.__getitem__, order[len(starts) - 1:-1]), initial=starts.pop()))
        return _READERS[k][0](self.values, starts[i])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CompactHistory):
            return list(self) == list(other)
        if isinstance(other, list):
            return list(self) == other
        return NotImplemented

    def __repr__(self) -> str:
        return f"CompactHistory({len(self.order)} records)"


def micro_round(t: float) -> float:
    """round(t, 6), bit for bit, without its decimal conversion: round(t * 1e6) / 1e6 is the same
    float whenever t * 1e6 is not within its own rounding error of a half (round(t, 6) rounds
    t's exact decimal value; k / 1e6 is the float nearest k / 10**6 either way); near a half,
    below 0, or past 10**12 µs (about 11 days) where that error grows, round(t, 6) itself.
    (round(x) as floor(x + 0.5) in floats, (x + 0.5) // 1.0: off a half by more than x + 0.5's
    own rounding error (< 2**-13 below 10**12) they agree, and k stays a float, exact below
    2**53, so k / 1e6 divides two floats rather than an int by a float.)"""
    x = t * 1e6
    k = (x + 0.5) // 1.0
    if -0.499 < x - k < 0.499 and 0.0 <= x < 1e12:
        return k / 1e6
    return round(t, 6)


_READERS: tuple[tuple[Any, int], ...] = (*map(_reader, KINDS), (lambda v, i: v[i], 1))
_SIZES = tuple(n for _, n in _READERS)


def recorder_name(kind: str) -> str:
    return kind.replace(".", "_")


def recorders(env: Any, history: Any) -> SimpleNamespace:
    """One recorder per event kind, appending to `history` at `env`'s clock: its values to a
    CompactHistory (and the dict, or its step's fields, to its `feed` of that kind), the
    record's dict to anything else with `append`. A router (`route(kind)`: where a kind's
    records go, None for nowhere; sim.sweep.KeptKinds) gets them as dicts, or, where the
    function it gives has a `step` (policy.events.from_record), as that step's arguments: the
    fields it names, no record built; one that makes recorders instead (`recorder(kind, params,
    prologue, names)`: harness.stream.Fanout) gives each kind's whole recorder, started as this
    module's, or None for a kind it does not read. Either counts the records in `tally`: one
    cell, or a cell per kind in KINDS' order."""
    compact = isinstance(history, CompactHistory)
    feed = history.feed if compact else {}
    make = getattr(history, "recorder", None)
    route = getattr(history, "route", None) if make is None else None
    # clock: the last raw time seen and its rounding (0.0 for both at the start, as before)
    namespace: dict[str, Any] = {"env": env, "clock": [0.0, 0.0], "micro_round": micro_round}
    if compact:
        namespace.update(order=history.order.append, extend=history.values.extend)
    else:
        namespace["append"] = history.append
    routed = make is not None or route is not None
    if routed:  # a router or a maker of recorders: per kind, where to or nowhere
        namespace["tally"] = history.tally
        history.clock = namespace["clock"]
        by_kind = len(history.tally) == len(KINDS)  # a cell per kind, or one for every record
        head = {k: namespace[k] for k in ("env", "clock", "micro_round", "tally")}  # _PROLOGUE's names
    made: dict[str, Any] = {}
    cell = 0
    for kind, fields in EVENT_FIELDS.items():
        for f in fields:
            if (not f.isidentifier() or keyword.iskeyword(f) or f in ("proc", "now", "t", "kind", "source")
                    or f in namespace):
                raise ValueError(f"event field {f!r} of {kind!r} cannot be a recorder parameter")
        name = recorder_name(kind)
        template = _RAW_HEAD + _COMPACT if compact else _TEMPLATE
        arguments = ""
        if kind in feed:
            to = feed[kind]
            template = _COMPACT_FED
            step = getattr(to, "step", None)
            if step is not None:  # as a router's: the step, with the fields it names
                arguments, to = _arguments(kind, step), step
                template = (_HEAD if "clock[1]" in arguments else _RAW_HEAD) + _COMPACT_FED_FIELDS
            namespace[f"{name}_to"] = to
        if routed:
            cell = _INDEX[kind] if by_kind else 0
            if make is not None:  # it makes the recorder, from this one's start
                to = make(kind, ("proc", *fields), _PROLOGUE.format(cell=cell), head)
                if to is not None:
                    made[name] = to
                    continue
            else:
                to = route(kind)
            template = _ROUTED if to is not None else _SKIP
            step = getattr(to, "step", None)
            if step is not None:  # a handler of records whose step takes their fields
                template, arguments, to = _ROUTED_FIELDS, _arguments(kind, step), step
            namespace[f"{name}_to"] = to
        define(template.format(
            name=name, kind=kind, index=_INDEX[kind], cell=cell, arguments=arguments, params=", ".join(fields),
            items="".join(f"{f!r}: {f}, " for f in fields), values="".join(f"{f}, " for f in fields)), namespace,
            f"recorder of {kind}")
        made[name] = namespace.pop(name)
    return SimpleNamespace(**made)


def _arguments(kind: str, step: Any) -> str:
    """The call of `step` with the fields of a `kind` record that it names (by position up to the
    first parameter the record has no value for, by keyword after); a parameter the record
    lacks keeps the step's default."""
    value = {f: f for f in EVENT_FIELDS[kind]}
    value.update(t="clock[1]", kind=repr(kind), source='"sim"', proc="proc")
    named, by_position = [], True  # positional until a parameter is left to its default
    for p in inspect.signature(step).parameters.values():
        if p.name in value:
            positional = by_position and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            named.append(value[p.name] if positional else f"{p.name}={value[p.name]}")
        elif p.default is p.empty:
            raise ValueError(f"{kind!r} records have no {p.name!r} for {step.__qualname__}")
        else:
            by_position = False
    return ", ".join(named)
