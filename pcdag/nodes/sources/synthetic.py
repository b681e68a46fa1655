"""SyntheticSource: procedurally generated labelled rooms, for tests, demos and smoke runs."""

from __future__ import annotations

import hashlib

import attrs
import numpy as np

from pcdag.datasets.synthetic import make_room
from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.node import SceneRef, SceneSource
from pcdag.graphs.params import in_range, integer, param, subset_of
from pcdag.graphs.registry import register
from pcdag.nodes.sources.parts.common import keep_splits, scene_cloud


def split_of(seed: int, index: int, val_fraction: float) -> str:
    """``val`` for a deterministic fraction ``val_fraction`` of rooms, by a hash of (seed, index)."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return "val" if int.from_bytes(digest, "little") / 2.0**64 < val_fraction else "train"


@register
class SyntheticSource(SceneSource):
    """Generate box-furnished rooms (floor, walls, furniture) with ScanNet-20 labels, instances and normals.

    Scene ``i`` is room ``i`` drawn from ``np.random.default_rng([seed, i])``: the same whatever other scenes are
    loaded. Its split is ``val`` for a hashed fraction ``val_fraction`` of rooms. Scenes read no files, so their
    ``SceneRef.paths`` are empty and cache keys depend on this node's parameters and ``version`` only (bump the
    version when ``pcdag.datasets.synthetic.make_room`` changes).
    """

    version = 1

    @attrs.frozen
    class Params:
        n_scenes: int = param(4, integer(1, 100_000), doc="number of rooms")
        points: int = param(20000, integer(100, 5_000_000), doc="points per room")
        seed: int = param(0, integer(0, None), doc="seed of every room and of the split")
        splits: list[str] = param(["train"], subset_of("train", "val"), doc="splits to list and load")
        val_fraction: float = param(0.25, in_range(0.0, 1.0), doc="fraction of rooms in the val split")

    def scenes(self) -> list[SceneRef]:
        p = self.params
        refs = []
        for i in range(p.n_scenes):
            name = f"synthetic-{p.seed}-{i:05d}"
            refs.append(SceneRef(name, split_of(p.seed, i, p.val_fraction), name))
        return keep_splits(refs, p.splits, f"SyntheticSource(seed={p.seed}, n_scenes={p.n_scenes})")

    def load(self, ref: SceneRef) -> PointCloud:
        p = self.params
        prefix, _, index = ref.id.rpartition("-")
        if prefix != f"synthetic-{p.seed}" or not index.isdigit() or int(index) >= p.n_scenes:
            raise ValueError(f"SyntheticSource(seed={p.seed}, n_scenes={p.n_scenes}): no scene {ref.id!r}")
        room = make_room(np.random.default_rng([p.seed, int(index)]), n_points=p.points)
        return scene_cloud(room, ref, ref.id)

    def provides(self) -> frozenset[str]:
        return frozenset({"coord", "color", "normal", "segment", "instance"})
