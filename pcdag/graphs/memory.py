"""Sizes for the training step's memory model (issue 6, item 3): what device nodes tell the estimator.

The estimator (``pcdag.runtime.memory``) walks the device stage in order with *expected sizes* instead of
tensors: the loader's batch enters as ``ViewPoints`` (points per view kind in one forward), an ``Encode`` turns
them into ``FeatureRows`` (rows at the up-cast level, channels, whether autograd records them), and every node
that implements ``DeviceNode.memory`` returns a ``NodeMemory``: the bytes it keeps for the backward pass, the
bytes that live only while it runs, and the sizes of its outputs. A node that does not implement it is listed
as "not modelled" in the estimate, never silently counted as zero.

Byte counts are of bf16 autocast on a GPU: matmul inputs and outputs in 2 bytes, LayerNorm, softmax and the
residual stream in 4.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

# Points at pooling level s over points at level 0 (grid 0.02 * 2**s m), the mean over the 13 scannet-mini
# training scans (50k-point scans; denser full-resolution scans give smaller ratios, so fewer deep points).
LEVEL_RATIOS = (1.0, 0.64, 0.26, 0.074, 0.018)


@attrs.frozen
class ViewPoints:
    """Expected points per view kind ("global", "local") in one forward of the step, over ``scenes`` scenes,
    and the point pairs sampled across views for a contrast (``TwoViewGenerator``'s ``samples`` per scene)."""

    points: Mapping[str, float]
    pairs: float = 0.0
    scenes: float = 1.0

    def times(self, k: float) -> ViewPoints:
        """The sizes of ``k`` times as many scenes (each scene alike)."""
        return ViewPoints({kind: v * k for kind, v in self.points.items()}, self.pairs * k, self.scenes * k)


@attrs.frozen
class FeatureRows:
    """Expected rows of an ``Encoded`` in one forward: ``points`` rows of ``channels`` (float32)."""

    points: float
    channels: int
    grad: bool  # autograd records the rows (a student), or not (a teacher under no_grad)


@attrs.frozen
class NodeMemory:
    saved: float = 0.0  # bytes kept from the forward until the backward
    transient: float = 0.0  # bytes alive only while the node runs (forward, or its share of the backward)
    outputs: Mapping[str, object] = attrs.field(factory=dict)  # port -> ViewPoints | FeatureRows
    notes: tuple[str, ...] = ()
