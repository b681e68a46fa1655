"""Evaluation: run a plan's evaluator nodes with the trained step module, then write the report.

For every evaluator (placement ``eval``) the training step is culled to the device nodes its inputs need
(``cull``), and the evaluator gets an ``EvalContext`` (``pcdag.graphs.evaluation``): the scenes of its split read
from the graph's store, a ``predict`` that runs the culled step on one scene's un-augmented view (made by the
loader node that feeds the training step: its ``eval_sample``), and a directory for pictures. Scenes that fail
(unreadable, no labels) are skipped and listed in the report; the others go on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import networkx as nx
import torch

from pcdag.compiler.training import cull
from pcdag.graphs.batch import ViewSample, collate_views
from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.graphs.device import StepContext
from pcdag.graphs.evaluation import EvalContext, EvalResult, Evaluator
from pcdag.graphs.ports import Placement
from pcdag.runtime import checkpoint as ckpt
from pcdag.runtime.step import StepModule
from pcdag.runtime.store import SceneStore


def evaluator_names(plan: Any) -> list[str]:
    """Evaluator nodes of ``plan`` in graph order."""
    g = nx.DiGraph()
    g.add_nodes_from(plan.bound)
    g.add_edges_from((e.src, e.dst) for e in plan.edges)
    return [n for n in nx.topological_sort(g) if plan.bound[n].placement == Placement.EVAL]


def trained_module(plan: Any, checkpoint: Path, device: torch.device) -> StepModule:
    """The step module of ``plan`` with the weights of a checkpoint its training wrote (checked to match)."""
    torch.manual_seed(plan.seed)
    module = StepModule(plan.device)
    state = ckpt.load(checkpoint, map_location="cpu")
    ckpt.check_compatible(state, ckpt.signature(plan), checkpoint)
    module.nodes.load_state_dict(state["modules"])
    return module.to(device).eval()


def sample_maker(plan: Any):
    """``eval_sample`` of the loader node that feeds the plan's training step: its un-augmented view of a scene."""
    entry = plan.device.entry
    node = plan.node(entry[0]) if entry is not None else None
    if node is None or not hasattr(node, "eval_sample"):
        what = type(node).__name__ if node is not None else "nothing"
        raise ValueError(
            f"the training step is fed by {what} ({entry[0] if entry else '-'}), which cannot make evaluation views "
            "(no eval_sample); evaluators need a loader node that makes views and evaluation views"
        )
    return node.eval_sample


def _scenes(plan: Any, split: str, quiet: bool, notes: list[str]):
    store_node = plan.node(plan.loader.entry[0])
    store = SceneStore(store_node.params.path)
    entries = store.current([split])
    if not entries:
        raise ValueError(f"store {store.path} has no scenes in split {split!r} to evaluate on (preprocess it)")

    def scenes() -> Iterator[tuple[str, PointCloud]]:
        from tqdm import tqdm

        for entry in tqdm(entries, desc=f"evaluate {split}", unit="scene", disable=quiet):
            try:
                yield entry.id, store.read(entry.id)
            except (CloudError, OSError, ValueError) as exc:
                notes.append(f"scene {entry.id} skipped: {exc}")

    return scenes


def _predictor(plan: Any, module: StepModule, name: str, device: torch.device):
    inputs = [(e.dst_port, e.src, e.src_port) for e in plan.edges if e.dst == name]
    steps = cull(plan.device, {src for _, src, _ in inputs})
    bf16 = device.type == "cuda" and plan.train.precision != "fp32"

    @torch.no_grad()
    def predict(sample: ViewSample) -> dict[str, Any]:
        batch = collate_views([sample]).to(device)
        ctx = StepContext(0, 1, torch.Generator(device).manual_seed(plan.seed), device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            values = module.compute(batch, ctx, steps)
        return {port: values[(src, src_port)] for port, src, src_port in inputs}

    return predict


def run_evaluators(
    plan: Any, run_dir: Path, checkpoint: Path, device: torch.device, quiet: bool = False
) -> list[tuple[str, EvalResult, list[str], float]]:
    """Every evaluator of ``plan``: (name, result, notes, seconds)."""
    module = trained_module(plan, checkpoint, device)
    make_sample = sample_maker(plan)
    results = []
    for name in evaluator_names(plan):
        node: Evaluator = plan.node(name)
        split = node.data_splits()[0]
        notes: list[str] = []
        out = run_dir / "eval" / name
        out.mkdir(parents=True, exist_ok=True)
        ctx = EvalContext(
            out, split, _scenes(plan, split, quiet, notes), _predictor(plan, module, name, device), make_sample,
            device, quiet, notes,
        )  # fmt: skip
        t0 = time.perf_counter()
        result = node.evaluate(ctx)
        results.append((name, result, notes, time.perf_counter() - t0))
    return results
