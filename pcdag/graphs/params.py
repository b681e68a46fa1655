"""Node parameters: attrs classes whose validators say what is allowed.

Every node declares ``Params`` as an ``attrs.frozen`` class. Use the helpers here so that errors name the
allowed range and units are visible in plans:

    @attrs.frozen
    class Params:
        grid_size: float = param(0.02, in_range(1e-4, 10.0), unit="m", doc="voxel edge")
        mode: str = param("train", one_of("train", "test"))

``build_params`` checks every field separately so a graph reports all bad parameters of a node at once.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs


class ParamError(ValueError):
    """A parameter value is outside what its validator allows."""


# what a path parameter names; the compiler checks each kind before anything runs (``pcdag/compiler/paths.py``)
PATH_KINDS = {
    "in-dir": "an existing folder that is read",
    "in-file": "an existing file that is read",
    "in": "an existing file or folder that is read",
    "out-dir": "a folder that is written (created if missing)",
    "later-dir": "a folder another command writes (a store read here): when it exists it must be a folder",
}


def param(
    default: Any = attrs.NOTHING,
    validator: Any = None,
    *,
    unit: str = "",
    doc: str = "",
    cache: bool = True,
    path: str | None = None,
) -> Any:
    """An attrs field with a validator and plan metadata (unit shown next to the value, doc in ``--help``).

    ``cache=False`` leaves the parameter out of cache keys: for parameters that do not change what a node
    computes (where a store lives, where a source reads from, what a reader selects), so moving a store or
    the data does not invalidate it.
    ``path`` (a key of ``PATH_KINDS``) marks a file-system path: a relative value is resolved against the graph
    file's folder when the graph is compiled, and the compiler checks that it exists or can be written.
    """
    if path is not None and path not in PATH_KINDS:
        raise ValueError(f"path = {path!r}: choose one of {', '.join(PATH_KINDS)}")
    metadata = {"unit": unit, "doc": doc, "cache": cache, "path": path}
    kwargs: dict[str, Any] = {"validator": validator, "metadata": metadata}
    if isinstance(default, (list, dict, set)):
        kwargs["factory"] = lambda d=default: type(d)(d)
    else:
        kwargs["default"] = default
    return attrs.field(**kwargs)


def path_fields(cls: type) -> dict[str, str]:
    """``{field name: path kind}`` of the path parameters of an attrs ``Params`` class."""
    return {f.name: f.metadata["path"] for f in attrs.fields(cls) if f.metadata.get("path")}


def absolute_path(value: str, base: str | os.PathLike) -> str:
    """``value`` (``~`` expanded) joined to ``base`` when relative, as an absolute path with symlinks followed."""
    return str(Path(base, Path(value).expanduser()).resolve())


def in_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False):
    """Numeric value in [lo, hi] (bounds optional, open with ``lo_open``/``hi_open``); bools are refused."""

    lo_b, hi_b = ("(" if lo_open else "["), (")" if hi_open else "]")
    text = f"{lo_b}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{hi_b}"

    def check(_inst: Any, a: attrs.Attribute, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamError(f"{a.name} = {value!r} is not a number; allowed {text}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ParamError(f"{a.name} = {value!r} is not finite; allowed {text}")
        if lo is not None and (value < lo or (lo_open and value == lo)):
            raise ParamError(f"{a.name} = {value!r} is out of range; allowed {text}")
        if hi is not None and (value > hi or (hi_open and value == hi)):
            raise ParamError(f"{a.name} = {value!r} is out of range; allowed {text}")

    check.allowed = text  # type: ignore[attr-defined]
    return check


def integer(lo: int | None = None, hi: int | None = None):
    """Whole number in [lo, hi]."""
    rng = in_range(lo, hi)

    def check(inst: Any, a: attrs.Attribute, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamError(f"{a.name} = {value!r} is not a whole number; allowed {rng.allowed}")
        rng(inst, a, value)

    check.allowed = rng.allowed  # type: ignore[attr-defined]
    return check


def or_none(check: Any, meaning: str):
    """None (its ``meaning``: "preset" takes the preset's value, "auto" decides on the machine that runs) or
    what ``check`` allows."""

    def run(inst: Any, a: attrs.Attribute, value: Any) -> None:
        if value is not None:
            check(inst, a, value)

    run.allowed = f"null ({meaning}) or {check.allowed}"  # type: ignore[attr-defined]
    return run


def one_of(*choices: Any):
    """Value among ``choices``."""

    def check(_inst: Any, a: attrs.Attribute, value: Any) -> None:
        if value not in choices:
            raise ParamError(f"{a.name} = {value!r} is not allowed; choose one of {', '.join(map(repr, choices))}")

    check.allowed = " | ".join(map(str, choices))  # type: ignore[attr-defined]
    return check


def subset_of(*choices: str):
    """A list whose items are all among ``choices`` (no duplicates)."""

    def check(_inst: Any, a: attrs.Attribute, value: Any) -> None:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ParamError(f"{a.name} = {value!r} must be a list of names from {', '.join(choices)}")
        bad = [v for v in value if v not in choices]
        if bad:
            raise ParamError(f"{a.name}: {', '.join(map(repr, bad))} not allowed; choose from {', '.join(choices)}")
        if len(set(value)) != len(value):
            raise ParamError(f"{a.name} = {value!r} repeats an item")

    check.allowed = "list of " + " | ".join(choices)  # type: ignore[attr-defined]
    return check


def of_type(*types: type, allowed: str | None = None):
    """Value of one of ``types`` (``None`` allowed when ``type(None)`` is listed)."""
    names = allowed or " or ".join("null" if t is type(None) else t.__name__ for t in types)

    def check(_inst: Any, a: attrs.Attribute, value: Any) -> None:
        if isinstance(value, bool) and bool not in types:
            raise ParamError(f"{a.name} = {value!r} must be {names}")
        if not isinstance(value, types):
            raise ParamError(f"{a.name} = {value!r} must be {names}")

    check.allowed = names  # type: ignore[attr-defined]
    return check


def pair(lo: float | None = None, hi: float | None = None):
    """Two numbers ``[a, b]`` with lo ≤ a ≤ b ≤ hi (a sampling range)."""
    rng = in_range(lo, hi)

    def check(inst: Any, a: attrs.Attribute, value: Any) -> None:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ParamError(f"{a.name} = {value!r} must be a pair [low, high] within {rng.allowed}")
        for v in value:
            rng(inst, a, v)
        if value[0] > value[1]:
            raise ParamError(f"{a.name} = {value!r}: low must not exceed high")

    check.allowed = f"[low, high] within {rng.allowed}"  # type: ignore[attr-defined]
    return check


def whole_numbers(n: int, lo: int, each: str):
    """A list of ``n`` whole numbers >= ``lo``; ``each`` says what one entry is for (e.g. "one per stage")."""
    whole = integer(lo, None)

    def check(inst: Any, a: attrs.Attribute, value: Any) -> None:
        if not isinstance(value, (list, tuple)) or len(value) != n:
            raise ParamError(f"{a.name} = {value!r} must be a list of {n} whole numbers ({each})")
        for v in value:
            whole(inst, a, v)

    check.allowed = f"list of {n} whole numbers >= {lo} ({each})"  # type: ignore[attr-defined]
    return check


def describe(field: attrs.Attribute) -> str:
    """One line for help text: ``name = default unit  (allowed)  doc``."""
    default = field.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        default = default.factory()
    unit = field.metadata.get("unit", "")
    allowed = getattr(field.validator, "allowed", "")
    doc = field.metadata.get("doc", "")
    shown = "(required)" if default is attrs.NOTHING else repr(default)
    text = f"{field.name} = {shown}{' ' + unit if unit else ''}"
    if allowed:
        text += f"  (allowed {allowed})"
    if doc:
        text += f"  {doc}"
    return text


def build_params(cls: type, given: Mapping[str, Any]) -> tuple[Any | None, list[str]]:
    """Instantiate ``cls`` from ``given``, checking each field on its own; return (params, problems).

    Unknown names get a did-you-mean suggestion; every bad value is reported, not just the first.
    """
    fields = {f.name: f for f in attrs.fields(cls)}
    problems: list[str] = []
    if not isinstance(given, Mapping):
        return None, [f"parameters must be a mapping of name: value, got {type(given).__name__}"]
    for name in given:
        if name not in fields:
            close = difflib.get_close_matches(str(name), list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known parameters: {', '.join(fields) or 'none'}"
            problems.append(f"unknown parameter {name!r}{hint}")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name in given:
            value = given[name]
        elif f.default is attrs.NOTHING:
            problems.append(f"parameter {name!r} is required ({describe(f)})")
            continue
        elif isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
            value = f.default.factory()
        else:
            value = f.default
        if f.validator is not None:
            try:
                f.validator(None, f, value)
            except (ParamError, ValueError, TypeError) as exc:
                problems.append(str(exc))
                continue
        values[name] = value
    if problems:
        return None, problems
    with attrs.validators.disabled():
        return cls(**values), []
