"""feedforward backend: a π³ / VGGT-style point-map network turns the frames into per-pixel 3D points in one pass.

The network is built by ``params.model = "package.module:factory"`` (a callable returning a ``torch.nn.Module``)
and, when ``params.weights`` is set, loaded from that local state-dict file with
``torch.load(path, map_location=device, weights_only=True)`` and ``load_state_dict(strict=True)``. pcdag never
downloads weights: a missing file is an error. (A ``.safetensors`` checkpoint must be converted to a state dict
first.) Loaded networks are cached per process, keyed by model, weights file and device.

Network contract
    input   images float32 ``[1, F, 3, H, W]`` in [0, 1], RGB, H and W multiples of ``patch_multiple``
    output  a dict with
            ``points``        ``[1, F, H, W, 3]`` per-pixel points in one frame for all views (world or first camera)
            ``conf``          ``[1, F, H, W]`` or ``[1, F, H, W, 1]``: logits; kept where sigmoid > threshold
            ``camera_poses``  optional ``[1, F, 4, 4]`` camera-to-world (OpenCV axes) in the frame of ``points``
            ``local_points``  optional ``[1, F, H, W, 3]`` points in each camera's frame (z = depth)

``pcdag.testing.standin:make_standin`` is a tiny randomly initialised network obeying this contract, for tests: a
plumbing check only, NOT a reconstruction model (its geometry has nothing to do with the images).

How real networks map onto it, as far as their papers and public examples show: π³ returns ``points``,
``local_points``, ``conf`` (with a trailing singleton axis) and ``camera_poses`` (camera-to-world) under these very
names, for images in [0, 1]; its outputs are scale-free (up to one unknown scale per forward pass), and the
reference post-processing keeps sigmoid(conf) > 0.1 and drops depth edges of ``local_points[..., 2]``. VGGT returns
``world_points`` (first camera = world), ``world_points_conf`` (a positive 1 + exp(x) confidence, not a logit),
``depth`` ``[.., 1]`` and an encoded pose from which world-to-camera extrinsics are decoded; a VGGT factory must
therefore wrap the model: ``points = world_points``, ``conf = log(world_points_conf - 1)`` (so that sigmoid(conf)
= 1 - 1/conf_vggt), ``camera_poses`` = inverse extrinsics, ``local_points`` = depth unprojected with its intrinsics.

Processing: at most ``max_frames`` evenly spaced frames (``select_frames``); each resized (bilinear, antialiased)
to ``network_size``: the pixel budget with both sides multiples of ``patch_multiple`` and the aspect ratio kept up to
that rounding. Pixels are kept when sigmoid(conf) > ``conf_threshold``, the depth (``local_points`` z, else the
distance to the camera centre when poses are returned; neither = no depth filtering) lies in
``[min_depth, max_depth]`` in the network's units, and the pixel is not on a depth edge (the rgbd rule). Colours come
from the resized frames; points are fused on ``voxel_size`` (network units). Without returned poses the poses are
NaN and chunk stitching relies on the per-pixel anchors (``Reconstruction.anchors``, see ``chunks.py``). Intrinsics: the
frames' when known, else fitted to ``local_points`` (least squares of u = fx x/z + cx, v = fy y/z + cy), else NaN.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Any

import numpy as np

from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.frames import Frames
from pcdag.nodes.reconstruction.parts.base import Reconstruction, torch_device
from pcdag.nodes.reconstruction.parts.chunks import VoxelFusion, evenly_spaced, sample_anchors
from pcdag.nodes.reconstruction.parts.rgbd import depth_edges

# Working memory per network input pixel, for chunk sizing. π³/VGGT-class networks (ViT-L encoder, 24-36
# alternating attention layers, DPT-style heads at full resolution, bf16) need on the order of 1 KiB per pixel:
# the paper's setting, 400 frames x 255,000 px on one 144 GB H200, is ~100 GB at this rate. Weights not included.
BYTES_PER_PIXEL = 1024.0


def select_frames(count: int, params: Any) -> np.ndarray:
    """Positions of the frames the network sees: at most ``max_frames``, evenly spaced."""
    return evenly_spaced(count, params.max_frames)


def network_size(height: int, width: int, budget: int, multiple: int) -> tuple[int, int]:
    """``(h, w)`` for the network: h·w ≤ ``budget``, both multiples of ``multiple``, aspect of ``height x width``
    kept up to rounding each side down to the multiple (frames may be scaled up as well as down)."""
    scale = np.sqrt(budget / (height * width))
    h = int(height * scale // multiple) * multiple
    w = int(width * scale // multiple) * multiple
    if h == 0 or w == 0:
        raise ValueError(
            f"pixel_budget={budget} px cannot hold a {width}x{height} frame with sides multiples of "
            f"patch_multiple={multiple}; raise pixel_budget or lower patch_multiple"
        )
    return h, w


def frame_pixels(height: int, width: int, params: Any) -> int:
    """Pixels per frame the network processes (for chunk sizing)."""
    h, w = network_size(height, width, params.pixel_budget, params.patch_multiple)
    return h * w


@functools.lru_cache(maxsize=2)
def _cached_network(spec: str, weights: str | None, stamp: tuple, device: str) -> Any:
    import torch

    module_name, sep, factory_name = spec.partition(":")
    if not sep or not module_name or not factory_name:
        raise ValueError(f"model = {spec!r} must be 'package.module:factory'")
    try:
        factory = getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"model = {spec!r}: cannot import the factory ({exc}); is its package installed?") from exc
    try:
        network = factory()
    except Exception as exc:  # whatever the user's factory raises, say which factory it was
        raise ValueError(f"model = {spec!r}: the factory failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(network, torch.nn.Module):
        raise TypeError(f"model = {spec!r} returned a {type(network).__name__}, expected a torch.nn.Module")
    if weights is not None:
        try:
            state = torch.load(weights, map_location=device, weights_only=True)
        except Exception as exc:  # unpickling refusals and corrupt files alike
            raise ValueError(f"{weights}: not a state dict torch.load(weights_only=True) can read ({exc})") from exc
        if not isinstance(state, dict):
            raise ValueError(f"{weights}: holds a {type(state).__name__}, expected a state dict (name -> tensor)")
        try:
            network.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{weights}: does not fit model {spec!r}: {exc}") from exc
    return network.to(device).eval()


def load_network(spec: str | None, weights: str | None, device: str) -> Any:
    """The network of ``spec`` on ``device``, with the state dict at ``weights`` (a local file) when given."""
    if not spec:
        raise ValueError("backend 'feedforward' needs model: 'package.module:factory' (e.g. a π³ wrapper)")
    stamp: tuple = ()
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"feedforward weights file {path} not found: weights must be supplied locally (pcdag never "
                "downloads them); set weights to a state-dict file on this machine"
            )
        weights, stamp = str(path), (path.stat().st_size, path.stat().st_mtime_ns)
    return _cached_network(spec, weights, stamp, device)


def _resize(colors: np.ndarray, h: int, w: int) -> Any:
    """Frames ``[F, H, W, 3]`` uint8 → float32 tensor ``[F, 3, h, w]`` in [0, 1] (bilinear, antialiased), in
    batches so that full-size float copies of long sequences never exist at once."""
    import torch
    import torch.nn.functional as nnf

    out = []
    for start in range(0, len(colors), 16):
        batch = torch.from_numpy(np.ascontiguousarray(colors[start : start + 16])).permute(0, 3, 1, 2).float() / 255
        out.append(nnf.interpolate(batch, size=(h, w), mode="bilinear", align_corners=False, antialias=True))
    return torch.cat(out).clamp_(0.0, 1.0)


def _infer(network: Any, images: Any, device: str, spec: str) -> dict[str, np.ndarray | None]:
    """Run the network once on ``images [F, 3, h, w]``; outputs as float32 numpy arrays checked against the
    contract (``camera_poses`` / ``local_points`` None when not returned)."""
    import contextlib

    import torch

    f, _, h, w = images.shape
    autocast = contextlib.nullcontext()
    if device.startswith("cuda"):
        autocast = torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    with torch.no_grad(), autocast:
        out = network(images[None].to(device))
    if not isinstance(out, dict):
        raise TypeError(f"model {spec!r} returned a {type(out).__name__}, expected a dict of tensors")
    shapes = {"points": (1, f, h, w, 3), "conf": (1, f, h, w), "camera_poses": (1, f, 4, 4)}
    shapes["local_points"] = shapes["points"]
    result: dict[str, np.ndarray | None] = {}
    for key, shape in shapes.items():
        value = out.get(key)
        if value is None:
            if key in ("points", "conf"):
                raise ValueError(f"model {spec!r} returned no {key!r} (outputs: {', '.join(map(str, out))})")
            result[key] = None
            continue
        array = value.detach().float().cpu().numpy()
        if key == "conf" and array.shape == (*shape, 1):
            array = array[..., 0]
        if array.shape != shape:
            raise ValueError(f"model {spec!r}: output {key!r} has shape {list(array.shape)}, expected {list(shape)}")
        result[key] = array[0]
    return result


def _depth(out: dict[str, np.ndarray | None]) -> np.ndarray | None:
    """Per-pixel depth ``[F, h, w]``: local z, else distance to the camera centre, else None."""
    if out["local_points"] is not None:
        return out["local_points"][..., 2]
    if out["camera_poses"] is not None:
        centres = out["camera_poses"][:, :3, 3]  # [F, 3]
        return np.linalg.norm(out["points"] - centres[:, None, None, :], axis=-1)
    return None


def _depth_source(out: dict[str, np.ndarray | None]) -> str:
    if out["local_points"] is not None:
        return "local_points z"
    return "off" if out["camera_poses"] is None else "distance to camera centre"


def _keep(out: dict[str, np.ndarray | None], params: Any) -> np.ndarray:
    """Boolean ``[F, h, w]``: confident, finite, in the depth range and off depth edges."""
    with np.errstate(over="ignore"):
        confident = 1.0 / (1.0 + np.exp(-out["conf"])) > params.conf_threshold  # sigmoid
    keep = confident & np.isfinite(out["points"]).all(axis=-1)
    depth = _depth(out)
    if depth is not None:
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)
        keep &= (depth > 0) & (depth >= params.min_depth) & (depth <= params.max_depth)
        keep &= ~depth_edges(depth, params.edge_threshold)
    return keep


def _intrinsics(frames: Frames, params: Any, local: np.ndarray | None, keep: np.ndarray) -> np.ndarray:
    """The frames' camera when known (and used), else fitted to ``local_points``, else NaN; original pixels."""
    if frames.intrinsics is not None and params.use_known_cameras:
        return np.asarray(frames.intrinsics, np.float64)
    k = np.full((3, 3), np.nan)
    if local is None:
        return k
    f, rows, cols = np.nonzero(keep & (local[..., 2] > 0))
    pick = slice(None, None, max(1, len(f) // 200_000))  # a regular subset is plenty for 4 numbers
    f, rows, cols = f[pick], rows[pick], cols[pick]
    if len(f) < 10:
        return k
    z = local[f, rows, cols, 2]
    (fx, cx), *_ = np.linalg.lstsq(np.stack([local[f, rows, cols, 0] / z, np.ones_like(z)], 1), cols, rcond=None)
    (fy, cy), *_ = np.linalg.lstsq(np.stack([local[f, rows, cols, 1] / z, np.ones_like(z)], 1), rows, rcond=None)
    (height, width), (h, w) = frames.size, keep.shape[1:]
    sx, sy = width / w, height / h  # pixel centres: u_original + 0.5 = (u + 0.5) * sx
    if fx > 0 and fy > 0:
        k[:] = [[fx * sx, 0, (cx + 0.5) * sx - 0.5], [0, fy * sy, (cy + 0.5) * sy - 0.5], [0, 0, 1]]
    return k


def reconstruct(frames: Frames, params: Any, rng: np.random.Generator) -> Reconstruction:
    """Points, colours and (when returned) cameras of the frames from one forward pass of the network."""
    where = f"feedforward reconstruction of scene {frames.meta.get('scene', '?')!r}"
    device = torch_device(params.device)
    network = load_network(params.model, params.weights, device)
    chosen = select_frames(len(frames), params)  # [S] positions in frames
    height, width = frames.size
    h, w = network_size(height, width, params.pixel_budget, params.patch_multiple)
    images = _resize(frames.colors[chosen], h, w)  # [S, 3, h, w]
    colors = np.round(images.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)  # [S, h, w, 3]
    out = _infer(network, images, device, params.model)
    keep = _keep(out, params)  # [S, h, w]
    fusion = VoxelFusion(params.voxel_size, where)
    fusion.add(out["points"][keep], colors[keep])
    coord, color = fusion.result()
    if not len(coord):
        raise ValueError(
            f"{where}: no pixel kept by conf_threshold={params.conf_threshold}, min_depth={params.min_depth}, "
            f"max_depth={params.max_depth}, edge_threshold={params.edge_threshold}"
        )
    sampled = sample_anchors(out["points"], keep)  # [S, P, 3]
    anchors = np.full((len(frames), *sampled.shape[1:]), np.nan, np.float32)  # [F, P, 3]
    anchors[chosen] = sampled
    poses = np.full((len(frames), 4, 4), np.nan)  # [F, 4, 4]
    if out["camera_poses"] is not None:
        poses[chosen] = out["camera_poses"]
    report = {
        "model": params.model,
        "weights": params.weights,
        "network_size": [h, w],
        "device": device,
        "poses_returned": out["camera_poses"] is not None,
        "depth_filter": _depth_source(out),
        "points_before_fusion": fusion.points_in,
        "points_after_fusion": len(coord),
    }
    cloud = PointCloud({"coord": coord, "color": color})
    intrinsics = _intrinsics(frames, params, out["local_points"], keep)
    return Reconstruction(cloud, poses, intrinsics, report, anchors)
