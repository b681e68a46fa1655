"""PLY point clouds: a folder reader (``root/*.ply`` = train, ``root/<split>/*.ply`` = that split), a vertex
reader mapping PLY properties to pcdag fields, and an atomic binary writer.

Property names: ``x y z`` → coord, ``red green blue`` → color, ``nx ny nz`` → normal, ``label`` or
``segment`` → segment, ``instance`` → instance. Only the ``vertex`` element is read (faces are ignored).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement, PlyParseError

from pcdag.atomic import atomic_write_with

SPLITS = ("train", "val", "test")
PROPERTIES = {
    "coord": ("x", "y", "z"),
    "color": ("red", "green", "blue"),
    "normal": ("nx", "ny", "nz"),
    "segment": ("segment",),
    "instance": ("instance",),
}


def list_ply(root: Path) -> list[tuple[str, Path]]:
    """``(split, file)`` for ``root/*.ply`` (split ``train``) and ``root/{train,val,test}/*.ply``, sorted.

    ``root`` may also be a single ``.ply`` file (split ``train``). Reads no points.
    """
    root = Path(root)
    if root.is_file():
        return [("train", root)]
    if not root.is_dir():
        raise FileNotFoundError(f"PLY root {root.absolute()} does not exist")
    found = [("train", p) for p in sorted(root.glob("*.ply"))]
    for split in SPLITS:
        found += [(split, p) for p in sorted((root / split).glob("*.ply"))]
    if not found:
        raise FileNotFoundError(f"no .ply files in {root} nor in its {'/, '.join(SPLITS)}/ folders")
    return found


def _vertex(path: Path):
    try:
        data = PlyData.read(str(path))
        vertex = data["vertex"]
        return vertex.data  # structured array [N]
    except KeyError:
        raise ValueError(f"{path}: PLY file has no 'vertex' element") from None
    except (PlyParseError, ValueError, OSError, EOFError, TypeError, IndexError) as exc:
        raise ValueError(f"{path}: unreadable or corrupt PLY file ({type(exc).__name__}: {exc})") from exc


def _stack(vertex: np.ndarray, names: Sequence[str]) -> np.ndarray:
    return np.stack([vertex[n] for n in names], axis=-1) if len(names) > 1 else vertex[names[0]]


def read_ply(path: Path, fields: Sequence[str] = ("color",)) -> dict[str, np.ndarray]:
    """``coord`` float32 [N, 3] plus the requested ``fields`` of one PLY file.

    A requested field whose properties the file lacks is a ``ValueError`` naming the file and the properties it
    has. ``color`` must be stored as uchar; ``segment``/``instance`` must be integers (read as int32).
    """
    path = Path(path)
    vertex = _vertex(path)
    have = vertex.dtype.names or ()
    out: dict[str, np.ndarray] = {}
    for field in ("coord", *fields):
        names = PROPERTIES[field]
        if field == "segment" and "segment" not in have:
            names = ("label",)
        if not all(n in have for n in names):
            raise ValueError(
                f"{path}: no {'/'.join(PROPERTIES[field] + (('label',) if field == 'segment' else ()))} "
                f"propert{'ies' if len(names) > 1 else 'y'} for field {field!r}; the file has {', '.join(have)}"
            )
        arr = _stack(vertex, names)  # [N, 3] or [N]
        kind = arr.dtype.kind
        if field in ("coord", "normal") and kind == "f":
            out[field] = arr.astype(np.float32)
        elif field == "color" and arr.dtype == np.uint8:
            out[field] = np.ascontiguousarray(arr)
        elif field in ("segment", "instance") and kind in "iu":
            out[field] = arr.astype(np.int32)
        else:
            raise ValueError(f"{path}: properties {', '.join(names)} have type {arr.dtype}, unusable for {field!r}")
    return out


def _columns(name: str, arr: np.ndarray) -> list[tuple[str, np.ndarray]]:
    props = PROPERTIES.get(name)
    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype.kind in "iu" and arr.dtype.itemsize == 8:  # PLY has no 64-bit integers
        small = np.dtype(arr.dtype.kind + "4")
        info = np.iinfo(small)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise ValueError(f"field {name!r} holds values beyond {small}; PLY has no 64-bit integers")
        arr = arr.astype(small)
    if arr.ndim == 1:
        return [(props[0] if props else name, arr)]
    if arr.ndim != 2:
        raise ValueError(f"field {name!r} has shape {list(arr.shape)}; PLY holds [N] or [N, K] fields only")
    names = props if props and len(props) == arr.shape[1] else [f"{name}_{k}" for k in range(arr.shape[1])]
    return [(n, arr[:, k]) for k, n in enumerate(names)]


def write_ply(path: Path, cloud: Mapping[str, np.ndarray]) -> None:
    """Write per-point arrays as a binary little-endian PLY ``vertex`` element, atomically (temp file, rename).

    Known fields get the standard property names (``x y z``, ``red green blue``, ``nx ny nz``, ``segment``,
    ``instance``); any other [N] field keeps its name and an [N, K] field becomes ``<name>_0 .. <name>_{K-1}``.
    """
    path = Path(path)
    cols = [c for name, arr in cloud.items() for c in _columns(name, arr)]
    n = len(cloud["coord"])
    if any(len(a) != n for _, a in cols):
        raise ValueError(f"{path}: fields have different numbers of rows; cannot write PLY")
    vertex = np.empty(n, dtype=[(name, a.dtype.newbyteorder("<")) for name, a in cols])  # [N] structured
    for name, a in cols:
        vertex[name] = a
    ply = PlyData([PlyElement.describe(vertex, "vertex")], text=False, byte_order="<")
    atomic_write_with(path, ply.write)
