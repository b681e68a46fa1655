"""``PointCloud``: the runtime value of a ``PointCloud`` port.

A cloud is a set of named per-point arrays of equal length N plus small metadata (scene id, split, room).
It is mutable on purpose: a fused chain of transforms works on one object, with no per-transform dict copies.

Selections are lazy. ``select(idx)`` gathers only the fields already touched by the chain and composes the
index for the rest, so a chain ``GridSample → crop → dropout`` gathers colour, labels, normals once, at the end
(``materialise``), instead of once per transform.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from pcdag.graphs.ports import field_spec


class CloudError(ValueError):
    """A point cloud breaks a field contract (shape, dtype, NaN, empty)."""


class PointCloud:
    """Per-point fields of one scene. ``cloud["coord"]`` is a float32 ``[N, 3]`` array."""

    __slots__ = ("_base", "_index", "_live", "meta")

    def __init__(self, fields: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None):
        self._base: dict[str, np.ndarray] = dict(fields)  # arrays at the base resolution
        self._index: np.ndarray | None = None  # pending gather from base to current points
        self._live: dict[str, np.ndarray] = {}  # arrays already at the current resolution
        self.meta: dict[str, Any] = dict(meta or {})
        if "coord" not in self._base:
            raise CloudError("a point cloud needs a 'coord' field")

    # -- mapping interface ------------------------------------------------------------------------
    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._live:
            arr = self._base[name]  # KeyError names the missing field
            self._live[name] = arr if self._index is None else arr[self._index]
            del self._base[name]
        return self._live[name]

    def __setitem__(self, name: str, value: np.ndarray) -> None:
        if len(value) != len(self):
            raise CloudError(f"field {name!r} has {len(value)} rows but the cloud has {len(self)} points")
        self._base.pop(name, None)
        self._live[name] = value

    def __delitem__(self, name: str) -> None:
        if name == "coord":
            raise CloudError("'coord' cannot be removed from a point cloud")
        self._base.pop(name, None)
        self._live.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._live or name in self._base

    def __iter__(self) -> Iterator[str]:
        # a snapshot of the names: reading a field while iterating moves it from ``_base`` to ``_live``
        yield from [*self._live, *self._base]

    def __len__(self) -> int:
        if "coord" in self._live:
            return len(self._live["coord"])
        return len(self._index) if self._index is not None else len(self._base["coord"])

    def keys(self) -> list[str]:
        return list(self)

    def get(self, name: str, default: Any = None) -> Any:
        if name in self:
            return self[name]
        return default

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(self)

    # -- selections --------------------------------------------------------------------------------
    def select(self, index: np.ndarray) -> PointCloud:
        """Keep the points ``index`` (an integer array or boolean mask), in place; returns self."""
        index = np.asarray(index)
        if index.dtype == bool:
            if len(index) != len(self):
                raise CloudError(f"boolean mask of length {len(index)} for a cloud of {len(self)} points")
            index = np.flatnonzero(index)
        n_before = len(self)
        for name, arr in self._live.items():
            self._live[name] = arr[index]
        if self._base:
            self._index = index if self._index is None else self._index[index]
        inverse = self.meta.get("inverse")
        if inverse is not None:  # keep "original point -> current point" true; dropped points map to -1
            remap = np.full(n_before, -1, dtype=np.int64)
            remap[index] = np.arange(len(index))
            self.meta["inverse"] = np.where(inverse >= 0, remap[np.maximum(inverse, 0)], -1)
        return self

    def materialise(self) -> dict[str, np.ndarray]:
        """Gather every pending field; returns the plain ``{name: array}`` dict (no copies beyond the gather)."""
        for name in list(self._base):
            self[name]
        self._index = None
        return self._live

    def copy(self) -> PointCloud:
        """A deep copy (only needed when one cloud feeds several independent branches)."""
        fields = {k: np.array(v, copy=True) for k, v in self.materialise().items()}
        return PointCloud(fields, copy.deepcopy(self.meta))

    def require_points(self, who: object) -> int:
        """The number of points; a ``CloudError`` naming ``who`` (a node) and the scene when there are none."""
        n = len(self)
        if n == 0:
            raise CloudError(f"{who!r}: scene {self.meta.get('scene', '?')!r} has no points")
        return n

    # -- contracts ---------------------------------------------------------------------------------
    def validate(self, where: str = "point cloud") -> PointCloud:
        """Check field contracts and finite, non-empty coordinates; raise ``CloudError`` naming ``where``."""
        n = len(self)
        problems = []
        if n == 0:
            problems.append("it has no points")
        for name in list(self):
            arr = self[name]
            spec = field_spec(name)
            if spec is not None:
                msg = spec.check(arr, n)
            elif not isinstance(arr, np.ndarray) or len(arr) != n:
                msg = f"extra field {name!r} must be an array with {n} rows"
            else:
                msg = None
            if msg:
                problems.append(msg)
        coord = self["coord"]
        if coord.size and not np.isfinite(coord).all():
            bad = int((~np.isfinite(coord).all(axis=1)).sum())
            problems.append(f"{bad} points have NaN or infinite coordinates")
        if problems:
            raise CloudError(f"{where}: " + "; ".join(problems))
        return self

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}{list(np.shape(self[k]))}:{np.asarray(self[k]).dtype}" for k in sorted(self))
        sid = self.meta.get("scene", "?")
        return f"PointCloud(scene={sid!r}, n={len(self)}, {parts})"
