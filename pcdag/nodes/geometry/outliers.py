"""Outlier removal: drop isolated points, by kNN distance statistics or by neighbour count within a radius.

``StatisticalOutlierRemoval`` keeps points whose mean distance to their k nearest neighbours is at most
``mean + std_ratio * std`` of that quantity over the cloud. ``RadiusOutlierRemoval`` keeps points with at least
``min_neighbours`` other points within ``radius`` (or within ``spacing_factor`` times the cloud's point spacing: the
median nearest-neighbour distance on a random subset of at most ``spacing_points`` points). Both subset the cloud
with ``select``, refuse (``CloudError``) rather than return an empty cloud, and add ``n_in``/``n_out`` to the scene
report.

Neighbour queries go through ``pcdag/ops/kdtree.py`` (leaf-order walks, ``PCDAG_THREADS`` threads).
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.graphs.node import CloudTransform, FieldEffect, effect
from pcdag.graphs.params import in_range, integer, param
from pcdag.graphs.registry import register
from pcdag.ops.kdtree import build_tree, kth_neighbour_distance, median_spacing, query_self, tree_workers


def knn_mean_distance(coord: np.ndarray, k: int) -> np.ndarray:
    """Mean distance of every point to its ``k`` nearest other points (k < N). ``[N, 3]`` -> ``[N]`` float64."""
    tree = build_tree(coord)
    mean = np.empty(len(coord))  # [N]
    for rows, dist in query_self(tree, k + 1):  # dist [C, k+1]
        # Column 0 is distance 0: the point itself, or an exact duplicate of it (the same multiset either way).
        mean[rows] = dist[:, 1:].mean(axis=1)
    return mean


def neighbour_count(coord: np.ndarray, radius: float) -> np.ndarray:
    """Number of *other* points within ``radius`` (inclusive) of every point. ``[N, 3]`` -> ``[N]`` int64."""
    tree = build_tree(coord)
    counts = tree.query_ball_point(tree.data, r=radius, return_length=True, workers=tree_workers())  # self included
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


def _optional_positive(inst: Any, a: attrs.Attribute, value: Any) -> None:
    """Validator: ``None`` or a number > 0."""
    if value is not None:
        in_range(0.0, None, lo_open=True)(inst, a, value)


_optional_positive.allowed = "null or a number in (0, inf]"  # type: ignore[attr-defined]


def _report(cloud: PointCloud, name: str, facts: dict) -> None:
    cloud.meta.setdefault("report", {})[name] = facts


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
        n = len(coord)
        k = min(self.params.k, n - 1)
        if k < 1:  # a single point has nothing to be compared with
            _report(cloud, "StatisticalOutlierRemoval", {"n_in": n, "n_out": n, "threshold": None})
            return cloud
        mean_dist = knn_mean_distance(coord, k)  # [N]
        threshold = mean_dist.mean() + self.params.std_ratio * mean_dist.std()
        # When all distances are equal the std is 0 but the computed mean may round just below them; a relative
        # slack of 1e-9 keeps such clouds whole without changing any real decision.
        keep = mean_dist <= threshold * (1.0 + 1e-9)
        who = f"StatisticalOutlierRemoval(k={self.params.k}, std_ratio={self.params.std_ratio})"
        _keep(cloud, keep, who)
        _report(cloud, "StatisticalOutlierRemoval", {"n_in": n, "n_out": len(cloud), "threshold": float(threshold)})
        return cloud


@register
class RadiusOutlierRemoval(CloudTransform):
    """Drop points with fewer than ``min_neighbours`` other points within ``radius`` (or ``spacing_factor`` spacings).

    With ``spacing_factor`` set, the radius is ``spacing_factor * s`` with ``s`` the median nearest-neighbour
    distance on a random subset of at most ``spacing_points`` points (``median_spacing``), and ``radius`` is unused.
    """

    role = "geometry"
    version = 1

    @attrs.frozen
    class Params:
        radius: float = param(0.1, in_range(0.0, None, lo_open=True), unit="m", doc="neighbourhood radius")
        min_neighbours: int = param(1, integer(1, None), doc="other points needed within the radius to stay")
        spacing_factor: float | None = param(
            None, _optional_positive, doc="null: use radius; a number f: radius = f x median nearest-neighbour spacing"
        )
        spacing_points: int = param(300_000, integer(2, None), doc="random points the spacing is measured on")

    def fields(self) -> FieldEffect:
        return effect(reads=["coord"])

    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        p, m = self.params, self.params.min_neighbours
        coord = cloud["coord"]
        n = len(coord)
        tree = build_tree(coord)
        facts: dict = {"n_in": n}
        dist = None  # [N] distance to the m-th nearest other point, when already known
        if p.spacing_factor is None:
            radius = p.radius
            who = f"RadiusOutlierRemoval(radius={p.radius}, min_neighbours={m})"
        else:
            who = f"RadiusOutlierRemoval(spacing_factor={p.spacing_factor}, min_neighbours={m})"
            if n < 2:
                raise CloudError(f"{who}: scene {cloud.meta.get('scene', '?')!r} has {n} point(s); no spacing")
            if n <= p.spacing_points:  # the spacing subset is the whole cloud: one query gives both distances
                near = np.empty((n, 2))  # [N, 2] nearest and m-th nearest other point
                for rows, d in query_self(tree, max(m, 1) + 1):
                    near[rows] = d[:, [1, m]]
                spacing, dist = float(np.median(near[:, 0])), near[:, 1]
            else:
                spacing = median_spacing(coord, rng, p.spacing_points)
            radius = p.spacing_factor * spacing
            facts["spacing"] = spacing
            who += f" (radius {radius:.4g} m)"
        if dist is None:
            # A point has >= m other points within r exactly when its m-th nearest other point is within r. The
            # query bound is a hair wider than r so that distances equal to r are found; the comparison is inclusive.
            dist = kth_neighbour_distance(tree, m, radius * (1 + 1e-9) + 1e-300)  # [N]
        _keep(cloud, dist <= radius, who)
        _report(cloud, "RadiusOutlierRemoval", facts | {"radius": float(radius), "n_out": len(cloud)})
        return cloud
