"""The overlap of two views of one scene: matched point pairs, overlap segments re-indexed, sampled pairs.

Both views are subsets of the scene's rows (``rows_a`` [n_a], ``rows_b`` [n_b]); matching works on the rows
(``method = "index"``: a pair is the same scene row in both views) or on the original coordinates (``"radius"``:
each point of view a takes its nearest point of view b on ``origin_coord`` within ``radius``; a point of view b
claimed by several keeps the first, so pairs are one-to-one). A point is *in the overlap* when it has a partner
within the radius in the other view (with ``"index"``: when its row is in both views).

Overlap segments: the superpoints (``superpoint`` >= 0) that have overlap points in *both* views, re-indexed
densely 0..P-1 in increasing superpoint order; per view ``segment`` [n] is that index for overlap points of such a
segment and -1 for every other point (outside the overlap, without a superpoint, or of a segment seen in one view
only). Sampled pairs: up to ``n_samples`` pairs whose two points both have a segment, drawn without replacement;
per view ``pair`` [n] is k in 0..K-1 at the k-th sampled pair's point and -1 elsewhere, so the points with the same
``pair`` in the two views are the same physical point (the same row, or matched within the radius).
"""

from __future__ import annotations

import attrs
import numpy as np

from pcdag.ops.kdtree import build_tree

OVERLAP_METHODS = ("radius", "index")


@attrs.frozen
class Overlap:
    segment: tuple[np.ndarray, np.ndarray]  # per view [n_v] int64 in -1..P-1
    pair: tuple[np.ndarray, np.ndarray]  # per view [n_v] int64 in -1..K-1
    segments: int  # P
    pairs: int  # K
    overlap_points: tuple[int, int]  # points of each view in the overlap


def match_pairs(
    rows: tuple[np.ndarray, np.ndarray], origin: tuple[np.ndarray, np.ndarray], method: str, radius: float
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """One-to-one pairs (``ia`` [m], ``ib`` [m] view rows) and per view the [n_v] bool "in the overlap" mask."""
    if method == "index":
        _, ia, ib = np.intersect1d(rows[0], rows[1], assume_unique=True, return_indices=True)
        inside = [np.zeros(len(r), dtype=bool) for r in rows]
        inside[0][ia], inside[1][ib] = True, True
        return ia.astype(np.int64), ib.astype(np.int64), (inside[0], inside[1])
    if method != "radius":
        raise ValueError(f"overlap method {method!r}: use one of {', '.join(OVERLAP_METHODS)}")
    dist, nearest = build_tree(origin[1]).query(origin[0], k=1, distance_upper_bound=radius)  # [n_a]; miss: inf
    hit = np.isfinite(dist)
    ia = np.flatnonzero(hit)
    ib = nearest[hit].astype(np.int64)
    ib, first = np.unique(ib, return_index=True)  # a point of view b claimed twice keeps its first claimant
    ia = ia[first]
    inside_b = np.isfinite(build_tree(origin[0]).query(origin[1], k=1, distance_upper_bound=radius)[0])  # [n_b]
    return ia.astype(np.int64), ib, (hit, inside_b)


def reindex_segments(
    superpoint: tuple[np.ndarray, np.ndarray], inside: tuple[np.ndarray, np.ndarray]
) -> tuple[tuple[np.ndarray, np.ndarray], int]:
    """Per view the dense overlap-segment index [n_v] (-1 outside) and P (see the module doc)."""
    seen = [np.unique(sp[m & (sp >= 0)]) for sp, m in zip(superpoint, inside, strict=True)]
    both = np.intersect1d(seen[0], seen[1])  # [P] superpoint ids, ascending
    out = []
    for sp, m in zip(superpoint, inside, strict=True):
        if len(both) == 0:
            out.append(np.full(len(sp), -1, dtype=np.int64))
            continue
        pos = np.minimum(np.searchsorted(both, sp), len(both) - 1)  # [n] where sp would sit in `both`
        out.append(np.where(m & (both[pos] == sp), pos, -1).astype(np.int64))
    return (out[0], out[1]), len(both)


def find_overlap(
    rows: tuple[np.ndarray, np.ndarray],
    origin: tuple[np.ndarray, np.ndarray],
    superpoint: tuple[np.ndarray, np.ndarray],
    n_samples: int,
    rng: np.random.Generator,
    method: str = "radius",
    radius: float = 0.03,
) -> Overlap:
    """Match, re-index and sample the overlap of two views (module doc)."""
    ia, ib, inside = match_pairs(rows, origin, method, radius)
    segment, n_segments = reindex_segments(superpoint, inside)
    usable = np.flatnonzero((segment[0][ia] >= 0) & (segment[1][ib] >= 0))  # [u] pairs with a segment both sides
    chosen = np.sort(rng.choice(usable, min(n_samples, len(usable)), replace=False)) if len(usable) else usable
    pair = [np.full(len(r), -1, dtype=np.int64) for r in rows]
    pair[0][ia[chosen]] = np.arange(len(chosen))
    pair[1][ib[chosen]] = np.arange(len(chosen))
    return Overlap(segment, (pair[0], pair[1]), n_segments, len(chosen), (int(inside[0].sum()), int(inside[1].sum())))
