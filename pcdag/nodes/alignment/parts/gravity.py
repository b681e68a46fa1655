"""Floor choice for ``AlignZUp`` guided by the cameras' mean image-up direction (the camera prior).

Hand-held and RGB-D cameras are mostly upright, so the mean of their image-up directions (minus the camera y axis,
OpenCV axes, in the cloud's frame) points roughly up: it is off by the cameras' mean pitch and roll (about 23° on
the 7-Scenes sequence, whose camera looks down at a desk), far too coarse to level a scene by itself, but enough to
tell floors and table tops (normals near the prior) from walls (normals near 90° from it) whatever their size.

``Reconstruct`` writes the prior as ``meta["camera_up"]`` (a unit 3-vector in the cloud's frame) and
``meta["camera_up_agreement"]`` (the length of the mean of the cameras' unit up vectors: 1 when all cameras share
one up direction). With a prior, RANSAC keeps only hypotheses within ``prior_tolerance`` of it, and the floor is the
lowest (along their mean normal) of the planes found whose support is at least ``floor_support`` times the best-
supported one's; it is refit on the prior-facing voxel means within ``refit_band`` voxel edges of it, and its SVD
normal, pointed along the prior, gives the up direction. With no such plane the evidence disagrees and the scene is
refused (``GravityDisagreement``, a ``ValueError``: the offline runner quarantines the scene).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pcdag.nodes.alignment.parts.planes import Plane, plane_from_inliers, ransac_plane
from pcdag.ops.camera_up import CAMERA_UP
from pcdag.ops.normals import estimate_normals

REFITS = 3  # band refits of the floor, the band halved each time (the narrower ones drop corners and clutter)
LOCAL_NEIGHBOURS = 16  # voxel means per local normal: a 4x4 patch of a plane at the voxel size


class GravityDisagreement(ValueError):
    """The camera prior and the scene's planes disagree: no large plane lies near the cameras' up direction."""


def find_planes(
    points: np.ndarray, threshold: float, p: Any, rng: np.random.Generator, axis: np.ndarray | None = None
) -> list[Plane]:
    """Up to ``p.max_planes`` RANSAC planes, each on the points the earlier ones left; masks index ``points``.
    With ``axis``, only planes within ``p.prior_tolerance`` degrees of it (either sign) are looked for."""
    min_cos = math.cos(math.radians(p.prior_tolerance)) if axis is not None else 0.0
    planes: list[Plane] = []
    left = np.arange(len(points))  # [L] indices of the points no plane has taken
    for _ in range(p.max_planes):
        if len(left) < max(3, p.min_inliers):
            break
        mask = ransac_plane(points[left], threshold, p.iterations, rng, axis, min_cos)  # [L]
        if mask is None or mask.sum() < p.min_inliers:
            break
        full = np.zeros(len(points), dtype=bool)
        full[left[mask]] = True
        planes.append(plane_from_inliers(points, full))
        left = left[~mask]
    return planes


def camera_prior(meta: dict, where: str) -> np.ndarray | None:
    """The unit camera-up prior ``[3]`` from ``meta``, or None when the cloud carries none."""
    value = meta.get(CAMERA_UP)
    if value is None:
        return None
    up = np.asarray(value, np.float64)
    if up.shape != (3,) or not np.isfinite(up).all() or np.linalg.norm(up) < 1e-9:
        raise ValueError(f"{where}: meta[{CAMERA_UP!r}] must be 3 finite numbers, not all 0; got {value!r}")
    return up / np.linalg.norm(up)


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle in degrees between the unit vectors ``a`` and ``b``."""
    return math.degrees(math.acos(float(np.clip(a @ b, -1.0, 1.0))))


def floor_from_prior(
    means: np.ndarray,
    threshold: float,
    p: Any,
    rng: np.random.Generator,
    prior: np.ndarray,
    where: str,
    band_unit: float,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(floor points [I, 3], the floor's normal pointed along ``prior`` [3], report facts) of the lowest large plane
    within ``p.prior_tolerance`` of ``prior``, found among the voxel means whose local normal (PCA over
    ``LOCAL_NEIGHBOURS``) is that close to the prior too, then refit on those within ``p.refit_band`` x ``band_unit``
    (the voxel edge) of it; ``GravityDisagreement`` when there is none."""
    min_cos = math.cos(math.radians(p.prior_tolerance))
    local = estimate_normals(means, min(LOCAL_NEIGHBOURS, len(means))) if len(means) >= 3 else np.zeros_like(means)
    flat = means[np.abs(local.astype(np.float64) @ prior) >= min_cos]  # [K, 3] on surfaces facing the prior
    planes = find_planes(flat, threshold, p, rng, axis=prior)
    if not planes:
        free = find_planes(means, threshold, p, rng)  # what the scene's dominant planes say instead
        angles = ", ".join(f"{min(angle_deg(q.normal, prior), angle_deg(-q.normal, prior)):.0f}°" for q in free)
        raise GravityDisagreement(
            f"{where}: the evidence disagrees: no plane of at least min_inliers = {p.min_inliers} voxel means lies "
            f"within prior_tolerance = {p.prior_tolerance}° of the cameras' mean up direction "
            f"{[round(float(v), 4) for v in prior]}; the dominant planes are at {angles or 'none found'} from it"
        )
    normals = [q.normal if q.normal @ prior >= 0 else -q.normal for q in planes]  # each pointed along the prior
    support = np.array([int(q.inliers.sum()) for q in planes])  # [P]
    # "lowest" along the candidates' support-weighted mean normal, not along the prior: a prior tilted by 13° ranks
    # two horizontal planes 4 m apart by 0.9 m of horizontal offset
    axis = (support[:, None] * np.array(normals)).sum(axis=0)
    axis /= np.linalg.norm(axis)
    heights = [float(q.centre @ axis) for q in planes]  # [P]
    large = support >= p.floor_support * support.max()
    best = min(np.flatnonzero(large), key=lambda i: heights[i])
    candidates = [
        {"inliers": int(s), "normal": [round(float(v), 6) for v in n], "height": round(h, 6),
         "prior_angle_deg": round(angle_deg(n, prior), 3), "variances": [float(f"{v:.6g}") for v in q.variances]}
        for q, n, h, s in zip(planes, normals, heights, support, strict=True)
    ]  # fmt: skip
    facts = {
        "chosen": int(best),
        "planes": candidates,
        "support": round(float(support[best]) / len(means), 6),
        "flipped": bool(planes[best].normal @ prior < 0),
        "prior_filtered": len(flat),
    }
    floor, normal = flat[planes[best].inliers], normals[best]
    if p.refit_band > 0:
        floor, normal = refit(flat, floor, normal, p.refit_band * band_unit, threshold)
        facts |= {"refit_inliers": len(floor), "refit_change_deg": round(angle_deg(normal, normals[best]), 3)}
    facts["prior_angle_deg"] = round(angle_deg(normal, prior), 3)  # of the final normal
    return floor, normal, facts


def refit(
    points: np.ndarray, floor: np.ndarray, normal: np.ndarray, band: float, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """The plane refit ``REFITS`` times by SVD on the ``points`` within ``band``, then half and a quarter of it:
    RANSAC's threshold is a thin slice of a real floor (sensor noise, pose drift), and the slice it lands on tilts
    the normal by a degree or two from draw to draw; the band takes the whole floor. Returns (the points within
    ``threshold`` of the refit plane, as the floor's inliers for its height [I, 3]; its normal [3] on ``normal``'s
    side)."""
    centre = floor.mean(axis=0)
    for i in range(REFITS):
        band_points = points[np.abs((points - centre) @ normal) <= band / 2**i]  # [I, 3] the band halves each time
        if len(band_points) < 3:
            break
        floor, centre = band_points, band_points.mean(axis=0)
        fitted = np.linalg.svd(floor - centre, full_matrices=False)[2][2]
        normal = fitted if fitted @ normal >= 0 else -fitted
    inliers = floor[np.abs((floor - centre) @ normal) <= threshold]  # [J, 3] a thin slice, as RANSAC's inliers
    return (inliers if len(inliers) >= 3 else floor), normal
