"""Pass 7 — the training step: the device stage as a program, and the training settings it runs under.

``device_program`` orders the device nodes, checks that each is a ``DeviceNode``, that the stage ends in at
least one ``Loss`` and that something is trainable, and finds where the loader's batch enters. ``train_settings``
validates ``settings.train`` of the graph with the same error collection as node parameters. Both return plain
data (``DeviceProgram``, ``TrainSettings``) the runtime's step module and trainer reuse.
"""

from __future__ import annotations

from typing import Any

import attrs
import networkx as nx

from pcdag.compiler.program import Step
from pcdag.compiler.resolve import Bound
from pcdag.compiler.structure import Edge
from pcdag.graphs.device import DeviceNode
from pcdag.graphs.graph import Graph
from pcdag.graphs.params import build_params, describe, in_range, integer, of_type, one_of, or_none, pair, param
from pcdag.graphs.ports import LOSS, MODEL, Placement
from pcdag.graphs.problems import Problem
from pcdag.graphs.schedule import Schedule, schedule


@attrs.frozen
class TrainSettings:
    """``settings.train`` of a graph: how the device stage is optimised. Defaults follow the spec's
    pre-training recipe (spec A)."""

    steps: int = param(1000, integer(1, None), doc="optimiser steps in the whole run")
    global_batch: int = param(16, integer(1, None), unit="scenes", doc="scenes per optimiser step, all GPUs")
    batch_per_device: int = param(2, integer(1, None), unit="scenes", doc="scenes per forward on one GPU")
    lr: float = param(1e-3, in_range(0.0, 1.0, lo_open=True), doc="peak learning rate (OneCycle max)")
    layer_decay: float = param(0.9, in_range(0.0, 1.0, lo_open=True), doc="lr factor per block from the last")
    weight_decay: Any = param([[0, 0.04], [1, 0.1, "cos"]], schedule(0.0, 1.0), doc="weight decay schedule")
    optimizer: str = param("adamw", one_of("adamw", "sgd"), doc="adamw, or sgd (momentum, nesterov below)")
    momentum: float = param(0.9, in_range(0.0, 1.0, hi_open=True), doc="SGD momentum (fixed; not cycled)")
    nesterov: bool = param(False, one_of(False, True), doc="SGD Nesterov momentum")
    betas: list = param([0.9, 0.999], pair(0.0, 1.0), doc="AdamW betas (beta1 cycled by OneCycle when on)")
    cycle_momentum: list = param([0.85, 0.95], pair(0.0, 1.0), doc="OneCycle beta1 range (low, high)")
    pct_start: float = param(0.1, in_range(0.0, 1.0, lo_open=True, hi_open=True), doc="OneCycle warm-up share")
    div_factor: float = param(10.0, in_range(1.0, None), doc="OneCycle: initial lr = lr / div_factor")
    final_div_factor: float = param(300.0, in_range(1.0, None), doc="OneCycle: final lr = initial / this")
    clip: float = param(3.0, in_range(0.0, None), doc="global gradient-norm clip (0 = off)")
    precision: str = param("auto", one_of("auto", "bf16", "fp32"), doc="auto: bf16 autocast on CUDA, fp32 on CPU")
    checkpoint_every: int = param(1000, integer(1, None), unit="steps", doc="write a checkpoint every N steps")
    keep_checkpoints: int = param(2, integer(1, None), doc="how many recent checkpoints to keep")
    log_every: int = param(1, integer(1, None), unit="steps", doc="metric line every N steps")
    workers: int | None = param(
        None, or_none(integer(0, 64), "auto"), doc="DataLoader worker processes per GPU; null: min(2, usable CPU cores)"
    )
    out: str = param("runs/{name}-{preset}", of_type(str), doc="run directory ({name}: graph name, {preset}: preset)")
    find_unused_parameters: bool = param(False, one_of(False, True), doc="DDP: allow parameters without grad")
    recalibrate_bn: int = param(
        0,
        integer(0, None),
        unit="micro-batches",
        doc="before step 0, re-estimate the BatchNorm statistics of the modules not trained (a probe's frozen "
        "backbone) over N micro-batches; 0: keep them",
    )

    def accumulation(self, world_size: int) -> int:
        """Micro-batches per optimiser step on each GPU so that ``global_batch`` scenes make one step."""
        per_step = world_size * self.batch_per_device
        if self.global_batch % per_step:
            raise ValueError(
                f"settings.train.global_batch = {self.global_batch} is not a multiple of {world_size} GPU(s) × "
                f"batch_per_device {self.batch_per_device} = {per_step}; change one of them"
            )
        return self.global_batch // per_step

    def weight_decay_schedule(self) -> Schedule:
        return Schedule.parse(self.weight_decay, "settings.train.weight_decay")


def train_settings(graph: Graph) -> tuple[TrainSettings | None, list[Problem]]:
    raw = graph.settings.get("train", {}) or {}
    built, problems = build_params(TrainSettings, raw if isinstance(raw, dict) else None)
    origin = graph.origin
    out = [
        Problem("bad-setting", f"settings.train: {p}", fix="see `pcdag train --help-settings`", origin=origin)
        for p in problems
    ]
    if built is not None and abs(built.pct_start * built.steps - 1.0) < 1e-9:
        # torch's OneCycleLR ends its warm-up phase at step pct_start·steps − 1 = 0, where it divides by zero
        out.append(
            Problem(
                "bad-setting",
                f"settings.train: steps = {built.steps} with pct_start = {built.pct_start:g} gives a warm-up of "
                "exactly one step, which torch's OneCycle schedule cannot run (it divides by zero)",
                fix="change settings.train.steps or settings.train.pct_start (e.g. steps + 1)",
                origin=origin,
            )
        )
    return built, out


def describe_settings() -> str:
    return "\n".join(f"  {describe(f)}" for f in attrs.fields(TrainSettings))


@attrs.frozen
class DeviceProgram:
    """The training step: device nodes in order, fed by the loader's batch at ``entry``."""

    entry: tuple[str, str] | None  # (loader node, port) whose collated batch enters the step
    steps: tuple[Step, ...]
    losses: tuple[str, ...]  # nodes whose output is a Loss
    trainable: tuple[str, ...]  # nodes that own optimised modules

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps)


def device_program(
    bound: dict[str, Bound], edges: list[Edge], g: nx.MultiDiGraph
) -> tuple[DeviceProgram | None, list[Problem]]:
    if not nx.is_directed_acyclic_graph(g):
        return None, []
    names = [n for n in nx.topological_sort(g) if bound[n].placement == Placement.DEVICE]
    if not names:
        return None, []
    problems = []
    for n in names:
        if bound[n].cls is not None and not issubclass(bound[n].cls, DeviceNode):
            problems.append(
                Problem(
                    "placement",
                    f"{bound[n].decl.type} cannot run inside the training step (it is not a device node)",
                    n,
                    "place it in the loader stage, or use a device node",
                    bound[n].decl.where(),
                )
            )
    losses = tuple(n for n in names if any(o.type == LOSS for o in bound[n].cls.outputs.values()))
    if not losses:
        problems.append(
            Problem(
                "no-loss",
                "the device stage computes no Loss: there is nothing to train",
                names[0],
                "connect a node with a Loss output to the device stage (`pcdag nodes` lists the losses)",
            )
        )
    trainable = tuple(n for n in names if _trains(bound[n]))
    if losses and not trainable:
        problems.append(Problem("no-loss", "no device node owns trainable weights", names[0]))
    entries = {(e.src, e.src_port) for e in edges if e.dst in names and bound[e.src].placement == Placement.LOADER}
    if len(entries) > 1:
        problems.append(
            Problem(
                "loader-shape", f"the training step reads {len(entries)} loader outputs; it reads one batch", names[0]
            )
        )
    if problems or any(bound[n].node is None for n in names):
        return None, problems
    steps = tuple(
        Step(n, bound[n].node, tuple((e.dst_port, e.src, e.src_port) for e in edges if e.dst == n)) for n in names
    )
    return DeviceProgram(next(iter(entries), None), steps, losses, trainable), []


def cull(program: DeviceProgram, targets: set[str]) -> tuple[Step, ...]:
    """The steps of ``program`` that ``targets`` (node names) depend on, in order: what an evaluation runs."""
    unknown = targets - set(program.nodes)
    if unknown:
        raise ValueError(f"no device node(s) {', '.join(sorted(unknown))} in the training step")
    needed = set(targets)
    for step in reversed(program.steps):  # steps are in topological order: one backward sweep suffices
        if step.name in needed:
            needed.update(src for _, src, _ in step.inputs if src in program.nodes)
    return tuple(s for s in program.steps if s.name in needed)


def _trains(b: Bound) -> bool:
    """Whether a device node owns weights the optimiser updates (the instance decides: a backbone may be frozen)."""
    owner = b.cls.owns_module or any(o.type == MODEL for o in b.cls.outputs.values())
    return owner and bool(b.node.trainable if b.node is not None else b.cls.trainable)


def describe_batching(settings: TrainSettings, world_sizes: tuple[int, ...] = (1, 2, 4, 8)) -> list[str]:
    """Plan lines: how the global batch is made on 1, 2, 4, 8 GPUs."""
    out = []
    for w in world_sizes:
        try:
            acc = settings.accumulation(w)
        except ValueError:
            out.append(f"{w} GPU(s): global batch {settings.global_batch} not reachable (not a multiple)")
            continue
        note = f", accumulating {acc} micro-batches per step" if acc > 1 else ""
        out.append(f"{w} GPU(s): {settings.batch_per_device} scene(s) per GPU per forward{note}")
    return out
