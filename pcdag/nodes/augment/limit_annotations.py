"""LimitAnnotations: keep the labels of a few chosen points per scene (the limited-annotations protocol)."""

from __future__ import annotations

import functools
from pathlib import Path

import attrs
import numpy as np

from pcdag.datasets.efficient import AnnotationSplit, read_annotation_file
from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.graphs.node import CloudTransform, FieldEffect, effect
from pcdag.graphs.params import of_type, param
from pcdag.graphs.ports import Placement
from pcdag.graphs.registry import register


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, mtime_ns: int, size: int) -> AnnotationSplit:
    return read_annotation_file(path)


def load_annotation_split(path: str | Path) -> AnnotationSplit:
    """An annotation split, read once per process (again only when the file changes on disk)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise FileNotFoundError(f"annotation split {p} does not exist or cannot be read: {exc}") from exc
    return _read_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)


@register
class LimitAnnotations(CloudTransform):
    """Set ``segment`` to -1 (ignore) at every point of a scene not listed in an annotation split file.

    The split (``pcdag.datasets.efficient``: ``make_splits`` → ``points-{k}-seed{s}.npz``) lists, per scene,
    indices into the points *as stored*, so this node must come right after the ``Store`` in the loader chain,
    before any subsampling (``GridSample``, crops, views). It refuses (``CloudError`` naming scene and file) a
    scene missing from the file and a cloud whose size differs from the stored scene the split was drawn from.
    ``file: null`` keeps every label: the full-annotation baseline of the same graph.
    """

    role = "augment"
    placements = (Placement.LOADER,)
    version = 1

    @attrs.frozen
    class Params:
        file: str | None = param(
            None,
            of_type(str, type(None)),
            doc="annotation split (.npz from make_splits); null keeps every label",
            path="in-file",
        )

    def fields(self) -> FieldEffect:
        return effect(reads=["segment"], writes=["segment"])

    def plan_notes(self) -> list[str]:
        if self.params.file is None:
            return ["labels   every labelled point kept (no annotation split)"]
        try:
            meta = load_annotation_split(self.params.file).meta
        except (OSError, ValueError) as exc:
            return [f"labels   annotation split unusable: {exc}"]
        short = len(meta.get("short", ()))
        return [
            f"labels   {meta.get('points')} labelled points per scene for {meta.get('n_scenes')} scenes (seed "
            f"{meta.get('seed')}, {self.params.file})" + (f"; {short} scenes have fewer" if short else "")
        ]

    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        segment = cloud["segment"]  # [N]
        if self.params.file is None:
            return cloud
        scene = cloud.meta.get("scene")
        split = load_annotation_split(self.params.file)
        keep = self._indices(split, scene, len(cloud))  # [K] sorted
        listed = np.zeros(len(cloud), dtype=bool)  # [N]
        listed[keep] = True
        cloud["segment"] = np.where(listed, segment, -1).astype(segment.dtype, copy=False)  # [N] a new array
        return cloud

    def _indices(self, split: AnnotationSplit, scene: object, n: int) -> np.ndarray:
        """The listed indices of ``scene``, checked against the cloud's ``n`` points."""
        where = f"{self!r} on scene {scene!r}"
        keep = split.indices.get(scene) if isinstance(scene, str) else None
        if keep is None:
            raise CloudError(
                f"{where}: the scene is not in annotation split {self.params.file} ({len(split.indices)} scenes); "
                f"make the split from the store this graph reads"
            )
        stored = split.meta.get("n_points", {}).get(scene)
        if (stored is not None and stored != n) or (len(keep) and keep[-1] >= n):
            expect = f"{stored} points" if stored is not None else f"more than {int(keep[-1])} points"
            raise CloudError(
                f"{where}: the cloud has {n} points but annotation split {self.params.file} was drawn from "
                f"{expect}; put LimitAnnotations right after the Store (before any subsampling) or remake the split"
            )
        return keep
