"""Point-cloud files of new data (``pcdag extract``): a PLY, ``.npy``, ``.npz`` or Pointcept scene folder ->
``PointCloud`` (``coord`` float32, optional ``color`` uint8 and ``normal``), checked, errors naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pcdag.datasets.ply import PROPERTIES, read_ply
from pcdag.datasets.scannet import read_npy, read_scan
from pcdag.graphs.cloud import PointCloud

SUFFIXES = (".ply", ".npy", ".npz")
_HEADER_LIMIT = 1 << 16  # bytes of a PLY header read to list its properties


def _ply_properties(path: Path) -> set[str]:
    """Names of the ``vertex`` element's properties, from the PLY header only."""
    with path.open("rb") as f:
        head = f.read(_HEADER_LIMIT)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise ValueError(f"{path}: not a PLY file (no 'ply' magic or no 'end_header' in the first 64 KiB)")
    names, element = set(), None
    for line in head[:end].decode("ascii", errors="replace").splitlines():
        words = line.split()
        if words[:1] == ["element"] and len(words) > 1:
            element = words[1]
        elif words[:1] == ["property"] and element == "vertex" and len(words) > 2:
            names.add(words[-1])
    return names


def _read_ply_file(path: Path) -> dict[str, np.ndarray]:
    have = _ply_properties(path)
    fields = [f for f in ("color", "normal") if set(PROPERTIES[f]) <= have]
    return read_ply(path, fields)


def _colour_uint8(arr: np.ndarray, where: str) -> np.ndarray:
    """Colours as uint8 0..255: float values within 0..1 are scaled by 255, others must already lie in 0..255."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{where}: colours have dtype {arr.dtype}, expected uint8 or numbers in 0..255")
    values = arr.astype(np.float64)  # [N, 3]
    if not np.isfinite(values).all() or (values.size and (values.min() < 0 or values.max() > 255)):
        raise ValueError(f"{where}: colours must be finite and lie in 0..255 (or 0..1 as floats)")
    if arr.dtype.kind == "f" and values.size and values.max() <= 1.0:
        values = values * 255.0
    return np.round(values).astype(np.uint8)


def _read_npy_file(path: Path) -> dict[str, np.ndarray]:
    arr = read_npy(path)
    if arr.ndim != 2 or arr.shape[1] not in (3, 6):
        raise ValueError(f"{path}: shape {list(arr.shape)}, expected [N, 3] coordinates or [N, 6] xyz + rgb")
    out = {"coord": arr[:, :3]}
    if arr.shape[1] == 6:
        out["color"] = _colour_uint8(arr[:, 3:], f"{path} (columns 3..5)")
    return out


def _read_npz_file(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ("coord", "color", "normal") if k in npz.files}
            found = list(npz.files)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npz archive ({exc})") from exc
    if "coord" not in arrays:
        raise ValueError(f"{path}: no 'coord' array (it holds {', '.join(found) or 'nothing'})")
    if "color" in arrays:
        arrays["color"] = _colour_uint8(arrays["color"], f"{path}:color")
    return arrays


def _read_folder(path: Path) -> dict[str, np.ndarray]:
    if not (path / "coord.npy").is_file():
        raise FileNotFoundError(f"{path}: a Pointcept scene folder needs coord.npy (optional color.npy, normal.npy)")
    return read_scan(path, [f for f in ("color", "normal") if (path / f"{f}.npy").is_file()])


def _checked(fields: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """Shapes, dtypes and finite coordinates of what a reader returned; ``ValueError`` naming ``where``."""
    coord = fields["coord"]
    if coord.ndim != 2 or coord.shape[1] != 3 or coord.dtype.kind not in "fiu":
        shape = f"{list(coord.shape)} ({coord.dtype})"
        raise ValueError(f"{where}: coordinates have shape {shape}, expected [N, 3] numbers")
    if len(coord) == 0:
        raise ValueError(f"{where}: the file holds no points")
    bad = int((~np.isfinite(coord).all(axis=1)).sum())
    if bad:
        raise ValueError(f"{where}: {bad} points have NaN or infinite coordinates")
    out = {"coord": np.ascontiguousarray(coord, dtype=np.float32)}
    for name in ("color", "normal"):
        if name in fields:
            arr = fields[name]
            if arr.shape != (len(coord), 3):
                raise ValueError(f"{where}: {name} has shape {list(arr.shape)}, expected [{len(coord)}, 3]")
            if name == "normal":
                if arr.dtype.kind != "f" or not np.isfinite(arr).all():
                    raise ValueError(f"{where}: normals must be finite floats, got {arr.dtype}")
                arr = arr.astype(np.float32, copy=False)
            out[name] = np.ascontiguousarray(arr)
    return out


def read_points(path: str | Path) -> PointCloud:
    """A ``PointCloud`` (``coord`` float32, optional ``color`` uint8 and ``normal``) from ``path``: a PLY (x y z,
    optional red green blue as uchar, nx ny nz), a ``.npy`` ([N, 3] xyz or [N, 6] xyz + rgb), a ``.npz`` (arrays
    ``coord``, optional ``color``, ``normal``) or a Pointcept scene folder (coord.npy, optional color.npy,
    normal.npy). Float colours within 0..1 are scaled to 0..255."""
    path = Path(path)
    if path.is_dir():
        fields = _read_folder(path)
    elif not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    elif path.suffix.lower() == ".ply":
        fields = _read_ply_file(path)
    elif path.suffix.lower() == ".npy":
        fields = _read_npy_file(path)
    elif path.suffix.lower() == ".npz":
        fields = _read_npz_file(path)
    else:
        raise ValueError(
            f"{path}: unknown format {path.suffix!r}; use {', '.join(SUFFIXES)} or a Pointcept scene folder"
        )
    cloud = PointCloud(_checked(fields, str(path)), {"scene": path.stem if path.is_file() else path.name})
    cloud.meta["path"] = str(path)
    return cloud.validate(str(path))
