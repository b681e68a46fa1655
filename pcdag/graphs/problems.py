"""Validation problems: every check returns a list of these; nothing raises on the first one."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from pcdag.graphs.graph import Origin


@attrs.frozen
class Problem:
    """One thing wrong with a graph: what (``code``), where (node, origin), why, and how to fix it."""

    code: str  # unknown-type, bad-param, unconnected, type-mismatch, cycle, placement, missing-dep, ...
    message: str
    node: str | None = None
    fix: str = ""
    origin: Origin | None = None
    severity: str = "error"  # or "warning": printed, does not fail validation

    def __str__(self) -> str:
        where = f"{self.origin}: " if self.origin else ""
        who = f"node {self.node!r}: " if self.node else ""
        text = f"{where}{self.severity} [{self.code}] {who}{self.message}"
        return text + (f"\n    fix: {self.fix}" if self.fix else "")


class GraphError(Exception):
    """Raised with every problem found, when a graph cannot be compiled or loaded."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = list(problems)
        n = sum(p.severity == "error" for p in self.problems)
        super().__init__(f"{n} problem{'s' if n != 1 else ''}:\n" + "\n".join(f"  {p}" for p in self.problems))
