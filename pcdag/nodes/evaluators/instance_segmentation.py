"""InstanceSegmentationEval: class-agnostic instance AP, AP50 and AP25 (the ScanNet way) of an offset-voting head.

For every scene of ``split`` (read at full resolution from the graph's store):

1. the scene is grid-sampled (the point nearest each voxel centre, ``grid_eval_rows``), turned into the training
   view without augmentation (``ctx.make_sample``) and run through the trained step: per sampled point an offset
   to its instance centre (m) and a foreground logit (``InstanceHead``);
2. points with foreground probability above ``foreground`` are moved by their offsets and grouped into proposals:
   connected components of points within ``radius`` of each other, at least ``min_points`` sampled points each,
   confidence = their mean foreground probability (``instance_clustering.cluster_proposals``);
3. each proposal is mapped back to *all* original points through the grid's inverse map (a point belongs to the
   proposal of the sampled point of its voxel) and ``InstanceAP`` gets the masks against the store's ``instance``
   labels, in which points of the ``stuff_classes`` (segment ids; default −1, wall, floor) count as no instance,
   as in ScanNet's benchmark, which evaluates the 18 object classes only.

AP is the mean over IoU 0.50:0.05:0.90, plus AP50 and AP25 (``instance_ap`` documents every rule). Outputs under
``ctx.out``: ``predictions/SCENE.npy`` (int32 proposal per original point, −1 none) and ``SCENE-scores.npy``
(float32 confidence per proposal) when ``save_predictions``, and for the first ``pictures`` scenes a picture of the
input colours, the proposals and the ground-truth instances, each instance in a random colour (grey: none).
"""

from __future__ import annotations

import attrs
import numpy as np

from pcdag.atomic import atomic_save_npy
from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.graphs.evaluation import EvalContext, EvalResult, Evaluator
from pcdag.graphs.node import FieldEffect, In, effect
from pcdag.graphs.params import in_range, integer, one_of, param
from pcdag.graphs.ports import FEATURES
from pcdag.graphs.registry import register
from pcdag.nodes.heads.instance_head import point_predictions
from pcdag.nodes.heads.instance_loss import SCANNET_STUFF, segment_ids
from pcdag.nodes.views.parts.eval_view import grid_eval_cloud
from pcdag.ops.instance_ap import MIN_REGION_SIZE, InstanceAP
from pcdag.ops.instance_clustering import cluster_proposals, proposal_masks
from pcdag.ops.pca import render_scene

NONE_GREY = 170  # colour of points in no instance


def ground_truth(cloud: PointCloud, stuff: list[int], where: str) -> np.ndarray:
    """``[N]`` int64 instance ids of ``cloud``, −1 where there is none or the segment is one of ``stuff``."""
    need = ["instance", "segment"] if stuff else ["instance"]
    missing = [n for n in need if n not in cloud]
    if missing:
        raise CloudError(f"{where} has no {' or '.join(map(repr, missing))} labels (it has {', '.join(sorted(cloud))})")
    instance = cloud["instance"].astype(np.int64)  # [N]
    return np.where(np.isin(cloud["segment"], stuff), -1, instance) if stuff else instance


def instance_colours(ids: np.ndarray, seed: int = 0) -> np.ndarray:
    """``[N, 3]`` uint8: a random colour per id ≥ 0 (the same id, the same colour), grey for −1."""
    ids = np.asarray(ids, dtype=np.int64)  # [N]
    top = int(ids.max(initial=-1)) + 1
    palette = np.random.default_rng(seed).integers(30, 256, size=(top + 1, 3)).astype(np.uint8)  # [top + 1, 3]
    palette[top] = NONE_GREY  # index -1 wraps to the last row
    return palette[np.where(ids >= 0, ids, top)]


@register
class InstanceSegmentationEval(Evaluator):
    """Class-agnostic instance AP / AP50 / AP25 over an evaluation split: offset votes, radius clustering."""

    version = 1
    inputs = {"predictions": In(FEATURES, doc="per-point offset (3) + foreground logit (1) (InstanceHead)")}
    outputs = {}

    @attrs.frozen
    class Params:
        split: str = param("val", one_of("val", "test", "train"), doc="scenes evaluated")
        grid_size: float = param(0.02, in_range(1e-4, 10.0, lo_open=True), unit="m", doc="evaluation voxel")
        radius: float = param(0.03, in_range(1e-4, 10.0), unit="m", doc="shifted points this close are linked")
        min_points: int = param(50, integer(1, None), doc="smallest proposal, in grid-sampled points")
        max_neighbours: int = param(64, integer(0, None), doc="links per point in the radius graph; 0 = all")
        foreground: float = param(0.5, in_range(0.0, 1.0, hi_open=True), doc="foreground probability threshold")
        stuff_classes: list = param(list(SCANNET_STUFF), segment_ids(), doc="segment ids counted as no instance")
        min_region_size: int = param(MIN_REGION_SIZE, integer(1, None), doc="smaller GT instances / proposals: ignored")
        pictures: int = param(2, integer(0, 100), doc="scenes drawn with input, proposals and ground truth")
        save_predictions: bool = param(True, one_of(True, False), doc="write predictions/SCENE.npy")

    def fields(self) -> FieldEffect:
        return effect()

    def plan_notes(self) -> list[str]:
        p = self.params
        return [
            f"split {p.split}, grid {p.grid_size} m; proposals: foreground > {p.foreground}, radius {p.radius} m, "
            f">= {p.min_points} points; segments {list(p.stuff_classes)} are no instance"
        ]

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        p = self.params
        ap = InstanceAP(min_region_size=p.min_region_size)
        pictures, n_scenes = [], 0
        for scene, cloud in ctx.scenes():
            try:
                gt = ground_truth(cloud, list(p.stuff_classes), f"scene {scene}")  # [N]
                labels, scores = self._scene(ctx, scene, cloud)  # [N], [P]
                ap.add(gt, proposal_masks(labels, len(scores)), scores, scene)
            except (CloudError, ValueError) as exc:
                ctx.notes.append(f"scene {scene} skipped: {exc}")
                continue
            n_scenes += 1
            if p.save_predictions:
                atomic_save_npy(ctx.out / "predictions" / f"{scene}.npy", labels.astype(np.int32))
                atomic_save_npy(ctx.out / "predictions" / f"{scene}-scores.npy", scores.astype(np.float32))
            if len(pictures) < p.pictures:
                pictures.append(self._picture(ctx, scene, cloud, labels, gt))
        if n_scenes == 0:
            raise ValueError(f"{self.type_name()}: no scene of split {p.split!r} could be evaluated: {ctx.notes[:3]}")
        result = ap.compute()
        per = {f"{t:.2f}": v for t, v in result.pop("per_threshold").items()}
        metrics = {**result, "per_threshold": per, "scenes": n_scenes, "radius": p.radius, "foreground": p.foreground}
        return EvalResult(metrics, self._markdown(ctx, result, per, n_scenes, pictures), tuple(pictures))

    def _scene(self, ctx: EvalContext, scene: str, cloud: PointCloud) -> tuple[np.ndarray, np.ndarray]:
        """Proposal of every original point (−1 none) and the confidence of each proposal."""
        import torch

        p, fields = self.params, cloud.materialise()
        meta = {**cloud.meta, "scene": scene}
        sub, inverse = grid_eval_cloud(fields, p.grid_size, meta, f"scene {scene}")  # M points, [N]
        offset, logit = point_predictions(ctx.predict(ctx.make_sample(sub))["predictions"])
        if offset.shape[0] != len(sub):
            raise CloudError(f"scene {scene}: {offset.shape[0]} predictions for its {len(sub)} sampled points")
        prob = torch.sigmoid(logit.float()).cpu().numpy()  # [M]
        shifted = sub["coord"] + offset.float().cpu().numpy()  # [M, 3]; the eval view is only translated
        fg = np.flatnonzero(prob > p.foreground)  # [K]
        fg_labels, scores = cluster_proposals(shifted[fg], prob[fg], p.radius, p.min_points, p.max_neighbours)
        row_labels = np.full(len(sub), -1, dtype=np.int64)  # [M]
        row_labels[fg] = fg_labels
        return row_labels[inverse], scores  # [N], [P]

    def _picture(self, ctx: EvalContext, scene: str, cloud: PointCloud, labels: np.ndarray, gt: np.ndarray):
        rgb = cloud["color"] if "color" in cloud else np.full((len(cloud), 3), 128, np.uint8)
        panels = [
            ("input colours", rgb.astype(np.uint8)),
            (f"proposals ({int(labels.max(initial=-1)) + 1})", instance_colours(labels, seed=1)),
            (f"ground-truth instances ({len(np.unique(gt[gt >= 0]))})", instance_colours(gt, seed=2)),
        ]
        path = ctx.out / f"scene-{scene.replace('/', '_')}.png"
        return render_scene(cloud["coord"], panels, path, title=f"scene {scene}")

    def _markdown(self, ctx: EvalContext, result: dict, per: dict, n_scenes: int, pictures: list) -> str:
        p, rel = self.params, lambda path: path.relative_to(ctx.out.parent.parent).as_posix()
        lines = [
            f"Split **{p.split}**: {n_scenes} scenes, grid {p.grid_size} m. Proposals: points with foreground "
            f"probability > {p.foreground}, moved by their predicted offsets, linked within {p.radius} m, at least "
            f"{p.min_points} sampled points; segments {list(p.stuff_classes)} count as no instance.",
            "",
            "| AP | AP50 | AP25 |",
            "|---:|---:|---:|",
            f"| {_pct(result['ap'])} | {_pct(result['ap50'])} | {_pct(result['ap25'])} |",
            "",
            "| IoU threshold | " + " | ".join(per) + " |",
            "|---|" + "---:|" * len(per),
            "| AP % | " + " | ".join(_pct(v) for v in per.values()) + " |",
            "",
            f"{result['n_gt']} ground-truth instances ({result['n_gt_small']} more below {p.min_region_size} points, "
            f"ignored); {result['n_pred']} proposals ({result['n_pred_small']} more below {p.min_region_size} "
            "points, dropped). AP: mean over IoU 0.50:0.05:0.90, the ScanNet benchmark's rules.",
            "",
        ]
        lines += [f"![{path.stem}]({rel(path)})" for path in pictures]
        return "\n".join(lines)


def _pct(x: float | None) -> str:
    """A fraction as a percentage with 2 decimals; NaN or None (no ground truth) as n/a."""
    return "n/a" if x is None or x != x else f"{100 * x:.2f}"
