"""The ``sfm`` reconstruction backend: structure from motion with pycolmap (CPU only).

Evenly spaced frames (at most ``params.max_frames``; with ``params.sfm_blur_drop`` > 0 minus the blurriest, see
``drop_blurry``) are written as PNG images into a temporary folder, shrunk so the longest side is at most
``params.sfm_max_image_size``; then SIFT features (one camera shared by all frames), matching (``sfm_matching``:
every pair for short clips, ``auto`` up to ``sfm_exhaustive_frames``; else sequential over ``sfm_overlap``
neighbours plus quadratic jumps i + 2^k), and incremental (COLMAP) or global (GLOMAP) mapping (``sfm_mapper``).
Every model found is listed in the report (frames, points); with ``sfm_models: merged`` the models that share
frames with the largest are moved into its world and united with it (``sfm_models.py``), with ``largest`` the
largest alone is kept. The kept models' sparse points (coloured by COLMAP from the images) are the cloud.
COLMAP's log goes to a file, never to the terminal; its warnings are counted and quoted in the report
(``colmap_log.py``).

Cameras: with ``params.use_known_cameras`` and ``frames.intrinsics`` the camera is a fixed PINHOLE with those
intrinsics (not refined); otherwise a SIMPLE_RADIAL camera is estimated, starting from a focal length of
``sfm_focal_prior`` x the longest side (COLMAP's default 1.2). Known poses are not imposed during mapping: the
finished model is moved onto them by the similarity transform (Umeyama) that best maps the estimated camera
centres to the known ones, which fixes scale and world frame (the report gives the residual).

Conventions: poses camera-to-world in OpenCV axes (as COLMAP's); intrinsics in OpenCV pixel coordinates (pixel
centres at integers) for the input frames' full resolution. COLMAP puts pixel centres at +0.5; converted here.
This backend gives sparse points only (COLMAP's patch-match stereo needs CUDA); ``Reconstruct``'s ``dense: mvs``
then runs pcdag's own plane-sweep stereo on the posed frames (``parts/mvs.py``).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from plyfile import PlyData

from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.frames import Frames
from pcdag.nodes.reconstruction.parts import sfm_models
from pcdag.nodes.reconstruction.parts.base import Reconstruction
from pcdag.nodes.reconstruction.parts.chunks import evenly_spaced, transform_points, transform_poses, umeyama
from pcdag.nodes.reconstruction.parts.colmap_log import colmap_log

MIN_REGISTERED = 3
BLUR_WINDOW = 9  # selected frames around a frame whose median sharpness it is compared with
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
        reader.default_focal_length_factor = params.sfm_focal_prior  # initial focal / longest side
    return reader, known


def _extract(pycolmap: Any, tmp: Path, names: list[str], reader: Any, n: int) -> None:
    """SIFT features of every image into ``tmp/database.db``, one camera shared by all frames."""
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads, extraction.use_gpu = n, False
    pycolmap.extract_features(
        tmp / "database.db",
        tmp / "images",
        image_names=names,
        camera_mode=pycolmap.CameraMode.SINGLE,
        reader_options=reader,
        extraction_options=extraction,
        device=pycolmap.Device.cpu,
    )


def matching_mode(params: Any, n_frames: int) -> str:
    """``sfm_matching``, with ``auto`` resolved: exhaustive up to ``sfm_exhaustive_frames`` frames, else sequential."""
    if params.sfm_matching != "auto":
        return params.sfm_matching
    return "exhaustive" if n_frames <= params.sfm_exhaustive_frames else "sequential"


def _match(pycolmap: Any, db: Path, mode: str, overlap: int, n: int) -> None:
    """Exhaustive matching (every pair), or sequential: ``overlap`` neighbours plus quadratic jumps (i + 2^k)."""
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads, matching.use_gpu = n, False
    if mode == "exhaustive":
        pycolmap.match_exhaustive(db, matching_options=matching, device=pycolmap.Device.cpu)
        return
    pairing = pycolmap.SequentialPairingOptions()
    pairing.overlap, pairing.quadratic_overlap, pairing.num_threads = overlap, True, n
    pycolmap.match_sequential(db, matching_options=matching, pairing_options=pairing, device=pycolmap.Device.cpu)


def _map(pycolmap: Any, tmp: Path, mapper: str, fixed: bool, seed: int, n: int) -> list:
    """Incremental (COLMAP) or global (GLOMAP) mapping; the models found, possibly none."""
    db, images, out = tmp / "database.db", tmp / "images", tmp / "sparse"
    out.mkdir()
    if mapper == "global":
        options = pycolmap.GlobalPipelineOptions()
        options.num_threads, options.random_seed = n, seed
        options.mapper.num_threads, options.mapper.random_seed = n, seed
        options.mapper.global_positioning.use_gpu = options.mapper.bundle_adjustment.ceres.use_gpu = False
        if fixed:
            ba = options.mapper.bundle_adjustment
            ba.refine_focal_length = ba.refine_extra_params = ba.refine_principal_point = False
        return list(pycolmap.global_mapping(db, images, out, options=options).values())
    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads, options.random_seed = n, seed
    options.mapper.num_threads, options.mapper.random_seed = n, seed
    if fixed:
        options.ba_refine_focal_length = options.ba_refine_extra_params = options.ba_refine_principal_point = False
    return list(pycolmap.incremental_mapping(db, images, out, options=options).values())


def _run_colmap(pycolmap: Any, tmp: Path, names: list[str], reader: Any, params: Any, fixed: bool, seed: int):
    """Features, matching and mapping; the models found (possibly none) and facts (modes, seconds per step)."""
    n, mode, clock = threads(), matching_mode(params, len(names)), time.perf_counter()
    _extract(pycolmap, tmp, names, reader, n)
    seconds = {"extract": time.perf_counter() - clock}
    _match(pycolmap, tmp / "database.db", mode, params.sfm_overlap, n)
    seconds["match"] = time.perf_counter() - clock - seconds["extract"]
    models = _map(pycolmap, tmp, params.sfm_mapper, fixed, seed, n)
    seconds["map"] = time.perf_counter() - clock - seconds["extract"] - seconds["match"]
    facts = {"matching": mode, "mapper": params.sfm_mapper, "sfm_seconds": {k: round(v, 2) for k, v in seconds.items()}}
    return models, facts


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


def sharpness(image: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of the grey image [H, W, 3] uint8: low for blurred frames."""
    g = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)  # [H, W]
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]  # [H-2, W-2]
    return float(lap.var())


def drop_blurry(colors: np.ndarray, index: np.ndarray, ratio: float) -> np.ndarray:
    """``index`` without the frames whose sharpness is below ``ratio`` x the median of the ``BLUR_WINDOW``
    selected frames around them (0 = keep all); never two neighbours in a row, so no gap grows by more than one."""
    if ratio <= 0 or len(index) < 3:
        return index
    s = np.array([sharpness(colors[i]) for i in index])  # [N]
    half = BLUR_WINDOW // 2
    local = np.array([np.median(s[max(0, k - half) : k + half + 1]) for k in range(len(s))])  # [N]
    keep = np.ones(len(index), bool)
    for k in range(1, len(index) - 1):  # the first and last frames stay: they bound the walk
        keep[k] = s[k] >= ratio * local[k] or not keep[k - 1]
    return index[keep]


def _choose(pycolmap: Any, models: list, mode: str) -> list[int]:
    """Positions of the models that make the cloud: the largest, or every one merged into it."""
    return [0] if mode == "largest" else sfm_models.merge_into_largest(pycolmap, models)


def reconstruct(frames: Frames, params: Any, rng: np.random.Generator) -> Reconstruction:
    """Sparse SfM of ``frames``; ``ValueError`` with the reason when no model with ≥ 3 frames comes out."""
    where = f"sfm on scene {frames.meta.get('scene', '?')!r}"
    pycolmap = _pycolmap()
    index = drop_blurry(frames.colors, select_frames(len(frames), params), params.sfm_blur_drop)
    seed = int(rng.integers(0, 2**31 - 1))
    with tempfile.TemporaryDirectory(prefix="pcdag-sfm-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "images").mkdir()
        names, scale = _write_images(frames, index, tmp / "images", params.sfm_max_image_size)
        reader, fixed = _camera_options(pycolmap, frames, params, scale)
        with colmap_log(pycolmap, tmp) as warnings:
            models, facts = _run_colmap(pycolmap, tmp, names, reader, params, fixed, seed)
            if not models:
                raise ValueError(f"{where}: no model from {len(index)} frames (too few feature matches between frames)")
            models = sfm_models.by_size(models)
            used = _choose(pycolmap, models, params.sfm_models)
            facts |= warnings()
        rec = models[0]
        registered = rec.num_reg_images()
        if registered < MIN_REGISTERED or rec.num_points3D() == 0:
            raise ValueError(
                f"{where}: only {registered} of {len(index)} frames registered (at least {MIN_REGISTERED} needed)"
            )
        coord, color = sfm_models.points_of(models, used, tmp, _points)
    poses = sfm_models.union_poses([_poses(models[i], len(frames)) for i in used])
    report: dict[str, Any] = {
        "frames_given": len(frames),
        "frames_used": len(index),
        "frames_registered": int(np.isfinite(poses).all(axis=(1, 2)).sum()),
        "points": len(coord),
        "mean_reprojection_error_px": float(rec.compute_mean_reprojection_error()),
        "models": sfm_models.model_facts(models, used),
        "sfm_models": params.sfm_models,
        "camera": "known PINHOLE" if fixed else "estimated SIMPLE_RADIAL",
        **facts,
    }
    if params.use_known_cameras and frames.poses is not None:
        coord, poses, facts = _align_to_known(coord, poses, frames.poses)
        report.update(facts)
    camera = next(iter(rec.cameras.values()))
    cloud = PointCloud({"coord": coord, "color": color})
    return Reconstruction(cloud, poses, _intrinsics(camera, scale), report)
