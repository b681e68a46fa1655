"""Peak GPU memory of the training step, estimated from the plan (issue 6, item 3); ``pcdag plan`` prints it.

    peak(scenes) = static + CALIBRATION · (Σ saved + max transient)

* static: parameters (4 bytes), and for trained modules their gradients (4) and the optimiser's state (AdamW's
  two moments 8, SGD's momentum buffer 4, plain SGD none: ``optimizer_state_bytes``), counted exactly on modules
  built on the meta device (no memory, no initialisation);
* saved / transient: every device node's ``memory`` (``DeviceNode.memory``), walked in graph order with
  expected sizes: the loader node's ``expected_points`` (views per scene) times the scenes per forward, then
  ``FeatureRows`` out of every backbone forward. A node without a model is listed, not counted;
* ``CALIBRATION`` covers what the per-node counts leave out (the caching allocator's rounding and fragmentation,
  autograd's gradient buffers during the backward, spconv's indice pairs, AdamW's temporaries). It was fitted to
  four peaks measured on an nvidia-h200 (bench/README.md, 2026-11-21). Against the peaks of the current code
  (same machine, later that day) the estimates lie within −5 % and +44 %: clustering pre-training with
  the Base backbone, 2 scenes 25.9 GiB → 24.6 estimated, 4 scenes 45.7 → 46.9; with the backbone and
  clustering heads checkpointed, 2 scenes 11.5 → 12.3 and 12 scenes 43.5 → 62.6; backbone step on two
  100k-point synthetic rooms, Base 6.9 → 8.1, Large 9.9 → 11.7.
  Large checkpointed batches are over-estimated (the safe side: a batch said to fit does): the model is linear
  in the points, and the measured peaks have a fixed part of ~3 GiB and grow slower per scene (3.2 GiB per
  scene checkpointed against 5.0 modelled); the expected view sizes are also ~12–17 % above the measured ones.

Activations grow linearly with the scenes per forward, so the largest batch that fits a GPU is one division.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs

from pcdag.graphs.memory import NodeMemory

GIB = 2.0**30
CALIBRATION = 1.3
ACCURACY = "−5 %…+44 %"  # the estimates against the measured peaks (module docstring); high on large batches
H100_BYTES = 78 * GIB  # what torch reports as total on an 80 GB H100 (issue 6's "78 GiB")


@attrs.frozen
class MemoryEstimate:
    """The modelled memory of one forward + backward with ``scenes`` scenes of ``scene_points`` points."""

    scenes: int
    scene_points: float
    view_points: float  # points over all views of the batch
    static: float  # bytes: parameters, gradients, optimiser state
    saved: Mapping[str, float]  # node -> bytes kept for the backward
    transient: Mapping[str, float]  # node -> bytes alive while it runs
    unmodelled: tuple[str, ...]  # device nodes without a memory model
    optimizer: str = "AdamW"  # what the static part counts the state of

    @property
    def activations(self) -> float:
        return sum(self.saved.values()) + max(self.transient.values(), default=0.0)

    @property
    def peak(self) -> float:
        return self.static + CALIBRATION * self.activations

    def max_scenes(self, capacity: float) -> int:
        """Most scenes per forward whose estimated peak stays within ``capacity`` bytes (0 if none fits)."""
        per_scene = CALIBRATION * self.activations / self.scenes
        return max(0, math.floor((capacity - self.static) / per_scene)) if per_scene > 0 else 0

    def lines(self, capacity: float | None = None, device: str = "") -> list[str]:
        out = [
            f"memory (estimate, bf16): {self.peak / GIB:.1f} GiB peak for {self.scenes} scene(s) per GPU per forward "
            f"of ~{self.scene_points:,.0f} points (~{self.view_points:,.0f} view points): static "
            f"{self.static / GIB:.1f} GiB (weights, gradients, {self.optimizer}) + {CALIBRATION:g} × activations "
            f"{self.activations / GIB:.1f} GiB"
        ]
        biggest = [kv for kv in sorted(self.saved.items(), key=lambda kv: -kv[1]) if kv[1] > 0][:4]
        out.append("  largest saved activations: " + ", ".join(f"{n} {b / GIB:.1f} GiB" for n, b in biggest))
        bound = ""
        if self.unmodelled:
            out.append(f"  not modelled (not counted): {', '.join(self.unmodelled)}")
            bound = "; at most, as the nodes above are not counted"
        for name, cap in ((device, capacity), ("an H100 (78 GiB)", H100_BYTES)):
            if cap is not None and name:
                scenes = self.max_scenes(cap)
                points = scenes * self.view_points / self.scenes
                out.append(f"  fits {name}: up to {scenes} scenes per forward (~{points:,.0f} view points{bound})")
        return out


def optimizer_state_bytes(train) -> tuple[float, str]:
    """(bytes of optimiser state per trained float32 parameter, its name) for ``TrainSettings`` (None: AdamW)."""
    if train is None or train.optimizer == "adamw":
        return 8.0, "AdamW"
    if train.momentum > 0:
        return 4.0, "SGD momentum"
    return 0.0, "SGD"


def estimate_memory(program, entry_node, scenes: int, scene_points: float, train=None) -> MemoryEstimate:
    """Walk ``program`` (a ``DeviceProgram``) with expected sizes; ``entry_node`` is the loader node whose batch
    enters the step and must offer ``expected_points(scene_points) -> ViewPoints``; ``train`` (``TrainSettings``)
    picks the optimiser whose state is counted (None: AdamW)."""
    import torch

    from pcdag.runtime.step import StepModule

    expected = getattr(entry_node, "expected_points", None)
    if expected is None:
        raise ValueError(f"{type(entry_node).__name__} does not say how many points its batch holds")
    per_scene = expected(scene_points)
    views = per_scene.times(scenes)
    with torch.device("meta"):
        module = StepModule(program)
    state, optimizer = optimizer_state_bytes(train)
    static = 0.0
    for name, sub in module.nodes.items():
        per_param = 8.0 + state if name in program.trainable else 4.0
        static += per_param * sum(p.numel() for p in sub.parameters())
    sizes: dict[tuple[str, str], object] = {}
    if program.entry is not None:
        sizes[program.entry] = views
    saved, transient, unmodelled = {}, {}, []
    for step in program.steps:
        inputs = {
            port: sizes[(src, src_port)] if (src, src_port) in sizes else module.node_module(src)
            for port, src, src_port in step.inputs
        }
        mem = step.node.memory(module.node_module(step.name), inputs)
        if mem is None:
            if _has_data_inputs(inputs):
                unmodelled.append(step.name)
            mem = NodeMemory()
        saved[step.name], transient[step.name] = mem.saved, mem.transient
        sizes.update({(step.name, port): size for port, size in mem.outputs.items()})
    points = sum(views.points.values())
    return MemoryEstimate(scenes, scene_points, points, static, saved, transient, tuple(unmodelled), optimizer)


def _has_data_inputs(inputs: Mapping[str, object]) -> bool:
    """Whether a node reads data (sizes or unknown), not only modules: a module provider has nothing to model."""
    import torch

    return any(not isinstance(v, torch.nn.Module) for v in inputs.values())


def plan_estimate(
    plan, scenes: int | None = None, scene_points: float | None = None
) -> tuple[MemoryEstimate, str] | None:
    """``(estimate, where the scene size came from)`` for a compiled plan: ``scenes`` per forward (default the
    graph's ``batch_per_device``) of ``scene_points`` (default the store's mean scene); None without a training
    step. Raises what ``estimate_memory`` raises."""
    if plan.device is None or plan.device.entry is None:
        return None
    scenes = scenes or (plan.train.batch_per_device if plan.train is not None else 1)
    where = "given"
    if scene_points is None:
        scene_points, where = _store_scene_points(plan)
    return estimate_memory(plan.device, plan.node(plan.device.entry[0]), scenes, scene_points, plan.train), where


def plan_memory_lines(plan, scenes: int | None = None, scene_points: float | None = None) -> list[str]:
    """``pcdag plan``'s memory lines: ``plan_estimate`` and the most scenes that fit this GPU and an H100."""
    try:
        made = plan_estimate(plan, scenes, scene_points)
    except (ValueError, RuntimeError, NotImplementedError) as exc:
        return [f"memory: not estimated ({exc})"]
    if made is None:
        return []
    import torch  # a device stage was estimated: torch is loaded already

    estimate, where = made
    device, capacity = "", None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        device, capacity = f"this GPU ({props.name}, {props.total_memory / GIB:.0f} GiB)", float(props.total_memory)
    lines = estimate.lines(capacity, device)
    lines[0] += f"; scene size {where}"
    lines.append(f"  calibrated on an nvidia-h200 to within {ACCURACY} (pcdag/runtime/memory.py)")
    lines.append(f"  {checkpoint_advice(plan)}")
    return lines


def checkpointable(plan) -> list[str]:
    """Names of the plan's device nodes that have a ``checkpoint`` parameter (activation checkpointing)."""
    steps = plan.device.steps if plan.device is not None else ()
    return [s.name for s in steps if "checkpoint" in attrs.fields_dict(type(s.node.params))]


def checkpoint_advice(plan) -> str:
    """What to set to trade time for memory: ``checkpoint: true`` on the nodes that have the parameter."""
    names = checkpointable(plan)
    if not names:
        return "no node of this graph offers activation checkpointing (a `checkpoint` parameter)"
    off = [n for n in names if not plan.node(n).params.checkpoint]
    if not off:
        return f"activation checkpointing is on already ({', '.join(names)})"
    return "`checkpoint: true` on " + ", ".join(off) + " trades time for memory"


def _store_scene_points(plan) -> tuple[float, str]:
    """Mean points per scene of the store the loader reads, or 100,000 when there is none to read."""
    from pcdag.runtime.store import SceneStore

    for bound in plan.bound.values():
        node = bound.node
        if node is None or not hasattr(node, "data_splits") or not hasattr(node.params, "path"):
            continue
        try:
            entries = SceneStore(node.params.path).current(node.data_splits())
        except (OSError, ValueError):
            continue
        if entries:
            mean = sum(e.n_points for e in entries) / len(entries)
            return mean, f"the mean of {len(entries)} scenes in {node.params.path}"
    return 100_000.0, "assumed (100,000 points; no store to read: `--scene-points N`)"


def memory_warning(plan, capacity: float) -> str | None:
    """A warning when the step's estimated peak at the graph's ``batch_per_device`` exceeds ``capacity`` bytes
    (the trainer prints it before the first step on a GPU), else None."""
    if plan.train is None:
        return None
    try:
        made = plan_estimate(plan)
    except (ValueError, RuntimeError, NotImplementedError):
        return None
    if made is None or made[0].peak <= capacity:
        return None
    est = made[0]
    fits = est.max_scenes(capacity)
    advice = f"settings.train.batch_per_device={fits} is estimated to fit" if fits else "no batch is estimated to fit"
    return (
        f"warning: the training step is estimated at {est.peak / GIB:.1f} GiB of GPU memory, more than this GPU's "
        f"{capacity / GIB:.1f} GiB (within about {ACCURACY} of measured peaks): it may run out of memory. "
        f"{advice}; {checkpoint_advice(plan)} (`pcdag plan` shows the estimate)"
    )
