"""Pictures of a plan: Graphviz DOT text, and PNG/SVG drawn with matplotlib (no graphviz binary needed).

Nodes are laid out left to right in topological layers, coloured by stage; fused groups share a frame.
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx

from pcdag.compiler.plan import Plan
from pcdag.graphs.ports import Placement

COLOURS = {
    Placement.OFFLINE: "#9ecae1",
    Placement.STORE: "#fdd0a2",
    Placement.LOADER: "#a1d99b",
    Placement.DEVICE: "#fc9272",
    Placement.EVAL: "#dadaeb",
}


def to_dot(plan: Plan) -> str:
    lines = [f'digraph "{plan.graph.name}" {{', "  rankdir=LR;", '  node [shape=box, style="rounded,filled"];']
    for i, grp in enumerate(plan.groups):
        if len(grp.nodes) > 1:
            lines.append(f'  subgraph cluster_fused_{i} {{ label="fused ({grp.placement})"; style=dashed;')
            lines += [f'    "{n}";' for n in grp.nodes]
            lines.append("  }")
    for name, b in plan.bound.items():
        label = f"{name}\\n{b.decl.type}\\n[{b.placement}]"
        lines.append(f'  "{name}" [label="{label}", fillcolor="{COLOURS[b.placement]}"];')
    for e in plan.edges:
        lines.append(f'  "{e.src}" -> "{e.dst}" [label="{e.src_port}→{e.dst_port}", fontsize=9];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _layout(plan: Plan) -> dict[str, tuple[float, float]]:
    g = nx.DiGraph()
    g.add_nodes_from(plan.bound)
    g.add_edges_from((e.src, e.dst) for e in plan.edges)
    pos = {}
    for x, layer in enumerate(nx.topological_generations(g)):
        for y, name in enumerate(sorted(layer)):
            pos[name] = (x * 2.6, -(y - (len(layer) - 1) / 2) * 1.3)
    return pos


def draw(plan: Plan, out: Path) -> list[Path]:
    """Write ``<out>.dot``, ``<out>.png`` and ``<out>.svg``; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch, Patch

    from pcdag.runtime.atomic import atomic_write_text

    pos = _layout(plan)
    xs = [p[0] for p in pos.values()] or [0]
    ys = [p[1] for p in pos.values()] or [0]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.9 * (max(xs) - min(xs)) / 2.6 + 3), max(3.0, max(ys) - min(ys) + 2.5)))
    for grp in plan.groups:
        if len(grp.nodes) > 1:
            gx = [pos[n][0] for n in grp.nodes]
            gy = [pos[n][1] for n in grp.nodes]
            ax.add_patch(
                FancyBboxPatch(
                    (min(gx) - 1.15, min(gy) - 0.55),
                    max(gx) - min(gx) + 2.3,
                    max(gy) - min(gy) + 1.1,
                    boxstyle="round,pad=0.05",
                    fill=False,
                    linestyle="--",
                    edgecolor="#555555",
                )
            )
            ax.text(min(gx) - 1.1, max(gy) + 0.7, f"fused ({grp.placement})", fontsize=7, color="#555555")
    for e in plan.edges:
        (x0, y0), (x1, y1) = pos[e.src], pos[e.dst]
        ax.annotate(
            "", xy=(x1 - 1.0, y1), xytext=(x0 + 1.0, y0), arrowprops={"arrowstyle": "->", "color": "#444444", "lw": 1.2}
        )
    for name, b in plan.bound.items():
        x, y = pos[name]
        ax.add_patch(
            FancyBboxPatch(
                (x - 1.0, y - 0.4),
                2.0,
                0.8,
                boxstyle="round,pad=0.04",
                facecolor=COLOURS[b.placement],
                edgecolor="#333333",
            )
        )
        ax.text(x, y + 0.12, name, ha="center", va="center", fontsize=9, weight="bold")
        ax.text(x, y - 0.18, b.decl.type, ha="center", va="center", fontsize=7 if len(b.decl.type) <= 20 else 5.5)
    present = sorted({b.placement for b in plan.bound.values()})
    ax.legend(
        handles=[Patch(facecolor=COLOURS[p], edgecolor="#333333", label=str(p)) for p in present],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.02),
        ncol=len(present),
        fontsize=8,
        frameon=False,
    )
    ax.set_xlim(min(xs) - 1.4, max(xs) + 1.4)
    ax.set_ylim(min(ys) - 0.9, max(ys) + 0.9)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"{plan.graph.name} ({plan.purpose})", fontsize=10)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    dot = out.with_suffix(".dot")
    atomic_write_text(dot, to_dot(plan))
    written.append(dot)
    for ext in (".png", ".svg"):
        path = out.with_suffix(ext)
        tmp = path.with_name(f".{path.name}.tmp{ext}")
        fig.savefig(tmp, dpi=130, bbox_inches="tight")
        tmp.replace(path)
        written.append(path)
    plt.close(fig)
    return written
