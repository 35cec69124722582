"""Checking a history in one pass, as it happens: the online checker protocol and its fan-out.

An online check is an object with `handlers` — a dict from event kind to a function taking one
event (a mapping: a dict read from JSONL, or the model's record as it is made) — optionally
`filters` — kind -> (field, values): that kind's handler reads only the events whose field is one
of `values` — `feed(event)` and `verdict()`. `Fanout(checks)` hands every event to the handlers
of its kind whose filter it passes and nothing else (one dict lookup per event; a filter is
tested before the call — inline in the recorders it makes for the model — so no call is made
for an event the check would drop), keeps the history's count and its last time (`end_t`, the
largest `t` seen), and turns an exception inside a check into that check's "unknown" verdict
(a broken checker must never pass) without stopping the others. `check(check, history)` is
feed-all-then-verdict: the same code judges a list of dicts and a stream.

A check keeps what its invariant must (open sessions, pending retries, witnesses); a witness
is kept compact (`keep`: the event's values in a tuple, its key names shared by every event of
that shape) and becomes a dict again (`restore`) only when a verdict names it — the
same keys in the same order, so verdicts print exactly what the history holds.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable, Sequence

from loopfix.harness.verdicts import UNKNOWN, Anomaly, Event, Verdict
from loopfix.reference_app.policy.events import EVENT_FIELDS, define, from_record

Handler = Callable[[Event], None]
Entry = tuple[int, Handler, "tuple[str, tuple[Any, ...]] | None"]  # a check's index, its handler, its filter
Kept = Any  # what keep() returns: restore() gives the dict back
Head = tuple[Sequence[str], str, dict[str, Any]]  # a recorder's parameters, its prologue, their globals

# every kind's record keys in the order the model's records have them: fields, t, kind, source, proc
CANONICAL: dict[str, tuple[str, ...]] = {kind: (*fields, "t", "kind", "source", "proc")
                                         for kind, fields in EVENT_FIELDS.items()}
_INDEX: dict[str, dict[str, int]] = {kind: {k: i for i, k in enumerate(keys)} for kind, keys in CANONICAL.items()}
_SHAPES: dict[tuple[str, ...], tuple[tuple[str, ...], bool]] = {}  # keys -> (shared keys, canonical?)
_CELL = {kind: i for i, kind in enumerate(EVENT_FIELDS)}  # a kind's cell in a Fanout's tally
_last: list[Any] = [None, None]  # the event kept last and its copy: checks keeping one event share it


class Shaped:
    """A kept event whose keys are not its kind's canonical ones (a live or target record)."""

    __slots__ = ("keys", "values")

    def __init__(self, keys: tuple[str, ...], values: tuple[Any, ...]):
        self.keys, self.values = keys, values


def keep(e: Event) -> Kept:
    """A compact copy of `e` for a verdict that may name it later: its values in a tuple (its
    keys are its kind's, in the model's order), or beside its own key names (shared by every
    event of that shape)."""
    if e is _last[0]:
        return _last[1]
    keys = tuple(e)
    shape = _SHAPES.get(keys)
    if shape is None:
        shape = _SHAPES.setdefault(keys, (keys, keys == CANONICAL.get(e.get("kind"))))  # type: ignore[arg-type]
    kept = tuple(e.values()) if shape[1] else Shaped(shape[0], tuple(e.values()))
    _last[0], _last[1] = e, kept
    return kept


def keep_canonical(e: Event) -> Kept:
    """keep() for an event whose keys are its kind's in the model's order (a sim.records record)."""
    if e is _last[0]:
        return _last[1]
    kept = _last[1] = tuple(e.values())
    _last[0] = e
    return kept


def restore(kept: Kept) -> dict[str, Any]:
    if type(kept) is tuple:
        return dict(zip(CANONICAL[kept[-3]], kept))
    return dict(zip(kept.keys, kept.values))


def handler_of(f: Callable[..., None]) -> Handler:
    """A check's handler from `f`: `f` itself when it reads whole events (its one parameter is
    `e`), else a step of the fields it names (policy.events.from_record: a dispatcher of the
    model's records then calls it with those fields). A step's parameter `record` is given the
    event as keep() keeps it, whichever way it comes: a dispatcher's tuple of values is that
    already, and an event read whole is kept on its way in, so that a step holds its argument
    as its witness and calls nothing to keep it (48,000 calls of keep() a simulated hour)."""
    params = list(inspect.signature(f).parameters)
    if params == ["e"]:
        return f
    if "record" not in params:
        return from_record(f)
    i = params.index("record")

    def kept(*args: Any) -> None:  # from_record passes the fields, and the record, by position
        f(*args[:i], keep(args[i]), *args[i + 1:])

    kept.__signature__ = inspect.signature(f)  # type: ignore[attr-defined]
    handler = from_record(kept)
    handler.step = f  # type: ignore[attr-defined]
    return handler


def kept_get(kept: Kept, key: str, default: Any = None) -> Any:
    """`restore(kept).get(key, default)` without building the dict."""
    if type(kept) is tuple:
        i = _INDEX[kept[-3]].get(key)
        return default if i is None else kept[i]
    try:
        return kept.values[kept.keys.index(key)]
    except ValueError:
        return default


class Check:
    """Base of an online check: `name`, `handlers` (kind -> handler) and `verdict()`; the
    fan-out sets `end_t` (the history's largest t) before asking for the verdict. Anomalies
    found as events arrive are `note`d with an ordering key, so that a verdict lists them in
    the order a pass over the whole history would have found them."""

    name = ""
    # the history comes in time order (the model's stream): a check may then forget what no
    # later event can change; set by the fan-out, False for any list it is given
    ordered = False
    # how it keeps a witness: keep, or keep_canonical when the fan-out knows the events' shape
    keep = staticmethod(keep)

    def __init__(self) -> None:
        self.end_t = 0.0
        self.handlers: dict[str, Handler] = {}
        # kind -> (field, values): its handler is given only the events whose field is in values
        self.filters: dict[str, tuple[str, tuple[Any, ...]]] = {}
        self._noted: list[tuple[Any, int, Anomaly]] = []

    def feed(self, e: Event) -> None:
        """One event, by hand (a Fanout feeds many checks in one pass and turns an exception
        into an unknown verdict; here it propagates)."""
        t = float(e["t"])
        if t > self.end_t:
            self.end_t = t
        kind = e.get("kind")
        h = self.handlers.get(kind)  # type: ignore[arg-type]
        if h is not None:
            f = self.filters.get(kind)  # type: ignore[arg-type]
            if passes(f, e):
                h(e)

    def note(self, order: Any, anomaly: Anomaly) -> None:
        self._noted.append((order, len(self._noted), anomaly))

    def noted(self) -> list[Anomaly]:
        """The anomalies noted so far, in their ordering keys' order (ties: as noted)."""
        return [a for *_, a in sorted(self._noted, key=lambda x: (x[0], x[1]))]

    def verdict(self) -> Verdict:
        raise NotImplementedError


def checker_error(name: str, exc: BaseException) -> Verdict:
    """The verdict of a check that raised: unknown, naming the error."""
    err = Anomaly("checker-error", {"error": f"{type(exc).__name__}: {exc}"})
    return Verdict(name, UNKNOWN, {"checker-error": (err,)}, {})


class Fanout:
    """Feeds events to online checks (and any other consumer with `handlers`) in one pass.

    `append(event)` takes any event, so a Fanout can stand where a history list stood and
    `feed(history)` is a loop over it. A source that makes events of known kinds in time order
    (sim.records' recorders) asks `recorder(kind, ...)` instead, once per kind: its whole
    recorder of that kind (None when nothing reads it: the source then builds no event at all),
    which reads the source's clock and hands the event's fields on (a handler that is a step is
    called with them: the event is built only for the handlers that read it whole). Such a
    source counts its events by kind in `tally` (a cell per kind of EVENT_FIELDS, in its order)
    and leaves its clock (`[raw, rounded]` of the last event) in `clock`; `events`,
    `count(kind)` and the end time include them."""

    def __init__(self, checks: Sequence[Any], also: Callable[[Event], None] | None = None, ordered: bool = False):
        self.checks = list(checks)
        for c in self.checks:
            if isinstance(c, Check):
                c.ordered = ordered
        self.failed: dict[int, BaseException] = {}
        self._n = 0  # events appended
        self._appended: dict[Any, int] = {}  # and by kind
        self.tally = [0] * len(_CELL)  # events a recorder-making source made, by kind (recorder)
        self.clock: list[float] | None = None  # and its clock: [raw, rounded] at its last event
        self.end_t: float | None = None
        self._t_error: BaseException | None = None
        self._also = also
        # recorded kinds -> (their checks' indices, the steps their recorder calls, its refresh):
        # a failed check's steps become _ignore there
        self._lists: dict[str, tuple[list[int], list[Any], Callable[[], None] | None]] = {}
        self._routed = False
        self._build()

    @property
    def events(self) -> int:
        return self._n + sum(self.tally)

    def count(self, kind: str) -> int:
        """How many events of `kind` it was given (appended or made by a recorder it made): a
        consumer may leave to it a kind it only counts (sim.metrics.HistoryMetrics.counted)."""
        cell = _CELL.get(kind)
        return self._appended.get(kind, 0) + (0 if cell is None else self.tally[cell])

    def _build(self) -> None:
        table: dict[str, list[Entry]] = {}
        for i, c in enumerate(self.checks):
            if i in self.failed:
                continue
            filters = getattr(c, "filters", None) or {}
            for kind, h in c.handlers.items():
                table.setdefault(kind, []).append((i, h, filters.get(kind)))
        for idx, hs, refresh in self._lists.values():
            for j, i in enumerate(idx):
                if i in self.failed:
                    hs[j] = _ignore
            refresh()
        self._table = {k: tuple(v) for k, v in table.items()}

    def _fail(self, i: int, exc: BaseException) -> None:
        if not isinstance(self.checks[i], Check):
            raise exc  # a consumer with no verdict to carry its error (metrics) fails the run
        self.failed[i] = exc
        self._build()

    def recorder(self, kind: str, params: Sequence[str], prologue: str, names: dict[str, Any]) -> Callable[..., None] | None:
        """The source's recorder of `kind` and the hand-off of its events, as one function (None
        when nothing reads `kind`): it takes `params` (the kind's fields among them, and `proc`), runs `prologue`
        (source lines of the function's body, with `names` as their globals), which binds `t`,
        and then hands the event on as the step would. A call of a function with the fields
        costs ~550 instructions: once per record of a routed kind (70,000 an hour of the day
        scenario) it is not made."""
        if not self._reads(kind):
            return None
        entries = self._table.get(kind, ())
        dispatch, steps, refresh = _fields_dispatcher(kind, entries, self._fail, self._also, (params, prologue, names))
        self._lists[kind] = ([i for i, _, _ in entries], steps, refresh)
        return dispatch

    def _reads(self, kind: str) -> bool:
        """Whether anything reads `kind` events; if so, the checks keep them as a router's."""
        if kind not in self._table and self._also is None:
            return False
        for c in self.checks:  # a router's records have their kind's keys in the model's order
            if isinstance(c, Check):
                c.keep = keep_canonical  # type: ignore[assignment]
        self._routed = True
        return True

    def append(self, e: Event) -> None:
        if self._routed:  # any event may come this way: keep its own keys
            self._routed = False
            for c in self.checks:
                if isinstance(c, Check):
                    c.keep = keep  # type: ignore[assignment]
        self._n += 1
        if self._also is not None:
            self._also(e)
        try:
            t = float(e["t"])
            if self.end_t is None or t > self.end_t:
                self.end_t = t
        except Exception as exc:  # noqa: BLE001 - a bad t decides no check that reads it
            if self._t_error is None:
                self._t_error = exc
        try:
            kind = e.get("kind")
            handlers = self._table.get(kind, ())
            self._appended[kind] = self._appended.get(kind, 0) + 1
        except Exception as exc:  # noqa: BLE001 - not a mapping: every check that reads it is undecided
            for i in range(len(self.checks)):
                self.failed.setdefault(i, exc)
            self._build()
            return
        for i, h, f in handlers:
            try:
                if passes(f, e):
                    h(e)
            except Exception as exc:  # noqa: BLE001 - reported as that check's verdict
                self._fail(i, exc)

    def last_t(self) -> float:
        """The history's largest t so far (0.0 before any event)."""
        ts = [t for t in (self.end_t, self.clock[1] if self.clock is not None and any(self.tally) else None)
              if t is not None]
        return max(ts) if ts else 0.0

    def feed(self, history: Iterable[Event]) -> "Fanout":
        append = self.append
        for e in history:
            append(e)
        return self

    def verdicts(self) -> list[Verdict]:
        out = []
        for i, c in enumerate(self.checks):
            if not isinstance(c, Check):
                continue
            out.append(self.verdict_of(i))
        return out

    def close(self) -> None:
        """Let go of the checks and consumers once their verdicts and figures are out: their
        handlers (bound methods: each a cycle back to its check) and the dispatchers' lists, so
        that what they kept is freed there and then, by reference counting, instead of waiting
        for the cyclic garbage collector to scan it all (0.5 CPU s after a 24 h day)."""
        for c in self.checks:
            c.handlers = {}
        for _, hs, refresh in self._lists.values():
            hs[:] = [_ignore] * len(hs)
            refresh()
        self.checks, self._table, self._lists = [], {}, {}

    def verdict_of(self, i: int) -> Verdict:
        c = self.checks[i]
        if i in self.failed:
            return checker_error(c.name, self.failed[i])
        if self._t_error is not None and getattr(c, "needs_end_t", False):
            return checker_error(c.name, self._t_error)
        c.end_t = self.last_t()
        try:
            return c.verdict()
        except Exception as exc:  # noqa: BLE001
            return checker_error(c.name, exc)


def passes(f: tuple[str, tuple[Any, ...]] | None, e: Event) -> bool:
    """Whether a handler with filter `f` (field, values; None: none) reads event `e` (the
    recorders `_fields_dispatcher` generates test the same, inline)."""
    return f is None or e.get(f[0]) in f[1]


def _ignore(*args: Any, **fields: Any) -> None:
    """What a failed check's handler (or step) becomes in a dispatcher: its verdict is the error."""


def _fields_dispatcher(kind: str, entries: Sequence[Entry], fail: Callable[[int, BaseException], None],
                       also: Callable[[Event], None] | None,
                       head: Head) -> tuple[Callable[..., None], list[Any], Callable[[], None]]:
    """Fanout.recorder's function: it takes `head`'s parameters (a `kind` record's fields among
    them, and `proc`), runs its prologue (which binds `t`; its names are the function's
    globals), then hands the record on to `also` and to each (check index, handler, filter) of
    `entries` whose filter it passes (`passes`, tested inline on the fields), an exception in a
    handler given to `fail` with its check's index: a handler with a `step`
    (policy.events.from_record) is called with the fields its step names, any other with the
    record, built only then — once, and only if a filter lets such a handler read it. A step's
    parameter `record` is given the record's values as a tuple in its kind's key order (what
    keep_canonical keeps). Generated straight-line code: a loop over the handlers with a try in
    it costs a fifth of the checker's time, and a call to a handler that drops the event most
    of it. Its steps are its globals: after replacing one in the list it returns, `refresh()`
    makes the function call the list's. (Not its parameters' defaults:
    a call copies each into the frame, 61 instructions more a record of a kind read by three
    steps than their globals' reads, and the model, which calls a recorder directly, could
    pass one by mistake.)"""
    keys = CANONICAL[kind]
    value = {k: k for k in EVENT_FIELDS[kind]}
    value.update(t="t", kind=repr(kind), source='"sim"', proc="proc")
    assert not any(k.startswith("_") for k in value), "a dispatcher's own names start with _"
    display = "{" + ", ".join(f"{k!r}: {value[k]}" for k in keys) + "}"
    make = {"_e": display, "_r": "(" + ", ".join(value[k] for k in keys) + ",)"}
    steps: list[Any] = []
    namespace: dict[str, Any] = {"_fail": fail, "_also": also}
    params, prologue, names = head
    assert not any(k.startswith("_") for k in names), "a dispatcher's own names start with _"
    namespace.update(names)
    lines = [f"def dispatch({', '.join(params)}):", *prologue.splitlines()]
    start = len(lines)  # where the body starts
    state = {"_e": "no", "_r": "no"}  # the record as a dict, as a tuple: not built, maybe built, built

    def need(name: str, indent: str) -> None:
        if state[name] == "yes":
            return
        if indent or state[name] == "maybe":
            lines.extend([f"    {indent}if {name} is None:", f"    {indent}    {name} = {make[name]}"])
            state[name] = "maybe" if indent else "yes"
        else:
            lines.append(f"    {name} = {make[name]}")
            state[name] = "yes"

    if also is not None:
        need("_e", "")
        lines.append("    _also(_e)")
    for j, (i, h, f) in enumerate(entries):
        indent = ""
        if f is not None:
            namespace[f"_w{j}"] = tuple(f[1])
            if f[0] in EVENT_FIELDS[kind] or f[0] in ("t", "proc"):
                lines.append(f"    if {f[0]} in _w{j}:")
                indent = "    "
            elif {"kind": kind, "source": "sim"}.get(f[0]) not in f[1]:
                steps.append(h)
                namespace[f"_s{j}"] = h
                continue  # no record of this kind passes
        step, args, uses = getattr(h, "step", None), [], "_e"
        if step is not None:
            uses = ""
            for p in inspect.signature(step).parameters.values():
                if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    continue
                if p.name == "record":
                    arg, uses = "_r", "_r"
                elif p.name in value:
                    arg = value[p.name]
                elif p.default is not p.empty:  # passed all the same: a call with every argument is the fast one
                    arg = f"_d{j}_{p.name}"
                    namespace[arg] = p.default
                else:  # a field the record lacks: the handler reads the record itself
                    step, uses = None, "_e"
                    break
                args.append(f"{p.name}={arg}" if p.kind == p.KEYWORD_ONLY else arg)
        steps.append(h if step is None else step)
        namespace[f"_s{j}"] = steps[-1]
        if uses:
            need(uses, indent)
        call = f"_s{j}({', '.join(args) if step is not None else '_e'})"
        lines += [f"    {indent}try:", f"    {indent}    {call}", f"    {indent}except Exception as exc:",
                  f"    {indent}    _fail({i}, exc)"]
    for name in ("_e", "_r"):
        if any(line.endswith(f"if {name} is None:") for line in lines):
            lines.insert(start, f"    {name} = None")
    if len(lines) == 1:
        lines.append("    pass")
    define("\n".join(lines), namespace, f"dispatcher of {kind} fields")
    dispatch = namespace.pop("dispatch")

    def refresh() -> None:
        namespace.update((f"_s{j}", step) for j, step in enumerate(steps))

    return dispatch, steps, refresh


def check(c: Check, history: Iterable[Event]) -> Verdict:
    """Feed every event of `history` to `c`, then its verdict (errors: unknown)."""
    return Fanout([c]).feed(history).verdict_of(0)
