"""Several COLMAP models of one sequence: their sizes for the report, and merging the ones that share frames.

Incremental mapping starts a new model when no further frame registers into the current one; a later model may
re-register up to ``max_model_overlap`` frames of an earlier one (COLMAP's default 20). Two models that share
registered frames are merged here: the smaller one is moved into the larger one's world by the similarity that
best reprojects its 3D points into the shared frames (``pycolmap.align_reconstructions_via_reprojections``: a
RANSAC over common observations, robust to a few badly placed frames), then frames and points are united. A frame
in both keeps the pose of the model merged first (the largest). Models sharing no registered frame with the
merged set stay out of the cloud, but are still listed in the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MIN_COMMON_FRAMES = 2  # shared registered frames needed before an alignment is tried
# A similarity is accepted when at least this fraction of the common observations reproject within
# MAX_REPROJ_PX pixels after it (COLMAP's own merging defaults).
MIN_INLIER_OBS = 0.3
MAX_REPROJ_PX = 8.0


def by_size(models: list) -> list:
    """Models largest first: most registered frames, then most points."""
    return sorted(models, key=lambda r: (r.num_reg_images(), r.num_points3D()), reverse=True)


def merge_into_largest(pycolmap: Any, models: list) -> list[int]:
    """Move every model that can be chained to ``models[0]`` through shared frames into its world (in place);
    the positions (into ``models``) of the merged set, ``0`` first, in merge order."""
    merged, pending = [0], list(range(1, len(models)))
    frames = [set(m.reg_image_ids()) for m in models]
    progress = True
    while pending and progress:
        progress = False
        for j in list(pending):
            for i in merged:
                if len(frames[i] & frames[j]) < MIN_COMMON_FRAMES:
                    continue
                sim = pycolmap.align_reconstructions_via_reprojections(
                    models[j], models[i], min_inlier_observations=MIN_INLIER_OBS, max_reproj_error=MAX_REPROJ_PX
                )
                if sim is None:
                    continue
                models[j].transform(sim)  # models[i] is already in models[0]'s world
                merged.append(j)
                pending.remove(j)
                progress = True
                break
    return merged


def union_poses(per_model: list[np.ndarray]) -> np.ndarray:
    """Camera-to-world [F, 4, 4] of several models in one world: each frame from the first model that has it."""
    poses = per_model[0].copy()
    for other in per_model[1:]:
        fill = ~np.isfinite(poses).all(axis=(1, 2)) & np.isfinite(other).all(axis=(1, 2))  # [F]
        poses[fill] = other[fill]
    return poses


def model_facts(models: list, used: list[int]) -> list[dict]:
    """One entry per model (in ``models`` order): frames registered, points, and whether it is in the cloud."""
    return [
        {"frames": int(m.num_reg_images()), "points": int(m.num_points3D()), "in_cloud": i in used}
        for i, m in enumerate(models)
    ]


def points_of(models: list, used: list[int], folder: Path, read_ply: Any) -> tuple[np.ndarray, np.ndarray]:
    """The sparse points of the models ``used`` (already in one world), concatenated: coord [N, 3], color [N, 3]."""
    parts = [read_ply(models[i], folder / f"points{i}.ply") for i in used]
    return np.concatenate([c for c, _ in parts]), np.concatenate([k for _, k in parts])
