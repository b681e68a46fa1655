"""The contract every ``DeviceNode`` keeps, checked on example inputs (``pcdag.testing.examples``).

``check_device_node(node, example)`` builds the node as the trainer does (``pcdag.runtime.step``: the modules of
its Model inputs passed to ``build``, the modules of non-trainable nodes frozen) and checks that:

- it builds, and its module shares no parameter with the modules it was built from (a teacher is a copy);
- every declared output port, and no other, is in ``forward``'s result, each of its port's runtime type (Model: a
  module, Features: ``Encoded``, MultiViewBatch: ``MultiViewBatch``, Loss: ``LossValue``);
- every Loss output is a finite scalar ``LossValue`` with a finite weight;
- ``forward`` leaves its input tensors unchanged;
- in eval mode two forwards seeded alike (``StepContext.generator`` and the global torch RNG, as the trainer seeds
  both every step) give equal outputs;
- after a backward pass gradients reach no parameter of a non-trainable module (the node's own when it is not
  trainable, and the frozen modules of its inputs), reach the node's own module when it is trainable, and are
  finite on the input tensors that take them; ``after_step`` runs;
- ``state_dict`` round-trips through ``torch.save`` / ``torch.load(weights_only=True)`` into a fresh build that
  then gives the same outputs;
- ``memory()`` for the example's sizes is None or a ``NodeMemory`` with finite non-negative bytes and outputs
  only on the node's ports.

A broken rule raises ``ContractError`` naming the node type and the rule.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
import torch

from pcdag.graphs.batch import Encoded, MultiViewBatch
from pcdag.graphs.device import DeviceNode, LossValue, StepContext
from pcdag.graphs.memory import FeatureRows, NodeMemory, ViewPoints
from pcdag.graphs.ports import FEATURES, LOSS, MODEL, MULTI_VIEW_BATCH
from pcdag.testing.contract import ContractError

UNSEEDED = (
    "two eval-mode forwards seeded alike differ; draw randomness only from ctx.generator (or the global torch RNG, "
    "which the trainer seeds every step)"
)
RUNTIME_TYPES = {MODEL: torch.nn.Module, FEATURES: Encoded, MULTI_VIEW_BATCH: MultiViewBatch, LOSS: LossValue}


@attrs.define(eq=False)
class DeviceExample:
    """Inputs for one device node: ``inputs`` maps every connected input port to its value (a Model port to the
    upstream module). ``frozen`` names the Model ports whose module is not trainable (a teacher): the check freezes
    them as the trainer does. ``probe`` turns the node's outputs into the scalar that is back-propagated and
    compared (needed for a Model output; by default the weighted losses plus the mean square of every Features
    output)."""

    inputs: dict[str, Any]
    frozen: frozenset[str] = frozenset()
    probe: Callable[[Mapping[str, Any]], torch.Tensor] | None = None
    seed: int = 0
    step: int = 0
    total_steps: int = 10
    label: str = ""  # tells several examples of one node type apart in messages


def check_device_node(node: DeviceNode, example: DeviceExample) -> None:
    """Check the device-node contract on ``example``; raises ``ContractError`` naming the node and the rule."""
    who = f"{node.type_name()}{f' ({example.label})' if example.label else ''}"
    if not isinstance(node, DeviceNode):
        raise TypeError(f"{node!r} is not a DeviceNode")
    _check_ports(node, example, who)
    models = {p: v for p, v in example.inputs.items() if node.inputs[p].type == MODEL}
    for port, model in models.items():
        if port in example.frozen:
            model.requires_grad_(False)
    module = _build(node, models, who)
    _check_not_shared(module, models, who)
    before = {path: t.detach().clone() for path, t in _tensors(example.inputs)}
    first = _run(node, module, example, who)
    _check_untouched(before, example.inputs, who)
    second = _run(node, module, example, who)
    _check_same(first, second, who, UNSEEDED)
    _check_gradients(node, module, models, example, who)
    _check_state_dict(node, module, models, example, who)
    _check_memory(node, module, example, who)


# ---------------------------------------------------------------------------------------------------- building


def _check_ports(node: DeviceNode, example: DeviceExample, who: str) -> None:
    unknown = sorted(set(example.inputs) - set(node.inputs))
    missing = sorted(p for p, spec in node.inputs.items() if spec.required and p not in example.inputs)
    if unknown or missing:
        raise ValueError(f"the example of {who} gives unknown ports {unknown} / misses required ports {missing}")


def _build(node: DeviceNode, models: Mapping[str, torch.nn.Module], who: str) -> torch.nn.Module | None:
    try:
        module = node.build(dict(models))
    except Exception as exc:
        raise ContractError(f"{who}: build() raised {type(exc).__name__}: {exc}") from exc
    if module is not None and not isinstance(module, torch.nn.Module):
        raise ContractError(f"{who}: build() returned {type(module).__name__}, not a torch.nn.Module or None")
    if module is not None and not node.trainable:
        module.requires_grad_(False)  # as the trainer freezes the modules of non-trainable nodes
    return module


def _check_not_shared(module: torch.nn.Module | None, models: Mapping[str, torch.nn.Module], who: str) -> None:
    if module is None:
        return
    own = {id(p) for p in module.parameters()}
    for port, model in models.items():
        if model is module or own & {id(p) for p in model.parameters()}:
            raise ContractError(
                f"{who}: its module shares parameters with the module on port {port!r}; build a copy (a teacher "
                f"that shares its student's weights would be frozen with it)"
            )


# ---------------------------------------------------------------------------------------------------- running


def _modes(node: DeviceNode, module: torch.nn.Module | None, example: DeviceExample, train: bool) -> None:
    """Modules in the trainer's modes: trainable ones follow ``train``, the others stay in eval mode."""
    if module is not None:
        module.train(train and node.trainable)
    for port, value in example.inputs.items():
        if isinstance(value, torch.nn.Module) and value is not module:
            value.train(train and port not in example.frozen)


def _context(example: DeviceExample) -> StepContext:
    gen = torch.Generator().manual_seed(example.seed + 1)
    return StepContext(example.step, example.total_steps, gen, torch.device("cpu"))


def _forward(node: DeviceNode, module: torch.nn.Module | None, example: DeviceExample, ctx: StepContext, who: str):
    try:
        out = node.forward(ctx, module, **example.inputs)
    except Exception as exc:
        raise ContractError(f"{who}: forward() raised {type(exc).__name__}: {exc}") from exc
    _check_outputs(node, out, who)
    return out


def _run(node: DeviceNode, module: torch.nn.Module | None, example: DeviceExample, who: str) -> dict:
    """Outputs and probe of one eval-mode forward under ``torch.no_grad``, seeded as the trainer seeds a step."""
    _modes(node, module, example, train=False)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(example.seed)
        out = _forward(node, module, example, _context(example), who)
        return {"outputs": out, "probe": _probe(node, out, example, who)}


def _probe(node: DeviceNode, out: Mapping[str, Any], example: DeviceExample, who: str) -> torch.Tensor | None:
    if example.probe is not None:
        return example.probe(out)
    if any(node.outputs[p].type == MODEL for p in out):
        raise ValueError(f"the example of {who} needs a probe: the node has a Model output")
    terms = [v.weight * v.value.float() for v in out.values() if isinstance(v, LossValue)]
    terms += [v.feat.float().square().mean() for v in out.values() if isinstance(v, Encoded)]
    return sum(terms) if terms else None  # type: ignore[return-value]


def _check_outputs(node: DeviceNode, out: Any, who: str) -> None:
    if not isinstance(out, Mapping) or set(out) != set(node.outputs):
        got = sorted(out) if isinstance(out, Mapping) else type(out).__name__
        raise ContractError(f"{who}: forward() must return every declared output {sorted(node.outputs)}; got {got}")
    for port, value in out.items():
        kind = RUNTIME_TYPES.get(node.outputs[port].type)
        if kind is not None and not isinstance(value, kind):
            raise ContractError(f"{who}: output {port!r} is a {type(value).__name__}, not a {kind.__name__}")
        if isinstance(value, LossValue):
            v = value.value
            if not isinstance(v, torch.Tensor) or v.numel() != 1 or v.ndim > 1:
                raise ContractError(f"{who}: loss {port!r} must be a scalar tensor, got {getattr(v, 'shape', v)}")
            if not bool(torch.isfinite(v).all()) or not math.isfinite(float(value.weight)):
                raise ContractError(f"{who}: loss {port!r} is not finite (value {float(v)}, weight {value.weight})")


# ---------------------------------------------------------------------------------------------------- comparing


def _tensors(value: Any, path: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor inside ``value`` (attrs classes, mappings, sequences) with its path; modules are not entered."""
    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, torch.nn.Module):
        return
    elif attrs.has(type(value)):
        for f in attrs.fields(type(value)):
            yield from _tensors(getattr(value, f.name), f"{path}.{f.name}")
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _tensors(v, f"{path}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _tensors(v, f"{path}[{i}]")


def _check_untouched(before: Mapping[str, torch.Tensor], inputs: Mapping[str, Any], who: str) -> None:
    after = dict(_tensors(inputs))
    changed = [p for p, t in before.items() if p not in after or not torch.equal(t, after[p].detach())]
    if changed:
        raise ContractError(f"{who}: forward() changed its inputs in place: {', '.join(changed[:5])}")


def _check_same(a: Mapping[str, Any], b: Mapping[str, Any], who: str, why: str) -> None:
    ta, tb = dict(_tensors(a)), dict(_tensors(b))
    differ = sorted(p for p in set(ta) | set(tb) if p not in ta or p not in tb or not _equal(ta[p], tb[p]))
    if differ:
        raise ContractError(f"{who}: {why} ({', '.join(differ[:5])})")


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape, dtype and values, NaN equal to NaN."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        both = torch.isnan(a) & torch.isnan(b)
        a, b = torch.where(both, 0, a), torch.where(both, 0, b)
    return bool(torch.equal(a, b))


# ---------------------------------------------------------------------------------------------------- gradients


def _check_gradients(
    node: DeviceNode, module: torch.nn.Module | None, models: Mapping[str, torch.nn.Module], ex: DeviceExample, who: str
) -> None:
    """One training forward and backward: gradients reach only what may learn; ``after_step`` runs."""
    owned = [] if module is None else list(module.named_parameters())
    frozen = {port: models[port] for port in ex.frozen if port in models}
    if module is not None and not node.trainable:
        frozen["(its own module)"] = module
    leaves = [t for _, t in _tensors(ex.inputs) if t.is_leaf and t.requires_grad]
    for p in [p for _, p in owned] + [p for m in models.values() for p in m.parameters()] + leaves:
        p.grad = None
    _modes(node, module, ex, train=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ex.seed)
        ctx = _context(ex)
        value = _probe(node, _forward(node, module, ex, ctx, who), ex, who)
        if value is not None and value.requires_grad:
            value.backward()
        try:
            node.after_step(ctx, module, dict(models))
        except Exception as exc:
            raise ContractError(f"{who}: after_step() raised {type(exc).__name__}: {exc}") from exc
    for where, m in frozen.items():
        got = [n for n, p in m.named_parameters() if p.grad is not None or p.requires_grad]
        if got:
            raise ContractError(
                f"{who}: gradients reach the non-trainable module on {where} ({', '.join(got[:4])}); compute what "
                "needs no gradient under torch.no_grad and never re-enable requires_grad"
            )
    if node.trainable and owned and not any(p.grad is not None and bool(p.grad.any()) for _, p in owned):
        raise ContractError(f"{who}: a trainable node whose module got no gradient from the example's probe")
    for name, p in owned:
        if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
            raise ContractError(f"{who}: the gradient of its parameter {name!r} is not finite")
    if any(t.grad is not None and not bool(torch.isfinite(t.grad).all()) for t in leaves):
        raise ContractError(f"{who}: the gradient reaching its input tensors is not finite")


# ---------------------------------------------------------------------------------------------------- state


def _check_state_dict(
    node: DeviceNode,
    module: torch.nn.Module | None,
    models: Mapping[str, torch.nn.Module],
    ex: DeviceExample,
    who: str,
) -> None:
    """Perturb the module, save its state as a checkpoint does, load it into a fresh build: same outputs."""
    if module is None:
        return
    gen = torch.Generator().manual_seed(ex.seed + 2)
    with torch.no_grad():  # so a fresh build cannot pass by being equal to the module anyway
        for t in [*module.parameters(), *module.buffers()]:
            if t.is_floating_point():
                t.add_(torch.randn(t.shape, generator=gen, dtype=t.dtype) * 1e-2)
    reference = _run(node, module, ex, who)
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    try:
        state = torch.load(buffer, weights_only=True)
    except Exception as exc:
        raise ContractError(f"{who}: its state_dict does not load with torch.load(weights_only=True): {exc}") from exc
    fresh = _build(node, models, who)
    try:
        fresh.load_state_dict(state)  # type: ignore[union-attr]
    except Exception as exc:
        raise ContractError(f"{who}: its state_dict does not load into a fresh build: {exc}") from exc
    again = _run(node, fresh, ex, who)
    _check_same(reference, again, who, "a fresh build loaded with the module's state_dict gives other outputs")


# ---------------------------------------------------------------------------------------------------- memory


def memory_inputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """What ``DeviceNode.memory`` gets for ``inputs``: modules as they are, batches as ``ViewPoints``, features as
    ``FeatureRows``."""
    sizes: dict[str, Any] = {}
    for port, value in inputs.items():
        if isinstance(value, MultiViewBatch):
            local = 0 if value.local_views is None else len(value.local_views)
            points = {"global": float(len(value.global_views)), "local": float(local)}
            pairs = float(value.id_count("pair")) if "pair" in value.id_ends else 0.0
            sizes[port] = ViewPoints(points, pairs, float(len(value.scenes)))
        elif isinstance(value, Encoded):
            sizes[port] = FeatureRows(float(len(value)), int(value.feat.shape[1]), True)
        else:
            sizes[port] = value
    return sizes


def _check_memory(node: DeviceNode, module: torch.nn.Module | None, ex: DeviceExample, who: str) -> None:
    try:
        mem = node.memory(module, memory_inputs(ex.inputs))
    except Exception as exc:
        raise ContractError(f"{who}: memory() raised {type(exc).__name__}: {exc}") from exc
    if mem is None:
        return
    if not isinstance(mem, NodeMemory):
        raise ContractError(f"{who}: memory() returned {type(mem).__name__}, not a NodeMemory or None")
    for field in ("saved", "transient"):
        value = getattr(mem, field)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ContractError(f"{who}: memory().{field} = {value!r} must be a finite number of bytes >= 0")
    unknown = sorted(set(mem.outputs) - set(node.outputs))
    wrong = sorted(p for p, v in mem.outputs.items() if not isinstance(v, (ViewPoints, FeatureRows)))
    if unknown or wrong:
        raise ContractError(f"{who}: memory().outputs names ports it lacks {unknown} or holds no sizes on {wrong}")
