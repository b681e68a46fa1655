"""Content fingerprints: a copied, moved or touched input keeps its cache key, an edited one never does; the digest
cache skips unchanged files; stores keyed by the old size+mtime fingerprint are re-keyed without recomputing; a
fully cached re-run imports no Dask."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from pcdag.graphs.node import SceneRef, relative_names
from pcdag.nodes.sources.scannet import ScanNetSource
from pcdag.runtime.fingerprint import CACHE_FILE, DigestCache
from pcdag.runtime.offline import legacy_scene_key, run_offline, scene_key
from pcdag.runtime.store import SceneStore

REPO = Path(__file__).resolve().parents[1]


def make_scans(root: Path, n: int = 3, points: int = 50) -> Path:
    """A tiny ScanNet layout: ``root/train/sceneXXXX_00/{coord,color}.npy``."""
    rng = np.random.default_rng(0)
    for i in range(n):
        scan = root / "train" / f"scene{i:04d}_00"
        scan.mkdir(parents=True)
        np.save(scan / "coord.npy", rng.normal(size=(points, 3)).astype(np.float32))
        np.save(scan / "color.npy", rng.integers(0, 255, (points, 3), dtype=np.uint8))
    return root


def keys(root: Path) -> dict[str, str]:
    source = ScanNetSource(root=str(root), fields=["color"])
    return {r.id: scene_key("stage", r) for r in source.scenes()}


def test_copying_moving_or_touching_the_data_keeps_every_key(tmp_path: Path) -> None:
    root = make_scans(tmp_path / "a")
    before = keys(root)
    shutil.copytree(root, tmp_path / "copy")  # new paths, new modification times
    assert keys(tmp_path / "copy") == before
    os.rename(root, tmp_path / "moved")
    assert keys(tmp_path / "moved") == before
    later = os.stat(tmp_path / "moved" / "train" / "scene0001_00" / "coord.npy").st_mtime_ns + 10**9
    os.utime(tmp_path / "moved" / "train" / "scene0001_00" / "coord.npy", ns=(later, later))
    assert keys(tmp_path / "moved") == before


def test_moving_the_data_root_keeps_the_compiled_store_key(tmp_path: Path) -> None:
    """The source root is where the scans are, not what they are: the scene keys cover their content, so the stage
    key a store is written under must not change when the same data is read from another folder."""
    from pcdag.compiler import compile_graph
    from pcdag.graphs.overrides import apply_overrides
    from pcdag.graphs.yamlio import load_graph

    a = make_scans(tmp_path / "a")
    shutil.copytree(a, tmp_path / "b")
    graph = load_graph(REPO / "graphs" / "scannet.yaml")
    plans = []
    for root in ("a", "b"):
        values = {"scans.root": str(tmp_path / root), "scans.splits": ["train"], "store.path": str(tmp_path / "s")}
        plans.append(compile_graph(apply_overrides(graph, values)))
    assert plans[0].keys == plans[1].keys
    assert keys(tmp_path / "a") == keys(tmp_path / "b")


@given(offset=st.integers(0, 10**6), flip=st.integers(1, 255))
def test_editing_any_byte_changes_the_key(tmp_path_factory, offset: int, flip: int) -> None:
    f = tmp_path_factory.mktemp("edit") / "scan.bin"
    data = bytearray(np.random.default_rng(offset).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    f.write_bytes(bytes(data))
    ref = SceneRef("s", "train", "r", (str(f),))
    cache = DigestCache(f.parent / CACHE_FILE)
    before = scene_key("stage", ref, cache.digest)
    cache.save()
    data[offset % len(data)] ^= flip
    f.write_bytes(bytes(data))  # same size; a fresh cache and the saved one must both see the change
    assert scene_key("stage", ref) != before
    assert scene_key("stage", ref, DigestCache(f.parent / CACHE_FILE).digest) != before


def test_the_cache_reads_an_unchanged_file_once(tmp_path: Path) -> None:
    root = make_scans(tmp_path / "d")
    refs = ScanNetSource(root=str(root), fields=["color"]).scenes()
    cold = DigestCache(tmp_path / CACHE_FILE)
    first = [r.fingerprint(cold.digest) for r in refs]
    cold.save()
    warm = DigestCache(tmp_path / CACHE_FILE)
    assert [r.fingerprint(warm.digest) for r in refs] == first
    assert (cold.hashed, warm.hashed) == (6, 0)
    (tmp_path / CACHE_FILE).write_text("{not json")  # a damaged cache only costs re-hashing
    broken = DigestCache(tmp_path / CACHE_FILE)
    assert [r.fingerprint(broken.digest) for r in refs] == first and broken.hashed == 6


def test_names_are_relative_to_the_scene_and_missing_files_count() -> None:
    assert relative_names(["/d/seq/a.png", "/d/seq/b.png", "/d/k.txt"]) == ["seq/a.png", "seq/b.png", "k.txt"]
    assert relative_names(["/x/y/scan.ply"]) == ["scan.ply"]
    assert SceneRef("s", "train", "r", ("/nowhere/coord.npy",)).fingerprint() == "coord.npy:missing"


def identity(cloud, rng):
    return cloud


def test_a_store_keyed_by_size_and_mtime_is_rekeyed_without_recomputing(tmp_path: Path) -> None:
    root = make_scans(tmp_path / "d")
    source = ScanNetSource(root=str(root), fields=["color"])
    store = SceneStore(tmp_path / "store")
    run_offline(source, source.scenes(), identity, store, stage_key="s", progress=False)
    for ref in source.scenes():  # what an older pcdag wrote: the legacy key
        assert store.rekey(ref.id, scene_key("s", ref), legacy_scene_key("s", ref))
    written = {e.id: os.stat(store.scene_dir(e.id) / "coord").st_mtime_ns for e in store.entries()}
    report = run_offline(source, source.scenes(), identity, store, stage_key="s", progress=False)
    assert report.counts() == {"done": 0, "skipped": 3, "failed": 0}
    assert {e.id: e.key for e in store.entries()} == {r.id: scene_key("s", r) for r in source.scenes()}
    assert {e.id: os.stat(store.scene_dir(e.id) / "coord").st_mtime_ns for e in store.entries()} == written
    edited = root / "train" / "scene0002_00" / "coord.npy"
    np.save(edited, np.ones((50, 3), np.float32))
    report = run_offline(source, source.scenes(), identity, store, stage_key="s", progress=False)
    assert [o.scene for o in report.done] == ["scene0002_00"] and len(report.skipped) == 2


def test_a_fully_cached_rerun_imports_no_dask(tmp_path: Path) -> None:
    root = make_scans(tmp_path / "d")
    script = textwrap.dedent(
        f"""
        import sys
        from pcdag.nodes.sources.scannet import ScanNetSource
        from pcdag.runtime.offline import run_offline
        from pcdag.runtime.store import SceneStore

        def identity(cloud, rng):
            return cloud

        source = ScanNetSource(root={str(root)!r}, fields=["color"])
        report = run_offline(source, source.scenes(), identity, SceneStore({str(tmp_path / "store")!r}),
                             stage_key="s", progress=False)
        print(report.counts(), sorted(m for m in ("dask", "distributed") if m in sys.modules))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True) for _ in "12"]
    for r in runs:
        assert r.returncode == 0, r.stderr
    assert runs[0].stdout.strip() == "{'done': 3, 'skipped': 0, 'failed': 0} ['dask', 'distributed']"
    assert runs[1].stdout.strip() == "{'done': 0, 'skipped': 3, 'failed': 0} []"
