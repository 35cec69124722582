"""loopfix/parallel.py: results in the items' order whatever order they ran in; an error in
an item stops the rest; Ctrl-C keeps the results finished (the pool case end to end: see
tests/test_interrupt.py)."""
from __future__ import annotations

import pytest

from loopfix import parallel


def square(x: int) -> int:
    return x * x


def interrupt_at_three(x: int) -> int:
    if x == 3:
        raise KeyboardInterrupt
    return x


def fail_at_two(x: int) -> int:
    if x == 2:
        raise ValueError("point 2 is bad")
    return x


@pytest.mark.parametrize("jobs", [1, 2])
def test_results_come_back_in_the_items_order_whatever_order_they_ran_in(jobs):
    done = []
    assert parallel.run_all(square, [1, 2, 3, 4], jobs, order=[3, 1, 0, 2], on_done=done.append) == [1, 4, 9, 16]
    assert done == [1, 1, 1, 1]


@pytest.mark.parametrize("jobs", [1, 2])
def test_an_error_in_one_item_is_raised_as_is(jobs):
    with pytest.raises(ValueError, match="point 2 is bad"):
        parallel.run_all(fail_at_two, [1, 2, 3], jobs)


def test_ctrl_c_keeps_what_finished_by_index():
    with pytest.raises(parallel.Interrupted) as stop:
        parallel.run_all(interrupt_at_three, [1, 2, 3, 4], 1)
    assert stop.value.done == {0: 1, 1: 2}
