"""Outlier removal: drop isolated points, by kNN distance statistics or by neighbour count within a radius.

``StatisticalOutlierRemoval`` keeps points whose mean distance to their k nearest neighbours is at most
``mean + std_ratio * std`` of that quantity over the cloud. ``RadiusOutlierRemoval`` keeps points with at least
``min_neighbours`` other points within ``radius`` (or within ``spacing_factor`` times the cloud's point spacing: the
median nearest-neighbour distance on a random subset of at most ``spacing_points`` points). Both subset the cloud
with ``select``, refuse (``CloudError``) rather than return an empty cloud, and add ``n_in``/``n_out`` to the scene
report.

Neighbour queries walk the points in kd-tree leaf order (neighbouring queries share tree paths, about twice as fast
on clouds stored in random order) and use ``tree_workers()`` threads: all cores, or ``PCDAG_THREADS`` when set.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

if TYPE_CHECKING:
    from scipy.spatial import cKDTree

from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.graphs.node import CloudTransform, FieldEffect, effect
from pcdag.graphs.params import in_range, integer, param
from pcdag.graphs.registry import register
from pcdag.ops.kdtree import tree_workers

_NEIGHBOURS_PER_CHUNK = 6_400_000  # distances gathered at once (~50 MB of float64)


def build_tree(coord: np.ndarray) -> cKDTree:
    """kd-tree of ``coord`` ``[N, 3]`` (as float64) with sliding-midpoint splits and leaves of 24 points: on scans
    its 50-NN queries are about 15 % faster than scipy's defaults (median splits, leaves of 16), and it builds
    faster."""
    from scipy.spatial import cKDTree

    return cKDTree(np.asarray(coord, dtype=np.float64), leafsize=24, balanced_tree=False)


def query_self(
    tree: cKDTree, k: int, upper: float = np.inf, chunk: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """k nearest neighbours of every tree point (itself or a duplicate first), in chunks of leaf order.

    Yields ``(rows [C], dist [C, k])`` with ``rows`` the original indices of the chunk's points; distances beyond
    ``upper`` (and missing neighbours) are ``inf``.
    """
    order = tree.indices  # [N] points in leaf order
    chunk = chunk or max(1024, _NEIGHBOURS_PER_CHUNK // k)
    for start in range(0, len(order), chunk):
        rows = order[start : start + chunk]
        dist, _ = tree.query(tree.data[rows], k=k, distance_upper_bound=upper, workers=tree_workers())
        yield rows, dist.reshape(len(rows), k)


def knn_mean_distance(coord: np.ndarray, k: int) -> np.ndarray:
    """Mean distance of every point to its ``k`` nearest other points (k < N). ``[N, 3]`` -> ``[N]`` float64."""
    tree = build_tree(coord)
    mean = np.empty(len(coord))  # [N]
    for rows, dist in query_self(tree, k + 1):  # dist [C, k+1]
        # Column 0 is distance 0: the point itself, or an exact duplicate of it (the same multiset either way).
        mean[rows] = dist[:, 1:].mean(axis=1)
    return mean


def kth_neighbour_distance(tree: cKDTree, m: int, upper: float = np.inf) -> np.ndarray:
    """Distance from every tree point to its ``m``-th nearest *other* point; ``inf`` when that is beyond ``upper``
    or the cloud has at most ``m`` points. ``[N]`` float64."""
    out = np.empty(tree.n)  # [N]
    for rows, dist in query_self(tree, m + 1, upper):  # dist [C, m+1], column 0 the point itself
        out[rows] = dist[:, m]
    return out


def neighbour_count(coord: np.ndarray, radius: float) -> np.ndarray:
    """Number of *other* points within ``radius`` (inclusive) of every point. ``[N, 3]`` -> ``[N]`` int64."""
    tree = build_tree(coord)
    counts = tree.query_ball_point(tree.data, r=radius, return_length=True, workers=tree_workers())  # self included
    return np.asarray(counts, dtype=np.int64) - 1


def spacing_sample(coord: np.ndarray, rng: np.random.Generator, max_points: int) -> np.ndarray:
    """The cloud itself when it has at most ``max_points`` points, else a uniformly random subset of that size."""
    if len(coord) <= max_points:
        return coord
    return coord[np.sort(rng.choice(len(coord), size=max_points, replace=False))]


def median_spacing(coord: np.ndarray, rng: np.random.Generator, max_points: int = 300_000) -> float:
    """Point spacing: median distance to the nearest other point, within a random subset of at most ``max_points``
    points. The subset is taken as a cloud of its own (the reading here of the spec's "median NN distance on
    <= 300k points"): on larger clouds it is sparser than the cloud and the value larger. Needs 2 points."""
    sample = spacing_sample(coord, rng, max_points).astype(np.float64)  # [S, 3]
    return float(np.median(kth_neighbour_distance(build_tree(sample), 1)))


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
