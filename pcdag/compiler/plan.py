"""The execution plan: what ``compile_graph`` returns and ``pcdag plan`` prints."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import attrs

from pcdag.compiler.fusion import FusedGroup
from pcdag.compiler.program import StageProgram
from pcdag.compiler.resolve import Bound
from pcdag.compiler.schedule import OfflineJob, Stage, default_partition_size
from pcdag.compiler.structure import Edge
from pcdag.compiler.training import DeviceProgram, TrainSettings, describe_batching
from pcdag.graphs.graph import Graph
from pcdag.graphs.node import SceneRef, SceneSource
from pcdag.graphs.ports import Placement
from pcdag.graphs.problems import Problem

STAGE_TEXT = {
    Placement.OFFLINE: "offline — per scene on Dask, before training",
    Placement.STORE: "store — zarr, one group per scene, written atomically",
    Placement.LOADER: "loader — per sample in DataLoader workers",
    Placement.DEVICE: "device — inside the training step",
    Placement.EVAL: "eval — after training",
}


@attrs.frozen
class Plan:
    graph: Graph
    purpose: str
    seed: int
    bound: Mapping[str, Bound]
    edges: tuple[Edge, ...]
    stages: tuple[Stage, ...]
    groups: tuple[FusedGroup, ...]
    keys: Mapping[str, str]
    fields: Mapping[str, frozenset[str] | None]
    offline: tuple[OfflineJob, ...]
    loader: StageProgram | None
    warnings: tuple[Problem, ...]
    device: DeviceProgram | None = None
    train: TrainSettings | None = None

    def node(self, name: str):
        return self.bound[name].node

    def render(self, scene_counts: bool = True) -> str:
        """The plan as text a person reads: stages, fused groups, fields, keys, parameters, warnings."""
        g = self.graph
        lines = [
            f"plan for graph {g.name!r}" + (f" ({g.origin.file})" if g.origin else ""),
            f"  purpose {self.purpose}, seed {self.seed}, {len(self.bound)} nodes, {len(self.stages)} stages",
        ]
        for w in self.warnings:
            lines.append(f"  ! {w}")
        listed = {  # each source's scenes, listed once (file names only, no data)
            n: list_scenes(b.node) for n, b in self.bound.items() if scene_counts and isinstance(b.node, SceneSource)
        }
        for i, stage in enumerate(self.stages, 1):
            lines += ["", f"stage {i}: {STAGE_TEXT[stage.placement]}"]
            for name in stage.nodes:
                lines += self._node_lines(name, listed)
            lines += self._stage_notes(stage, listed)
        lines += ["", "fusion:"]
        for grp in self.groups:
            lines.append(
                f"  [{' → '.join(grp.nodes)}] ({grp.placement}): {len(grp.nodes)} node"
                f"{'s' if len(grp.nodes) > 1 else ''} in one function; ends: {grp.ends}"
            )
        if not self.groups:
            lines.append("  nothing to fuse")
        return "\n".join(lines)

    def _node_lines(self, name: str, listed: dict[str, list[SceneRef] | str]) -> list[str]:
        b = self.bound[name]
        ins = ", ".join(f"{e.dst_port} ← {e.src}.{e.src_port}" for e in self.edges if e.dst == name)
        out = [
            f"  {name}: {b.decl.type} v{b.cls.version}  key {self.keys.get(name, '-')}" + (f"  ({ins})" if ins else "")
        ]
        given = set(b.decl.params)
        shown, defaults = [], []
        for f in attrs.fields(type(b.node.params)):
            unit = f.metadata.get("unit", "")
            text = f"{f.name}={getattr(b.node.params, f.name)!r}{' ' + unit if unit else ''}"
            (shown if f.name in given else defaults).append(text)
        if shown:
            out.append(f"      params   {', '.join(shown)}")
        if defaults:
            out.append(f"      defaults {', '.join(defaults)}")
        fields = self.fields.get(name)
        if fields is not None and any(p.type.name in ("PointCloud", "Mesh") for p in b.cls.outputs.values()):
            out.append(f"      fields   {', '.join(sorted(fields))}")
        if name in listed:
            out.append(f"      scenes   {scene_summary(listed[name])}")
        out += [f"      {note}" for note in b.node.plan_notes()]
        return out

    def _stage_notes(self, stage: Stage, listed: dict[str, list[SceneRef] | str]) -> list[str]:
        out = []
        if stage.placement == Placement.OFFLINE:
            for job in self.offline:
                out.append(
                    f"  → per scene, inside one Dask task: {job.source} → "
                    f"{' → '.join(job.program.nodes) or '(load only)'} → {job.store}; "
                    "intermediate clouds are never written"
                )
                if job.source in listed:
                    out.append(f"    {partition_summary(listed[job.source])}")
                for step in job.program.steps:
                    if step.node.expands:
                        out.append(
                            f"    {step.name!r} expands each item into several scenes, stored as "
                            "<item>/<part>; the nodes after it run once per part"
                        )
        if stage.placement == Placement.LOADER and self.loader is not None:
            out.append(
                f"  → one function per sample: {' → '.join(self.loader.nodes)} (one PointCloud, "
                "selections gathered once)"
            )
        if stage.placement == Placement.DEVICE and self.device is not None:
            out += self._device_notes()
        return out

    def _device_notes(self) -> list[str]:
        d, t = self.device, self.train
        out = [
            f"  → one torch module per step: {len(d.steps)} nodes; trained: {', '.join(d.trainable)}; "
            f"loss = Σ weight·term over {', '.join(d.losses)}",
        ]
        if t is not None:
            opt = f"SGD momentum {t.momentum:g}{' nesterov' if t.nesterov else ''}" if t.optimizer == "sgd" else "AdamW"
            out += [
                f"  training: {t.steps} steps × {t.global_batch} scenes (global batch); {opt} lr {t.lr:g} "
                f"(layer decay {t.layer_decay:g}), OneCycle pct {t.pct_start:g}, div {t.div_factor:g}/"
                f"{t.final_div_factor:g}; weight decay {t.weight_decay_schedule()}; clip {t.clip:g}; "
                f"precision {t.precision}; checkpoint every {t.checkpoint_every} steps",
            ]
            out += [f"    {line}" for line in describe_batching(t)]
            if t.recalibrate_bn:
                out.append(
                    f"    before step 0: BatchNorm statistics of the untrained modules re-estimated over "
                    f"{t.recalibrate_bn} micro-batches"
                )
        return out


def list_scenes(source: SceneSource) -> list[SceneRef] | str:
    """The source's scenes (lists files, reads no data), or why they cannot be listed: the plan still prints
    and ``pcdag preprocess`` reports the error."""
    try:
        return source.scenes()
    except Exception as exc:
        return f"cannot list: {exc}"


def scene_summary(refs: list[SceneRef] | str) -> str:
    """'17 scenes in 8 rooms (train 13, val 4)'."""
    if isinstance(refs, str):
        return refs
    by_split = Counter(r.split for r in refs)
    rooms = len({r.room for r in refs})
    splits = ", ".join(f"{k} {v}" for k, v in sorted(by_split.items()))
    return f"{len(refs)} scenes in {rooms} rooms ({splits or 'none'})"


def partition_summary(refs: list[SceneRef] | str, workers: int = 1) -> str:
    """How the scenes split into Dask tasks with the default embedded cluster."""
    if isinstance(refs, str):
        return "partitions unknown: the scenes cannot be listed"
    n = len(refs)
    size = default_partition_size(n, workers)
    tasks = -(-n // size) if n else 0
    return (
        f"{n} scenes → {tasks} Dask task{'s' if tasks != 1 else ''} of ≤ {size} scene{'s' if size != 1 else ''} "
        f"({workers} worker; `pcdag preprocess --workers N` spreads them)"
    )
