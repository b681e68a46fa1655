"""A stage program: the nodes of one stage evaluated in order for one item (a scene or a sample).

This is the fused function the runtime executes: offline, ``source.load(scene)`` goes in and the cloud for the
store comes out; in the loader, a stored cloud goes in and the training sample comes out. Values are passed
by reference; a value that feeds several nodes is copied for all but its last consumer.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.node import CloudTransform, Node


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

    def __call__(self, item: Any, rng: np.random.Generator) -> Any:
        values: dict[tuple[str, str], Any] = {self.entry: item}
        remaining = self._consumers()
        for step in self.steps:
            kwargs = {}
            for port, src, src_port in step.inputs:
                key = (src, src_port)
                remaining[key] -= 1
                value = values[key]
                kwargs[port] = _copy(value) if remaining[key] > 0 else value
            if isinstance(step.node, CloudTransform):
                out = {"cloud": step.node.apply(kwargs["cloud"], rng)}
            else:
                out = step.node.run(rng, **kwargs)
            for port, value in out.items():
                values[(step.name, port)] = value
        return values[self.exit]

    def _consumers(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {self.exit: 1}
        for step in self.steps:
            for _port, src, src_port in step.inputs:
                counts[(src, src_port)] = counts.get((src, src_port), 0) + 1
        return counts


def _copy(value: Any) -> Any:
    return value.copy() if isinstance(value, PointCloud) else value
