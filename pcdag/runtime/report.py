"""The evaluation report: ``RUN/report.md`` for people, ``RUN/metrics.json`` with the same numbers for programs.

The report says what was evaluated (graph, preset, seed, checkpoint, device, times), how the probe trained (its
loss curve, ``loss.png``, and the last logged values), then one section per evaluator node with its tables and
pictures, and lists every scene that was skipped and why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pcdag.atomic import atomic_write_json, atomic_write_text
from pcdag.graphs.evaluation import EvalResult
from pcdag.runtime.metrics import read_metrics


def _training_summary(run_dir: Path) -> tuple[list[str], dict[str, Any]]:
    records = read_metrics(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").is_file() else []
    if not records:
        return ["No training metrics were logged."], {}
    first, last = records[0], records[-1]
    keys = [k for k in last if k == "loss" or (k.startswith("loss/") and not k.endswith("/weight"))]
    rows = [f"| {k} | {first.get(k, float('nan')):.4g} | {last[k]:.4g} |" for k in keys]
    lines = [
        f"{len(records)} logged steps (step {first['step']} → {last['step']}).",
        "",
        "| quantity | first step | last step |",
        "| --- | --- | --- |",
        *rows,
        "",
        "![training curve](loss.png)" if (run_dir / "loss.png").is_file() else "",
    ]
    return lines, {k: last[k] for k in keys}


def write_report(
    run_dir: Path, plan: Any, results: list[tuple[str, EvalResult, list[str], float]], info: dict[str, Any]
) -> tuple[Path, dict[str, Any]]:
    """Write ``report.md`` and ``metrics.json`` into ``run_dir``; returns the report's path and the numbers."""
    checkpoint = info.get("checkpoint") or "none: randomly initialised backbone (baseline)"
    lines = [
        f"# Evaluation: {info['graph']} ({info['preset']})",
        "",
        f"- pre-trained backbone: `{checkpoint}`",
        f"- seed {info['seed']}; {info['steps']} training steps of the probe; device {info['device']}",
        f"- probe training: {_seconds(info.get('train_seconds'))}; evaluation: {_seconds(info.get('eval_seconds'))}",
        "",
        "## Probe training",
        "",
    ]
    summary, last = _training_summary(run_dir)
    lines += summary
    numbers: dict[str, Any] = {"run": info, "training": last, "evaluators": {}}
    for name, result, notes, seconds in results:
        node = plan.node(name)
        lines += ["", f"## {name} ({type(node).__name__}, {seconds:.1f} s)", "", result.markdown]
        if notes:
            lines += ["", f"{len(notes)} problem(s):", *[f"- {n}" for n in notes]]
        numbers["evaluators"][name] = {**result.metrics, "skipped": notes, "seconds": round(seconds, 1)}
    report = run_dir / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    atomic_write_json(run_dir / "metrics.json", numbers)
    return report, numbers


def _seconds(value: float | None) -> str:
    if value is None:
        return "already done (resumed run)"
    return f"{value:.0f} s" if value < 600 else f"{value / 60:.1f} min"
