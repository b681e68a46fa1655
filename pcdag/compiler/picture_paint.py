"""Painting a plan layout on a matplotlib axes whose units are points (imported only when drawing)."""

from __future__ import annotations

from matplotlib.lines import Line2D
from matplotlib.patches import FancyBboxPatch, Patch, Rectangle

from pcdag.compiler.boxes import Rect, Text
from pcdag.compiler.layout import Layout
from pcdag.compiler.picture import COLOURS, DATA_EDGE, FRAME, MODEL_EDGE, tint
from pcdag.compiler.plan import Plan

HEAD = "-|>,head_length=0.5,head_width=0.22"


def text(ax, t: Text, colour: str = "black") -> None:
    weight = "bold" if t.bold else "normal"
    ax.text(t.x, t.y, t.text, ha=t.ha, va="center", fontsize=t.size, weight=weight, color=colour)


def _box(ax, r: Rect, **kw) -> None:
    rounding = min(4.0, r.height / 4, r.width / 4)
    style = f"round,pad=0,rounding_size={rounding}"
    ax.add_patch(FancyBboxPatch((r.x0, r.y0), r.width, r.height, boxstyle=style, **kw))


def bands(ax, geo: Layout) -> None:
    for b in geo.bands:
        r = b.rect
        ax.add_patch(Rectangle((r.x0, r.y0), r.width, r.height, facecolor=tint(COLOURS[b.placement]), lw=0))
        for t in b.texts:
            text(ax, t)
        if b.lane_y is not None:
            ax.plot([r.x0 + 3, r.x1 - 3], [b.lane_y] * 2, ls=(0, (1, 2)), color="#888888", lw=0.8)
            ax.text(r.x1 - 3, b.lane_y + 3, "models ↑", ha="right", va="bottom", fontsize=6, color=MODEL_EDGE)
            ax.text(r.x1 - 3, b.lane_y - 3, "data ↓", ha="right", va="top", fontsize=6, color=DATA_EDGE)


def fused(ax, geo: Layout) -> None:
    for f in geo.fused:
        _box(ax, f.rect, facecolor="white", edgecolor=FRAME, ls="--", lw=1.0, alpha=0.9)
        text(ax, f.label, FRAME)
        for a in f.arrows:
            _polyline(ax, a, DATA_EDGE, "-")


def _polyline(ax, pts, colour: str, style) -> None:
    xs, ys = zip(*pts, strict=True)
    ax.plot(xs, ys, color=colour, lw=1.0, ls=style, solid_capstyle="butt")
    x1, y1 = pts[-1]
    x0, y0 = next((p for p in reversed(pts) if abs(p[0] - x1) + abs(p[1] - y1) > 3), pts[0])
    norm = max(((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5, 1e-9)
    ax.annotate(  # the head, 6 pt long along the last segment's direction (axes units are points)
        "",
        xy=(x1, y1),
        xytext=(x1 - 6 * (x1 - x0) / norm, y1 - 6 * (y1 - y0) / norm),
        arrowprops={"arrowstyle": HEAD, "color": colour, "lw": 1.0, "shrinkA": 0, "shrinkB": 0},
    )


def edges(ax, geo: Layout) -> None:
    for e in geo.edges:
        _polyline(ax, e.points, MODEL_EDGE if e.model else DATA_EDGE, (0, (4, 2)) if e.model else "-")


def nodes(ax, plan: Plan, geo: Layout) -> None:
    for name, nb in geo.nodes.items():
        colour = COLOURS[plan.bound[name].placement]
        edge = {"edgecolor": MODEL_EDGE, "lw": 1.6} if nb.model else {"edgecolor": "#333333", "lw": 0.8}
        _box(ax, nb.rect, facecolor=colour, **edge)
        for t in nb.texts:
            text(ax, t, "#222222")


def legend_columns(plan: Plan, geo: Layout) -> tuple[list, int]:
    """The legend's entries and how many fit side by side under the picture."""
    present = sorted({b.placement for b in plan.bound.values()})
    handles = [Patch(facecolor=COLOURS[p], edgecolor="#333333", label=str(p)) for p in present]
    handles.append(Line2D([], [], color=DATA_EDGE, lw=1.0, label="data edge"))
    if any(e.model for e in geo.edges):
        handles += [
            Line2D([], [], color=MODEL_EDGE, lw=1.0, ls=(0, (4, 2)), label="model edge (parameters)"),
            Patch(facecolor="white", edgecolor=MODEL_EDGE, lw=1.6, label="provides a model"),
        ]
    if geo.fused:
        handles.append(Patch(facecolor="white", edgecolor=FRAME, ls="--", label="fused: runs as one function"))
    return handles, max(1, min(len(handles), int(geo.width // 125)))


def legend(ax, plan: Plan, geo: Layout) -> None:
    handles, ncol = legend_columns(plan, geo)
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(geo.width / 2, 0),
        bbox_transform=ax.transData,
        ncol=ncol,
        fontsize=7,
        frameon=False,
        handlelength=2.2,
        borderaxespad=0,
    )
