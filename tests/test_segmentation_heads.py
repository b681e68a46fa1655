"""Segmentation head and loss: the Lovász-softmax against its definition, the loss's label checks, culling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pcdag.compiler import compile_graph
from pcdag.compiler.training import cull
from pcdag.graphs.batch import Encoded, MultiViewBatch, PointBatch
from pcdag.graphs.device import StepContext
from pcdag.graphs.yamlio import load_graph
from pcdag.nodes.heads.segmentation_loss import SegmentationLoss
from pcdag.ops.lovasz import lovasz_softmax
from pcdag.runtime.optim import param_groups

REPO = Path(__file__).resolve().parents[1]


def iou_loss_of_hard(pred: np.ndarray, labels: np.ndarray, classes: int) -> float:
    """1 − IoU averaged over classes present in ``labels``: what Lovász equals at one-hot probabilities."""
    losses = []
    for c in range(classes):
        gt, pr = labels == c, pred == c
        if gt.any():
            losses.append(1.0 - (gt & pr).sum() / (gt | pr).sum())
    return float(np.mean(losses))


@given(
    st.integers(1, 60).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(0, 3), min_size=n, max_size=n), st.lists(st.integers(0, 3), min_size=n, max_size=n)
        )
    )
)
def test_lovasz_at_hard_predictions_is_one_minus_iou(pair) -> None:
    """The Lovász extension agrees with the Jaccard loss at the vertices (one-hot probabilities)."""
    pred, labels = np.array(pair[0]), np.array(pair[1])
    probs = torch.nn.functional.one_hot(torch.from_numpy(pred), 4).double()
    got = float(lovasz_softmax(probs, torch.from_numpy(labels)))
    assert got == pytest.approx(iou_loss_of_hard(pred, labels, 4), abs=1e-9)


@given(st.integers(2, 40), st.integers(2, 5), st.integers(0, 2**31 - 1))
def test_lovasz_is_between_zero_and_one_ignores_and_has_gradients(n: int, c: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, c, (n,), generator=g)
    loss = lovasz_softmax(logits.softmax(1), labels)
    assert 0.0 <= float(loss) <= 1.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    # ignored points change nothing
    extra = torch.cat([labels, torch.full((3,), -1)])
    more = torch.cat([logits.detach(), torch.randn(3, c, generator=g, dtype=torch.float64)])
    assert float(lovasz_softmax(more.softmax(1), extra)) == pytest.approx(float(loss), abs=1e-12)


def test_lovasz_with_no_labelled_point_is_zero_and_differentiable() -> None:
    logits = torch.randn(5, 3, requires_grad=True)
    loss = lovasz_softmax(logits.softmax(1), torch.full((5,), -1))
    loss.backward()
    assert float(loss) == 0.0 and logits.grad is not None


def _batch(labels: list[int]) -> MultiViewBatch:
    n = len(labels)
    views = PointBatch(torch.zeros(n, 3), torch.zeros(n, 9), torch.tensor([n]), extra={"segment": torch.tensor(labels)})
    return MultiViewBatch(views, None, ("sceneA",), 1, 0)


def _logits(values: torch.Tensor) -> Encoded:
    n = values.shape[0]
    return Encoded(values, torch.zeros(n, 3), None, torch.tensor([n]), extra={"inverse": torch.arange(n)})


def test_segmentation_loss_is_ce_plus_lovasz_and_refuses_out_of_range_labels() -> None:
    node = SegmentationLoss()
    ctx = StepContext(0, 1, torch.Generator(), torch.device("cpu"))
    logits = torch.randn(6, 4)
    labels = [0, 1, 2, 3, -1, 1]
    loss = node.forward(ctx, None, logits=_logits(logits), views=_batch(labels))["loss"]
    y = torch.tensor(labels)
    expected = torch.nn.functional.cross_entropy(logits, y, ignore_index=-1) + lovasz_softmax(logits.softmax(1), y)
    assert float(loss.value) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(ValueError, match=r"labels \[7\] of scene\(s\) sceneA lie outside 0..3"):
        node.forward(ctx, None, logits=_logits(logits), views=_batch([0, 1, 7, 3, -1, 1]))


def test_evaluation_culls_the_step_to_what_the_classifier_needs() -> None:
    plan = compile_graph(load_graph(REPO / "graphs" / "eval" / "scannet-lp.yaml"))
    assert [s.name for s in cull(plan.device, {"classifier"})] == ["backbone", "encode", "classifier"]
    assert [s.name for s in cull(plan.device, {"encode"})] == ["backbone", "encode"]
    assert plan.device.trainable == ("classifier",)  # the probe trains; the frozen encoder does not
    with pytest.raises(ValueError, match="no device node"):
        cull(plan.device, {"nope"})


def test_fine_tuning_gives_the_blocks_a_tenth_of_the_rate() -> None:
    plan = compile_graph(
        load_graph(REPO / "graphs" / "eval" / "scannet-ft.yaml"),
    )
    backbone = plan.node("backbone").build({})
    groups = param_groups({"backbone": backbone}, plan.train)
    scales = {name: g["lr_scale"] for g in groups for name in g["names"]}
    assert {s for n, s in scales.items() if ".blocks." in n} == {0.1}
    assert {s for n, s in scales.items() if ".blocks." not in n} == {1.0}


def test_a_view_without_labelled_points_gives_zero_loss_not_nan() -> None:
    logits = torch.randn(4, 3, requires_grad=True)
    ctx = StepContext(0, 1, torch.Generator(), torch.device("cpu"))
    loss = SegmentationLoss().forward(ctx, None, logits=_logits(logits), views=_batch([-1, -1, -1, -1]))["loss"]
    loss.value.backward()
    assert float(loss.value) == 0.0 and torch.isfinite(logits.grad).all()


def test_the_13_test_time_views_rotate_scale_and_flip_about_the_scene_centre() -> None:
    from pcdag.graphs.cloud import PointCloud
    from pcdag.nodes.evaluators.semantic_segmentation import moved, test_time_passes

    rng = np.random.default_rng(0)
    coord = rng.uniform(-2, 3, (50, 3)).astype(np.float32)
    normal = rng.normal(size=(50, 3)).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    cloud = PointCloud({"coord": coord, "normal": normal})
    passes = test_time_passes(13)
    assert len(passes) == 13 and len(set(passes)) == 13 and test_time_passes(1) == [(0.0, 1.0, False)]
    centre = (coord.min(0) + coord.max(0)) / 2
    d0 = np.linalg.norm(coord[:, None] - coord[None], axis=-1)
    for angle, scale, flip in passes:
        out = moved(cloud, angle, scale, flip)
        d = np.linalg.norm(out["coord"][:, None] - out["coord"][None], axis=-1)
        np.testing.assert_allclose(d, d0 * scale, atol=1e-4)  # a similarity: distances scale by `scale`
        np.testing.assert_allclose(out["coord"][:, 2], (coord[:, 2] - centre[2]) * scale + centre[2], atol=1e-4)
        np.testing.assert_allclose(np.linalg.norm(out["normal"], axis=1), 1.0, atol=1e-5)  # normals turned, not scaled
    flipped = moved(cloud, 0.0, 1.0, True)
    np.testing.assert_allclose(flipped["coord"][:, :2], 2 * centre[:2] - coord[:, :2], atol=1e-4)
