"""The evaluator contract: ``check_evaluator(node, example, out)`` runs ``evaluate`` over the example's scenes with
a stand-in for the trained step (``predict``) and checks that

- it returns an ``EvalResult``: metrics that ``json.dumps`` takes without NaN, markdown text, pictures that exist
  under ``ctx.out``; it writes nothing outside ``ctx.out``;
- a scene it cannot evaluate (``example.broken``) is noted by id in ``ctx.notes`` and the others still count;
- two runs give the same metrics (the second with ``example.repeat_with``, parameters that change no number);
- an oracle predictor gets the perfect score (``example.perfect`` of metric ``example.score``), a poor one less.

``predict`` receives the ``ViewSample`` that ``make_sample`` made, here one view whose arrays are the sampled
cloud's fields (``coord`` also as ``origin_coord``; ``feat`` = coord), so a predictor can read the labels.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from pcdag.graphs.batch import ViewSample
from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.evaluation import EvalContext, EvalResult, Evaluator
from pcdag.testing.contract import ContractError

Predictor = Callable[[ViewSample], dict[str, Any]]


@attrs.define(eq=False)
class EvalExample:
    scenes: list[tuple[str, PointCloud]]
    oracle: Predictor  # predicts the labels exactly
    poor: Predictor  # predicts something useless (one class, no instance)
    score: str  # the metric the two are compared on
    perfect: float  # the oracle's value of it
    broken: tuple[str, PointCloud] | None = None  # a scene the evaluator must skip with a note
    repeat_with: dict[str, Any] = attrs.field(factory=dict)  # parameters of the repeated runs (no pictures)


def sample_of(cloud: PointCloud) -> ViewSample:
    """One view holding every field of ``cloud`` (``origin_coord`` = ``coord``, ``feat`` = ``coord``)."""
    view = {k: np.asarray(v) for k, v in cloud.materialise().items()}
    view |= {"origin_coord": view["coord"], "feat": view["coord"]}
    return ViewSample(str(cloud.meta.get("scene", "?")), [view], [], {})


def _evaluate(node: Evaluator, ex: EvalExample, predict: Predictor, out: Path, who: str) -> tuple[EvalResult, list]:
    scenes = [*ex.scenes, *([ex.broken] if ex.broken else [])]
    ctx = EvalContext(out=out, split="val", scenes=lambda: iter(scenes), predict=predict, make_sample=sample_of)
    ctx.quiet = True
    try:
        result = node.evaluate(ctx)
    except Exception as exc:
        raise ContractError(f"{who}: evaluate() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(result, EvalResult):
        raise ContractError(f"{who}: evaluate() returned {type(result).__name__}, not an EvalResult")
    return result, ctx.notes


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def check_evaluator(node: Evaluator, ex: EvalExample, root: Path) -> dict[str, Any]:
    """The evaluator contract, writing under ``root`` (an empty folder); returns the oracle's metrics."""
    who = node.type_name()
    out = root / "run" / "eval" / "oracle"
    out.mkdir(parents=True)
    result, notes = _evaluate(node, ex, ex.oracle, out, who)
    try:
        text = json.dumps(result.metrics, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ContractError(f"{who}: its metrics are not JSON without NaN: {exc}") from exc
    if not isinstance(result.markdown, str) or not result.markdown.strip():
        raise ContractError(f"{who}: evaluate() gave no markdown section")
    outside = sorted(str(p) for p in _files(root) if out not in p.parents)
    lost = sorted(str(p) for p in result.pictures if not Path(p).is_file() or out not in Path(p).parents)
    if outside or lost:
        raise ContractError(f"{who}: files written outside ctx.out {outside} or pictures missing there {lost}")
    if ex.broken is not None and not any(ex.broken[0] in n for n in notes):
        raise ContractError(f"{who}: scene {ex.broken[0]} cannot be evaluated but no note names it: {notes}")
    quick = type(node)(**{**node.given, **ex.repeat_with})
    again, _ = _evaluate(quick, ex, ex.oracle, _fresh(root, "again"), who)
    if json.dumps(again.metrics, allow_nan=False, sort_keys=True) != text:
        raise ContractError(f"{who}: two evaluations of the same predictions give different metrics")
    poor, _ = _evaluate(quick, ex, ex.poor, _fresh(root, "poor"), who)
    best, worse = _metric(result.metrics, ex.score, who), _metric(poor.metrics, ex.score, who)
    if best != ex.perfect or not worse < best:
        raise ContractError(
            f"{who}: {ex.score} = {best} for exact predictions (perfect is {ex.perfect}) and {worse} for poor ones"
        )
    return result.metrics


def _fresh(root: Path, name: str) -> Path:
    out = root / "run" / "eval" / name
    out.mkdir(parents=True)
    return out


def _metric(metrics: Mapping[str, Any], name: str, who: str) -> float:
    value = metrics.get(name)
    if not isinstance(value, (int, float)):
        raise ContractError(f"{who}: metric {name!r} is {value!r}, not a number")
    return float(value)
