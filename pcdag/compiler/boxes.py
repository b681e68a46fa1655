"""What goes inside the boxes of a plan picture: geometry types, text sizes, node boxes and fused-chain boxes.

Everything here is pure geometry in points (1/72 inch, y upwards); ``layout.py`` places these boxes and routes
edges between them, ``picture.py`` draws them. A node box shows its name, its type, the parameters the user gave
and the names of its connected ports at the sides where edges attach (a side whose only port is ``cloud`` shows
no name: it is the obvious one).
"""

from __future__ import annotations

import functools
from itertools import pairwise

import attrs

from pcdag.compiler.plan import Plan
from pcdag.graphs.params import path_fields

NAME_SIZE, TYPE_SIZE, PARAM_SIZE, PORT_SIZE, LABEL_SIZE = 9.0, 7.5, 6.5, 6.5, 7.0
PAD = 5.0  # inside a node box, around its text
PORT_ROW = 10.0  # height of one port row
PARAM_CHARS, PARAM_LINES = 30, 3  # the given parameters, wrapped
FUSED_PAD, FUSED_HEAD, FUSED_ARROW, FUSED_ROW_GAP, FUSED_ROW = 10.0, 13.0, 20.0, 16.0, 6


@attrs.frozen
class Rect:
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def moved(self, dx: float, dy: float) -> Rect:
        return Rect(self.x0 + dx, self.y0 + dy, self.x1 + dx, self.y1 + dy)

    def contains(self, other: Rect) -> bool:
        return self.x0 <= other.x0 and self.y0 <= other.y0 and other.x1 <= self.x1 and other.y1 <= self.y1


@attrs.frozen
class Text:
    x: float
    y: float  # baseline-free: the vertical centre of the text
    text: str
    size: float
    bold: bool = False
    ha: str = "center"  # left / center / right: which side of the text x is

    def extent(self, measure) -> Rect:
        w, h = measure(self.text, self.size, self.bold)
        x0 = {"left": self.x, "center": self.x - w / 2, "right": self.x - w}[self.ha]
        return Rect(x0, self.y - h / 2, x0 + w, self.y + h / 2)


@attrs.frozen
class NodeBox:
    """One node: its box, texts, and where each connected port's edges attach (on the box's left/right side)."""

    name: str
    rect: Rect
    texts: tuple[Text, ...]
    ins: dict[str, tuple[float, float]]
    outs: dict[str, tuple[float, float]]
    model: bool  # provides a Model (parameters): drawn in the model lane

    def moved(self, dx: float, dy: float) -> NodeBox:
        def mv(p):
            return {k: (x + dx, y + dy) for k, (x, y) in p.items()}

        texts = tuple(attrs.evolve(t, x=t.x + dx, y=t.y + dy) for t in self.texts)
        return NodeBox(self.name, self.rect.moved(dx, dy), texts, mv(self.ins), mv(self.outs), self.model)


@functools.lru_cache(maxsize=4096)
def measure(text: str, size: float, bold: bool = False) -> tuple[float, float]:
    """Width and height in points of ``text`` at ``size`` points, as matplotlib's default font renders it."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    prop = FontProperties(size=size, weight="bold" if bold else "normal")
    w, h, _ = TextToPath().get_text_width_height_descent(text, prop, ismath=False)
    return w, max(h, size)


def is_model(plan: Plan, name: str) -> bool:
    """A node that provides a Model (parameters) to others: backbones, heads, teachers."""
    return any(o.type.name == "Model" for o in plan.bound[name].cls.outputs.values())


def connected_ports(plan: Plan, name: str) -> tuple[list[str], list[str]]:
    """The node's connected input and output ports in declaration order, Model inputs first (models are drawn
    above the data, so their edges arrive from above)."""
    cls = plan.bound[name].cls
    ins = {e.dst_port for e in plan.edges if e.dst == name}
    outs = {e.src_port for e in plan.edges if e.src == name}
    ordered = sorted((p for p in cls.inputs if p in ins), key=lambda p: cls.inputs[p].type.name != "Model")
    return ordered, [p for p in cls.outputs if p in outs]


def shown(ports: list[str]) -> list[str]:
    """Port names worth printing on one side of a box: none where the side's only port is ``cloud``."""
    return [] if ports in ([], ["cloud"]) else ports


def param_lines(plan: Plan, name: str) -> list[str]:
    """The parameters the user gave, compactly: ``k=v`` wrapped at PARAM_CHARS, at most PARAM_LINES lines.
    Paths are shown as written (relative to the graph file), not as the absolute paths they resolve to."""
    b = plan.bound[name]
    paths = path_fields(type(b.node.params))
    items = [f"{k}={_short(v if k in paths else getattr(b.node.params, k, v))}" for k, v in b.decl.params.items()]
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + 2 + len(item) <= PARAM_CHARS:
            lines[-1] += ", " + item
        else:
            lines.append(item)
    if len(lines) > PARAM_LINES:
        lines = lines[: PARAM_LINES - 1] + [_clip(lines[PARAM_LINES - 1] + ", …")]
    return [_clip(line) for line in lines]


def _short(value) -> str:
    if isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(_short(v) for v in value) + "]"
    elif value is None:
        text = "null"
    else:
        text = str(value)
    return text if len(text) <= 16 else text[:15] + "…"


def _clip(line: str) -> str:
    return line if len(line) <= PARAM_CHARS + 4 else line[: PARAM_CHARS + 3] + "…"


def node_box(plan: Plan, name: str, meas=measure) -> NodeBox:
    """The node's box with its lower-left corner at (0, 0)."""
    ins, outs = connected_ports(plan, name)
    show_in, show_out = shown(ins), shown(outs)
    lines = [(name, NAME_SIZE, True), (plan.bound[name].decl.type, TYPE_SIZE, False)]
    lines += [(line, PARAM_SIZE, False) for line in param_lines(plan, name)]
    width = max(meas(t, s, b)[0] for t, s, b in lines)
    rows = max(len(show_in), len(show_out))
    for i in range(rows):  # an input name at the left and an output name at the right share a row
        left = meas(show_in[i], PORT_SIZE)[0] if i < len(show_in) else 0.0
        right = meas(show_out[i], PORT_SIZE)[0] if i < len(show_out) else 0.0
        width = max(width, left + right + 3 * PAD)
    heights = [s * 1.3 for _, s, _ in lines]
    height = 2 * PAD + sum(heights) + rows * PORT_ROW
    width += 2 * PAD
    texts, y = [], height - PAD
    for (t, s, b), h in zip(lines, heights, strict=True):
        texts.append(Text(width / 2, y - h / 2, t, s, b))
        y -= h
    mid = height / 2

    def row_y(i: int) -> float:
        return PAD + (rows - i - 0.5) * PORT_ROW

    in_at = {p: (0.0, row_y(i) if show_in else mid) for i, p in enumerate(ins)}
    out_at = {p: (width, row_y(i) if show_out else mid) for i, p in enumerate(outs)}
    texts += [Text(PAD / 2 + 1, row_y(i), p, PORT_SIZE, ha="left") for i, p in enumerate(show_in)]
    texts += [Text(width - PAD / 2 - 1, row_y(i), p, PORT_SIZE, ha="right") for i, p in enumerate(show_out)]
    return NodeBox(name, Rect(0.0, 0.0, width, height), tuple(texts), in_at, out_at, is_model(plan, name))


@attrs.frozen
class FusedBox:
    """A fused chain: its members' boxes inside one dashed frame, the arrows between them, and its label.

    Members run left to right in rows of at most FUSED_ROW; a row continues on the next through the gap
    below it (like wrapped text). Only the first member has edges from outside and only the last member
    has edges to outside (that is what fusion means), so outside edges attach at the frame's sides."""

    nodes: tuple[str, ...]
    rect: Rect
    label: Text
    members: tuple[NodeBox, ...]
    arrows: tuple[tuple[tuple[float, float], ...], ...]

    def moved(self, dx: float, dy: float) -> FusedBox:
        arrows = tuple(tuple((x + dx, y + dy) for x, y in a) for a in self.arrows)
        label = attrs.evolve(self.label, x=self.label.x + dx, y=self.label.y + dy)
        members = tuple(m.moved(dx, dy) for m in self.members)
        return FusedBox(self.nodes, self.rect.moved(dx, dy), label, members, arrows)


def fused_label(plan: Plan, nodes: tuple[str, ...]) -> str:
    per = "scene" if plan.bound[nodes[0]].placement.name == "OFFLINE" else "sample"
    return f"fused: one function per {per}"


def fused_box(plan: Plan, nodes: tuple[str, ...], meas=measure) -> FusedBox:
    """The fused chain's frame with its lower-left corner at (0, 0)."""
    boxes = [node_box(plan, n, meas) for n in nodes]
    n_rows = -(-len(boxes) // FUSED_ROW)
    per_row = -(-len(boxes) // n_rows)
    rows = [boxes[i : i + per_row] for i in range(0, len(boxes), per_row)]
    lifts = [_lifts(row) for row in rows]  # each box's bottom above its row's bottom: straight arrows
    row_h = [max(v + b.rect.height for v, b in zip(ls, row, strict=True)) for ls, row in zip(lifts, rows, strict=True)]
    label = fused_label(plan, nodes)
    inner_w = max(sum(b.rect.width for b in row) + FUSED_ARROW * (len(row) - 1) for row in rows)
    width = max(inner_w, meas(label, LABEL_SIZE)[0]) + 2 * FUSED_PAD
    height = FUSED_HEAD + FUSED_PAD + sum(row_h) + FUSED_ROW_GAP * (n_rows - 1)
    placed: list[NodeBox] = []
    bottoms = []
    top = height - FUSED_HEAD
    for row, h, ls in zip(rows, row_h, lifts, strict=True):
        x = FUSED_PAD
        bottoms.append(top - h)
        for b, lift in zip(row, ls, strict=True):
            placed.append(b.moved(x, top - h + lift))
            x += b.rect.width + FUSED_ARROW
        top -= h + FUSED_ROW_GAP
    arrows = []
    for i, (a, b) in enumerate(pairwise(placed)):
        (x0, y0), (x1, y1) = next(iter(a.outs.values())), next(iter(b.ins.values()))
        if (i + 1) % per_row:  # same row: across the gap between them
            xm = (x0 + x1) / 2
            arrows.append(((x0, y0), (xm, y0), (xm, y1), (x1, y1)))
        else:  # wrap: right of the row's last box, down into the gap below the row, left, down into the next
            gap_y = bottoms[i // per_row] - FUSED_ROW_GAP / 2
            xl = FUSED_PAD / 2
            xr = x0 + FUSED_PAD / 2
            arrows.append(((x0, y0), (xr, y0), (xr, gap_y), (xl, gap_y), (xl, y1), (x1, y1)))
    text = Text(FUSED_PAD, height - FUSED_HEAD / 2, label, LABEL_SIZE, ha="left")
    return FusedBox(tuple(nodes), Rect(0.0, 0.0, width, height), text, tuple(placed), tuple(arrows))


def _lifts(row: list[NodeBox]) -> list[float]:
    """Heights of the boxes' bottoms above the row's bottom such that each arrow between neighbours is level."""
    lift = [0.0]
    for a, b in pairwise(row):
        lift.append(lift[-1] + next(iter(a.outs.values()))[1] - next(iter(b.ins.values()))[1])
    low = min(lift)
    return [v - low for v in lift]
