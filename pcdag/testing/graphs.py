"""Hypothesis strategies for graphs: random valid pipelines built from the registered transforms."""

from __future__ import annotations

import string

from hypothesis import strategies as st

from pcdag.graphs import registry
from pcdag.graphs.graph import Graph
from pcdag.graphs.node import CloudTransform
from pcdag.graphs.params import build_params
from pcdag.graphs.ports import Placement

SOURCE_FIELDS = frozenset({"coord", "color", "normal", "segment", "instance"})


def _chainable() -> list[str]:
    """Transforms that work with default parameters on a synthetic scene's fields, in any order."""
    out = []
    for name in registry.names():
        cls = registry.get(name)
        if not issubclass(cls, CloudTransform):
            continue
        params, problems = build_params(cls.Params, {})
        if problems:
            continue
        eff = cls.from_built(params, {}).fields()
        both = Placement.OFFLINE in cls.placements and Placement.LOADER in cls.placements
        if both and eff.reads <= SOURCE_FIELDS and not (eff.drops & SOURCE_FIELDS) and "color" not in eff.reads:
            out.append(name)
    return out


node_names = st.text(string.ascii_lowercase, min_size=1, max_size=6).map(lambda s: f"n_{s}")


@st.composite
def graphs(draw, max_transforms: int = 6) -> Graph:
    """A valid graph: SyntheticSource → k offline transforms → Store → m loader transforms.

    Names, the split between offline and loader, the transforms and the seed are drawn.
    """
    kinds = _chainable()
    chain = draw(st.lists(st.sampled_from(kinds), max_size=max_transforms)) if kinds else []
    n_offline = draw(st.integers(0, len(chain)))
    names = draw(st.lists(node_names, min_size=len(chain) + 2, max_size=len(chain) + 2, unique=True))
    g = Graph(draw(st.sampled_from(["g", "pipeline", "demo-graph"])))
    g.settings["seed"] = draw(st.integers(0, 2**31 - 1))
    prev = g.add(names[0], "SyntheticSource", params={"n_scenes": draw(st.integers(1, 4)), "points": 500})
    for i, kind in enumerate(chain[:n_offline]):
        prev = g.add(names[i + 1], kind, placement=str(Placement.OFFLINE), cloud=prev)
    prev = g.add(names[-1], "Store", params={"path": "stores/hypothesis", "fields": ["color", "normal"]}, cloud=prev)
    for i, kind in enumerate(chain[n_offline:], start=n_offline):
        prev = g.add(names[i + 1], kind, placement=str(Placement.LOADER), cloud=prev)
    return g
