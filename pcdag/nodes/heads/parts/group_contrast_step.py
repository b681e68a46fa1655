"""One forward of ``GroupContrastLoss``: the batch's overlap ids read once, then each direction's two losses."""

from __future__ import annotations

from typing import Any

import attrs
import torch

from pcdag.graphs.batch import Encoded, MultiViewBatch
from pcdag.nodes.heads.parts.group_contrast import (
    ContrastSum,
    group_labels,
    grouping_loss,
    pool_segments,
    semantic_contrast,
)


@attrs.frozen
class Direction:
    group: torch.Tensor  # scalar L_group of this direction
    contrast: ContrastSum  # its contrast sum (divide by the positives of all directions)
    teacher_logits: torch.Tensor  # [P', n] uncentred teacher logits of the segments used (for the centre)
    segments: int  # P': overlap segments with points in both views
    groups: torch.Tensor  # scalar: distinct teacher groups among them (1: a collapsed teacher); no host read


class GroupContrastStep:
    """The overlap of a batch (segment ids, pair rows, scenes of the pairs) and the features at its points."""

    def __init__(self, params: Any, batch: MultiViewBatch, student: Encoded, teacher: Encoded, where: str) -> None:
        points = batch.global_views
        for name in ("overlap_segment", "pair"):
            if name not in points.extra:
                raise ValueError(f"{where}: the views carry no {name!r} ids; make them with TwoViewGenerator")
        self.p = params
        self.seg, pair = points.extra["overlap_segment"], points.extra["pair"]  # [N] each
        self.n_segments, n_pairs = batch.id_count("overlap_segment"), batch.id_count("pair")
        view = points.batch % 2  # [N] which of its scene's two views a point is in
        self.fs, self.ft = student.at_points(), teacher.at_points()  # [N, C] each
        for port, f in (("student", self.fs), ("teacher", self.ft)):
            if f.shape[0] != len(points):
                raise ValueError(f"{where}: port {port!r} has {f.shape[0]} point rows, the views {len(points)}")
        self.in_view = [(view == v) & (self.seg >= 0) for v in (0, 1)]  # [N] bool: overlap-segment points
        self.pair_rows = []  # per view [K] row of pair k's point (-1: none)
        for v in (0, 1):
            rows = torch.nonzero((view == v) & (pair >= 0)).squeeze(1)
            out = torch.full((n_pairs,), -1, dtype=torch.int64, device=pair.device)
            self.pair_rows.append(out.index_copy_(0, pair[rows], rows))
        ends = torch.tensor(batch.id_ends["pair"], dtype=torch.int64, device=pair.device)
        self.pair_scene = torch.bucketize(torch.arange(n_pairs, device=pair.device), ends, right=True)  # [K]

    def direction(self, a: int, b: int, head: Any, teacher_head: Any, centering: Any) -> Direction:
        """Both losses with the student on view ``a`` and the teacher on view ``b``."""
        p, seg, size = self.p, self.seg, self.n_segments
        z_q, present_q = pool_segments(head.projector(self.fs[self.in_view[a]]).float(), seg[self.in_view[a]], size)
        with torch.no_grad():
            z_k, present_k = pool_segments(
                teacher_head.projector(self.ft[self.in_view[b]]).float(), seg[self.in_view[b]], size
            )
            valid = present_q & present_k  # [P]
            t_logits = teacher_head.prototype_logits(z_k[valid]).float()  # [P', n]
            centred = centering(t_logits) if centering is not None else t_logits
            k_probs = torch.softmax(centred / p.teacher_temperature, dim=1)  # [P', n]
        q_logits = head.prototype_logits(z_q[valid]) / p.student_temperature  # [P', n]
        group = grouping_loss(q_logits, k_probs, p.entropy_weights) + 0.0 * z_q.sum()
        label = torch.full((size,), -1, dtype=torch.int64, device=seg.device)
        conf = torch.zeros(size, device=seg.device)
        k_label, k_conf = group_labels(k_probs)  # [P'] each
        label[valid], conf[valid] = k_label, k_conf
        used = torch.zeros(k_probs.shape[1], device=k_probs.device).index_fill_(0, k_label, 1.0)  # [n]
        contrast = self._contrast(a, b, head, teacher_head, valid, label, conf)
        return Direction(group, contrast, t_logits, int(valid.sum()), used.sum())

    def _contrast(self, a: int, b: int, head: Any, teacher_head: Any, valid, label, conf) -> ContrastSum:
        p, seg = self.p, self.seg
        ra, rb = self.pair_rows[a], self.pair_rows[b]  # [K]
        seg_a, seg_b = seg[ra.clamp_min(0)], seg[rb.clamp_min(0)]  # [K]
        ok = (ra >= 0) & (rb >= 0) & (seg_a >= 0) & (seg_b >= 0)
        ok &= valid[seg_a.clamp_min(0)] & valid[seg_b.clamp_min(0)] if len(valid) else ok & False
        ids = torch.nonzero(ok).squeeze(1)  # [m] pairs that count, ascending (so scene by scene)
        v_q = head.points(self.fs[ra[ids]], predict=p.predictor)  # [m, D′]
        with torch.no_grad():
            v_k = teacher_head.points(self.ft[rb[ids]], predict=False).float()  # [m, D′]
        la, lb, ca, cb = label[seg_a[ids]], label[seg_b[ids]], conf[seg_a[ids]], conf[seg_b[ids]]
        parts = []
        if p.across_scenes:
            blocks = [len(ids)]
        else:
            blocks = torch.unique_consecutive(self.pair_scene[ids], return_counts=True)[1].tolist()
        start = 0
        for n in blocks:
            s = slice(start, start + n)
            part = semantic_contrast(
                v_q[s], v_k[s], la[s], lb[s], ca[s], cb[s], p.contrast_temperature, p.confidence
            )  # fmt: skip
            parts.append(part)
            start += n
        total = sum((c.total for c in parts), 0.0 * v_q.sum())  # stays connected to the student with no block
        return ContrastSum(total, sum(c.positives for c in parts), sum(c.no_negative for c in parts))
