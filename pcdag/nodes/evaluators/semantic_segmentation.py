"""SemanticSegmentationEval: per-class IoU of a classifier over an evaluation split, with optional test-time views.

For every scene of ``split`` (read at full resolution from the graph's store):

1. each of the test-time passes moves the scene: a z rotation about its centre, a scale about its centre, and in
   the 13-pass protocol of spec E one x+y flip (angles 0, ½π, π, 3⁄2π × scales 1, 0.95, 1.05, plus the flip);
2. the moved scene is grid-sampled (the point nearest each voxel centre, ``grid_eval_rows``), turned into the
   un-augmented training view (``ctx.make_sample``) and classified; the softmax of every sampled point is added
   to all original points of its voxel;
3. the prediction of a point is the class of the largest summed softmax, and the confusion matrix of the set
   gets its (label, prediction) pair (labels ``ignore_index`` are left out).

IoU of a class = total intersection / total union over the whole set; a class without ground truth in the set is
*absent*, not zero, and takes no part in mIoU. Outputs under ``ctx.out``: ``confusion.png``, ``predictions/
SCENE.npy`` (int16, one class per original point, when ``save_predictions``), and for the first ``pictures``
scenes a picture of the input colours, the PCA of the backbone features (port ``features``), the prediction and the
ground truth side by side.
"""

from __future__ import annotations

import attrs
import numpy as np

from pcdag.atomic import atomic_save_npy
from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.graphs.evaluation import EvalContext, EvalResult, Evaluator
from pcdag.graphs.node import FieldEffect, In, effect
from pcdag.graphs.params import ParamError, in_range, integer, of_type, one_of, param
from pcdag.graphs.ports import FEATURES
from pcdag.graphs.registry import register
from pcdag.nodes.augment.rotate import rotation_matrix
from pcdag.nodes.views.parts.eval_view import grid_eval_cloud
from pcdag.ops.pca import pca_colours, render_scene
from pcdag.ops.semantic_metrics import ConfusionMatrix, plot_confusion

SCANNET20 = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink", "bathtub", "otherfurniture",
)  # fmt: skip


def test_time_passes(n: int) -> list[tuple[float, float, bool]]:
    """(z angle, scale, x+y flip) of each pass: 1 = the scene as it is; 13 = spec E's protocol."""
    if n == 1:
        return [(0.0, 1.0, False)]
    grid = [(k * np.pi / 2, s, False) for k in range(4) for s in (1.0, 0.95, 1.05)]
    return grid + [(0.0, 1.0, True)]


def moved(cloud: PointCloud, angle: float, scale: float, flip: bool) -> dict[str, np.ndarray]:
    """The fields of ``cloud`` after one test-time pass (about the bounding-box centre; normals turned along)."""
    coord = cloud["coord"].astype(np.float64)  # [N, 3]
    centre = (coord.min(axis=0) + coord.max(axis=0)) / 2  # [3]
    turn = rotation_matrix("z", angle)  # [3, 3]
    if flip:
        turn = np.diag([-1.0, -1.0, 1.0]) @ turn
    fields = dict(cloud.materialise())
    fields["coord"] = (((coord - centre) @ turn.T) * scale + centre).astype(np.float32)
    if "normal" in cloud:
        fields["normal"] = (cloud["normal"].astype(np.float64) @ turn.T).astype(np.float32)
    return fields


def palette(n: int) -> np.ndarray:
    """``[n + 1, 3]`` uint8 colours of classes 0..n−1, then black for ignored points (index −1)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    colours = [np.array(cmap(i % 20)[:3]) * 255 for i in range(n)]
    return np.array([*colours, (0, 0, 0)], dtype=np.uint8)


@register
class SemanticSegmentationEval(Evaluator):
    """mIoU and per-class IoU over an evaluation split (total intersection / union), optional 13-pass test time."""

    version = 1
    inputs = {
        "logits": In(FEATURES, doc="per-point class logits (SegmentationHead)"),
        "features": In(FEATURES, required=False, doc="backbone features for the PCA pictures"),
    }
    outputs = {}

    @attrs.frozen
    class Params:
        split: str = param("val", one_of("val", "test", "train"), doc="scenes evaluated")
        classes: list = param(list(SCANNET20), of_type(list), doc="class names, in label order")
        label: str = param("segment", one_of("segment"), doc="per-point labels of the store")
        ignore_index: int = param(-1, integer(-(1 << 31), None), doc="label of points left out")
        passes: int = param(1, one_of(1, 13), doc="test-time views: 1, or 13 (spec E)")
        grid_size: float = param(0.02, in_range(1e-4, 10.0, lo_open=True), unit="m", doc="evaluation voxel")
        pictures: int = param(2, integer(0, 100), doc="scenes drawn with PCA, prediction and ground truth")
        save_predictions: bool = param(True, one_of(True, False), doc="write predictions/SCENE.npy")

    def __post_init__(self) -> None:
        if not self.params.classes or not all(isinstance(c, str) for c in self.params.classes):
            raise ParamError(f"{self.type_name()}: classes must be a non-empty list of names")

    def fields(self) -> FieldEffect:
        return effect()

    def plan_notes(self) -> list[str]:
        p = self.params
        return [f"{len(p.classes)} classes on split {p.split}; {p.passes} test-time pass(es); grid {p.grid_size} m"]

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        p = self.params
        matrix = ConfusionMatrix(len(p.classes), p.ignore_index)
        pictures, n_scenes = [], 0
        for scene, cloud in ctx.scenes():
            try:
                probs, features = self._scene(ctx, scene, cloud, want_features=len(pictures) < p.pictures)
                labels = cloud.get(p.label)
                if labels is None:
                    raise CloudError(f"scene {scene} has no {p.label!r} labels")
                pred = probs.argmax(axis=1)  # [N]
                matrix.update(pred, labels.astype(np.int64), where=f"scene {scene}")
            except (CloudError, ValueError) as exc:
                ctx.notes.append(f"scene {scene} skipped: {exc}")
                continue
            n_scenes += 1
            if p.save_predictions:
                atomic_save_npy(ctx.out / "predictions" / f"{scene}.npy", pred.astype(np.int16))
            if features is not None:
                pictures.append(self._picture(ctx, scene, cloud, features, pred, labels))
        if n_scenes == 0:
            raise ValueError(f"{self.type_name()}: no scene of split {p.split!r} could be evaluated: {ctx.notes[:3]}")
        scores = matrix.scores(p.classes)
        confusion = ctx.out / "confusion.png"
        plot_confusion(matrix.counts, p.classes, confusion, f"confusion matrix, split {p.split} (rows: truth)")
        return EvalResult(
            {**scores.to_json(), "scenes": n_scenes, "passes": p.passes, "confusion": matrix.to_dict()},
            self._markdown(ctx, scores, n_scenes, confusion, pictures),
            (confusion, *pictures),
        )

    def _scene(self, ctx: EvalContext, scene: str, cloud: PointCloud, want_features: bool):
        import torch

        n, probs, features = len(cloud), None, None
        for angle, scale, flip in test_time_passes(self.params.passes):
            fields = moved(cloud, angle, scale, flip)
            meta = {**cloud.meta, "scene": scene}
            sub, inverse = grid_eval_cloud(fields, self.params.grid_size, meta, f"scene {scene}")
            out = ctx.predict(ctx.make_sample(sub))
            prob = torch.softmax(out["logits"].at_points().float(), dim=1).cpu().numpy()  # [M, C]
            probs = prob[inverse] if probs is None else probs + prob[inverse]  # [N, C]
            if want_features and features is None and "features" in out:
                features = out["features"].at_points().float().cpu().numpy()[inverse]  # [N, F] (first pass)
        if probs is None or len(probs) != n:
            raise CloudError(f"scene {scene}: no prediction for its {n} points")
        return probs, features

    def _picture(self, ctx: EvalContext, scene: str, cloud: PointCloud, features, pred, labels):
        colours = palette(len(self.params.classes))
        rgb = cloud["color"] if "color" in cloud else np.full((len(cloud), 3), 128, np.uint8)
        panels = [
            ("input colours", rgb.astype(np.uint8)),
            ("PCA of backbone features", pca_colours(features)),
            ("prediction", colours[pred]),
            ("ground truth", colours[labels]),  # -1 (ignored) indexes the last colour: black
        ]
        path = ctx.out / f"scene-{scene.replace('/', '_')}.png"
        return render_scene(cloud["coord"], panels, path, title=f"scene {scene}")

    def _markdown(self, ctx: EvalContext, scores, n_scenes: int, confusion, pictures) -> str:
        p, rel = self.params, lambda path: path.relative_to(ctx.out.parent.parent).as_posix()
        lines = [
            f"Split **{p.split}**: {n_scenes} scenes, {p.passes} test-time pass(es), grid {p.grid_size} m.",
            "",
            scores.markdown_table(),
            "",
            f"![confusion matrix]({rel(confusion)})",
        ]
        lines += [f"![{path.stem}]({rel(path)})" for path in pictures]
        return "\n".join(lines)
