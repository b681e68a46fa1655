"""The second half of the plan layout: x positions, edge routes, stage bands, and the ``Layout`` they make."""

from __future__ import annotations

from itertools import pairwise

import attrs

from pcdag.compiler.boxes import LABEL_SIZE, FusedBox, NodeBox, Rect, Text
from pcdag.compiler.structure import Edge
from pcdag.graphs.ports import Placement

STAGE_NOTES = {
    Placement.OFFLINE: "per scene, on Dask",
    Placement.STORE: "zarr, one group per scene",
    Placement.LOADER: "per sample, loader workers",
    Placement.DEVICE: "inside the training step",
    Placement.EVAL: "after training",
}
GAP_MIN, GAP_MAX, BAND_PAD, BAND_HEAD, MARGIN, CURVE_STEPS = 34.0, 90.0, 10.0, 30.0, 8.0, 16
STAGE_SIZE, TITLE_SIZE = 8.5, 10.0


@attrs.frozen
class EdgePath:
    edge: Edge
    model: bool  # carries a Model (parameters) rather than data
    points: tuple[tuple[float, float], ...]


@attrs.frozen
class Band:
    placement: Placement
    rect: Rect
    texts: tuple[Text, ...]
    lane_y: float | None  # the dotted line between the model lane (above) and the data lane; None: no models


@attrs.frozen
class Layout:
    width: float
    height: float
    title: Text
    bands: tuple[Band, ...]
    nodes: dict[str, NodeBox]  # every node, fused members included
    fused: tuple[FusedBox, ...]
    edges: tuple[EdgePath, ...]


@attrs.define
class Unit:  # a box placed as one: a node, or a fused chain
    id: str
    rect: Rect
    box: NodeBox | FusedBox
    placement: Placement
    model: bool
    ins: dict[tuple[str, str], tuple[float, float]]  # (node, port) -> attachment, relative to the unit
    outs: dict[tuple[str, str], tuple[float, float]]


def _band_texts(k: int, placement: Placement) -> tuple[tuple[str, float, bool], ...]:
    return ((f"{k} · {placement}", STAGE_SIZE, True), (STAGE_NOTES[placement], LABEL_SIZE, False))


def _x_columns(columns, units, stage_of, gap_of, meas) -> tuple[list[float], list[float], list[tuple[float, float]]]:
    """Left and right x of every column, and each stage band's x-range (widened to fit its title)."""
    xl, xr, bands = [], [], []
    x, start = MARGIN, MARGIN
    for k, column in enumerate(columns):
        if k and stage_of[k] != stage_of[k - 1]:
            x = _close_band(x, start, xl, xr, bands, stage_of, meas) + gap_of(k - 1)
            start = x
            x += BAND_PAD
        elif k:
            x += gap_of(k - 1)
        else:
            x += BAND_PAD
        width = max((units[it].rect.width for it in column if it in units), default=10.0)
        xl.append(x)
        x += width
        xr.append(x)
    _close_band(x, start, xl, xr, bands, stage_of, meas)
    return xl, xr, bands


def _close_band(x, start, xl, xr, bands, stage_of, meas) -> float:
    """End the band that began at ``start``: centre its columns if its title is wider; returns its right x."""
    k = len(xl) - 1
    texts = _band_texts(len(bands) + 1, stage_of[k])
    need = max(meas(t, s, b)[0] for t, s, b in texts) + 2 * BAND_PAD
    extra = max(0.0, need - (x + BAND_PAD - start))
    first = k
    while first and stage_of[first - 1] == stage_of[k]:
        first -= 1
    for j in range(first, k + 1):
        xl[j] += extra / 2
        xr[j] += extra / 2
    end = x + BAND_PAD + extra
    bands.append((start, end))
    return end


def bezier(p0, p3, steps: int = CURVE_STEPS) -> list[tuple[float, float]]:
    """A horizontal-tangent cubic from ``p0`` to ``p3``, sampled; it stays within their x-range."""
    (x0, y0), (x3, y3) = p0, p3
    xm = (x0 + x3) / 2
    out = []
    for i in range(1, steps + 1):
        t = i / steps
        a, b, c, d = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
        out.append((a * x0 + (b + c) * xm + d * x3, (a + b) * y0 + (c + d) * y3))
    return out


def _abs(units, ys, xl, xr, col, item, key, side) -> tuple[float, float]:
    """Absolute attachment point of an edge on a unit (``key`` = (node, port)), or a slot's point."""
    if item not in units:
        return (xl[col], ys[item])
    u = units[item]
    x0 = (xl[col] + xr[col]) / 2 - u.rect.width / 2
    dx, dy = (u.outs if side == "out" else u.ins)[key]
    return (x0 + dx, ys[item] + dy)


def _route(chain, e, units, ys, xl, xr, col) -> tuple[tuple[float, float], ...]:
    c0 = col[chain[0]]
    start = _abs(units, ys, xl, xr, c0, chain[0], (e.src, e.src_port), "out")
    pts = [start, (xr[c0], start[1])]
    for j, item in enumerate(chain[1:], c0 + 1):
        end = _abs(units, ys, xl, xr, j, item, (e.dst, e.dst_port), "in")
        pts += bezier(pts[-1], (xl[j], end[1]))
        pts.append((xr[j], end[1]) if item not in units else end)
    out = [pts[0]]
    for p in pts[1:]:  # drop stubs of (rounding-error) length zero: where a box is its column's widest
        if abs(p[0] - out[-1][0]) + abs(p[1] - out[-1][1]) > 1e-6:
            out.append(p)
    return tuple(out)


def assemble(plan, units, columns, col, chains, outer, models, ys, with_models, meas) -> Layout:
    """Place the columns, route the edges, frame the stages; everything shifted to start at the margin."""
    stage_of = [next(units[it].placement for it in c if it in units) for c in columns]

    def gap_of(k: int) -> float:
        spans = [abs(ys.get(a, 0.0) - ys.get(b, 0.0)) for ch in chains for a, b in pairwise(ch) if a in columns[k]]
        return min(GAP_MAX, GAP_MIN + 0.12 * max(spans, default=0.0))

    xl, xr, band_x = _x_columns(columns, units, stage_of, gap_of, meas)
    col.update({it: k for k, c in enumerate(columns) for it in c})
    placed = {u: units[u].box.moved((xl[col[u]] + xr[col[u]]) / 2 - units[u].rect.width / 2, ys[u]) for u in units}
    edges = [EdgePath(e, models[i], _route(chains[i], e, units, ys, xl, xr, col)) for i, e in enumerate(outer)]
    top = max(b.rect.y1 for b in placed.values())
    bottom = min([b.rect.y0 for b in placed.values()] + [y for _, y in (p for ep in edges for p in ep.points)])
    bands = []
    for i, (x0, x1) in enumerate(band_x):
        placement = stage_of[[k for k in range(len(columns)) if xl[k] >= x0][0]]
        rect = Rect(x0, bottom - BAND_PAD, x1, top + BAND_PAD + BAND_HEAD)
        texts, y = [], rect.y1 - BAND_PAD / 2
        for t, s, b in _band_texts(i + 1, placement):
            h = meas(t, s, b)[1] * 1.3
            texts.append(Text((x0 + x1) / 2, y - h / 2, t, s, b))
            y -= h
        has_models = with_models and any(units[u].model and units[u].placement == placement for u in units)
        bands.append(Band(placement, rect, tuple(texts), 0.0 if has_models else None))
    n_stages = len(bands)
    title = f"{plan.graph.name}: {plan.purpose} plan, {len(plan.bound)} nodes in {n_stages} stages"
    height = top + BAND_PAD + BAND_HEAD + 2 * TITLE_SIZE
    title_text = Text(MARGIN, height - TITLE_SIZE, title, TITLE_SIZE, True, ha="left")
    width = max(band_x[-1][1], MARGIN + meas(title, TITLE_SIZE, True)[0]) + MARGIN
    layout = Layout(width, height, title_text, tuple(bands), {}, (), tuple(edges))
    return _shifted(layout, placed, 0.0, MARGIN - (bottom - BAND_PAD))


def _shifted(layout: Layout, placed, dx: float, dy: float) -> Layout:
    nodes, fused = {}, []
    for box in placed.values():
        box = box.moved(dx, dy)
        if isinstance(box, FusedBox):
            fused.append(box)
            nodes.update({m.name: m for m in box.members})
        else:
            nodes[box.name] = box
    edges = tuple(attrs.evolve(e, points=tuple((x + dx, y + dy) for x, y in e.points)) for e in layout.edges)
    bands = tuple(
        attrs.evolve(
            b,
            rect=b.rect.moved(dx, dy),
            texts=tuple(attrs.evolve(t, x=t.x + dx, y=t.y + dy) for t in b.texts),
            lane_y=None if b.lane_y is None else b.lane_y + dy,
        )
        for b in layout.bands
    )
    title = attrs.evolve(layout.title, x=layout.title.x + dx, y=layout.title.y + dy)
    return Layout(layout.width, layout.height + dy, title, bands, nodes, tuple(fused), edges)
