"""Reading the scene store in training: a torch ``Dataset`` over stored scenes, the batch collation, the loader.

A sample is one scene read from the store and passed through the fused loader chain (``transform``). Its
randomness comes from ``np.random.default_rng([seed, epoch, index])``, so a sample is the same whatever worker
computes it and changes from epoch to epoch. The epoch lives in shared memory: ``set_epoch`` reaches loader
workers that persist across epochs (forked or spawned), as long as it is called before the epoch's iterator is
created (``for batch in loader``).

Batches follow the Pointcept convention: per-point tensors of all samples concatenated along the first dimension
and ``offset[i]`` = number of points in samples ``0..i`` (the end of sample ``i``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pcdag.graphs.batch import ViewSample, collate_views
from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.runtime.store import SceneStore

Transform = Callable[[PointCloud, np.random.Generator], PointCloud]


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy`` (shares memory); copies only arrays torch cannot wrap (read-only, negative strides)."""
    array = np.asarray(array)
    if not array.flags.writeable or any(s < 0 for s in array.strides):
        array = np.array(array, copy=True)
    return torch.from_numpy(array)


class StoreDataset(Dataset):
    """Scenes of ``splits`` in a ``SceneStore``; item ``i`` is scene ``i % n_scenes`` (``loops`` passes per epoch)."""

    def __init__(
        self,
        store: SceneStore | str | Path,
        splits: Iterable[str] = ("train",),
        transform: Transform | None = None,
        fields: Iterable[str] | None = None,
        seed: int = 0,
        loops: int = 1,
        skip_bad: bool = False,
        scenes: Iterable[str] | None = None,
    ) -> None:
        self.store = store if isinstance(store, SceneStore) else SceneStore(store)
        self.splits = (splits,) if isinstance(splits, str) else tuple(splits)
        if isinstance(loops, bool) or not isinstance(loops, int) or loops < 1:
            raise ValueError(f"loops = {loops!r} must be a whole number ≥ 1")
        self.entries = self.store.current(self.splits)  # stale scenes of older runs are not this plan's data
        if scenes is not None:  # a data-efficient subset: every listed scene must be there
            wanted = set(scenes)
            missing = sorted(wanted - {e.id for e in self.entries})
            if missing:
                raise ValueError(
                    f"store {self.store.path} has no scene(s) {', '.join(missing[:5])} of split(s) "
                    f"{', '.join(self.splits)} that the scene list names; was the list made from this store?"
                )
            self.entries = [e for e in self.entries if e.id in wanted]
        if not self.entries:
            have = sorted({e.split for e in self.store.entries()})
            raise ValueError(
                f"store {self.store.path} has no scenes in split(s) {', '.join(self.splits) or '(none given)'}; "
                + (
                    f"it has split(s) {', '.join(have)}"
                    if have
                    else "it holds no scenes at all (run the offline stage)"
                )
            )
        self.transform = transform
        self.fields = None if fields is None else tuple(fields)
        self.seed = seed
        self.loops = loops
        self.skip_bad = skip_bad
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()  # seen by persistent workers

    def __len__(self) -> int:
        return len(self.entries) * self.loops

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose randomness samples use (call before iterating the loader for that epoch)."""
        self._epoch[0] = int(epoch)

    def __getitem__(self, i: int | tuple[int, int]) -> Any:
        """Sample ``i`` of the current epoch, or ``(epoch, i)`` (samplers that know the epoch, e.g. on resume).

        A cloud comes back as a dict of tensors; a loader chain ending in views gives its ``ViewSample``. With
        ``skip_bad`` a scene the chain refuses (``CloudError``: too few points, say) gives None and a warning
        naming the scene; ``collate_batch`` leaves it out.
        """
        epoch, i = (int(i[0]), int(i[1])) if isinstance(i, tuple) else (self.epoch, i)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sample {i} out of range for a dataset of {n} samples")
        i = int(i) % n
        entry = self.entries[i % len(self.entries)]
        try:
            cloud = self.store.read(entry.id, self.fields)
            rng = np.random.default_rng([self.seed, epoch, i])
            out = cloud if self.transform is None else self.transform(cloud, rng)
        except (CloudError, OSError, ValueError) as exc:  # a bad scene: refused by the chain or unreadable
            if not self.skip_bad:
                raise
            warnings.warn(f"scene {entry.id} skipped: {exc}", SkippedScene, stacklevel=1)
            return None
        if isinstance(out, ViewSample):
            out.scene = entry.id
            return out
        if not isinstance(out, PointCloud):
            raise CloudError(f"scene {entry.id}: the loader chain returned a {type(out).__name__}")
        sample: dict[str, Any] = {k: to_tensor(v) for k, v in out.materialise().items()}
        sample["scene"] = entry.id
        return sample

    def __repr__(self) -> str:
        return f"StoreDataset({str(self.store.path)!r}, splits={self.splits}, scenes={len(self.entries)})"


def collate_clouds(samples: list[dict]) -> dict[str, Any]:
    """Concatenate per-point tensors of ``samples`` along dim 0; add ``offset`` (int64, cumulative counts)."""
    if not samples:
        raise ValueError("collate_clouds got an empty list of samples")
    scenes = [s.get("scene", "?") for s in samples]
    names = [k for k in samples[0] if k != "scene"]
    for s, sid in zip(samples, scenes, strict=True):
        got = sorted(k for k in s if k != "scene")
        if got != sorted(names):
            raise CloudError(
                f"samples of one batch must carry the same fields: scene {scenes[0]} has {sorted(names)}, "
                f"scene {sid} has {got}"
            )
    counts = [len(s["coord"]) for s in samples]
    batch: dict[str, Any] = {k: torch.cat([s[k] for s in samples], dim=0) for k in names}
    batch["offset"] = torch.cumsum(torch.tensor(counts, dtype=torch.int64), dim=0)
    batch["scene"] = scenes
    return batch


class SkippedScene(UserWarning):
    """A scene the loader chain refused; training goes on without it."""


def collate_batch(samples: list[Any]) -> Any:
    """Collate what the loader chain makes: views (``collate_views``) or clouds (``collate_clouds``). Samples that
    were skipped (None) are left out; a batch with nothing left is None (the trainer skips it and says so)."""
    kept = [s for s in samples if s is not None]
    if not kept:
        return None
    if isinstance(kept[0], ViewSample):
        return collate_views(kept)
    return collate_clouds(kept)


DEFAULT_WORKERS = 2  # loader worker processes per GPU when settings.train.workers is null


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask; ``os.cpu_count`` where there is none)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def loader_workers(configured: int | None) -> int:
    """Worker processes of the training loader: ``configured`` when set (a warning when it exceeds the usable
    cores, which makes workers compete for them), else ``min(DEFAULT_WORKERS, usable cores)``."""
    cores = usable_cores()
    if configured is None:
        return min(DEFAULT_WORKERS, cores)
    if configured > cores:
        warnings.warn(
            f"settings.train.workers = {configured} loader processes on {cores} usable CPU cores: they compete for "
            f"the cores (and may stall the machine); leave it unset for min({DEFAULT_WORKERS}, cores)",
            stacklevel=2,
        )
    return configured


def make_loader(
    dataset: Dataset,
    batch_size: int = 2,
    workers: int = 0,
    shuffle: bool = True,
    seed: int = 0,
    pin_memory: bool = False,
    drop_last: bool = False,
) -> DataLoader:
    """A ``DataLoader`` with ``collate_clouds``, a seeded shuffle order and persistent workers (when any)."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        collate_fn=collate_clouds,
        generator=generator,
        pin_memory=pin_memory,
        drop_last=drop_last,
        persistent_workers=workers > 0,
    )


def dataset_from_plan(plan: Any, loops: int = 1, skip_bad: bool = False) -> StoreDataset:
    """The compiled loader stage of ``plan``: the Store it reads (path, splits, fields) + the fused program."""
    if plan.loader is None:
        raise ValueError(f"graph {plan.graph.name!r} has no loader stage (no loader node reads a Store)")
    name = plan.loader.entry[0]
    store = plan.node(name).params
    written_here = any(e.dst == name for e in plan.edges)
    if written_here:  # the graph also writes this store: it must hold what this graph's offline stage makes
        made_by = SceneStore(store.path).stage_key()
        if made_by != plan.keys[name]:
            state = "was never written" if made_by is None else "was written by other offline parameters"
            raise ValueError(
                f"store {store.path} {state} (stage key {made_by}, graph {plan.graph.name!r} expects "
                f"{plan.keys[name]}): run `pcdag preprocess` on this graph first"
            )
    subset = None
    if store.scenes is not None:
        from pcdag.datasets.efficient import read_scene_list

        subset = read_scene_list(store.scenes)
    return StoreDataset(store.path, store.splits, plan.loader, store.fields, plan.seed, loops, skip_bad, scenes=subset)
