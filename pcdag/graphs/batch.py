"""What flows through the training step: batches of points on the device, views of scenes, encoded features.

Batches follow the Pointcept convention: per-point tensors of all samples concatenated along dim 0 and
``offset[i]`` = number of points in samples ``0..i`` (the end of sample ``i``).

    ViewSample      one scene's views, numpy, made in a loader worker (``MultiViewGenerator``)
    MultiViewBatch  the collated views of several scenes (port type ``MultiViewBatch``)
    PointBatch      one kind of view (all global or all local views), concatenated
    Encoded         a backbone's per-point output for a ``PointBatch`` (port type ``Features``)

View order is scene-major: with ``n`` views per scene, sample ``s * n + v`` is view ``v`` of scene ``s``.

Scene-local ids: a loader node may number things per scene in per-point int64 arrays of its views (-1 = none),
e.g. the overlap segments 0..P-1 of a scene shared by its two views, and declare them with their count in
``ViewSample.meta["scene_ids"]`` (``{name: count}``). ``collate_views`` shifts each scene's ids by the counts of
the scenes before it, so they are unique in the batch, and records the cumulative ends per scene in
``MultiViewBatch.id_ends[name]`` (ids of scene ``s`` lie in ``id_ends[s-1]..id_ends[s]-1``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

if TYPE_CHECKING:
    import torch

VIEW_KINDS = ("global", "local")


def batch_index(offset: torch.Tensor, n: int | None = None) -> torch.Tensor:
    """``[N]`` sample index of every point from cumulative ``offset`` ``[B]``; pass ``n`` (= N) when known, which
    spares a device-to-host read of the total (a GPU sync)."""
    import torch

    counts = torch.diff(offset, prepend=offset.new_zeros(1))
    return torch.repeat_interleave(torch.arange(len(offset), device=offset.device), counts, output_size=n)


@attrs.define(eq=False)
class PointBatch:
    """Samples (views) concatenated along dim 0."""

    coord: torch.Tensor  # [N, 3] float32, augmented xyz (m)
    feat: torch.Tensor  # [N, C] float32, input features
    offset: torch.Tensor  # [B] int64, cumulative point counts
    origin_coord: torch.Tensor | None = None  # [N, 3] float32, xyz before view augmentation (for matching)
    grid_coord: torch.Tensor | None = None  # [N, 3] int, voxel coordinates; None: the backbone computes them
    mask: torch.Tensor | None = None  # [N] bool, True = masked (its stem output is replaced by the mask token)
    extra: dict[str, torch.Tensor] = attrs.field(factory=dict)  # other per-point tensors, [N, ...]

    def __len__(self) -> int:
        return int(self.coord.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.offset.shape[0])

    @property
    def batch(self) -> torch.Tensor:
        """``[N]`` int64 sample index of every point."""
        return batch_index(self.offset, len(self))

    @property
    def counts(self) -> torch.Tensor:
        """``[B]`` points per sample."""
        import torch

        return torch.diff(self.offset, prepend=self.offset.new_zeros(1))

    def replace(self, **changes: Any) -> PointBatch:
        """A shallow copy with some tensors replaced (never modifies ``self``)."""
        return attrs.evolve(self, **changes)

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> PointBatch:
        """A copy with ``fn`` applied to every tensor (fields left None stay None)."""
        tensors = {f.name: getattr(self, f.name) for f in attrs.fields(PointBatch) if f.name != "extra"}
        return PointBatch(
            **{k: None if t is None else fn(t) for k, t in tensors.items()},
            extra={k: fn(v) for k, v in self.extra.items()},
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PointBatch:
        return self.map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> PointBatch:
        import torch

        return self.map(torch.Tensor.pin_memory)


@attrs.define(eq=False)
class MultiViewBatch:
    """The views of ``len(scenes)`` scenes: ``n_global`` global and ``n_local`` local views per scene."""

    global_views: PointBatch  # n_scenes * n_global samples, scene-major
    local_views: PointBatch | None  # n_scenes * n_local samples, scene-major (None when n_local == 0)
    scenes: tuple[str, ...]
    n_global: int
    n_local: int
    id_ends: dict[str, tuple[int, ...]] = attrs.field(factory=dict)  # scene-local ids: cumulative ends per scene

    def id_count(self, name: str) -> int:
        """Total of the scene-local ids ``name`` in the batch; KeyError naming the ids the batch has."""
        if name not in self.id_ends:
            known = ", ".join(sorted(self.id_ends)) or "none"
            raise KeyError(f"the batch carries no scene-local ids {name!r} (it has {known}); see ViewSample.meta")
        ends = self.id_ends[name]
        return ends[-1] if ends else 0

    def views(self, kind: str) -> PointBatch:
        if kind == "global":
            return self.global_views
        if kind == "local":
            if self.local_views is None:
                raise ValueError("this batch has no local views (the view generator made n_local = 0)")
            return self.local_views
        raise ValueError(f"unknown view kind {kind!r}; use one of {', '.join(VIEW_KINDS)}")

    def per_scene(self, kind: str) -> int:
        return self.n_global if kind == "global" else self.n_local

    def replace(self, **changes: Any) -> MultiViewBatch:
        return attrs.evolve(self, **changes)

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> MultiViewBatch:
        """A copy with ``fn`` applied to every tensor of both kinds of view."""
        local = None if self.local_views is None else self.local_views.map(fn)
        return attrs.evolve(self, global_views=self.global_views.map(fn), local_views=local)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MultiViewBatch:
        return self.map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> MultiViewBatch:
        import torch

        return self.map(torch.Tensor.pin_memory)

    @property
    def n_points(self) -> int:
        return len(self.global_views) + (0 if self.local_views is None else len(self.local_views))


@attrs.define(eq=False)
class ViewSample:
    """One scene's views as made in a loader worker: per view a dict of numpy arrays with at least
    ``coord`` [n, 3] float32, ``origin_coord`` [n, 3] float32 and ``feat`` [n, C] float32."""

    scene: str
    global_views: list[dict[str, np.ndarray]]
    local_views: list[dict[str, np.ndarray]]
    meta: dict[str, Any] = attrs.field(factory=dict)


_BATCH_FIELDS = ("coord", "feat", "origin_coord", "grid_coord", "mask")


def collate_points(views: Sequence[dict[str, np.ndarray]], where: str = "") -> PointBatch:
    """Concatenate views (dicts of numpy arrays) into one ``PointBatch``; all views carry the same keys."""
    import torch

    if not views:
        raise ValueError(f"no views to collate{where}")
    keys = sorted(views[0])
    for v in views[1:]:
        if sorted(v) != keys:
            raise ValueError(f"views of one batch carry different arrays{where}: {keys} vs {sorted(v)}")
    for need in ("coord", "feat"):
        if need not in keys:
            raise ValueError(f"a view has no {need!r}{where}; it has {', '.join(keys)}")
    cat = {k: torch.from_numpy(np.concatenate([np.asarray(v[k]) for v in views])) for k in keys}
    counts = torch.tensor([len(v["coord"]) for v in views], dtype=torch.int64)
    return PointBatch(
        offset=torch.cumsum(counts, 0),
        **{k: cat.pop(k) for k in _BATCH_FIELDS if k in cat},
        extra=cat,
    )


def collate_views(samples: Sequence[ViewSample]) -> MultiViewBatch:
    """Collate the views of several scenes (scene-major order) into one ``MultiViewBatch``."""
    if not samples:
        raise ValueError("collate_views got no samples")
    n_global, n_local = len(samples[0].global_views), len(samples[0].local_views)
    for s in samples:
        if (len(s.global_views), len(s.local_views)) != (n_global, n_local):
            raise ValueError(
                f"scene {s.scene} has {len(s.global_views)} global + {len(s.local_views)} local views, "
                f"scene {samples[0].scene} has {n_global} + {n_local}; one batch needs the same view counts"
            )
    samples, ends = _offset_scene_ids(samples)
    glob = collate_points([v for s in samples for v in s.global_views], " (global views)")
    local = collate_points([v for s in samples for v in s.local_views], " (local views)") if n_local else None
    return MultiViewBatch(glob, local, tuple(s.scene for s in samples), n_global, n_local, ends)


def _offset_scene_ids(samples: Sequence[ViewSample]) -> tuple[list[ViewSample], dict[str, tuple[int, ...]]]:
    """Samples whose scene-local id arrays (``meta["scene_ids"]``) are shifted by the earlier scenes' counts
    (new view dicts; the samples are not modified), and the cumulative ends per scene of every id name."""
    names = sorted(samples[0].meta.get("scene_ids", {}))
    for s in samples:
        if sorted(s.meta.get("scene_ids", {})) != names:
            raise ValueError(
                f"scene {s.scene} declares scene-local ids {sorted(s.meta.get('scene_ids', {}))}, scene "
                f"{samples[0].scene} {names}; one batch needs the same"
            )
    if not names:
        return list(samples), {}
    start = dict.fromkeys(names, 0)
    ends: dict[str, list[int]] = {k: [] for k in names}
    out = []
    for s in samples:
        counts = s.meta["scene_ids"]
        views = []
        for view in [*s.global_views, *s.local_views]:
            view = dict(view)
            for k in names:
                ids = np.asarray(view[k], dtype=np.int64)  # KeyError names a view without the declared ids
                if ids.size and (ids.min() < -1 or ids.max() >= counts[k]):
                    raise ValueError(f"scene {s.scene}: ids {k!r} outside -1..{counts[k] - 1} (count {counts[k]})")
                view[k] = np.where(ids >= 0, ids + start[k], -1)
            views.append(view)
        for k in names:
            start[k] += int(counts[k])
            ends[k].append(start[k])
        n = len(s.global_views)
        out.append(attrs.evolve(s, global_views=views[:n], local_views=views[n:]))
    return out, {k: tuple(v) for k, v in ends.items()}


@attrs.define(eq=False)
class Encoded:
    """A backbone's per-point output for the samples of a ``PointBatch`` at one pooling level.

    At level ``s`` the points are the voxel cells of stage ``s`` (stage 0 = the input points); ``coord`` and
    ``origin_coord`` are the means of the input points pooled into each cell.
    """

    feat: torch.Tensor  # [M, C]
    coord: torch.Tensor  # [M, 3] pooled augmented coordinates
    origin_coord: torch.Tensor | None  # [M, 3] pooled pre-augmentation coordinates
    offset: torch.Tensor  # [B] cumulative counts, same samples as the input batch
    level: int = 0  # pooling level the points live at
    kind: str = "global"  # which views: "global" | "local"
    per_scene: int = 1  # views per scene (samples s * per_scene + v)
    extra: dict[str, torch.Tensor] = attrs.field(factory=dict)  # e.g. "inverse": [N_input] -> row of feat

    def __len__(self) -> int:
        return int(self.feat.shape[0])

    @property
    def batch(self) -> torch.Tensor:
        return batch_index(self.offset, len(self))

    @property
    def n_samples(self) -> int:
        return int(self.offset.shape[0])

    def at_points(self) -> torch.Tensor:
        """``[N_input, C]``: the row of every input point of the batch (through ``extra['inverse']``; the rows
        themselves when there is no inverse map)."""
        inverse = self.extra.get("inverse")
        return self.feat if inverse is None else self.feat[inverse]
