"""``pcdag eval``: put a pre-trained backbone into an evaluation graph, train its probe, evaluate, report.

1. ``--checkpoint`` (a training checkpoint, a run directory or a Pointcept/Sonata file) → its backbone is
   written to ``RUN/pretrained-backbone.pth`` and becomes the ``weights`` of the graph's PointTransformerV3
   node, after checking the two architectures agree (the message names every difference). Without
   ``--checkpoint`` the backbone is randomly initialised: the baseline every probe is compared with;
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
from pcdag.graphs.graph import Graph
from pcdag.graphs.overrides import apply_overrides
from pcdag.nodes.backbones.ptv3.pointcept import export_backbone
from pcdag.runtime import checkpoint as ckpt
from pcdag.runtime.backbone import BACKBONE_TYPE, checkpoint_file, load_backbone
from pcdag.runtime.devices import local_device
from pcdag.runtime.evaluate import run_evaluators
from pcdag.runtime.report import write_report
from pcdag.runtime.trainer import train

ARCHITECTURE = ("enc_depths", "enc_channels", "enc_heads", "in_channels", "mlp_ratio")


def backbone_name(graph: Graph, into: str | None) -> str:
    """The graph node that receives the checkpoint: ``into``, or its only PointTransformerV3."""
    found = [n for n, d in graph.nodes.items() if d.type == BACKBONE_TYPE]
    if into is not None:
        if into not in found:
            raise ValueError(
                f"graph {graph.name!r} has no {BACKBONE_TYPE} node {into!r} (it has: {', '.join(found) or 'none'})"
            )
        return into
    if len(found) != 1:
        raise ValueError(f"graph {graph.name!r} has {len(found)} {BACKBONE_TYPE} nodes ({', '.join(found)}); pick one")
    return found[0]


def architecture_differences(ours: Any, theirs: Any) -> list[str]:
    return [
        f"{k}: checkpoint {getattr(theirs, k)} vs graph {getattr(ours, k)}"
        for k in ARCHITECTURE
        if getattr(ours, k) != getattr(theirs, k)
    ]


def install_checkpoint(
    graph: Graph, source: Path, run_dir: Path, node: str | None, into: str | None
) -> tuple[Graph, str]:
    """The graph with its backbone's ``weights`` set to the backbone of ``source`` (written into ``run_dir``)."""
    name = backbone_name(graph, into)
    target = compile_graph(graph).node(name).config
    module = load_backbone(source, node=node)
    diffs = architecture_differences(target, module.config)
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
    export_backbone(module, path)
    return apply_overrides(graph, {f"{name}.weights": str(path)}, "--checkpoint", base=Path.cwd()), name


def _same_weights(path: Path, module: torch.nn.Module) -> bool:
    fresh = load_backbone(path)
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
        graph, _ = install_checkpoint(graph, source, run_dir, node, into)
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
