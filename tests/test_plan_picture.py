"""The plan picture's geometry, over every shipped graph and random valid graphs: fused frames hold exactly
their members, no edge crosses a box, text fits, stages in order, model lane above the data lane."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from pcdag.compiler import compile_graph
from pcdag.compiler.boxes import Rect, measure
from pcdag.compiler.layout import Layout, layout, model_edge
from pcdag.compiler.picture import draw, to_dot
from pcdag.graphs import load_graph
from pcdag.graphs.overrides import apply_overrides
from pcdag.testing.graphs import graphs

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "graphs").glob("*.yaml")) + sorted((REPO / "graphs" / "eval").glob("*.yaml"))
EPS = 0.5  # points: a segment may touch a box's border (where it attaches), never enter its inside


NEEDS_DATA = {"roomtours": "videos.root"}  # shipped without data: the user points it at their videos


def _plan(path: Path):
    graph = load_graph(path)
    if path.stem in NEEDS_DATA:
        graph = apply_overrides(graph, {NEEDS_DATA[path.stem]: str(REPO)})  # any existing folder will do
    return compile_graph(graph)


def _inside(r: Rect, eps: float = EPS) -> Rect:
    return Rect(r.x0 + eps, r.y0 + eps, r.x1 - eps, r.y1 - eps)


def hits(p: tuple[float, float], q: tuple[float, float], r: Rect) -> bool:
    """Whether the segment p–q meets the rectangle r (Liang–Barsky clipping)."""
    (x0, y0), (x1, y1) = p, q
    dx, dy = x1 - x0, y1 - y0
    lo, hi = 0.0, 1.0
    for d, near, far in ((dx, r.x0 - x0, r.x1 - x0), (dy, r.y0 - y0, r.y1 - y0)):
        if d == 0:
            if near > 0 or far < 0:
                return False
            continue
        t0, t1 = sorted((near / d, far / d))
        lo, hi = max(lo, t0), min(hi, t1)
        if lo > hi:
            return False
    return True


def test_segment_box_check_is_not_blind() -> None:
    box = Rect(0, 0, 10, 10)
    assert hits((-5, 5), (15, 5), box) and hits((-1, -1), (11, 11), box) and hits((2, 2), (3, 3), box)
    assert not hits((-5, 11), (15, 11), box) and not hits((-5, 0), (0, -5), box) and not hits((11, -3), (11, 20), box)


def overlaps(a: Rect, b: Rect) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def check_geometry(plan, geo: Layout) -> None:
    assert set(geo.nodes) == set(plan.bound)
    members = {n: f for f in geo.fused for n in f.nodes}
    boxes = list(geo.nodes.values())
    for a, b in ((a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :]):
        assert not overlaps(a.rect, b.rect), (a.name, b.name)
    for f in geo.fused:  # (1) a fused frame holds exactly its members' boxes
        assert {m.name for m in f.members} == set(f.nodes)
        for nb in boxes:
            if nb.name in f.nodes:
                assert f.rect.contains(nb.rect), (f.nodes, nb.name)
            else:
                assert not overlaps(f.rect, nb.rect), (f.nodes, nb.name)
        for arrow in f.arrows:
            for p, q in pairwise(arrow):
                assert not any(hits(p, q, _inside(nb.rect)) for nb in boxes), (f.nodes, arrow)
    for e in geo.edges:  # (2) no edge enters a node box, nor a fused frame it does not enter or leave
        src, dst = geo.nodes[e.edge.src].rect, geo.nodes[e.edge.dst].rect
        (xs, ys), (xd, yd) = e.points[0], e.points[-1]
        assert xs == pytest.approx(src.x1) and src.y0 < ys < src.y1, e.edge
        assert xd == pytest.approx(dst.x0) and dst.y0 < yd < dst.y1, e.edge
        assert all(q[0] >= p[0] for p, q in pairwise(e.points)), e.edge  # left to right: heads point into boxes
        assert e.points[-1][0] - e.points[-2][0] > 0, e.edge
        frames = [f.rect for f in geo.fused if members.get(e.edge.src) is not f and members.get(e.edge.dst) is not f]
        for p, q in pairwise(e.points):
            for nb in boxes:
                assert not hits(p, q, _inside(nb.rect)), (e.edge, nb.name, p, q)
            for r in frames:
                assert not hits(p, q, _inside(r, -EPS)), (e.edge, r, p, q)
        assert e.model == model_edge(plan, e.edge)
    drawn = len(geo.edges) + sum(len(f.arrows) for f in geo.fused)
    assert drawn == len(plan.edges)
    check_text_and_stages(plan, geo)


def check_text_and_stages(plan, geo: Layout) -> None:
    for nb in geo.nodes.values():  # (3) text fits its box
        for t in nb.texts:
            assert nb.rect.contains(t.extent(measure)), (nb.name, t.text)
    for f in geo.fused:
        assert f.rect.contains(f.label.extent(measure))
    for b in geo.bands:
        for t in b.texts:
            assert b.rect.contains(t.extent(measure)), t.text
    assert geo.title.extent(measure).x1 <= geo.width
    assert [b.placement for b in geo.bands] == [s.placement for s in plan.stages]
    for a, b in pairwise(geo.bands):
        assert a.rect.x1 < b.rect.x0
    band = {b.placement: b for b in geo.bands}
    for name, nb in geo.nodes.items():
        b = band[plan.bound[name].placement]
        assert b.rect.contains(nb.rect), name
        if b.lane_y is not None:  # models above the lane line, data below
            assert (nb.rect.y0 > b.lane_y) if nb.model else (nb.rect.y1 < b.lane_y), name


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_plan_pictures_have_clean_geometry(path: Path) -> None:
    plan = _plan(path)
    check_geometry(plan, layout(plan))


def test_lam3c_loader_fusion_is_exactly_grid_and_views() -> None:
    plan = _plan(REPO / "graphs" / "lam3c.yaml")
    assert [g.nodes for g in plan.groups if len(g.nodes) > 1] == [("grid", "views")]
    geo = layout(plan)
    (frame,) = geo.fused
    inside = {n for n, nb in geo.nodes.items() if overlaps(frame.rect, nb.rect)}
    assert inside == {"grid", "views"}
    models = {n for n, nb in geo.nodes.items() if nb.model}
    assert models == {"student", "teacher", "mask_head", "unmask_head", "teacher_mask_head", "teacher_unmask_head"}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_random_plan_pictures_have_clean_geometry(graph) -> None:
    plan = compile_graph(graph)
    check_geometry(plan, layout(plan))


def test_dot_has_stage_clusters_fused_clusters_and_dashed_model_edges() -> None:
    plan = _plan(REPO / "graphs" / "lam3c.yaml")
    dot = to_dot(plan)
    assert dot.count("subgraph cluster_stage_") == len(plan.stages)
    fused = dot[dot.index("subgraph cluster_fused_") :]
    fused = fused[: fused.index("}")]
    assert '"grid"' in fused and '"views"' in fused and '"masking"' not in fused
    assert '"student" -> "student_masked" [label="model → model", style=dashed' in dot
    assert '"masking" -> "student_masked" [label="views → views"];' in dot
    assert '"store" -> "grid";' in dot  # cloud → cloud: no label


def test_lam3c_picture_is_written(tmp_path: Path) -> None:
    paths = draw(_plan(REPO / "graphs" / "lam3c.yaml"), tmp_path / "lam3c")
    assert sorted(p.suffix for p in paths) == [".dot", ".png", ".svg"]
    assert (tmp_path / "lam3c.png").read_bytes()[:4] == b"\x89PNG"
