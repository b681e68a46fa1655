"""Order the items of each column of a layered layout to cut edge crossings.

Items are unit ids and edge slots; each column is ordered top to bottom, model lane (0) before data lane (1).
Barycentric sweeps (each item goes to the mean position of its neighbours in the column before, then after),
each followed by adjacent swaps inside a lane that lower the crossings; the best order seen is kept.
"""

from __future__ import annotations

from itertools import combinations, pairwise

SWEEPS = 8


def order_columns(
    columns: list[list[str]], chains: list[list[str]], lane: dict[str, int], ports: list[tuple[float, float]]
) -> list[list[str]]:
    """``chains[i]`` lists the item edge ``i`` occupies in each column it spans; ``ports[i]`` is where it
    attaches on its source's and destination's sides (smaller = higher)."""
    gaps: list[list[tuple[str, str, float, float]]] = [[] for _ in range(max(len(columns) - 1, 0))]
    col_of = {it: k for k, c in enumerate(columns) for it in c}
    for i, ch in enumerate(chains):
        for j, (a, b) in enumerate(pairwise(ch)):
            src = ports[i][0] if j == 0 else 0.0
            dst = ports[i][1] if j == len(ch) - 2 else 0.0
            gaps[col_of[a]].append((a, b, src, dst))
    cols = [sorted(c, key=lambda it: lane[it]) for c in columns]
    best, best_n = [list(c) for c in cols], total_crossings(cols, gaps)
    for sweep in range(SWEEPS):
        down = sweep % 2 == 0
        for k in range(1, len(cols)) if down else range(len(cols) - 2, -1, -1):
            pos = {it: i for c in cols for i, it in enumerate(c)}
            near = gaps[k - 1] if down else gaps[k]
            cols[k] = _by_barycentre(cols[k], near, pos, lane, down)
        _swap_pass(cols, gaps, lane)
        n = total_crossings(cols, gaps)
        if n < best_n:
            best, best_n = [list(c) for c in cols], n
    return best


def _by_barycentre(column, near, pos, lane, down: bool) -> list[str]:
    sums: dict[str, list[float]] = {}
    for a, b, src, dst in near:
        me, other, at = (b, a, src) if down else (a, b, dst)
        sums.setdefault(me, []).append(pos[other] + 0.3 * at)
    key = {it: (lane[it], sum(sums[it]) / len(sums[it]) if it in sums else pos[it], pos[it]) for it in column}
    return sorted(column, key=key.__getitem__)


def _swap_pass(cols, gaps, lane) -> None:
    """Swap neighbours of one lane where that lowers the crossings on both sides of the column."""
    for k, c in enumerate(cols):
        around = [gaps[g] for g in (k - 1, k) if 0 <= g < len(gaps)]
        improved = True
        while improved:
            improved = False
            for i in range(len(c) - 1):
                if lane[c[i]] != lane[c[i + 1]]:
                    continue
                before = sum(crossings(g, cols) for g in around)
                c[i], c[i + 1] = c[i + 1], c[i]
                if sum(crossings(g, cols) for g in around) < before:
                    improved = True
                else:
                    c[i], c[i + 1] = c[i + 1], c[i]


def crossings(gap: list[tuple[str, str, float, float]], cols: list[list[str]]) -> int:
    """Pairs of segments in one gap whose ends are in opposite orders (shared ends do not cross)."""
    pos = {it: i for c in cols for i, it in enumerate(c)}
    ends = [((pos[a], src), (pos[b], dst)) for a, b, src, dst in gap]
    return sum(1 for (l1, r1), (l2, r2) in combinations(ends, 2) if (l1 < l2 and r1 > r2) or (l1 > l2 and r1 < r2))


def total_crossings(cols: list[list[str]], gaps: list[list[tuple[str, str, float, float]]]) -> int:
    return sum(crossings(g, cols) for g in gaps)
