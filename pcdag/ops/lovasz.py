"""The Lovász-softmax loss (Berman, Rannen Triki and Blaschko, CVPR 2018): a convex surrogate of 1 − IoU per class.

For class c with foreground indicator g ∈ {0, 1}^N and errors e_i = |g_i − p_ic| (p = softmax probabilities), sort
the errors in decreasing order π. With G = Σ g, the Jaccard loss of the first k sorted points predicted as c is

    J_k = 1 − (G − Σ_{j≤k} g_πj) / (G + Σ_{j≤k} (1 − g_πj))

and the loss is the Lovász extension Σ_k e_πk (J_k − J_{k−1}) (J_0 = 0). It is averaged over the classes present in
the labels (``classes="present"``, the reference's default) or over all classes. Points labelled ``ignore_index``
take no part. All classes are done at once: one ``[N, C]`` sort, no Python loop over classes.
"""

from __future__ import annotations

import torch


def lovasz_softmax(
    probs: torch.Tensor, labels: torch.Tensor, ignore_index: int = -1, classes: str = "present"
) -> torch.Tensor:
    """Mean Lovász-softmax loss of ``probs`` ``[N, C]`` (rows sum to 1) against ``labels`` ``[N]``; a scalar."""
    if classes not in ("present", "all"):
        raise ValueError(f"classes = {classes!r}; use 'present' or 'all'")
    keep = labels != ignore_index
    probs, labels = probs[keep], labels[keep]  # [n, C], [n]
    if probs.dtype in (torch.float16, torch.bfloat16):
        probs = probs.float()  # sorting and cumulative sums in at least single precision
    if probs.shape[0] == 0:
        return probs.sum() * 0.0  # no labelled point: zero, still attached to the graph
    fg = torch.nn.functional.one_hot(labels, probs.shape[1]).to(probs.dtype)  # [n, C]
    errors, order = torch.sort((fg - probs).abs(), dim=0, descending=True)  # [n, C] each column sorted
    fg_sorted = torch.gather(fg, 0, order)  # [n, C]
    total = fg_sorted.sum(dim=0, keepdim=True)  # [1, C] G per class
    intersection = total - fg_sorted.cumsum(dim=0)  # [n, C]
    union = total + (1.0 - fg_sorted).cumsum(dim=0)  # [n, C] ≥ 1 from the first row on
    jaccard = 1.0 - intersection / union  # [n, C]
    grad = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]], dim=0)  # [n, C]
    per_class = (errors * grad).sum(dim=0)  # [C]
    if classes == "present":
        present = total[0] > 0
        return per_class[present].mean()
    return per_class.mean()
