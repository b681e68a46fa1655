"""The offline executor: run a fused chain of offline nodes over every scene of a source, on Dask, into a store.

``run_offline(source, refs, scene_fn, store, stage_key=...)`` loads each scene with ``source.load(ref)``, applies
``scene_fn(item, rng)`` and writes the resulting cloud to the ``SceneStore``. What it guarantees:

- **Resumable.** Each scene's cache key hashes the stage key (graph, parameters, node versions), the scene id and
  the content fingerprint of its input files (``SceneRef.fingerprint``, hashed once and cached in
  ``<store>/.fingerprints.json``); scenes already committed with that key are skipped (unless ``force``), and
  when every scene is, the run returns without importing Dask or starting a cluster.
- **Deterministic.** A scene's generator is seeded from ``(seed, hash of the scene id)``, never from the worker or
  the order in which scenes run.
- **Keeps going.** An exception in one scene quarantines it (error and traceback in ``<store>/quarantine/``) and
  the run continues; a worker killed by the OS (out of memory) has its batch retried scene by scene, and a scene
  whose worker died again is retried alone at the end (so a scene merely queued beside the culprit is not blamed).
- **Bounded task count.** Scenes are batched into partitions (``default_partition_size``), one Dask task each, so
  a 100k-scene dataset makes a few hundred tasks, not 100k.

Memory: worker *processes* (``processes=True``) get ``memory_limit`` each and the fractions in ``WORKER_MEMORY``
(start spilling stored results at 60-70 %, pause taking new tasks at 85 %, restart the worker only at 95 %), so
a worker slows down before it dies. Threaded workers (``processes=False``, the default) share the caller's
process, whose memory the limit would also count, so no limit is set for them (a paused worker could otherwise
wait forever on memory the caller holds).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs
import numpy as np
from tqdm.auto import tqdm

from pcdag.compiler.schedule import default_partition_size, partition
from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.graphs.node import SceneRef
from pcdag.runtime.fingerprint import CACHE_FILE, DigestCache
from pcdag.runtime.stage_time import format_stage_seconds, sum_stage_seconds
from pcdag.runtime.store import SceneStore

SceneFn = Callable[[Any, np.random.Generator], PointCloud]

WORKER_MEMORY = {
    "distributed.worker.memory.target": 0.60,
    "distributed.worker.memory.spill": 0.70,
    "distributed.worker.memory.pause": 0.85,
    "distributed.worker.memory.terminate": 0.95,
    "distributed.scheduler.allowed-failures": 1,  # a scene that kills its worker is retried once, then split off
}


# ---------------------------------------------------------------------------------------------- keys, seeds


def scene_key(stage_key: str, ref: SceneRef, digest: Callable[[str], str] | None = None) -> str:
    """Cache key of one scene of one stage: changes with the stage, the scene id or the content of any input
    file (``digest``: a cached file hash, see ``pcdag.runtime.fingerprint``); not with where the files lie."""
    return _key(stage_key, ref.id, ref.fingerprint(digest))


def legacy_scene_key(stage_key: str, ref: SceneRef) -> str:
    """The key stores written before content fingerprints used (absolute path, size and mtime of each file);
    only read to re-key such stores in place (``_rekey``), never written."""
    parts = []
    for p in ref.paths:
        try:
            st = os.stat(p)
            parts.append(f"{p}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{p}:missing")
    return _key(stage_key, ref.id, "|".join(parts))


def _key(stage_key: str, scene_id: str, fingerprint: str) -> str:
    h = hashlib.sha256()
    for part in (stage_key, scene_id, fingerprint):
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def scene_rng(seed: int, scene_id: str) -> np.random.Generator:
    """The generator of one scene: from the graph seed and 128 bits of the scene id's hash (distinct streams for
    any realistic number of scenes), never from the worker or the order scenes run in."""
    digest = hashlib.sha256(scene_id.encode("utf-8")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:16], "little")])


# ---------------------------------------------------------------------------------------------- partitions


# ---------------------------------------------------------------------------------------------- outcomes


@attrs.frozen
class SceneOutcome:
    """What happened to one scene: ``done``, ``skipped`` (already in the store) or ``failed`` (quarantined)."""

    scene: str
    status: str
    seconds: float = 0.0
    error: str = ""
    n_in: int | None = None
    n_out: int | None = None
    stages: dict[str, float] = attrs.field(factory=dict)  # seconds per step: load, nodes, validate, write
    shared: tuple[str, ...] = ()  # stages that ran once for the whole item (load, steps before an expansion)
    item: str = ""  # the source item (video, scan) the scene came from


@attrs.define
class OfflineReport:
    """Outcomes of one offline run, in the order of the refs given."""

    outcomes: list[SceneOutcome]
    seconds: float
    run_stages: dict[str, float] = attrs.field(factory=dict)  # seconds of the run itself: fingerprints, cluster, ...

    def _with(self, status: str) -> list[SceneOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def done(self) -> list[SceneOutcome]:
        return self._with("done")

    @property
    def skipped(self) -> list[SceneOutcome]:
        return self._with("skipped")

    @property
    def failed(self) -> list[SceneOutcome]:
        return self._with("failed")

    def counts(self) -> dict[str, int]:
        return {"done": len(self.done), "skipped": len(self.skipped), "failed": len(self.failed)}

    def summary(self) -> str:
        c = self.counts()
        lines = [
            f"{len(self.outcomes)} scenes: {c['done']} done, {c['skipped']} skipped, {c['failed']} failed "
            f"({self.seconds:.1f} s)"
        ]
        stages = self.stage_seconds()
        if stages:
            lines.append(format_stage_seconds(stages, self.seconds))
        lines += [f"  failed {o.scene}: {o.error}" for o in self.failed]
        return "\n".join(lines)

    def stage_seconds(self) -> dict[str, float]:
        """Seconds per stage summed over the scenes (a stage shared by an item's parts counted once), then the
        run's own stages (fingerprints, cluster start and stop, manifest)."""
        return {**sum_stage_seconds(self.outcomes), **self.run_stages}


# ---------------------------------------------------------------------------------------------- one scene


@attrs.frozen
class SceneTask:
    """One scene to compute, with its cache key (what a partition carries to a worker)."""

    ref: SceneRef
    key: str


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def process_scene(
    source: Any, scene_fn: SceneFn, store: SceneStore, task: SceneTask, seed: int, source_name: str = "load"
) -> list[SceneOutcome]:
    """Load one item, run the chain, validate and store what it makes: one scene, or one per part when the
    chain expands (rooms of a video, stored as ``<id>/<part>``). A failing scene is quarantined, not raised.
    Loading (decoding a video, reading a scan) is timed as the stage ``source_name``."""
    ref, t0, n_in, load = task.ref, time.perf_counter(), None, {}
    try:
        item = source.load(ref)
        load[source_name] = round(time.perf_counter() - t0, 4)
        n_in = len(item) if isinstance(item, PointCloud) else None
        run_parts = getattr(scene_fn, "run_parts", None)
        rng = scene_rng(seed, ref.id)
        parts = run_parts(item, rng) if run_parts else [("", scene_fn(item, rng))]
        if not parts:
            raise ValueError(f"item {ref.id} expanded into no scenes")
    except Exception as exc:
        return [_quarantine(store, task, ref.id, ref.room, exc, traceback.format_exc(), t0, n_in, load)]
    outcomes = [_store_part(store, task, name, value, seed, t0, n_in, load) for name, value in parts]
    if parts and parts[0][0] and all(o.status == "done" for o in outcomes):
        store.mark_item(ref.id, task.key, [o.scene for o in outcomes])  # a re-run skips this item whole
    return outcomes


def _store_part(
    store: SceneStore,
    task: SceneTask,
    part: str,
    value: Any,
    seed: int,
    t0: float,
    n_in: int | None,
    load: dict[str, float],
) -> SceneOutcome:
    """Validate and write one scene. Its report's ``seconds`` are its own stages (loading, every node, validation;
    ``shared_seconds`` names those its item's parts share); the write's seconds go to the outcome."""
    ref = task.ref
    scene, room = (f"{ref.id}/{part}", f"{ref.room}/{part}") if part else (ref.id, ref.room)
    stages, shared = dict(load), tuple(load)
    try:
        if isinstance(value, BaseException):
            raise value
        if not isinstance(value, PointCloud):
            raise CloudError(f"scene {scene}: the offline chain returned a {type(value).__name__}, not a PointCloud")
        t_check = time.perf_counter()
        value.validate(where=f"scene {scene}")
        node_report = dict(value.meta.get("report", {}))  # per-node reports and timings
        stages |= node_report.pop("seconds", {}) | {"validate": round(time.perf_counter() - t_check, 4)}
        shared += tuple(node_report.pop("shared_seconds", ()))
        report = {"n_in": n_in, "n_out": len(value), "seed": seed, **node_report, "seconds": stages}
        if part:
            report["shared_seconds"] = list(shared)
        if "scale" in value.meta:  # where the scene's size came from (metric, drawn, ...): kept with the scene
            report["scale"] = value.meta["scale"]
        t_write = time.perf_counter()
        store.write(scene, value, key=task.key, split=ref.split, room=room, report=report)
        stages = {**stages, "write": round(time.perf_counter() - t_write, 4)}
    except Exception as exc:
        tb = "".join(traceback.format_exception(exc))
        return _quarantine(store, task, scene, room, exc, tb, t0, n_in, stages, shared)
    done = time.perf_counter() - t0
    return SceneOutcome(scene, "done", done, n_in=n_in, n_out=len(value), stages=stages, shared=shared, item=ref.id)


def _quarantine(
    store: SceneStore,
    task: SceneTask,
    scene: str,
    room: str,
    exc: BaseException,
    tb: str,
    t0: float,
    n_in: int | None = None,
    stages: dict[str, float] | None = None,
    shared: tuple[str, ...] | None = None,
) -> SceneOutcome:
    error = _error_text(exc)
    try:
        store.quarantine(scene, key=task.key, split=task.ref.split, room=room, error=error, traceback=tb)
    except Exception as qexc:  # e.g. the store is not writable: still report the scene's own error
        error += f" (and it could not be quarantined: {_error_text(qexc)})"
    stages = dict(stages or {})
    shared = tuple(stages) if shared is None else shared  # what ran before a failing item counts once
    elapsed = time.perf_counter() - t0
    return SceneOutcome(scene, "failed", elapsed, error, n_in, stages=stages, shared=shared, item=task.ref.id)


def run_partition(
    source: Any, scene_fn: SceneFn, store_path: str, tasks: list[SceneTask], seed: int, source_name: str = "load"
) -> list[SceneOutcome]:
    """One Dask task: process a batch of scenes in order. The store travels as a path, not an open handle."""
    store = SceneStore(store_path)
    return [o for task in tasks for o in process_scene(source, scene_fn, store, task, seed, source_name)]


# ---------------------------------------------------------------------------------------------- the run


def run_offline(
    source: Any,
    refs: Iterable[SceneRef],
    scene_fn: SceneFn,
    store: SceneStore,
    *,
    stage_key: str,
    seed: int = 0,
    scheduler: str | None = None,
    workers: int = 1,
    threads_per_worker: int = 1,
    processes: bool = False,
    memory_limit: str = "4GiB",
    partition_size: int | None = None,
    force: bool = False,
    progress: bool = True,
    source_name: str = "load",
) -> OfflineReport:
    """Compute every scene of ``refs`` not yet in ``store`` (all of them with ``force``); see the module docstring.

    ``scheduler`` is the address of a running Dask scheduler (its workers must see the store's path); without it
    an embedded ``LocalCluster`` of ``workers`` workers is started and closed at the end. ``source_name`` names
    the loading stage in the reports' seconds (the source node's name).
    """
    t0 = time.perf_counter()
    refs = list(refs)
    _check_unique(refs)
    _check_settings(seed=seed, workers=workers, threads_per_worker=threads_per_worker, partition_size=partition_size)
    store.prepare()  # a path that is not a store fails here, not once per scene
    store.clean_tmp()
    digests = DigestCache(store.path / CACHE_FILE)
    tasks = [SceneTask(ref, scene_key(stage_key, ref, digests.digest)) for ref in refs]
    digests.save()
    run_stages = {"fingerprints": round(time.perf_counter() - t0, 4)}  # hashing the input files for the keys
    outcomes: dict[str, list[SceneOutcome]] = {}
    for t in tasks:
        done = None if force else _already_done(store, t) or _rekey(store, t, stage_key)
        if done is not None:
            outcomes[t.ref.id] = [SceneOutcome(scene, "skipped") for scene in done]
    todo = [t for t in tasks if t.ref.id not in outcomes]
    if todo:  # only now is Dask imported and a cluster started: a fully cached re-run needs neither
        cluster = dict(
            scheduler=scheduler,
            workers=workers,
            threads_per_worker=threads_per_worker,
            processes=processes,
            memory_limit=memory_limit,
        )
        run = _Run(source, scene_fn, store, seed, len(refs), len(outcomes), progress, source_name, run_stages)
        for o in run.execute(todo, partition_size, cluster):
            outcomes.setdefault(_item_of(o.scene, todo), []).append(o)
    t_manifest = time.perf_counter()
    report = OfflineReport([o for r in refs for o in outcomes[r.id]], t_manifest - t0, run_stages)
    store.write_manifest(_manifest_info(source, store, tasks, report, stage_key, seed))
    run_stages["manifest"] = round(time.perf_counter() - t_manifest, 4)
    report.seconds = time.perf_counter() - t0
    return report


def _already_done(store: SceneStore, task: SceneTask) -> list[str] | None:
    """The scenes an earlier run committed for this item with this key, or None when it must run."""
    if store.has(task.ref.id, task.key):
        return [task.ref.id]
    return store.item_scenes(task.ref.id, task.key)


def _rekey(store: SceneStore, task: SceneTask, stage_key: str) -> list[str] | None:
    """Adopt what a store written before content fingerprints holds for this item under its old key (same
    files, same size and mtime: the old guarantee), writing the new key; the scenes, or None."""
    if not task.ref.paths:
        return None  # no input files: the old and new keys are equal, nothing to adopt
    old = legacy_scene_key(stage_key, task.ref)
    if store.rekey(task.ref.id, old, task.key):
        return [task.ref.id]
    return store.rekey_item(task.ref.id, old, task.key)


def _item_of(scene: str, tasks: list[SceneTask]) -> str:
    """The source item a scene came from: itself, or the longest item id it extends as ``<item>/<part>``."""
    ids = {t.ref.id for t in tasks}
    while scene not in ids and "/" in scene:
        scene = scene.rsplit("/", 1)[0]
    return scene


def _check_settings(**values: int | None) -> None:
    least = {"seed": 0, "workers": 1, "threads_per_worker": 1, "partition_size": 1}
    for name, value in values.items():
        if value is None and name == "partition_size":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least[name]:
            raise ValueError(f"{name} = {value!r} must be a whole number ≥ {least[name]}")


def _check_unique(refs: list[SceneRef]) -> None:
    dup = sorted(i for i, n in Counter(r.id for r in refs).items() if n > 1)
    if dup:
        raise ValueError(f"scene ids must be unique; repeated: {', '.join(dup[:10])}")


def _manifest_info(
    source: Any, store: SceneStore, tasks: list[SceneTask], report: OfflineReport, stage_key: str, seed: int
) -> dict[str, Any]:
    keys = {t.key for t in tasks}  # an item's parts share its key
    other = [e.id for e in store.entries() if e.key not in keys]
    return {
        "stage_key": stage_key,
        "source": f"{type(source).__module__}.{type(source).__qualname__}",
        "seed": seed,
        "counts": report.counts(),
        "seconds": round(report.seconds, 3),
        "stage_seconds": report.stage_seconds(),  # summed over scenes; the run's own stages last
        # committed scenes this run's items and keys did not produce (older parameters, vanished inputs)
        "other_scenes": other,
    }


@contextlib.contextmanager
def dask_client(
    scheduler: str | None, workers: int, threads_per_worker: int, processes: bool, memory_limit: str
) -> Iterator[Any]:
    """A ``distributed.Client``: to ``scheduler`` if given, else to an embedded ``LocalCluster`` closed on exit."""
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set(WORKER_MEMORY):
        cluster = None
        if scheduler:
            client = Client(scheduler)
        else:
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=threads_per_worker,
                processes=processes,
                memory_limit=memory_limit if processes else 0,
                dashboard_address=None,
                scheduler_kwargs={"dashboard": False, "dashboard_address": ":0"},  # no dashboard, any free port
            )
            try:
                client = Client(cluster)
            except BaseException:
                cluster.close()
                raise
        try:
            yield client
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


@contextlib.contextmanager
def _timed_client(cluster: dict, stages: dict[str, float], t_start: float) -> Iterator[Any]:
    """``dask_client`` whose start-up and shut-down seconds are added to ``stages["cluster"]``."""
    with dask_client(**cluster) as client:
        stages["cluster"] = round(time.perf_counter() - t_start, 4)
        yield client
        t_stop = time.perf_counter()
    stages["cluster"] = round(stages["cluster"] + time.perf_counter() - t_stop, 4)


@attrs.define
class _Run:
    """State of one execution: what to run, where results go, and the progress bar's counts."""

    source: Any
    scene_fn: SceneFn
    store: SceneStore
    seed: int
    total: int
    skipped: int
    progress: bool
    source_name: str = "load"
    run_stages: dict[str, float] = attrs.Factory(dict)  # "cluster": seconds to start and stop Dask
    counts: dict[str, int] = attrs.Factory(lambda: {"done": 0, "failed": 0})

    def execute(self, todo: list[SceneTask], partition_size: int | None, cluster: dict) -> list[SceneOutcome]:
        from distributed import KilledWorker, as_completed

        results: list[SceneOutcome] = []
        bar = tqdm(
            total=self.total,
            initial=self.skipped,
            unit="scene",
            desc="offline",
            disable=None if self.progress else True,
        )
        t_start = time.perf_counter()
        with bar, _timed_client(cluster, self.run_stages, t_start) as client:
            slots = sum(client.nthreads().values()) or cluster["workers"] * cluster["threads_per_worker"]
            size = partition_size or default_partition_size(len(todo), slots)
            pending = {self._submit(client, part): part for part in partition(todo, size)}
            suspects: list[SceneTask] = []  # scenes whose worker died: retried alone once the rest is done
            done = as_completed(list(pending))
            for fut in done:
                part = pending.pop(fut)
                try:
                    batch = fut.result()
                    fut.release()  # a finished batch is never recomputed when a worker dies later
                except KilledWorker:
                    if len(part) > 1:  # find the scene that kills its worker: retry the batch scene by scene
                        for task in part:
                            single = self._submit(client, [task])
                            pending[single] = [task]
                            done.add(single)
                    else:  # it, or a scene queued on the same worker, killed it: decide when nothing else runs
                        suspects.append(part[0])
                    continue
                except Exception as exc:  # not one scene's error (those are caught in the task): stop the run
                    raise RuntimeError(
                        f"offline task for {len(part)} scene(s) from {part[0].ref.id!r} failed outside any scene "
                        f"(sending the source or chain to a worker?): {_error_text(exc)}"
                    ) from exc
                results += batch
                self._tick(bar, batch, len(part))
            for task in suspects:  # one at a time, so a death is this scene's own
                batch = self._alone(client, task, KilledWorker)
                results += batch
                self._tick(bar, batch, 1)
        return results

    def _alone(self, client: Any, task: SceneTask, killed: type) -> list[SceneOutcome]:
        try:
            return self._submit(client, [task]).result()
        except killed as exc:
            died = RuntimeError("its worker process died while computing it (out of memory, or a crash in native code)")
            ref = task.ref
            return [_quarantine(self.store, task, ref.id, ref.room, died, _error_text(exc), time.perf_counter())]

    def _submit(self, client: Any, part: list[SceneTask]) -> Any:
        key = f"pcdag-offline-{uuid.uuid4().hex[:12]}"
        return client.submit(
            run_partition,
            self.source,
            self.scene_fn,
            str(self.store.path),
            part,
            self.seed,
            self.source_name,
            key=key,
            pure=False,
        )

    def _tick(self, bar: Any, batch: list[SceneOutcome], items: int) -> None:
        for o in batch:
            self.counts[o.status] += 1
        c = self.counts
        bar.set_postfix({"done": c["done"], "skip": self.skipped, "fail": c["failed"]}, refresh=False)
        bar.update(items)  # the bar counts source items; an expanding chain makes several scenes of one
