"""``pcdag eval``: put a pre-trained backbone into an evaluation graph, train its probe, evaluate, report.

1. ``--checkpoint`` (a training checkpoint, a run directory or a foreign / ``pcdag export`` file) → its backbone is
   written to ``RUN/pretrained-backbone.pth`` (the node's ``export_weights``) and becomes the ``weights`` of the
   graph's backbone node (the backbone protocol, ``pcdag.graphs.backbone``). A backbone of the graph's type must
   have its architecture (the message names every differing field); one of another type replaces the graph's
   declaration, keeping the graph's parameters the new type declares that are not architecture (printed).
   Without ``--checkpoint`` the backbone is randomly initialised: the baseline every probe is compared with;
2. the graph's training step (the probe, or the fine-tuning) trains as ``pcdag train`` would (``--resume``
   continues it; a finished run goes straight on to evaluation);
3. every evaluator node runs with the last checkpoint (``pcdag.runtime.evaluate``);
4. ``RUN/report.md`` and ``RUN/metrics.json`` (``pcdag.runtime.report``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import attrs
import torch

from pcdag.compiler import compile_graph
from pcdag.graphs.backbone import BackboneNode
from pcdag.graphs.graph import Graph
from pcdag.graphs.overrides import apply_overrides
from pcdag.runtime import checkpoint as ckpt
from pcdag.runtime.backbone import backbone_step, checkpoint_file, load_backbone
from pcdag.runtime.devices import local_device
from pcdag.runtime.evaluate import run_evaluators
from pcdag.runtime.report import write_report
from pcdag.runtime.trainer import train


def adopt_type(graph: Graph, name: str, theirs: BackboneNode, quiet: bool = False) -> Graph:
    """The graph with node ``name`` re-declared as ``theirs``' type and parameters, keeping the graph's parameters
    of that node which ``theirs`` also declares and which change no architecture field (frozen, ...)."""
    decl = graph.nodes[name]
    declared = set(attrs.fields_dict(type(theirs.params)))
    kept, params = [], {k: v for k, v in theirs.given.items() if k != "weights"}
    for key, value in decl.params.items():
        if key in declared and key != "weights" and _not_architecture(theirs, key, value):
            params[key] = value
            kept.append(key)
    nodes = {**graph.nodes, name: attrs.evolve(decl, type=theirs.type_name(), params=params)}
    if not quiet:
        print(
            f"--checkpoint: node {name!r} of graph {graph.name!r} becomes a {theirs.type_name()} (was {decl.type}), "
            f"with the checkpoint's architecture; kept from the graph: {', '.join(kept) or 'nothing'}"
        )
    return attrs.evolve(graph, nodes=nodes)


def _not_architecture(node: BackboneNode, key: str, value: Any) -> bool:
    try:
        return node.with_params(**{key: value}).architecture() == node.architecture()
    except ValueError:  # not a value this type takes
        return False


def install_checkpoint(
    graph: Graph, source: Path, run_dir: Path, node: str | None, into: str | None, quiet: bool = False
) -> tuple[Graph, str]:
    """The graph with its backbone's ``weights`` set to the backbone of ``source`` (written into ``run_dir``)."""
    plan = compile_graph(graph)
    name = backbone_step(plan, into, f"graph {graph.name!r}").name
    theirs, module = load_backbone(source, node=node)
    ours = plan.node(name)
    if type(ours) is not type(theirs):
        graph = adopt_type(graph, name, theirs, quiet)
        ours = compile_graph(graph).node(name)
    diffs = ours.architecture_differences(theirs, ("checkpoint", "graph"))
    if diffs:
        raise ValueError(
            f"the backbone in {source} does not match node {name!r} of graph {graph.name!r}: {'; '.join(diffs)}. "
            "Pick the graph's preset that matches the checkpoint (--preset) or set the node's parameters"
        )
    path = run_dir / "pretrained-backbone.pth"
    if path.is_file() and ckpt.list_checkpoints(run_dir / "checkpoints") and not _same_weights(path, module):
        raise ValueError(
            f"{run_dir} holds a probe trained on another backbone ({path} differs from the one in {source}); "
            "pass --out to evaluate this checkpoint elsewhere"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    theirs.export_weights(module, path)
    return apply_overrides(graph, {f"{name}.weights": str(path)}, "--checkpoint", base=Path.cwd()), name


def _same_weights(path: Path, module: torch.nn.Module) -> bool:
    _, fresh = load_backbone(path)
    mine, theirs = module.state_dict(), fresh.state_dict()
    return mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def default_run_dir(graph: Graph, checkpoint: Path | None) -> Path:
    preset = graph.settings.get("preset") or "default"
    if checkpoint is None:
        tag = "random-init"
    else:
        path = checkpoint_file(checkpoint)
        run = path.parent.parent.name if path.parent.name == "checkpoints" else path.stem
        tag = f"{run}-{path.stem}"
    return Path("runs") / "eval" / f"{graph.name}-{preset}-{tag}"


@attrs.frozen
class EvalJob:
    run_dir: Path
    report: Path
    metrics: dict[str, Any]


def evaluate_graph(
    graph: Graph,
    checkpoint: Path | None = None,
    out: Path | None = None,
    node: str | None = None,
    into: str | None = None,
    resume: bool = False,
    device: str = "auto",
    quiet: bool = False,
) -> EvalJob:
    run_dir = Path(out) if out is not None else default_run_dir(graph, checkpoint)
    source = None
    if checkpoint is not None:
        source = checkpoint_file(checkpoint)
        graph, _ = install_checkpoint(graph, source, run_dir, node, into, quiet)
    plan = compile_graph(graph)
    t0 = time.perf_counter()
    done = ckpt.list_checkpoints(run_dir / "checkpoints")
    finished = bool(done) and done[-1][0] >= plan.train.steps
    if not finished:
        train(plan, out=run_dir, resume=resume or bool(done), device=device, quiet=quiet)
    train_seconds = time.perf_counter() - t0
    last = ckpt.list_checkpoints(run_dir / "checkpoints")[-1][1]
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 alone evaluates
        return EvalJob(run_dir, run_dir / "report.md", {})
    dev = local_device(device)
    t1 = time.perf_counter()
    results = run_evaluators(plan, run_dir, last, dev, quiet)
    info = {
        "graph": graph.name,
        "preset": graph.settings.get("preset") or "default",
        "seed": plan.seed,
        "checkpoint": str(source) if source is not None else None,
        "probe_checkpoint": str(last),
        "steps": plan.train.steps,
        "train_seconds": None if finished else round(train_seconds, 1),
        "eval_seconds": round(time.perf_counter() - t1, 1),
        "device": str(dev) + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""),
    }
    report, metrics = write_report(run_dir, plan, results, info)
    if not quiet:
        print(f"wrote {report} and {run_dir / 'metrics.json'}")
    return EvalJob(run_dir, report, metrics)
