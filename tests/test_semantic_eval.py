"""SemanticSegmentationEval on hand-made scenes: perfect predictions through test-time views and the grid inverse
give mIoU 1, absent classes are reported as absent, and bad scenes are skipped with a note naming them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pcdag.graphs.batch import Encoded
from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.evaluation import EvalContext
from pcdag.nodes.evaluators.semantic_segmentation import SemanticSegmentationEval
from pcdag.nodes.views.parts.eval_view import eval_sample

CLASSES = ["a", "b", "c", "d"]


def scene(seed: int, labels: tuple[int, ...] = (0, 1, 2)) -> PointCloud:
    """Points on a 5 cm lattice (one per 2 cm voxel), labelled by x band."""
    rng = np.random.default_rng(seed)
    ijk = np.stack(np.meshgrid(np.arange(12), np.arange(6), np.arange(4), indexing="ij"), -1).reshape(-1, 3)
    coord = (ijk * 0.05 + 0.01).astype(np.float32)
    segment = np.array(labels)[np.minimum(ijk[:, 0] // 4, len(labels) - 1)].astype(np.int16)
    normal = np.tile(np.array([[0, 0, 1]], np.float32), (len(coord), 1))
    color = rng.integers(0, 255, (len(coord), 3), dtype=np.uint8)
    return PointCloud({"coord": coord, "color": color, "normal": normal, "segment": segment})


def perfect(sample) -> dict:
    """Logits that pick each sampled point's own label (as if the classifier were perfect)."""
    labels = torch.from_numpy(sample.global_views[0]["segment"])
    logits = torch.nn.functional.one_hot(labels.clamp(0, len(CLASSES) - 1), len(CLASSES)).float() * 10
    n = len(labels)
    encoded = Encoded(logits, torch.zeros(n, 3), None, torch.tensor([n]), extra={"inverse": torch.arange(n)})
    return {"logits": encoded}


def run(tmp_path: Path, scenes: dict[str, PointCloud], passes: int = 1) -> tuple[dict, list[str]]:
    node = SemanticSegmentationEval(classes=CLASSES, passes=passes, pictures=0, grid_size=0.02)
    notes: list[str] = []
    ctx = EvalContext(
        tmp_path / "eval" / "evaluate", "val", lambda: iter(scenes.items()), perfect,
        lambda c: eval_sample(c, ["segment"]), notes=notes,
    )  # fmt: skip
    ctx.out.mkdir(parents=True)
    return node.evaluate(ctx).metrics, notes


def test_perfect_predictions_give_miou_one_through_13_test_time_views(tmp_path: Path) -> None:
    metrics, notes = run(tmp_path, {"s0": scene(0), "s1": scene(1)}, passes=13)
    assert notes == [] and metrics["scenes"] == 2 and metrics["passes"] == 13
    assert metrics["miou"] == 1.0 and metrics["absent"] == ["d"]  # class d never occurs: absent, not 0
    assert metrics["classes"]["d"]["iou"] is None
    pred = np.load(tmp_path / "eval" / "evaluate" / "predictions" / "s0.npy")
    np.testing.assert_array_equal(pred, scene(0)["segment"])  # every original point gets its own class back


def test_scenes_without_labels_or_with_labels_out_of_range_are_skipped_and_named(tmp_path: Path) -> None:
    unlabelled = scene(2)
    unlabelled = PointCloud({k: unlabelled[k] for k in ("coord", "color", "normal")})
    bad = scene(3)
    bad["segment"] = np.where(bad["segment"] == 2, 7, bad["segment"]).astype(np.int16)
    metrics, notes = run(tmp_path, {"good": scene(0), "unlabelled": unlabelled, "bad": bad})
    assert metrics["scenes"] == 1 and metrics["miou"] == 1.0
    assert len(notes) == 2
    assert any("unlabelled" in n and "segment" in n for n in notes)
    assert any("bad" in n and "7" in n for n in notes)
