"""sim.process: a model process that yields a delay sleeps without an event, in the order a SimPy
timeout of that delay would have had; an interrupt reaches it at once, and the wake-up it had
scheduled is then ignored. A process in a line of Waiters is woken by a hand-off in the order
an event succeeded then would have had."""
from __future__ import annotations

import pytest
import simpy

from loopfix.sim.process import FAR_S, Env, Proc, Waiters


def _sleeper(env, log, name, delays, as_timeout=False):
    for d in delays:
        yield env.timeout(d) if as_timeout else d
        log.append((env.now, name))


def _ties(env, log, procs_as_simpy=False):
    """Processes whose wake-ups tie: sleeps and timeouts at the same instants, created in an
    order that only the event ids break, and a process started at a tie."""
    start = env.process if procs_as_simpy else (lambda gen: Proc(env, gen))
    as_timeout = procs_as_simpy
    start(_sleeper(env, log, "a", [1.0, 1.0, 0.5], as_timeout))
    start(_sleeper(env, log, "b", [2, 0.5, 0.0], as_timeout))  # an int delay, a zero one
    start(_sleeper(env, log, "c", [1.0, 1, 1.5], True))  # SimPy timeouts among the sleeps

    def late_starter():
        yield 2.0 if not as_timeout else env.timeout(2.0)
        log.append((env.now, "d starts e"))
        start(_sleeper(env, log, "e", [0.0, 0.5], as_timeout))
        log.append((env.now, "d"))

    start(late_starter())


@pytest.mark.parametrize("until", [None, 10.0])
def test_sleeps_wake_in_the_order_simpy_timeouts_do_ties_included(until):
    ours, simpys = [], []
    env = Env()
    _ties(env, ours)
    env.run(until)  # run(None) goes through Env.step, a number through Env.run's own loop
    reference = simpy.Environment()
    _ties(reference, simpys, procs_as_simpy=True)
    reference.run(until)
    assert ours == simpys
    assert len(ours) == 13 and [t for t, _ in ours] == sorted(t for t, _ in ours)


def test_on_plain_simpy_a_sleep_is_a_timeout_with_the_same_order():
    ours, on_simpy = [], []
    env = Env()
    _ties(env, ours)
    env.run(10.0)
    reference = simpy.Environment()
    _ties(reference, on_simpy)  # Proc on simpy.Environment: delays become env.timeout
    reference.run(10.0)
    assert ours == on_simpy


def test_an_interrupted_sleep_gets_the_interrupt_at_once_and_its_wake_up_is_ignored():
    env, log = Env(), []

    def sleeper():
        try:
            yield 10.0
            log.append((env.now, "woke"))
        except simpy.Interrupt as e:
            log.append((env.now, f"interrupted: {e.cause}"))
        yield gate  # waiting on an event at 10.0, when the stale wake-up comes up
        log.append((env.now, "gate opened"))
        yield 5.0
        log.append((env.now, "slept again"))

    def other():
        yield 4.0
        log.append((env.now, "other at 4"))  # scheduled before the interrupt: the interrupt is urgent
        proc.interrupt("crash")

    def bystander():
        yield 4.0
        log.append((env.now, "bystander at 4"))

    def opener():
        yield 12.0
        gate.succeed()

    gate = env.event()
    proc = Proc(env, sleeper())
    Proc(env, other())
    Proc(env, bystander())
    Proc(env, opener())
    env.run(30.0)
    assert log == [(4.0, "other at 4"), (4.0, "interrupted: crash"), (4.0, "bystander at 4"), (12.0, "gate opened"),
                   (17.0, "slept again")]
    assert not proc.alive


def test_an_interrupt_while_waiting_on_an_event_unhooks_the_process():
    env, log = Env(), []
    never = env.event()

    def waiter():
        try:
            yield never
        except simpy.Interrupt:
            log.append(env.now)
        yield 1.0
        log.append(env.now)

    proc = Proc(env, waiter())

    def crasher():
        yield 2.0
        proc.interrupt()

    Proc(env, crasher())
    env.run(5.0)
    assert log == [2.0, 3.0] and never.callbacks == []


def test_a_negative_delay_is_thrown_into_the_process_as_a_timeout_would_raise_it():
    env, seen = Env(), []

    def proc():
        try:
            yield -1.0
        except ValueError as e:
            seen.append(str(e))
        yield 1.0

    Proc(env, proc())
    env.run(2.0)
    assert seen == ["Negative delay -1.0"]


def test_yielding_neither_a_delay_nor_an_event_says_so():
    env = Env()

    def proc():
        yield "soon"

    Proc(env, proc())
    with pytest.raises(TypeError, match="neither a delay"):
        env.run(1.0)


def _hand_offs(env, log):
    """Two waiters in a line, handed values at an instant where sleeps also end, before and after."""
    line = Waiters()

    def waiter(name):
        while True:
            value = yield line
            log.append((env.now, name, value))
            yield 0.0

    def handler():
        yield 1.0
        for v in ("x", "y", "z"):
            for w in list(line)[:1]:
                line.popleft()
                w.wake(v)
            log.append((env.now, "handed", v))
            yield 0.0

    def sleeper():
        yield 1.0
        log.append((env.now, "sleeper"))
        yield 0.0
        log.append((env.now, "sleeper again"))

    Proc(env, waiter("w1"))
    Proc(env, waiter("w2"))
    Proc(env, handler())
    Proc(env, sleeper())


def test_a_hand_off_wakes_a_waiter_in_the_order_an_event_succeeded_then_would():
    ours, on_simpy = [], []
    env = Env()
    _hand_offs(env, ours)
    env.run(5.0)
    reference = simpy.Environment()
    _hand_offs(reference, on_simpy)  # Proc on simpy.Environment: wake succeeds an event
    reference.run(5.0)
    assert ours == on_simpy
    assert [(n, v) for _, n, *v in ours if n.startswith("w")] == [("w1", ["x"]), ("w2", ["y"]), ("w1", ["z"])]


def test_an_interrupted_waiter_leaves_the_line():
    env, log = Env(), []
    line = Waiters()

    def waiter():
        try:
            yield line
        except simpy.Interrupt:
            log.append((env.now, "interrupted", len(line)))

    proc = Proc(env, waiter())

    def crasher():
        yield 1.0
        proc.interrupt()

    Proc(env, crasher())
    env.run(2.0)
    assert log == [(1.0, "interrupted", 0)] and not proc.alive


def _crowd(env, log, seed, as_simpy):
    """Eight processes of whole-second sleeps, from 1 s to 3 * FAR_S, so that sleeps wait in
    the far heap and in the queue and move from one to the other at ties with the queue's own
    entries (the 1 s sleeper is due at every whole second); every 7 s one of them, drawn from
    `seed`, is interrupted."""
    import random

    rng = random.Random(seed)
    start = env.process if as_simpy else (lambda gen: Proc(env, gen))
    procs = []

    def sleeper(name, d):
        while True:
            try:
                yield env.timeout(d) if as_simpy else d
                log.append((env.now, name))
            except simpy.Interrupt:
                log.append((env.now, f"{name} interrupted"))

    def interrupter():
        while True:
            yield env.timeout(7) if as_simpy else 7
            procs[rng.randrange(len(procs))].interrupt()
            log.append((env.now, "interrupt"))

    far = int(FAR_S)
    for i, d in enumerate([2 * far, 1, far + 1, far, 3 * far, 2, 2 * far, far + 1]):
        # ints and floats: Env.run's loop sleeps a float itself, an int through Proc.follow
        procs.append(start(sleeper(f"p{i}", float(d) if i % 2 else d)))
    start(interrupter())


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("until", [None, 100.0])
def test_sleeps_past_far_s_wait_aside_and_still_wake_in_simpys_order(seed, until):
    """A sleep longer than FAR_S waits in Env's far heap: the order of every wake-up and
    interrupt stays the one SimPy's timeouts give, ties with near entries included, run in
    one loop or step by step, in one call or in several."""
    ours, simpys = [], []
    env = Env()
    _crowd(env, ours, seed, as_simpy=False)
    reference = simpy.Environment()
    _crowd(reference, simpys, seed, as_simpy=True)
    if until is None:  # Env.step and peek, entry by entry, from the far entries Env.run left
        env.run(2 * FAR_S + 1)
        assert env._far  # (else this would not test what it says)
        while env.peek() < 6 * FAR_S:
            env.step()
        reference.run(6 * FAR_S)
    else:  # Env.run's loop, stopped and resumed at instants where entries tie
        for at in (FAR_S, 2 * FAR_S + 1, until):
            env.run(at)
            reference.run(at)
    assert ours == simpys
    assert any(t >= FAR_S for t, _ in ours) and any("interrupted" in what for _, what in ours)


def _alarm_opens(env, log, first_step_now):
    """An alarm's callback (as sim.actors.clients' Openings rings) starts two openers at an
    instant where others are due too, before and after it; each opener starts a process of its
    own and sleeps, ties included."""
    from loopfix.sim.process import run_now

    start = (lambda gen: run_now(env, gen)) if first_step_now else (lambda gen: Proc(env, gen))

    def opener(name):
        log.append((env.now, name))
        Proc(env, _sleeper(env, log, name + "'", [0.0, 1.0]))  # starts at its own (urgent) entry
        yield 0.0
        log.append((env.now, name + " again"))
        yield 1.0
        log.append((env.now, name + " done"))

    def ring(event):
        start(opener("x"))
        start(opener("y"))

    def set_alarm():
        yield 1.0
        alarm = simpy.Event(env)
        alarm._ok, alarm._value = True, None
        alarm.callbacks.append(ring)
        env.schedule(alarm, simpy.core.NORMAL, 1.0)

    Proc(env, _sleeper(env, log, "before", [2.0, 1.0]))  # due at the alarm's instant, queued before it
    Proc(env, set_alarm())
    Proc(env, _sleeper(env, log, "after", [1.5, 0.5, 0.0, 1.0]))  # due then too, queued after it


@pytest.mark.parametrize("env_class", [Env, simpy.Environment])
def test_a_process_whose_first_step_runs_in_an_alarms_callback_keeps_the_order_of_one_started_there(env_class):
    now, started = [], []
    env = env_class()
    _alarm_opens(env, now, first_step_now=True)
    env.run(10.0)
    reference = env_class()
    _alarm_opens(reference, started, first_step_now=False)
    reference.run(10.0)
    assert now == started
    assert now[:4] == [(1.5, "after"), (2.0, "before"), (2.0, "x"), (2.0, "y")] and len(now) == 16
