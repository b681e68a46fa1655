"""Class-agnostic instance segmentation: proposal clustering, the offset/foreground loss, the head, the evaluator
(perfect votes give AP 1 on a real scan) and `pcdag eval graphs/eval/scannet-insseg.yaml` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import cdist

from pcdag.cli import main
from pcdag.graphs.batch import Encoded, MultiViewBatch, PointBatch
from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.device import StepContext
from pcdag.graphs.evaluation import EvalContext
from pcdag.graphs.params import ParamError
from pcdag.nodes.evaluators.instance_segmentation import InstanceSegmentationEval, ground_truth
from pcdag.nodes.heads.instance_head import InstanceHead, point_predictions
from pcdag.nodes.heads.instance_loss import InstanceLoss, centre_offsets
from pcdag.ops.instance_clustering import (
    cluster_proposals,
    first_appearance,
    proposal_masks,
    radius_components,
)

REPO = Path(__file__).resolve().parents[1]
STUFF = [-1, 0, 1]
CTX = StepContext(0, 1, torch.Generator().manual_seed(0), torch.device("cpu"))


# ------------------------------------------------------------------------------------------------- clustering


def blob(rng: np.random.Generator, centre, n: int, spread: float = 0.01) -> np.ndarray:
    return (np.asarray(centre) + rng.normal(0, spread, (n, 3))).astype(np.float32)  # [n, 3]


def test_two_blobs_give_two_proposals_scored_by_their_mean_probability() -> None:
    rng = np.random.default_rng(0)
    points = np.concatenate([blob(rng, (0, 0, 0), 80), blob(rng, (1, 0, 0), 60), blob(rng, (0, 2, 0), 5)])
    prob = np.concatenate([np.full(80, 0.9), np.full(60, 0.6), np.full(5, 0.99)])
    labels, scores = cluster_proposals(points, prob, radius=0.05, min_points=10)
    assert labels.tolist() == [0] * 80 + [1] * 60 + [-1] * 5  # the 5-point blob is below min_points
    np.testing.assert_allclose(scores, [0.9, 0.6])
    masks = proposal_masks(labels, len(scores))
    assert masks.shape == (2, 145) and masks.sum(axis=1).tolist() == [80, 60] and not masks[:, 140:].any()


def test_min_points_keeps_exactly_the_large_enough_clusters() -> None:
    rng = np.random.default_rng(1)
    sizes = [3, 12, 7, 30]
    points = np.concatenate([blob(rng, (2.0 * i, 0, 0), n) for i, n in enumerate(sizes)])
    for min_points in (1, 7, 8, 30, 31):
        labels, scores = cluster_proposals(points, np.ones(len(points)), 0.1, min_points)
        kept = [n for n in sizes if n >= min_points]
        assert np.bincount(labels[labels >= 0], minlength=len(kept)).tolist() == kept
        assert len(scores) == len(kept)


@settings(max_examples=40, deadline=None)
@given(d=st.floats(0.001, 1.0), radius=st.floats(0.001, 1.0), cap=st.sampled_from([0, 1, 4]))
def test_two_points_are_linked_exactly_when_within_the_radius(d: float, radius: float, cap: int) -> None:
    assume(abs(d - radius) > 1e-9)
    direction = np.array([0.6, 0.0, 0.8])
    points = np.stack([np.zeros(3), d * direction, 10 + np.zeros(3)])  # a third point far away (cap < K - 1)
    labels = radius_components(points, radius, max_neighbours=cap)
    assert (labels[0] == labels[1]) == (d <= radius)
    assert labels[2] not in labels[:2]


def brute_force_components(points: np.ndarray, radius: float) -> np.ndarray:
    near = cdist(points, points) <= radius  # [K, K]
    return first_appearance(connected_components(near, directed=False)[1])


coords = arrays(np.float64, st.tuples(st.integers(1, 60), st.just(3)), elements=st.floats(0.0, 1.0, width=32))


@settings(max_examples=40, deadline=None)
@given(points=coords, radius=st.floats(0.02, 0.4))
def test_exact_components_match_brute_force_and_the_capped_graph_never_merges_more(points, radius) -> None:
    dist = cdist(points, points)
    assume(not np.any(np.abs(dist - radius) < 1e-9))
    exact = radius_components(points, radius, max_neighbours=0)
    assert np.array_equal(exact, brute_force_components(points, radius))
    degree = int((dist <= radius).sum(axis=1).max()) - 1
    assert np.array_equal(radius_components(points, radius, max_neighbours=max(degree, 1)), exact)
    capped = radius_components(points, radius, max_neighbours=2)
    pairs = np.unique(np.stack([capped, exact], axis=1), axis=0)  # [C, 2]: capped component → exact component
    assert len(np.unique(pairs[:, 0])) == len(pairs)  # each capped component lies inside one exact component


def test_a_collapsed_instance_stays_one_proposal_whatever_the_cap() -> None:
    # ten coincident pairs 1.5 mm apart: each point's nearest neighbour is its twin, so a graph capped at one
    # neighbour per point alone would make ten proposals; the radius / √3 cells keep the instance whole
    line = np.stack([0.001 + 0.0015 * np.arange(10), np.full(10, 0.001), np.full(10, 0.001)], axis=1)  # [10, 3]
    points = np.concatenate([np.repeat(line, 2, axis=0), [[3.0, 0.0, 0.0]]])  # [21, 3]
    labels = radius_components(points, 0.03, max_neighbours=1)
    assert labels.tolist() == [0] * 20 + [1]
    rng = np.random.default_rng(2)
    blobs = np.concatenate([np.zeros((500, 3)), blob(rng, (0.004, 0, 0), 500, 0.002), blob(rng, (3, 0, 0), 40)])
    labels = radius_components(blobs, 0.03, max_neighbours=3)
    assert len(np.unique(labels[:1000])) == 1 and labels[1000] != labels[0]


def test_the_radius_is_inclusive_in_both_graphs() -> None:
    points = np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [9.0, 9.0, 9.0]])  # exactly 0.5 m apart
    for cap in (0, 1):
        assert radius_components(points, 0.5, max_neighbours=cap).tolist() == [0, 0, 1]


def test_bad_clustering_input_is_named() -> None:
    with pytest.raises(ValueError, match=r"\[K, 3\]"):
        radius_components(np.zeros((4, 2)), 0.1)
    with pytest.raises(ValueError, match="NaN"):
        radius_components(np.full((4, 3), np.nan), 0.1)
    with pytest.raises(ValueError, match="radius must be positive"):
        radius_components(np.zeros((4, 3)), 0.0)
    with pytest.raises(ValueError, match="3 points but 2 foreground"):
        cluster_proposals(np.zeros((3, 3)), np.ones(2), 0.1, 1)
    assert radius_components(np.zeros((0, 3)), 0.1).shape == (0,)


# ------------------------------------------------------------------------------------------------------ loss


def brute_force_offsets(coord: np.ndarray, instance: np.ndarray, sample: np.ndarray) -> np.ndarray:
    target = np.zeros_like(coord)
    for i in range(len(coord)):  # deliberately the slow, obvious way
        if instance[i] >= 0:
            same = (instance == instance[i]) & (sample == sample[i])
            target[i] = coord[same].mean(axis=0) - coord[i]
    return target


def views_of(coord: np.ndarray, counts: list[int], **labels: np.ndarray) -> MultiViewBatch:
    c = torch.from_numpy(coord.astype(np.float32))
    offset = torch.cumsum(torch.tensor(counts), 0)
    extra = {k: torch.from_numpy(v.astype(np.int64)) for k, v in labels.items()}
    points = PointBatch(coord=c, feat=c.clone(), offset=offset, extra=extra)
    return MultiViewBatch(points, None, tuple(f"s{i}" for i in range(len(counts))), 1, 0)


batches = st.lists(st.integers(1, 12), min_size=1, max_size=3).flatmap(
    lambda counts: st.tuples(
        st.just(counts),
        arrays(np.float64, (sum(counts), 3), elements=st.floats(-3, 3, width=32)),
        arrays(np.int64, (sum(counts),), elements=st.integers(-1, 3)),
    )
)


@settings(max_examples=40, deadline=None)
@given(batch=batches)
def test_target_offsets_equal_the_brute_force_centres_per_view(batch) -> None:
    counts, coord, instance = batch
    sample = np.repeat(np.arange(len(counts)), counts)  # the same instance id in two views: two instances
    got = centre_offsets(torch.from_numpy(coord), torch.from_numpy(instance), torch.from_numpy(sample))
    np.testing.assert_allclose(got.numpy(), brute_force_offsets(coord, instance, sample), atol=1e-9)


def encoded(feat: torch.Tensor, inverse: torch.Tensor | None = None) -> Encoded:
    extra = {} if inverse is None else {"inverse": inverse}
    return Encoded(feat, torch.zeros(len(feat), 3), None, torch.tensor([len(feat)]), extra=extra)


@settings(max_examples=40, deadline=None)
@given(batch=batches, big=st.floats(25.0, 60.0))
def test_the_loss_is_zero_when_the_predictions_are_the_targets(batch, big: float) -> None:
    counts, coord, instance = batch
    segment = np.where(instance == 2, 0, 5)  # instance 2 lies on a wall: stuff, no instance
    views = views_of(coord, counts, instance=instance, segment=segment)
    truth = torch.from_numpy(np.where(segment == 0, -1, instance))
    target = centre_offsets(views.global_views.coord, truth, views.global_views.batch)  # [N, 3]
    logit = torch.where(truth >= 0, big, -big)[:, None]  # [N, 1]
    loss = InstanceLoss().forward(CTX, None, predictions=encoded(torch.cat([target, logit], 1)), views=views)["loss"]
    assert float(loss.value) < 1e-5 and float(loss.terms["acc"]) == 1.0
    wrong = torch.cat([target + 0.1, -logit], 1)
    worse = InstanceLoss().forward(CTX, None, predictions=encoded(wrong), views=views)["loss"]
    assert float(worse.terms["foreground"]) > 20 and float(worse.value) > float(loss.value)


def test_stuff_points_are_background_and_every_term_takes_gradient() -> None:
    coord = np.array([[0, 0, 0], [2, 0, 0], [5, 5, 0], [5, 6, 0]], np.float64)
    views = views_of(coord, [4], instance=np.array([0, 0, 1, 1]), segment=np.array([3, 3, 1, 1]))
    pred = torch.zeros(4, 4, requires_grad=True)
    out = InstanceLoss(direction_weight=0.0).forward(CTX, None, predictions=encoded(pred), views=views)["loss"]
    # instance 1 is floor (segment 1): no instance; instance 0 has centre x = 1: targets +1 and -1 in x
    assert float(out.terms["offset"]) == pytest.approx(1.0) and float(out.terms["instance_share"]) == 0.5
    out.value.backward()
    assert pred.grad is not None and pred.grad[:2, 0].abs().sum() > 0 and pred.grad[2:, :3].abs().sum() == 0
    assert (pred.grad[:, 3] != 0).all()


def test_missing_labels_are_named() -> None:
    views = views_of(np.zeros((3, 3)), [3], instance=np.zeros(3))
    with pytest.raises(ValueError, match=r"no 'segment' labels.*labels: \[instance, segment\]"):
        InstanceLoss().forward(CTX, None, predictions=encoded(torch.zeros(3, 4)), views=views)
    loss = InstanceLoss(stuff_classes=[]).forward(CTX, None, predictions=encoded(torch.zeros(3, 4)), views=views)
    assert torch.isfinite(loss["loss"].value)


@pytest.mark.parametrize("bad", [[-2], ["wall"], [0, 0], [True], "0,1"])
def test_bad_stuff_classes_are_refused_naming_the_parameter(bad) -> None:
    for node in (InstanceLoss, InstanceSegmentationEval):
        with pytest.raises(ParamError, match="stuff_classes"):
            node(stuff_classes=bad)


# ------------------------------------------------------------------------------------------------------ head


class _Backbone(torch.nn.Module):
    out_channels = 16


def test_head_predicts_four_numbers_per_row_and_follows_the_inverse_map() -> None:
    head = InstanceHead(hidden=8)
    module = head.build({"backbone": _Backbone()})
    feat = torch.randn(5, 16)
    out = head.forward(CTX, module, features=encoded(feat, inverse=torch.tensor([0, 0, 4, 2, 1, 4])))["predictions"]
    assert out.feat.shape == (5, 4) and torch.equal(out.extra["inverse"], torch.tensor([0, 0, 4, 2, 1, 4]))
    offset, logit = point_predictions(out)
    assert offset.shape == (6, 3) and logit.shape == (6,)
    assert torch.equal(offset[2], out.feat[4, :3]) and logit[3] == out.feat[2, 3]
    with pytest.raises(ValueError, match=r"features have shape \[5, 7\], the head takes \[M, 16\]"):
        head.forward(CTX, module, features=encoded(torch.randn(5, 7)))
    with pytest.raises(ValueError, match="in_channels is 0"):
        InstanceHead().build({})


# ------------------------------------------------------------------------------------------------- evaluator


def real_scan(shared_data: Path, scene: str = "scene0007_00") -> PointCloud:
    d = shared_data / "scannet-mini" / "val" / scene
    fields = {"coord": np.load(d / "coord.npy"), "color": np.load(d / "color.npy")}
    fields |= {"segment": np.load(d / "segment20.npy").astype(np.int64), "instance": np.load(d / "instance.npy")}
    return PointCloud(fields, {"scene": scene})


def oracle(stuff: list[int]):
    """A predict() that votes perfectly: the offset to the centre of the instance and a confident logit."""

    def predict(sub: PointCloud) -> dict:
        truth = torch.from_numpy(ground_truth(sub, stuff, "oracle"))  # [M]
        coord = torch.from_numpy(sub["coord"])
        target = centre_offsets(coord, truth, torch.zeros_like(truth))
        logit = torch.where(truth >= 0, 20.0, -20.0)[:, None]
        return {"predictions": encoded(torch.cat([target, logit], 1))}

    return predict


def context(out: Path, cloud: PointCloud, predict) -> EvalContext:
    scene = cloud.meta["scene"]
    return EvalContext(
        out / "eval" / "evaluate", "val", lambda: iter([(scene, cloud)]), predict, lambda c: c, quiet=True
    )


def test_perfect_votes_give_ap_one(shared_data: Path, tmp_path: Path) -> None:
    result = InstanceSegmentationEval(pictures=1).evaluate(context(tmp_path, real_scan(shared_data), oracle(STUFF)))
    m = result.metrics
    assert m["n_gt"] >= 3 and m["n_pred"] == m["n_gt"] and m["ap"] == m["ap50"] == m["ap25"] == 1.0
    assert "| AP | AP50 | AP25 |" in result.markdown and len(result.pictures) == 1


def test_proposals_cover_every_original_point_of_their_voxels(shared_data: Path, tmp_path: Path) -> None:
    cloud = real_scan(shared_data)
    m = InstanceSegmentationEval(grid_size=0.05, pictures=0).evaluate(context(tmp_path, cloud, oracle(STUFF))).metrics
    assert m["ap50"] == 1.0 and m["ap"] < 1.0  # a coarse grid blurs the masks' borders
    labels = np.load(tmp_path / "eval" / "evaluate" / "predictions" / "scene0007_00.npy")  # [N]
    assert labels.shape == (len(cloud),) and labels.max() == m["n_pred"] + m["n_pred_small"] - 1
    cell = np.floor(cloud["coord"].astype(np.float64) / 0.05).astype(np.int64)  # [N, 3]
    voxel = np.unique(cell, axis=0, return_inverse=True)[1].ravel()  # [N]
    assert len(np.unique(np.stack([voxel, labels], 1), axis=0)) == voxel.max() + 1  # one proposal per voxel


def test_walls_and_floors_are_not_instances_unless_asked(shared_data: Path, tmp_path: Path) -> None:
    cloud = real_scan(shared_data)
    gt = ground_truth(cloud, STUFF, "test")
    assert (gt[np.isin(cloud["segment"], STUFF)] == -1).all() and (gt >= 0).any()
    assert (ground_truth(cloud, [], "test")[cloud["segment"] == 0] >= 0).any()  # ScanNet gives walls ids
    silent = oracle(STUFF)

    def nothing(sub: PointCloud) -> dict:
        pred = silent(sub)["predictions"]
        return {"predictions": encoded(torch.cat([pred.feat[:, :3], torch.full((len(pred.feat), 1), -5.0)], 1))}

    m = InstanceSegmentationEval(pictures=0).evaluate(context(tmp_path, cloud, nothing)).metrics
    assert m["n_pred"] == 0 and m["ap"] == m["ap50"] == m["ap25"] == 0.0


# ------------------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_pcdag_eval_insseg_writes_the_ap_table_and_metrics(scannet_eval_store: Path, tmp_path: Path) -> None:
    run, store = tmp_path / "run", scannet_eval_store  # conftest: 2 train + 2 val real scans with normals
    args = ["eval", str(REPO / "graphs" / "eval" / "scannet-insseg.yaml"), "--preset", "tiny", "--quiet"]
    args += ["--set", f"store.path={store}", "--set", "settings.train.steps=2", "--set", "evaluate.pictures=1"]
    args += ["--set", "settings.train.checkpoint_every=2", "--set", "settings.train.workers=1", "--out", str(run)]
    assert main(args) == 0
    report = (run / "report.md").read_text()
    assert "| AP | AP50 | AP25 |" in report and "InstanceSegmentationEval" in report
    assert "![scene-scene0006_00](eval/evaluate/scene-scene0006_00.png)" in report  # pictures: 1
    numbers = json.loads((run / "metrics.json").read_text())["evaluators"]["evaluate"]
    assert numbers["scenes"] == 2 and numbers["skipped"] == [] and numbers["n_gt"] > 0
    for key in ("ap", "ap50", "ap25"):
        assert 0.0 <= numbers[key] <= 1.0
    assert set(numbers["per_threshold"]) == {f"{t:.2f}" for t in (0.25, *np.arange(0.5, 0.95, 0.05))}
    assert (run / "eval" / "evaluate" / "scene-scene0006_00.png").stat().st_size > 10_000
    assert not (run / "eval" / "evaluate" / "scene-scene0007_00.png").exists()
    assert len(np.load(run / "eval" / "evaluate" / "predictions" / "scene0007_00.npy")) == 50_000
