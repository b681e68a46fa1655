"""Semantic segmentation metrics: a confusion matrix summed over scenes, per-class IoU and accuracy, mIoU, mAcc.

IoU of a class is its *total* intersection over its *total* union over the whole evaluated set (the confusion
matrix is summed over scenes first), never a mean of per-scene IoUs, so the result does not depend on how points
are split into scenes or in which order scenes arrive. A class with no ground-truth point in the set is *absent*:
its IoU and accuracy are NaN and it is left out of mIoU and mAcc (never counted as 0); the points predicted as it
(all false positives) are kept so a report can say "absent (k points predicted)".
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from pcdag.atomic import atomic_write_bytes


def _as_labels(values: Any, name: str, where: str) -> np.ndarray:
    a = np.asarray(values)
    if a.ndim != 1:
        raise ValueError(f"{where}: {name} must be a 1-D array of labels [N], got shape {a.shape}")
    if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{where}: {name} must hold integer labels, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def _check_range(values: np.ndarray, name: str, n_classes: int, where: str, note: str = "") -> None:
    bad = (values < 0) | (values >= n_classes)
    if bad.any():
        shown = np.unique(values[bad])  # [K]
        listed = ", ".join(map(str, shown[:10])) + (", ..." if len(shown) > 10 else "")
        raise ValueError(
            f"{where}: {name} has {int(bad.sum())} point(s) with label(s) {listed} outside the allowed range "
            f"0..{n_classes - 1}{note}"
        )


class ConfusionMatrix:
    """Point counts ``counts[gt, pred]`` (int64 [C, C]: rows ground truth, columns prediction), summed over scenes.

    Points whose target equals ``ignore_index`` are skipped (whatever their prediction).
    """

    def __init__(self, n_classes: int, ignore_index: int = -1) -> None:
        if isinstance(n_classes, bool) or not isinstance(n_classes, int | np.integer) or n_classes < 1:
            raise ValueError(f"ConfusionMatrix: n_classes must be a positive integer, got {n_classes!r}")
        if 0 <= ignore_index < n_classes:
            raise ValueError(
                f"ConfusionMatrix: ignore_index={ignore_index} is a class id (0..{n_classes - 1}); "
                "use a value outside the class range, e.g. -1"
            )
        self.n_classes = int(n_classes)
        self.ignore_index = int(ignore_index)
        self.counts = np.zeros((self.n_classes, self.n_classes), dtype=np.int64)  # [C, C]

    def update(self, pred: Any, target: Any, where: str = "") -> None:
        """Add one scene: ``pred`` and ``target`` int [N]; ``where`` (e.g. the scene) names it in errors."""
        where = f"confusion matrix update for {where!r}" if where else "confusion matrix update"
        pred = _as_labels(pred, "pred", where)  # [N]
        target = _as_labels(target, "target", where)  # [N]
        if pred.shape != target.shape:
            raise ValueError(f"{where}: pred has {pred.shape[0]} points but target has {target.shape[0]}")
        keep = target != self.ignore_index  # [N]
        target, pred = target[keep], pred[keep]  # [M]
        c = self.n_classes
        _check_range(target, "target", c, where, f" (or ignore_index {self.ignore_index})")
        _check_range(pred, "pred", c, where, " at points that are not ignored")
        self.counts += np.bincount(target * c + pred, minlength=c * c).reshape(c, c)  # [C, C]

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add the counts of ``other`` (same classes and ignore_index) to this matrix; returns ``self``."""
        if (other.n_classes, other.ignore_index) != (self.n_classes, self.ignore_index):
            raise ValueError(
                f"cannot merge a confusion matrix of {other.n_classes} classes (ignore_index {other.ignore_index}) "
                f"into one of {self.n_classes} classes (ignore_index {self.ignore_index})"
            )
        self.counts += other.counts
        return self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict that :meth:`from_dict` turns back into an equal matrix."""
        return {"n_classes": self.n_classes, "ignore_index": self.ignore_index, "counts": self.counts.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConfusionMatrix:
        try:
            cm = cls(int(data["n_classes"]), int(data.get("ignore_index", -1)))
            counts = np.asarray(data["counts"], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a saved confusion matrix (need n_classes and counts): {exc}") from exc
        if counts.shape != cm.counts.shape or (counts < 0).any():
            raise ValueError(
                f"saved confusion matrix: counts must be non-negative with shape {cm.counts.shape}, "
                f"got shape {counts.shape}"
            )
        cm.counts = counts
        return cm

    def scores(self, class_names: Sequence[str] | None = None) -> SegmentationScores:
        """Per-class IoU / accuracy and their means over the classes present in the ground truth."""
        return SegmentationScores.from_counts(self.counts, class_names)


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a)
    a.flags.writeable = False
    return a


def _nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.2f}"


@attrs.frozen(eq=False)
class SegmentationScores:
    """Scores of one confusion matrix. Arrays are [C] in class order; absent classes hold NaN IoU and accuracy."""

    class_names: tuple[str, ...]
    iou: np.ndarray  # [C] float64, NaN where absent
    acc: np.ndarray  # [C] float64, NaN where absent
    gt_points: np.ndarray  # [C] int64
    pred_points: np.ndarray  # [C] int64
    miou: float
    macc: float
    all_acc: float
    absent: tuple[str, ...]  # classes with no ground-truth point
    absent_predicted: dict[str, int]  # absent class -> points predicted as it (false positives)

    @classmethod
    def from_counts(cls, counts: np.ndarray, class_names: Sequence[str] | None = None) -> SegmentationScores:
        counts = np.asarray(counts, dtype=np.int64)  # [C, C]
        c = counts.shape[0]
        names = tuple(class_names) if class_names is not None else tuple(f"class {i}" for i in range(c))
        if len(names) != c or len(set(names)) != c:
            raise ValueError(f"scores: need {c} distinct class names, got {len(names)}: {list(names)}")
        tp = np.diag(counts)  # [C]
        gt = counts.sum(axis=1)  # [C]
        pred = counts.sum(axis=0)  # [C]
        present = gt > 0  # [C]
        safe_gt = np.maximum(gt, 1)
        iou = np.where(present, tp / np.maximum(gt + pred - tp, 1), np.nan)  # [C]
        acc = np.where(present, tp / safe_gt, np.nan)  # [C]
        total = int(gt.sum())
        absent = tuple(n for n, p in zip(names, present, strict=True) if not p)
        return cls(
            class_names=names,
            iou=_frozen(iou),
            acc=_frozen(acc),
            gt_points=_frozen(gt),
            pred_points=_frozen(pred),
            miou=float(iou[present].mean()) if present.any() else math.nan,
            macc=float(acc[present].mean()) if present.any() else math.nan,
            all_acc=float(tp.sum() / total) if total else math.nan,
            absent=absent,
            absent_predicted={n: int(pred[names.index(n)]) for n in absent},
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (fractions in 0..1; NaN becomes None)."""
        classes = {
            name: {
                "iou": _nan_to_none(self.iou[i]),
                "acc": _nan_to_none(self.acc[i]),
                "gt_points": int(self.gt_points[i]),
                "pred_points": int(self.pred_points[i]),
                "absent": name in self.absent,
            }
            for i, name in enumerate(self.class_names)
        }
        return {
            "miou": _nan_to_none(self.miou),
            "macc": _nan_to_none(self.macc),
            "all_acc": _nan_to_none(self.all_acc),
            "n_points": int(self.gt_points.sum()),
            "n_classes_present": len(self.class_names) - len(self.absent),
            "absent": list(self.absent),
            "absent_predicted": dict(self.absent_predicted),
            "classes": classes,
        }

    def summary(self) -> str:
        """One line: mIoU, mAcc, allAcc and which classes were absent."""
        c = len(self.class_names)
        line = (
            f"mIoU {_pct(self.miou)} %, mAcc {_pct(self.macc)} %, allAcc {_pct(self.all_acc)} % "
            f"over {c - len(self.absent)} of {c} classes"
        )
        if self.absent:
            line += "; absent: " + ", ".join(f"{n} ({self.absent_predicted[n]} points predicted)" for n in self.absent)
        return line

    def markdown_table(self) -> str:
        """A markdown table (class | IoU % | Acc % | GT points), then a blank line and :meth:`summary`."""
        rows = ["| class | IoU % | Acc % | GT points |", "|---|---:|---:|---:|"]
        for i, name in enumerate(self.class_names):
            if name in self.absent:
                k = self.absent_predicted[name]
                rows.append(f"| {name} | absent ({k} points predicted) | absent | 0 |")
            else:
                rows.append(f"| {name} | {_pct(self.iou[i])} | {_pct(self.acc[i])} | {int(self.gt_points[i]):,} |")
        rows.append(f"| **mean** | **{_pct(self.miou)}** | **{_pct(self.macc)}** | {int(self.gt_points.sum()):,} |")
        return "\n".join(rows) + "\n\n" + self.summary() + "\n"


def plot_confusion(counts: np.ndarray, class_names: Sequence[str], path: Path, title: str = "") -> None:
    """Save the row-normalised confusion matrix (rows ground truth) as a PNG; absent rows are left blank."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(counts, dtype=np.int64)  # [C, C]
    c = counts.shape[0]
    if counts.shape != (c, c) or len(class_names) != c:
        raise ValueError(
            f"plot_confusion({path}): need a square matrix and one name per row, "
            f"got shape {counts.shape} and {len(class_names)} names"
        )
    rows = counts.sum(axis=1, keepdims=True)  # [C, 1]
    norm = np.where(rows > 0, counts / np.maximum(rows, 1), np.nan)  # [C, C]
    side = max(5.0, 0.38 * c + 2.5)
    fig = Figure(figsize=(side + 1.2, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(norm, vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
    ax.set_xticks(range(c), labels=list(class_names), rotation=90, fontsize=7)
    ax.set_yticks(range(c), labels=list(class_names), fontsize=7)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(title or "confusion matrix (rows normalised)")
    if c <= 25:  # numbers stay legible up to about ScanNet-20's size
        for (i, j), v in np.ndenumerate(norm):
            if v >= 0.01:
                ax.text(
                    j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=5, color="black" if v > 0.6 else "white"
                )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the row's points")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    atomic_write_bytes(Path(path), buf.getvalue())
