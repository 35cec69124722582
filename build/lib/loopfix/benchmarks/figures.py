"""One benchmark figure: a measured value, the baseline measured in the same run, their ratio,
and the goal it is held to. Pure data plus rendering; the measuring lives in the area modules.
"""
from __future__ import annotations

import operator
from dataclasses import asdict, dataclass, field

GOAL_OPS = {">=": operator.ge, "<=": operator.le}


@dataclass(frozen=True)
class Figure:
    """`value` in `unit`, measured beside `baseline` (same unit, or `baseline_unit`).

    `goal` ("ratio >= 0.5", "value <= 20") states which of the two it constrains; `met` is
    None when there is no goal. `note` says how it was measured (load tool, its CPU use, ...).
    """

    area: str
    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    baseline_unit: str = ""
    goal: str = ""
    note: str = ""
    holds: bool = True  # False: a precondition of the goal failed (a storm broke an invariant)
    details: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        if not self.goal:
            return None
        if not self.holds:
            return False
        subject, op, threshold = self.goal.split()
        measured = self.ratio if subject == "ratio" else self.value
        return None if measured is None else GOAL_OPS[op](measured, float(threshold))

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "met": self.met}


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"
