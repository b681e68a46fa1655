"""rgbd backend: back-project posed depth frames and fuse them on a voxel grid (mean position and colour).

Per frame, a depth pixel is kept when its depth lies in ``[min_depth, max_depth]`` and it is not on a depth edge:
a pixel is an edge when its depth differs from a measured 3x3 neighbour by more than ``edge_threshold`` times its
own depth (unmeasured neighbours, depth 0, are no evidence of an edge; ``edge_threshold = 0`` turns this off).
Kept pixels ``(u, v)`` with depth ``z`` become camera points ``((u - cx) z / fx, (v - cy) z / fy, z)`` (OpenCV
pinhole, pixel centres at integer coordinates) and world points through the camera-to-world pose; the colour is
the colour image's pixel at the same position. Frames are processed in batches of about ``FUSE_BATCH_PIXELS``
pixels, each batch fused into a running voxel grid of ``voxel_size`` (``chunks.VoxelFusion``), so memory stays
bounded by the occupied voxels plus one batch. Frames whose pose is not finite are skipped (their pose stays NaN).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.frames import Frames
from pcdag.nodes.reconstruction.parts.base import Reconstruction
from pcdag.nodes.reconstruction.parts.chunks import VoxelFusion, anchor_pixels

# Memory per pixel of a chunk's frames, for chunk sizing: colour 3 B + depth 4 B held per frame, plus its points if
# they were kept unfused (xyz float32 12 B + colour 3 B). Fusion runs in batches, so the working memory on top is
# fixed: measured (tracemalloc, 7-Scenes 640x480) at ~64 B per pixel of one batch, ~250 MB, whatever the chunk length.
BYTES_PER_PIXEL = 24.0
FUSE_BATCH_PIXELS = 4_000_000  # pixels back-projected and fused at once


def depth_edges(depth: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean ``[B, H, W]``: measured pixels whose depth differs from a measured 3x3 neighbour by more than
    ``threshold * depth``. ``depth [B, H, W]``, 0 = no measurement; ``threshold = 0`` marks nothing."""
    measured = depth > 0
    if threshold == 0:
        return np.zeros(depth.shape, bool)
    nearest = ndimage.minimum_filter(np.where(measured, depth, np.inf), size=(1, 3, 3), mode="nearest")
    farthest = ndimage.maximum_filter(np.where(measured, depth, 0), size=(1, 3, 3), mode="nearest")
    jump = np.maximum(farthest - depth, depth - nearest)  # [B, H, W], finite where measured
    return measured & (jump > threshold * depth)


def keep_depth(depth: np.ndarray, params: Any) -> np.ndarray:
    """Boolean ``[B, H, W]``: depth within ``[min_depth, max_depth]``, measured, and not on a depth edge."""
    in_range = (depth > 0) & (depth >= params.min_depth) & (depth <= params.max_depth)
    return in_range & ~depth_edges(depth, params.edge_threshold)


def back_project(
    depth: np.ndarray, rows: np.ndarray, cols: np.ndarray, intrinsics: np.ndarray, pose: np.ndarray
) -> np.ndarray:
    """World points ``[M, 3]`` float32 of the pixels ``(rows [M], cols [M])`` of one depth map ``[H, W]``, with an
    OpenCV pinhole ``intrinsics [3, 3]`` and a camera-to-world ``pose [4, 4]``."""
    k = np.asarray(intrinsics, np.float64)
    z = depth[rows, cols].astype(np.float32)  # [M]
    x = ((cols - k[0, 2]) / k[0, 0]).astype(np.float32) * z  # [M] camera x
    y = ((rows - k[1, 2]) / k[1, 1]).astype(np.float32) * z  # [M] camera y
    r, t = np.asarray(pose, np.float64)[:3, :3], np.asarray(pose, np.float64)[:3, 3]
    world = np.empty((len(z), 3), np.float32)  # [M, 3] = R [x, y, z] + t, one axis at a time (no [M, 3, 3])
    for i in range(3):
        world[:, i] = np.float32(r[i, 0]) * x + np.float32(r[i, 1]) * y + np.float32(r[i, 2]) * z + np.float32(t[i])
    return world


def frame_points(
    depth: np.ndarray, keep: np.ndarray, intrinsics: np.ndarray, pose: np.ndarray
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray]:
    """One frame's kept world points ``[M, 3]``, their pixel ``(rows, cols)``, and its anchors ``[P, 3]`` (the
    sampled pixels of ``chunks.anchor_pixels``, NaN where not kept)."""
    rows, cols = np.nonzero(keep)  # [M] each
    points = back_project(depth, rows, cols, intrinsics, pose)
    grid_rows, grid_cols = (g.ravel() for g in np.meshgrid(*anchor_pixels(*depth.shape), indexing="ij"))
    anchors = back_project(depth, grid_rows, grid_cols, intrinsics, pose)  # [P, 3]
    anchors[~keep[grid_rows, grid_cols]] = np.nan
    return points, (rows, cols), anchors


def _check(frames: Frames, params: Any, where: str) -> None:
    missing = [n for n in ("depths", "poses", "intrinsics") if getattr(frames, n) is None]
    if missing:
        raise ValueError(
            f"{where}: backend 'rgbd' needs depths, poses and intrinsics, but the frames have no "
            f"{', '.join(missing)}; use backend 'sfm' or 'feedforward' for plain video"
        )
    if not params.use_known_cameras:
        raise ValueError(f"{where}: backend 'rgbd' only works with the frames' cameras; set use_known_cameras: true")
    f, (h, w) = len(frames), frames.size
    if len(frames.depths) != f or np.shape(frames.poses) != (f, 4, 4) or np.shape(frames.intrinsics) != (3, 3):
        raise ValueError(
            f"{where}: {f} frames need {f} depth maps, poses [{f}, 4, 4] and intrinsics [3, 3]; got "
            f"{len(frames.depths)} depth maps, poses {list(np.shape(frames.poses))}, "
            f"intrinsics {list(np.shape(frames.intrinsics))}"
        )
    for i, depth in enumerate(frames.depths):
        if np.shape(depth) != (h, w):
            raise ValueError(
                f"{where}: depth of frame {frames.frame_ids[i]!r} is {list(np.shape(depth))} but its colour image "
                f"is [{h}, {w}]; depth and colour must be registered at the same size"
            )


def reconstruct(frames: Frames, params: Any, rng: np.random.Generator) -> Reconstruction:
    """Fuse the posed depth frames into one coloured cloud in the poses' world frame."""
    where = f"rgbd reconstruction of scene {frames.meta.get('scene', '?')!r}"
    _check(frames, params, where)
    depths = np.asarray(frames.depths, np.float32)  # [F, H, W]
    poses = np.asarray(frames.poses, np.float64)  # [F, 4, 4]
    intrinsics = np.asarray(frames.intrinsics, np.float64)  # [3, 3]
    f, (h, w) = len(frames), frames.size
    registered = np.isfinite(poses).all(axis=(1, 2))  # [F]
    fusion = VoxelFusion(params.voxel_size, where)
    samples = int(np.prod([len(a) for a in anchor_pixels(h, w)]))
    anchors = np.full((f, samples, 3), np.nan, np.float32)  # [F, P, 3]
    batch = max(1, FUSE_BATCH_PIXELS // (h * w))
    for start in range(0, f, batch):
        index = start + np.flatnonzero(registered[start : start + batch])  # registered frames of this batch
        if not len(index):
            continue
        keep = keep_depth(depths[index], params)  # [B, H, W]
        points, colors = [], []
        for j, i in enumerate(index):
            frame, (rows, cols), anchors[i] = frame_points(depths[i], keep[j], intrinsics, poses[i])
            points.append(frame)
            colors.append(frames.colors[i][rows, cols])
        fusion.add(np.concatenate(points), np.concatenate(colors))
    coord, color = fusion.result()
    if not len(coord):
        raise ValueError(
            f"{where}: no depth pixel survived min_depth={params.min_depth}, max_depth={params.max_depth}, "
            f"edge_threshold={params.edge_threshold} in {int(registered.sum())} posed frames"
        )
    report = {"points_before_fusion": fusion.points_in, "points_after_fusion": len(coord)}
    cloud = PointCloud({"coord": coord, "color": color})
    poses = np.where(registered[:, None, None], poses, np.nan)
    return Reconstruction(cloud, poses, intrinsics, report, anchors)
