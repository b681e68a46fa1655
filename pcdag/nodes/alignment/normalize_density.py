"""NormalizeDensity: randomly thin a scene toward a reference density of points per m³ of its convex hull.

Spec D.5 gives the reference density 1734.4 points/m³ (convex-hull volume), a floor of 40,000 points and "±30% per
step". Read here as: the wanted size is ``max(min_points, reference_density x hull volume)``; while the scene has
more points, each step keeps a random ``1 - step`` of them (at most ``step`` = 30 % fewer per step, never fewer
than the wanted size) and the hull is measured again, for at most ``max_steps`` steps. The subsets are prefixes of
one random permutation (nested); kept points stay in input order. A scene *below* the reference density would
need +30 % steps, i.e. new points: a transform never adds points, so it is left as it is and reported
(``below_reference``). Flat or degenerate scenes (no 3-D hull) are left as they are (``hull_volume`` 0).
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.node import FieldEffect, effect
from pcdag.graphs.params import in_range, integer, param
from pcdag.graphs.registry import register
from pcdag.nodes.alignment.parts.base import AlignmentTransform


def hull_volume(points: np.ndarray) -> float:
    """Volume of the convex hull of ``points`` ``[N, 3]`` in m³; 0 when it has no interior (flat, < 4 points)."""
    from scipy.spatial import ConvexHull, QhullError

    if len(points) < 4:
        return 0.0
    try:
        return float(ConvexHull(points).volume)
    except (QhullError, ValueError):
        return 0.0


@register
class NormalizeDensity(AlignmentTransform):
    """Randomly thin the scene, at most ``step`` per step, to the reference points per m³ of its convex hull."""

    version = 1

    @attrs.frozen
    class Params:
        reference_density: float = param(
            1734.4, in_range(0.0, None, lo_open=True), unit="1/m³", doc="points per m³ of convex hull wanted"
        )
        min_points: int = param(40_000, integer(1, None), doc="never thin below this many points")
        step: float = param(0.3, in_range(0.0, 1.0, lo_open=True, hi_open=True), doc="largest fraction cut per step")
        max_steps: int = param(20, integer(1, 1000), doc="steps at most")

    def fields(self) -> FieldEffect:
        return effect(reads=["coord"])

    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        p = self.params
        n = cloud.require_points(self)
        coord = cloud["coord"].astype(np.float64)  # [N, 3]
        volume = hull_volume(coord)
        facts: dict = {"n_in": n, "hull_volume_before": volume, "density_before": n / volume if volume else None}

        def wanted(v: float) -> int:
            return max(p.min_points, math.ceil(p.reference_density * v))

        keep_n, steps, order = n, 0, None
        while volume > 0 and keep_n > wanted(volume) and steps < p.max_steps:
            order = rng.permutation(n) if order is None else order  # [N] nested subsets: its prefixes
            keep_n = max(math.ceil(keep_n * (1 - p.step)), wanted(volume))
            volume, steps = hull_volume(coord[order[:keep_n]]), steps + 1
        if order is not None and keep_n < n:
            cloud.select(np.sort(order[:keep_n]))
        density = keep_n / volume if volume else None
        facts |= {"n_out": keep_n, "steps": steps, "hull_volume_after": volume, "density_after": density}
        facts["below_reference"] = density is not None and density < p.reference_density
        cloud.meta.setdefault("report", {})["NormalizeDensity"] = facts
        return cloud
