"""Evaluator nodes: what runs after training, over the scenes of an evaluation split.

An evaluator is a node with placement ``eval``. Its input ports are fed by device nodes (a classifier's logits, a
backbone's features); at evaluation time the runtime (``pcdag.runtime.evaluate``) culls the training step to the
nodes those ports need and hands the evaluator an ``EvalContext``:

    ctx.scenes()          (scene id, PointCloud) of the split, read from the graph's store, with a progress bar
    ctx.predict(sample)   run the culled step on a ``ViewSample`` → {input port: value} (an ``Encoded`` per port)
    ctx.out               the directory for its pictures and files

and it returns an ``EvalResult``: numbers (JSON), a markdown section for the report, the pictures it wrote. Test-
time views come from the loader node feeding the training step (``eval_sample``), so an evaluation sees the same
features as training did, without the augmentations; an ``eval_sample`` may only translate the points (evaluators
add predicted offsets to the scene's own coordinates). Nothing here knows any method or metric.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

from pcdag.graphs.batch import ViewSample
from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.node import Node
from pcdag.graphs.ports import Placement


@attrs.define(eq=False)
class EvalContext:
    out: Path
    split: str
    scenes: Callable[[], Iterator[tuple[str, PointCloud]]]
    predict: Callable[[ViewSample], dict[str, Any]]  # input port -> value (Encoded), tensors on the device
    make_sample: Callable[[PointCloud], ViewSample]  # the loader node's un-augmented view: only translated
    device: Any = None
    quiet: bool = False
    notes: list[str] = attrs.field(factory=list)  # problems met (skipped scenes), listed in the report


@attrs.frozen
class EvalResult:
    metrics: dict[str, Any]  # JSON-able numbers
    markdown: str  # a section of the report (pictures linked relative to the run directory)
    pictures: tuple[Path, ...] = ()


class Evaluator(Node):
    """Base of evaluator nodes: ``evaluate(ctx) -> EvalResult``; ``split`` says which scenes it reads."""

    role = "evaluators"
    placements = (Placement.EVAL,)

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        raise NotImplementedError(f"{self.type_name()} does not implement evaluate()")

    def data_splits(self) -> tuple[str, ...]:
        return (getattr(self.params, "split", "val"),)
