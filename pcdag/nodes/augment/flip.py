"""RandomFlip: mirror the cloud (and its normals) across a coordinate plane through the origin."""

from __future__ import annotations

import attrs
import numpy as np

from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.node import CloudTransform, FieldEffect, effect
from pcdag.graphs.params import in_range, one_of, param
from pcdag.graphs.registry import register
from pcdag.nodes.augment.rotate import AXES


def negate_column(values: np.ndarray, column: int) -> np.ndarray:
    """A copy of ``values`` ``[N, 3]`` with one column negated (the input array is left untouched)."""
    out = values.copy()
    out[:, column] = -out[:, column]
    return out


@register
class RandomFlip(CloudTransform):
    """With probability p, negate one coordinate of every point and the same component of every normal."""

    role = "augment"
    version = 1

    @attrs.frozen
    class Params:
        axis: str = param("x", one_of("x", "y", "z"), doc="the coordinate to negate")
        p: float = param(0.5, in_range(0.0, 1.0), doc="probability of flipping")

    def fields(self) -> FieldEffect:
        return effect(reads=["coord"], optional_reads=["normal"], writes=["coord"])

    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        if rng.random() >= self.params.p:
            return cloud
        column = AXES[self.params.axis]
        cloud["coord"] = negate_column(cloud["coord"], column)
        if "normal" in cloud:
            cloud["normal"] = negate_column(cloud["normal"], column)
        return cloud
