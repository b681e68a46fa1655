"""The ``mvs`` dense step: a coloured cloud from posed colour frames by plane-sweep stereo (no depth, no weights).

``densify(frames, poses, intrinsics, sparse, params, where)`` runs after a backend has given (or the frames carry)
camera-to-world ``poses [F, 4, 4]`` (NaN = not registered) and ``intrinsics [3, 3]``:

1. Every frame is shrunk so its longest side is at most ``mvs_max_image_size`` (antialiased bilinear) and made
   grey; intrinsics are scaled to match.
2. References: every ``mvs_reference_stride``-th registered frame. Per reference, its depth range is the 2nd-98th
   percentile of the depths of the ``sparse`` points (the backend's cloud) that project into it, widened by 20 %
   (at least ``MIN_VISIBLE`` points needed); otherwise ``[min_depth, max_depth]`` (in the poses' units).
3. Sources: the ``mvs_sources`` registered frames with the best score for the triangulation angle they make with
   the reference at its median depth (best near ``TARGET_ANGLE_DEG``, between ``MIN_ANGLE_DEG`` and
   ``MAX_ANGLE_DEG``) among those whose optical axis is within ``MAX_VIEW_ANGLE_DEG`` of the reference's
   (``select_views``).
4. ``mvs_sweep.plane_sweep`` over ``mvs_planes`` planes gives a depth and a confidence (aggregated ZNCC) per pixel;
   pixels with confidence below ``mvs_min_zncc`` are dropped.
5. Geometric consistency: a depth is kept when at least ``mvs_consistent_views`` of the reference's
   ``mvs_sources`` nearest *references* (same score) agree with it within ``mvs_consistency_tolerance``.
6. Kept pixels are back-projected, coloured from the shrunk colour image, and fused on ``voxel_size``
   (``chunks.VoxelFusion``, the RGB-D path's fusion), one reference at a time: memory is one reference's cost
   volume chunk plus the shrunk images and depth maps.

The report gives references, points before / after the consistency filter, points after fusion, the image size,
the device and the seconds taken.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.frames import Frames
from pcdag.nodes.reconstruction.parts.base import torch_device
from pcdag.nodes.reconstruction.parts.chunks import VoxelFusion

MIN_VISIBLE = 20  # sparse points a reference must see to take its depth range from them
TARGET_ANGLE_DEG = 8.0  # preferred triangulation angle between reference and source
MAX_VIEW_ANGLE_DEG = 50.0  # sources whose optical axis turns more than this from the reference's are not used
MIN_ANGLE_DEG = 1.0  # below this a source adds no depth information
MAX_ANGLE_DEG = 40.0  # above this the views see the surface too differently for window matching


def shrink(colors: np.ndarray, max_side: int, device: str) -> tuple[Any, Any, float, float]:
    """Colour frames ``[F, H, W, 3]`` uint8 → ``(rgb [F, 3, h, w], grey [F, 1, h, w])`` float32 in [0, 1] on
    ``device``, longest side ≤ ``max_side``, and the scales ``(sx, sy)``. Frames are resized one at a time."""
    import torch
    import torch.nn.functional as F

    f, big_h, big_w = colors.shape[:3]
    scale = min(1.0, max_side / max(big_h, big_w))
    h, w = max(8, round(big_h * scale)), max(8, round(big_w * scale))
    rgb = torch.empty((f, 3, h, w), dtype=torch.float32, device=device)
    for i in range(f):
        image = torch.from_numpy(np.ascontiguousarray(colors[i])).to(device).permute(2, 0, 1)[None].float() / 255
        rgb[i] = F.interpolate(image, size=(h, w), mode="bilinear", antialias=(h, w) != (big_h, big_w))[0]
    grey = (0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])[:, None]
    return rgb.clamp(0, 1), grey, w / big_w, h / big_h


def depth_range(sparse: np.ndarray, k: np.ndarray, pose: np.ndarray, size: tuple[int, int], fallback) -> tuple:
    """``(near, far, source)`` for one camera: from the sparse points ``[N, 3]`` it sees, else ``fallback``."""
    h, w = size
    if len(sparse):
        cam = (sparse.astype(np.float64) - pose[:3, 3]) @ pose[:3, :3]  # [N, 3]
        z = cam[:, 2]
        front = z > 1e-9
        u = k[0, 0] * cam[front, 0] / z[front] + k[0, 2]
        v = k[1, 1] * cam[front, 1] / z[front] + k[1, 2]
        seen = z[front][(u >= -0.5) & (u <= w - 0.5) & (v >= -0.5) & (v <= h - 0.5)]
        if len(seen) >= MIN_VISIBLE:
            near, far = np.percentile(seen, [2, 98])
            return float(near) / 1.2, float(far) * 1.2, "sparse"
    return float(fallback[0]), float(fallback[1]), "params"


def select_views(poses: np.ndarray, ref: int, candidates: np.ndarray, depth: float, count: int) -> np.ndarray:
    """Up to ``count`` of ``candidates`` (frame indices, ``ref`` excluded) for reference ``ref`` at scene depth
    ``depth``, best score first: a Gaussian of the triangulation angle around ``TARGET_ANGLE_DEG`` (wider above),
    among views within ``MAX_VIEW_ANGLE_DEG`` of the reference's optical axis and within
    ``[MIN_ANGLE_DEG, MAX_ANGLE_DEG]`` of triangulation angle."""
    others = candidates[candidates != ref]
    centre, axis = poses[ref, :3, 3], poses[ref, :3, 2]
    point = centre + depth * axis  # where the reference looks, at its median depth
    rays_ref = point - centre
    rays = point - poses[others, :3, 3]  # [C, 3]
    cos = rays @ rays_ref / (np.linalg.norm(rays, axis=1) * np.linalg.norm(rays_ref) + 1e-12)
    angle = np.degrees(np.arccos(np.clip(cos, -1, 1)))  # [C] triangulation angle
    view = np.degrees(np.arccos(np.clip(poses[others, :3, 2] @ axis, -1, 1)))  # [C] optical axes
    sigma = np.where(angle < TARGET_ANGLE_DEG, TARGET_ANGLE_DEG / 2, 2 * TARGET_ANGLE_DEG)
    score = np.exp(-((angle - TARGET_ANGLE_DEG) ** 2) / (2 * sigma**2))
    ok = (view <= MAX_VIEW_ANGLE_DEG) & (angle >= MIN_ANGLE_DEG) & (angle <= MAX_ANGLE_DEG)
    order = np.argsort(-np.where(ok, score, -1), kind="stable")
    return others[order[: int(ok.sum())]][:count]


def _check(poses: np.ndarray, intrinsics: np.ndarray | None, frames: Frames, where: str) -> np.ndarray:
    f = len(frames)
    if intrinsics is None or np.shape(intrinsics) != (3, 3) or not np.isfinite(intrinsics).all():
        raise ValueError(f"{where}: dense 'mvs' needs the camera intrinsics [3, 3]; got {intrinsics!r}")
    if poses is None or np.shape(poses) != (f, 4, 4):
        raise ValueError(f"{where}: dense 'mvs' needs poses [{f}, 4, 4], got {None if poses is None else poses.shape}")
    registered = np.flatnonzero(np.isfinite(poses).all(axis=(1, 2)))
    if len(registered) < 2:
        raise ValueError(f"{where}: dense 'mvs' needs at least 2 posed frames, got {len(registered)}")
    return registered


def depth_maps(frames: Frames, poses: np.ndarray, intrinsics: np.ndarray, sparse: np.ndarray, params, where: str):
    """Per reference frame, its filtered depth map (before consistency): a dict of torch tensors and facts."""
    import torch

    from pcdag.nodes.reconstruction.parts import mvs_sweep

    registered = _check(poses, intrinsics, frames, where)
    device = torch_device(params.device)
    rgb, grey, sx, sy = shrink(frames.colors, params.mvs_max_image_size, device)
    h, w = grey.shape[-2:]
    k = mvs_sweep.scale_intrinsics(torch.as_tensor(intrinsics, dtype=torch.float64), sx, sy)
    k32 = k.to(device=device, dtype=torch.float32)
    pose_t = torch.as_tensor(poses, dtype=torch.float32, device=device)
    refs = registered[:: params.mvs_reference_stride]
    sparse = np.asarray(sparse, np.float64).reshape(-1, 3)
    out = {"refs": [], "depth": {}, "conf_kept": 0, "range_from_sparse": 0, "views": {}}
    for r in refs:
        near, far, origin = depth_range(sparse, k.numpy(), poses[r], (h, w), (params.min_depth, params.max_depth))
        out["range_from_sparse"] += origin == "sparse"
        sources = select_views(poses, r, registered, float(np.sqrt(near * far)), params.mvs_sources)
        out["views"][int(r)] = select_views(poses, r, refs, float(np.sqrt(near * far)), params.mvs_sources)
        if not len(sources):
            continue
        inv = torch.linspace(1 / near, 1 / far, params.mvs_planes, dtype=torch.float32, device=device)
        src = [(grey[s : s + 1], k32, mvs_sweep.relative_pose(pose_t[r], pose_t[s])) for s in sources]
        depth, conf = mvs_sweep.plane_sweep(grey[r : r + 1], src, k32, inv, params.mvs_window)
        depth = torch.where(conf >= params.mvs_min_zncc, depth, torch.zeros_like(depth))
        out["depth"][int(r)] = depth
        out["refs"].append(int(r))
        out["conf_kept"] += int((depth > 0).sum())
    out.update(rgb=rgb, k=k32, poses=pose_t, size=(h, w), device=device)
    return out


def fuse(maps: dict, poses: np.ndarray, params: Any, where: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Consistency-filter the depth maps of ``maps`` (as ``depth_maps`` returns) and fuse the kept pixels:
    ``(coord [M, 3] float32, color [M, 3] uint8, points kept before fusion)``."""
    from pcdag.nodes.reconstruction.parts import mvs_sweep
    from pcdag.nodes.reconstruction.parts.rgbd import back_project

    fusion = VoxelFusion(params.voxel_size, where)
    k_np = maps["k"].double().cpu().numpy()
    for r in maps["refs"]:
        depth = maps["depth"][r]
        neighbours = [(maps["depth"][q], maps["poses"][q]) for q in maps["views"][r] if q in maps["depth"]]
        votes = mvs_sweep.consistency_votes(
            depth, maps["k"], maps["poses"][r], neighbours, params.mvs_consistency_tolerance
        )
        keep = ((votes >= params.mvs_consistent_views) & (depth > 0)).cpu().numpy()
        rows, cols = np.nonzero(keep)
        points = back_project(depth.cpu().numpy(), rows, cols, k_np, poses[r])
        colors = (maps["rgb"][r].permute(1, 2, 0).cpu().numpy()[rows, cols] * 255 + 0.5).astype(np.uint8)
        fusion.add(points, colors)
    coord, color = fusion.result()
    return coord, color, fusion.points_in


def densify(frames: Frames, poses: np.ndarray, intrinsics: np.ndarray, sparse: np.ndarray, params, where: str):
    """``(cloud, report)``: the fused MVS cloud of ``frames`` with ``poses`` / ``intrinsics`` (see module doc)."""
    start = time.perf_counter()
    maps = depth_maps(frames, poses, intrinsics, sparse, params, where)
    coord, color, consistent = fuse(maps, np.asarray(poses, np.float64), params, where)
    h, w = maps["size"]
    report = {
        "dense": "mvs",
        "mvs_reference_frames": len(maps["refs"]),
        "mvs_depth_range_from_sparse": maps["range_from_sparse"],
        "mvs_image_size": [w, h],
        "mvs_points_before_consistency": maps["conf_kept"],
        "mvs_points_after_consistency": consistent,
        "mvs_points_after_fusion": len(coord),
        "mvs_device": maps["device"],
        "mvs_seconds": round(time.perf_counter() - start, 3),
    }
    if not len(coord):
        raise ValueError(
            f"{where}: dense 'mvs' kept no point from {len(maps['refs'])} reference frames (mvs_min_zncc="
            f"{params.mvs_min_zncc}, mvs_consistent_views={params.mvs_consistent_views}); lower them or check poses"
        )
    return PointCloud({"coord": coord, "color": color}), report


def after_backend(frames: Frames, result: Any, params: Any) -> Any:
    """``result`` (a ``Reconstruction``) with its cloud replaced by the MVS cloud and the MVS facts in its report.

    Cameras: the frames' own poses and intrinsics when ``use_known_cameras`` and the frames carry them (the
    backend's cloud is in their world then), else the backend's estimates. The backend's cloud sets depth ranges.
    """
    where = f"dense mvs of scene {frames.meta.get('scene', '?')!r}"
    known = params.use_known_cameras
    poses = frames.poses if known and frames.poses is not None else result.poses
    intrinsics = frames.intrinsics if known and frames.intrinsics is not None else result.intrinsics
    poses = np.asarray(poses, np.float64)
    if known and frames.poses is not None:  # frames the backend did not register keep their known pose
        poses = np.where(np.isfinite(poses).all(axis=(1, 2))[:, None, None], poses, np.asarray(result.poses))
    sparse = np.asarray(result.cloud["coord"])
    cloud, report = densify(frames, poses, np.asarray(intrinsics, np.float64), sparse, params, where)
    result.report = {**result.report, "sparse_points": len(sparse), **report}
    result.cloud = cloud
    return result
