"""Example inputs for the device-node contract (``pcdag.testing.device_contract``), one maker per node type.

A maker returns ``[(configured node, DeviceExample), ...]``: small CPU tensors and tiny presets, upstream modules
built through the real node types (a tiny ``PointTransformerV3`` feeds ``Encode`` and the teacher). A device node
type without a maker fails ``tests/test_node_contract.py``: add one here with ``@device_example("TypeName")``.
Makers of node types not in the registry (a backbone another branch adds) are simply never called.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch

from pcdag.graphs import registry
from pcdag.graphs.backbone import BackboneNode
from pcdag.graphs.batch import Encoded, MultiViewBatch, PointBatch, ViewSample, collate_views
from pcdag.graphs.device import DeviceNode
from pcdag.testing.contract import ContractError
from pcdag.testing.device_contract import DeviceExample

Maker = Callable[[], list[tuple[DeviceNode, DeviceExample]]]
DEVICE_EXAMPLES: dict[str, Maker] = {}
CLASSES = 5  # classes of the segmentation examples


def device_example(name: str) -> Callable[[Maker], Maker]:
    """Register the maker of node type ``name``'s examples."""

    def add(maker: Maker) -> Maker:
        DEVICE_EXAMPLES[name] = maker
        return maker

    return add


def device_examples(name: str) -> list[tuple[DeviceNode, DeviceExample]]:
    """The examples of node type ``name``; ``ContractError`` when it has no maker."""
    if name not in DEVICE_EXAMPLES:
        raise ContractError(
            f"device node type {name} has no example-input maker; add one in pcdag/testing/examples.py "
            f'(@device_example("{name}"))'
        )
    return DEVICE_EXAMPLES[name]()


def node(name: str, **params) -> DeviceNode:
    return registry.get(name)(**params)  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------ data makers


def scene(seed: int, n: int = 240, extent: float = 1.2) -> np.ndarray:
    """``[n, 3]`` float32 points on the floor and two walls of a small room (surfaces, not a volume)."""
    rng = np.random.default_rng(seed)
    xyz = rng.random((n, 3)) * extent
    plane = rng.integers(0, 3, n)
    xyz[np.arange(n), plane] = 0.0
    return xyz.astype(np.float32)


def _view(room: np.ndarray, labels: dict[str, np.ndarray], size: int, rng: np.random.Generator) -> dict:
    """``size`` random points of ``room``: centred coord, origin_coord, 9 features, and ``labels`` rows."""
    rows = rng.choice(len(room), size, replace=False)
    coord = room[rows] - room[rows].mean(0)
    feat = np.concatenate([coord, rng.random((size, 3)), np.tile([0.0, 0.0, 1.0], (size, 1))], 1)
    view = {"coord": coord, "origin_coord": room[rows].copy(), "feat": feat.astype(np.float32)}
    return view | {k: v[rows] for k, v in labels.items()}


def views(scenes: int = 2, n_global: int = 2, n_local: int = 2, seed: int = 0, labels: bool = False) -> MultiViewBatch:
    """A collated batch: per scene ``n_global`` views of 3/4 of its points and ``n_local`` of 1/4, ``feat`` the 9
    features (centred coord, colour, normal); with ``labels`` the views carry ``segment`` and ``instance``."""
    rng = np.random.default_rng(seed)
    samples = []
    for s in range(scenes):
        room = scene(seed * 100 + s)
        segment = (room[:, 2] > 0.05).astype(np.int64) + (room[:, 0] > 0.6)  # floor 0, walls 1..2
        instance = np.where(segment > 0, (room[:, 1] > 0.6).astype(np.int64), -1)
        per_point = {"segment": segment, "instance": instance} if labels else {}
        n = len(room)
        glob = [_view(room, per_point, 3 * n // 4, rng) for _ in range(n_global)]
        samples.append(ViewSample(f"s{s}", glob, [_view(room, per_point, n // 4, rng) for _ in range(n_local)]))
    return collate_views(samples)


def features(points: PointBatch, channels: int, seed: int, kind: str = "global", per_scene: int = 2) -> Encoded:
    """Random per-point features of ``points`` that take a gradient (as a student's do)."""
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(len(points), channels, generator=g).requires_grad_(True)
    return Encoded(feat, points.coord, points.origin_coord, points.offset, kind=kind, per_scene=per_scene)


def tiny_backbone(seed: int = 0) -> torch.nn.Module:
    """A tiny PointTransformerV3 module, built through its node type."""
    torch.manual_seed(seed)
    return node("PointTransformerV3", preset="tiny").build({})


def backbone_probe(points: PointBatch) -> Callable:
    """The mean square of the features of the module on port ``model`` for ``points``."""
    return lambda out: out["model"](points).feat.float().square().mean()


# ------------------------------------------------------------------------------------------------ backbones


def backbone_examples(name: str, **params) -> list[tuple[DeviceNode, DeviceExample]]:
    """Any ``BackboneNode`` (or backbone-like node) with a ``tiny`` preset: the module on its feature width, as
    trained and, when it has a ``frozen`` parameter, frozen (linear probing: no gradient may reach it)."""
    out = []
    for frozen in (False, True):
        backbone = node(name, preset="tiny", **params, **({"frozen": True} if frozen else {}))
        width = int(getattr(backbone.params, "in_channels", 9))
        points = views(scenes=1, n_global=1, n_local=0).global_views
        pad = torch.zeros(len(points), max(0, width - 9))
        points = points.replace(feat=torch.cat([points.feat, pad], 1)[:, :width])
        out.append((backbone, DeviceExample({}, probe=backbone_probe(points), label="frozen" if frozen else "")))
        if not hasattr(backbone.params, "frozen"):
            break
    return out


@device_example("PointTransformerV3")
def _ptv3() -> list:
    return backbone_examples("PointTransformerV3")


@device_example("SparseUNet")
def _sparse_unet() -> list:
    if not issubclass(registry.get("SparseUNet"), BackboneNode):
        raise ContractError("SparseUNet is not a BackboneNode (pcdag.graphs.backbone)")
    return backbone_examples("SparseUNet")


@device_example("Encode")
def _encode() -> list:
    batch = views(scenes=1)
    mask = torch.rand(len(batch.global_views), generator=torch.Generator().manual_seed(1)) < 0.4
    masked = batch.replace(global_views=batch.global_views.replace(mask=mask))
    student = (node("Encode", masked=True), DeviceExample({"model": tiny_backbone(), "views": masked}, label="masked"))
    teacher = DeviceExample({"model": tiny_backbone(1), "views": batch}, frozen=frozenset({"model"}), label="teacher")
    return [student, (node("Encode", views="local"), teacher)]


@device_example("EMATeacher")
def _ema() -> list:
    points = views(scenes=1, n_global=1, n_local=0).global_views
    return [(node("EMATeacher"), DeviceExample({"model": tiny_backbone()}, probe=backbone_probe(points)))]


# ------------------------------------------------------------------------------------------------ views on device


@device_example("GridMasking")
def _grid_masking() -> list:
    return [(node("GridMasking"), DeviceExample({"views": views()}, step=5))]


@device_example("CoordinateNoise")
def _coordinate_noise() -> list:
    return [(node("CoordinateNoise"), DeviceExample({"views": views()}))]


# ------------------------------------------------------------------------------------------------ heads and losses


def head_input(channels: int) -> Callable:
    feat = torch.randn(64, channels, generator=torch.Generator().manual_seed(3))
    return lambda out: out["model"](feat).float().square().mean()


@device_example("ClusteringHead")
def _clustering_head() -> list:
    head = node("ClusteringHead", hidden=32, embed=16, prototypes=24)
    backbone = tiny_backbone()
    return [(head, DeviceExample({"backbone": backbone}, probe=head_input(backbone.out_channels)))]


@device_example("ClusteringLoss")
def _clustering_loss() -> list:
    batch, channels = views(), 12
    head = node("ClusteringHead", hidden=32, embed=16, prototypes=24, in_channels=channels).build({})
    teacher_head = copy.deepcopy(head)
    teacher = features(batch.global_views, channels, 1)
    teacher.feat = teacher.feat.detach()  # a teacher's features take no gradient
    out = []
    for pairing, kind in (("same", "global"), ("first", "local")):
        student = features(batch.views(kind), channels, 2, kind=kind)
        inputs = {"student": student, "teacher": teacher, "head": head, "teacher_head": teacher_head}
        ex = DeviceExample(inputs, frozen=frozenset({"teacher_head"}), label=f"pairing {pairing}")
        out.append((node("ClusteringLoss", pairing=pairing), ex))
    return out


@device_example("InstanceHead")
def _instance_head() -> list:
    feats = features(views(n_local=0).global_views, 8, 0)
    return [(node("InstanceHead", hidden=16, in_channels=8), DeviceExample({"features": feats}))]


@device_example("InstanceLoss")
def _instance_loss() -> list:
    batch = views(n_local=0, labels=True)
    predictions = features(batch.global_views, 4, 0)
    return [(node("InstanceLoss"), DeviceExample({"predictions": predictions, "views": batch}))]


@device_example("SegmentationHead")
def _segmentation_head() -> list:
    batch, backbone = views(n_local=0), tiny_backbone()
    inputs = {"backbone": backbone, "features": features(batch.global_views, backbone.out_channels, 0)}
    return [(node("SegmentationHead", classes=CLASSES), DeviceExample(inputs))]


@device_example("SegmentationLoss")
def _segmentation_loss() -> list:
    batch = views(n_local=0, labels=True)
    logits = features(batch.global_views, CLASSES, 0)
    return [(node("SegmentationLoss"), DeviceExample({"logits": logits, "views": batch}))]


@device_example("LaplacianSmoothness")
def _laplacian() -> list:
    feats = features(views(n_local=0).global_views, 8, 0)
    return [(node("LaplacianSmoothness", k=6, cutoff=0.3, weight=1.0), DeviceExample({"features": feats}))]


@device_example("NoiseConsistency")
def _noise_consistency() -> list:
    points = views(n_local=0).global_views
    student, teacher = features(points, 8, 0), features(points, 8, 1)
    teacher.feat = teacher.feat.detach()
    return [(node("NoiseConsistency"), DeviceExample({"student": student, "teacher": teacher}))]


# ------------------------------------------------------------------------------------------------ two-view methods


def two_views(scenes: int = 2, seed: int = 0, samples: int = 64, points: int = 400) -> MultiViewBatch:
    """A collated batch of ``TwoViewGenerator`` samples of small rooms whose superpoints are wall / floor cells."""
    from pcdag.graphs.cloud import PointCloud

    generator = registry.get("TwoViewGenerator")(min_points=50, samples=samples)
    out = []
    for s in range(scenes):
        room = scene(seed * 100 + s, n=points)
        rng = np.random.default_rng(seed * 100 + s)
        superpoint = (room[:, 2] > 0.05).astype(np.int64) * 4 + (room[:, 0] > 0.6) * 2 + (room[:, 1] > 0.6)
        cloud = PointCloud(
            {
                "coord": room,
                "color": rng.integers(0, 256, (len(room), 3)).astype(np.uint8),
                "normal": np.tile(np.float32([0, 0, 1]), (len(room), 1)),
                "superpoint": superpoint,
            },
            {"scene": f"s{s}"},
        )
        out.append(generator.run(rng, cloud=cloud)["views"])
    return collate_views(out)


@device_example("GroupContrastHead")
def _group_contrast_head() -> list:
    backbone = tiny_backbone()
    feat = torch.randn(64, backbone.out_channels, generator=torch.Generator().manual_seed(3))
    probe = lambda out: out["model"](feat).square().mean() + out["model"].points(feat, True).square().mean()  # noqa: E731
    out = []
    for predictor in (True, False):
        head = node("GroupContrastHead", hidden=32, embed=16, point_embed=8, prototypes=6, predictor=predictor)
        out.append((head, DeviceExample({"backbone": backbone}, probe=probe, label=f"predictor {predictor}")))
    return out


@device_example("GroupContrastLoss")
def _group_contrast_loss() -> list:
    batch, channels = two_views(), 12
    head = node("GroupContrastHead", hidden=32, embed=16, point_embed=8, prototypes=6, in_channels=channels)
    head = head.build({})
    teacher_head = copy.deepcopy(head)
    teacher = features(batch.global_views, channels, 1)
    teacher.feat = teacher.feat.detach()
    student = features(batch.global_views, channels, 2)
    inputs = {"student": student, "teacher": teacher, "head": head, "teacher_head": teacher_head, "views": batch}
    out = []
    for label, params in (
        ("defaults", {}),
        ("ablations off", {"centering": False, "confidence": False, "entropy_weights": False, "across_scenes": True}),
    ):
        ex = DeviceExample(inputs, frozen=frozenset({"teacher_head"}), label=label)
        out.append((node("GroupContrastLoss", **params), ex))
    return out
