"""The ``sfm`` reconstruction backend: incremental structure from motion with pycolmap (CPU only).

Evenly spaced frames (at most ``params.max_frames``) are written as PNG images into a temporary folder, shrunk so
the longest side is at most ``params.sfm_max_image_size``; then SIFT features (one camera shared by all frames),
sequential matching over ``params.sfm_overlap`` neighbours, and incremental mapping. The largest model wins; its
sparse points (coloured by COLMAP from the images) are the cloud.

Cameras: with ``params.use_known_cameras`` and ``frames.intrinsics`` the camera is a fixed PINHOLE with those
intrinsics (not refined); otherwise a SIMPLE_RADIAL camera is estimated. Known poses are not imposed during
mapping: the finished model is moved onto them by the similarity transform (Umeyama) that best maps the estimated
camera centres to the known ones, which fixes scale and world frame (the report gives the residual).

Conventions: poses camera-to-world in OpenCV axes (as COLMAP's); intrinsics in OpenCV pixel coordinates (pixel
centres at integers) for the input frames' full resolution. COLMAP puts pixel centres at +0.5; converted here.
Dense reconstruction is not done: COLMAP's patch-match stereo needs CUDA.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from plyfile import PlyData

from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.frames import Frames
from pcdag.nodes.reconstruction.parts.base import Reconstruction
from pcdag.nodes.reconstruction.parts.chunks import evenly_spaced, transform_points, transform_poses, umeyama

MIN_REGISTERED = 3
# Chunking hooks (see chunks.py): what stays in memory per frame is its SIFT features and database rows, about
# 2.5 MB for a 640x480 image (8192 features of 128 + 24 bytes); images themselves are read one at a time.
BYTES_PER_PIXEL = 8.0


def select_frames(count: int, params: Any) -> np.ndarray:
    """Positions of the frames SfM uses: at most ``params.max_frames``, evenly spaced."""
    return evenly_spaced(count, params.max_frames)


def frame_pixels(height: int, width: int, params: Any) -> int:
    """Pixels of a frame after shrinking its longest side to ``params.sfm_max_image_size``."""
    scale = min(1.0, params.sfm_max_image_size / max(height, width))
    return round(height * scale) * round(width * scale)


def _pycolmap() -> Any:
    try:
        import pycolmap
    except ImportError as exc:
        raise ImportError("the 'sfm' reconstruction backend needs pycolmap: pip install 'pcdag[sfm]'") from exc
    return pycolmap


@contextlib.contextmanager
def _quiet(pycolmap: Any) -> Iterator[None]:
    """COLMAP logs warnings and errors only while it runs (its INFO log is thousands of lines per scene)."""
    old = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = 1
    try:
        yield
    finally:
        pycolmap.logging.minloglevel = old


def threads() -> int:
    """COLMAP threads: 1 by default, which makes SfM bit-reproducible for a given seed (with several threads,
    extraction, matching and mapping vary from run to run: measured 10 or 15 of 16 frames registered, 4311-4414
    points) — Dask already runs scenes in parallel. ``PCDAG_THREADS=N`` trades reproducibility for speed."""
    from pcdag.ops.kdtree import tree_workers

    return max(1, tree_workers())


def _write_images(frames: Frames, index: np.ndarray, folder: Path, max_side: int) -> tuple[list[str], np.ndarray]:
    """Frames ``index`` as PNG files in ``folder`` (longest side ≤ ``max_side``); names and the (x, y) scale."""
    h, w = frames.size
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    names = []
    for i in index:
        im = Image.fromarray(frames.colors[i])
        if scale < 1.0:
            im = im.resize(size, Image.Resampling.LANCZOS)
        names.append(f"{i:06d}.png")
        im.save(folder / names[-1])
    return names, np.array([size[0] / w, size[1] / h])


def _camera_options(pycolmap: Any, frames: Frames, params: Any, scale: np.ndarray) -> tuple[Any, bool]:
    """Image reader options: a fixed PINHOLE of the known intrinsics, or SIMPLE_RADIAL to estimate."""
    reader = pycolmap.ImageReaderOptions()
    known = bool(params.use_known_cameras and frames.intrinsics is not None)
    if known:
        k = frames.intrinsics.astype(np.float64)
        fx, fy = k[0, 0] * scale[0], k[1, 1] * scale[1]
        cx, cy = (k[0, 2] + 0.5) * scale[0], (k[1, 2] + 0.5) * scale[1]  # OpenCV → COLMAP pixel centres
        reader.camera_model = "PINHOLE"
        reader.camera_params = f"{fx},{fy},{cx},{cy}"
    else:
        reader.camera_model = "SIMPLE_RADIAL"
    return reader, known


def _run_colmap(pycolmap: Any, tmp: Path, names: list[str], reader: Any, overlap: int, fixed: bool, seed: int):
    """Features, sequential matching and mapping; the reconstructions found (possibly none)."""
    n = threads()
    db, images, out = tmp / "database.db", tmp / "images", tmp / "sparse"
    out.mkdir()
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads, extraction.use_gpu = n, False
    pycolmap.extract_features(
        db,
        images,
        image_names=names,
        camera_mode=pycolmap.CameraMode.SINGLE,
        reader_options=reader,
        extraction_options=extraction,
        device=pycolmap.Device.cpu,
    )
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads, matching.use_gpu = n, False
    pairing = pycolmap.SequentialPairingOptions()
    pairing.overlap, pairing.num_threads = overlap, n
    pycolmap.match_sequential(db, matching_options=matching, pairing_options=pairing, device=pycolmap.Device.cpu)
    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.num_threads, mapping.random_seed = n, seed
    mapping.mapper.num_threads, mapping.mapper.random_seed = n, seed
    if fixed:
        mapping.ba_refine_focal_length = mapping.ba_refine_extra_params = mapping.ba_refine_principal_point = False
    return list(pycolmap.incremental_mapping(db, images, out, options=mapping).values())


def _poses(rec: Any, n_frames: int) -> np.ndarray:
    """Camera-to-world [F, 4, 4] float64 of every input frame (image name = frame index); NaN if unregistered."""
    poses = np.full((n_frames, 4, 4), np.nan)
    for image in rec.images.values():
        if image.has_pose:
            w2c = np.eye(4)
            w2c[:3] = image.cam_from_world().matrix()  # [3, 4]
            poses[int(Path(image.name).stem)] = np.linalg.inv(w2c)
    return poses


def _intrinsics(camera: Any, scale: np.ndarray) -> np.ndarray:
    """The camera's 3x3 in OpenCV pixel coordinates at the input frames' resolution."""
    k = np.array(camera.calibration_matrix(), np.float64)
    k[:2] /= scale[:, None]
    k[:2, 2] -= 0.5  # COLMAP → OpenCV pixel centres
    return k


def _points(rec: Any, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Sparse points: coord [N, 3] float32 and color [N, 3] uint8 (through COLMAP's PLY export: no point loop)."""
    rec.export_PLY(path)
    vertex = PlyData.read(path)["vertex"].data
    coord = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float32)  # [N, 3]
    color = np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1).astype(np.uint8)  # [N, 3]
    return coord, color


def _align_to_known(coord: np.ndarray, poses: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Move points and poses onto the known camera centres by the least-squares similarity (Umeyama) fitted on
    the registered frames; also returns report facts (scale, RMS residual of the centres in metres)."""
    ok = np.isfinite(poses).all(axis=(1, 2)) & np.isfinite(known).all(axis=(1, 2))  # registered and known
    src, dst = poses[ok, :3, 3], known[ok, :3, 3].astype(np.float64)
    try:
        s, r, t = umeyama(src, dst)
    except ValueError as exc:
        raise ValueError(f"sfm: cannot align the model to the known camera poses ({exc})") from exc
    residual = np.linalg.norm(transform_points(src, s, r, t) - dst, axis=1)  # [R]
    facts = {"known_pose_alignment_rms_m": float(np.sqrt(np.mean(residual**2))), "known_pose_alignment_scale": s}
    return transform_points(coord, s, r, t), transform_poses(poses, s, r, t), facts


def reconstruct(frames: Frames, params: Any, rng: np.random.Generator) -> Reconstruction:
    """Sparse SfM of ``frames``; ``ValueError`` with the reason when no model with ≥ 3 frames comes out."""
    where = f"sfm on scene {frames.meta.get('scene', '?')!r}"
    pycolmap = _pycolmap()
    index = select_frames(len(frames), params)
    seed = int(rng.integers(0, 2**31 - 1))
    with tempfile.TemporaryDirectory(prefix="pcdag-sfm-") as tmp_name, _quiet(pycolmap):
        tmp = Path(tmp_name)
        (tmp / "images").mkdir()
        names, scale = _write_images(frames, index, tmp / "images", params.sfm_max_image_size)
        reader, fixed = _camera_options(pycolmap, frames, params, scale)
        models = _run_colmap(pycolmap, tmp, names, reader, params.sfm_overlap, fixed, seed)
        if not models:
            raise ValueError(f"{where}: no model from {len(index)} frames (too few feature matches between frames)")
        rec = max(models, key=lambda r: (r.num_reg_images(), r.num_points3D()))
        registered = rec.num_reg_images()
        if registered < MIN_REGISTERED or rec.num_points3D() == 0:
            raise ValueError(
                f"{where}: only {registered} of {len(index)} frames registered (at least {MIN_REGISTERED} needed)"
            )
        coord, color = _points(rec, tmp / "points.ply")
    poses = _poses(rec, len(frames))
    report: dict[str, Any] = {
        "frames_given": len(frames),
        "frames_used": len(index),
        "frames_registered": registered,
        "points": len(coord),
        "mean_reprojection_error_px": float(rec.compute_mean_reprojection_error()),
        "models": len(models),
        "camera": "known PINHOLE" if fixed else "estimated SIMPLE_RADIAL",
    }
    if params.use_known_cameras and frames.poses is not None:
        coord, poses, facts = _align_to_known(coord, poses, frames.poses)
        report.update(facts)
    camera = next(iter(rec.cameras.values()))
    cloud = PointCloud({"coord": coord, "color": color})
    return Reconstruction(cloud, poses, _intrinsics(camera, scale), report)
