"""Class-agnostic instance segmentation AP, computed the way ScanNet's benchmark script does it.

Behaviour of ScanNet's ``evaluate_semantic_instance.py`` (read to understand it, re-written here), with every
prediction and ground-truth (GT) instance in one class:

* **Inputs.** Per scene: GT instance ids [N] (-1 = no instance; these *void* points play the part of ScanNet's
  points outside every instance of an evaluated class: unannotated, wall, floor) and predicted masks with a
  confidence each.
* **Minimum region size** (100 points). A GT instance smaller than it is *ignored*: it is neither a true positive
  to find nor a miss. A predicted mask smaller than it is dropped before anything else (never a true or false
  positive, not counted in ``n_pred``).
* **Overlap** is the IoU of the point sets, and a pair matches only when it is strictly *greater* than the
  threshold. Thresholds: 0.50, 0.55, ..., 0.90 for AP (the script writes ``np.arange(0.5, 0.95, 0.05)``, which
  stops before 0.95: nine thresholds), plus 0.25 for AP25; AP is the mean over the nine, AP50 the value at 0.5.
* **Greedy matching.** GT instances are visited in increasing id order. For each, the predictions not yet used
  whose overlap exceeds the threshold are its candidates. With none, the GT is a miss (a "hard false negative").
  Otherwise one true positive is recorded with the *highest* candidate confidence, the prediction holding it is
  used up, and every other candidate is a **duplicate**: a false positive at its own confidence. (The script takes
  candidates in file order but always gives the true positive the highest score; taking them by decreasing
  confidence, as here, keeps the used-up prediction and the score together. The two agree whenever a prediction
  can match one GT only, which holds for every threshold >= 0.5.) A duplicate is not used up, so at 0.25 it may
  still match a later GT, exactly as in the script.
* **Unmatched predictions.** A prediction whose overlap with *every* GT instance (small ones included) is at most
  the threshold is a false positive unless it lies mostly on ignored points: the share of its points that are void
  or belong to small GT instances must be at most the threshold for it to count as a false positive. A prediction
  exceeding the threshold only with a small GT instance is ignored altogether.
* **Precision/recall curve.** All true and false positives of all scenes are sorted by confidence. For each
  distinct confidence t (ascending) a point is taken with tp/fp = true/false positives scoring >= t and
  fn = true positives scoring < t plus the hard misses; precision = tp / (tp + fp), recall = tp / (tp + fn).
  An artificial end point (precision 1, recall 0) is appended. Ties in confidence thus form a single point.
* **Integration.** With recall r_0 >= r_1 >= ... >= r_K = 0 (the artificial point last), point k gets the width
  (r_{k-1} - r_{k+1}) / 2, taking r_{-1} = r_0 and r_{K+1} = 0; AP = sum_k precision_k * width_k. (The script
  writes this as a convolution with [-0.5, 0, 0.5].) Widths add up to r_0, so perfect predictions give 1.
* **Empty cases.** No GT instance of at least the minimum size anywhere: AP is NaN (undefined). GT but no
  prediction anywhere: AP 0. Predictions that are all ignored leave an empty curve: AP 0 (the script would fail).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

SCANNET_AP_THRESHOLDS: tuple[float, ...] = tuple(float(t) for t in np.arange(0.5, 0.95, 0.05))  # 0.50 .. 0.90
AP50, AP25 = 0.5, 0.25
MIN_REGION_SIZE = 100  # points


@attrs.frozen(eq=False)
class _Scene:
    """What AP needs of one scene: sizes and overlaps, not the masks."""

    name: str
    gt_sizes: np.ndarray  # [G] int64, points of each GT instance (small ones included)
    pred_sizes: np.ndarray  # [P] int64, points of each kept prediction
    scores: np.ndarray  # [P] float64
    void: np.ndarray  # [P] int64, points of each prediction with GT id -1
    inter: np.ndarray  # [P, G] int64, points shared by prediction p and GT instance g


def _where(scene: str) -> str:
    return f"instance AP, scene {scene!r}" if scene else "instance AP"


def _gt_ids(gt_instance: Any, where: str) -> np.ndarray:
    gt = np.asarray(gt_instance)
    if gt.ndim != 1 or gt.dtype == bool or not np.issubdtype(gt.dtype, np.integer):
        raise ValueError(f"{where}: gt_instance must be integer ids [N], got shape {gt.shape} dtype {gt.dtype}")
    if gt.size and gt.min() < -1:
        raise ValueError(f"{where}: gt_instance ids must be >= 0, or -1 for no instance; found {int(gt.min())}")
    return gt.astype(np.int64, copy=False)


def _masks(masks: Any, n: int, where: str) -> np.ndarray:
    """Boolean masks [P, N] from a bool/0-1 matrix or a list of point-index arrays."""
    if isinstance(masks, list | tuple):
        out = np.zeros((len(masks), n), dtype=bool)  # [P, N]
        for p, idx in enumerate(masks):
            idx = np.asarray(idx)
            if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
                raise ValueError(f"{where}: prediction {p} must be a 1-D array of point indices, got {idx.dtype}")
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise ValueError(f"{where}: prediction {p} has point indices outside 0..{n - 1}")
            out[p, idx] = True
        return out
    m = np.asarray(masks)
    if m.ndim != 2 or m.shape[1] != n:
        raise ValueError(f"{where}: masks must be [P, {n}] (one row per prediction), got shape {m.shape}")
    if m.dtype != bool and not np.issubdtype(m.dtype, np.integer):
        raise ValueError(f"{where}: masks must be boolean (or 0/1 integers), got dtype {m.dtype}")
    return m != 0


def _scores(scores: Any, p: int, where: str) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).reshape(-1) if np.size(scores) else np.zeros(0)  # [P]
    if s.shape != (p,):
        raise ValueError(f"{where}: {p} masks but {s.size} confidences")
    if not np.isfinite(s).all():
        raise ValueError(f"{where}: confidences must be finite numbers")
    return s


class InstanceAP:
    """Accumulates scenes with :meth:`add`; :meth:`compute` gives ScanNet-style class-agnostic AP, AP50, AP25."""

    def __init__(
        self, min_region_size: int = MIN_REGION_SIZE, ap_thresholds: Sequence[float] = SCANNET_AP_THRESHOLDS
    ) -> None:
        if min_region_size < 1:
            raise ValueError(f"InstanceAP: min_region_size must be >= 1 point, got {min_region_size}")
        if not ap_thresholds or not all(0.0 < t < 1.0 for t in ap_thresholds):
            raise ValueError(f"InstanceAP: ap_thresholds must be overlaps in (0, 1), got {list(ap_thresholds)}")
        self.min_region_size = int(min_region_size)
        self.ap_thresholds = tuple(float(t) for t in ap_thresholds)
        self._scenes: list[_Scene] = []
        self._n_pred_small = 0  # predictions dropped for being smaller than min_region_size

    def add(self, gt_instance: Any, masks: Any, scores: Any, scene: str = "") -> None:
        """One scene: GT ids [N] (-1 void), masks bool [P, N] or P index arrays, confidences [P]."""
        where = _where(scene)
        gt = _gt_ids(gt_instance, where)  # [N]
        m = _masks(masks, gt.shape[0], where)  # [P, N]
        s = _scores(scores, m.shape[0], where)  # [P]
        ids = np.unique(gt[gt >= 0])  # [G]
        g = ids.shape[0]
        code = np.where(gt >= 0, np.searchsorted(ids, gt), g)  # [N] column of each point; void -> G
        gt_sizes = np.bincount(code, minlength=g + 1)[:g]  # [G]
        sizes = m.sum(axis=1)  # [P]
        keep = sizes >= self.min_region_size  # [P]
        m, s, sizes = m[keep], s[keep], sizes[keep]
        rows, cols = np.nonzero(m)  # [K] each: (prediction, point) pairs
        table = np.bincount(rows * (g + 1) + code[cols], minlength=m.shape[0] * (g + 1))  # [P * (G + 1)]
        table = table.reshape(m.shape[0], g + 1)  # [P, G + 1]
        self._scenes.append(_Scene(scene, gt_sizes, sizes, s, table[:, g], table[:, :g]))
        self._n_pred_small += int((~keep).sum())

    def merge(self, other: InstanceAP) -> InstanceAP:
        """Add the scenes of ``other`` (same settings); returns ``self``."""
        if (other.min_region_size, other.ap_thresholds) != (self.min_region_size, self.ap_thresholds):
            raise ValueError("cannot merge InstanceAP accumulators with different min_region_size or thresholds")
        self._scenes += other._scenes
        self._n_pred_small += other._n_pred_small
        return self

    def compute(self) -> dict[str, Any]:
        """AP (mean over ``ap_thresholds``), AP50, AP25, AP per threshold, and the counts they rest on."""
        n_gt_all = sum(len(sc.gt_sizes) for sc in self._scenes)
        n_gt = sum(int((sc.gt_sizes >= self.min_region_size).sum()) for sc in self._scenes)
        per = {th: self._ap_at(th, n_gt) for th in sorted({*self.ap_thresholds, AP50, AP25})}
        return {
            "ap": float(np.mean([per[th] for th in self.ap_thresholds])),
            "ap50": per[AP50],
            "ap25": per[AP25],
            "per_threshold": {round(th, 4): ap for th, ap in per.items()},
            "n_gt": n_gt,
            "n_pred": sum(len(sc.scores) for sc in self._scenes),
            "n_gt_small": n_gt_all - n_gt,
            "n_pred_small": self._n_pred_small,
            "n_scenes": len(self._scenes),
        }

    def _ap_at(self, th: float, n_gt: int) -> float:
        if n_gt == 0:
            return float("nan")  # nothing to find: AP is undefined
        trues, scores, misses = [np.zeros(0)], [np.zeros(0)], 0
        for sc in self._scenes:
            tp, fp, fn = _match_scene(sc, th, self.min_region_size)
            trues += [np.ones_like(tp), np.zeros_like(fp)]
            scores += [tp, fp]
            misses += fn
        y_true, y_score = np.concatenate(trues), np.concatenate(scores)  # [E]
        return _integrate(y_true, y_score, misses) if y_score.size else 0.0


def _match_scene(sc: _Scene, th: float, min_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """True-positive scores, false-positive scores and the number of missed GT instances at overlap ``th``."""
    valid = sc.gt_sizes >= min_size  # [G]
    union = sc.pred_sizes[:, None] + sc.gt_sizes[None, :] - sc.inter  # [P, G], > 0 as every prediction is kept
    over = sc.inter / union > th  # [P, G]
    order = np.argsort(-sc.scores, kind="stable")  # [P] by decreasing confidence
    used = np.zeros(len(sc.scores), dtype=bool)  # [P]
    tp, fp, misses = [], [], 0
    for g in np.flatnonzero(valid):  # loop over GT instances, not points
        cand = order[over[order, g] & ~used[order]]  # [Q] candidates, best first
        if cand.size == 0:
            misses += 1
            continue
        used[cand[0]] = True
        tp.append(sc.scores[cand[0]])
        fp.extend(sc.scores[cand[1:]])  # duplicates
    ignored = sc.void + (sc.inter * ~valid).sum(axis=1)  # [P] points on void or small GT instances
    lonely = ~over.any(axis=1) & (ignored / sc.pred_sizes <= th)  # [P] unmatched, not mostly ignored
    fp.extend(sc.scores[lonely])
    return np.asarray(tp, dtype=np.float64), np.asarray(fp, dtype=np.float64), misses


def _integrate(y_true: np.ndarray, y_score: np.ndarray, misses: int) -> float:
    """ScanNet's integral of the precision/recall curve (see the module docstring)."""
    order = np.argsort(y_score, kind="stable")
    score, true = y_score[order], y_true[order]  # [E] ascending confidence
    cum = np.cumsum(true)  # [E]
    _, first = np.unique(score, return_index=True)  # [T] first example of each distinct confidence
    below = np.where(first > 0, cum[first - 1], 0.0)  # [T] true positives scoring below the threshold
    tp = cum[-1] - below  # [T]
    fp = len(score) - first - tp  # [T]
    precision = np.append(tp / (tp + fp), 1.0)  # [T + 1], artificial end point last
    recall = np.append(tp / (tp + below + misses), 0.0)  # [T + 1]
    before = np.concatenate([recall[:1], recall[:-1]])  # r_{k-1}
    after = np.concatenate([recall[1:], [0.0]])  # r_{k+1}
    return float(precision @ (0.5 * (before - after)))
