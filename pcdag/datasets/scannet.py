"""ScanNet scans in the Pointcept layout: ``root/<split>/<scan>/{coord,color,normal,segment20,segment40,instance}.npy``.

Plain readers, no graph knowledge. Every problem raises an error that names the file at fault:
``FileNotFoundError`` for missing files or folders, ``ValueError`` for unreadable or malformed arrays.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")
LABEL_FILES = ("segment20", "segment40")
FIELD_FILES = {"coord": "coord", "color": "color", "normal": "normal", "instance": "instance"}

_SCAN_NAME = re.compile(r"^(scene\d{4})_\d{2}$")


def room_of(scan: str) -> str:
    """Room id of a scan: ``scene0000_01`` → ``scene0000``; a name not in that pattern is its own room."""
    m = _SCAN_NAME.match(scan)
    return m.group(1) if m else scan


def list_scans(root: Path, splits: Iterable[str] = SPLITS) -> list[tuple[str, Path]]:
    """``(split, scan folder)`` for every scan of ``splits``, sorted. Reads no arrays.

    Raises ``FileNotFoundError`` naming the path (and the split folders that do exist) when ``root`` or a
    requested split folder is missing.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"ScanNet root {root.absolute()} does not exist or is not a folder")
    found = [s for s in SPLITS if (root / s).is_dir()]
    out: list[tuple[str, Path]] = []
    for split in splits:
        folder = root / split
        if not folder.is_dir():
            raise FileNotFoundError(f"ScanNet split folder {folder} is missing; split folders found: {found or 'none'}")
        scans = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        out += [(split, p) for p in scans]
    return out


def file_names(fields: Iterable[str], labels: str = "segment20") -> dict[str, str]:
    """Field name → ``.npy`` file name for ``coord`` plus ``fields`` (``segment`` reads the ``labels`` file)."""
    names = {"coord": "coord.npy"}
    for f in fields:
        names[f] = f"{labels}.npy" if f == "segment" else f"{FIELD_FILES[f]}.npy"
    return names


def read_npy(path: Path) -> np.ndarray:
    """One ``.npy`` array, refusing pickles; ``ValueError`` naming the file when it is truncated or not ``.npy``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file is missing")
    try:
        with path.open("rb") as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npy array ({exc})") from exc


def _check(path: Path, arr: np.ndarray, kinds: str, trailing: tuple[int, ...], want: str) -> None:
    if arr.ndim != 1 + len(trailing) or tuple(arr.shape[1:]) != trailing:
        shape = "[N" + "".join(f", {t}" for t in trailing) + "]"
        raise ValueError(f"{path}: shape {list(arr.shape)}, expected {shape}")
    if arr.dtype.kind not in kinds:
        raise ValueError(f"{path}: dtype {arr.dtype}, expected {want}")


def _read_field(name: str, path: Path) -> np.ndarray:
    arr = read_npy(path)
    if name == "coord":
        _check(path, arr, "f", (3,), "float32 (float64 is converted)")
        arr = arr.astype(np.float32, copy=False)  # [N, 3]
        if len(arr) == 0:
            raise ValueError(f"{path}: the scan has no points")
        bad = int((~np.isfinite(arr).all(axis=1)).sum())
        if bad:
            raise ValueError(f"{path}: {bad} points have NaN or infinite coordinates")
    elif name == "color":
        _check(path, arr, "u", (3,), "uint8")
        if arr.dtype != np.uint8:
            raise ValueError(f"{path}: dtype {arr.dtype}, expected uint8")
    elif name == "normal":
        _check(path, arr, "f", (3,), "float32 (float64 is converted)")
        arr = arr.astype(np.float32, copy=False)  # [N, 3]
    elif name == "segment":
        _check(path, arr, "iu", (), "a signed integer type")
        arr = arr if arr.dtype.kind == "i" else arr.astype(np.int32)  # [N]
    else:  # instance
        _check(path, arr, "iu", (), "an integer type")
        arr = arr.astype(np.int32, copy=False)  # [N]
    return arr


def read_scan(
    scan: Path, fields: Sequence[str] = ("color", "segment", "instance"), labels: str = "segment20"
) -> dict[str, np.ndarray]:
    """Arrays of one scan: ``coord`` float32 [N, 3] always, plus ``fields`` (color, normal, segment, instance).

    ``coord`` and ``normal`` stored as float64 are converted to float32; ``color`` must be uint8 [N, 3];
    ``segment`` comes from ``<labels>.npy`` and keeps its signed integer dtype; ``instance`` becomes int32.
    """
    scan = Path(scan)
    out: dict[str, np.ndarray] = {}
    for name, file in file_names(fields, labels).items():
        out[name] = _read_field(name, scan / file)
    n = len(out["coord"])
    for name, arr in out.items():
        if len(arr) != n:
            file = file_names([name], labels)[name]
            raise ValueError(f"{scan / file}: {len(arr)} rows but coord.npy has {n} points")
    return out
