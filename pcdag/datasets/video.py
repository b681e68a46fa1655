"""Video files → ``Frames`` with PyAV: probing, frame sampling, resizing, and optional known cameras.

Sampling works on presentation timestamps, read first by demuxing (no decoding): ``skip_seconds`` drops the start,
``fps`` picks the frame nearest to each tick of ``1 / fps`` seconds from the first kept frame, and ``max_frames``
then keeps that many evenly spaced frames (first and last included). Decoding streams through the file and keeps
only the chosen frames, so memory is the size of the output.

Resizing (``pixel_budget > 0``): the largest ``w x h`` with ``w * h <= min(pixel_budget, W * H)`` (never upscaled),
both sides multiples of ``multiple`` and ``h`` the nearest such multiple to ``w * H / W`` (aspect kept to within
one multiple). Intrinsics use OpenCV pixel coordinates (pixel centres at integers) and are scaled accordingly.

Known cameras: a video ``room.mp4`` may have ``room.cameras.npz`` beside it (written by
``pcdag.datasets.roomvideo.write_video``) with ``poses`` [N, 4, 4] camera-to-world, one per video frame, and
``intrinsics`` [3, 3] at the video's size; it is read only when asked. Timestamps are seconds from the first frame.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from pcdag.graphs.frames import Frames

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")
SPLITS = ("train", "val", "test")


def sidecar_path(video: str | os.PathLike) -> Path:
    """``room.mp4`` → ``room.cameras.npz``."""
    p = Path(video)
    return p.with_name(p.stem + ".cameras.npz")


@contextmanager
def _open(path: Path) -> Iterator[tuple[Any, Any]]:
    """(container, first video stream); PyAV errors become ``ValueError`` naming the file."""
    import av

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such video file")
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot open as a video ({exc})") from exc
    try:
        if not container.streams.video:
            raise ValueError(f"{path}: has no video stream")
        yield container, container.streams.video[0]
    except av.error.FFmpegError as exc:
        raise ValueError(f"{path}: cannot decode video ({exc})") from exc
    finally:
        container.close()


def _pts(container: Any, stream: Any) -> np.ndarray:
    """Sorted presentation timestamps [N] int64 (in ``stream.time_base``) of every frame, by demuxing only."""
    pts = [p.pts if p.pts is not None else p.dts for p in container.demux(stream) if p.size]
    return np.sort(np.array([p for p in pts if p is not None], np.int64))


def probe(path: str | os.PathLike) -> dict[str, Any]:
    """``duration`` (s), ``fps``, ``width``, ``height`` and ``frames`` (counted by demuxing) of a video file."""
    path = Path(path)
    with _open(path) as (container, stream):
        pts = _pts(container, stream)
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        width, height = stream.codec_context.width, stream.codec_context.height
    if not len(pts):
        raise ValueError(f"{path}: the video stream has no frames")
    span = float((pts[-1] - pts[0]) * stream.time_base)
    duration = span + (1.0 / fps if fps else 0.0)
    return {"duration": duration, "fps": fps, "width": int(width), "height": int(height), "frames": len(pts)}


def even_indices(n: int, at_most: int) -> np.ndarray:
    """Indices of ``min(n, at_most)`` evenly spaced items of ``n``, first and last included (0 = all)."""
    if at_most <= 0 or n <= at_most:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, at_most)).astype(np.int64))


def sample_frames(times: np.ndarray, fps: float | None, max_frames: int, skip_seconds: float) -> np.ndarray:
    """Indices into sorted ``times`` [N] (seconds from the first frame) of the frames to keep (see module doc)."""
    keep = np.flatnonzero(times >= skip_seconds - 1e-9)
    if not len(keep):
        raise ValueError(f"no frames left after skipping {skip_seconds} s of a {times[-1]:.3f} s video")
    if fps:
        t = times[keep]
        ticks = t[0] + np.arange(int(np.floor((t[-1] - t[0]) * fps + 1e-6)) + 1) / fps  # [T]
        right = np.clip(np.searchsorted(t, ticks), 1, len(t) - 1) if len(t) > 1 else np.zeros(len(ticks), int)
        left = np.maximum(right - 1, 0)
        nearest = np.where(np.abs(t[left] - ticks) <= np.abs(t[right] - ticks), left, right)
        keep = keep[np.unique(nearest)]
    return keep[even_indices(len(keep), max_frames)]


def target_size(width: int, height: int, pixel_budget: int, multiple: int = 1) -> tuple[int, int]:
    """Output (w, h) for a ``width x height`` video (see module doc); ``pixel_budget = 0`` keeps the size."""
    if pixel_budget <= 0:
        return width, height
    m = max(1, multiple)
    budget = min(pixel_budget, width * height)
    w = m * np.arange(1, width // m + 1)  # [K] candidate widths, never wider than the video
    h = m * np.maximum(1, np.minimum(np.round(w * height / (width * m)), height // m))  # nearest, never taller
    ok = (w * h <= budget) & (h <= height)
    if not ok.any():
        raise ValueError(f"a {width}x{height} video has no size within {pixel_budget} px with sides multiples of {m}")
    best = np.flatnonzero(ok)[np.argmax((w * h)[ok])]
    return int(w[best]), int(h[best])


def read_cameras(video: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a video's ``.cameras.npz`` sidecar (no pickle); ``FileNotFoundError`` if it is missing."""
    path = sidecar_path(video)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no camera sidecar for {video}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path}: unreadable camera sidecar ({exc})") from exc


def _known_cameras(video: Path, n_frames: int, index: np.ndarray, src: tuple[int, int], dst: tuple[int, int]):
    """Poses [K, 4, 4] of the kept frames and intrinsics scaled from ``src`` (W, H) to ``dst`` (w, h)."""
    cams = read_cameras(video)
    poses, k = cams.get("poses"), cams.get("intrinsics")
    where = sidecar_path(video)
    if poses is None or k is None or poses.shape != (n_frames, 4, 4) or k.shape != (3, 3):
        got = None if poses is None else list(poses.shape)
        raise ValueError(
            f"{where}: needs poses [{n_frames}, 4, 4] (one per video frame) and intrinsics [3, 3]; got poses {got}"
        )
    sx, sy = dst[0] / src[0], dst[1] / src[1]
    k = k.astype(np.float64)
    scaled = np.array(
        [[k[0, 0] * sx, 0, (k[0, 2] + 0.5) * sx - 0.5], [0, k[1, 1] * sy, (k[1, 2] + 0.5) * sy - 0.5], [0, 0, 1]],
        np.float32,
    )
    return poses[index].astype(np.float32), scaled


def decode(
    path: str | os.PathLike,
    fps: float | None = None,
    max_frames: int = 0,
    pixel_budget: int = 0,
    multiple: int = 1,
    skip_seconds: float = 0.0,
    known_cameras: bool = False,
) -> Frames:
    """Decode the sampled frames of a video file into ``Frames`` (see module doc); frame ids are the frames'
    indices in the video. ``ValueError`` naming the file when it does not decode or nothing is left."""
    path = Path(path)
    with _open(path) as (container, stream):
        pts = _pts(container, stream)
        if not len(pts):
            raise ValueError(f"{path}: the video stream has no frames")
        times = (pts - pts[0]).astype(np.float64) * float(stream.time_base)  # [N] seconds
        src = (stream.codec_context.width, stream.codec_context.height)
        try:
            index = sample_frames(times, fps, max_frames, skip_seconds)
            w, h = target_size(*src, pixel_budget, multiple)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
        colors = np.empty((len(index), h, w, 3), np.uint8)  # [K, h, w, 3]
        slot = {int(p): i for i, p in enumerate(pts[index])}
        found = np.zeros(len(index), bool)
        container.seek(0)
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            i = slot.get(frame.pts if frame.pts is not None else frame.dts)  # same key as ``_pts``
            if i is not None:
                colors[i] = frame.to_ndarray(width=w, height=h, format="rgb24", interpolation="AREA")
                found[i] = True
    if not found.all():
        raise ValueError(f"{path}: {int((~found).sum())} of {len(index)} sampled frames did not decode")
    out = Frames(colors, [f"{i:06d}" for i in index], times[index], meta={"video": str(path), "source_size": list(src)})
    if known_cameras:
        out.poses, out.intrinsics = _known_cameras(path, len(pts), index, src, (w, h))
        out.meta["cameras"] = str(sidecar_path(path))
    return out.validate(where=str(path))
