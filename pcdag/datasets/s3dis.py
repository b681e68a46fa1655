"""S3DIS rooms in the native layout: ``Area_N/<room>/Annotations/<class>_<i>.txt``, lines ``x y z r g b``.

Each annotation file is one object instance. Its class is the file name before the last ``_``; a class outside
the 13 S3DIS classes (e.g. ``stairs``, found in Area 5) gets segment -1 (ignored), not ``clutter``, so that no
label is invented. Plain readers; errors name the file at fault.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

CLASSES = (
    "ceiling", "floor", "wall", "beam", "column", "window", "door",
    "table", "chair", "sofa", "bookcase", "board", "clutter",
)  # fmt: skip
CLASS_ID = {name: i for i, name in enumerate(CLASSES)}

_AREA = re.compile(r"^Area_(\d+)$")


def list_rooms(root: Path) -> list[tuple[int, Path]]:
    """``(area number, room folder)`` for every room with an ``Annotations`` folder, sorted. Reads no points."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"S3DIS root {root.absolute()} does not exist or is not a folder")
    rooms = []
    for area in sorted(root.iterdir()):
        m = _AREA.match(area.name)
        if m and area.is_dir():
            rooms += [(int(m.group(1)), r) for r in sorted(area.iterdir()) if (r / "Annotations").is_dir()]
    if not rooms:
        raise FileNotFoundError(f"S3DIS root {root} holds no Area_N/<room>/Annotations folders")
    return rooms


def annotation_files(room: Path) -> list[Path]:
    """The room's annotation files, sorted by name (the order gives instance ids)."""
    return sorted((Path(room) / "Annotations").glob("*.txt"))


def class_of(file: Path) -> int:
    """Segment id of an annotation file: index in ``CLASSES``, or -1 for an unknown class name."""
    return CLASS_ID.get(Path(file).stem.rsplit("_", 1)[0], -1)


def read_points(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """``coord`` float32 [N, 3] and ``color`` uint8 [N, 3] of one ``x y z r g b`` text file.

    ``np.loadtxt`` (a C parser since numpy 1.23) is the fastest of the plain-numpy options measured here.
    """
    try:
        data = np.loadtxt(file, dtype=np.float64, ndmin=2)  # [N, 6]
    except (ValueError, OSError) as exc:
        raise ValueError(f"{file}: cannot parse 'x y z r g b' lines ({exc})") from exc
    if data.shape[1] != 6 or len(data) == 0:
        raise ValueError(f"{file}: {data.shape[1]} values per line in {len(data)} lines, expected 6 (x y z r g b)")
    if not np.isfinite(data).all():
        raise ValueError(f"{file}: NaN or infinite values")
    rgb = data[:, 3:]  # [N, 3]
    if (rgb < 0).any() or (rgb > 255).any() or (rgb != np.round(rgb)).any():
        raise ValueError(f"{file}: colours must be whole numbers in 0..255")
    return data[:, :3].astype(np.float32), rgb.astype(np.uint8)


def read_room(room: Path) -> dict[str, np.ndarray]:
    """``coord``, ``color``, ``segment``, ``instance`` of one room folder (see ``read_annotations``)."""
    return read_annotations(annotation_files(room), Path(room) / "Annotations")


def read_annotations(files: Sequence[Path], where: Path) -> dict[str, np.ndarray]:
    """``coord``, ``color``, ``segment`` (int16, -1 for unknown classes) and ``instance`` (int32, one id per
    file, in the order given) of a room's annotation files."""
    if not files:
        raise FileNotFoundError(f"{where}: no annotation .txt files")
    parts = [read_points(f) for f in files]
    counts = np.array([len(c) for c, _ in parts])  # [F]
    return {
        "coord": np.concatenate([c for c, _ in parts]),  # [N, 3]
        "color": np.concatenate([rgb for _, rgb in parts]),  # [N, 3]
        "segment": np.repeat(np.array([class_of(f) for f in files], np.int16), counts),  # [N]
        "instance": np.repeat(np.arange(len(files), dtype=np.int32), counts),  # [N]
    }
