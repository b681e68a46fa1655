"""``pcdag`` command line: validate, plan, preprocess, nodes, doctor. ``pcdag COMMAND --help`` for each."""

from __future__ import annotations

import argparse
import shutil
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the graph model imports numpy and networkx: not needed to print --help
    from pcdag.graphs.graph import Graph
    from pcdag.graphs.problems import Problem


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)  # the command; only its module is imported
    parser = argparse.ArgumentParser(prog="pcdag", description=plain(__doc__.split(":")[0]) + ".")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check graphs; list every problem; exit 1 if any is an error")
    p.add_argument("graphs", nargs="+", type=Path, metavar="GRAPH")
    _overrides(p)
    p.set_defaults(run=cmd_validate)

    p = sub.add_parser("plan", help="compile a graph; print its stages, fused groups, keys; draw it")
    p.add_argument("graph", type=Path, metavar="GRAPH")
    p.add_argument("--out", type=Path, default=None, help="picture path without extension (default out/plan/NAME)")
    p.add_argument("--no-picture", action="store_true", help="print only")
    p.add_argument("--scenes", type=int, default=None, help="memory estimate: scenes per GPU per forward")
    p.add_argument("--scene-points", type=float, default=None, help="memory estimate: points per scene")
    _overrides(p)
    p.set_defaults(run=cmd_plan)

    p = sub.add_parser("preprocess", help="run the offline stages on Dask and write the store(s)")
    p.add_argument("graph", type=Path, metavar="GRAPH")
    p.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler (default: embedded)")
    p.add_argument("--workers", type=int, default=1, help="embedded cluster: number of workers (default 1)")
    p.add_argument("--threads", type=int, default=1, help="embedded cluster: threads per worker (default 1)")
    p.add_argument("--processes", action="store_true", help="embedded cluster: worker processes, not threads")
    p.add_argument("--memory-limit", default="4GiB", help="per worker; workers spill, then pause (default 4GiB)")
    p.add_argument("--partition-size", type=int, default=None, help="scenes per Dask task (default: automatic)")
    p.add_argument("--force", action="store_true", help="recompute scenes whose cache key already matches")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-stats", action="store_true", help="skip STORE/stats.{png,json} (points, scale, spacing)")
    _overrides(p)
    p.set_defaults(run=cmd_preprocess)

    p = sub.add_parser("train", help="train a graph's device stage on its store (torchrun for several GPUs)")
    p.add_argument("graph", type=Path, metavar="GRAPH")
    p.add_argument("--out", default=None, help="run directory (default: settings.train.out, runs/{name}-{preset})")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the run directory")
    p.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda")
    p.add_argument("--stop-after", type=int, default=None, help="stop after N steps of this invocation")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--help-settings", action="store_true", help="list settings.train keys and exit")
    _overrides(p)
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("export", help="write a trained backbone as a foreign (e.g. Pointcept/Sonata) checkpoint")
    p.add_argument("checkpoint", type=Path, help="a checkpoint file, or a run directory (its newest checkpoint)")
    p.add_argument("out", type=Path, help="the .pth file to write")
    p.add_argument("--node", default=None, help="the backbone node to export (default: the graph's backbone)")
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("eval", help="train an evaluation graph's probe on a pre-trained backbone; write the report")
    p.add_argument("graph", type=Path, metavar="GRAPH")
    p.add_argument("--checkpoint", type=Path, default=None, help="pre-trained backbone: checkpoint, run dir or .pth")
    p.add_argument("--node", default=None, help="the checkpoint's backbone node (default: its trainable one)")
    p.add_argument("--into", default=None, help="the graph's backbone node (default: its only one)")
    p.add_argument("--out", type=Path, default=None, help="run directory (default runs/eval/NAME-PRESET-CHECKPOINT)")
    p.add_argument("--resume", action="store_true", help="continue the probe's training from its last checkpoint")
    p.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _overrides(p)
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser("splits", help="write data-efficient split files: limited scenes and limited annotations")
    p.add_argument("store", type=Path, help="the store whose training scenes are split")
    p.add_argument("--out", type=Path, default=Path("splits"), help="directory for the files (default splits/)")
    p.add_argument("--scenes", default="1,5,10,20", help="percent of training rooms, comma-separated")
    p.add_argument("--points", default="20,50,100,200", help="labelled points per scene, comma-separated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train", help="the split to draw from (default train)")
    p.set_defaults(run=cmd_splits)

    p = sub.add_parser("extract", help="per-point backbone features of a point cloud file, tiled for large scenes")
    if chosen == "extract":  # its arguments live with the command, which imports torch
        from pcdag.runtime.extract import add_arguments as add_extract_arguments

        add_extract_arguments(p)
    p.set_defaults(run=cmd_extract)

    p = sub.add_parser("nodes", help="list node types, or show one's ports and parameters")
    p.add_argument("name", nargs="?", help="a node type, e.g. GridSample")
    p.set_defaults(run=cmd_nodes)

    p = sub.add_parser("doctor", help="Python, torch, CUDA, GPU and which optional backends are usable")
    p.set_defaults(run=cmd_doctor)

    p = sub.add_parser("stats", help="points, scale and spacing of every scene of a store; table + PNG")
    if chosen == "stats":
        from pcdag.stats import add_stats_arguments

        add_stats_arguments(p)

    args = parser.parse_args(argv)
    return args.run(args)


def plain(text: str) -> str:
    """Help text from a docstring, without reStructuredText's double backticks (``x`` -> x)."""
    return text.replace("``", "")


def _overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NODE.PARAM=VALUE",
        help="override a parameter (VALUE is YAML), or settings.KEY=VALUE; repeatable",
    )
    p.add_argument("--preset", default=None, help="apply one of the graph's presets (e.g. tiny, base, large)")


def _load(path: Path, overrides: list[str], preset: str | None = None) -> Graph:
    """The graph at ``path`` with its preset and then the ``--set NODE.PARAM=VALUE`` flags applied.

    Whatever of the file parsed is kept, its shape problems riding along for the compiler to report with the
    rest; only a file that is no graph at all raises. ``--set`` paths are relative to the working directory."""
    import yaml

    from pcdag.graphs.overrides import apply_overrides, apply_preset
    from pcdag.graphs.problems import GraphError, Problem
    from pcdag.graphs.yamlio import read_graph_file

    loaded, problems = read_graph_file(path)
    if loaded is None:
        raise GraphError(problems)
    graph = apply_preset(loaded, preset)
    values, problems = {}, []
    for text in overrides:
        key, eq, raw = text.partition("=")
        if not eq or "." not in key:
            problems.append(Problem("override", f"--set {text!r}: write NODE.PARAM=VALUE or settings.KEY=VALUE"))
            continue
        values[key] = yaml.safe_load(raw) if raw else None
    if problems:
        raise GraphError(problems)
    return apply_overrides(graph, values, base=Path.cwd())


def _report(problems: list[Problem]) -> None:
    for p in problems:
        print(p, file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    from pcdag.compiler import validate
    from pcdag.graphs.problems import GraphError

    status = 0
    for path in args.graphs:
        try:
            problems = validate(_load(path, args.overrides, args.preset))
        except GraphError as exc:
            problems = exc.problems
        errors = [p for p in problems if p.severity == "error"]
        _report(problems)
        if errors:
            print(f"{path}: {len(errors)} error{'s' if len(errors) != 1 else ''}", file=sys.stderr)
            status = 1
        else:
            print(f"{path}: valid")
    return status


def _compiled(args: argparse.Namespace):
    """The plan of ``args.graph`` with ``--set`` overrides, or None after printing every problem."""
    from pcdag.compiler import compile_graph
    from pcdag.graphs.problems import GraphError

    try:
        return compile_graph(_load(args.graph, args.overrides, args.preset))
    except GraphError as exc:
        _report(exc.problems)
        return None


def cmd_plan(args: argparse.Namespace) -> int:
    plan = _compiled(args)
    if plan is None:
        return 1
    print(plan.render())
    from pcdag.runtime.memory import plan_memory_lines

    memory = plan_memory_lines(plan, args.scenes, args.scene_points)
    if memory:
        print("\n" + "\n".join(memory))
    if not args.no_picture:
        from pcdag.compiler.picture import draw

        out = args.out or Path("out") / "plan" / plan.graph.name
        paths = draw(plan, out)
        print("\npicture: " + ", ".join(str(p) for p in paths))
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from pcdag.runtime.offline import run_offline
    from pcdag.runtime.store import SceneStore

    plan = _compiled(args)
    if plan is None:
        return 1
    if not plan.offline:
        print(f"{args.graph}: no offline stage writes a store; nothing to preprocess", file=sys.stderr)
        return 1
    for w in plan.warnings:
        print(w, file=sys.stderr)
    failed = total = 0
    for job in plan.offline:
        source, store = plan.node(job.source), plan.node(job.store)
        try:
            refs = source.scenes()
        except (OSError, ValueError) as exc:
            print(f"node {job.source!r}: cannot list scenes: {exc}", file=sys.stderr)
            return 1
        print(
            f"{job.source} → {' → '.join(job.program.nodes) or '(load)'} → {job.store} "
            f"({store.params.path}): {len(refs)} scenes"
        )
        report = run_offline(
            source,
            refs,
            job.program,
            SceneStore(store.params.path),
            stage_key=plan.keys[job.store],
            seed=plan.seed,
            scheduler=args.scheduler,
            workers=args.workers,
            threads_per_worker=args.threads,
            processes=args.processes,
            memory_limit=args.memory_limit,
            partition_size=args.partition_size,
            force=args.force,
            progress=not args.quiet,
            source_name=job.source,
        )
        print(report.summary())
        failed += len(report.failed)
        total += len(report.outcomes)
        stats_png = Path(store.params.path) / "stats.png"
        if not args.no_stats and (report.done or not stats_png.exists()):
            _write_stats(Path(store.params.path))
    if failed:
        print(quarantine_message(failed, total), file=sys.stderr)
        return 3
    return 0


def quarantine_message(failed: int, total: int) -> str:
    """The closing line of a run with quarantined scenes, worded for the case: all of them, or some."""
    if failed >= total:
        return f"{failed} scene{'s' if failed != 1 else ''} quarantined; no scene reached the store"
    rest = total - failed
    return f"{failed} of {total} scenes quarantined; the other{'s are' if rest != 1 else ' is'} in the store"


def cmd_train(args: argparse.Namespace) -> int:
    from pcdag.compiler.training import describe_settings

    if args.help_settings:
        print("settings.train keys (set in the graph, a preset, or --set settings.train.KEY=VALUE):")
        print(describe_settings())
        return 0
    plan = _compiled(args)
    if plan is None:
        return 1
    if plan.device is None:
        print(f"{args.graph}: no device stage (nothing to train)", file=sys.stderr)
        return 1
    from pcdag.runtime.trainer import train

    try:
        train(plan, out=args.out, resume=args.resume, device=args.device, quiet=args.quiet, stop_after=args.stop_after)
    except (ValueError, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pcdag.graphs.problems import GraphError
    from pcdag.runtime.export import export_from_checkpoint

    try:
        path = export_from_checkpoint(args.checkpoint, args.out, args.node)
    except (OSError, ValueError, KeyError, GraphError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    node = f"node {args.node!r}" if args.node else "the backbone"
    print(f"wrote {args.out} ({node} of {path}, in the backbone's foreign layout: docs/pointcept.md)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from pcdag.graphs.problems import GraphError
    from pcdag.runtime.eval_job import evaluate_graph

    try:
        graph = _load(args.graph, args.overrides, args.preset)
        job = evaluate_graph(
            graph, args.checkpoint, args.out, args.node, args.into, args.resume, args.device, args.quiet
        )
    except GraphError as exc:
        _report(exc.problems)
        return 1
    except (OSError, ValueError, KeyError, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(_headline(job.metrics))
    return 0


def cmd_splits(args: argparse.Namespace) -> int:
    from pcdag.datasets.efficient import make_splits, summary
    from pcdag.runtime.store import SceneStore

    try:
        fractions = [float(x) / 100 for x in args.scenes.split(",") if x.strip()]
        points = [int(x) for x in args.points.split(",") if x.strip()]
        paths = make_splits(SceneStore(args.store), args.out, fractions, points, args.seed, args.split)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary(paths))
    print("use a scene list with --set store.scenes=FILE, a point budget with a LimitAnnotations node (file: FILE)")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from pcdag.runtime.extract import run

    try:
        return run(args)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _headline(metrics: dict) -> str:
    """One line per evaluator: its headline numbers."""
    lines = []
    for name, values in metrics.get("evaluators", {}).items():
        shown = {k: v for k, v in values.items() if k in ("miou", "macc", "all_acc", "ap", "ap50", "ap25")}
        text = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())
        lines.append(f"{name}: {text}")
    return "\n".join(lines)


def _write_stats(store: Path) -> None:
    """Dataset statistics of a store next to it (``stats.png`` histograms, ``stats.json`` numbers)."""
    from pcdag.atomic import atomic_write_json
    from pcdag.stats import plot_stats, store_stats

    try:
        stats = store_stats(store)
    except (OSError, ValueError) as exc:
        print(f"no statistics for {store}: {exc}", file=sys.stderr)
        return
    plot_stats(stats, store / "stats.png")
    atomic_write_json(store / "stats.json", stats)
    diag = stats["summary"]["bbox_diagonal"]
    print(
        f"statistics: {store / 'stats.png'} ({stats['n_scenes']} scenes, bounding-box diagonal median "
        f"{diag['median']:.2f} m; `pcdag stats {store} --compare OTHER` overlays another store)"
    )


def cmd_nodes(args: argparse.Namespace) -> int:
    from pcdag.graphs import registry

    if args.name:
        cls = registry.get(args.name)
        if cls is None:
            print(f"unknown node type {args.name!r}; {registry.suggest(args.name)}", file=sys.stderr)
            return 1
        print(cls.help())
        return 0
    print(node_listing(registry.names(), registry.role, shutil.get_terminal_size().columns))
    return 0


def node_listing(names: list[str], role_of, width: int) -> str:
    """One wrapped line per role (``role: A, B, C``), so every node type fits one screen; then a hint."""
    by_role: dict[str, list[str]] = {}
    for name in names:
        by_role.setdefault(role_of(name) or "general", []).append(name)
    pad = max(map(len, by_role), default=0) + 2
    width = max(width, pad + 20)
    lines = []
    for role in sorted(by_role):
        head = f"{role + ':':<{pad}}"
        lines += textwrap.wrap(
            ", ".join(by_role[role]), width, initial_indent=head, subsequent_indent=" " * pad, break_on_hyphens=False
        )
    lines.append("`pcdag nodes TYPE` shows a type's ports and parameters, e.g. `pcdag nodes GridSample`")
    return "\n".join(lines)


def cmd_doctor(args: argparse.Namespace) -> int:
    from pcdag.doctor import report

    print(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
