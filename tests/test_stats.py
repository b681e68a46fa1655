"""Dataset statistics of a store: numbers equal brute-force computations; the PNG, the JSON and the command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

from pcdag.datasets.synthetic import make_room
from pcdag.graphs.cloud import PointCloud
from pcdag.runtime.store import SceneStore
from pcdag.stats import (
    SCANNET_DIAGONAL,
    add_stats_parser,
    format_table,
    main_stats,
    plot_stats,
    scene_numbers,
    store_stats,
    summarise,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _store(path: Path, seed: int, sizes: list[int]) -> dict[str, np.ndarray]:
    """A store of synthetic rooms with ``sizes`` points; returns the coordinates written, by scene id."""
    store, written = SceneStore(path), {}
    for i, n in enumerate(sizes):
        room = make_room(np.random.default_rng([seed, i]), n_points=n)
        sid = f"room{i:02d}"
        store.write(sid, PointCloud(room), key="k", split="train" if i % 3 else "val", room=sid)
        written[sid] = room["coord"]
    return written


def _brute_spacing(coord: np.ndarray) -> float:
    d = cdist(coord.astype(np.float64), coord.astype(np.float64))  # [N, N]
    np.fill_diagonal(d, np.inf)
    return float(np.median(d.min(axis=1)))


def _brute_percentile(v: np.ndarray, q: float) -> float:
    s = np.sort(v)
    pos = q / 100 * (len(s) - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, len(s) - 1)
    return float(s[lo] + (pos - lo) * (s[hi] - s[lo]))


def test_store_numbers_equal_brute_force(tmp_path: Path) -> None:
    written = _store(tmp_path / "s", 0, [300, 800, 1500, 500])
    stats = store_stats(tmp_path / "s")
    assert stats["n_scenes"] == 4 and stats["errors"] == [] and stats["name"] == "s"
    for scene in stats["scenes"]:
        coord = written[scene["id"]].astype(np.float64)
        assert scene["points"] == len(coord)
        assert scene["bbox_diagonal"] == pytest.approx(np.sqrt(((coord.max(0) - coord.min(0)) ** 2).sum()), rel=1e-12)
        assert scene["nn_spacing"] == pytest.approx(_brute_spacing(coord), rel=1e-9)
    diag = np.array([s["bbox_diagonal"] for s in stats["scenes"]])
    summary = stats["summary"]["bbox_diagonal"]
    assert summary["count"] == 4 and summary["mean"] == pytest.approx(diag.sum() / 4)
    assert summary["std"] == pytest.approx(np.sqrt(((diag - diag.mean()) ** 2).sum() / 4))
    assert summary["min"] == diag.min() and summary["max"] == diag.max()
    for q in (5, 25, 75, 95):
        assert summary[f"p{q}"] == pytest.approx(_brute_percentile(diag, q))
    assert stats["summary"]["points"]["median"] == 650.0
    assert store_stats(tmp_path / "s") == stats  # deterministic


@settings(max_examples=30, deadline=None)
@given(values=st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=40))
def test_summary_matches_definitions(values: list[float]) -> None:
    v = np.array(values)
    s = summarise(np.r_[v, np.nan])  # NaN is left out
    assert s["count"] == len(v) and s["min"] == v.min() and s["max"] == v.max()
    assert s["mean"] == pytest.approx(v.sum() / len(v), abs=1e-9)
    assert s["median"] == pytest.approx(_brute_percentile(v, 50), abs=1e-9)
    assert s["min"] <= s["p5"] <= s["p25"] <= s["median"] <= s["p75"] <= s["p95"] <= s["max"]


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 400), seed=st.integers(0, 2**16), dup=st.booleans())
def test_spacing_on_a_sample_is_close_to_the_full_median(n: int, seed: int, dup: bool) -> None:
    rng = np.random.default_rng(seed)
    coord = rng.uniform(0, 1, (n, 3)).astype(np.float32)
    if dup:
        coord[: n // 2] = coord[n - n // 2 :][: n // 2]  # exact duplicates: spacing 0 for them
    full = scene_numbers(coord, rng)
    assert full["nn_spacing"] == pytest.approx(_brute_spacing(coord), rel=1e-9)
    sampled = scene_numbers(coord, np.random.default_rng(seed), max_points=max(1, n // 2))
    nn = np.sort(cdist(coord, coord) + np.diag(np.full(n, np.inf))).T[0]  # [N] every point's NN distance
    assert nn.min() <= sampled["nn_spacing"] <= nn.max()  # the median of a subset of the true NN distances


def test_bad_stores_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        store_stats(tmp_path / "nowhere")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="is not a pcdag scene store"):
        store_stats(tmp_path / "plain")
    SceneStore(tmp_path / "empty").prepare()
    with pytest.raises(ValueError, match="has no committed scenes"):
        store_stats(tmp_path / "empty")
    _store(tmp_path / "broken", 1, [200, 200])
    for f in (tmp_path / "broken" / "scenes" / "room01" / "coord" / "c").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    stats = store_stats(tmp_path / "broken")  # a bad scene is reported, the others counted
    assert stats["n_scenes"] == 1 and stats["errors"][0]["id"] == "room01"


def test_plot_writes_a_png(tmp_path: Path) -> None:
    _store(tmp_path / "a", 2, [400, 900, 600])
    _store(tmp_path / "b", 3, [300, 300])
    a, b = store_stats(tmp_path / "a"), store_stats(tmp_path / "b")
    for compare in (None, b):
        out = plot_stats(a, tmp_path / "pics" / "a.png", compare=compare, labels=("A", "B") if compare else None)
        data = out.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000
    assert sorted(p.name for p in (tmp_path / "pics").iterdir()) == ["a.png"]  # no temporary left behind
    table = format_table(a, b)
    assert "ScanNet (reference)" in table and f"{SCANNET_DIAGONAL['median']:.3f}" in table and "b" in table


def test_command(tmp_path: Path, capsys, monkeypatch) -> None:
    _store(tmp_path / "mine", 4, [500, 700])
    _store(tmp_path / "other", 5, [400])
    parser = argparse.ArgumentParser(prog="pcdag")
    add_stats_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["stats", str(tmp_path / "mine"), "--compare", str(tmp_path / "other")])
    monkeypatch.chdir(tmp_path)
    assert args.run(args) == 0
    out = capsys.readouterr().out
    assert "bounding-box diagonal (m)" in out and "ScanNet (reference)" in out and "7.984" in out
    png, js = tmp_path / "out" / "stats" / "mine.png", tmp_path / "out" / "stats" / "mine.json"
    assert png.read_bytes()[:8] == PNG_MAGIC
    saved = json.loads(js.read_text())
    assert saved["stats"]["n_scenes"] == 2 and saved["compare"]["n_scenes"] == 1
    assert saved["scannet_bbox_diagonal"]["median"] == 7.791
    args = parser.parse_args(["stats", str(tmp_path / "nope"), "--out", str(tmp_path / "x.png")])
    assert main_stats(args) == 1 and "nope does not exist" in capsys.readouterr().err
    args = parser.parse_args(["stats", str(tmp_path / "mine"), "--json", str(tmp_path / "j.json"), "--out",
                              str(tmp_path / "p.png")])  # fmt: skip
    assert main_stats(args) == 0 and (tmp_path / "j.json").exists() and (tmp_path / "p.png").exists()


def test_stats_leave_out_scenes_of_older_runs(tmp_path: Path) -> None:
    from pcdag.graphs.cloud import PointCloud
    from pcdag.runtime.store import SceneStore
    from pcdag.stats import store_stats

    store = SceneStore(tmp_path / "s")
    for sid in ("new", "old"):
        coord = np.random.default_rng(0).random((50, 3)).astype(np.float32)
        store.write(sid, PointCloud({"coord": coord}), key=sid, split="train", room=sid)
    store.write_manifest({"other_scenes": ["old"]})  # what the offline run records for a stale scene
    assert [s["id"] for s in store_stats(tmp_path / "s")["scenes"]] == ["new"]


def test_scale_provenance_per_store(tmp_path: Path) -> None:
    """Counts of drawn / metric / ... scenes and the factors' range, from each scene's report."""
    store = SceneStore(tmp_path / "s")
    scales = [{"units": "drawn", "factor": 2.5, "diagonal": 7.0}, {"units": "drawn", "factor": 0.5, "diagonal": 9.0},
              {"units": "metric", "from": "depth"}, None]  # fmt: skip
    for i, scale in enumerate(scales):
        room = make_room(np.random.default_rng(i), n_points=200)
        report = {} if scale is None else {"scale": scale}
        store.write(f"r{i}", PointCloud(room), key="k", split="train", room=f"r{i}", report=report)
    stats = store_stats(tmp_path / "s")
    counts = {"drawn": 2, "metric": 1, "unrecorded": 1}
    assert stats["scale"] == {"counts": counts, "factor_range": {"drawn": [0.5, 2.5]}}
    assert [s["scale"] for s in stats["scenes"]] == ["drawn", "drawn", "metric", "unrecorded"]
    assert "scale (s): 2 drawn (factor 0.5-2.5), 1 metric, 1 unrecorded" in format_table(stats).splitlines()
