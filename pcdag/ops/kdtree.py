"""kd-tree helpers of the offline nodes (outlier removal, normals, alignment, spacing normalisation, SfM threads).

``build_tree`` makes the kd-tree every caller shares (sliding-midpoint splits, leaves of 24 points); ``query_self``
walks its points in leaf order (neighbouring queries share tree paths, about twice as fast on clouds stored in
random order), in chunks of about ``NEIGHBOURS_PER_CHUNK`` distances; ``kth_neighbour_distance`` and
``median_spacing`` are built on it. Queries use ``tree_workers()`` threads: all cores, or ``PCDAG_THREADS`` when
set. scipy is imported when a tree is built, so importing this module costs numpy only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from scipy.spatial import cKDTree

NEIGHBOURS_PER_CHUNK = 6_400_000  # distances gathered at once (~50 MB of float64)
THREADS_ENV = "PCDAG_THREADS"


def tree_workers() -> int:
    """Threads for kd-tree queries: ``PCDAG_THREADS`` (a positive whole number) when set, else all cores (-1)."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return -1
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"environment variable {THREADS_ENV}={raw!r} must be a positive whole number of threads")
    return int(raw)


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
    chunk = chunk or max(1024, NEIGHBOURS_PER_CHUNK // k)
    for start in range(0, len(order), chunk):
        rows = order[start : start + chunk]
        dist, _ = tree.query(tree.data[rows], k=k, distance_upper_bound=upper, workers=tree_workers())
        yield rows, dist.reshape(len(rows), k)


def kth_neighbour_distance(tree: cKDTree, m: int, upper: float = np.inf) -> np.ndarray:
    """Distance from every tree point to its ``m``-th nearest *other* point; ``inf`` when that is beyond ``upper``
    or the cloud has at most ``m`` points. ``[N]`` float64."""
    out = np.empty(tree.n)  # [N]
    for rows, dist in query_self(tree, m + 1, upper):  # dist [C, m+1], column 0 the point itself
        out[rows] = dist[:, m]
    return out


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
