"""`pcdag preprocess graphs/roomtours.yaml` on a folder of generated room videos, on two Dask workers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from pcdag.cli import main
from pcdag.datasets.roomvideo import write_video_folder
from pcdag.datasets.video import read_cameras
from pcdag.runtime.store import SceneStore

pytestmark = pytest.mark.slow


def angle_deg(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.degrees(np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1.0, 1.0))))


GRAPH = Path(__file__).resolve().parents[1] / "graphs" / "roomtours.yaml"
# generated videos are seconds long, not minutes: the durations of the splitting rules scale down with them
SHORT = ["videos.skip_seconds=0", "videos.fps=0", "split.label_fps=0", "split.min_seconds=2",
         "split.min_segment_seconds=2", "split.min_indoor_seconds=2", "split.merge_run_seconds=0.5",
         "recon.max_frames=40"]  # fmt: skip


def test_videos_become_aligned_scenes_in_a_store(tmp_path: Path, capsys) -> None:
    videos, store = tmp_path / "videos", tmp_path / "store"
    write_video_folder(videos, 2, seed=0, n_rooms=2, n_frames=64)  # two rooms per video, a hard cut between
    (videos / "video_009.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    argv = ["preprocess", str(GRAPH), "--quiet", "--workers", "2", "--set", f"videos.root={videos}",
            "--set", f"store.path={store}"] + [a for s in SHORT for a in ("--set", s)]  # fmt: skip

    assert main(argv) == 3  # the broken video is quarantined, the others complete
    out, err = capsys.readouterr()
    assert re.search(r"5 scenes: 4 done, 0 skipped, 1 failed", out), out
    assert "1 of 5 scenes quarantined; the others are in the store" in err
    assert re.search(r"time: videos [\d.]+ s .*split .*recon .*write .*cluster", out), out  # decoding timed
    assert "failed video_009" in out and "video_009.mp4" in out
    s = SceneStore(store)
    ids = [e.id for e in s.entries()]
    assert ids == ["video_000/scene00", "video_000/scene01", "video_001/scene00", "video_001/scene01"]
    for scene in ids:
        meta = json.loads((s.scene_dir(scene) / "pcdag.json").read_text())
        report = meta["report"]
        assert report["Reconstruct"]["backend"] == "sfm" and report["Reconstruct"]["frames_registered"] >= 15
        recon = report["Reconstruct"]  # the graph's dense step: MVS on the SfM cameras, denser than SfM's points
        assert recon["dense"] == "mvs" and recon["mvs_points_after_fusion"] > recon["sparse_points"] > 0
        assert report["AlignZUp"]["plane_found"] and report["SplitScenes"]["kept"] == 2
        assert 2.835 <= report["AlignScale"]["diagonal_after"] <= 15.2  # the ScanNet range the paper draws from
        assert report["scale"]["units"] == "drawn" and report["scale"]["before"]["units"] == "arbitrary"  # SfM
        assert set(meta["fields"]) == {"coord", "color", "normal"} and meta["n_points"] > 500
        assert set(report["seconds"]) >= {"videos", "split", "recon", "zup", "normals", "validate"}
        split = report["SplitScenes"]
        assert split["seconds"] < split["video_seconds"] and split["seconds"] == pytest.approx(
            split["segment"][1] - split["segment"][0], abs=1e-3
        )  # each room's own length
    assert (store / "stats.png").stat().st_size > 10_000 and json.loads((store / "stats.json").read_text())
    assert json.loads((store / "stats.json").read_text())["scale"]["counts"] == {"drawn": 4}

    assert main(argv) == 3  # resumable: the videos that were done are skipped whole
    assert re.search(r"5 scenes: 0 done, 4 skipped, 1 failed", capsys.readouterr().out)

    # the store pre-trains: LAM3C's tiny preset, two steps
    train = ["train", str(GRAPH.with_name("lam3c.yaml")), "--preset", "tiny", "--quiet", "--stop-after", "2",
             "--out", str(tmp_path / "run"), "--set", f"store.path={store}",
             "--set", "settings.train.workers=0"]  # fmt: skip
    assert main(train) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["unmask/pairs"] > 0 and r["loss"] > 0 for r in records)


def test_one_room_video_becomes_one_upright_dense_scene(tmp_path: Path, capsys) -> None:
    """One generated room, the whole of roomtours.yaml with its defaults (SfM without known cameras, then dense
    multi-view stereo): one scene, upright, dense. Gravity is checked through the cameras: the true mean image-up of
    the rendered cameras is a° from the room's up and the output's (AlignZUp turns it with the scene) is b° from +z,
    so the output's +z is within a + b of the true up (the similarity from the room to the output keeps angles)."""
    videos, store = tmp_path / "videos", tmp_path / "store"
    write_video_folder(videos, 1, seed=3, n_rooms=1, n_frames=48)
    argv = ["preprocess", str(GRAPH), "--quiet", "--set", f"videos.root={videos}",
            "--set", f"store.path={store}"] + [a for s in SHORT for a in ("--set", s)]  # fmt: skip
    assert main(argv) == 0
    assert re.search(r"1 scenes: 1 done, 0 skipped, 0 failed", capsys.readouterr().out)
    s = SceneStore(store)
    (entry,) = s.entries()
    meta = json.loads((s.scene_dir(entry.id) / "pcdag.json").read_text())
    report = meta["report"]
    recon = report["Reconstruct"]
    assert recon["dense"] == "mvs" and recon["mvs_points_after_fusion"] > 10 * recon["sparse_points"]  # not sparse
    cameras = read_cameras(videos / "video_000.mp4")
    true_up = -cameras["poses"][:, :3, 1].mean(axis=0)  # mean of the cameras' image-up (-y) axes, room frame
    a = angle_deg(true_up, [0.0, 0.0, 1.0])
    zup = report["AlignZUp"]
    b = angle_deg(np.asarray(zup["rotation"]) @ zup["camera_up"], [0.0, 0.0, 1.0])
    assert zup["gravity"] == "camera prior + plane" and a + b < 3.0, (a, b)
