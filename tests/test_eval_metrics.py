"""Evaluation metrics: the semantic confusion matrix (IoU, mIoU, absent classes) and ScanNet-style instance AP.

Hand-computed cases carry their arithmetic in comments; hypothesis checks the invariances, and a slow loop-by-loop
re-statement of ScanNet's matching rules (``_oracle_ap``) cross-checks the vectorised instance AP.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pcdag.ops.instance_ap import SCANNET_AP_THRESHOLDS, InstanceAP
from pcdag.ops.semantic_metrics import ConfusionMatrix, SegmentationScores, plot_confusion

# ----------------------------------------------------------------------------------------------------------------
# semantic segmentation: hand-computed cases


def _hand_matrix() -> ConfusionMatrix:
    cm = ConfusionMatrix(3)
    # kept points (target != -1): t = [0 0 0 0 1 1 1], p = [0 0 1 2 1 1 0]; the last point is ignored
    cm.update(np.array([0, 0, 1, 2, 1, 1, 0, 2]), np.array([0, 0, 0, 0, 1, 1, 1, -1]), where="scene_hand")
    return cm


def test_confusion_counts_by_hand():
    cm = _hand_matrix()
    # row a (gt 0): predicted a 2x, b 1x, c 1x; row b (gt 1): a 1x, b 2x; row c: no ground truth
    np.testing.assert_array_equal(cm.counts, [[2, 1, 1], [1, 2, 0], [0, 0, 0]])
    assert cm.counts.dtype == np.int64


def test_scores_by_hand_with_an_absent_class():
    s = _hand_matrix().scores(["a", "b", "c"])
    # IoU a = 2 / (gt 4 + pred 3 - 2) = 0.4; IoU b = 2 / (3 + 3 - 2) = 0.5; c has no ground truth: absent
    np.testing.assert_allclose(s.iou[:2], [0.4, 0.5])
    assert math.isnan(s.iou[2]) and math.isnan(s.acc[2])
    # Acc a = 2/4, Acc b = 2/3; mIoU over present classes = (0.4 + 0.5) / 2 = 0.45 (0.3 if c counted as 0)
    np.testing.assert_allclose(s.acc[:2], [0.5, 2 / 3])
    assert s.miou == pytest.approx(0.45)
    assert s.macc == pytest.approx((0.5 + 2 / 3) / 2)
    assert s.all_acc == pytest.approx(4 / 7)  # 4 correct of 7 kept points
    assert s.absent == ("c",)
    assert s.absent_predicted == {"c": 1}  # one point of class a was predicted as c
    np.testing.assert_array_equal(s.gt_points, [4, 3, 0])


def test_iou_is_total_intersection_over_total_union_not_a_mean_over_scenes():
    cm = ConfusionMatrix(2)
    cm.update(np.array([0, 0]), np.array([0, 0]), where="s1")  # class 0: IoU 1 in this scene alone
    cm.update(np.array([1, 1, 1, 1, 1, 1]), np.array([0, 0, 0, 0, 1, 1]), where="s2")  # class 0: IoU 0 alone
    # class 0 over the set: intersection 2, gt 6, pred 2 -> 2 / (6 + 2 - 2) = 1/3 (the mean of scenes would be 0.5)
    # class 1: intersection 2, gt 2, pred 6 -> 2 / 6 = 1/3
    s = cm.scores()
    np.testing.assert_allclose(s.iou, [1 / 3, 1 / 3])
    assert s.class_names == ("class 0", "class 1")


def test_json_markdown_and_round_trip():
    cm = _hand_matrix()
    back = ConfusionMatrix.from_dict(json.loads(json.dumps(cm.to_dict())))
    np.testing.assert_array_equal(back.counts, cm.counts)
    assert (back.n_classes, back.ignore_index) == (3, -1)
    s = cm.scores(["a", "b", "c"])
    js = json.loads(json.dumps(s.to_json(), allow_nan=False))  # NaN must have become None
    assert js["classes"]["c"] == {"iou": None, "acc": None, "gt_points": 0, "pred_points": 1, "absent": True}
    assert js["miou"] == pytest.approx(0.45) and js["absent"] == ["c"] and js["absent_predicted"] == {"c": 1}
    table = s.markdown_table()
    assert "| a | 40.00 | 50.00 | 4 |" in table
    assert "| c | absent (1 points predicted) | absent | 0 |" in table
    assert "mIoU 45.00 %" in table and "over 2 of 3 classes" in table and s.summary() in table


def test_merge_and_bad_saved_matrices():
    a, b = _hand_matrix(), _hand_matrix()
    np.testing.assert_array_equal(a.merge(b).counts, 2 * b.counts)
    with pytest.raises(ValueError, match="cannot merge"):
        a.merge(ConfusionMatrix(4))
    with pytest.raises(ValueError, match="shape"):
        ConfusionMatrix.from_dict({"n_classes": 3, "counts": [[1, 2], [3, 4]]})
    with pytest.raises(ValueError, match="n_classes"):
        ConfusionMatrix.from_dict({"counts": [[1]]})


def test_bad_updates_name_the_scene_value_and_range():
    cm = ConfusionMatrix(20)
    with pytest.raises(ValueError, match=r"'scene0011_00'.*target.*25.*0\.\.19"):
        cm.update(np.array([0, 1]), np.array([0, 25]), where="scene0011_00")
    with pytest.raises(ValueError, match=r"'scene0011_00'.*pred.*-3.*0\.\.19"):
        cm.update(np.array([0, -3]), np.array([0, 1]), where="scene0011_00")
    with pytest.raises(ValueError, match=r"'s'.*3 points.*2"):
        cm.update(np.array([0, 1, 2]), np.array([0, 1]), where="s")
    with pytest.raises(ValueError, match="integer labels"):
        cm.update(np.array([0.0, 1.0]), np.array([0, 1]), where="s")
    with pytest.raises(ValueError, match="ignore_index"):
        ConfusionMatrix(5, ignore_index=2)
    assert cm.counts.sum() == 0  # failed updates changed nothing


def test_plot_confusion_writes_a_png_atomically(tmp_path):
    cm = _hand_matrix()
    out = tmp_path / "pics" / "confusion.png"
    plot_confusion(cm.counts, ["a", "b", "c"], out, title="hand case")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["confusion.png"]  # no temporary file left behind
    with pytest.raises(ValueError, match="one name per row"):
        plot_confusion(cm.counts, ["a", "b"], out)


# ----------------------------------------------------------------------------------------------------------------
# semantic segmentation: properties

N_CLASSES = 5


@st.composite
def labelled_points(draw, max_points: int = 120):
    """(pred, target) int arrays over N_CLASSES classes; some targets are the ignore index -1."""
    n = draw(st.integers(1, max_points))
    target = np.array(draw(st.lists(st.integers(-1, N_CLASSES - 1), min_size=n, max_size=n)))
    pred = np.array(draw(st.lists(st.integers(0, N_CLASSES - 1), min_size=n, max_size=n)))
    return pred, target


def _scores(pred: np.ndarray, target: np.ndarray) -> SegmentationScores:
    cm = ConfusionMatrix(N_CLASSES)
    cm.update(pred, target, where="prop")
    return cm.scores()


@given(labelled_points())
def test_perfect_prediction_has_miou_one(pt):
    _, target = pt
    pred = np.where(target >= 0, target, 0)
    s = _scores(pred, target)
    if (target >= 0).any():
        assert s.miou == 1.0 and s.macc == 1.0 and s.all_acc == 1.0
    else:
        assert math.isnan(s.miou)  # nothing to score


@given(labelled_points(), st.randoms(use_true_random=False))
def test_invariant_under_permuting_points(pt, rnd):
    pred, target = pt
    order = np.array(rnd.sample(range(len(pred)), len(pred)))
    a, b = _scores(pred, target), _scores(pred[order], target[order])
    np.testing.assert_array_equal(a.iou, b.iou)
    assert a.miou == b.miou or (math.isnan(a.miou) and math.isnan(b.miou))


@given(labelled_points(), st.lists(st.integers(0, 120), max_size=5), st.randoms(use_true_random=False))
def test_invariant_under_splitting_into_scenes_merged_in_any_order(pt, cuts, rnd):
    pred, target = pt
    parts = np.split(np.arange(len(pred)), sorted(c % (len(pred) + 1) for c in cuts))  # scenes
    rnd.shuffle(parts)
    whole, merged = ConfusionMatrix(N_CLASSES), ConfusionMatrix(N_CLASSES)
    whole.update(pred, target)
    for k, idx in enumerate(parts):
        scene = ConfusionMatrix(N_CLASSES)
        scene.update(pred[idx], target[idx], where=f"scene {k}")
        merged.merge(scene)
    np.testing.assert_array_equal(merged.counts, whole.counts)
    np.testing.assert_array_equal(merged.scores().iou, whole.scores().iou)


@given(labelled_points(), st.permutations(range(N_CLASSES)))
def test_relabelling_classes_permutes_per_class_iou(pt, perm):
    pred, target = pt
    perm = np.array(perm)  # class c becomes perm[c]
    a = _scores(pred, target)
    b = _scores(perm[pred], np.where(target >= 0, perm[np.maximum(target, 0)], -1))
    np.testing.assert_array_equal(b.iou[perm], a.iou)  # NaN in the same places
    np.testing.assert_array_equal(b.acc[perm], a.acc)
    assert a.miou == pytest.approx(b.miou, nan_ok=True)


@given(labelled_points())
def test_absent_classes_are_nan_and_left_out_of_the_means(pt):
    pred, target = pt
    s = _scores(pred, target)
    has_gt = np.isin(np.arange(N_CLASSES), target)
    assert s.absent == tuple(f"class {c}" for c in np.flatnonzero(~has_gt))
    assert np.isnan(s.iou[~has_gt]).all() and not np.isnan(s.iou[has_gt]).any()
    for c in np.flatnonzero(~has_gt):
        assert s.absent_predicted[f"class {c}"] == int(((pred == c) & (target >= 0)).sum())
    if has_gt.any():
        assert s.miou == pytest.approx(float(np.mean(s.iou[has_gt])))
        assert s.macc == pytest.approx(float(np.mean(s.acc[has_gt])))


@given(labelled_points(), st.lists(st.integers(-50, 50), min_size=1, max_size=30))
def test_ignored_points_never_matter(pt, junk):
    pred, target = pt
    junk = np.array(junk)  # any prediction at all, even out of range, at ignored points
    a, b = ConfusionMatrix(N_CLASSES), ConfusionMatrix(N_CLASSES)
    a.update(pred, target)
    b.update(np.r_[junk, pred], np.r_[np.full(len(junk), -1), target], where="with junk")
    np.testing.assert_array_equal(a.counts, b.counts)


@given(labelled_points(), st.integers(0, 200), st.sampled_from(["target", "pred"]), st.text(min_size=1, max_size=12))
def test_out_of_range_labels_raise_naming_the_scene(pt, k, which, scene):
    pred, target = pt
    bad = N_CLASSES + k if k % 2 else -2 - k  # never a class, never the ignore index
    target = target.copy()
    target[0] = 0 if which == "pred" else bad  # the bad prediction must sit on a kept point
    if which == "pred":
        pred = pred.copy()
        pred[0] = bad
    cm = ConfusionMatrix(N_CLASSES)
    with pytest.raises(ValueError) as info:
        cm.update(pred, target, where=scene)
    msg = str(info.value)
    assert repr(scene) in msg and which in msg and str(bad) in msg and f"0..{N_CLASSES - 1}" in msg


# ----------------------------------------------------------------------------------------------------------------
# instance AP: hand-computed cases (min region size 100 points)


def _ap(gt: np.ndarray, preds: list[np.ndarray], scores: list[float], **kw) -> dict:
    acc = InstanceAP(**kw)
    acc.add(gt, [np.asarray(p) for p in preds], scores, scene="hand")
    return acc.compute()


def _gt_a100_c400() -> np.ndarray:
    return np.r_[np.zeros(100, int), np.ones(400, int)]  # GT A = points 0..99, GT C = points 100..499


def test_ap_thresholds_are_scannets():
    # the script's np.arange(0.5, 0.95, 0.05) stops before 0.95: nine thresholds 0.50 .. 0.90
    assert len(SCANNET_AP_THRESHOLDS) == 9
    np.testing.assert_allclose(SCANNET_AP_THRESHOLDS, [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9])
    r = _ap(_gt_a100_c400(), [np.arange(100)], [0.5])
    assert sorted(r["per_threshold"]) == [0.25, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9]


def test_false_positive_ranked_above_true_positive():
    # p1 = A exactly (IoU 1) -> TP at 0.8; p2 = 100 points of C: IoU 100 / (400 + 100 - 100) = 0.25, not > 0.25,
    # so unmatched at every threshold, on no ignored point -> FP at 0.9; C is a miss. 2 GT instances.
    # ascending confidence: 0.8 (TP), 0.9 (FP)
    #   t=0.8: tp 1 fp 1 fn 1 -> P 1/2, R 1/2;  t=0.9: tp 0 fp 1 fn 2 -> P 0, R 0;  artificial end: P 1, R 0
    #   widths (r_{k-1} - r_{k+1}) / 2 with r = [.5, 0, 0]: (.5 - 0)/2, (.5 - 0)/2, (0 - 0)/2 = .25, .25, 0
    #   AP = .5 * .25 + 0 * .25 + 1 * 0 = 0.125
    r = _ap(_gt_a100_c400(), [np.arange(100), np.arange(100, 200)], [0.8, 0.9])
    assert r["ap"] == pytest.approx(0.125) and r["ap50"] == pytest.approx(0.125) and r["ap25"] == pytest.approx(0.125)
    assert (r["n_gt"], r["n_pred"]) == (2, 2)


def test_false_positive_ranked_below_true_positive():
    # same masks, confidences swapped: ascending 0.8 (FP), 0.9 (TP)
    #   t=0.8: tp 1 fp 1 fn 1 -> P .5, R .5;  t=0.9: tp 1 fp 0 fn 1 -> P 1, R .5;  end: P 1, R 0
    #   r = [.5, .5, 0] -> widths (.5 - .5)/2, (.5 - 0)/2, (.5 - 0)/2 = 0, .25, .25;  AP = 0 + .25 + .25 = 0.5
    r = _ap(_gt_a100_c400(), [np.arange(100), np.arange(100, 200)], [0.9, 0.8])
    assert r["ap"] == pytest.approx(0.5) and r["ap50"] == pytest.approx(0.5) and r["ap25"] == pytest.approx(0.5)


def test_duplicate_prediction_is_a_false_positive_below_the_true_one():
    # one GT of 200 points; p1 = all of it (conf .6); p2 = 175 of its points (IoU .875, conf .9).
    # thresholds <= .85: both match; the TP takes the higher confidence .9, the duplicate is an FP at .6:
    #   ascending .6 (FP), .9 (TP): t=.6: P 1/2 R 1; t=.9: P 1 R 1; end P 1 R 0
    #   r = [1, 1, 0] -> widths 0, .5, .5 -> AP = 1
    # threshold .9: p2 no longer matches (.875 <= .9): p1 TP at .6, p2 an unmatched FP at .9:
    #   t=.6: P 1/2 R 1; t=.9: tp 0 -> P 0 R 0; end P 1 R 0 -> widths .5, .5, 0 -> AP = .5 * .5 = .25
    # AP = (8 * 1 + .25) / 9
    r = _ap(np.zeros(200, int), [np.arange(200), np.arange(175)], [0.6, 0.9])
    assert r["per_threshold"][0.9] == pytest.approx(0.25)
    assert r["ap"] == pytest.approx(8.25 / 9)
    assert r["ap50"] == 1.0 and r["ap25"] == 1.0


def test_prediction_on_a_small_ground_truth_instance_is_ignored():
    # GT A: 200 points (0..199); GT S: 50 points (200..249, small: < 100); void: 60 points (250..309)
    gt = np.r_[np.zeros(200, int), np.full(50, 7), np.full(60, -1)]
    # p2 = S + the void = 110 points: IoU with S 50 / 110 = .45 (matches only S at .25, ignored there);
    # above .45 unmatched, but all its points are ignored (110 / 110 > th) -> never a false positive
    r = _ap(gt, [np.arange(200), np.arange(200, 310)], [0.5, 0.9])
    assert r["ap"] == 1.0 and r["ap50"] == 1.0 and r["ap25"] == 1.0
    assert (r["n_gt"], r["n_gt_small"]) == (1, 1)
    # p3 = 30 points of S + 90 points of A's twin B (a second big GT): ignored share 30 / 120 = .25 <= th: an FP
    gt = np.r_[gt, np.full(400, 3)]  # GT B: points 310..709
    p3 = np.r_[np.arange(200, 230), np.arange(310, 400)]  # IoU with B: 90 / (400 + 120 - 90) = .21
    with_fp = _ap(gt, [np.arange(200), np.arange(310, 710), p3], [0.5, 0.4, 0.9])
    # ascending .4 TP, .5 TP, .9 FP; 2 GT: t=.4: tp 2 fp 1 -> P 2/3 R 1; t=.5: tp 1 fp 1 -> P 1/2 R 1/2;
    #   t=.9: tp 0 fp 1 -> P 0 R 0; end P 1 R 0.  r = [1, .5, 0, 0] -> widths (1 - .5)/2, (1 - 0)/2, (.5 - 0)/2,
    #   (0 - 0)/2 = .25, .5, .25, 0 -> AP = 2/3 * .25 + 1/2 * .5 + 0 * .25 + 1 * 0 = 1/6 + 1/4 = 5/12
    assert with_fp["ap"] == pytest.approx(5 / 12) and with_fp["ap25"] == pytest.approx(5 / 12)


def test_predictions_below_the_minimum_size_are_dropped():
    gt = _gt_a100_c400()
    r = _ap(gt, [np.arange(100), np.arange(100, 500), np.arange(100, 199)], [0.5, 0.4, 0.9])  # last: 99 points
    assert r["ap"] == 1.0 and (r["n_pred"], r["n_pred_small"]) == (2, 1)


def test_empty_predictions_give_zero_and_no_ground_truth_gives_nan():
    r = _ap(_gt_a100_c400(), [], [])
    assert (r["ap"], r["ap50"], r["ap25"], r["n_pred"]) == (0.0, 0.0, 0.0, 0)
    r = _ap(_gt_a100_c400(), np.zeros((0, 500), bool), np.zeros(0))
    assert r["ap"] == 0.0
    only_void = _ap(np.full(300, -1), [np.arange(150)], [0.3])
    assert math.isnan(only_void["ap"]) and only_void["n_gt"] == 0
    assert math.isnan(InstanceAP().compute()["ap"])


def test_greedy_matching_can_make_ap25_lower_than_ap50():
    # GT 1 = points 0..199, GT 2 = points 200..399. p1 (conf .9) = 120 points of GT 1 + all of GT 2:
    # IoU 120 / (200 + 320 - 120) = .3 with GT 1 and 200 / 320 = .625 with GT 2; p2 (conf .8) = 140 points of
    # GT 1: IoU .7. At .5 each GT gets its own prediction: AP50 = 1. At .25 GT 1 (visited first) takes p1, the
    # higher confidence, p2 is its duplicate (FP at .8) and GT 2 is missed:
    #   ascending .8 FP, .9 TP: t=.8: P 1/2 R 1/2; t=.9: P 1 R 1/2; end P 1 R 0 -> widths 0, .25, .25 -> AP25 = .5
    gt = np.r_[np.full(200, 1), np.full(200, 2)]
    r = _ap(gt, [np.arange(80, 400), np.arange(140)], [0.9, 0.8])
    assert r["ap50"] == 1.0 and r["ap25"] == pytest.approx(0.5)


def test_index_arrays_and_boolean_masks_agree():
    gt = _gt_a100_c400()
    preds = [np.arange(100), np.arange(150, 450)]
    masks = np.zeros((2, 500), bool)
    for p, idx in enumerate(preds):
        masks[p, idx] = True
    a, b = InstanceAP(), InstanceAP()
    a.add(gt, preds, [0.3, 0.7])
    b.add(gt, masks, np.array([0.3, 0.7]))
    assert a.compute() == b.compute()


def test_bad_instance_inputs_name_the_scene():
    gt = _gt_a100_c400()
    acc = InstanceAP()
    cases = [
        (gt, np.zeros((1, 499), bool), [0.5], "shape"),
        (gt, np.zeros((2, 500), bool), [0.5], "2 masks but 1 confidences"),
        (gt, np.zeros((1, 500), bool), [float("nan")], "finite"),
        (gt - 2, np.zeros((1, 500), bool), [0.5], "-1 for no instance"),
        (gt.astype(float), np.zeros((1, 500), bool), [0.5], "integer ids"),
        (gt, np.zeros((1, 500), np.float32), [0.5], "boolean"),
        (gt, [np.array([3, 500])], [0.5], "outside 0..499"),
    ]
    for g, m, s, what in cases:
        with pytest.raises(ValueError, match=rf"scene 'scene0707_00'.*{what}"):
            acc.add(g, m, s, scene="scene0707_00")
    assert acc.compute()["n_scenes"] == 0
    with pytest.raises(ValueError, match="min_region_size"):
        InstanceAP(min_region_size=0)


# ----------------------------------------------------------------------------------------------------------------
# instance AP: properties, and a cross-check against a loop-by-loop statement of the script's rules


def _oracle_ap(scenes: list[tuple[np.ndarray, list[np.ndarray], list[float]]], th: float, min_size: int) -> float:
    """ScanNet's rules as plain loops over instances (predictions listed by decreasing confidence)."""
    y_true: list[int] = []
    y_score: list[float] = []
    misses, any_gt, any_pred = 0, False, False
    for gt, preds, scores in scenes:
        inst = {int(i): set(np.flatnonzero(gt == i).tolist()) for i in np.unique(gt) if i >= 0}
        void = set(np.flatnonzero(gt == -1).tolist())
        kept = [(set(map(int, p)), s) for p, s in zip(preds, scores, strict=True) if len(set(map(int, p))) >= min_size]
        kept = sorted(kept, key=lambda ps: -ps[1])  # stable: ties keep their order
        any_pred |= bool(kept)

        def iou(pts: set, g: int) -> float:
            inter = len(pts & inst[g])  # noqa: B023 (used within this iteration only)
            return inter / (len(pts) + len(inst[g]) - inter)  # noqa: B023

        used = [False] * len(kept)
        for g in sorted(inst):
            if len(inst[g]) < min_size:
                continue
            any_gt = True
            best = None
            for k, (pts, s) in enumerate(kept):
                if used[k] or iou(pts, g) <= th:
                    continue
                if best is None:
                    best, used[k] = s, True
                else:  # duplicate: the lower of the two scores becomes a false positive
                    y_true.append(0)
                    y_score.append(min(best, s))
                    best = max(best, s)
            if best is None:
                misses += 1
            else:
                y_true.append(1)
                y_score.append(best)
        for pts, s in kept:
            if any(iou(pts, g) > th for g in inst):
                continue
            ignored = len(pts & void) + sum(len(pts & inst[g]) for g in inst if len(inst[g]) < min_size)
            if ignored / len(pts) <= th:
                y_true.append(0)
                y_score.append(s)
    if not any_gt:
        return math.nan
    if not any_pred or not y_true:
        return 0.0
    order = np.argsort(y_score)
    true_sorted = np.array(y_true, float)[order]
    cum = np.append(np.cumsum(true_sorted), 0.0)  # index -1 reads the 0 at the end
    _, first = np.unique(np.array(y_score)[order], return_index=True)
    precision, recall = [], []
    for i in first:
        tp = cum[-2] - cum[i - 1]
        fp = len(y_true) - i - tp
        precision.append(tp / (tp + fp))
        recall.append(tp / (tp + cum[i - 1] + misses))
    precision.append(1.0)
    recall.append(0.0)
    steps = np.convolve([recall[0], *recall, 0.0], [-0.5, 0.0, 0.5], "valid")
    return float(np.dot(precision, steps))


MIN_SIZE = 100


@st.composite
def instance_scene(draw, one_instance_per_prediction: bool = False):
    """(gt ids [N], index arrays, confidences) with instances of 30..260 points, void points, overlapping masks."""
    sizes = draw(st.lists(st.integers(30, 260), min_size=1, max_size=4))
    n_void = draw(st.integers(0, 150))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ids = rng.choice(1000, len(sizes), replace=False)  # arbitrary instance ids
    gt = np.r_[np.repeat(ids, sizes), np.full(n_void, -1)][rng.permutation(sum(sizes) + n_void)]  # [N]
    members = [np.flatnonzero(gt == i) for i in ids] + [np.flatnonzero(gt == -1)]  # points of each, void last
    preds = []
    for g in range(len(sizes)):
        for _ in range(draw(st.integers(0, 1 if one_instance_per_prediction else 2))):
            parts = [rng.choice(members[g], int(draw(st.floats(0.05, 1.0)) * sizes[g]), replace=False)]
            if n_void and draw(st.booleans()):
                parts.append(rng.choice(members[-1], draw(st.integers(1, n_void)), replace=False))
            if not one_instance_per_prediction and draw(st.booleans()):  # spill over into another instance
                h = draw(st.integers(0, len(sizes) - 1))
                parts.append(rng.choice(members[h], int(draw(st.floats(0.0, 1.0)) * sizes[h]), replace=False))
            preds.append(np.unique(np.concatenate(parts)))
    if n_void and draw(st.booleans()):  # a prediction on void points only
        preds.append(members[-1][: draw(st.integers(1, n_void))])
    scores = [draw(st.integers(0, 10)) / 10 for _ in preds]  # coarse: ties happen
    return gt, preds, scores


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, dict):
            _assert_same(value, b[key])
        else:
            assert value == pytest.approx(b[key], nan_ok=True, abs=1e-12), key


def _compute(scenes, **kw) -> dict:
    acc = InstanceAP(min_region_size=MIN_SIZE, **kw)
    for k, (gt, preds, scores) in enumerate(scenes):
        acc.add(gt, preds, scores, scene=f"s{k}")
    return acc.compute()


@given(st.lists(instance_scene(), min_size=1, max_size=3))
def test_instance_ap_matches_a_loop_statement_of_the_script(scenes):
    r = _compute(scenes)
    for th, value in r["per_threshold"].items():
        assert value == pytest.approx(_oracle_ap(scenes, th, MIN_SIZE), nan_ok=True, abs=1e-12), th


@given(st.lists(instance_scene(), min_size=1, max_size=3), st.randoms(use_true_random=False))
def test_perfect_predictions_give_one(scenes, rnd):
    perfect = []
    for gt, _, _ in scenes:
        ids = np.unique(gt[gt >= 0])
        perfect.append((gt, [np.flatnonzero(gt == i) for i in ids], [rnd.random() for _ in ids]))
    r = _compute(perfect)
    if r["n_gt"]:
        assert r["ap"] == pytest.approx(1.0) and r["ap50"] == pytest.approx(1.0) and r["ap25"] == pytest.approx(1.0)
    else:
        assert math.isnan(r["ap"])  # every instance was below the minimum size


@given(st.lists(instance_scene(), min_size=1, max_size=3))
def test_ap_is_invariant_to_a_monotone_transform_of_the_scores(scenes):
    squashed = [(gt, preds, [3.0 * s**3 + s - 7.0 for s in scores]) for gt, preds, scores in scenes]
    _assert_same(_compute(scenes), _compute(squashed))


@given(st.lists(instance_scene(), min_size=1, max_size=3), st.randoms(use_true_random=False))
def test_ap_does_not_depend_on_scene_order_or_merging(scenes, rnd):
    shuffled = rnd.sample(scenes, len(scenes))
    merged = InstanceAP(min_region_size=MIN_SIZE)
    for k, (gt, preds, scores) in enumerate(shuffled):
        part = InstanceAP(min_region_size=MIN_SIZE)
        part.add(gt, preds, scores, scene=f"s{k}")
        merged.merge(part)
    _assert_same(merged.compute(), _compute(scenes))


@given(st.lists(instance_scene(), min_size=1, max_size=3))
def test_ap_bounds_ap50_at_least_ap(scenes):
    r = _compute(scenes)
    if not math.isnan(r["ap"]):
        assert 0.0 <= r["ap"] <= r["ap50"] + 1e-12 and r["ap50"] <= 1.0 + 1e-12 and r["ap25"] <= 1.0 + 1e-12


@given(st.lists(instance_scene(one_instance_per_prediction=True), min_size=1, max_size=3))
def test_ap25_at_least_ap50_when_each_prediction_touches_one_instance(scenes):
    # with predictions spanning several instances the greedy matching can break this (see the hand case above)
    r = _compute(scenes)
    if not math.isnan(r["ap"]):
        assert r["ap25"] >= r["ap50"] - 1e-12
