"""Shared by the scene sources: split bookkeeping (scans of one room share a split) and cloud wrapping."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.node import SceneRef


def check_rooms(refs: Iterable[SceneRef], where: str) -> None:
    """Raise ``ValueError`` naming the room when scans of one room lie in two splits (train/val leakage)."""
    first: dict[str, SceneRef] = {}
    for ref in refs:
        seen = first.setdefault(ref.room, ref)
        if seen.split != ref.split:
            raise ValueError(
                f"{where}: room {ref.room!r} appears in split {seen.split!r} ({seen.id}) and in split "
                f"{ref.split!r} ({ref.id}); scans of one room must share a split"
            )


def keep_splits(refs: Sequence[SceneRef], splits: Sequence[str], where: str) -> list[SceneRef]:
    """The refs of ``splits``, after checking rooms over all of ``refs``; a requested split with no scene is an
    error naming the splits that do have scenes."""
    check_rooms(refs, where)
    have = sorted({r.split for r in refs})
    empty = [s for s in splits if s not in have]
    if empty:
        raise ValueError(f"{where}: no scenes in split(s) {', '.join(empty)}; splits with scenes: {have or 'none'}")
    return [r for r in refs if r.split in splits]


def scene_cloud(arrays: Mapping[str, np.ndarray], ref: SceneRef, where: str) -> PointCloud:
    """A validated ``PointCloud`` of one loaded scene, with ``meta`` scene / split / room from ``ref``."""
    cloud = PointCloud(arrays, {"scene": ref.id, "split": ref.split, "room": ref.room})
    return cloud.validate(where=where)
