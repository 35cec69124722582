"""Model processes without simpy.Process: a generator driven by its events' callbacks.

`Proc(env, generator)` runs a generator that yields SimPy events, as `env.process` does — it
starts at the current time with the same urgency (so every history keeps its order), resumes
with each event's value, receives a failed event's exception — but it is not itself an event:
nothing can wait for it, and its end schedules nothing. The model never waits for a process,
and SimPy's Process paid one extra event per process and a heavier resume per step for that.

`Proc.interrupt(cause)` throws `simpy.Interrupt(cause)` into the generator at the current time,
before anything else scheduled then (SimPy's Interruption, urgent priority). An exception the
generator does not handle propagates out of `env.run()`.
"""
from __future__ import annotations

from typing import Any, Generator

import simpy
from simpy.core import URGENT
from simpy.events import Event


class Proc:
    """A running model process: `gen` waits on `target`."""

    __slots__ = ("env", "gen", "target", "alive")

    def __init__(self, env: simpy.Environment, gen: Generator[Event, Any, Any]):
        self.env, self.gen, self.target, self.alive = env, gen, None, True
        start = Event(env)
        start._ok, start._value = True, None
        start.callbacks.append(self.resume)
        env.schedule(start, URGENT)

    def resume(self, event: Event) -> None:
        gen = self.gen
        try:
            while True:
                if event._ok:
                    event = gen.send(event._value)
                else:
                    event._defused = True
                    event = gen.throw(event._value)
                callbacks = event.callbacks
                if callbacks is not None:  # not yet processed: wait for it
                    callbacks.append(self.resume)
                    self.target = event
                    return
        except StopIteration:
            self.alive, self.target = False, None

    def interrupt(self, cause: Any = None) -> None:
        """Throw simpy.Interrupt(cause) into the process now (ignored once it has ended)."""
        hit = Event(self.env)
        hit._ok, hit._value, hit._defused = False, simpy.Interrupt(cause), True
        hit.callbacks.append(self._interrupted)
        self.env.schedule(hit, URGENT)

    def _interrupted(self, event: Event) -> None:
        if not self.alive:
            return
        self.target.callbacks.remove(self.resume)
        self.resume(event)

