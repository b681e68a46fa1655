"""Scene sources on the real data in ``../shared/data``: ScanNet, S3DIS, 7-Scenes; PLY round trips; corrupt files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pcdag.datasets import rgbd, s3dis
from pcdag.datasets.ply import write_ply
from pcdag.datasets.synthetic import write_scannet_layout
from pcdag.graphs import registry
from pcdag.graphs.params import ParamError
from pcdag.graphs.ports import RGBD_FRAMES
from pcdag.nodes.sources.ply import PLYSource
from pcdag.nodes.sources.rgbd_sequence import RGBDSequenceSource
from pcdag.nodes.sources.s3dis import S3DISSource
from pcdag.nodes.sources.scannet import ScanNetSource


@pytest.fixture(scope="module")
def scannet_root(shared_data: Path) -> Path:
    return shared_data / "scannet-mini"


def copy_scan(src: Path, dst: Path) -> Path:
    """A writable copy of one scan (outside the repo) to corrupt."""
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------------------------------ registry


def test_sources_are_registered():
    for cls in (ScanNetSource, S3DISSource, PLYSource, RGBDSequenceSource):
        assert registry.get(cls.__name__) is cls
    assert registry.get("SyntheticSource") is not None


# ------------------------------------------------------------------------------------------------ ScanNet


def test_scannet_splits_by_room(scannet_root):
    refs = ScanNetSource(root=str(scannet_root), splits=["train", "val"]).scenes()
    assert len(refs) == 17
    by_split = {s: [r for r in refs if r.split == s] for s in ("train", "val")}
    assert len(by_split["train"]) == 13 and len(by_split["val"]) == 4
    train_rooms = {r.room for r in by_split["train"]}
    val_rooms = {r.room for r in by_split["val"]}
    assert train_rooms == {f"scene{i:04d}" for i in range(6)}
    assert val_rooms == {"scene0006", "scene0007"}
    assert not train_rooms & val_rooms
    assert all(r.id.startswith(r.room + "_") for r in refs)
    assert [r.id for r in ScanNetSource(root=str(scannet_root)).scenes()] == [r.id for r in by_split["train"]]


def test_scannet_load_fields_and_dtypes(scannet_root):
    src = ScanNetSource(root=str(scannet_root), splits=["val"])
    ref = src.scenes()[0]
    cloud = src.load(ref)
    assert cloud.fields == src.provides() == {"coord", "color", "segment", "instance"}
    assert cloud.meta == {"scene": ref.id, "split": "val", "room": ref.room}
    assert cloud["coord"].dtype == np.float32 and cloud["coord"].shape == (50000, 3)
    assert cloud["color"].dtype == np.uint8 and cloud["color"].shape == (50000, 3)
    assert cloud["segment"].dtype.kind == "i" and cloud["instance"].dtype == np.int32
    seg = cloud["segment"]
    assert seg.min() >= -1 and seg.max() <= 19 and (seg >= 0).mean() > 0.5
    assert ref.fingerprint() and "missing" not in ref.fingerprint()


def test_scannet_segment40_and_field_choice(scannet_root):
    src = ScanNetSource(root=str(scannet_root), labels="segment40", fields=["segment"])
    cloud = src.load(src.scenes()[0])
    assert cloud.fields == {"coord", "segment"} == src.provides()
    seg = cloud["segment"]
    assert seg.min() >= -1 and seg.max() <= 40 and seg.max() > 19


def test_scannet_missing_normal_file_is_named(scannet_root):
    src = ScanNetSource(root=str(scannet_root), fields=["normal"])
    assert src.provides() == {"coord", "normal"}
    with pytest.raises(FileNotFoundError, match="normal.npy"):
        src.load(src.scenes()[0])


def test_scannet_missing_root_or_split(scannet_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ScanNetSource(root=str(tmp_path / "nowhere")).scenes()
    with pytest.raises(FileNotFoundError, match=r"test.*found: \['train', 'val'\]"):
        ScanNetSource(root=str(scannet_root), splits=["test"]).scenes()
    with pytest.raises(ParamError, match="splits"):
        ScanNetSource(root=str(scannet_root), splits=["training"])
    with pytest.raises(ParamError, match="labels"):
        ScanNetSource(root=str(scannet_root), labels="segment200")


def test_scannet_room_in_two_splits_is_refused(tmp_path):
    write_scannet_layout(tmp_path, n_rooms=2, scans_per_room=2, n_points=300, seed=1, val_rooms=1)
    (tmp_path / "val" / "scene0000_01").parent.mkdir(exist_ok=True)
    shutil.move(tmp_path / "train" / "scene0000_01", tmp_path / "val" / "scene0000_01")
    with pytest.raises(ValueError, match="room 'scene0000'"):
        ScanNetSource(root=str(tmp_path)).scenes()  # even when only train is asked for


@pytest.mark.parametrize(
    "file, corrupt, message",
    [
        ("coord.npy", lambda p: p.write_bytes(p.read_bytes()[:500]), "not a readable .npy"),
        ("coord.npy", lambda p: p.write_bytes(b"not numpy at all"), "not a readable .npy"),
        ("coord.npy", lambda p: np.save(p, np.full((50000, 3), np.nan, np.float32)), "NaN"),
        ("coord.npy", lambda p: np.save(p, np.zeros((0, 3), np.float32)), "no points"),
        ("coord.npy", lambda p: np.save(p, np.zeros((50000, 2), np.float32)), r"shape \[50000, 2\]"),
        ("color.npy", lambda p: np.save(p, np.zeros((50000, 3), np.float32)), "dtype float32, expected uint8"),
        ("segment20.npy", lambda p: np.save(p, np.zeros(50000, np.float32)), "dtype float32"),
        ("instance.npy", lambda p: np.save(p, np.zeros(49999, np.int32)), "49999 rows"),
    ],
)
def test_scannet_corrupt_files_are_named(scannet_root, tmp_path, file, corrupt, message):
    scan = copy_scan(scannet_root / "train" / "scene0000_00", tmp_path / "train" / "scene0000_00")
    corrupt(scan / file)
    src = ScanNetSource(root=str(tmp_path))
    with pytest.raises(ValueError, match=message) as err:
        src.load(src.scenes()[0])
    assert str(scan / file) in str(err.value)


def test_scannet_float64_coords_are_converted(scannet_root, tmp_path):
    scan = copy_scan(scannet_root / "train" / "scene0001_00", tmp_path / "train" / "scene0001_00")
    coord = np.load(scan / "coord.npy")
    np.save(scan / "coord.npy", coord.astype(np.float64))
    src = ScanNetSource(root=str(tmp_path))
    cloud = src.load(src.scenes()[0])
    assert cloud["coord"].dtype == np.float32 and np.array_equal(cloud["coord"], coord)


# ------------------------------------------------------------------------------------------------ S3DIS


def test_s3dis_rooms_and_area_splits(shared_data):
    root = str(shared_data / "s3dis-mini")
    refs = S3DISSource(root=root, splits=["train", "val"]).scenes()
    assert {(r.id, r.split) for r in refs} == {
        ("Area_1/conferenceRoom_1", "train"),
        ("Area_1/hallway_1", "train"),
        ("Area_5/conferenceRoom_1", "val"),
        ("Area_5/copyRoom_1", "val"),
    }
    assert all(r.room == r.id for r in refs)
    swapped = S3DISSource(root=root, splits=["val"], val_areas=[1]).scenes()
    assert {r.id.split("/")[0] for r in swapped} == {"Area_1"}
    with pytest.raises(ParamError, match="val_areas"):
        S3DISSource(root=root, val_areas=[7])


def test_s3dis_classes_and_instances(shared_data):
    src = S3DISSource(root=str(shared_data / "s3dis-mini"), splits=["val"])
    ref = next(r for r in src.scenes() if r.id == "Area_5/conferenceRoom_1")
    cloud = src.load(ref)
    assert cloud.fields == src.provides()
    assert cloud["coord"].dtype == np.float32 and cloud["color"].dtype == np.uint8
    files = [Path(p) for p in ref.paths]
    assert len(np.unique(cloud["instance"])) == len(files)
    for i, f in enumerate(files):  # every file is one instance with its class
        mask = cloud["instance"] == i
        cls = f.stem.rsplit("_", 1)[0]
        assert set(np.unique(cloud["segment"][mask])) == {s3dis.CLASSES.index(cls)}
        first = np.array(f.open().readline().split(), np.float32)
        np.testing.assert_allclose(cloud["coord"][mask][0], first[:3])
        np.testing.assert_array_equal(cloud["color"][mask][0], first[3:])
    assert s3dis.CLASSES[cloud["segment"].max()] in {"board", "clutter", "sofa", "table", "chair"}


def test_s3dis_unknown_class_and_bad_lines(tmp_path):
    ann = tmp_path / "Area_2" / "stairs_room" / "Annotations"
    ann.mkdir(parents=True)
    (ann / "stairs_1.txt").write_text("0 0 0 10 20 30\n1 0 0 10 20 30\n")
    (ann / "wall_1.txt").write_text("0 1 0 1 2 3\n")
    src = S3DISSource(root=str(tmp_path))
    cloud = src.load(src.scenes()[0])
    assert cloud["segment"].tolist() == [-1, -1, s3dis.CLASSES.index("wall")]
    assert cloud["instance"].tolist() == [0, 0, 1]
    (ann / "wall_1.txt").write_text("0 1 0 1 2\n")
    with pytest.raises(ValueError, match="wall_1.txt"):
        src.load(src.scenes()[0])
    (ann / "wall_1.txt").write_text("0 1 0 1 2 x\n")
    with pytest.raises(ValueError, match="wall_1.txt"):
        src.load(src.scenes()[0])
    (ann / "wall_1.txt").write_text("0 1 0 1 2 300\n")
    with pytest.raises(ValueError, match="wall_1.txt.*0..255"):
        src.load(src.scenes()[0])
    with pytest.raises(ValueError, match="split"):
        S3DISSource(root=str(tmp_path), splits=["val"]).scenes()  # no area 5 here


# ------------------------------------------------------------------------------------------------ 7-Scenes


def test_rgbd_sequence_lists_300_frames(shared_data):
    src = RGBDSequenceSource(root=str(shared_data / "rgbd-7scenes"))
    (ref,) = src.scenes()
    assert ref.split == "train" and ref.room == "rgbd-7scenes"
    assert len(ref.paths) == 1 + 3 * 300  # intrinsics + colour, depth, pose per frame
    assert src.outputs["frames"].type == RGBD_FRAMES and "cloud" not in src.outputs
    assert src.provides() == frozenset() and src.fields().writes == frozenset()


def test_rgbd_depth_in_metres_and_poses(shared_data):
    root = shared_data / "rgbd-7scenes"
    src = RGBDSequenceSource(root=str(root), frame_step=15)
    frames = src.load(src.scenes()[0])
    assert len(frames) == 20 and frames.frame_ids[:2] == ["frame-000000", "frame-000015"]
    assert frames.colors.shape == (20, 480, 640, 3) and frames.colors.dtype == np.uint8
    assert frames.depths.dtype == np.float32 and frames.poses.dtype == np.float32
    np.testing.assert_array_equal(frames.poses[:, 3], np.tile([0, 0, 0, 1], (20, 1)))
    np.testing.assert_allclose(frames.intrinsics, [[585, 0, 320], [0, 585, 240], [0, 0, 1]])
    valid = frames.depths[frames.depths > 0]
    assert valid.min() >= 0.3 and valid.max() <= 6.0 and valid.size > 0.5 * frames.depths.size
    raw = np.array(Image.open(root / "frame-000015.depth.png")).astype(np.int64)
    invalid = (raw == 0) | (raw == 65535)
    assert invalid.any()
    assert (frames.depths[1][invalid] == 0).all()
    np.testing.assert_allclose(frames.depths[1][~invalid], raw[~invalid] / 1000.0, rtol=1e-6)
    assert frames.meta["scene"] == "rgbd-7scenes" and frames.meta["split"] == "train"


def test_rgbd_max_frames_missing_pose_and_default_intrinsics(shared_data, tmp_path):
    seq = tmp_path / "seq-01"
    seq.mkdir()
    for i in range(3):
        for kind in ("color.jpg", "depth.png", "pose.txt"):
            shutil.copy(shared_data / "rgbd-7scenes" / f"frame-{i:06d}.{kind}", seq)
    frames = RGBDSequenceSource(root=str(tmp_path), max_frames=2).load(
        RGBDSequenceSource(root=str(tmp_path)).scenes()[0]
    )
    assert frames.frame_ids == ["frame-000000", "frame-000001"]
    assert "default" in frames.meta["intrinsics"]
    np.testing.assert_allclose(frames.intrinsics, [[585, 0, 320], [0, 585, 240], [0, 0, 1]])
    (seq / "frame-000002.pose.txt").write_text("1 0 0\n0 1 0\n")
    with pytest.raises(ValueError, match="frame-000002.pose.txt"):
        RGBDSequenceSource(root=str(seq)).load(RGBDSequenceSource(root=str(seq)).scenes()[0])
    (seq / "frame-000002.pose.txt").unlink()
    with pytest.raises(FileNotFoundError, match="frame-000002.pose.txt"):
        RGBDSequenceSource(root=str(seq)).scenes()


def test_rgbd_depth_png_invalid_values_and_scale(tmp_path):
    raw = np.array([[0, 65535, 1234], [500, 65534, 1]], np.uint16)
    Image.fromarray(raw).save(tmp_path / "d.png")
    with Image.open(tmp_path / "d.png") as im:
        assert im.mode in ("I;16", "I")
    depth = rgbd.read_depth(tmp_path / "d.png", depth_scale=1000.0)
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth, [[0, 0, 1.234], [0.5, 65.534, 0.001]], rtol=1e-6)
    np.testing.assert_allclose(rgbd.read_depth(tmp_path / "d.png", depth_scale=5000.0)[0, 2], 1234 / 5000, rtol=1e-6)
    Image.fromarray(np.zeros((2, 3), np.uint8)).save(tmp_path / "d8.png")
    with pytest.raises(ValueError, match="d8.png.*16-bit"):
        rgbd.read_depth(tmp_path / "d8.png", 1000.0)


# ------------------------------------------------------------------------------------------------ PLY


def test_ply_round_trip_of_a_real_scan(scannet_root, tmp_path):
    scan = scannet_root / "train" / "scene0002_00"
    files = {"coord": "coord", "color": "color", "segment": "segment20", "instance": "instance"}
    arrays = {name: np.load(scan / f"{file}.npy") for name, file in files.items()}
    normal = np.random.default_rng(0).normal(size=(len(arrays["coord"]), 3)).astype(np.float32)
    arrays["normal"] = normal / np.linalg.norm(normal, axis=1, keepdims=True)
    write_ply(tmp_path / "val" / "scene0002_00.ply", arrays)
    write_ply(tmp_path / "scene0001_00.ply", {"coord": arrays["coord"][:10]})
    assert not list(tmp_path.rglob("*.tmp"))
    src = PLYSource(root=str(tmp_path), splits=["val"], fields=["color", "normal", "segment", "instance"])
    (ref,) = src.scenes()
    assert (ref.id, ref.split, ref.room) == ("val/scene0002_00", "val", "scene0002_00")
    cloud = src.load(ref)
    assert cloud.fields == src.provides()
    for name, arr in arrays.items():
        np.testing.assert_array_equal(cloud[name], arr, err_msg=name)
    assert cloud["instance"].dtype == np.int32 and cloud["segment"].dtype.kind == "i"
    train = PLYSource(root=str(tmp_path), fields=[])
    assert [r.id for r in train.scenes()] == ["scene0001_00"] and len(train.load(train.scenes()[0])) == 10


def test_ply_missing_property_and_corrupt_files(tmp_path):
    coord = np.random.default_rng(1).random((50, 3)).astype(np.float32)
    write_ply(tmp_path / "a.ply", {"coord": coord})
    src = PLYSource(root=str(tmp_path))  # default fields: color
    with pytest.raises(ValueError, match=r"a\.ply.*red/green/blue.*x, y, z"):
        src.load(src.scenes()[0])
    good = (tmp_path / "a.ply").read_bytes()
    (tmp_path / "a.ply").write_bytes(good[:-100])
    with pytest.raises(ValueError, match=r"a\.ply: unreadable or corrupt"):
        PLYSource(root=str(tmp_path), fields=[]).load(src.scenes()[0])
    (tmp_path / "a.ply").write_text("this is not a ply file\n")
    with pytest.raises(ValueError, match=r"a\.ply: unreadable or corrupt"):
        PLYSource(root=str(tmp_path), fields=[]).load(src.scenes()[0])
    write_ply(tmp_path / "a.ply", {"coord": coord, "color": coord * 255})  # float colours
    with pytest.raises(ValueError, match=r"a\.ply.*float32.*'color'"):
        src.load(src.scenes()[0])
    write_ply(tmp_path / "a.ply", {"coord": np.where(coord > 0.5, np.nan, coord)})
    with pytest.raises(ValueError, match=r"a\.ply.*NaN"):
        PLYSource(root=str(tmp_path), fields=[]).load(src.scenes()[0])


def test_ply_same_room_in_two_splits(tmp_path):
    coord = np.zeros((3, 3), np.float32)
    write_ply(tmp_path / "train" / "room.ply", {"coord": coord})
    write_ply(tmp_path / "val" / "room.ply", {"coord": coord})
    with pytest.raises(ValueError, match="room 'room'"):
        PLYSource(root=str(tmp_path)).scenes()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .ply files"):
        PLYSource(root=str(tmp_path / "empty")).scenes()
