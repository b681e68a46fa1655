"""The scene store: the materialised boundary between offline stages and the loader.

Layout of a store directory::

    <store>/scenes/<safe id>/            one zarr v3 group per scene, one array per point field
    <store>/scenes/<safe id>/pcdag.json  scene id, cache key, split, room, n_points, fields, report, time
    <store>/scenes/.tmp-*                scenes being written (left over only by a killed run)
    <store>/quarantine/<safe id>.json    scenes whose offline processing failed, with error and traceback
    <store>/manifest.json                written at the end of an offline run

A scene is *committed* when its directory holds ``pcdag.json``. Writes build the whole group under a temporary
name and rename it into place (``replace_dir``), and ``pcdag.json`` is the last file written, so a crash leaves
a ``.tmp-*`` directory (removed by ``clean_tmp``), never a half scene. Arrays are chunked along points and
compressed with Blosc/zstd (byte shuffle), which keeps float coordinates and small integer labels compact.

Scene ids may contain ``/`` (``Area_1/office_1``): the directory name maps ``/`` to ``__`` and percent-escapes
anything else outside ``[A-Za-z0-9._-]``; the real id lives in ``pcdag.json`` and two ids that map to one
directory are refused rather than overwritten.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import secrets
import shutil
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import zarr
import zarr.codecs

from pcdag.atomic import atomic_write_json, replace_dir
from pcdag.graphs.cloud import CloudError, PointCloud

META_FILE = "pcdag.json"
FORMAT_VERSION = 1
CHUNK_POINTS = 65536  # points per chunk, lowered for wide fields so a chunk stays below CHUNK_BYTES
CHUNK_BYTES = 8 << 20
TMP_PREFIX = ".tmp-"
_STORABLE_KINDS = "biufc"  # bool, signed, unsigned, float, complex
_FIELD_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_SAFE_CHAR = re.compile(r"[^A-Za-z0-9._-]")
_RESERVED_MANIFEST_KEYS = ("scenes", "splits", "n_scenes", "n_points", "quarantined", "unreadable", "written", "format")


class StoreError(ValueError):
    """A store directory or a scene in it cannot be used (not a store, unreadable, inconsistent)."""


@attrs.frozen
class StoreEntry:
    """One committed scene, as listed in its ``pcdag.json``."""

    id: str
    split: str
    room: str
    n_points: int
    fields: tuple[str, ...]
    key: str


def safe_name(scene_id: str) -> str:
    """Directory name for a scene id: ``/`` → ``__``, other unsafe characters percent-escaped, long ids hashed."""
    if not isinstance(scene_id, str) or not scene_id:
        raise ValueError(f"scene id must be a non-empty string, got {scene_id!r}")
    name = _SAFE_CHAR.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), scene_id.replace("/", "__"))
    if name.startswith("."):
        name = "%2E" + name[1:]  # hidden names are reserved for temporary directories
    if len(name) > 160:  # stay well below the 255-byte file name limit, with room for the tmp prefix
        name = name[:140] + "-" + hashlib.sha256(scene_id.encode()).hexdigest()[:16]
    return name


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _chunks(shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
    trailing = tuple(max(1, d) for d in shape[1:])
    row_bytes = dtype.itemsize * int(np.prod(trailing, dtype=np.int64))
    rows = int(min(CHUNK_POINTS, max(1, CHUNK_BYTES // max(1, row_bytes))))
    return (rows, *trailing)


def _compressor() -> zarr.codecs.BloscCodec:
    return zarr.codecs.BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")


def _dims(name: str, ndim: int) -> tuple[str, ...]:
    """Dimension names: ``point`` first; RGB / XYZ triples named so; other trailing axes ``<field>_<i>``."""
    if ndim == 2 and name == "color":
        return ("point", "rgb")
    if ndim == 2 and name in ("coord", "normal", "origin_coord", "grid_coord"):
        return ("point", "xyz")
    return ("point", *(f"{name}_{i}" for i in range(1, ndim)))


def _write_field(group: zarr.Group, name: str, array: np.ndarray) -> None:
    """Write one field as a chunked, compressed array of ``group``."""
    out = group.create_array(
        name,
        shape=array.shape,
        dtype=array.dtype,
        chunks=_chunks(array.shape, array.dtype),
        compressors=_compressor(),
        config={"write_empty_chunks": True},  # every chunk on disk, also those equal to the fill value
        dimension_names=_dims(name, array.ndim),  # xarray reads these
    )
    if array.size:
        out[...] = array


class SceneStore:
    """A directory of processed scenes (see the module docstring). Holds only its path, so it pickles cheaply."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"SceneStore({str(self.path)!r})"

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return (SceneStore, (str(self.path),))

    # -- paths -------------------------------------------------------------------------------------
    @property
    def scenes_dir(self) -> Path:
        return self.path / "scenes"

    @property
    def quarantine_dir(self) -> Path:
        return self.path / "quarantine"

    def scene_dir(self, scene_id: str) -> Path:
        return self.scenes_dir / safe_name(scene_id)

    def prepare(self) -> None:
        """Create ``<store>/scenes``; refuse a path that exists and holds something other than a store."""
        if self.scenes_dir.is_dir():
            return
        if self.path.exists():
            if not self.path.is_dir():
                raise StoreError(f"scene store {self.path} exists and is not a directory")
            # a concurrent writer may create scenes/ (and quarantine/) meanwhile: those do not count as foreign
            foreign = [p.name for p in self.path.iterdir() if p.name not in ("scenes", "quarantine", "manifest.json")]
            if foreign and not self.scenes_dir.is_dir():
                raise StoreError(
                    f"{self.path} is not empty and is not a pcdag scene store (it has no scenes/ directory); "
                    "choose a new or empty directory for the store"
                )
        self.scenes_dir.mkdir(parents=True, exist_ok=True)

    # -- metadata ----------------------------------------------------------------------------------
    def _meta(self, scene_id: str) -> dict[str, Any] | None:
        """``pcdag.json`` of a committed scene with this id, or None when there is none."""
        try:
            meta = json.loads((self.scene_dir(scene_id) / META_FILE).read_text())
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) and meta.get("id") == scene_id else None

    def report(self, scene_id: str) -> dict[str, Any]:
        """The report a committed scene was written with (per-node facts, seconds, scale); {} when unreadable."""
        meta = self._meta(scene_id)
        report = meta.get("report") if meta else None
        return report if isinstance(report, dict) else {}

    def has(self, scene_id: str, key: str) -> bool:
        """True when ``scene_id`` is committed with cache key ``key``."""
        meta = self._meta(scene_id)
        return meta is not None and meta.get("key") == key

    # -- writing -----------------------------------------------------------------------------------
    def write(
        self, scene_id: str, cloud: PointCloud, *, key: str, split: str, room: str, report: dict | None = None
    ) -> None:
        """Store ``cloud`` as scene ``scene_id`` atomically (replacing an older version) and lift its quarantine."""
        arrays = _storable_arrays(scene_id, cloud)
        self.prepare()
        final = self.scene_dir(scene_id)
        self._refuse_collision(scene_id, final)
        tmp = self.scenes_dir / f"{TMP_PREFIX}{final.name}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            group = zarr.open_group(str(tmp), mode="w")
            for name, array in arrays.items():
                _write_field(group, name, array)
            meta = {
                "format": FORMAT_VERSION,
                "id": scene_id,
                "key": key,
                "split": split,
                "room": room,
                "n_points": len(cloud),
                "fields": {n: {"dtype": a.dtype.name, "shape": list(a.shape)} for n, a in arrays.items()},
                "report": dict(report or {}),
                "written": _now(),
            }
            atomic_write_json(tmp / META_FILE, meta)  # last: its presence marks a complete scene
            replace_dir(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        (self.quarantine_dir / f"{final.name}.json").unlink(missing_ok=True)

    def _refuse_collision(self, scene_id: str, final: Path) -> None:
        if not (final / META_FILE).exists():
            return
        try:
            other = json.loads((final / META_FILE).read_text()).get("id")
        except (OSError, ValueError, AttributeError):
            return  # an unreadable older version is simply replaced
        if other != scene_id:
            raise StoreError(
                f"scene ids {scene_id!r} and {other!r} map to the same directory {final} in store {self.path}; "
                "rename one of them"
            )

    # -- reading -----------------------------------------------------------------------------------
    def read(self, scene_id: str, fields: Iterable[str] | None = None) -> PointCloud:
        """Load a committed scene (all fields, or ``fields``); meta holds scene, split and room."""
        meta = self._meta(scene_id)
        where = f"scene {scene_id!r} in store {self.path}"
        if meta is None:
            if not (self.scene_dir(scene_id) / META_FILE).exists():
                raise FileNotFoundError(f"{where} does not exist (no {self.scene_dir(scene_id) / META_FILE})")
            raise StoreError(f"{where} has an unreadable {META_FILE} (or one written for another id)")
        stored: dict[str, Any] = meta.get("fields", {})
        names = list(stored) if fields is None else list(dict.fromkeys(["coord", *fields]))  # coord always
        missing = [n for n in names if n not in stored]
        if missing:
            raise StoreError(f"{where} has no field(s) {', '.join(missing)}; it has {', '.join(stored)}")
        try:
            group = zarr.open_group(str(self.scene_dir(scene_id)), mode="r")
            arrays = {n: np.asarray(group[n][...]) for n in names}
        except Exception as exc:
            raise StoreError(f"{where} is unreadable: {type(exc).__name__}: {exc}") from exc
        for n, a in arrays.items():
            want = stored[n]
            if a.dtype.name != want["dtype"] or list(a.shape) != list(want["shape"]):
                raise StoreError(
                    f"{where}: field {n!r} is {a.dtype}{list(a.shape)} but {META_FILE} says "
                    f"{want['dtype']}{want['shape']}"
                )
        return PointCloud(arrays, {"scene": scene_id, "split": meta.get("split"), "room": meta.get("room")})

    def open_xarray(self, scene_id: str) -> Any:
        """A committed scene as a lazy ``xarray.Dataset`` (dimension ``point``), for inspection and statistics."""
        import xarray as xr

        if self._meta(scene_id) is None:
            raise FileNotFoundError(f"scene {scene_id!r} is not in store {self.path}")
        with warnings.catch_warnings():  # pcdag.json beside the arrays is ours, not a zarr node
            warnings.simplefilter("ignore", UserWarning)
            ds = xr.open_zarr(str(self.scene_dir(scene_id)), consolidated=False, zarr_format=3)
        return ds.assign_attrs(scene=scene_id)

    def entries(self, splits: Iterable[str] | None = None) -> list[StoreEntry]:
        """Committed scenes (optionally only those of ``splits``), sorted by id. A scene whose metadata is
        unreadable is left out (``unreadable()`` lists them) so one damaged scene does not stop the others."""
        return [e for e in self._scan() if isinstance(e, StoreEntry) and (splits is None or e.split in set(splits))]

    def unreadable(self) -> list[dict]:
        """``{"path", "error"}`` of every scene directory whose ``pcdag.json`` cannot be read."""
        return [e for e in self._scan() if isinstance(e, dict)]

    def _scan(self) -> list[StoreEntry | dict]:
        if not self.scenes_dir.is_dir():
            return []
        out: list[StoreEntry | dict] = []
        for d in self.scenes_dir.iterdir():
            if d.name.startswith(".") or not (d / META_FILE).exists():
                continue
            try:
                meta = json.loads((d / META_FILE).read_text())
                entry = StoreEntry(
                    id=meta["id"],
                    split=meta["split"],
                    room=meta["room"],
                    n_points=int(meta["n_points"]),
                    fields=tuple(sorted(meta["fields"])),
                    key=meta["key"],
                )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                out.append({"path": str(d / META_FILE), "error": f"{type(exc).__name__}: {exc}"})
                continue
            out.append(entry)
        return sorted(out, key=lambda e: e.id if isinstance(e, StoreEntry) else "")

    def _manifest(self) -> dict[str, Any]:
        try:
            manifest = json.loads((self.path / "manifest.json").read_text())
        except (OSError, ValueError):
            return {}
        return manifest if isinstance(manifest, dict) else {}

    # -- items that expand into several scenes ----------------------------------------------------
    def mark_item(self, item_id: str, key: str, scenes: list[str]) -> None:
        """Record that source item ``item_id`` (e.g. one video) made ``scenes`` with cache key ``key``."""
        record = {"id": item_id, "key": key, "scenes": list(scenes), "time": _now()}
        atomic_write_json(self.path / "items" / f"{safe_name(item_id)}.json", record)
        (self.quarantine_dir / f"{safe_name(item_id)}.json").unlink(missing_ok=True)  # an earlier whole-item failure

    def item_scenes(self, item_id: str, key: str) -> list[str] | None:
        """The scenes item ``item_id`` made with ``key``, if all of them are still committed; else None."""
        try:
            record = json.loads((self.path / "items" / f"{safe_name(item_id)}.json").read_text())
        except (OSError, ValueError):
            return None
        if record.get("id") != item_id or record.get("key") != key:
            return None
        scenes = record.get("scenes", [])
        return scenes if scenes and all(self.has(s, key) for s in scenes) else None

    def rekey(self, scene_id: str, old: str, new: str) -> bool:
        """Give committed scene ``scene_id`` cache key ``new`` if it has key ``old`` (its ``pcdag.json`` is
        rewritten atomically; the arrays are not touched). True when it did."""
        meta = self._meta(scene_id)
        if meta is None or meta.get("key") != old:
            return False
        atomic_write_json(self.scene_dir(scene_id) / META_FILE, {**meta, "key": new})
        return True

    def rekey_item(self, item_id: str, old: str, new: str) -> list[str] | None:
        """``rekey`` for every scene item ``item_id`` made with key ``old``, then its item record; the scenes,
        or None when the item has no complete record under ``old``."""
        scenes = self.item_scenes(item_id, old)
        if scenes is None:
            return None
        for scene in scenes:
            self.rekey(scene, old, new)
        self.mark_item(item_id, new, scenes)
        return scenes

    def stage_key(self) -> str | None:
        """Cache key of the offline stage that last wrote this store (None if never written)."""
        return self._manifest().get("stage_key")

    def stale(self) -> frozenset[str]:
        """Scenes the last offline run did not produce (older runs, other parameters): ``other_scenes`` of the
        manifest. Kept on disk, never read by the loader."""
        return frozenset(self._manifest().get("other_scenes", ()))

    def current(self, splits: Iterable[str] | None = None) -> list[StoreEntry]:
        """``entries(splits)`` without the stale ones: the scenes of the last offline run, what loaders read."""
        stale = self.stale()
        return [e for e in self.entries(splits) if e.id not in stale]

    # -- failures and housekeeping -----------------------------------------------------------------
    def quarantine(self, scene_id: str, *, key: str, split: str, room: str, error: str, traceback: str) -> None:
        """Record that ``scene_id`` failed; a later successful ``write`` removes the record."""
        self.prepare()
        record = {
            "id": scene_id,
            "key": key,
            "split": split,
            "room": room,
            "error": error,
            "traceback": traceback,
            "time": _now(),
        }
        atomic_write_json(self.quarantine_dir / f"{safe_name(scene_id)}.json", record)

    def quarantined(self) -> list[dict]:
        """Quarantine records, sorted by scene id."""
        if not self.quarantine_dir.is_dir():
            return []
        records = []
        for p in self.quarantine_dir.glob("*.json"):
            try:
                records.append(json.loads(p.read_text()))
            except (OSError, ValueError):
                continue  # removed or replaced while listing
        return sorted(records, key=lambda r: str(r.get("id")))

    def clean_tmp(self) -> int:
        """Remove directories left by killed writers (``.tmp-*``, ``.*.old-*``); returns how many.

        Call it only while no other process writes to this store (the offline executor does, before it starts).
        """
        if not self.scenes_dir.is_dir():
            return 0
        removed = 0
        for d in self.scenes_dir.iterdir():
            old = d.name.startswith(".") and ".old-" in d.name
            if old and not (self.scenes_dir / d.name[1:].rsplit(".old-", 1)[0]).exists():
                os.replace(d, self.scenes_dir / d.name[1:].rsplit(".old-", 1)[0])  # killed mid-replace: restore
            elif d.name.startswith(TMP_PREFIX) or old:
                shutil.rmtree(d, ignore_errors=True)
                removed += 1
        return removed

    def write_manifest(self, info: Mapping[str, Any]) -> Path:
        """Write ``<store>/manifest.json``: ``info`` plus every committed scene, split counts, quarantined ids."""
        clash = [k for k in _RESERVED_MANIFEST_KEYS if k in info]
        if clash:
            raise ValueError(f"store {self.path}: manifest info may not use the reserved key(s) {', '.join(clash)}")
        self.prepare()
        entries = self.entries()
        splits: dict[str, int] = {}
        for e in entries:
            splits[e.split] = splits.get(e.split, 0) + 1
        manifest = {
            **info,
            "format": FORMAT_VERSION,
            "written": _now(),
            "n_scenes": len(entries),
            "n_points": sum(e.n_points for e in entries),
            "splits": dict(sorted(splits.items())),
            "scenes": [attrs.asdict(e) for e in entries],
            "quarantined": [{k: r.get(k) for k in ("id", "split", "room", "key", "error")} for r in self.quarantined()],
            "unreadable": self.unreadable(),
        }
        path = self.path / "manifest.json"
        atomic_write_json(path, manifest)
        return path


def _storable_arrays(scene_id: str, cloud: PointCloud) -> dict[str, np.ndarray]:
    """The cloud's fields as arrays, checked for equal length, storable dtypes and safe names."""
    if not isinstance(cloud, PointCloud):
        raise CloudError(f"scene {scene_id!r}: expected a PointCloud to store, got {type(cloud).__name__}")
    arrays = cloud.materialise()
    n = len(cloud)
    for name, arr in arrays.items():
        where = f"scene {scene_id!r}: field {name!r}"
        if not _FIELD_NAME.match(name) or name == META_FILE:
            raise CloudError(f"{where}: field names may use letters, digits, '_', '.', '-' and not start with '.'")
        if not isinstance(arr, np.ndarray) or arr.ndim == 0 or len(arr) != n:
            raise CloudError(f"{where} must be an array with {n} rows, got {type(arr).__name__}{np.shape(arr)}")
        if arr.dtype.kind not in _STORABLE_KINDS:
            raise CloudError(f"{where} has dtype {arr.dtype}; only bool, integer, float and complex fields are stored")
    return dict(arrays)
