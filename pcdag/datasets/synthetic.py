"""Synthetic indoor rooms: a floor, four walls (no ceiling) and box furniture, sampled as a labelled point cloud.

Points are sampled uniformly over the visible surfaces (proportionally to area) with 5 mm Gaussian noise. Labels
follow ScanNet-20 (wall 0, floor 1, cabinet 2, bed 3, chair 4, sofa 5, table 6, bookshelf 9, desk 12). The floor
and each wall are instances of their own, like in ScanNet's Pointcept files: instance 0 is the floor, 1..4 the
walls, 5.. the furniture. Normals are the true surface normals: into the room for floor and walls, outward for
furniture. The room is centred on x = y = 0 with the floor at z = 0.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

SCANNET20 = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink", "bathtub",
    "otherfurniture",
)  # fmt: skip
NYU40_OF_SCANNET20 = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39], np.int16)
# class id: (smallest [x, y, z] size, largest size) in metres
FURNITURE = {
    2: ((0.4, 0.35, 0.8), (1.2, 0.6, 2.0)),  # cabinet
    3: ((1.9, 0.9, 0.4), (2.2, 1.8, 0.6)),  # bed
    4: ((0.4, 0.4, 0.45), (0.6, 0.6, 0.9)),  # chair
    5: ((1.4, 0.8, 0.7), (2.4, 1.0, 0.9)),  # sofa
    6: ((0.8, 0.6, 0.7), (1.8, 1.0, 0.8)),  # table
    9: ((0.6, 0.3, 1.2), (1.2, 0.4, 2.0)),  # bookshelf
    12: ((1.0, 0.5, 0.7), (1.6, 0.8, 0.8)),  # desk
}
BASE_COLOR = {0: (200, 200, 190), 1: (125, 95, 65), 2: (150, 110, 70), 3: (185, 185, 220), 4: (60, 60, 65),
              5: (125, 45, 45), 6: (170, 130, 90), 9: (100, 70, 40), 12: (160, 160, 160)}  # fmt: skip
NOISE_M = 0.005


def _rect(o, u, v, n) -> np.ndarray:
    return np.array([o, u, v, n], np.float64)  # [4, 3]: origin, edge u, edge v, unit normal


def _room_rects(lx: float, ly: float, h: float) -> np.ndarray:
    x0, y0 = -lx / 2, -ly / 2
    return np.stack([
        _rect((x0, y0, 0), (lx, 0, 0), (0, ly, 0), (0, 0, 1)),  # floor
        _rect((x0, y0, 0), (lx, 0, 0), (0, 0, h), (0, 1, 0)),  # wall y = -ly/2
        _rect((x0, -y0, 0), (lx, 0, 0), (0, 0, h), (0, -1, 0)),  # wall y = +ly/2
        _rect((x0, y0, 0), (0, ly, 0), (0, 0, h), (1, 0, 0)),  # wall x = -lx/2
        _rect((-x0, y0, 0), (0, ly, 0), (0, 0, h), (-1, 0, 0)),  # wall x = +lx/2
    ])  # fmt: skip  # [5, 4, 3]


def _box_rects(cx: float, cy: float, size: np.ndarray, yaw: float) -> np.ndarray:
    """Top and four sides of a box resting on the floor (the bottom is hidden)."""
    ex, ey, ez = np.array([np.cos(yaw), np.sin(yaw), 0.0]), np.array([-np.sin(yaw), np.cos(yaw), 0.0]), np.eye(3)[2]
    a, b, h = size[0] / 2, size[1] / 2, size[2]  # half length, half width, height
    c = np.array([cx, cy, 0.0])
    return np.stack([
        _rect(c - a * ex - b * ey + h * ez, 2 * a * ex, 2 * b * ey, ez),  # top
        _rect(c + a * ex - b * ey, 2 * b * ey, h * ez, ex),  # +x side
        _rect(c - a * ex - b * ey, 2 * b * ey, h * ez, -ex),  # -x side
        _rect(c - a * ex + b * ey, 2 * a * ex, h * ez, ey),  # +y side
        _rect(c - a * ex - b * ey, 2 * a * ex, h * ez, -ey),  # -y side
    ])  # fmt: skip  # [5, 4, 3]


def _place_furniture(rng: np.random.Generator, lx: float, ly: float, count: int) -> list[tuple[int, np.ndarray]]:
    """Up to ``count`` non-overlapping boxes (by bounding circle) inside the room; a box that finds no free spot
    in 30 tries is left out."""
    kinds = np.array(list(FURNITURE))
    placed: list[tuple[float, float, float]] = []
    out = []
    for kind in rng.choice(kinds, size=count):
        lo, hi = (np.array(s) for s in FURNITURE[int(kind)])
        size = rng.uniform(lo, hi)  # [3]
        yaw = rng.choice([0.0, np.pi / 2]) if rng.random() < 0.5 else rng.uniform(0, np.pi)
        r = float(np.hypot(size[0], size[1]) / 2)
        if 2 * r + 0.1 > min(lx, ly):
            continue
        for _ in range(30):
            cx, cy = rng.uniform(-1, 1, 2) * (lx / 2 - r - 0.05, ly / 2 - r - 0.05)
            if all(np.hypot(cx - px, cy - py) > r + pr for px, py, pr in placed):
                placed.append((cx, cy, r))
                out.append((int(kind), _box_rects(cx, cy, size, yaw)))
                break
    return out


def make_room(
    rng: np.random.Generator, n_points: int = 20000, n_objects: tuple[int, int] = (3, 8)
) -> dict[str, np.ndarray]:
    """One random room as ``coord`` float32 [N, 3], ``color`` uint8, ``normal`` float32, ``segment`` int16
    (ScanNet-20) and ``instance`` int32. Room 3–8 m × 3–7 m, walls 2.4–3 m high; ``n_objects`` = [min, max]
    furniture boxes to try (fewer if they do not fit)."""
    if n_points < 1:
        raise ValueError(f"make_room: n_points = {n_points} must be at least 1")
    if not 0 <= n_objects[0] <= n_objects[1]:
        raise ValueError(f"make_room: n_objects = {n_objects} must be [min, max] with 0 <= min <= max")
    lx, ly, h = rng.uniform(3, 8), rng.uniform(3, 7), rng.uniform(2.4, 3.0)
    furniture = _place_furniture(rng, lx, ly, int(rng.integers(n_objects[0], n_objects[1] + 1)))
    rects = np.concatenate([_room_rects(lx, ly, h)] + [r for _, r in furniture])  # [R, 4, 3]
    seg = np.array([1, 0, 0, 0, 0] + [k for k, r in furniture for _ in r], np.int16)  # [R]
    inst = np.array([0, 1, 2, 3, 4] + [5 + i for i, (_, r) in enumerate(furniture) for _ in r], np.int32)  # [R]
    base = np.array([BASE_COLOR[int(s)] for s in seg], np.float64)  # [R, 3]
    base += rng.normal(0, 12, (inst.max() + 1, 3))[inst]  # one tint per instance
    area = np.linalg.norm(rects[:, 1], axis=1) * np.linalg.norm(rects[:, 2], axis=1)  # [R]
    face = rng.choice(len(rects), size=n_points, p=area / area.sum())  # [N]
    st = rng.random((n_points, 2))  # [N, 2]
    o, u, v, n = (rects[face, k] for k in range(4))  # each [N, 3]
    coord = o + st[:, :1] * u + st[:, 1:] * v + rng.normal(0, NOISE_M, (n_points, 3))  # [N, 3]
    color = np.clip(base[face] + rng.normal(0, 8, (n_points, 3)), 0, 255)  # [N, 3]
    return {
        "coord": coord.astype(np.float32),
        "color": np.round(color).astype(np.uint8),
        "normal": n.astype(np.float32),
        "segment": seg[face],
        "instance": inst[face],
    }


def _save_npy(path: Path, arr: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jitter(rng: np.random.Generator, coord: np.ndarray) -> np.ndarray:
    """A small rigid motion: yaw within ±3°, shift within ±10 cm in x, y and ±1 cm in z."""
    t = np.radians(rng.uniform(-3, 3))
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])  # [3, 3]
    shift = rng.uniform(-1, 1, 3) * (0.1, 0.1, 0.01)  # [3]
    return (coord @ rot.T + shift).astype(np.float32)  # [N, 3]


def write_scannet_layout(
    root: Path, n_rooms: int, scans_per_room: int = 1, n_points: int = 20000, seed: int = 0, val_rooms: int = 0
) -> list[Path]:
    """Write synthetic rooms in the Pointcept ScanNet layout ``root/<split>/sceneRRRR_SS/*.npy`` (coord, color,
    segment20, segment40, instance; no normal). The last ``val_rooms`` rooms go to ``val/``. Each scan of a room
    is a different random subsample of the same room, moved by a small rigid jitter. Returns the scan folders."""
    if not (1 <= n_rooms <= 10000 and 1 <= scans_per_room <= 100 and 0 <= val_rooms <= n_rooms and n_points >= 1):
        raise ValueError(
            f"write_scannet_layout: need 1 <= n_rooms <= 10000, 1 <= scans_per_room <= 100, "
            f"0 <= val_rooms <= n_rooms, n_points >= 1; got {n_rooms}, {scans_per_room}, {val_rooms}, {n_points}"
        )
    out = []
    for r in range(n_rooms):
        room = make_room(np.random.default_rng([seed, r]), n_points=2 * n_points)
        split = "val" if r >= n_rooms - val_rooms else "train"
        for s in range(scans_per_room):
            rng = np.random.default_rng([seed, r, s + 1])
            idx = rng.choice(2 * n_points, size=n_points, replace=False)  # [n]
            seg = room["segment"][idx]
            arrays = {
                "coord": _jitter(rng, room["coord"][idx]),
                "color": room["color"][idx],
                "segment20": seg,
                "segment40": NYU40_OF_SCANNET20[seg],
                "instance": room["instance"][idx],
            }
            folder = Path(root) / split / f"scene{r:04d}_{s:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for name, arr in arrays.items():
                _save_npy(folder / f"{name}.npy", arr)
            out.append(folder)
    return out
