"""Outlier removal: drop isolated points, by kNN distance statistics or by neighbour count within a radius.

``StatisticalOutlierRemoval`` keeps points whose mean distance to their k nearest neighbours is at most
``mean + std_ratio * std`` of that quantity over the cloud. ``RadiusOutlierRemoval`` keeps points with at least
``min_neighbours`` other points within ``radius``. Both subset the cloud with ``select`` and refuse (``CloudError``)
rather than return an empty cloud.
"""

from __future__ import annotations

import attrs
import numpy as np
from scipy.spatial import cKDTree

from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.graphs.node import CloudTransform, FieldEffect, effect
from pcdag.graphs.params import in_range, integer, param
from pcdag.graphs.registry import register

_NEIGHBOURS_PER_CHUNK = 6_400_000  # distances gathered at once (~50 MB of float64)


def knn_mean_distance(coord: np.ndarray, k: int) -> np.ndarray:
    """Mean distance of every point to its ``k`` nearest other points (k < N). ``[N, 3]`` -> ``[N]`` float64."""
    points = coord.astype(np.float64)  # [N, 3]
    tree = cKDTree(points)
    mean = np.empty(len(points))  # [N]
    chunk = max(1024, _NEIGHBOURS_PER_CHUNK // (k + 1))
    for start in range(0, len(points), chunk):
        dist, _ = tree.query(points[start : start + chunk], k=k + 1, workers=-1)  # [C, k+1]
        # Column 0 is distance 0: the point itself, or an exact duplicate of it (the same multiset either way).
        mean[start : start + chunk] = dist[:, 1:].mean(axis=1)
    return mean


def neighbour_count(coord: np.ndarray, radius: float) -> np.ndarray:
    """Number of *other* points within ``radius`` (inclusive) of every point. ``[N, 3]`` -> ``[N]`` int64."""
    tree = cKDTree(coord.astype(np.float64))
    counts = tree.query_ball_point(tree.data, r=radius, return_length=True, workers=-1)  # [N], self included
    return np.asarray(counts, dtype=np.int64) - 1


def _keep(cloud: PointCloud, keep: np.ndarray, who: str) -> PointCloud:
    """Select the kept points, refusing to empty the cloud."""
    if not keep.any():
        raise CloudError(
            f"{who} would remove all {len(keep)} points of scene {cloud.meta.get('scene', '?')!r}; "
            f"loosen the parameters or check the scene's scale (coordinates must be in metres)"
        )
    if not keep.all():
        cloud.select(keep)
    return cloud


@register
class StatisticalOutlierRemoval(CloudTransform):
    """Drop points whose mean kNN distance exceeds the cloud's mean by more than ``std_ratio`` std deviations."""

    role = "geometry"
    version = 1

    @attrs.frozen
    class Params:
        k: int = param(50, integer(1, 1000), doc="neighbours per point (all others when the cloud has fewer)")
        std_ratio: float = param(4.0, in_range(0.0, None, lo_open=True), doc="threshold in standard deviations")

    def fields(self) -> FieldEffect:
        return effect(reads=["coord"])

    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        coord = cloud["coord"]
        k = min(self.params.k, len(coord) - 1)
        if k < 1:  # a single point has nothing to be compared with
            return cloud
        mean_dist = knn_mean_distance(coord, k)  # [N]
        threshold = mean_dist.mean() + self.params.std_ratio * mean_dist.std()
        # When all distances are equal the std is 0 but the computed mean may round just below them; a relative
        # slack of 1e-9 keeps such clouds whole without changing any real decision.
        keep = mean_dist <= threshold * (1.0 + 1e-9)
        who = f"StatisticalOutlierRemoval(k={self.params.k}, std_ratio={self.params.std_ratio})"
        return _keep(cloud, keep, who)


@register
class RadiusOutlierRemoval(CloudTransform):
    """Drop points with fewer than ``min_neighbours`` other points within ``radius``."""

    role = "geometry"
    version = 1

    @attrs.frozen
    class Params:
        radius: float = param(0.1, in_range(0.0, None, lo_open=True), unit="m", doc="neighbourhood radius")
        min_neighbours: int = param(1, integer(1, None), doc="other points needed within the radius to stay")

    def fields(self) -> FieldEffect:
        return effect(reads=["coord"])

    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        keep = neighbour_count(cloud["coord"], self.params.radius) >= self.params.min_neighbours  # [N]
        who = f"RadiusOutlierRemoval(radius={self.params.radius}, min_neighbours={self.params.min_neighbours})"
        return _keep(cloud, keep, who)
