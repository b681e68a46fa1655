"""Where everything goes in a plan picture: a layered layout that is a pure function of the plan.

Stages are bands of columns left to right in stage order (offline → store → loader → device → eval). A fused
chain is one unit whose frame holds exactly its members (``boxes.FusedBox``). Inside a band, units sit in
columns by their depth within the stage (nodes nothing reads from go to the stage's last column); nodes that
provide a Model (parameters) sit in a lane above the dotted line, data nodes below it. An edge longer than one
column holds a reserved slot in every column it passes, units are ordered by barycentric sweeps with adjacent
swaps to cut crossings, and vertical positions follow the neighbours' (isotonic regression per column).

Why no edge crosses a box: every box lies inside its column's x-range, boxes and slots of a column never
overlap vertically, an edge runs horizontally inside a column only at the height of its own box or slot, and
between columns it is a Bézier curve whose control points lie in the gap, so the curve does too.
"""

from __future__ import annotations

from itertools import pairwise

import networkx as nx

from pcdag.compiler import boxes as bx
from pcdag.compiler.layout_order import order_columns
from pcdag.compiler.layout_route import Layout, Unit, assemble
from pcdag.compiler.plan import Plan
from pcdag.compiler.structure import Edge

NODE_SPACE, SLOT_SPACE, LANE = 14.0, 8.0, 26.0  # vertical gaps: between boxes, next to a slot, the lane line


def model_edge(plan: Plan, e: Edge) -> bool:
    return plan.bound[e.src].cls.outputs[e.src_port].type.name == "Model"


def _units(plan: Plan, meas) -> tuple[dict[str, Unit], dict[str, str]]:
    units, unit_of = {}, {}
    for i, grp in enumerate(plan.groups):
        if len(grp.nodes) > 1:
            fb = bx.fused_box(plan, grp.nodes, meas)
            first, last = fb.members[0], fb.members[-1]
            ins = {(first.name, p): xy for p, xy in first.ins.items()}
            outs = {(last.name, p): xy for p, xy in last.outs.items()}
            units[f"fused#{i}"] = Unit(f"fused#{i}", fb.rect, fb, grp.placement, False, ins, outs)
            unit_of.update({n: f"fused#{i}" for n in grp.nodes})
    for name, b in plan.bound.items():
        if name not in unit_of:
            nb = bx.node_box(plan, name, meas)
            ins = {(name, p): xy for p, xy in nb.ins.items()}
            outs = {(name, p): xy for p, xy in nb.outs.items()}
            units[name] = Unit(name, nb.rect, nb, b.placement, nb.model, ins, outs)
            unit_of[name] = name
    return units, unit_of


def _columns(units: dict[str, Unit], links: list[tuple[str, str]]) -> dict[str, int]:
    """Column of each unit: stages in order, depth inside the stage; sinks at their stage's last column."""
    col, offset = {}, 0
    for placement in sorted({u.placement for u in units.values()}):
        g = nx.DiGraph()
        g.add_nodes_from(u for u in units if units[u].placement == placement)
        g.add_edges_from((a, b) for a, b in links if a in g and b in g)
        depth = {}
        for u in nx.topological_sort(g):
            depth[u] = max((depth[p] + 1 for p in g.predecessors(u)), default=0)
        last = max(depth.values())
        has_out = {a for a, _ in links}
        for u, d in depth.items():
            col[u] = offset + (last if u not in has_out and g.in_degree(u) else d)
        offset += last + 1
    return col


def layout(plan: Plan, meas=bx.measure) -> Layout:
    """Boxes, fused frames, stage bands and edge polylines of the plan picture, in points (y upwards)."""
    units, unit_of = _units(plan, meas)
    inner = [e for e in plan.edges if unit_of[e.src] == unit_of[e.dst]]  # inside a fused chain: drawn by it
    outer = [e for e in plan.edges if e not in inner]
    links = [(unit_of[e.src], unit_of[e.dst]) for e in outer]
    col = _columns(units, links)
    models = [model_edge(plan, e) for e in outer]
    chains = []  # per outer edge: the item in each column it spans (its source, slots, its destination)
    for i, (a, b) in enumerate(links):
        chains.append([a] + [f"~{i}@{c}" for c in range(col[a] + 1, col[b])] + [b])
    lane = {u: 0 if units[u].model else 1 for u in units}
    lane.update({s: 0 if models[i] else 1 for i, ch in enumerate(chains) for s in ch[1:-1]})
    columns: list[list[str]] = [[] for _ in range(max(col.values()) + 1)]
    for u in units:
        columns[col[u]].append(u)
    for i, ch in enumerate(chains):
        for k, s in enumerate(ch[1:-1], col[links[i][0]] + 1):
            columns[k].append(s)
    ports = _port_ranks(units, outer, unit_of)
    columns = order_columns(columns, chains, lane, ports)
    with_models = any(u.model for u in units.values())
    ys = _place_y(columns, chains, units, outer, unit_of, lane if with_models else None)
    return assemble(plan, units, columns, col, chains, outer, models, ys, with_models, meas)


def _port_ranks(units, outer, unit_of) -> list[tuple[float, float]]:
    """Per outer edge: where on its source's right side and its destination's left side it attaches (0 = top)."""
    out = []
    for e in outer:
        su, du = units[unit_of[e.src]], units[unit_of[e.dst]]
        src, dst = su.outs[(e.src, e.src_port)][1], du.ins[(e.dst, e.dst_port)][1]
        out.append((-src / su.rect.height, -dst / du.rect.height))
    return out


def _attach(units, item: str, e: Edge, unit_of, side: str) -> float:
    """Vertical offset of the edge's attachment above the item's bottom (0 for a slot)."""
    if item.startswith("~"):
        return 0.0
    u = units[item]
    return (u.outs[(e.src, e.src_port)] if side == "out" else u.ins[(e.dst, e.dst_port)])[1]


def _place_y(columns, chains, units, outer, unit_of, lane) -> dict[str, float]:
    """Bottom y of every item: stacked first, then moved towards its neighbours column by column."""
    height = {it: (units[it].rect.height if it in units else 0.0) for c in columns for it in c}
    y = {}
    for c in columns:
        _stack(c, height, y, lane)
    pulls: dict[str, list[tuple[str, float, float]]] = {}  # item -> (neighbour, its attach, my attach)
    for i, ch in enumerate(chains):
        e = outer[i]
        for a, b in pairwise(ch):
            ya, yb = _attach(units, a, e, unit_of, "out"), _attach(units, b, e, unit_of, "in")
            pulls.setdefault(a, []).append((b, yb, ya))
            pulls.setdefault(b, []).append((a, ya, yb))
    order = list(range(len(columns))) + list(range(len(columns) - 2, -1, -1))
    for _ in range(6):
        for k in order:
            want = {}
            for it in columns[k]:
                got = pulls.get(it, [])
                want[it] = sum(y[n] + their - mine for n, their, mine in got) / len(got) if got else y[it]
            _project(columns[k], height, want, y, lane)
    return y


def _space(a: str, b: str) -> float:
    return SLOT_SPACE if a.startswith("~") or b.startswith("~") else NODE_SPACE


def _stack(column: list[str], height, y, lane) -> None:
    """Initial positions: model items upwards from the lane line, data items downwards (or all downwards)."""
    top = -LANE / 2 if lane else 0.0
    data = [it for it in column if not lane or lane[it]]
    for i, it in enumerate(data):
        y[it] = top - height[it]
        top = y[it] - (_space(it, data[i + 1]) if i + 1 < len(data) else 0.0)
    bottom = LANE / 2
    models = [it for it in column if lane and not lane[it]]
    for it in reversed(models):
        y[it] = bottom
        bottom += height[it] + NODE_SPACE


def _project(column: list[str], height, want, y, lane) -> None:
    """The positions closest (least squares) to ``want`` keeping the order top to bottom, the spacing, and
    the lanes: pool-adjacent-violators on offsets, then pushes out of the lane line."""
    off, o = [], 0.0
    for i, it in enumerate(column):
        if i:
            o += height[it] + _space(column[i - 1], it)
        off.append(o)
    blocks: list[list[float]] = []  # [mean, weight]; non-increasing means
    for i, it in enumerate(column):
        blocks.append([want[it] + off[i], 1.0])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            m2, w2 = blocks.pop()
            m1, w1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2])
    z = [m for m, w in blocks for _ in range(int(w))]
    for i, it in enumerate(column):
        y[it] = z[i] - off[i]
    if lane:
        _push_out_of_lane_line(column, height, y, lane)


def _push_out_of_lane_line(column, height, y, lane) -> None:
    models = [it for it in column if not lane[it]]
    floor = LANE / 2
    for i in range(len(models) - 1, -1, -1):
        it = models[i]
        y[it] = max(y[it], floor)
        floor = y[it] + height[it] + _space(it, models[i - 1]) if i else 0.0
    data = [it for it in column if lane[it]]
    ceiling = -LANE / 2
    for i, it in enumerate(data):
        y[it] = min(y[it], ceiling - height[it])
        ceiling = y[it] - (_space(it, data[i + 1]) if i + 1 < len(data) else 0.0)
