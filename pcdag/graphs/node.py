"""Node specs: the typed signature every node declares, and the three shapes of node the runtime executes.

A node class declares, as class attributes, everything the compiler needs before any data is touched:

    inputs / outputs   port name -> ``In``/``Out`` with a ``PortType``
    Params             attrs class; validators give the allowed values (``pcdag.graphs.params``)
    placements         where it may run (first = default); see ``Placement``
    version            bump when the math changes: it is part of every cache key downstream
    per_item, expands  runs once per scene/sample (fusable); returns ``Parts`` (one item → several scenes)
    requires           optional importable modules it needs (``spconv``, ``pycolmap``, ``av``)
    eval_default       views nodes: its default ``eval_sample`` serves weights that carry no graph (one node)
    fields()           which point fields it reads, writes and drops (may depend on parameters)
    path_kinds()       which parameters are paths, and whether each is read or written

Instances are *configured* nodes: ``GridSample(grid_size=0.05)`` validates its parameters at once.

Three shapes of executable node:
    ``CloudTransform``   one cloud in, the same cloud out, ``apply(cloud, rng)``; fusable into a chain
    ``SceneSource``      lists scenes (with split and room) and loads one; the start of offline stages
    ``Node.run``         anything else: ``run(rng, **inputs) -> {output: value}``
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import attrs
import numpy as np

from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.params import ParamError, build_params, describe, path_fields
from pcdag.graphs.ports import POINT_CLOUD, Placement, PortType


@attrs.frozen
class In:
    """An input port: its type, whether it must be connected, and a line of documentation."""

    type: PortType
    required: bool = True
    doc: str = ""


@attrs.frozen
class Out:
    """An output port."""

    type: PortType
    doc: str = ""


@attrs.frozen
class FieldEffect:
    """How a node changes the fields of the point clouds flowing through it.

    ``reads`` must be present upstream (validation fails otherwise); ``optional_reads`` are used when present
    (e.g. rotations also rotate normals); ``writes`` are added or replaced; ``drops`` are removed.
    """

    reads: frozenset[str] = frozenset()
    optional_reads: frozenset[str] = frozenset()
    writes: frozenset[str] = frozenset()
    drops: frozenset[str] = frozenset()


def effect(reads=(), optional_reads=(), writes=(), drops=()) -> FieldEffect:
    """Shorthand: ``effect(reads=["coord"], writes=["normal"])``."""
    return FieldEffect(frozenset(reads), frozenset(optional_reads), frozenset(writes), frozenset(drops))


@attrs.frozen
class Parts:
    """What an *expanding* node (``expands = True``) puts on its output: several named parts of one item
    (the rooms of one walkthrough video), each continuing down the rest of the stage on its own and stored
    as its own scene ``<item id>/<name>``."""

    items: tuple[tuple[str, Any], ...]

    def __len__(self) -> int:
        return len(self.items)


@attrs.frozen
class NoParams:
    """Parameter class of nodes without parameters."""


class Node:
    """Base class of all nodes. Subclasses set the class attributes described in the module docstring."""

    role: ClassVar[str] = "general"
    placements: ClassVar[tuple[Placement, ...]] = (Placement.OFFLINE,)
    version: ClassVar[int] = 1
    expands: ClassVar[bool] = False  # returns ``Parts``: one item becomes several scenes
    per_item: ClassVar[bool] = False  # runs once per scene/sample on one main input: fusable into a chain
    requires: ClassVar[tuple[str, ...]] = ()
    # a views node with ``eval_sample``: its default-parameter views serve backbone files that carry no graph
    # (``pcdag extract`` / ``eval`` of foreign weights); at most one registered node type sets it
    eval_default: ClassVar[bool] = False
    inputs: ClassVar[Mapping[str, In]] = {}
    outputs: ClassVar[Mapping[str, Out]] = {}
    Params: ClassVar[type] = NoParams

    def __init__(self, **params: Any) -> None:
        built, problems = build_params(self.Params, params)
        if problems:
            raise ParamError(f"{self.type_name()}: " + "; ".join(problems))
        self.params = built
        self.given: dict[str, Any] = dict(params)
        self.__post_init__()

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__

    @classmethod
    def from_built(cls, params: Any, given: Mapping[str, Any]) -> Node:
        """Create from already-validated parameters (the compiler validates with error collection first)."""
        node = cls.__new__(cls)
        node.params = params
        node.given = dict(given)
        node.__post_init__()
        return node

    def __post_init__(self) -> None:
        """Hook for derived state after parameters are set; called by both constructors."""

    def fields(self) -> FieldEffect:
        """Field effect of this configured node; the default touches nothing."""
        return FieldEffect()

    def run(self, rng: np.random.Generator, **inputs: Any) -> dict[str, Any]:
        raise NotImplementedError(f"{self.type_name()} does not implement run()")

    def data_splits(self) -> tuple[str, ...]:
        """Data splits this node reads scenes from (sources and stores); checked for evaluation leakage."""
        return ()

    def check_inputs(self, types: Mapping[str, PortType]) -> list[str]:
        """Problems with what is connected (input port -> type of the output feeding it), for checks that
        depend on parameters (e.g. a depth-based backend fed plain video). Each message becomes an error."""
        return []

    def path_kinds(self, connected: frozenset[str]) -> dict[str, str]:
        """``{parameter: path kind}`` of the path parameters (``param(..., path=KIND)``), given the connected
        input ports; a node whose paths change role with its connections (a store written or read) overrides it."""
        return path_fields(self.Params)

    def source_fields(self) -> frozenset[str] | None:
        """Fields on the output when no point cloud flows in (sources, stores); None = unknown before run time."""
        return frozenset()

    def plan_notes(self) -> list[str]:
        """Derived facts for ``pcdag plan`` (cheap: metadata only, never data)."""
        return []

    @classmethod
    def help(cls) -> str:
        """Human-readable signature: ports, placement and parameters with allowed values."""
        doc = (cls.__doc__ or "").strip().splitlines()
        lines = [f"{cls.type_name()} ({cls.role}; placement {'|'.join(map(str, cls.placements))})"]
        lines += [f"  {doc[0].replace('``', '')}"] if doc else []  # plain text, not RST
        lines += [f"  in  {n}: {p.type}{'' if p.required else ' (optional)'}" for n, p in cls.inputs.items()]
        lines += [f"  out {n}: {p.type}" for n, p in cls.outputs.items()]
        lines += [f"  param {describe(f)}" for f in attrs.fields(cls.Params)]
        if cls.requires:
            lines.append(f"  requires {', '.join(cls.requires)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.given.items())
        return f"{self.type_name()}({args})"


class CloudTransform(Node):
    """One point cloud in, the same cloud out. Chains of these fuse into one function per sample or scene.

    ``apply`` may modify ``cloud`` in place (it is never shared) and returns it; selections go through
    ``cloud.select`` so untouched fields are gathered once at the end of the chain.
    """

    placements = (Placement.LOADER, Placement.OFFLINE)
    inputs = {"cloud": In(POINT_CLOUD)}
    outputs = {"cloud": Out(POINT_CLOUD)}

    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        raise NotImplementedError

    def run(self, rng: np.random.Generator, **inputs: Any) -> dict[str, Any]:
        return {"cloud": self.apply(inputs["cloud"], rng)}


@attrs.frozen
class SceneRef:
    """One scene a source can load: id, split, room (scans of one room share it) and its input files."""

    id: str
    split: str
    room: str
    paths: tuple[str, ...] = ()

    def fingerprint(self, digest: Callable[[str], str] | None = None) -> str:
        """Changes when the content of any input file changes, for cache keys.

        Each file contributes its name relative to the folder its files share and ``digest(path)`` (by default
        a BLAKE2b hash of its bytes; the offline executor passes a cached one). Neither the absolute location
        nor the modification time enters: a copied, moved or touched file keeps the fingerprint.
        """
        digest = digest or file_digest
        names = relative_names(self.paths)
        return "|".join(f"{name}:{digest(p)}" for name, p in zip(names, self.paths, strict=True))


def relative_names(paths: Sequence[str]) -> list[str]:
    """Each path relative to the deepest folder holding all of them (a lone file: its base name)."""
    if not paths:
        return []
    base = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    return [os.path.relpath(os.path.abspath(p), base).replace(os.sep, "/") for p in paths]


def file_digest(path: str) -> str:
    """BLAKE2b (128 bits) of a file's bytes read in 1 MiB blocks; ``missing`` when it cannot be read."""
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    except OSError:
        return "missing"
    return h.hexdigest()


EVAL_SPLITS = ("val", "test")


class SceneSource(Node):
    """A dataset: ``scenes()`` lists what it holds (cheap, no data read), ``load(ref)`` reads one scene.

    Subclasses declare a ``splits`` parameter; ``provides()`` names the fields a loaded scene carries.
    """

    role = "sources"
    placements = (Placement.OFFLINE,)
    outputs = {"cloud": Out(POINT_CLOUD)}

    def scenes(self) -> list[SceneRef]:
        raise NotImplementedError

    def load(self, ref: SceneRef) -> Any:
        raise NotImplementedError

    def provides(self) -> frozenset[str]:
        return frozenset({"coord"})

    def data_splits(self) -> tuple[str, ...]:
        return tuple(getattr(self.params, "splits", ()))

    def source_fields(self) -> frozenset[str] | None:
        return self.provides()
