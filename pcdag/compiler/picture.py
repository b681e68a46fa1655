"""Pictures of a plan: Graphviz DOT text, and PNG/SVG drawn with matplotlib (no graphviz binary needed).

Both show the same things: stages as clusters (bands) in stage order, fused chains framed around exactly their
members, data edges solid and model (parameter) edges dashed, port names where they are not the obvious
``cloud``. The PNG/SVG geometry comes from ``layout.layout`` (pure, tested); this module only paints it.
"""

from __future__ import annotations

from pathlib import Path

from pcdag.compiler.boxes import connected_ports, param_lines, shown
from pcdag.compiler.layout import Layout, layout, model_edge
from pcdag.compiler.layout_route import STAGE_NOTES
from pcdag.compiler.plan import Plan
from pcdag.graphs.ports import Placement

COLOURS = {
    Placement.OFFLINE: "#9ecae1",
    Placement.STORE: "#fdd0a2",
    Placement.LOADER: "#a1d99b",
    Placement.DEVICE: "#fc9272",
    Placement.EVAL: "#dadaeb",
}
DATA_EDGE, MODEL_EDGE, FRAME = "#404040", "#6a51a3", "#555555"
LEGEND_ROW, DPI = 13.0, 144


def tint(colour: str, keep: float = 0.25) -> str:
    """``colour`` mixed with white, keeping the fraction ``keep``."""
    rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(255 - (255 - c) * keep):02x}" for c in rgb)


def _q(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def to_dot(plan: Plan) -> str:
    """Graphviz text: one ``cluster_stage_*`` per stage, fused chains as nested clusters, model edges dashed."""
    lines = [
        f'digraph "{_q(plan.graph.name)}" {{',
        "  rankdir=LR; newrank=true; fontname=Helvetica;",
        '  node [shape=box, style="rounded,filled", fontname=Helvetica, fontsize=10];',
        "  edge [fontname=Helvetica, fontsize=8];",
    ]
    fused = {n: i for i, g in enumerate(plan.groups) if len(g.nodes) > 1 for n in g.nodes}
    for k, stage in enumerate(plan.stages, 1):
        p = stage.placement
        lines.append(f"  subgraph cluster_stage_{k} {{")
        lines.append(f'    label="{k} · {p}\\n{STAGE_NOTES[p]}"; style=filled; color="#bbbbbb";')
        lines.append(f'    fillcolor="{tint(COLOURS[p])}";')
        done: set[int] = set()
        for name in stage.nodes:
            if name in fused and fused[name] not in done:
                i = done.add(fused[name]) or fused[name]
                lines.append(f'    subgraph cluster_fused_{i} {{ label="fused: one function"; style="dashed,filled";')
                lines.append(f'      fillcolor=white; color="{FRAME}";')
                lines += [f"      {_dot_node(plan, n)}" for n in plan.groups[i].nodes]
                lines.append("    }")
            elif name not in fused:
                lines.append(f"    {_dot_node(plan, name)}")
        lines.append("  }")
    for e in plan.edges:
        attrs = [] if (e.src_port, e.dst_port) == ("cloud", "cloud") else [f'label="{e.src_port} → {e.dst_port}"']
        if model_edge(plan, e):
            attrs += ["style=dashed", f'color="{MODEL_EDGE}"', f'fontcolor="{MODEL_EDGE}"']
        lines.append(f'  "{_q(e.src)}" -> "{_q(e.dst)}"' + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_node(plan: Plan, name: str) -> str:
    b = plan.bound[name]
    label = "\\n".join(_q(t) for t in (name, b.decl.type, *param_lines(plan, name)))
    ins, outs = connected_ports(plan, name)
    model = any(o.type.name == "Model" for o in b.cls.outputs.values())
    extra = f', color="{MODEL_EDGE}", penwidth=1.6' if model else ""
    ports = " ".join(f"{p}→" for p in shown(ins)) + ("  " if shown(ins) and shown(outs) else "")
    ports += " ".join(f"→{p}" for p in shown(outs))
    if ports:
        label += f"\\n({_q(ports)})"
    return f'"{_q(name)}" [label="{label}", fillcolor="{COLOURS[b.placement]}"{extra}];'


def draw(plan: Plan, out: Path) -> list[Path]:
    """Write ``<out>.dot``, ``<out>.png`` and ``<out>.svg``; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pcdag.atomic import atomic_write_text
    from pcdag.compiler.picture_paint import legend_columns

    geo = layout(plan)
    handles, ncol = legend_columns(plan, geo)
    below = LEGEND_ROW * (-(-len(handles) // ncol) + 1)  # the legend's strip under the layout
    fig = plt.figure(figsize=(geo.width / 72, (geo.height + below) / 72))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, geo.width)
    ax.set_ylim(-below, geo.height)
    ax.axis("off")
    paint(ax, plan, geo)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    dot = out.with_suffix(".dot")
    atomic_write_text(dot, to_dot(plan))
    written = [dot]
    for ext in (".png", ".svg"):
        path = out.with_suffix(ext)
        tmp = path.with_name(f".{path.name}.tmp{ext}")
        fig.savefig(tmp, dpi=DPI)
        tmp.replace(path)
        written.append(path)
    plt.close(fig)
    return written


def paint(ax, plan: Plan, geo: Layout) -> None:
    from pcdag.compiler.picture_paint import bands, edges, fused, legend, nodes, text

    bands(ax, geo)
    fused(ax, geo)
    edges(ax, geo)
    nodes(ax, plan, geo)
    text(ax, geo.title)
    legend(ax, plan, geo)
