"""A stage program: the nodes of one stage evaluated in order for one item (a scene or a sample).

This is the fused function the runtime executes: offline, ``source.load(scene)`` goes in and the cloud for the
store comes out; in the loader, a stored cloud goes in and the training sample comes out. Values are passed
by reference; a value that feeds several nodes is copied for all but its last consumer.

An *expanding* node (``Node.expands``) returns ``Parts``: the rest of the program then runs once per part, each
with its own random generator, and an error in one part does not stop the others (``run_parts``). Every step
is timed; the seconds per node land in the result's ``meta["report"]["seconds"]``. After an expansion each part's
seconds also hold the steps before it, which ran once for the whole item: ``meta["report"]["shared_seconds"]``
names them, so that a sum over parts counts them once.
"""

from __future__ import annotations

import time
from typing import Any

import attrs
import numpy as np

from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.node import CloudTransform, Node, Parts


@attrs.frozen
class Step:
    name: str
    node: Node
    inputs: tuple[tuple[str, str, str], ...]  # (input port, source node, source port)


@attrs.frozen
class StageProgram:
    entry: tuple[str, str]  # (node, port) whose value is the item given to the program
    steps: tuple[Step, ...]
    exit: tuple[str, str]  # (node, port) whose value is returned

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps)

    @property
    def expands(self) -> bool:
        return any(s.node.expands for s in self.steps)

    def __call__(self, item: Any, rng: np.random.Generator) -> Any:
        """The program's result for one item (programs without expanding nodes)."""
        ((_name, value),) = self.run_parts(item, rng)
        if isinstance(value, BaseException):
            raise value
        return value

    def run_parts(self, item: Any, rng: np.random.Generator) -> list[tuple[str, Any]]:
        """``[(part name, result or the exception that part raised)]``; one unnamed part ("") without
        expansion. An error before any expansion propagates (the whole item fails)."""
        return self._run(0, {self.entry: item}, self._consumers(), rng, "", {})

    def _run(
        self,
        start: int,
        values: dict,
        remaining: dict,
        rng: np.random.Generator,
        part: str,
        seconds: dict[str, float],
        shared: tuple[str, ...] = (),
    ) -> list[tuple[str, Any]]:
        for i in range(start, len(self.steps)):
            step = self.steps[i]
            t0 = time.perf_counter()
            out = self._call(step, values, remaining, rng)
            seconds[step.name] = round(time.perf_counter() - t0, 4)
            for port, value in out.items():
                if isinstance(value, Parts):
                    return self._expand(i, step.name, port, value, values, remaining, rng, part, seconds)
                values[(step.name, port)] = value
        result = values[self.exit]
        meta = getattr(result, "meta", None)
        if isinstance(meta, dict):
            report = meta.setdefault("report", {})
            report.setdefault("seconds", {}).update(seconds)
            if shared:
                report["shared_seconds"] = sorted(set(report.get("shared_seconds", [])) | set(shared))
        return [(part, result)]

    def _expand(
        self,
        i: int,
        name: str,
        port: str,
        parts: Parts,
        values: dict,
        remaining: dict,
        rng: np.random.Generator,
        part: str,
        seconds: dict[str, float],
    ) -> list[tuple[str, Any]]:
        results = []
        for (sub, value), child in zip(parts.items, rng.spawn(len(parts)), strict=True):
            label = f"{part}/{sub}" if part else sub
            branch = {**values, (name, port): value}
            try:
                results += self._run(i + 1, branch, dict(remaining), child, label, dict(seconds), tuple(seconds))
            except Exception as exc:  # one part failing does not stop its siblings
                results.append((label, exc))
        return results

    @staticmethod
    def _call(step: Step, values: dict, remaining: dict, rng: np.random.Generator) -> dict[str, Any]:
        kwargs = {}
        for port, src, src_port in step.inputs:
            key = (src, src_port)
            remaining[key] -= 1
            value = values[key]
            kwargs[port] = _copy(value) if remaining[key] > 0 else value
        if isinstance(step.node, CloudTransform):
            return {"cloud": step.node.apply(kwargs["cloud"], rng)}
        return step.node.run(rng, **kwargs)

    def _consumers(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {self.exit: 1}
        for step in self.steps:
            for _port, src, src_port in step.inputs:
                counts[(src, src_port)] = counts.get((src, src_port), 0) + 1
        return counts


def _copy(value: Any) -> Any:
    return value.copy() if isinstance(value, PointCloud) else value
