"""Schedules: a value that changes over training, as a parameter written in plain YAML.

A schedule is a number (constant) or a list of knots ``[progress, value]`` or ``[progress, value, shape]``
with progress the fraction of training done (0 at the first step, 1 at the last). Between two knots the value
moves from one to the next along ``shape`` of the later knot: ``linear`` (default) or ``cos`` (half cosine,
flat at both ends). Before the first knot and after the last the value is held.

    teacher_temperature: [[0, 0.04], [0.05, 0.07]]             # linear warm-up over 5 %, then constant
    lam: [[0, 2.0e-4], [0.1, 3.0e-3], [1, 1.5e-3, cos]]         # up over 10 %, cosine down to the end
    momentum: [[0, 0.994], [1, 1.0, cos]]                       # 1 - 0.003 (1 + cos(pi t))

Parameters keep the plain value (YAML round trips and cache keys see what was written); nodes call
``Schedule.parse`` once and evaluate ``schedule(progress)`` per step.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from pcdag.graphs.params import ParamError

SHAPES = ("linear", "cos")


@attrs.frozen
class Schedule:
    knots: tuple[tuple[float, float, str], ...]  # (progress, value, shape of the segment ending here)

    @classmethod
    def parse(cls, value: Any, name: str = "schedule") -> Schedule:
        """A number or a list of ``[progress, value(, shape)]``; raises ``ParamError`` saying what is wrong."""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ParamError(f"{name} = {value!r} is not finite")
            return cls(((0.0, float(value), "linear"),))
        if not isinstance(value, (list, tuple)) or not value:
            raise ParamError(f"{name} = {value!r} must be a number or a list of [progress, value(, linear|cos)]")
        knots = []
        for i, knot in enumerate(value):
            if not isinstance(knot, (list, tuple)) or len(knot) not in (2, 3):
                raise ParamError(f"{name}[{i}] = {knot!r} must be [progress, value] or [progress, value, shape]")
            t, v, *rest = knot
            shape = rest[0] if rest else "linear"
            for what, x in (("progress", t), ("value", v)):
                if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
                    raise ParamError(f"{name}[{i}]: {what} {x!r} is not a finite number")
            if not 0.0 <= t <= 1.0:
                raise ParamError(f"{name}[{i}]: progress {t} must lie in [0, 1] (fraction of training)")
            if shape not in SHAPES:
                raise ParamError(f"{name}[{i}]: shape {shape!r} is not one of {', '.join(SHAPES)}")
            if knots and t < knots[-1][0]:
                raise ParamError(f"{name}[{i}]: progress {t} comes before the previous knot's {knots[-1][0]}")
            knots.append((float(t), float(v), shape))
        return cls(tuple(knots))

    def __call__(self, progress: float) -> float:
        """The value at ``progress`` (fraction of training done, clipped to [0, 1])."""
        p = min(max(float(progress), 0.0), 1.0)
        first = self.knots[0]
        if p <= first[0]:
            return first[1]
        for (t0, v0, _), (t1, v1, shape) in zip(self.knots, self.knots[1:], strict=False):
            if p <= t1:
                u = 1.0 if t1 == t0 else (p - t0) / (t1 - t0)
                if shape == "cos":
                    u = 0.5 * (1.0 - math.cos(math.pi * u))
                return v0 * (1.0 - u) + v1 * u  # exact at both ends
        return self.knots[-1][1]

    @property
    def constant(self) -> bool:
        return len({v for _, v, _ in self.knots}) == 1

    def __str__(self) -> str:
        if self.constant:
            return f"{self.knots[0][1]:g}"
        return " → ".join(f"{v:g}@{t:g}{'' if s == 'linear' else ' ' + s}" for t, v, s in self.knots)


def schedule(lo: float | None = None, hi: float | None = None):
    """Validator: a schedule (``Schedule.parse``) whose every knot value lies in [lo, hi]."""
    text = f"number or [[progress, value(, linear|cos)], ...]; values in [{lo}, {hi}]"

    def check(_inst: Any, a: attrs.Attribute, value: Any) -> None:
        s = Schedule.parse(value, a.name)
        for _, v, _ in s.knots:
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                raise ParamError(f"{a.name}: value {v} is out of range; allowed [{lo}, {hi}]")

    check.allowed = text  # type: ignore[attr-defined]
    return check
