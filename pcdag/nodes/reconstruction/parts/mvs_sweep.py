"""Plane-sweep stereo and geometric consistency in torch: the numeric kernels of the ``mvs`` dense step.

Conventions as everywhere in pcdag: OpenCV pinhole (pixel centres at integer coordinates), poses camera-to-world.

``plane_sweep``: for one reference image and its source images, fronto-parallel planes of the reference camera at
depths evenly spaced in *inverse* depth; each source image is warped onto the reference through each plane
(bilinear), compared with the reference by ZNCC over a ``window x window`` box (box means by ``avg_pool2d``),
and the per-source costs ``1 - ZNCC`` are aggregated per pixel and plane by the mean of the best half of the
sources (a view that is occluded or out of frame does not spoil the others). A 3x3 box over the aggregated cost of
each plane is the light spatial aggregation; the winner plane per pixel is refined to sub-plane precision by a
parabola through its neighbours' costs. Confidence = ``1 - cost`` at the winner (the aggregated ZNCC, in [-1, 1]),
or -1 where the reference window is flat (standard deviation below ``MIN_TEXTURE_STD``).
Planes are processed in chunks of ``chunk`` so that memory is ``O(chunk x sources x pixels)``.

``consistency_votes``: for each pixel of a reference depth map, how many neighbouring depth maps agree with it,
i.e. the point reprojected into the neighbour lands in its image where the neighbour's depth (nearest pixel) is
within ``tolerance`` (relative) of the point's depth in that camera.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

INVALID_COST = 2.0  # 1 - ZNCC of a pixel whose warp leaves the source image (worst possible ZNCC, -1)
MIN_TEXTURE_STD = 0.01  # reference windows flatter than this (grey in [0, 1]) get confidence -1: ZNCC is noise there


def scale_intrinsics(k: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Intrinsics ``[3, 3]`` of an image resized by ``(sx, sy)`` (pixel centres at integers: u' = (u+½)s - ½)."""
    out = k.clone().to(torch.float64)
    out[0, 0], out[1, 1] = k[0, 0] * sx, k[1, 1] * sy
    out[0, 2], out[1, 2] = (k[0, 2] + 0.5) * sx - 0.5, (k[1, 2] + 0.5) * sy - 0.5
    return out


def pixel_rays(k: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Camera-frame rays ``[h*w, 3]`` (z = 1) of every pixel, row-major."""
    v, u = torch.meshgrid(
        torch.arange(h, dtype=k.dtype, device=k.device), torch.arange(w, dtype=k.dtype, device=k.device), indexing="ij"
    )
    x = (u.reshape(-1) - k[0, 2]) / k[0, 0]
    y = (v.reshape(-1) - k[1, 2]) / k[1, 1]
    return torch.stack([x, y, torch.ones_like(x)], dim=1)


def relative_pose(ref: torch.Tensor, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A [3,3], b [3])`` with ``x_src = A x_ref + b`` for camera-to-world poses ``ref``, ``src`` [4, 4]."""
    r_src_t = src[:3, :3].T
    return r_src_t @ ref[:3, :3], r_src_t @ (ref[:3, 3] - src[:3, 3])


def _box(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over a ``window x window`` box of ``x [B, 1, h, w]`` (same size; border boxes cropped)."""
    return F.avg_pool2d(x, window, stride=1, padding=window // 2, count_include_pad=False)


def _warp(image: torch.Tensor, uv: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``image [1, 1, H, W]`` at pixel positions ``uv [B, h*w, 2]``: ``([B, 1, h, w], inside [B, h, w])``."""
    big_h, big_w = image.shape[-2:]
    grid = torch.stack([(2 * uv[..., 0] + 1) / big_w - 1, (2 * uv[..., 1] + 1) / big_h - 1], dim=-1)
    grid = grid.reshape(len(uv), h, w, 2).to(image.dtype)
    sampled = F.grid_sample(image.expand(len(uv), -1, -1, -1), grid, align_corners=False, padding_mode="border")
    inside = (grid.abs() <= 1).all(dim=-1)
    return sampled, inside


def zncc_costs(
    ref: torch.Tensor, src: torch.Tensor, k_ref: torch.Tensor, k_src: torch.Tensor, rel: tuple, inv_depths, window
) -> torch.Tensor:
    """``1 - ZNCC`` ``[D, h, w]`` of grey ``src [1,1,H',W']`` warped onto grey ``ref [1,1,h,w]`` through each
    plane at inverse depth ``inv_depths [D]``; ``INVALID_COST`` where the warp leaves ``src`` or goes behind it."""
    h, w = ref.shape[-2:]
    a, b = rel
    rays = pixel_rays(k_ref, h, w) @ a.T  # [h*w, 3] rotated rays: x_src = d * rays + b
    points = rays[None] / inv_depths[:, None, None] + b  # [D, h*w, 3] float64
    z = points[..., 2]
    uv = torch.stack(
        [k_src[0, 0] * points[..., 0] / z + k_src[0, 2], k_src[1, 1] * points[..., 1] / z + k_src[1, 2]], dim=-1
    )
    warped, inside = _warp(src, torch.nan_to_num(uv, nan=-1e6, posinf=-1e6, neginf=-1e6), h, w)  # [D, 1, h, w]
    valid = inside & (z.reshape(-1, h, w) > 0)
    mu_i, mu_j = _box(ref, window), _box(warped, window)
    var_i = (_box(ref * ref, window) - mu_i**2).clamp_min(0)
    var_j = (_box(warped * warped, window) - mu_j**2).clamp_min(0)
    cov = _box(ref * warped, window) - mu_i * mu_j
    zncc = (cov / torch.sqrt(var_i * var_j + 1e-8)).clamp(-1, 1)[:, 0]  # [D, h, w]
    return torch.where(valid, 1 - zncc, torch.full_like(zncc, INVALID_COST))


def plane_sweep(
    ref: torch.Tensor,
    sources: list[tuple[torch.Tensor, torch.Tensor, tuple]],
    k_ref: torch.Tensor,
    inv_depths: torch.Tensor,
    window: int,
    chunk: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth ``[h, w]`` and confidence ``[h, w]`` of grey ``ref [1, 1, h, w]`` from ``sources`` (grey image
    ``[1, 1, H', W']``, its intrinsics ``[3, 3]``, ``relative_pose(ref, src)``), over planes at ``inv_depths [D]``
    (ascending or descending, evenly spaced, D ≥ 3). Depth is 0 where the winner is the first or last plane."""
    n_planes = len(inv_depths)
    keep = max(1, (len(sources) + 1) // 2)  # best half of the sources per pixel and plane
    cost = torch.empty((n_planes, *ref.shape[-2:]), dtype=ref.dtype, device=ref.device)  # [D, h, w]
    for start in range(0, n_planes, chunk):
        planes = inv_depths[start : start + chunk]
        per_source = torch.stack([zncc_costs(ref, img, k_ref, k, rel, planes, window) for img, k, rel in sources])
        best = torch.topk(per_source, keep, dim=0, largest=False).values  # [keep, d, h, w]
        cost[start : start + chunk] = best.mean(dim=0)
    cost = _box(cost[:, None], 3)[:, 0]  # light aggregation: 3x3 box per plane
    best_cost, index = cost.min(dim=0)  # [h, w]
    inner = index.clamp(1, n_planes - 2)
    c_lo = cost.gather(0, (inner - 1)[None])[0]
    c_mid = cost.gather(0, inner[None])[0]
    c_hi = cost.gather(0, (inner + 1)[None])[0]
    curvature = c_lo - 2 * c_mid + c_hi
    offset = torch.where(curvature > 1e-9, 0.5 * (c_lo - c_hi) / curvature.clamp_min(1e-9), torch.zeros_like(c_mid))
    step = (inv_depths[-1] - inv_depths[0]) / (n_planes - 1)
    inv = inv_depths[0] + (inner.to(inv_depths.dtype) + offset.clamp(-0.5, 0.5).to(inv_depths.dtype)) * step
    interior = (index > 0) & (index < n_planes - 1) & (inv > 0)
    depth = torch.where(interior, 1 / inv.clamp_min(1e-12), torch.zeros_like(inv)).to(ref.dtype)
    flat = (_box(ref * ref, window) - _box(ref, window) ** 2)[0, 0] < MIN_TEXTURE_STD**2  # [h, w]
    return depth, torch.where(flat, torch.full_like(best_cost, -1.0), 1 - best_cost)


def consistency_votes(
    depth: torch.Tensor,
    k: torch.Tensor,
    pose: torch.Tensor,
    neighbours: list[tuple[torch.Tensor, torch.Tensor]],
    tolerance: float,
) -> torch.Tensor:
    """Per pixel of ``depth [h, w]`` (0 = none; camera ``k``, camera-to-world ``pose``), the number of
    ``neighbours`` (their depth map ``[h, w]`` with the same ``k``, their pose) whose depth agrees within
    ``tolerance`` (relative to the point's depth in the neighbour's camera) where the point reprojects."""
    h, w = depth.shape
    world = (pixel_rays(k, h, w) * depth.reshape(-1, 1).to(k.dtype)) @ pose[:3, :3].T + pose[:3, 3]  # [h*w, 3]
    votes = torch.zeros(h * w, dtype=torch.int32, device=depth.device)
    for other_depth, other_pose in neighbours:
        cam = (world - other_pose[:3, 3]) @ other_pose[:3, :3]  # [h*w, 3] R^T (x - t)
        z = cam[:, 2]
        front = z > 1e-9
        zs = torch.where(front, z, torch.ones_like(z))
        u = torch.round(k[0, 0] * cam[:, 0] / zs + k[0, 2])
        v = torch.round(k[1, 1] * cam[:, 1] / zs + k[1, 2])
        inside = front & (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
        flat = (v.clamp(0, h - 1) * w + u.clamp(0, w - 1)).long()
        seen = other_depth.reshape(-1)[flat].to(k.dtype)  # [h*w]
        agree = inside & (seen > 0) & ((seen - z).abs() <= tolerance * zs)
        votes += agree.to(torch.int32)
    return torch.where(depth.reshape(-1) > 0, votes, torch.zeros_like(votes)).reshape(h, w)
