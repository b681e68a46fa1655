"""Normals of point clouds from PCA of each point's k nearest neighbours, and their orientation.

The normal of point p is the eigenvector of the smallest eigenvalue of the covariance of its k nearest
neighbours (p included). Covariances are built and diagonalised in batches (``np.linalg.eigh`` on ``[C, 3, 3]``),
in chunks of points so memory stays bounded on million-point scenes.
"""

from __future__ import annotations

import numpy as np

from pcdag.ops.kdtree import tree_workers

_NEIGHBOURS_PER_CHUNK = 6_400_000  # neighbour rows gathered at once: 200k points at k = 32, ~150 MB of float64


def smallest_axis(neighbours: np.ndarray) -> np.ndarray:
    """Unit direction of least variance of each neighbourhood. ``[C, k, 3]`` float64 -> ``[C, 3]`` float64."""
    centred = neighbours - neighbours.mean(axis=1, keepdims=True)  # [C, k, 3] (caller's array left alone)
    cov = np.matmul(centred.transpose(0, 2, 1), centred)  # [C, 3, 3] (unnormalised: scale does not move axes)
    _, vectors = np.linalg.eigh(cov)  # eigenvalues ascending; vectors[:, :, j] belongs to eigenvalue j
    return vectors[:, :, 0]  # [C, 3], unit length


def estimate_normals(coord: np.ndarray, k: int) -> np.ndarray:
    """PCA normals of ``coord`` ``[N, 3]`` over ``k`` nearest neighbours (k <= N), unoriented. ``[N, 3]`` float32."""
    from scipy.spatial import cKDTree

    points = coord.astype(np.float64)  # [N, 3]
    tree = cKDTree(points)
    normal = np.empty((len(points), 3), dtype=np.float32)  # [N, 3]
    chunk = max(1024, _NEIGHBOURS_PER_CHUNK // k)
    for start in range(0, len(points), chunk):
        stop = start + chunk
        _, neighbour = tree.query(points[start:stop], k=k, workers=tree_workers())  # [C, k]
        normal[start:stop] = smallest_axis(points[neighbour])
    return normal


def orient_toward(normal: np.ndarray, coord: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Flip normals so that ``dot(n, target - p) >= 0``. ``[N, 3]`` float32, modified in place and returned."""
    to_target = target - coord.astype(np.float64)  # [N, 3]
    flip = np.einsum("ij,ij->i", normal.astype(np.float64), to_target) < 0  # [N]
    normal[flip] *= -1
    return normal
