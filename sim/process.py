"""Model processes without simpy.Process: a generator driven by the queue and its events.

`Proc(env, generator)` runs a generator as `env.process` does — it starts at the current time
with the same urgency (so every history keeps its order), resumes with each event's value,
receives a failed event's exception — but it is not itself an event: nothing can wait for it,
and its end schedules nothing. The model never waits for a process, and SimPy's Process paid
one extra event per process and a heavier resume per step for that.

What a process yields:
- a delay, a float or an int (`yield 2.5`): it sleeps that long and is sent None, exactly as
  `yield env.timeout(2.5)` — but no event is made. Its queue entry is the process itself,
  `(now + delay, NORMAL, eid, proc)`, with the eid the timeout would have drawn, so the queue's
  order (time, priority, creation order) and every history stay what they were; the process
  keeps that eid as its `ticket`. Most of the model's steps are sleeps (an arrival gap, a job's
  overhead, a download), and a timeout cost an object, its callback list, a callback append
  and a callback call each (measured: 5 % of an M/M/c point's instructions). A negative delay
  is thrown into the generator as ValueError, where env.timeout would have raised it.
- a `Waiters` line (JobQueue.wait, an idle worker's): it joins the line, and whoever hands
  it a value (JobQueue.put) calls `proc.wake(value)`, which queues the process as an event
  succeeded then would have been queued, `(now, NORMAL, eid, proc)` — without the event a
  waiter cost before (measured: 1.5 % of an M/M/c point's instructions, more where workers
  idle more).
- an event (SimPy's, or the model's own, the ticker's): it waits for it as SimPy's Process
  does; an event already processed answers at once.
A process's start is a queue entry of the same kind (URGENT, as SimPy's Initialize).

`Proc.interrupt(cause)` throws `simpy.Interrupt(cause)` into the generator at the current time,
before anything else scheduled then (SimPy's Interruption, urgent priority). A sleeping (or
woken) process gets it at once; its ticket is voided, so the wake-up it had scheduled stays in
the queue (taking its place in the order as an interrupted timeout does) and is skipped when it
comes up; a process in a Waiters line leaves the line. An exception the generator does not
handle propagates out of `env.run()`.

`Env` is the model's simpy.Environment with a leaner event loop: `timeout` builds its timeout
(a slotted stand-in for SimPy's Timeout) without the two calls SimPy's constructor makes
(Timeout.__init__, schedule), and `run(until=t)` pops and dispatches events and wake-ups in one
loop instead of a `step()` call per event (`step` handles both too, for `run()` without a
number). It resumes a woken process itself and, when the process sleeps again (most steps of
the model), queues that sleep as `Proc.follow` would (measured: 1.6 % of an M/M/c point's
instructions). The queue, the event order and what `until` means are SimPy's, so a run is the
same event for event; an event that failed with nobody to defuse it still crashes the run. On a
plain simpy.Environment (tests compare the two) a Proc turns each delay into `env.timeout(delay)`.

The far heap: a sleep longer than FAR_S (a user opening a recording a while after its call,
most of a busy day's pending entries) waits in `Env._far`, not in the queue, and moves into the
queue once the queue's first entry is not before it. The queue stays a few dozen entries deep
instead of a few hundred, and every push and pop compares entries (tuples: their times for
equality, then for order) at each level of it (measured: the day scenario's instructions -1.8 %,
an M/M/c point's -0.4 %). Which heap an entry waits in changes nothing of the order: it is
taken from the queue only while the far heap's first is later.

`gc_paused()`: the cyclic collector off for a run or the measuring of its history.
"""
from __future__ import annotations

import contextlib
import gc
from collections import deque
from heapq import heappop, heappush
from typing import Any, Generator, Iterator

import simpy
from simpy.core import NORMAL, URGENT, EmptySchedule
from simpy.events import Event

_new = object.__new__
_INF = float("inf")
FAR_S = 10.0  # a process's sleep longer than this waits in Env's far heap (best of 1-300 s, measured)


class _Timeout:
    """What Env.run and Proc read of a SimPy Timeout (env, callbacks, _ok, _value, _delay), in
    slots: no instance dict to make per timeout (measured: 0.3 % of the day's instructions). Not
    a simpy.Event: only the model's processes wait on it; nothing in the model combines a
    timeout into a condition or hands it to simpy.Process."""

    __slots__ = ("env", "callbacks", "_value", "_delay", "_ok", "_defused")


class Env(simpy.Environment):
    """simpy.Environment, leaner: same queue, same order, fewer Python calls per event, and a
    process's sleep or start is its own queue entry (no event object); a long sleep's entry
    waits in the far heap (`_far`, the module's docstring) until it comes near."""

    def __init__(self, initial_time: float = 0) -> None:
        super().__init__(initial_time)
        self._far: list[tuple] = []  # queue entries of long sleeps (FAR_S), until they come near

    def timeout(self, delay: float, value: Any = None) -> _Timeout:  # type: ignore[override]
        if delay < 0:
            raise ValueError(f"Negative delay {delay}")
        ev = _new(_Timeout)
        ev.env, ev.callbacks, ev._value, ev._delay, ev._ok = self, [], value, delay, True
        heappush(self._queue, (self._now + delay, NORMAL, next(self._eid), ev))
        return ev

    def run(self, until: Any = None) -> Any:
        """As simpy's run; a numeric `until` runs in one loop (events before `until`, and urgent
        ones at it scheduled before this call), other forms go to simpy's (through `step`)."""
        if until is None or isinstance(until, Event):
            return super().run(until)
        at = float(until)
        if at <= self._now:
            raise ValueError(f"until ({at}) must be greater than the current simulation time")
        stop = Event(self)
        stop._ok, stop._value = True, None
        queue, eids, normal, pop, push = self._queue, self._eid, NORMAL, heappop, heappush
        far, far_s = self._far, FAR_S
        far_t = far[0][0] if far else _INF  # when the far heap's first entry is due
        heappush(queue, (at, URGENT, next(eids), stop))
        while True:
            if queue[0][0] >= far_t:  # the far heap's first may come first: into the queue with it
                push(queue, pop(far))
                far_t = far[0][0] if far else _INF
                continue
            now, _, eid, event = pop(queue)  # never empty: `stop` is in it
            self._now = now
            if event.__class__ is Proc:  # a process's wake-up: its own, unless interrupted since
                if event.ticket == eid:
                    try:
                        nxt = event.gen.send(event.sent)
                    except StopIteration:
                        event.alive = False
                        continue
                    cls = nxt.__class__
                    if cls is float and nxt >= 0:  # sleeps again: Proc.follow's sleep, inline
                        event.ticket = eid = next(eids)
                        event.sent = None
                        if nxt > far_s:
                            push(far, (now + nxt, normal, eid, event))
                            if now + nxt < far_t:
                                far_t = now + nxt
                        else:
                            push(queue, (now + nxt, normal, eid, event))
                    elif cls is Waiters:  # an idle worker joins the line: Proc.follow's, inline
                        nxt.append(event)
                        event.target = nxt
                    else:
                        event.follow(nxt)
                continue
            if event is stop:
                return None
            _fire(event)

    def step(self) -> None:
        """One entry of the queue, as simpy's step (which `run` without a number uses)."""
        self._draw_near()
        try:
            now, _, eid, event = heappop(self._queue)
        except IndexError:
            raise EmptySchedule() from None
        self._now = now
        if event.__class__ is Proc:
            if event.ticket == eid:
                event.advance(True, event.sent)
            return
        _fire(event)

    def _draw_near(self) -> None:
        """The far heap's entries that come before the queue's first, into the queue."""
        far, queue = self._far, self._queue
        while far and (not queue or far[0] < queue[0]):
            heappush(queue, heappop(far))

    def peek(self) -> float:
        """As simpy's peek: the next entry's time, the far heap's first included."""
        self._draw_near()
        return super().peek()

    def clear(self) -> None:
        """Drop every pending entry, the far heap's too (a disposed model: World.dispose)."""
        self._queue.clear()
        self._far.clear()


def _fire(event: Event) -> None:
    """Call a processed event's callbacks, as simpy's step does; an event that failed with
    nobody to defuse it crashes the run."""
    callbacks, event.callbacks = event.callbacks, None
    for callback in callbacks:
        callback(event)
    if not event._ok and not hasattr(event, "_defused"):
        exc = type(event._value)(*event._value.args)
        exc.__cause__ = event._value
        raise exc


class Proc:
    """A running model process: `gen` waits on `target` (an event, or a Waiters line it is in),
    or, with `target` None, sleeps (or was woken) until its queue entry with eid `ticket` comes
    up, to be sent `sent`."""

    __slots__ = ("env", "gen", "target", "alive", "ticket", "sent", "queue")

    def __init__(self, env: simpy.Environment, gen: Generator[Any, Any, Any]):
        self.env, self.gen, self.target, self.alive, self.sent = env, gen, None, True, None
        if isinstance(env, Env):  # starts as its own queue entry
            self.queue = queue = env._queue
            self.ticket = eid = next(env._eid)
            heappush(queue, (env._now, URGENT, eid, self))
        else:  # plain SimPy: Event(env) succeeded at once, built directly
            self.queue, self.ticket = None, None
            start = _new(Event)
            start.env, start.callbacks, start._ok, start._value = env, [self.resume], True, None
            self.target = start
            heappush(env._queue, (env._now, URGENT, next(env._eid), start))

    def resume(self, event: Event) -> None:
        """The callback of the event the process waits on."""
        if event._ok:
            self.advance(True, event._value)
        else:
            event._defused = True
            self.advance(False, event._value)

    def advance(self, ok: bool, value: Any) -> None:
        """Send `value` into the generator (throw it, when not `ok`) and `follow` what it yields."""
        try:
            event = self.gen.send(value) if ok else self.gen.throw(value)
        except StopIteration:
            self.alive, self.target = False, None
            return
        self.follow(event)

    def follow(self, event: Any) -> None:
        """Wait as the generator's yield `event` says: a delay (float or int) sleeps, a Waiters
        line is joined, an event not yet processed is waited on; a processed event answers at
        once, and the generator's next yield is followed."""
        gen = self.gen
        try:
            while True:
                cls = event.__class__
                if cls is float or cls is int:
                    if event < 0:  # thrown in where env.timeout would have raised it
                        event = gen.throw(ValueError(f"Negative delay {event}"))
                        continue
                    queue = self.queue
                    if queue is not None:
                        env = self.env
                        self.ticket = eid = next(env._eid)
                        self.target = self.sent = None
                        heappush(queue, (env._now + event, NORMAL, eid, self))
                        return
                    event = self.env.timeout(event)  # plain SimPy: a Timeout
                elif cls is Waiters:  # in line for a hand-off: `wake` ends the wait
                    event.append(self)
                    self.target = event
                    return
                try:
                    callbacks = event.callbacks
                except AttributeError:
                    raise TypeError(f"a model process yielded {event!r}: neither a delay (float or int) "
                                    "nor an event") from None
                if callbacks is not None:  # not yet processed: wait for it
                    callbacks.append(self.resume)
                    self.target = event
                    return
                if event._ok:
                    event = gen.send(event._value)
                else:
                    event._defused = True
                    event = gen.throw(event._value)
        except StopIteration:
            self.alive, self.target = False, None

    def wake(self, value: Any) -> None:
        """End the process's wait now with `value`, as an event succeeded now with it would: its
        queue entry (now, NORMAL, the next eid), without the event."""
        env = self.env
        queue = self.queue
        if queue is None:  # plain SimPy: the event
            self.target = ev = Event(env)
            ev.callbacks.append(self.resume)
            ev.succeed(value)
            return
        self.ticket = eid = next(env._eid)
        self.target, self.sent = None, value
        heappush(queue, (env._now, NORMAL, eid, self))

    def interrupt(self, cause: Any = None) -> None:
        """Throw simpy.Interrupt(cause) into the process now (ignored once it has ended)."""
        hit = Event(self.env)
        hit._ok, hit._value, hit._defused = False, simpy.Interrupt(cause), True
        hit.callbacks.append(self._interrupted)
        self.env.schedule(hit, URGENT)

    def _interrupted(self, event: Event) -> None:
        if not self.alive:
            return
        target = self.target
        if target is None:  # asleep, woken or not started: its queue entry is left to go stale
            self.ticket = None
        elif target.__class__ is Waiters:
            target.remove(self)
        else:
            target.callbacks.remove(self.resume)
        self.advance(False, event._value)


def run_now(env: simpy.Environment, gen: Generator[Any, Any, Any]) -> Proc:
    """A process whose first step runs now, in the caller, instead of at its start entry (now,
    URGENT): the same order where nothing else urgent is due now before that entry would come
    up — an event's callback that starts processes and then returns to the queue (the openings'
    alarm, sim.actors.clients). No start entry to push, pop and dispatch (~3,000 openers a simulated
    hour; full 1: -8.0 M instructions)."""
    proc = _new(Proc)
    proc.env, proc.gen, proc.target = env, gen, None
    proc.alive, proc.sent, proc.ticket = True, None, None
    proc.queue = env._queue if isinstance(env, Env) else None
    proc.advance(True, None)
    return proc


class Waiters(deque):
    """A line of processes waiting to be handed something (JobQueue's idle workers): a Proc
    yields the line to join it, and whoever hands a value takes the first and `wake`s it. A
    line may also hold SimPy events of others' waits (JobQueue.take, for simpy.Process)."""

    __slots__ = ()


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic collector paused: a run, or the measuring of its history, makes many small
    containers that live to the end, which the collector would re-scan over and over for nothing
    (reference counting still frees what dies)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
