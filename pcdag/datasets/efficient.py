"""Data-efficient evaluation protocols: training on a fraction of the scenes, or on a few labelled points per scene.

Two protocols of the data-efficient benchmark (LAM3C Tables 3/4, after Contrastive Scene Contexts):

*Limited reconstructions* — train on the scans of a fraction (1 %, 5 %, 10 %, 20 %) of the training **rooms**.
``limited_scenes`` draws one seeded permutation of the sorted room ids and takes a prefix of
``max(1, round(fraction * n_rooms))`` rooms; every scan of a chosen room comes along (rooms are split, never
scans, so two scans of one room never straddle the cut). Same seed, larger fraction → a superset.

*Limited annotations* — train on every scene but keep only ``k`` (20, 50, 100, 200) labelled points per scene.
``limited_annotations`` draws, per scene, one permutation of the points whose ``segment`` is ≥ 0 from a generator
seeded by ``(seed, sha256(scene id))`` and keeps its first ``k`` (sorted): adding scenes changes no other scene,
and the 20-point set is inside the 50-point set of the same seed. A scene with fewer than ``k`` labelled points
keeps all of them; the files record it (``short``). The loader applies a split with the ``LimitAnnotations`` node,
right after the ``Store`` (indices refer to the stored points).

File formats (written atomically; ``FORMAT`` = 1):

``scenes-{pct}pct-seed{seed}.json`` (``write_scene_list``) — a JSON object::

    {"format": 1, "protocol": "limited-scenes", "scenes": [ids, sorted], "n_scenes": int,
     ... meta: "fraction", "seed", "split", "store", "rooms": [chosen, sorted], "n_rooms", "n_rooms_total",
     "n_scenes_total"}

``points-{k}-seed{seed}.npz`` (``write_annotation_split``) — one ``.npz`` (no pickle: read with
``allow_pickle=False``) holding the split in compressed-sparse-row form::

    scene_ids  <U  [S]      scene ids, sorted
    offsets    int64 [S+1]  indices of scene i are indices[offsets[i]:offsets[i+1]]
    indices    int64 [T]    point indices into the stored scene, strictly increasing within a scene
    meta       <U  []       JSON object: "format", "protocol": "limited-annotations", "n_scenes", "n_indices",
                            ... meta: "points", "seed", "split", "store", "n_points" {id: stored points},
                            "n_labelled" {id: labelled points}, "short" [ids with fewer than k labelled]

``pct`` is ``fraction * 100`` without trailing zeros (``0.01`` → ``1``, ``0.005`` → ``0.5``).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs
import numpy as np

from pcdag.atomic import atomic_write_bytes, atomic_write_json


class SceneStore(Protocol):
    """What these functions read of a scene store (``pcdag.runtime.store.SceneStore``; the runtime opens it)."""

    path: Path
    scenes_dir: Path

    def current(self, splits: Sequence[str]) -> list[Any]: ...
    def entries(self) -> list[Any]: ...
    def read(self, scene_id: str, fields: Sequence[str]) -> dict[str, np.ndarray]: ...
    def stage_key(self) -> str: ...


FORMAT = 1
SCENES_PROTOCOL = "limited-scenes"
POINTS_PROTOCOL = "limited-annotations"
_NPZ_KEYS = ("scene_ids", "offsets", "indices", "meta")


class _Entry(Protocol):
    id: str
    split: str
    room: str


# ---------------------------------------------------------------------------------------------- choosing


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed = {seed!r} must be a whole number ≥ 0")
    return int(seed)


def rooms_to_take(fraction: float, n_rooms: int) -> int:
    """How many of ``n_rooms`` rooms make ``fraction`` of them: rounded half up, at least one."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"fraction = {fraction!r} must be a number in (0, 1] (0.01 is 1 %)")
    return max(1, min(n_rooms, math.floor(fraction * n_rooms + 0.5)))


def limited_scenes(entries: Iterable[_Entry], fraction: float, seed: int) -> list[str]:
    """Ids (sorted) of every scan of the first ``fraction`` of the rooms in one seeded permutation of the rooms.

    ``entries`` are the scenes of one split (``store.entries(["train"])``); a scene with an empty room counts as
    its own room. Deterministic in (seed, fraction, sorted room ids) and nested in ``fraction`` for one seed.
    """
    entries = list(entries)
    if not entries:
        raise ValueError("limited_scenes: no scenes to choose from")
    splits = sorted({e.split for e in entries})
    if len(splits) > 1:
        raise ValueError(f"limited_scenes: scenes of several splits ({', '.join(splits)}); pass one split's scenes")
    room_of = {e.id: (e.room or e.id) for e in entries}
    rooms = sorted(set(room_of.values()))
    order = np.random.default_rng(_check_seed(seed)).permutation(len(rooms))  # [R]
    chosen = {rooms[i] for i in order[: rooms_to_take(fraction, len(rooms))]}
    return sorted(sid for sid, room in room_of.items() if room in chosen)


def _scene_generator(scene_id: str, seed: int) -> np.random.Generator:
    """Generator of one scene: seeded by (seed, first 16 bytes of sha256(scene id)), so scenes are independent."""
    digest = hashlib.sha256(scene_id.encode("utf-8")).digest()
    words = np.frombuffer(digest[:16], dtype="<u4").tolist()  # 4 x uint32
    return np.random.default_rng([_check_seed(seed), *words])


def ranked_labelled(segment: np.ndarray, scene_id: str, seed: int, keep: int | None = None) -> np.ndarray:
    """The labelled points (``segment >= 0``) of one scene in this scene's seeded random order; the first ``keep``.

    int64 ``[min(keep, n_labelled)]``. Every budget ``k`` is a prefix of the same order, so budgets nest.
    """
    segment = np.asarray(segment)
    if segment.ndim != 1 or segment.dtype.kind not in "iu":
        raise ValueError(
            f"scene {scene_id!r}: 'segment' must be 1-D integer labels, got {segment.dtype}{segment.shape}"
        )
    labelled = np.flatnonzero(segment >= 0).astype(np.int64)  # [L]
    order = _scene_generator(scene_id, seed).permutation(labelled)  # [L]
    return order if keep is None else order[:keep]


def draw_points(segment: np.ndarray, scene_id: str, points: int, seed: int) -> np.ndarray:
    """``points`` labelled indices of one scene (all of them when it has fewer), sorted int64 ``[<= points]``."""
    if isinstance(points, bool) or not isinstance(points, (int, np.integer)) or points < 1:
        raise ValueError(f"points = {points!r} must be a whole number ≥ 1 (labelled points per scene)")
    return np.sort(ranked_labelled(segment, scene_id, seed, int(points)))


def _read_segment(store: SceneStore, entry_fields: Mapping[str, tuple[str, ...]], scene_id: str) -> np.ndarray:
    """The stored ``segment`` of ``scene_id``; ``ValueError`` naming the scene when it is missing or unlabelled."""
    if scene_id not in entry_fields:
        raise ValueError(f"scene {scene_id!r} is not a committed scene of store {store.path}")
    if "segment" not in entry_fields[scene_id]:
        raise ValueError(
            f"scene {scene_id!r} in store {store.path} has no 'segment' field (it has "
            f"{', '.join(entry_fields[scene_id])}); limited annotations need a store written with labels"
        )
    return store.read(scene_id, ["segment"])["segment"]


def limited_annotations(store: SceneStore, scene_ids: Iterable[str], points: int, seed: int) -> dict[str, np.ndarray]:
    """For each scene, ``points`` indices (sorted int64, into the stored points) drawn among its labelled points.

    A scene with fewer labelled points keeps all of them (``make_splits`` records which, as ``short``). Seeded
    per (seed, scene id); nested in ``points`` for one seed.
    """
    fields = {e.id: e.fields for e in store.entries()}
    return {sid: draw_points(_read_segment(store, fields, sid), sid, points, seed) for sid in scene_ids}


# ---------------------------------------------------------------------------------------------- files


def _merge_meta(base: dict[str, Any], meta: Mapping[str, Any] | None, path: Path) -> dict[str, Any]:
    clash = sorted(set(base) & set(meta or {}))
    if clash:
        raise ValueError(f"{path}: meta may not set the reserved key(s) {', '.join(clash)}")
    return {**dict(meta or {}), **base}


def write_scene_list(path: str | Path, ids: Sequence[str], meta: Mapping[str, Any] | None = None) -> Path:
    """Write a limited-scenes list (JSON, atomically): sorted ``ids`` plus ``meta`` (seed, fraction, store...)."""
    path = Path(path)
    ids = sorted(ids)
    if not all(isinstance(i, str) and i for i in ids) or len(set(ids)) != len(ids):
        raise ValueError(f"{path}: scene ids must be distinct non-empty strings")
    base = {"format": FORMAT, "protocol": SCENES_PROTOCOL, "scenes": ids, "n_scenes": len(ids)}
    atomic_write_json(path, _merge_meta(base, meta, path))
    return path


def read_scene_list_meta(path: str | Path) -> dict[str, Any]:
    """The whole JSON object of a scene list, checked; ``FileNotFoundError``/``ValueError`` naming ``path``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scene list {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"scene list {path} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("protocol") != SCENES_PROTOCOL:
        raise ValueError(f"scene list {path} is not a {SCENES_PROTOCOL!r} file (no matching 'protocol' entry)")
    if data.get("format") != FORMAT:
        raise ValueError(f"scene list {path} has format {data.get('format')!r}; this pcdag reads format {FORMAT}")
    ids = data.get("scenes")
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids) or len(set(ids)) != len(ids):
        raise ValueError(f"scene list {path}: 'scenes' must be a list of distinct non-empty scene ids")
    return data


def read_scene_list(path: str | Path) -> list[str]:
    """The scene ids of a limited-scenes list written by ``write_scene_list``."""
    return list(read_scene_list_meta(path)["scenes"])


@attrs.frozen
class AnnotationSplit:
    """A read annotation split: ``indices`` per scene (read-only int64 arrays) and the file's ``meta``."""

    indices: Mapping[str, np.ndarray]
    meta: Mapping[str, Any]


def write_annotation_split(
    path: str | Path, annotations: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None
) -> Path:
    """Write a limited-annotations split (``.npz``, CSR layout of the module docstring, atomically)."""
    path = Path(path)
    ids = sorted(annotations)
    arrays = [np.asarray(annotations[i]) for i in ids]
    for sid, a in zip(ids, arrays, strict=True):
        if a.ndim != 1 or a.dtype.kind not in "iu" or (len(a) and (a[0] < 0 or (np.diff(a) <= 0).any())):
            raise ValueError(f"{path}: indices of scene {sid!r} must be a 1-D, strictly increasing array ≥ 0")
    counts = np.array([len(a) for a in arrays], dtype=np.int64)  # [S]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # [S+1]
    indices = np.concatenate([np.zeros(0, np.int64), *arrays]).astype(np.int64)  # [T]
    base = {"format": FORMAT, "protocol": POINTS_PROTOCOL, "n_scenes": len(ids), "n_indices": int(offsets[-1])}
    text = json.dumps(_merge_meta(base, meta, path), sort_keys=True, default=str)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, scene_ids=np.array(ids, dtype=str), offsets=offsets, indices=indices, meta=np.array(text)
    )
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """The four arrays of an annotation split file; ``FileNotFoundError``/``ValueError`` naming ``path``."""
    if not path.is_file():
        raise FileNotFoundError(f"annotation split {path} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not an .npz archive")
        with loaded as npz:
            arrays = {k: npz[k] for k in _NPZ_KEYS if k in npz.files}
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, ValueError) as exc:
        raise ValueError(f"annotation split {path} is not a readable .npz: {type(exc).__name__}: {exc}") from exc
    missing = [k for k in _NPZ_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"annotation split {path} lacks array(s) {', '.join(missing)}; rewrite it with make_splits")
    return arrays


def _check_arrays(path: Path, a: Mapping[str, np.ndarray]) -> None:
    ids, offsets, indices = a["scene_ids"], a["offsets"], a["indices"]
    where = f"annotation split {path}"
    if ids.ndim != 1 or ids.dtype.kind != "U" or len(set(ids.tolist())) != len(ids):
        raise ValueError(f"{where}: 'scene_ids' must be a 1-D array of distinct strings, got {ids.dtype}{ids.shape}")
    if offsets.dtype != np.int64 or offsets.shape != (len(ids) + 1,) or indices.dtype != np.int64 or indices.ndim != 1:
        raise ValueError(f"{where}: 'offsets' must be int64 [{len(ids) + 1}] and 'indices' int64 [T]")
    if offsets[0] != 0 or (np.diff(offsets) < 0).any() or offsets[-1] != len(indices):
        raise ValueError(f"{where}: 'offsets' must rise from 0 to the {len(indices)} indices")
    starts = np.zeros(len(indices), dtype=bool)  # [T] first index of each scene
    starts[offsets[:-1][offsets[:-1] < len(indices)]] = True
    steps = np.diff(indices, prepend=np.int64(-1))  # [T]
    if (indices < 0).any() or (~starts & (steps <= 0)).any():
        raise ValueError(f"{where}: indices must be ≥ 0 and strictly increasing within each scene")


def _parse_meta(path: Path, raw: np.ndarray) -> dict[str, Any]:
    try:
        meta = json.loads(str(raw.item())) if raw.dtype.kind == "U" and raw.ndim == 0 else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("protocol") != POINTS_PROTOCOL:
        raise ValueError(f"annotation split {path}: 'meta' is not the JSON of a {POINTS_PROTOCOL!r} file")
    if meta.get("format") != FORMAT:
        raise ValueError(f"annotation split {path} has format {meta.get('format')!r}; this pcdag reads {FORMAT}")
    return meta


def read_annotation_file(path: str | Path) -> AnnotationSplit:
    """Read and check an annotation split; ``FileNotFoundError``/``ValueError`` naming ``path`` when it is bad."""
    path = Path(path)
    arrays = _load_npz(path)
    _check_arrays(path, arrays)
    meta = _parse_meta(path, arrays["meta"])
    indices, offsets = arrays["indices"], arrays["offsets"]
    indices.flags.writeable = False
    split = {sid: indices[offsets[i] : offsets[i + 1]] for i, sid in enumerate(arrays["scene_ids"].tolist())}
    return AnnotationSplit(split, meta)


def read_annotation_split(path: str | Path) -> dict[str, np.ndarray]:
    """``{scene id: sorted int64 point indices}`` of an annotation split written by ``write_annotation_split``."""
    return dict(read_annotation_file(path).indices)


# ---------------------------------------------------------------------------------------------- all splits


def percent_label(fraction: float) -> str:
    """``0.01`` → ``"1"``, ``0.1`` → ``"10"``, ``0.005`` → ``"0.5"`` (for file names)."""
    return f"{round(fraction * 100, 6):g}"


def make_splits(
    store: SceneStore,
    out_dir: str | Path,
    scene_fractions: Sequence[float] = (0.01, 0.05, 0.1, 0.2),
    points: Sequence[int] = (20, 50, 100, 200),
    seed: int = 0,
    split: str = "train",
) -> list[Path]:
    """Write ``scenes-{pct}pct-seed{seed}.json`` per fraction and ``points-{k}-seed{seed}.npz`` per budget.

    Scenes the store marks stale are left out, as the loader does. Reads each scene's labels once (only when
    ``points`` is not empty). Returns the written paths: scene lists in the order given, then budgets ascending.
    """
    if not store.scenes_dir.is_dir():
        raise FileNotFoundError(f"{store.path} is not a scene store (no scenes/ directory)")
    entries = store.current([split])  # stale scenes of older offline runs are never read, so never chosen
    if not entries:
        raise ValueError(f"store {store.path} has no scenes in split {split!r}")
    out, seed = Path(out_dir), _check_seed(seed)
    common = {"seed": seed, "split": split, "store": str(store.path.resolve()), "store_stage": store.stage_key()}
    paths = [_write_fraction(out, entries, f, common) for f in scene_fractions]
    if points:
        paths += _write_budgets(out, store, [e.id for e in entries], points, common)
    return paths


def _write_fraction(out: Path, entries: Sequence[_Entry], fraction: float, common: dict[str, Any]) -> Path:
    ids = limited_scenes(entries, fraction, common["seed"])
    chosen = set(ids)
    rooms = sorted({e.room or e.id for e in entries if e.id in chosen})
    meta = {
        **common,
        "fraction": fraction,
        "rooms": rooms,
        "n_rooms": len(rooms),
        "n_rooms_total": len({e.room or e.id for e in entries}),
        "n_scenes_total": len(entries),
    }
    return write_scene_list(out / f"scenes-{percent_label(fraction)}pct-seed{common['seed']}.json", ids, meta)


def _write_budgets(
    out: Path, store: SceneStore, ids: list[str], points: Sequence[int], common: dict[str, Any]
) -> list[Path]:
    if not all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 1 for k in points):
        raise ValueError(f"points = {list(points)!r}: every budget must be a whole number ≥ 1")
    budgets = sorted({int(k) for k in points})
    fields = {e.id: e.fields for e in store.entries()}
    ranked, n_points, n_labelled = {}, {}, {}
    for sid in ids:
        segment = _read_segment(store, fields, sid)
        ranked[sid] = ranked_labelled(segment, sid, common["seed"], budgets[-1])  # [<= max k]
        n_points[sid], n_labelled[sid] = len(segment), int((segment >= 0).sum())
    paths = []
    for k in budgets:
        split = {sid: np.sort(r[:k]) for sid, r in ranked.items()}
        short = sorted(sid for sid in ids if n_labelled[sid] < k)
        meta = {**common, "points": int(k), "n_points": n_points, "n_labelled": n_labelled, "short": short}
        paths.append(write_annotation_split(out / f"points-{int(k)}-seed{common['seed']}.npz", split, meta))
    return paths


def summary(paths: Iterable[str | Path]) -> str:
    """One line per split file: what it keeps, of how much."""
    lines = []
    for p in map(Path, paths):
        if p.suffix == ".npz":
            meta = read_annotation_file(p).meta
            short = len(meta.get("short", ()))
            lines.append(
                f"{p.name}: {meta.get('points')} labelled points per scene, {meta['n_scenes']} scenes, "
                f"{meta['n_indices']:,} points in all"
                + (f" ({short} scenes have fewer labelled points)" if short else "")
            )
        else:
            meta = read_scene_list_meta(p)
            lines.append(
                f"{p.name}: {percent_label(meta.get('fraction', 0.0))} % of rooms = {meta.get('n_rooms')} of "
                f"{meta.get('n_rooms_total')} rooms, {meta['n_scenes']} of {meta.get('n_scenes_total')} scans"
            )
    return "\n".join(lines)
