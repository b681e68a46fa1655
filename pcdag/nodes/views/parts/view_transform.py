"""How the multi-view generator makes one view: which points it keeps (``plan_crops``) and how they are moved.

Crops: k-nearest-neighbour crops of the scene, k = ⌊U(size)·min(max_points, N)⌋ (see ``plan_crops``).

Geometry (``transform_view``), in the reference order:

1. centre shift: subtract ``(x_mid, y_mid, z_min)`` of the view's bounding box (the view stands on z = 0);
2. isotropic scale ``U[scale]`` about the origin;
3. with probability ``rotate_z_p``, rotate about the z axis through the origin by ``U[rotate_z_angle]``;
4. with probability ``rotate_xy_p`` each, rotate about x, then y, through the current bounding-box centre by
   ``U[rotate_xy_angle]``;
5. with probability ``flip_p`` each, negate x, then y;
6. jitter: N(0, sigma^2) per coordinate, clipped to ±clip;
7. with probability ``elastic_p``, elastic distortion (``pcdag.nodes.views.parts.elastic``), pass after pass.

Normals follow the rotations and flips (one accumulated ``[3, 3]`` matrix applied once); scaling, jitter and the
elastic field leave them unchanged, as in the reference. Matrices come from ``pcdag.nodes.augment.rotate``.
Points are channel-first ``[3, n]`` arrays (see ``pcdag.nodes.views.parts.colour`` for why).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np

from pcdag.nodes.augment.jitter import clipped_gaussian
from pcdag.nodes.augment.rotate import AXES, bbox_centre, rotation_matrix
from pcdag.nodes.views.parts.elastic import elastic_distort


@attrs.frozen
class CropPlan:
    """Scene rows of every view (global views first, the major view at 0, then local views) and their centres."""

    index: tuple[np.ndarray, ...]  # per view: [k_v] int64 scene rows, ascending
    centre: np.ndarray  # [V] int64 scene row of each view's centre


def nearest_rows(xyz: np.ndarray, centre: int, k: int) -> np.ndarray:
    """Rows of the ``k`` points of ``xyz`` ``[3, N]`` nearest to point ``centre``, ascending. ``[k]`` int64.

    An exact selection in O(N) (``argpartition`` of squared distances): for k a large share of N this is ~20x
    faster than a k-d tree query, which must sort its k results (ties at the k-th distance: any of them).
    """
    dist2 = np.square(xyz - xyz[:, centre : centre + 1]).sum(axis=0)  # [N]
    rows = np.argpartition(dist2, k - 1)[:k] if k < len(dist2) else np.arange(len(dist2))  # [k]
    return np.sort(rows).astype(np.int64, copy=False)


def plan_crops(
    xyz: np.ndarray,
    rng: np.random.Generator,
    n_global: int = 2,
    n_local: int = 4,
    global_size: Sequence[float] = (0.4, 1.0),
    local_size: Sequence[float] = (0.1, 0.4),
    max_points: int = 65536,
) -> CropPlan:
    """Choose the views of a scene ``xyz`` ``[3, N]``: k-nearest crops with k = ⌊U(size)·min(max_points, N)⌋.

    The major view is centred on a random point; the other global views on random major-view points; each local
    view on a random major-view point that no earlier local view covers (all free again once all are covered).
    """
    n = xyz.shape[1]
    budget = min(max_points, n)
    size = lambda share: int(np.floor(rng.uniform(*share) * budget))  # >= 1 by the generator's parameter check
    centres = [int(rng.integers(n))]
    index = [nearest_rows(xyz, centres[0], size(global_size))]
    major = index[0]  # [k0] scene rows of the major view
    for _ in range(n_global - 1):
        centres.append(int(major[rng.integers(len(major))]))
        index.append(nearest_rows(xyz, centres[-1], size(global_size)))
    covered = np.zeros(n, dtype=bool)  # [N] scene points inside an earlier local view
    for _ in range(n_local):
        free = major[~covered[major]]  # [f] major-view points no local view covers yet
        if len(free) == 0:
            covered[:] = False
            free = major
        centres.append(int(free[rng.integers(len(free))]))
        index.append(nearest_rows(xyz, centres[-1], size(local_size)))
        covered[index[-1]] = True
    return CropPlan(tuple(index), np.array(centres, dtype=np.int64))


@attrs.frozen
class ViewGeometry:
    """Settings of the per-view geometric chain (angles in radians, lengths in metres)."""

    scale: tuple[float, float] = (0.9, 1.1)
    rotate_z_p: float = 0.8
    rotate_z_angle: tuple[float, float] = (-np.pi, np.pi)
    rotate_xy_p: float = 0.8
    rotate_xy_angle: tuple[float, float] = (-np.pi / 64, np.pi / 64)
    flip_p: float = 0.5
    jitter_sigma: float = 0.005
    jitter_clip: float = 0.02
    elastic_p: float = 0.95
    elastic_passes: tuple[tuple[float, float], ...] = ((0.2, 0.4), (0.8, 1.6))


def centre_shift(xyz: np.ndarray) -> np.ndarray:
    """``[3]``: the x and y middle and the z minimum of the bounding box of points ``xyz`` ``[3, n]``."""
    low, high = xyz.min(axis=1), xyz.max(axis=1)  # [3] each
    return np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]])


def transform_view(
    xyz: np.ndarray, normal: np.ndarray, geo: ViewGeometry, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Augment one view: points ``xyz`` ``[3, n]`` and unit normals ``[3, n]`` -> new float32 ``[3, n]`` arrays.

    The arithmetic is float32 after the centre shift (done in float64, where scene coordinates may be large):
    view coordinates are metres from the view's centre, where float32 resolves micrometres."""
    xyz = (xyz - centre_shift(xyz)[:, None]).astype(np.float32)  # [3, n], a new array
    xyz *= np.float32(rng.uniform(*geo.scale))
    turn = np.eye(3)  # [3, 3] rotations and flips so far (float64), applied to the normals at the end
    if rng.random() < geo.rotate_z_p:
        rot = rotation_matrix("z", rng.uniform(*geo.rotate_z_angle))  # [3, 3] about the origin
        xyz, turn = rot.astype(np.float32) @ xyz, rot @ turn
    for axis in ("x", "y"):
        if rng.random() < geo.rotate_xy_p:
            rot = rotation_matrix(axis, rng.uniform(*geo.rotate_xy_angle))
            centre = bbox_centre(xyz.T).astype(np.float32)[:, None]  # [3, 1] of the view as it is now
            xyz, turn = rot.astype(np.float32) @ (xyz - centre) + centre, rot @ turn
    for axis in ("x", "y"):
        if rng.random() < geo.flip_p:
            xyz[AXES[axis]] *= -1
            turn[AXES[axis]] *= -1  # diag(±1) @ turn: the same row of the accumulated matrix negated
    xyz += clipped_gaussian(xyz.shape, geo.jitter_sigma, geo.jitter_clip, rng)
    if geo.elastic_passes and rng.random() < geo.elastic_p:
        xyz = elastic_distort(xyz, geo.elastic_passes, rng)
    return xyz.astype(np.float32, copy=False), (turn.astype(np.float32) @ normal).astype(np.float32, copy=False)
