"""Posed RGB-D sequences in the 7-Scenes layout, and ``RGBDFrames``, the value of an ``RGBDFrames`` port.

A sequence folder holds ``frame-XXXXXX.color.{jpg,png}``, ``frame-XXXXXX.depth.png`` (16-bit, millimetres by
default; 0 and 65535 mean no measurement and become 0.0 m), ``frame-XXXXXX.pose.txt`` (4x4 camera-to-world) and
optionally ``camera-intrinsics.txt`` (3x3, in the sequence folder or its parent). Without an intrinsics file the
7-Scenes (Kinect v1) values fx = fy = 585, cx = 320, cy = 240 are used, and ``meta["intrinsics"]`` says so.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from pcdag.graphs.frames import Frames

SPLITS = ("train", "val", "test")
DEFAULT_INTRINSICS = np.array([[585.0, 0.0, 320.0], [0.0, 585.0, 240.0], [0.0, 0.0, 1.0]], np.float32)
INTRINSICS_FILE = "camera-intrinsics.txt"
_COLOR = re.compile(r"^(frame-\d+)\.color\.(jpg|jpeg|png)$")


class RGBDFrames(Frames):
    """Posed colour + depth frames of one sequence sharing one pinhole camera: ``Frames`` with depth, poses
    and intrinsics all present."""

    def validate(self, where: str = "RGB-D frames") -> RGBDFrames:
        missing = [n for n in ("depths", "poses", "intrinsics") if getattr(self, n) is None]
        if missing:
            raise ValueError(f"{where}: RGB-D frames need {', '.join(missing)}")
        super().validate(where)
        return self


def is_sequence(folder: Path) -> bool:
    return folder.is_dir() and any(_COLOR.match(n) for n in os.listdir(folder))


def find_sequences(root: Path) -> list[tuple[str, Path]]:
    """``(split, sequence folder)``: ``root`` itself, its sub-folders (split ``train``), or
    ``root/{train,val,test}/<sequence>``. Reads no images."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"RGB-D root {root.absolute()} does not exist or is not a folder")
    if is_sequence(root):
        return [("train", root)]
    found = [("train", d) for d in sorted(root.iterdir()) if is_sequence(d)]
    for split in SPLITS:
        if (root / split).is_dir():
            found += [(split, d) for d in sorted((root / split).iterdir()) if is_sequence(d)]
    if not found:
        raise FileNotFoundError(f"no frame-XXXXXX.color.jpg sequences in {root} nor in its sub-folders")
    return found


def list_frames(seq: Path) -> list[tuple[str, Path]]:
    """``(frame id, colour file)`` sorted by id; a colour frame without its depth or pose file is an error."""
    seq = Path(seq)
    names = set(os.listdir(seq))
    frames = sorted((m.group(1), seq / n) for n in names if (m := _COLOR.match(n)))
    for fid, _ in frames:
        for kind in ("depth.png", "pose.txt"):
            if f"{fid}.{kind}" not in names:
                raise FileNotFoundError(f"{seq / (fid + '.' + kind)}: missing for colour frame {fid}")
    return frames


def intrinsics_file(seq: Path) -> Path | None:
    for folder in (Path(seq), Path(seq).parent):
        if (folder / INTRINSICS_FILE).is_file():
            return folder / INTRINSICS_FILE
    return None


def read_matrix(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A whitespace-separated float matrix of ``shape`` (float32); errors name the file."""
    try:
        m = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path}: cannot parse a {shape[0]}x{shape[1]} matrix ({exc})") from exc
    if m.shape != shape or not np.isfinite(m).all():
        raise ValueError(f"{path}: expected a finite {shape[0]}x{shape[1]} matrix, got shape {list(m.shape)}")
    return m.astype(np.float32)


def read_depth(path: Path, depth_scale: float) -> np.ndarray:
    """Depth image [H, W] float32 metres: raw 16-bit value / ``depth_scale``; raw 0 and 65535 become 0.0."""
    try:
        with Image.open(path) as im:
            raw = np.asarray(im)  # "I;16" → uint16, "I" → int32
    except OSError as exc:
        raise ValueError(f"{path}: unreadable depth image ({exc})") from exc
    if raw.ndim != 2 or raw.dtype.kind not in "ui" or raw.dtype.itemsize < 2:
        raise ValueError(f"{path}: depth must be a single-channel 16-bit image, got {raw.dtype} {list(raw.shape)}")
    if raw.size and (raw.min() < 0 or raw.max() > 65535):
        raise ValueError(f"{path}: depth values outside 0..65535")
    raw = raw.astype(np.uint16)
    valid = (raw > 0) & (raw < 65535)  # [H, W]
    return np.where(valid, raw.astype(np.float32) / np.float32(depth_scale), np.float32(0.0))


def read_color(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))  # [H, W, 3] uint8
    except OSError as exc:
        raise ValueError(f"{path}: unreadable colour image ({exc})") from exc


def read_pose(path: Path) -> np.ndarray:
    pose = read_matrix(path, (4, 4))
    if not np.allclose(pose[3], [0, 0, 0, 1], atol=1e-4):
        raise ValueError(f"{path}: last row of a camera-to-world pose must be 0 0 0 1, got {pose[3].tolist()}")
    return pose


def read_frames(seq: Path, frames: Sequence[tuple[str, Path]], depth_scale: float = 1000.0) -> RGBDFrames:
    """Read ``frames`` (from ``list_frames``, possibly thinned) of sequence ``seq`` into ``RGBDFrames``.

    Arrays are allocated once from the first frame's size; every frame must match it.
    """
    seq = Path(seq)
    if not frames:
        raise ValueError(f"{seq}: no frames selected")
    f = len(frames)
    h, w = read_color(frames[0][1]).shape[:2]
    colors = np.empty((f, h, w, 3), np.uint8)  # [F, H, W, 3]
    depths = np.empty((f, h, w), np.float32)  # [F, H, W]
    poses = np.empty((f, 4, 4), np.float32)  # [F, 4, 4]
    for i, (fid, color_path) in enumerate(frames):
        color = read_color(color_path)
        depth = read_depth(seq / f"{fid}.depth.png", depth_scale)
        if color.shape[:2] != (h, w) or depth.shape != (h, w):
            raise ValueError(
                f"{seq / fid}: colour {list(color.shape[:2])} or depth {list(depth.shape)} size differs from the "
                f"first frame's {[h, w]}"
            )
        colors[i], depths[i] = color, depth
        poses[i] = read_pose(seq / f"{fid}.pose.txt")
    k_file = intrinsics_file(seq)
    k = read_matrix(k_file, (3, 3)) if k_file else DEFAULT_INTRINSICS.copy()
    return RGBDFrames(
        colors=colors,
        depths=depths,
        poses=poses,
        intrinsics=k,
        frame_ids=[fid for fid, _ in frames],
        meta={"intrinsics": str(k_file) if k_file else "default 7-Scenes (fx=fy=585, cx=320, cy=240)"},
    )
