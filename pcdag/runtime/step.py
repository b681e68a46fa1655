"""The training step as one ``torch.nn.Module``, compiled from a plan's device stage.

``StepModule(program)`` builds the module of every device node (in graph order, so a teacher is built from the
student it follows) into one ``ModuleDict`` keyed by node name; ``forward(batch, ctx)`` evaluates the nodes in
order and returns the ``LossValue`` of every loss node. Wrapping this one module in DDP gives one forward and one
backward per micro-batch, however many times the graph calls a backbone. Nothing here knows any method.
"""

from __future__ import annotations

from typing import Any

import torch

from pcdag.compiler.program import Step
from pcdag.compiler.training import DeviceProgram
from pcdag.graphs.device import LossValue, StepContext
from pcdag.graphs.ports import LOSS, MODEL


class StepModule(torch.nn.Module):
    def __init__(self, program: DeviceProgram) -> None:
        super().__init__()
        self.program = program
        self.nodes = torch.nn.ModuleDict()
        for step in program.steps:
            model_inputs = {
                port: self.nodes[src]
                for port, src, _ in step.inputs
                if src in self.nodes and step.node.inputs[port].type == MODEL
            }
            module = step.node.build(model_inputs)
            if module is not None:
                self.nodes[step.name] = module
        for name, module in self.nodes.items():
            if name not in program.trainable:
                module.requires_grad_(False)
        self.loss_ports = {s.name: _loss_port(s) for s in program.steps if s.name in program.losses}

    def train(self, mode: bool = True) -> StepModule:
        """Trainable modules follow ``mode``; the others (teachers) stay in eval mode."""
        super().train(mode)
        for name, module in self.nodes.items():
            if name not in self.program.trainable:
                module.eval()
        return self

    def node_module(self, name: str) -> torch.nn.Module | None:
        """The module node ``name`` built, or None (a node without one)."""
        return self.nodes[name] if name in self.nodes else None  # noqa: SIM401 (ModuleDict has no get)

    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        return {n: m for n, m in self.nodes.items() if n in self.program.trainable}

    def forward(self, batch: Any, ctx: StepContext) -> tuple[torch.Tensor, dict[str, LossValue]]:
        """``(Σ weight·value, {loss node: LossValue})`` for one micro-batch."""
        values = self.compute(batch, ctx, self.program.steps)
        losses = {name: values[(name, port)] for name, port in self.loss_ports.items()}
        total = sum(loss.weight * loss.value.float() for loss in losses.values())
        return total, losses

    def compute(self, batch: Any, ctx: StepContext, steps: tuple[Step, ...]) -> dict[tuple[str, str], Any]:
        """Evaluate ``steps`` (all of the program, or a culled part: ``pcdag.compiler.training.cull``) on ``batch``:
        every output value, keyed by (node, port). Evaluation calls it under ``torch.no_grad`` in eval mode."""
        values: dict[tuple[str, str], Any] = {}
        if self.program.entry is not None:
            values[self.program.entry] = batch
        for step in steps:
            kwargs = {port: values[(src, src_port)] for port, src, src_port in step.inputs}
            before = set(ctx.metrics)
            with torch.profiler.record_function(f"node:{step.name}"):  # per-node rows in profiler traces
                out = step.node.forward(ctx, self.node_module(step.name), **kwargs)
            _prefix_new(ctx.metrics, before, step.name)
            for port, value in out.items():
                values[(step.name, port)] = value
        return values

    @torch.no_grad()
    def after_step(self, ctx: StepContext) -> None:
        """Every node's ``after_step`` (EMA updates), with the modules on its Model inputs."""
        for step in self.program.steps:
            inputs = {port: self.nodes[src] for port, src, _ in step.inputs if src in self.nodes}
            before = set(ctx.metrics)
            step.node.after_step(ctx, self.node_module(step.name), inputs)
            _prefix_new(ctx.metrics, before, step.name)


def _loss_port(step: Step) -> str:
    return next(p for p, o in step.node.outputs.items() if o.type == LOSS)


def _prefix_new(metrics: dict[str, Any], before: set[str], node: str) -> None:
    """Name the metrics a node just logged ``node/metric``."""
    for key in [k for k in metrics if k not in before]:
        if "/" not in key:
            metrics[f"{node}/{key}"] = metrics.pop(key)
