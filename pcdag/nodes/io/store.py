"""``Store``: the boundary between offline and loader stages — a chunked, compressed zarr store of scenes."""

from __future__ import annotations

import json
from pathlib import Path

import attrs

from pcdag.graphs.node import In, Node, Out
from pcdag.graphs.params import of_type, param, subset_of
from pcdag.graphs.ports import FIELDS, POINT_CLOUD, Placement
from pcdag.graphs.registry import register

SPLITS = ("train", "val", "test")


@register
class Store(Node):
    """Write each offline scene into a zarr store (atomic per scene), and read it back in the loader.

    With ``cloud`` connected the offline stage writes the store (``pcdag preprocess``); unconnected, the node
    reads an existing store. ``splits`` chooses the scenes the loader reads; ``fields`` the fields it loads
    (all by default); ``scenes`` a scene-list file of a data-efficient protocol (``pcdag splits``), of which only
    the listed scenes are read. Layout and manifest: ``pcdag/runtime/store.py``.
    """

    role = "io"
    placements = (Placement.STORE,)
    version = 1
    inputs = {"cloud": In(POINT_CLOUD, required=False, doc="scenes to write; unconnected = read an existing store")}
    outputs = {"cloud": Out(POINT_CLOUD, doc="stored scenes of the chosen splits")}

    @attrs.frozen
    class Params:
        path: str = param(validator=of_type(str), doc="store directory", cache=False, path="out-dir")
        splits: list = param(["train"], subset_of(*SPLITS), doc="splits the loader reads", cache=False)
        fields: list | None = param(
            None, of_type(list, type(None)), doc="fields the loader reads (default all)", cache=False
        )
        scenes: str | None = param(
            None,
            of_type(str, type(None)),
            doc="a scene list (`pcdag splits`): read only those",
            cache=False,
            path="in-file",
        )  # a read-side choice like splits: the store written is the same

    def path_kinds(self, connected: frozenset[str]) -> dict[str, str]:
        """Written when ``cloud`` is connected; otherwise read, and another graph's ``preprocess`` may write it."""
        kinds = super().path_kinds(connected)
        return kinds if "cloud" in connected else {**kinds, "path": "later-dir"}

    def data_splits(self) -> tuple[str, ...]:
        return tuple(self.params.splits)

    def source_fields(self) -> frozenset[str] | None:
        """Read side: the ``fields`` parameter, of those the store's manifest lists when it is written (so that a
        field the store lacks is refused at compile time by the node that needs it), else unknown."""
        stored = self.stored_fields()
        if self.params.fields is None:
            return stored
        declared = frozenset(["coord", *self.params.fields])
        return declared if stored is None else declared & stored

    def plan_notes(self) -> list[str]:
        scenes = self._manifest_scenes()
        if scenes is None:
            return [f"store    {self.params.path} not written yet"]
        chosen = [s for s in scenes if s.get("split") in self.params.splits]
        points = sum(int(s.get("n_points", 0)) for s in chosen)
        return [
            f"store    {len(scenes)} scenes written; the loader reads {len(chosen)} ({', '.join(self.params.splits)}"
            f"), {points:,} points: {len(chosen)} samples per epoch"
        ]

    def _manifest_scenes(self) -> list[dict] | None:
        try:
            scenes = json.loads((Path(self.params.path) / "manifest.json").read_text())["scenes"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return scenes if isinstance(scenes, list) else None

    def stored_fields(self) -> frozenset[str] | None:
        """Fields common to every scene of an existing store, from its manifest (None if not written yet)."""
        scenes = self._manifest_scenes()
        if scenes is None:
            return None
        sets = [frozenset(s.get("fields", ())) for s in scenes]
        return frozenset.intersection(*sets) if sets else None

    def __post_init__(self) -> None:
        unknown = [f for f in (self.params.fields or []) if not isinstance(f, str)]
        if unknown:
            raise ValueError(f"fields must be names, got {unknown!r}; known fields: {', '.join(FIELDS)}")
