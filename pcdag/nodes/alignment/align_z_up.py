"""AlignZUp: rotate a scene so its floor (the best-scoring dominant plane) is horizontal, facing +z, at z = 0.

The reference procedure (spec D.2), on the voxel means of the cloud:

1. spacing ``s`` = median nearest-neighbour distance on a random subset of at most ``spacing_points`` points;
   voxel edge = clip(``voxel_factor`` s, ``voxel_range``); the points of each voxel are replaced by their mean.
2. RANSAC threshold = clip(``threshold_factor`` x IQR of the voxel means' nearest-neighbour distances,
   ``threshold_range``).
3. Up to ``max_planes`` planes, one after the other on the points the earlier ones left: RANSAC (``iterations``
   draws of 3 points), kept when it has at least ``min_inliers`` inliers, its normal refit by SVD of the inliers.
4. The floor is the plane of highest score = inliers + 100 sqrt(λ1 λ2) + 1000 / (1 + 1000 λ3) + 500 |n_z|, where
   λ1 ≥ λ2 are the inliers' variances along the plane and λ3 their variance along the normal. The spec's "height
   variance" is read as λ3 — the spread of the inliers' heights *above their plane* (its thickness) — because
   the score's other shape term is taken in the plane's own frame too; the other reading (variance of the input
   z coordinate) would repeat the 500 |n_z| prior that the input frame is already roughly z-up.
5. The normal is flipped when the votes reach ``flip_votes``: the voxel means' centroid lies below the plane (1),
   more voxel means lie below it than above (1), n_z < 0 (0.5). A floor therefore ends up with the scene above it
   whatever the input orientation; when a wall or the ceiling wins, the scene is turned on its side or upside
   down and kept so, as in the paper (automatic rejection would drop valid scenes).
6. The normal is rotated onto +z (Rodrigues) — coordinates and normals, about the origin — and the scene shifted
   along z so the floor's lowest inlier (voxel mean) is at z = 0.

``up_prior`` chooses the up direction of the 500 |n · up| term: ``input_z`` is the released code's +z (right when
the input is already roughly upright, e.g. a reconstruction in a gravity-aligned frame); ``extent`` (default) is
the scene's direction of least variance — rooms are wider than they are tall — which stays meaningful under any
rotation of the input. The released code's behaviour is ``up_prior: input_z, max_planes: 2``. On the 17 scannet-mini
scans under random rotations (4 seeds) the floor ends within 2° of +z and at z ≈ 0 for 10-12 scans with the
reference settings and 14-15 with the defaults (``tests/test_alignment.py``).

**Camera prior** (``camera_prior: auto``, default): when the cloud's ``meta["camera_up"]`` holds the cameras' mean
image-up direction (written by ``Reconstruct`` from the registered poses), steps 3-5 change (``parts/gravity.py``):
RANSAC runs on the voxel means whose local normal is within ``prior_tolerance`` (45°, halfway between a floor and a
wall for any camera pitch) of the prior and keeps only hypotheses that close to it; the floor is the lowest plane,
along the prior, of those with at least ``floor_support`` times the largest one's inliers; its normal is pointed
along the prior (no votes). Walls cannot win however large they are, and a table top loses to the floor below it.
With no such plane the scene is refused with a ``GravityDisagreement`` naming it and the angles of its dominant
planes (the offline runner quarantines it). The report gives ``gravity`` (which evidence was used),
``prior_angle_deg`` (the chosen normal's angle to the prior), ``support`` (the floor's share of the voxel means),
``camera_up_agreement`` and every candidate; ``rotation`` (all modes) is the applied 3x3 matrix, and
``meta["camera_up"]`` is turned with the scene. On the 7-Scenes sequence (``graphs/rgbd-to-cloud.yaml``) the prior
is ~23° off (the camera looks down at a desk) and the plane corrects it.

With no plane of ``min_inliers`` inliers the normal is the voxel means' direction of least variance (PCA) through
their centroid, with the same votes, and the lowest voxel mean goes to z = 0 (report ``fallback: "pca"``).
"""

from __future__ import annotations

import attrs
import numpy as np

from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.node import FieldEffect, effect
from pcdag.graphs.params import in_range, integer, one_of, pair, param
from pcdag.graphs.registry import register
from pcdag.nodes.alignment.parts.base import AlignmentTransform
from pcdag.nodes.alignment.parts.gravity import angle_deg, camera_prior, find_planes, floor_from_prior
from pcdag.nodes.alignment.parts.planes import rotation_onto_z, voxel_means
from pcdag.ops.camera_up import CAMERA_UP, CAMERA_UP_AGREEMENT
from pcdag.ops.kdtree import build_tree, kth_neighbour_distance, median_spacing


def nn_iqr(points: np.ndarray) -> float:
    """Interquartile range of the nearest-neighbour distances of ``points`` ``[M, 3]`` (0 for fewer than 2)."""
    if len(points) < 2:
        return 0.0
    q25, q75 = np.percentile(kth_neighbour_distance(build_tree(points), 1), [25, 75])
    return float(q75 - q25)


def orientation_votes(points: np.ndarray, normal: np.ndarray, centre: np.ndarray) -> float:
    """Votes for flipping ``normal``: centroid below the plane 1, more points below than above 1, n_z < 0 0.5."""
    height = (points - centre) @ normal  # [M] signed height above the plane
    centroid_below = float((points.mean(axis=0) - centre) @ normal < 0)
    more_below = float(np.count_nonzero(height < 0) > np.count_nonzero(height > 0))
    return centroid_below + more_below + 0.5 * float(normal[2] < 0)


def least_variance_axis(points: np.ndarray) -> np.ndarray:
    """Unit direction of least variance of ``points`` ``[M, 3]`` (PCA)."""
    centred = points - points.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)  # eigenvalues ascending
    return vectors[:, 0]


def _rounded(values: np.ndarray) -> list[float]:
    return [float(f"{v:.6g}") for v in values]  # six significant digits for the report


@register
class AlignZUp(AlignmentTransform):
    """Rotate the scene so the dominant floor-like plane (RANSAC, scored) faces +z, and put the floor at z = 0."""

    version = 2

    @attrs.frozen
    class Params:
        spacing_points: int = param(300_000, integer(2, None), doc="random points the spacing is measured on")
        voxel_factor: float = param(4.0, in_range(0.0, None, lo_open=True), doc="voxel edge in spacings")
        voxel_range: list = param([0.01, 0.2], pair(1e-6, None), unit="m", doc="clip of the voxel edge")
        threshold_factor: float = param(0.5, in_range(0.0, None), doc="RANSAC threshold in IQRs of NN distances")
        threshold_range: list = param([0.001, 0.1], pair(1e-9, None), unit="m", doc="clip of the threshold")
        max_planes: int = param(3, integer(1, 10), doc="planes detected one after the other (reference: 2)")
        iterations: int = param(500, integer(1, 1_000_000), doc="RANSAC draws per plane")
        min_inliers: int = param(50, integer(3, None), doc="inliers a plane needs")
        flip_votes: float = param(1.5, in_range(0.0, 2.5), doc="votes (of 2.5) at which the normal is flipped")
        up_prior: str = param(
            "extent", one_of("extent", "input_z"), doc="up cue: least-variance axis, or input +z (reference)"
        )
        camera_prior: str = param(
            "auto", one_of("auto", "off"), doc="auto: use the cameras' mean up (meta camera_up) when the cloud has it"
        )
        prior_tolerance: float = param(
            45.0, in_range(0.0, 90.0, lo_open=True), unit="deg", doc="floor candidates: normal this close to the prior"
        )
        floor_support: float = param(
            0.25, in_range(0.0, 1.0), doc="floor candidates: inliers at least this fraction of the largest candidate's"
        )
        refit_band: float = param(
            1.0, in_range(0.0, None), doc="with a prior: refit the floor within this many voxel edges of it (0 = off)"
        )

    def fields(self) -> FieldEffect:
        return effect(reads=["coord"], optional_reads=["normal"], writes=["coord"])

    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        p = self.params
        cloud.require_points(self)
        coord = cloud["coord"].astype(np.float64)  # [N, 3]
        spacing = median_spacing(coord, rng, p.spacing_points) if len(coord) > 1 else 0.0
        voxel = float(np.clip(p.voxel_factor * spacing, *p.voxel_range))
        means = voxel_means(coord, voxel)  # [M, 3]
        threshold = float(np.clip(p.threshold_factor * nn_iqr(means), *p.threshold_range))
        facts: dict = {"spacing": spacing, "voxel": voxel, "n_voxels": len(means), "threshold": threshold}
        where = f"AlignZUp on scene {cloud.meta.get('scene', '?')!r}"
        prior = camera_prior(cloud.meta, where) if p.camera_prior == "auto" else None
        if prior is None:
            normal, centre, floor = self._floor(means, threshold, rng, facts)
            votes = orientation_votes(means, normal, centre)
            if votes >= p.flip_votes:
                normal = -normal
            facts |= {"votes": votes, "flipped": bool(votes >= p.flip_votes), "gravity": "planes"}
        else:
            floor, normal, found = floor_from_prior(means, threshold, p, rng, prior, where, voxel)
            facts |= found | {"plane_found": True, "fallback": None, "votes": None, "gravity": "camera prior + plane"}
            facts |= {"camera_up": _rounded(prior), "camera_up_agreement": cloud.meta.get(CAMERA_UP_AGREEMENT)}
        rot = rotation_onto_z(normal)  # [3, 3]
        shift = -float((floor @ rot[2]).min())  # z of the lowest floor inlier after the rotation, negated
        cloud["coord"] = (coord @ rot.T + [0.0, 0.0, shift]).astype(np.float32)
        if "normal" in cloud:
            cloud["normal"] = (cloud["normal"].astype(np.float64) @ rot.T).astype(np.float32)
        if prior is not None:
            cloud.meta[CAMERA_UP] = _rounded(rot @ prior)  # the prior turns with the scene
        turn = angle_deg(normal, np.array([0.0, 0.0, 1.0]))
        facts |= {"normal": _rounded(normal), "rotation": [_rounded(row) for row in rot]}
        cloud.meta.setdefault("report", {})["AlignZUp"] = facts | {"rotation_deg": round(turn, 4), "z_shift": shift}
        return cloud

    def _floor(
        self, means: np.ndarray, threshold: float, rng: np.random.Generator, facts: dict
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(normal [3], a point on the plane [3], floor points [I, 3]) of the best-scoring plane, or of the PCA
        fallback (then the floor points are all voxel means); fills ``facts``."""
        planes = find_planes(means, threshold, self.params, rng)
        if not planes:
            facts |= {"plane_found": False, "fallback": "pca", "chosen": None, "planes": []}
            return least_variance_axis(means), means.mean(axis=0), means
        up = np.array([0.0, 0.0, 1.0]) if self.params.up_prior == "input_z" else least_variance_axis(means)
        scores = [plane.score(up) for plane in planes]
        best = int(np.argmax(scores))
        facts |= {"plane_found": True, "fallback": None, "chosen": best, "up": _rounded(up)}
        facts["planes"] = [
            {"inliers": int(q.inliers.sum()), "normal": _rounded(q.normal), "variances": _rounded(q.variances),
             "score": round(s, 3)}
            for q, s in zip(planes, scores, strict=True)
        ]  # fmt: skip
        return planes[best].normal, planes[best].centre, means[planes[best].inliers]
