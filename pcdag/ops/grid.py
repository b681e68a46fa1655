"""Voxel grids of point clouds: every point's voxel, one point per voxel (random or nearest the centre).

Shared by the grid-sampling node, the evaluation view of whole scenes and feature extraction. Voxels are
``floor(coord / grid_size)`` shifted so the lowest occupied voxel is ``(0, 0, 0)``.
"""

from __future__ import annotations

import numpy as np

from pcdag.graphs.cloud import CloudError

_INT32_MAX = int(np.iinfo(np.int32).max)
_INT64_MAX = int(np.iinfo(np.int64).max)


def voxelize(coord: np.ndarray, grid_size: float, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel of every point: ``(grid [N,3] int64 >= 0, key [N] int64, offset [N,3] float64 in [0, 1))``.

    ``offset`` is the position inside the voxel in voxel units. Raises ``CloudError`` (prefixed by ``where``)
    when the cloud spans more voxels than the int32 grid coordinates or the int64 keys can hold.
    """
    scaled = coord.astype(np.float64) / grid_size  # [N, 3]
    cell = np.floor(scaled)  # [N, 3] absolute voxel indices (float, exact integers)
    # per-column reductions: numpy reduces an [N, 3] array over axis 0 ~20x slower than each column alone
    low = np.array([cell[:, i].min() for i in range(3)])  # [3]
    dims = [int(cell[:, i].max() - low[i]) + 1 for i in range(3)]  # voxels per axis, exact Python ints
    # Keys are mixed-radix numbers key = (g0 * d1 + g1) * d2 + g2 with 0 <= gi < di. That map is a bijection
    # from the box of d0*d1*d2 voxels onto [0, d0*d1*d2 - 1], so keys never collide as long as the largest key,
    # d0*d1*d2 - 1, fits in int64 (and every gi fits in the int32 grid_coord field).
    if max(dims) - 1 > _INT32_MAX or dims[0] * dims[1] * dims[2] - 1 > _INT64_MAX:
        raise CloudError(
            f"{where}: the cloud spans {dims[0]} x {dims[1]} x {dims[2]} voxels at grid_size={grid_size} m, "
            f"more than int32 grid coordinates / int64 voxel keys can hold; use a larger grid_size or crop the scene"
        )
    grid = (cell - low).astype(np.int64)  # [N, 3]
    key = (grid[:, 0] * dims[1] + grid[:, 1]) * dims[2] + grid[:, 2]  # [N]
    return grid, key, scaled - cell


def _group_starts(sorted_key: np.ndarray) -> np.ndarray:
    """Boolean ``[N]``: True where a run of equal keys starts in a sorted key array."""
    first = np.ones(len(sorted_key), dtype=bool)
    first[1:] = sorted_key[1:] != sorted_key[:-1]
    return first


def random_per_voxel(key: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Index of one uniformly random point per distinct key, ordered by key. ``[M]`` int64."""
    order = np.argsort(key)  # [N] points grouped by voxel (any order within one: the draw below is uniform anyway;
    # introsort is twice as fast as a stable sort here, and as deterministic)
    start = np.flatnonzero(_group_starts(key[order]))  # [M] first sorted position of each voxel
    count = np.diff(np.append(start, len(key)))  # [M] points per voxel
    return order[start + rng.integers(0, count)]  # [M] a uniform draw inside each voxel's run


def nearest_centre_per_voxel(key: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct key, the point nearest the voxel centre (ties: lowest index) and the inverse map.

    Returns ``(index [M], inverse [N])`` with ``inverse[i]`` the output position of point i's voxel.
    """
    dist2 = np.square(offset - 0.5).sum(axis=1)  # [N] squared distance to the centre, voxel units
    order = np.lexsort((dist2, key))  # [N] by voxel, then distance; lexsort is stable, so ties keep index order
    first = _group_starts(key[order])  # [N]
    inverse = np.empty(len(key), dtype=np.int64)
    inverse[order] = np.cumsum(first) - 1  # voxel number of every sorted position, scattered back
    return order[first], inverse


def grid_eval_rows(coord: np.ndarray, grid_size: float, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``(rows [M], inverse [N])``: the point nearest each occupied voxel's centre, and every point's voxel."""
    _, key, offset = voxelize(coord, grid_size, where)
    return nearest_centre_per_voxel(key, offset)
