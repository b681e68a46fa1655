"""Felzenszwalb–Huttenlocher graph segmentation of point clouds and meshes (oversegmentation into superpoints).

``segment_graph(n, u, v, w, k_thresh, min_points)`` is the algorithm on a given edge list, as ScanNet's segmentator
runs it (kThresh 0.01, segMinVerts 20 for its released segments):

1. edges in non-decreasing weight order (ties in the order given); every vertex starts as its own component with
   threshold ``k_thresh``;
2. an edge joining components C1 != C2 merges them when ``w <= min(Int(C1) + k/|C1|, Int(C2) + k/|C2|)``, where
   Int(C) is the largest weight of the edges merged into C (the merging edge, since they come sorted);
3. a second pass over the same order merges, across every edge, two components of which one has fewer than
   ``min_points`` vertices (sizes as they grow). On a connected graph no component stays below ``min_points``
   unless the whole graph is smaller.

Segment ids are ``0..S-1`` ordered by each segment's smallest vertex id. The merge loops are plain Python over lists
(the sequential part; weights and thresholds in float64, where ScanNet uses float32); the second pass only visits
edges that can still merge (found with numpy). On a 50k-point scan the whole oversegmentation took 0.41-0.64 CPU s
on one core of a heavily loaded 2-core machine, about half of it in the Python passes (``bench/oversegment.py``).

``oversegment(coord, normal, ...)`` builds the graph of a cloud and segments it. It first sorts the points
lexicographically by (coord, normal[, colour]) and works on that canonical order, so the kd-tree, the kNN ties, the
edge order and the segment ids depend only on the set of points: permuting the input permutes the output. (Only
points equal in every one of those values are interchangeable, and may swap segments.)

Edges: ``knn_edges`` (each point to its ``k`` nearest others, undirected, deduplicated) or ``mesh_edges`` (the
sides of the faces). Weights (``edge_weights``): ScanNet's normal dissimilarity ``1 - n_u . n_v``, squared on
convex edges (a small normal change across a convex fold costs little; beyond 90 degrees, w > 1, squaring raises
it, as in ScanNet). ScanNet tests convexity on a directed edge
a -> b as ``n_b . (p_b - p_a) > 0``, which depends on the arbitrary direction; here the test is the sum of both
directions, ``(n_u - n_v) . (p_u - p_v) > 0``, which agrees with ScanNet's whenever its two directions agree and
does not depend on the vertex order. ScanNet's vertex normals are averages of unit face normals (not renormalised);
here normals are the cloud's unit normals. Optionally ``color_weight`` times the RGB distance scaled to [0, 1]
(``|c_u - c_v| / (255 sqrt 3)``) is added.
"""

from __future__ import annotations

import numpy as np

from pcdag.ops.kdtree import build_tree, tree_workers

COLOR_SCALE = 255.0 * np.sqrt(3.0)  # largest RGB distance of uint8 colours
ROWS_PER_CHUNK = 1 << 16  # kNN rows checked for mutual pairs at once ([rows, k+1, k+1] int64: ~40 MB at k 8)
EDGES_PER_CHUNK = 1 << 20  # sorted edges turned into Python lists at once (~100 MB of list items)


def _undirected(u: np.ndarray, v: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Deduplicated undirected edges without self-loops, ``u < v``, sorted by ``(u, v)``. int64 ``[E]`` each."""
    lo, hi = np.minimum(u, v).astype(np.int64), np.maximum(u, v).astype(np.int64)
    keep = lo != hi
    key = np.unique(lo[keep] * n + hi[keep])  # [E] sorted
    return key // n, key % n


def knn_edges(coord: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Edges from every point to its ``k`` nearest other points (fewer when the cloud is smaller), undirected.

    ``coord`` ``[N, 3]``; returns ``(u [E], v [E])`` int64, ``u < v``, each edge once, listed by the point whose
    list keeps it (rows in point order, neighbours by distance): a function of the point order alone.
    """
    n = len(coord)
    if k < 1:
        raise ValueError(f"knn_edges: k must be >= 1, got {k}")
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    tree = build_tree(coord)
    q = min(k + 1, n)  # the point itself (or a duplicate of it) comes among the first
    _, index = tree.query(tree.data, k=q, workers=tree_workers())
    index = index.reshape(n, q).astype(np.int64)  # [N, q]
    rows = np.arange(n, dtype=np.int64)[:, None]  # [N, 1]
    mutual = np.empty(index.shape, dtype=bool)  # [N, q]: i is also in the list of its neighbour
    for start in range(0, n, ROWS_PER_CHUNK):
        part = slice(start, start + ROWS_PER_CHUNK)
        mutual[part] = (index[index[part]] == rows[part, :, None]).any(axis=2)
    keep = (index != rows) & ((rows < index) | ~mutual)  # a mutual pair is kept once, from its lower point
    mine = np.broadcast_to(rows, index.shape)[keep]
    other = index[keep]
    return np.minimum(mine, other), np.maximum(mine, other)


def mesh_edges(faces: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The sides of triangle ``faces`` ``[F, 3]`` (vertex ids < ``n``), undirected and deduplicated, ``u < v``."""
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype.kind not in "iu":
        raise ValueError(f"mesh_edges: faces must be integer [F, 3], got {faces.dtype} {list(faces.shape)}")
    if len(faces) and (faces.min() < 0 or faces.max() >= n):
        raise ValueError(f"mesh_edges: face vertex ids must lie in [0, {n}), got {faces.min()}..{faces.max()}")
    u = faces[:, [0, 1, 2]].reshape(-1)
    v = faces[:, [1, 2, 0]].reshape(-1)
    return _undirected(u, v, n)


def edge_weights(
    coord: np.ndarray,
    normal: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    color: np.ndarray | None = None,
    color_weight: float = 0.0,
) -> np.ndarray:
    """``1 - n_u . n_v`` (squared where the edge is convex), plus ``color_weight`` times the scaled RGB distance.

    ``coord``, ``normal`` ``[N, 3]``; ``color`` uint8 ``[N, 3]`` (needed when ``color_weight > 0``). float64 ``[E]``.
    """
    nu, nv = normal[u].astype(np.float64), normal[v].astype(np.float64)  # [E, 3]
    w = np.clip(1.0 - np.einsum("ij,ij->i", nu, nv), 0.0, None)  # [E]
    delta = coord[u].astype(np.float64) - coord[v].astype(np.float64)  # [E, 3]
    convex = np.einsum("ij,ij->i", nu - nv, delta) > 0
    w[convex] *= w[convex]
    if color_weight > 0:
        if color is None or color.dtype != np.uint8:
            raise ValueError("edge_weights: color_weight > 0 needs uint8 colours [N, 3]")
        dc = color[u].astype(np.float64) - color[v].astype(np.float64)  # [E, 3]
        w += color_weight * np.sqrt(np.einsum("ij,ij->i", dc, dc)) / COLOR_SCALE
    return w


def _merge_by_threshold(
    parent: list[int], size: list[int], thresh: list[float], us: list[int], vs: list[int], ws: list[float], c: float
) -> None:
    """Pass 1 over sorted edges; ``parent``/``size`` (union-find with path halving) and ``thresh`` (Int(C) + c/|C|
    of each root) updated in place."""
    for a, b, w in zip(us, vs, ws, strict=True):
        while parent[a] != a:
            parent[a] = a = parent[parent[a]]
        if w > thresh[a]:  # rejected whatever b's component: its root is not needed
            continue
        while parent[b] != b:
            parent[b] = b = parent[parent[b]]
        if a != b and w <= thresh[b]:
            if size[a] < size[b]:
                a, b = b, a
            parent[b] = a
            size[a] += size[b]
            thresh[a] = w + c / size[a]


def _merge_small(parent: list[int], size: list[int], us: list[int], vs: list[int], min_points: int) -> None:
    """Pass 2: across each edge in order, join two components when either has fewer than ``min_points``."""
    for a, b in zip(us, vs, strict=True):
        while parent[a] != a:
            parent[a] = a = parent[parent[a]]
        while parent[b] != b:
            parent[b] = b = parent[parent[b]]
        if a != b and (size[a] < min_points or size[b] < min_points):
            if size[a] < size[b]:
                a, b = b, a
            parent[b] = a
            size[a] += size[b]


def _roots(parent: list[int]) -> np.ndarray:
    """The root of every vertex, by pointer jumping. int64 ``[N]``."""
    p = np.asarray(parent, dtype=np.int64)
    while True:
        q = p[p]
        if np.array_equal(q, p):
            return p
        p = q


def renumber_by_first(labels: np.ndarray) -> np.ndarray:
    """Labels ``0..S-1`` in the order of each label's first vertex. int64 ``[N]``."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def segment_graph(n: int, u: np.ndarray, v: np.ndarray, w: np.ndarray, k_thresh: float, min_points: int) -> np.ndarray:
    """Felzenszwalb–Huttenlocher segmentation of the graph on ``n`` vertices with edges ``(u, v, w)`` ``[E]``
    (see the module text). Returns int64 ``[n]`` segment ids ``0..S-1`` ordered by each segment's smallest vertex."""
    u, v, w = np.asarray(u, np.int64), np.asarray(v, np.int64), np.asarray(w, np.float64)
    if not (u.shape == v.shape == w.shape and u.ndim == 1):
        raise ValueError(f"segment_graph: u, v, w must be [E] alike, got {u.shape}, {v.shape}, {w.shape}")
    if len(u) and (min(u.min(), v.min()) < 0 or max(u.max(), v.max()) >= n):
        raise ValueError(f"segment_graph: edge vertex ids must lie in [0, {n})")
    if not np.isfinite(w).all():
        raise ValueError("segment_graph: edge weights must be finite")
    order = np.argsort(w, kind="stable")  # by weight, ties in the order given
    lo, hi, w = u[order], v[order], w[order]
    parent, size, thresh, c = list(range(n)), [1] * n, [float(k_thresh)] * n, float(k_thresh)
    for start in range(0, len(w), EDGES_PER_CHUNK):  # bounded memory: lists of one chunk at a time
        part = slice(start, start + EDGES_PER_CHUNK)
        _merge_by_threshold(parent, size, thresh, lo[part].tolist(), hi[part].tolist(), w[part].tolist(), c)
    root = _roots(parent)
    sizes = np.asarray(size, dtype=np.int64)[root]  # [n] size of each vertex's component
    small = (sizes < min_points)[lo] | (sizes < min_points)[hi]
    live = (root[lo] != root[hi]) & small  # components only grow: no other edge can merge in pass 2
    parent = root.tolist()
    lo, hi = lo[live], hi[live]
    for start in range(0, len(lo), EDGES_PER_CHUNK):
        part = slice(start, start + EDGES_PER_CHUNK)
        _merge_small(parent, size, lo[part].tolist(), hi[part].tolist(), int(min_points))
    return renumber_by_first(_roots(parent))


def canonical_order(*columns: np.ndarray) -> np.ndarray:
    """Point order sorting rows lexicographically by the given ``[N, d]`` arrays (the first array's first column
    first). int64 ``[N]``: ``order[i]`` is the input row at canonical position i. The later arrays only break ties
    of the first, so they are read only when the first has equal rows."""
    first = columns[0]
    order = np.lexsort([first[:, j] for j in reversed(range(first.shape[1]))])
    ranked = first[order]
    if len(columns) == 1 or not (ranked[1:] == ranked[:-1]).all(axis=1).any():
        return order.astype(np.int64)
    keys = [col[:, j] for col in reversed(columns) for j in reversed(range(col.shape[1]))]
    return np.lexsort(keys).astype(np.int64)


def oversegment(
    coord: np.ndarray,
    normal: np.ndarray,
    *,
    k: int = 8,
    k_thresh: float = 0.01,
    min_points: int = 20,
    color: np.ndarray | None = None,
    color_weight: float = 0.0,
    faces: np.ndarray | None = None,
) -> np.ndarray:
    """Superpoint id of every point ``[N]`` int64, ``0..S-1`` ordered by each segment's lexicographically lowest
    point: the kNN graph (or, given ``faces`` ``[F, 3]``, the mesh's edges) weighted by ``edge_weights`` and cut by
    ``segment_graph``. Invariant under permutation of the points (see the module text)."""
    n = len(coord)
    use_color = color_weight > 0
    if use_color and (color is None or color.dtype != np.uint8):
        raise ValueError("oversegment: color_weight > 0 needs uint8 colours [N, 3]")
    order = canonical_order(coord, normal, *((color,) if use_color else ()))  # [N]
    c_coord, c_normal = coord[order], normal[order]
    c_color = color[order] if use_color else None
    if faces is None:
        u, v = knn_edges(c_coord, k)
    else:
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        u, v = mesh_edges(rank[np.asarray(faces, dtype=np.int64)], n)
    w = edge_weights(c_coord, c_normal, u, v, c_color, color_weight)
    labels = segment_graph(n, u, v, w, k_thresh, min_points)  # canonical positions
    out = np.empty(n, dtype=np.int64)
    out[order] = labels
    return out
