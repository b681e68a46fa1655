"""Device nodes: the nodes of the training step (backbones, heads, losses, teachers, masking).

The trainer compiles a graph's device stage into one ``torch.nn.Module`` (``pcdag.runtime.step``): every
device node may *own* a module (``build``), and each step calls ``forward`` of every node in graph order with
the values on its input ports. The trainer sums the ``Loss`` outputs (each ``LossValue`` carries its weight at
this step), back-propagates, steps the optimiser over the modules of ``trainable`` nodes, then calls
``after_step`` of every node (an EMA teacher updates there). The trainer knows nothing of any one method.

    Model port     the value is the node's module itself (a backbone, a head, a teacher copy)
    Features port  an ``Encoded``        MultiViewBatch port  a ``MultiViewBatch``
    Loss port      a ``LossValue``

Randomness on the device comes from ``ctx.generator`` (seeded from graph seed, step, micro-batch and rank), so
a resumed run draws exactly what the uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

if TYPE_CHECKING:
    import torch

from pcdag.graphs.memory import NodeMemory
from pcdag.graphs.node import Node
from pcdag.graphs.ports import Placement


@attrs.define(eq=False)
class StepContext:
    """What a device node may know about the step being computed."""

    step: int  # optimiser step (0-based) this forward belongs to
    total_steps: int
    generator: torch.Generator  # on ``device``; the only source of device randomness
    device: torch.device
    rank: int = 0
    world_size: int = 1
    metrics: dict[str, float] = attrs.field(factory=dict)  # named scalars logged with the step

    @property
    def progress(self) -> float:
        """Fraction of training done at this step: 0 at the first step, 1 at the last."""
        return self.step / max(1, self.total_steps - 1)

    def log(self, name: str, value: float | torch.Tensor) -> None:
        """Record a scalar for this step's metric line (tensors are read when the step is logged)."""
        self.metrics[name] = value  # type: ignore[assignment]


@attrs.define(eq=False)
class LossValue:
    """One loss term of the step: the unweighted value and its weight at this step."""

    value: torch.Tensor  # scalar
    weight: float
    terms: dict[str, float | torch.Tensor] = attrs.field(factory=dict)  # diagnostics (e.g. matched pairs)


class DeviceNode(Node):
    """A node of the training step. Subclasses set ports and ``Params`` as any node, and implement ``forward``.

        ``build`` gets the built modules of the nodes feeding its ``Model`` inputs (e.g. a teacher gets the
        student) and returns the module this node owns, or None. Only modules of ``trainable`` nodes are optimised;
        the others never receive gradients (their parameters are frozen by the trainer). A module may define
    ``layer_ids() -> {parameter name: (layer index, number of layers)}`` for layer-wise learning-rate decay;
    parameters it leaves out get the base learning rate.
    """

    role = "device"
    placements = (Placement.DEVICE,)
    trainable: ClassVar[bool] = True  # a node may make it a property of its parameters (a frozen backbone)
    owns_module: ClassVar[bool] = False  # True: builds a module without exposing it on a Model port (a classifier)

    def build(self, inputs: Mapping[str, torch.nn.Module]) -> torch.nn.Module | None:
        return None

    def forward(self, ctx: StepContext, module: torch.nn.Module | None, **inputs: Any) -> dict[str, Any]:
        raise NotImplementedError(f"{self.type_name()} does not implement forward()")

    def memory(self, module: torch.nn.Module | None, inputs: Mapping[str, Any]) -> NodeMemory | None:
        """The node's share of the step's GPU memory for expected input sizes (``pcdag.graphs.memory``): Model
        inputs are the built modules (on the meta device), data inputs ``ViewPoints`` / ``FeatureRows``. None:
        not modelled (the estimate lists the node)."""
        return None

    def after_step(self, ctx: StepContext, module: torch.nn.Module | None, inputs: Mapping[str, Any]) -> None:
        """Called after every optimiser step, under ``torch.no_grad`` (``StepModule.after_step``), with the node's
        module and the modules on its Model inputs."""
