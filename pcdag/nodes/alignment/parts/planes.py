"""Plane geometry for ``AlignZUp``: voxel means, batched RANSAC, SVD refit, floor score, rotation onto +z.

RANSAC evaluates its hypotheses in batches: the signed distances of all points to a batch of planes are one
``[B, 3] @ [3, M]`` product, so 500 hypotheses over 60k points cost about 40 ms.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

_DISTANCES_PER_BATCH = 1_000_000  # point-plane distances evaluated at once (4 MB of float32: in cache)


@attrs.frozen
class Plane:
    """A plane fitted to inliers: unit ``normal`` ``[3]``, a point on it (the inliers' mean), its inlier mask and
    the variances of the inliers along its three axes (two in-plane, largest first, then along the normal)."""

    normal: np.ndarray
    centre: np.ndarray
    inliers: np.ndarray
    variances: np.ndarray

    def score(self, up: np.ndarray) -> float:
        """Floor score: inliers + 100 sqrt(in-plane variance product) + 1000 / (1 + 1000 height variance) +
        500 |n · up|, with the height variance taken along the plane's normal (its thickness); ``up`` is the prior
        up direction (+z in the reference)."""
        in_plane = math.sqrt(max(float(self.variances[0] * self.variances[1]), 0.0))
        height = float(self.variances[2])
        tilt = abs(float(self.normal @ up))
        return float(self.inliers.sum()) + 100.0 * in_plane + 1000.0 / (1.0 + 1000.0 * height) + 500.0 * tilt


def voxel_means(coord: np.ndarray, voxel: float) -> np.ndarray:
    """Mean of the points in every occupied voxel of edge ``voxel``, ordered by voxel. ``[N, 3]`` -> ``[M, 3]``."""
    cell = np.floor(coord / voxel).astype(np.int64)  # [N, 3]
    cell -= cell.min(axis=0)
    dims = [int(d) + 1 for d in cell.max(axis=0)]  # Python ints: the product below cannot overflow
    if dims[0] * dims[1] * dims[2] < 2**62:  # mixed-radix keys are collision-free and fit in int64
        key = (cell[:, 0] * dims[1] + cell[:, 1]) * dims[2] + cell[:, 2]  # [N]
        _, group, count = np.unique(key, return_inverse=True, return_counts=True)  # group [N] in 0..M-1
    else:  # a vast scene for this voxel: group the integer rows themselves
        _, group, count = np.unique(cell, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    sums = np.stack([np.bincount(group, weights=coord[:, j], minlength=len(count)) for j in range(3)], axis=1)
    return sums / count[:, None]  # [M, 3]


def plane_from_inliers(points: np.ndarray, inliers: np.ndarray) -> Plane:
    """SVD refit: the normal is the inliers' direction of least variance. ``points`` ``[M, 3]``, mask ``[M]``."""
    chosen = points[inliers]  # [I, 3]
    centre = chosen.mean(axis=0)
    _, sing, vt = np.linalg.svd(chosen - centre, full_matrices=False)  # sing descending, rows of vt the axes
    return Plane(vt[2], centre, inliers, sing**2 / len(chosen))


def ransac_plane(
    points: np.ndarray,
    threshold: float,
    iterations: int,
    rng: np.random.Generator,
    axis: np.ndarray | None = None,
    min_cos: float = 0.0,
) -> np.ndarray | None:
    """Inlier mask ``[M]`` of the plane through 3 random points with the most points within ``threshold``, over
    ``iterations`` draws (ties: the first draw); ``None`` when every draw is degenerate (repeated or collinear).
    With a unit ``axis`` ``[3]``, only hypotheses whose normal makes ``|n · axis| >= min_cos`` count (``None``
    when there is none)."""
    centred = (points - points.mean(axis=0)).astype(np.float32)  # [M, 3] (float32 products: µm error at 10 m)
    triple = centred[rng.integers(0, len(points), size=(iterations, 3))].astype(np.float64)  # [H, 3, 3]
    normal = np.cross(triple[:, 1] - triple[:, 0], triple[:, 2] - triple[:, 0])  # [H, 3]
    length = np.linalg.norm(normal, axis=1)  # [H] twice the triangle's area
    extent = float(np.abs(centred).max()) or 1.0
    valid = length > 1e-9 * extent**2  # [H] non-degenerate triangles
    if not valid.any():
        return None
    if axis is not None:  # keep the hypotheses whose normal is within acos(min_cos) of the axis (either sign)
        valid &= np.abs(normal @ np.asarray(axis, np.float64)) >= min_cos * length
        if not valid.any():
            return None
    normal = normal[valid] / length[valid, None]  # [V, 3]
    offset = -(normal * triple[valid, 0]).sum(axis=1)  # [V] plane: n.p + offset = 0
    count = np.empty(len(normal), dtype=np.int64)  # [V]
    normal32, offset32, rows = normal.astype(np.float32), offset.astype(np.float32), centred.T.copy()  # rows [3, M]
    batch = max(1, _DISTANCES_PER_BATCH // len(points))
    for s in range(0, len(normal), batch):
        dist = normal32[s : s + batch] @ rows  # [B, M] signed distances (hypotheses in rows: contiguous counts)
        dist += offset32[s : s + batch, None]
        np.abs(dist, out=dist)
        count[s : s + batch] = np.count_nonzero(dist <= threshold, axis=1)  # [B]
    best = int(np.argmax(count))
    return np.abs(centred.astype(np.float64) @ normal[best] + offset[best]) <= threshold  # [M]


def rotation_onto_z(normal: np.ndarray) -> np.ndarray:
    """Rotation matrix ``[3, 3]`` taking the unit vector ``normal`` onto +z (Rodrigues, about normal x z)."""
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(normal, z)  # [3], length sin(angle)
    sin, cos = float(np.linalg.norm(axis)), float(normal @ z)
    if sin < 1e-12:  # already +z, or exactly -z: half a turn about x
        return np.eye(3) if cos > 0 else np.diag([1.0, -1.0, -1.0])
    k = axis / sin
    skew = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])  # [3, 3] cross-product matrix
    return np.eye(3) + sin * skew + (1.0 - cos) * (skew @ skew)
