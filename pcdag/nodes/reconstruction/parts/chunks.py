"""Chunked reconstruction: cut a long sequence into overlapping chunks, reconstruct each, stitch them together.

``reconstruct_in_chunks`` is what ``Reconstruct`` calls. When the frames fit one chunk the backend runs once;
otherwise the sequence is cut into consecutive chunks of at most ``chunk_frames`` frames that share
``chunk_overlap`` frames with their neighbours, each chunk is reconstructed on its own, and chunk k is moved onto
chunk k-1 (already in the world of chunk 0) by the similarity ``x -> s R x + t`` fitted with ``umeyama`` on the
*anchors* of the shared frames:

- the camera centres of shared frames registered in both chunks (``poses[:, :3, 3]``), and
- when the backend gives them (``Reconstruction.anchors``), sampled per-pixel points of every frame (float32
  ``[F, P, 3]`` in the chunk's world, NaN where a pixel was not kept; pixel ``p`` of a frame is the same pixel in
  both chunks, see ``anchor_pixels``). These are what stitches chunks without poses and keep the fit well posed
  when the shared camera centres are nearly collinear (a camera moving straight ahead).

The fit is robust (``robust_umeyama``: least median of squares, then a refit on the inliers), so junk anchor
points (a wrong depth in one chunk) do not bend it.
With known poses (rgbd) both chunks give the same anchors and the fit is the identity, by the same code path.
Clouds and poses are transformed, and all chunks are fused again on ``voxel_size`` (mean position and colour per
voxel); anchors are dropped from the result. The report adds ``frames`` (input), ``frames_selected``
(given to the backend), ``frames_registered`` (finite poses), ``chunks``, ``chunk_frames`` and, per stitched chunk,
the RMS distance of the shared camera centres after alignment (``stitch_rms``; null without poses), the RMS of the
kept anchor points (``stitch_point_rms``) and the scale (``stitch_scale``); backend counts are summed over chunks,
backend means / RMS / errors / scales averaged (``_merge_reports``).

Chunk size: ``chunk_frames``, or when 0 the number of frames whose estimated working memory fits
``memory_budget``. The estimate is ``BYTES_PER_PIXEL * frame_pixels(height, width, params)`` per frame, both
optional hooks of the backend module (defaults ``DEFAULT_BYTES_PER_PIXEL`` and ``height * width``). A backend
module may also define ``select_frames(count, params) -> positions`` (e.g. at most ``max_frames`` evenly spaced):
chunks are then cut from the frames the backend really uses, so that shared frames exist in both chunks.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from pcdag.datasets.video import even_indices
from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.frames import Frames
from pcdag.nodes.reconstruction.parts.base import Reconstruction

ANCHOR_PIXELS = 4096  # about this many sampled pixels per frame
DEFAULT_BYTES_PER_PIXEL = 64.0  # backends that state no estimate of their own
GIB = 2**30
_KEY_BITS = 21  # voxel keys pack three signed 21-bit voxel indices into one int64
_KEY_HALF = 1 << (_KEY_BITS - 1)


# ------------------------------------------------------------------------------------------ similarity


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ≈ s R src + t`` (Umeyama 1991): ``(s, R [3,3], t [3])``, R a proper rotation.

    Reflections are never returned: when the best orthogonal map has det -1, the smallest singular direction is
    flipped (the best *rotation*). ``with_scale=False`` fixes s = 1. Raises ``ValueError`` for fewer than 3 pairs,
    non-finite values, or a degenerate configuration (coincident or collinear points: the rotation about their
    line is undetermined).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1:] != (3,) or src.shape != dst.shape:
        raise ValueError(f"umeyama needs two [N, 3] arrays of equal shape, got {list(src.shape)} and {list(dst.shape)}")
    n = len(src)
    if n < 3:
        raise ValueError(f"umeyama needs at least 3 point pairs, got {n}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("umeyama: points must be finite")
    mean_src, mean_dst = src.mean(axis=0), dst.mean(axis=0)  # [3]
    a, b = src - mean_src, dst - mean_dst  # [N, 3]
    var_src = float(np.square(a).sum() / n)
    u, d, vt = np.linalg.svd(b.T @ a / n)  # covariance [3, 3] = U diag(d) Vt, d descending
    if var_src <= 1e-300 or d[0] <= 1e-300 or d[1] <= 1e-10 * d[0]:
        raise ValueError(
            f"umeyama: the {n} points are degenerate (coincident or collinear); a similarity is not determined"
        )
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2] = -1.0  # best orthogonal map is a reflection: take the best rotation instead
    rotation = u @ np.diag(sign) @ vt  # [3, 3]
    scale = float((d * sign).sum() / var_src) if with_scale else 1.0
    if scale <= 0:
        raise ValueError("umeyama: the point sets are not related by a positive scale")
    return scale, rotation, mean_dst - scale * rotation @ mean_src


def robust_umeyama(
    src: np.ndarray, dst: np.ndarray, trials: int = 100, seed: int = 0
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """``umeyama`` that ignores outlying pairs: ``(s, R, t, inliers [N] bool)``.

    Least median of squares (Rousseeuw 1984): among ``trials`` similarities fitted to random triples (a fixed
    seed: same input, same answer), take the one with the smallest median squared residual over (at most 4096 of)
    the pairs; pairs within 2.5 robust standard deviations of it are inliers, and the result is ``umeyama`` on
    them. Tolerates up to half the pairs being junk.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n = len(src)
    if n <= 3:
        s, r, t = umeyama(src, dst)
        return s, r, t, np.ones(n, bool)
    rng = np.random.default_rng(seed)
    score = rng.choice(n, min(n, 4096), replace=False)  # [K] pairs used to score a trial
    best, best_median = None, np.inf
    for _ in range(trials):
        pick = rng.choice(n, 3, replace=False)  # [3] one random triple of pairs
        try:
            trial = umeyama(src[pick], dst[pick])
        except ValueError:  # a degenerate triple
            continue
        median = float(np.median(np.square(transform_points(src[score], *trial) - dst[score]).sum(1)))
        if median < best_median:
            best, best_median = trial, median
    if best is None:  # every triple was degenerate: fit all pairs (raises with the reason if they are too)
        best = umeyama(src, dst)
        best_median = float(np.median(np.square(transform_points(src[score], *best) - dst[score]).sum(1)))
    sigma = 1.4826 * (1 + 5 / (n - 3)) * np.sqrt(best_median)
    residual = np.linalg.norm(transform_points(src, *best) - dst, axis=1)  # [N]
    inliers = residual <= max(2.5 * sigma, 1e-9 * (1.0 + float(np.abs(dst).max())))
    try:
        return *umeyama(src[inliers], dst[inliers]), inliers
    except ValueError:  # too few or degenerate inliers: keep the best trial
        return *best, inliers


def transform_points(points: np.ndarray, s: float, r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``s R p + t`` for points ``[..., 3]`` (float64 math; the result has the input's float dtype)."""
    out = s * (points.astype(np.float64) @ r.T) + t
    return out.astype(points.dtype if points.dtype.kind == "f" else np.float64)


def transform_poses(poses: np.ndarray, s: float, r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Camera-to-world poses ``[F, 4, 4]`` moved by the similarity: rotation ``R Rc``, centre ``s R c + t``."""
    out = poses.astype(np.float64).copy()
    out[:, :3, :3] = r @ out[:, :3, :3]
    out[:, :3, 3] = s * out[:, :3, 3] @ r.T + t
    return out


# ------------------------------------------------------------------------------------------ frames and pixels


def evenly_spaced(count: int, at_most: int) -> np.ndarray:
    """At most ``at_most`` evenly spaced positions in ``range(count)``, first and last included (all if fewer)."""
    return even_indices(count, at_most)


def anchor_pixels(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the sampled anchor pixels of an image (a regular grid of about ``ANCHOR_PIXELS``)."""
    stride = max(1, int(np.sqrt(height * width / ANCHOR_PIXELS)))
    return np.arange(stride // 2, height, stride), np.arange(stride // 2, width, stride)


def sample_anchors(points: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Anchor points ``[B, P, 3]`` float32 from per-pixel points ``[B, H, W, 3]`` and a keep mask ``[B, H, W]``."""
    rows, cols = anchor_pixels(points.shape[1], points.shape[2])
    grid = np.ix_(np.arange(points.shape[0]), rows, cols)
    sampled = np.where(keep[grid][..., None], points[grid], np.nan)  # [B, r, c, 3]
    return sampled.reshape(points.shape[0], -1, 3).astype(np.float32)


# ------------------------------------------------------------------------------------------ voxel fusion


def _group(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(keys, return_inverse=True)``, about 3x faster for int64 keys (sort + binary search)."""
    ordered = np.sort(keys)  # [N]
    unique = ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])] if len(keys) else ordered  # [M]
    return unique, np.searchsorted(unique, keys)  # [M], [N]


class VoxelFusion:
    """Running per-voxel means of position and colour, fed in batches; memory ~ occupied voxels + one batch.

    Voxels are ``floor(coord / voxel_size)`` in absolute world coordinates (consistent across batches).
    ``voxel_size = 0`` keeps every point.
    """

    def __init__(self, voxel_size: float, where: str) -> None:
        self.voxel_size, self.where = float(voxel_size), where
        self.points_in = 0
        self._keys = np.empty(0, np.int64)  # [M] sorted voxel keys
        self._sums = np.empty((0, 7))  # [M, 7] coord sum (3), colour sum (3), count (1)
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []  # voxel_size 0: the points themselves

    def add(self, coord: np.ndarray, color: np.ndarray) -> None:
        """Fuse points ``coord [N, 3]`` with colours ``color [N, 3]`` (uint8)."""
        self.points_in += len(coord)
        if not len(coord):
            return
        if self.voxel_size == 0:
            self._parts.append((coord.astype(np.float32), color.astype(np.uint8)))
            return
        keys, inverse = _group(self._voxel_keys(coord))  # the batch alone first: far fewer rows after
        m = len(keys)
        sums = np.empty((m, 7))  # [M, 7] coord sum (3), colour sum (3), count (1)
        for c in range(3):
            sums[:, c] = np.bincount(inverse, weights=coord[:, c], minlength=m)
            sums[:, 3 + c] = np.bincount(inverse, weights=color[:, c], minlength=m)
        sums[:, 6] = np.bincount(inverse, minlength=m)
        self._keys, self._sums = self._reduce(np.concatenate([self._keys, keys]), np.concatenate([self._sums, sums]))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(coord [M, 3] float32, color [M, 3] uint8)``: the voxel means, or every point for voxel_size 0."""
        if self.voxel_size == 0:
            if not self._parts:
                return np.empty((0, 3), np.float32), np.empty((0, 3), np.uint8)
            return np.concatenate([p[0] for p in self._parts]), np.concatenate([p[1] for p in self._parts])
        mean = self._sums[:, :6] / self._sums[:, 6:]  # [M, 6]
        return mean[:, :3].astype(np.float32), np.clip(np.round(mean[:, 3:]), 0, 255).astype(np.uint8)

    def _voxel_keys(self, coord: np.ndarray) -> np.ndarray:
        cell = np.floor(coord.astype(np.float64) * (1.0 / self.voxel_size))  # [N, 3] float64
        if not np.isfinite(cell).all() or cell.min() < -_KEY_HALF or cell.max() >= _KEY_HALF:
            raise ValueError(
                f"{self.where}: points reach {np.abs(coord).max():.3g} from the origin, more than "
                f"{_KEY_HALF} voxels of voxel_size={self.voxel_size} (or are not finite); use a larger voxel_size"
            )
        cell = cell.astype(np.int64) + _KEY_HALF  # [N, 3] in [0, 2^21)
        return (cell[:, 0] << (2 * _KEY_BITS)) | (cell[:, 1] << _KEY_BITS) | cell[:, 2]  # [N]

    @staticmethod
    def _reduce(keys: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sum ``rows [N, C]`` over equal keys: ``(unique keys [M], sums [M, C])``."""
        unique, inverse = _group(keys)
        columns = [np.bincount(inverse, weights=rows[:, c], minlength=len(unique)) for c in range(rows.shape[1])]
        return unique, np.stack(columns, axis=1)


# ------------------------------------------------------------------------------------------ chunking


def _hooks(backend_fn: Callable) -> Any:
    """The backend's module (for its optional hooks), or None."""
    return sys.modules.get(getattr(backend_fn, "__module__", "") or "")


def frames_per_chunk(frames: Frames, params: Any, backend_fn: Callable) -> int:
    """Frames per chunk: ``params.chunk_frames``, or what fits ``params.memory_budget`` by the backend's estimate."""
    if params.chunk_frames > 0:
        size = params.chunk_frames
        if size <= params.chunk_overlap:
            raise ValueError(f"chunk_overlap={params.chunk_overlap} must be smaller than chunk_frames={size}")
        return size
    module = _hooks(backend_fn)
    height, width = frames.size
    pixels = getattr(module, "frame_pixels", lambda h, w, _p: h * w)(height, width, params)
    per_frame = float(getattr(module, "BYTES_PER_PIXEL", DEFAULT_BYTES_PER_PIXEL)) * pixels
    size = int(params.memory_budget * GIB // per_frame)
    if size <= params.chunk_overlap:
        raise ValueError(
            f"memory_budget={params.memory_budget} GiB fits {size} frames of {width}x{height} (about "
            f"{per_frame / 2**20:.0f} MiB each for backend {params.backend!r}), not more than "
            f"chunk_overlap={params.chunk_overlap}; raise memory_budget or set chunk_frames"
        )
    return size


def chunk_spans(count: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """``[(start, stop)]`` of consecutive chunks of at most ``size`` frames covering ``range(count)``, neighbours
    sharing exactly ``overlap`` frames; chunk lengths differ by at most one."""
    if count <= size:
        return [(0, count)]
    k = -(-(count - overlap) // (size - overlap))  # fewest chunks: k * size - (k - 1) * overlap >= count
    total = count + (k - 1) * overlap  # frames summed over chunks
    lengths = np.full(k, total // k)
    lengths[: total % k] += 1
    starts = np.concatenate([[0], np.cumsum(lengths - overlap)[:-1]])
    return [(int(a), int(a + n)) for a, n in zip(starts, lengths, strict=True)]


def reconstruct_in_chunks(
    frames: Frames, backend_fn: Callable, params: Any, rng: np.random.Generator
) -> Reconstruction:
    """Run ``backend_fn`` on the whole sequence or on overlapping chunks stitched into chunk 0's world."""
    where = f"Reconstruct({params.backend}) on scene {frames.meta.get('scene', '?')!r}"
    select = getattr(_hooks(backend_fn), "select_frames", None)
    used = np.arange(len(frames)) if select is None else np.asarray(select(len(frames), params), dtype=np.int64)
    sequence = frames if len(used) == len(frames) else frames.subset(used)
    size = frames_per_chunk(sequence, params, backend_fn)
    spans = chunk_spans(len(sequence), size, params.chunk_overlap)
    if len(spans) == 1:
        result = backend_fn(sequence, params, rng)
        result.anchors = None  # only needed for stitching
        result.report = {"chunks": 1, "chunk_frames": size, **result.report}
        result.report.update(stitch_rms=[], stitch_point_rms=[], stitch_scale=[])
    else:
        result = _stitch_chunks(sequence, spans, backend_fn, params, rng, where)
    poses = np.full((len(frames), 4, 4), np.nan)  # [F, 4, 4] every input frame; NaN = not used / registered
    poses[used] = result.poses
    registered = int(np.isfinite(poses).all(axis=(1, 2)).sum())
    result.poses = poses
    result.report.update(frames=len(frames), frames_selected=len(used), frames_registered=registered)
    return result


def _stitch_chunks(
    frames: Frames,
    spans: list[tuple[int, int]],
    backend_fn: Callable,
    params: Any,
    rng: np.random.Generator,
    where: str,
) -> Reconstruction:
    fusion = VoxelFusion(params.voxel_size, where)
    poses = np.full((len(frames), 4, 4), np.nan)  # [F, 4, 4] in chunk 0's world
    overlap = params.chunk_overlap
    previous: tuple[np.ndarray, np.ndarray | None] | None = None  # world anchors of the last chunk's final frames
    intrinsics, reports = None, []
    stitch: dict[str, list] = {"stitch_rms": [], "stitch_point_rms": [], "stitch_scale": []}
    for i, (start, stop) in enumerate(spans):
        part = backend_fn(frames.subset(slice(start, stop)), params, rng)
        anchors = part.anchors  # [n, P, 3] or None
        centres = np.asarray(part.poses, np.float64)[:, :3, 3]  # [n, 3], NaN where not registered
        if previous is None:
            s, r, t = 1.0, np.eye(3), np.zeros(3)
        else:
            current = (centres[:overlap], None if anchors is None else anchors[:overlap])
            s, r, t, facts = _fit_overlap(previous, current, f"{where}: chunk {i} (frames {start}..{stop - 1})")
            for key, value in facts.items():
                stitch[key].append(value)
        coord = transform_points(part.cloud["coord"], s, r, t)
        fusion.add(coord, part.cloud["color"])
        moved = transform_poses(np.asarray(part.poses), s, r, t)  # [n, 4, 4]
        fresh = ~np.isfinite(poses[start:stop]).all(axis=(1, 2))  # shared frames keep the earlier chunk's pose
        poses[start:stop][fresh] = moved[fresh]
        world_anchors = None if anchors is None else transform_points(anchors[-overlap:], s, r, t)
        previous = (moved[-overlap:, :3, 3], world_anchors)
        if intrinsics is None and np.isfinite(part.intrinsics).all():
            intrinsics = np.asarray(part.intrinsics, np.float64)
        reports.append(part.report)
    coord, color = fusion.result()
    report = {"chunks": len(spans), "chunk_frames": max(b - a for a, b in spans), **_merge_reports(reports)}
    report.update(points_after_fusion=len(coord), **stitch)
    cloud = PointCloud({"coord": coord, "color": color})
    return Reconstruction(cloud, poses, np.full((3, 3), np.nan) if intrinsics is None else intrinsics, report)


def _fit_overlap(
    previous: tuple[np.ndarray, np.ndarray | None], current: tuple[np.ndarray, np.ndarray | None], where: str
) -> tuple[float, np.ndarray, np.ndarray, dict[str, float | None]]:
    """Similarity taking the current chunk's overlap anchors onto the previous chunk's (world) ones."""
    (dst_c, dst_p), (src_c, src_p) = previous, current
    both = np.isfinite(src_c).all(1) & np.isfinite(dst_c).all(1)  # [O] centres registered in both chunks
    src, dst = [src_c[both]], [dst_c[both]]
    if src_p is not None and dst_p is not None:
        src_p, dst_p = src_p.reshape(-1, 3), dst_p.reshape(-1, 3)  # [O*P, 3]
        pair = np.isfinite(src_p).all(1) & np.isfinite(dst_p).all(1)
        src.append(src_p[pair].astype(np.float64))
        dst.append(dst_p[pair].astype(np.float64))
    src_all, dst_all = np.concatenate(src), np.concatenate(dst)  # [A, 3]
    if len(src_all) < 3:
        raise ValueError(
            f"{where} shares {int(both.sum())} registered cameras and {len(src_all) - int(both.sum())} points "
            "with the previous chunk, too few to stitch; raise chunk_overlap or chunk_frames"
        )
    try:
        s, r, t, keep = robust_umeyama(src_all, dst_all)
    except ValueError as exc:
        raise ValueError(f"{where}: cannot stitch onto the previous chunk ({exc}); raise chunk_overlap") from exc
    n_c = int(both.sum())
    err = np.linalg.norm(transform_points(src_all, s, r, t) - dst_all, axis=1)  # [A]
    facts = {
        "stitch_rms": float(np.sqrt(np.mean(err[:n_c] ** 2))) if n_c else None,
        "stitch_point_rms": float(np.sqrt(np.mean(err[n_c:][keep[n_c:]] ** 2))) if keep[n_c:].any() else None,
        "stitch_scale": float(s),
    }
    return s, r, t, facts


INTENSIVE = ("mean", "rms", "scale", "error", "ratio", "fraction")  # name parts of facts that are averaged


def _merge_reports(reports: list[dict]) -> dict:
    """Backend facts over chunks: counts summed (shared frames count once per chunk), intensive quantities
    (means, RMS, scales, errors: see ``INTENSIVE``) averaged over chunks, lists (e.g. sfm's models) concatenated
    in chunk order, other values the first chunk's."""
    merged: dict = {}
    seen: dict[str, list] = {}
    for report in reports:
        for key, value in report.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                seen.setdefault(key, []).append(value)
            elif isinstance(value, list):
                merged[key] = [*merged.get(key, []), *value]
            else:
                merged.setdefault(key, value)
    for key, values in seen.items():
        average = any(part in key for part in INTENSIVE)
        merged[key] = float(np.mean(values)) if average else sum(values)
    return merged
