"""Instance proposals from voting: foreground points moved to their predicted centres, grouped by distance.

An instance head predicts, for every point, the offset to the centre of its instance and a foreground probability
(``pcdag.nodes.heads.instance_head``). Points of one instance, moved by their offsets, crowd around one centre;
``cluster_proposals`` groups them:

1. **Radius graph.** Two points are linked when they lie within ``radius`` of each other (inclusive, Euclidean);
   the proposals are the connected components (``scipy.sparse.csgraph.connected_components``). With
   ``max_neighbours = 0`` the graph is exact: every pair within the radius (``cKDTree.query_pairs``). Well-voted
   instances collapse to a small ball, where the exact graph grows with the square of the instance's size, so by
   default each point links only to its ``max_neighbours`` nearest points within the radius (a k-d tree query):
   memory O(K · max_neighbours), and to the first point of its cell in a grid of edge radius / √3 (any two points
   of such a cell are within the radius), so a collapsed instance stays one proposal whatever the cap. The capped
   graph is a subgraph of the exact one (it never merges what the exact graph keeps apart) and has its components
   whenever no point has more than ``max_neighbours`` others within the radius.
2. **Size.** Components of fewer than ``min_points`` points are dropped (label −1).
3. **Score.** The confidence of a proposal is the mean foreground probability of its points.

Proposal ids are 0..P−1 in the order of each proposal's first point. ``proposal_masks`` turns per-point ids into the
boolean ``[P, N]`` masks ``InstanceAP.add`` takes. Pure numpy/scipy functions, no loops over points.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

CELL_DIVISOR = 1.7321  # a little over √3: a cell of edge radius / CELL_DIVISOR has a diagonal under the radius


def _points(coord: np.ndarray, where: str) -> np.ndarray:
    arr = np.asarray(coord, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{where}: points must be an [K, 3] array, got shape {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{where}: points contain NaN or infinite coordinates")
    return arr


def first_appearance(labels: np.ndarray) -> np.ndarray:
    """``labels`` ``[K]`` (ids ≥ 0) renumbered 0, 1, ... in the order each id first occurs."""
    if labels.size == 0:
        return labels.astype(np.int64)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)  # [C], [K]
    rank = np.empty(len(first), dtype=np.int64)  # [C]
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def _cell_stars(xyz: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Edges from every point to the first point of its cell in a grid of edge just under ``radius / √3``: any two
    points of one cell are within ``radius``, so these edges belong to the exact graph. ``([K], [K])``."""
    keys = np.floor(xyz / (radius / CELL_DIVISOR)).astype(np.int64)  # [K, 3]
    _, first, cell = np.unique(keys, axis=0, return_index=True, return_inverse=True)  # [C], [K]
    return np.arange(len(xyz)), first[cell.reshape(-1)]


def radius_components(coord: np.ndarray, radius: float, max_neighbours: int = 0) -> np.ndarray:
    """``[K]`` int64 component of each point of ``coord`` ``[K, 3]`` in the graph linking points at most ``radius``
    apart (each to at most ``max_neighbours`` nearest ones; 0 = all). Ids in order of first appearance."""
    xyz = _points(coord, "radius_components")
    if not radius > 0:
        raise ValueError(f"radius_components: radius must be positive, got {radius}")
    if max_neighbours < 0:
        raise ValueError(f"radius_components: max_neighbours must be >= 0 (0 = no cap), got {max_neighbours}")
    k = len(xyz)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    tree = cKDTree(xyz)
    if max_neighbours == 0 or max_neighbours >= k - 1:
        pairs = tree.query_pairs(radius, output_type="ndarray")  # [E, 2]
        src, dst = pairs[:, 0], pairs[:, 1]
    else:
        bound = np.nextafter(radius, np.inf)  # the query keeps distances strictly below its bound: make it inclusive
        dist, nbr = tree.query(xyz, k=max_neighbours + 1, distance_upper_bound=bound)  # [K, k + 1] (self first)
        found = np.isfinite(dist)  # [K, k + 1]; missing neighbours have distance inf and index K
        cell_src, cell_dst = _cell_stars(xyz, radius)
        src = np.concatenate([np.broadcast_to(np.arange(k)[:, None], nbr.shape)[found], cell_src])  # [E]
        dst = np.concatenate([nbr[found], cell_dst])  # [E]
    graph = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(k, k))
    _, labels = connected_components(graph, directed=False)  # [K]
    return first_appearance(labels)


def cluster_proposals(
    shifted: np.ndarray, foreground_prob: np.ndarray, radius: float, min_points: int, max_neighbours: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """``(labels [K] int64, scores [P] float64)``: the proposal of every shifted foreground point (−1 = in a
    component smaller than ``min_points``) and each proposal's mean foreground probability."""
    prob = np.asarray(foreground_prob, dtype=np.float64).reshape(-1)  # [K]
    if prob.shape[0] != len(shifted):
        raise ValueError(f"cluster_proposals: {len(shifted)} points but {prob.shape[0]} foreground probabilities")
    if min_points < 1:
        raise ValueError(f"cluster_proposals: min_points must be at least 1, got {min_points}")
    components = radius_components(shifted, radius, max_neighbours)  # [K]
    sizes = np.bincount(components) if components.size else np.zeros(0, dtype=np.int64)  # [C]
    keep = sizes >= min_points  # [C]
    new_id = np.where(keep, np.cumsum(keep) - 1, -1)  # [C] proposal id of each kept component
    labels = new_id[components] if components.size else components  # [K]
    kept = labels >= 0  # [K]
    n = int(keep.sum())
    scores = np.bincount(labels[kept], weights=prob[kept], minlength=n) / np.maximum(sizes[keep], 1)  # [P]
    return labels, scores


def proposal_masks(point_labels: np.ndarray, n_proposals: int) -> np.ndarray:
    """``[P, N]`` bool: mask ``p`` holds the points whose label is ``p`` (labels −1 belong to none)."""
    labels = np.asarray(point_labels).reshape(-1)  # [N]
    return labels[None, :] == np.arange(n_proposals)[:, None]  # [P, N]
