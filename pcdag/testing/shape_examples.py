"""Example inputs for the source, ``Node.run``, evaluator and store contracts, one maker per node type.

Makers get ``data`` (the real data folder, ``shared/data``) and ``tmp`` (an empty folder of their own). Sources read
one small real scene each (or a rendered video, synthetic rooms); run nodes get a real RGB-D snippet or a synthetic
room; evaluators get synthetic rooms, an oracle and a poor predictor. A node type without a maker fails
``tests/test_node_contract.py``: add one here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pcdag.graphs import registry
from pcdag.graphs.batch import Encoded, ViewSample
from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.node import Node
from pcdag.testing.eval_contract import EvalExample

SOURCES: dict[str, Callable[[Path, Path], Node]] = {}
RUN_NODES: dict[str, Callable[[Path, Path], tuple[Node, dict[str, Any]]]] = {}
EVALUATORS: dict[str, Callable[[Path, Path], tuple[Node, EvalExample]]] = {}
STORES: dict[str, Callable[[Path, Path], dict[str, PointCloud]]] = {}


def maker(table: dict, name: str) -> Callable:
    def add(fn: Callable) -> Callable:
        table[name] = fn
        return fn

    return add


def node(name: str, **params: Any) -> Node:
    return registry.get(name)(**params)


def rooms(n: int = 2, points: int = 3000, split: str = "train") -> list[PointCloud]:
    """``n`` synthetic rooms of the ``SyntheticSource`` (coord, color, normal, segment, instance)."""
    source = node("SyntheticSource", n_scenes=n, points=points, seed=3, val_fraction=0.0)
    return [source.load(ref) for ref in source.scenes()]  # type: ignore[attr-defined]


# -------------------------------------------------------------------------------------------------- sources


@maker(SOURCES, "ScanNetSource")
def _scannet(data: Path, tmp: Path) -> Node:
    return node("ScanNetSource", root=str(data / "scannet-mini"), splits=["val"])


@maker(SOURCES, "S3DISSource")
def _s3dis(data: Path, tmp: Path) -> Node:
    (tmp / "Area_1").mkdir()
    (tmp / "Area_1" / "hallway_1").symlink_to(data / "s3dis-mini" / "Area_1" / "hallway_1")  # one small room
    return node("S3DISSource", root=str(tmp))


@maker(SOURCES, "PLYSource")
def _ply(data: Path, tmp: Path) -> Node:
    from pcdag.datasets.ply import write_ply

    room = rooms(1, 500)[0]
    write_ply(tmp / "room.ply", {k: room[k] for k in ("coord", "color", "segment")})
    return node("PLYSource", root=str(tmp), fields=["color", "segment"])


@maker(SOURCES, "SyntheticSource")
def _synthetic(data: Path, tmp: Path) -> Node:
    return node("SyntheticSource", n_scenes=3, points=500)


@maker(SOURCES, "RGBDSequenceSource")
def _rgbd(data: Path, tmp: Path) -> Node:
    return node("RGBDSequenceSource", root=str(data / "rgbd-7scenes"), frame_step=50, max_frames=3)


@maker(SOURCES, "VideoSource")
def _video(data: Path, tmp: Path) -> Node:
    from pcdag.datasets.roomvideo import render_room_video, write_video

    write_video(tmp / "tour.mp4", render_room_video(1, n_frames=6, width=64, height=48, fps=5.0))
    return node("VideoSource", root=str(tmp))


# -------------------------------------------------------------------------------------------------- run nodes


def rgbd_frames(data: Path, step: int, count: int) -> Any:
    source = node("RGBDSequenceSource", root=str(data / "rgbd-7scenes"), frame_step=step, max_frames=count)
    return source.load(source.scenes()[0])  # type: ignore[attr-defined]


@maker(RUN_NODES, "MultiViewGenerator")
def _multi_view(data: Path, tmp: Path) -> tuple[Node, dict]:
    views = node("MultiViewGenerator", max_points=2000, min_points=100, n_local=2)
    return views, {"cloud": rooms(1)[0]}


@maker(RUN_NODES, "TwoViewGenerator")
def _two_view(data: Path, tmp: Path) -> tuple[Node, dict]:
    room = rooms(1)[0]
    room["superpoint"] = room["segment"].astype(np.int64) * 7 + np.arange(len(room)) % 3  # a few per label
    return node("TwoViewGenerator", min_points=100, samples=256), {"cloud": room}


@maker(RUN_NODES, "Reconstruct")
def _reconstruct(data: Path, tmp: Path) -> tuple[Node, dict]:
    return node("Reconstruct", backend="rgbd", voxel_size=0.05), {"frames": rgbd_frames(data, 60, 4)}


@maker(RUN_NODES, "SplitScenes")
def _split_scenes(data: Path, tmp: Path) -> tuple[Node, dict]:
    frames = rgbd_frames(data, 15, 20)  # 10 s of one room at 2 frames a second
    frames.timestamps = np.arange(len(frames)) * 0.5
    short = {k: 2.0 for k in ("min_indoor_seconds", "min_segment_seconds", "min_seconds")}
    return node("SplitScenes", **short), {"frames": frames}


# -------------------------------------------------------------------------------------------------- evaluators


def _encoded(rows: np.ndarray) -> Encoded:
    import torch

    feat = torch.as_tensor(np.ascontiguousarray(rows, dtype=np.float32))
    offset = torch.tensor([len(rows)])
    return Encoded(feat, torch.zeros(len(rows), 3), None, offset)


def _semantic(classes: int, exact: bool) -> Callable[[ViewSample], dict]:
    def predict(sample: ViewSample) -> dict:
        view = sample.global_views[0]
        label = np.zeros(len(view["coord"]), np.int64)  # poor: all class 0 (and for a scene without labels)
        if exact and "segment" in view:
            label = np.clip(view["segment"], 0, classes - 1)
        return {"logits": _encoded(np.eye(classes)[label] * 10.0), "features": _encoded(view["coord"])}

    return predict


def _instance(stuff: list[int], exact: bool) -> Callable[[ViewSample], dict]:
    def predict(sample: ViewSample) -> dict:
        view = sample.global_views[0]
        coord = view["origin_coord"].astype(np.float64)
        instance, segment = view.get("instance", -np.ones(len(coord))), view.get("segment", -np.ones(len(coord)))
        fg = (instance >= 0) & ~np.isin(segment, stuff) & exact
        offset = np.zeros_like(coord)
        for i in np.unique(instance[fg]):
            rows = fg & (instance == i)
            offset[rows] = coord[rows].mean(0) - coord[rows]  # every point votes for its instance's centre
        return {"predictions": _encoded(np.concatenate([offset, np.where(fg, 10.0, -10.0)[:, None]], 1))}

    return predict


def _eval_scenes() -> tuple[list[tuple[str, PointCloud]], tuple[str, PointCloud]]:
    clouds = rooms(3)
    broken = clouds[2].copy()
    del broken["segment"], broken["instance"]
    return [(c.meta["scene"], c) for c in clouds[:2]], ("unlabelled", broken)


@maker(EVALUATORS, "SemanticSegmentationEval")
def _semantic_eval(data: Path, tmp: Path) -> tuple[Node, EvalExample]:
    evaluator = node("SemanticSegmentationEval", grid_size=2e-4, pictures=1)  # ~ one point per voxel
    classes = len(evaluator.params.classes)  # type: ignore[attr-defined]
    scenes, broken = _eval_scenes()
    oracle, poor = _semantic(classes, True), _semantic(classes, False)
    return evaluator, EvalExample(scenes, oracle, poor, "miou", 1.0, broken, {"pictures": 0})


@maker(EVALUATORS, "InstanceSegmentationEval")
def _instance_eval(data: Path, tmp: Path) -> tuple[Node, EvalExample]:
    evaluator = node("InstanceSegmentationEval", grid_size=2e-4, min_points=1, pictures=1)
    stuff = list(evaluator.params.stuff_classes)  # type: ignore[attr-defined]
    scenes, broken = _eval_scenes()
    oracle, poor = _instance(stuff, True), _instance(stuff, False)
    return evaluator, EvalExample(scenes, oracle, poor, "ap", 1.0, broken, {"pictures": 0})


# -------------------------------------------------------------------------------------------------- the store


@maker(STORES, "Store")
def _store(data: Path, tmp: Path) -> dict[str, PointCloud]:
    return {c.meta["scene"]: c for c in rooms(2, 500)}
