"""RandomDownsample: keep a uniformly random subset of at most ``max_points`` points (in their input order)."""

from __future__ import annotations

import attrs
import numpy as np

from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.node import FieldEffect, effect
from pcdag.graphs.params import integer, param
from pcdag.graphs.registry import register
from pcdag.nodes.alignment.parts.base import AlignmentTransform


@register
class RandomDownsample(AlignmentTransform):
    """Keep a uniformly random subset of ``max_points`` points when the cloud has more; otherwise keep it whole.

    Every subset of size ``max_points`` is equally likely; kept points stay in their input order. The reference
    post-processing keeps 2,000,000 points before alignment; the paper says 20,000.
    """

    version = 1

    @attrs.frozen
    class Params:
        max_points: int = param(2_000_000, integer(1, None), doc="points kept at most")

    def fields(self) -> FieldEffect:
        return effect(reads=["coord"])

    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        n = cloud.require_points(self)
        if n > self.params.max_points:
            cloud.select(np.sort(rng.choice(n, size=self.params.max_points, replace=False)))  # [max_points]
        cloud.meta.setdefault("report", {})["RandomDownsample"] = {"n_in": n, "n_out": len(cloud)}
        return cloud
