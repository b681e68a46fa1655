"""GroupContrast's math (``shared/spec/groupcontrast.md``, section Losses), as plain functions on tensors.

    pool_segments        z = L2-normalise(mean of the point features of each overlap segment)     [P, D]
    grouping_loss        L_group = −(1/Σ_i H_i) Σ_i H_i Σ_j K_ij log Q_ij,  H_i = −Σ_j K_ij log K_ij
    group_labels         Ŷ_s = argmax_j K_sj and its confidence max_j K_sj
    semantic_contrast    Σ over positives (i, j) (Ŷ_i = Ŷ_j, anchor i with at least one negative) of
                         −C_ij log[e^{s_ij} / (e^{s_ij} + Σ_{k: Ŷ_k ≠ Ŷ_i} e^{s_ik})],  s = v_q v_kᵀ / τ,
                         C_ij = conf_i · conf_j (the two assignment confidences of the shared group)

Anchors without a negative (every key in the anchor's group: an all-one-group scene) carry no contrast; they are
left out of the sum and of |𝒫| and counted (``no_negative``) so the loss node can report them.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F

from pcdag.ops.segment import segment_mean


def pool_segments(feat: torch.Tensor, segment: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of ``feat`` ``[n, D]`` over the rows of each segment (``segment`` ``[n]`` in -1..size-1, -1 ignored),
    L2-normalised ``[size, D]``, and ``[size]`` bool: the segment has a row (empty segments give zero vectors)."""
    keep = segment >= 0
    rows, ids = feat[keep], segment[keep]
    mean = segment_mean(rows, ids, size, check=False)  # [P, D]
    present = torch.zeros(size, dtype=torch.bool, device=feat.device).index_fill_(0, ids, True)
    return F.normalize(mean, dim=1), present


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """``[P]`` entropy of each row of ``probs`` ``[P, K]`` (0·log 0 = 0)."""
    return -(probs * probs.clamp_min(1e-30).log()).sum(1)


def grouping_loss(q_logits: torch.Tensor, k_probs: torch.Tensor, entropy_weights: bool = True) -> torch.Tensor:
    """Entropy-weighted cross-entropy of student ``q_logits`` ``[P, K]`` (already / τ_s) against teacher
    probabilities ``k_probs`` ``[P, K]`` (no gradient). Unweighted mean with ``entropy_weights=False``; 0 when
    P = 0 or every weight is 0 (connected to ``q_logits``)."""
    log_q = torch.log_softmax(q_logits.float(), dim=1)  # [P, K]
    per_row = -(k_probs * log_q).sum(1)  # [P]
    weight = entropy(k_probs) if entropy_weights else torch.ones_like(per_row)  # [P]
    return (weight * per_row).sum() / weight.sum().clamp_min(1e-12)


def group_labels(k_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[P]`` group of every segment (argmax of its teacher assignment) and ``[P]`` its probability."""
    conf, label = k_probs.max(dim=1)
    return label, conf


@attrs.frozen
class ContrastSum:
    total: torch.Tensor  # scalar: Σ over counted positives of −C_ij log p_ij
    positives: int  # |𝒫| counted
    no_negative: int  # anchors left out: no key of another group


def semantic_contrast(
    v_q: torch.Tensor,
    v_k: torch.Tensor,
    label_q: torch.Tensor,
    label_k: torch.Tensor,
    conf_q: torch.Tensor,
    conf_k: torch.Tensor,
    temperature: float,
    confidence: bool = True,
) -> ContrastSum:
    """The sum of the semantic-aware contrast over anchors ``v_q`` ``[m, D]`` and keys ``v_k`` ``[m, D]`` (both
    L2-normalised; row i of each is the same physical point), with groups ``label_*`` and confidences ``conf_*``
    ``[m]`` (module doc). Divide ``total`` by ``positives`` (over all blocks) for the loss."""
    s = (v_q.float() @ v_k.float().T) / temperature  # [m, m]
    pos = label_q[:, None] == label_k[None, :]  # [m, m]
    has_neg = (~pos).any(1)  # [m]
    filled = s.masked_fill(pos, float("-inf")).masked_fill(~has_neg[:, None], 0.0)  # rows without a negative: finite
    neg = torch.logsumexp(filled, dim=1, keepdim=True)  # [m, 1] log Σ_neg e^{s_ik}
    log_p = s - torch.logaddexp(s, neg)  # [m, m]
    counted = pos & has_neg[:, None]  # [m, m]
    weight = conf_q[:, None] * conf_k[None, :] if confidence else torch.ones_like(s)
    total = -(weight * log_p * counted).sum()
    return ContrastSum(total, int(counted.sum()), int((~has_neg).sum()))
