"""Per-point features of a trained backbone for a new point cloud (``pcdag extract CHECKPOINT FILE``).

    read_points       a PLY, .npy, .npz or Pointcept scene folder -> PointCloud (coord, optional color / normal)
    extract_features  grid-sample, (tile), forward the encoder at full resolution, blend, map back -> [N, C]
    write_outputs     features.npy, coord.npy, pca.png (and features-pca.ply), atomically

The backbone sees the un-augmented view it was trained on (``eval_view``): the grid-sampled scene, centre-shifted,
colour / 255 (grey without colour) and normals. Missing normals are estimated on the grid-sampled points
(``estimate_normals``, k = 32, flipped toward the centroid as ``EstimateNormals`` does). The backbone voxelises the
sampled points at its own ``grid_size``; ``grid_size`` here only picks the points (keep them equal).

Large scenes are cut into square x-y tiles of edge ``tile`` whose neighbours overlap by ``overlap``, run one at a
time (each centre-shifted on its own, as the training crops were). A point's features are the average of its
tiles' features weighted by ``tile_weight``: ``min(1, d / overlap)`` with ``d`` the x-y distance to the tile's
nearest border, so weights fall linearly to 0 at a border and two neighbours cross-fade across their overlap (their
weights sum to 1 there). Weights are normalised per point before blending, so a point in one tile gets exactly that
tile's features. The tile grid is centred on the scene and padded so every point lies strictly inside some tile.

Every tile's forward starts from ``torch.manual_seed(seed)`` (in a forked RNG: the caller's is left alone), because
PointTransformerV3 with ``shuffle_orders`` draws its serialisation orders from torch's RNG, even in eval mode.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pcdag.atomic import atomic_save_npy
from pcdag.datasets.ply import PROPERTIES, read_ply, write_ply
from pcdag.datasets.scannet import read_npy, read_scan
from pcdag.graphs.batch import collate_points
from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.nodes.geometry.normals import estimate_normals, orient_toward
from pcdag.nodes.views.parts.eval_view import GREY, eval_view, grid_eval_rows
from pcdag.ops.pca import pca_fit, render_scene
from pcdag.runtime.devices import local_device

NORMAL_NEIGHBOURS = 32
SUFFIXES = (".ply", ".npy", ".npz")
_HEADER_LIMIT = 1 << 16  # bytes of a PLY header read to list its properties


# -- reading ----------------------------------------------------------------------------------------------------


def _ply_properties(path: Path) -> set[str]:
    """Names of the ``vertex`` element's properties, from the PLY header only."""
    with path.open("rb") as f:
        head = f.read(_HEADER_LIMIT)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise ValueError(f"{path}: not a PLY file (no 'ply' magic or no 'end_header' in the first 64 KiB)")
    names, element = set(), None
    for line in head[:end].decode("ascii", errors="replace").splitlines():
        words = line.split()
        if words[:1] == ["element"] and len(words) > 1:
            element = words[1]
        elif words[:1] == ["property"] and element == "vertex" and len(words) > 2:
            names.add(words[-1])
    return names


def _read_ply_file(path: Path) -> dict[str, np.ndarray]:
    have = _ply_properties(path)
    fields = [f for f in ("color", "normal") if set(PROPERTIES[f]) <= have]
    return read_ply(path, fields)


def _colour_uint8(arr: np.ndarray, where: str) -> np.ndarray:
    """Colours as uint8 0..255: float values within 0..1 are scaled by 255, others must already lie in 0..255."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{where}: colours have dtype {arr.dtype}, expected uint8 or numbers in 0..255")
    values = arr.astype(np.float64)  # [N, 3]
    if not np.isfinite(values).all() or (values.size and (values.min() < 0 or values.max() > 255)):
        raise ValueError(f"{where}: colours must be finite and lie in 0..255 (or 0..1 as floats)")
    if arr.dtype.kind == "f" and values.size and values.max() <= 1.0:
        values = values * 255.0
    return np.round(values).astype(np.uint8)


def _read_npy_file(path: Path) -> dict[str, np.ndarray]:
    arr = read_npy(path)
    if arr.ndim != 2 or arr.shape[1] not in (3, 6):
        raise ValueError(f"{path}: shape {list(arr.shape)}, expected [N, 3] coordinates or [N, 6] xyz + rgb")
    out = {"coord": arr[:, :3]}
    if arr.shape[1] == 6:
        out["color"] = _colour_uint8(arr[:, 3:], f"{path} (columns 3..5)")
    return out


def _read_npz_file(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ("coord", "color", "normal") if k in npz.files}
            found = list(npz.files)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npz archive ({exc})") from exc
    if "coord" not in arrays:
        raise ValueError(f"{path}: no 'coord' array (it holds {', '.join(found) or 'nothing'})")
    if "color" in arrays:
        arrays["color"] = _colour_uint8(arrays["color"], f"{path}:color")
    return arrays


def _read_folder(path: Path) -> dict[str, np.ndarray]:
    if not (path / "coord.npy").is_file():
        raise FileNotFoundError(f"{path}: a Pointcept scene folder needs coord.npy (optional color.npy, normal.npy)")
    return read_scan(path, [f for f in ("color", "normal") if (path / f"{f}.npy").is_file()])


def _checked(fields: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """Shapes, dtypes and finite coordinates of what a reader returned; ``ValueError`` naming ``where``."""
    coord = fields["coord"]
    if coord.ndim != 2 or coord.shape[1] != 3 or coord.dtype.kind not in "fiu":
        shape = f"{list(coord.shape)} ({coord.dtype})"
        raise ValueError(f"{where}: coordinates have shape {shape}, expected [N, 3] numbers")
    if len(coord) == 0:
        raise ValueError(f"{where}: the file holds no points")
    bad = int((~np.isfinite(coord).all(axis=1)).sum())
    if bad:
        raise ValueError(f"{where}: {bad} points have NaN or infinite coordinates")
    out = {"coord": np.ascontiguousarray(coord, dtype=np.float32)}
    for name in ("color", "normal"):
        if name in fields:
            arr = fields[name]
            if arr.shape != (len(coord), 3):
                raise ValueError(f"{where}: {name} has shape {list(arr.shape)}, expected [{len(coord)}, 3]")
            if name == "normal":
                if arr.dtype.kind != "f" or not np.isfinite(arr).all():
                    raise ValueError(f"{where}: normals must be finite floats, got {arr.dtype}")
                arr = arr.astype(np.float32, copy=False)
            out[name] = np.ascontiguousarray(arr)
    return out


def read_points(path: str | Path) -> PointCloud:
    """A ``PointCloud`` (``coord`` float32, optional ``color`` uint8 and ``normal``) from ``path``: a PLY (x y z,
    optional red green blue as uchar, nx ny nz), a ``.npy`` ([N, 3] xyz or [N, 6] xyz + rgb), a ``.npz`` (arrays
    ``coord``, optional ``color``, ``normal``) or a Pointcept scene folder (coord.npy, optional color.npy,
    normal.npy). Float colours within 0..1 are scaled to 0..255."""
    path = Path(path)
    if path.is_dir():
        fields = _read_folder(path)
    elif not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    elif path.suffix.lower() == ".ply":
        fields = _read_ply_file(path)
    elif path.suffix.lower() == ".npy":
        fields = _read_npy_file(path)
    elif path.suffix.lower() == ".npz":
        fields = _read_npz_file(path)
    else:
        raise ValueError(
            f"{path}: unknown format {path.suffix!r}; use {', '.join(SUFFIXES)} or a Pointcept scene folder"
        )
    cloud = PointCloud(_checked(fields, str(path)), {"scene": path.stem if path.is_file() else path.name})
    cloud.meta["path"] = str(path)
    return cloud.validate(str(path))


# -- tiles ------------------------------------------------------------------------------------------------------


def _check_tiling(tile: float, overlap: float) -> None:
    if not (tile > 0 and 0 <= overlap < tile):
        raise ValueError(f"tiles need tile > overlap >= 0 (metres), got tile={tile}, overlap={overlap}")


def plan_tiles(xy: np.ndarray, tile: float, overlap: float) -> np.ndarray:
    """``[T, 4]`` float64 boxes ``(x0, y0, x1, y1)`` of edge ``tile``, neighbours overlapping by ``overlap``,
    centred on the points ``xy`` ``[M, 2]`` and covering their bounding box padded by ``tile / 1000``."""
    _check_tiling(tile, overlap)
    xy = np.asarray(xy, dtype=np.float64)  # [M, 2]
    pad, stride = tile / 1000.0, tile - overlap
    low, high = xy.min(axis=0) - pad, xy.max(axis=0) + pad  # [2] each
    extent = high - low  # [2]
    counts = [max(1, math.ceil((e - tile) / stride) + 1) if e > tile else 1 for e in extent]
    starts = []
    for axis, n in enumerate(counts):
        span = (n - 1) * stride + tile
        starts.append(low[axis] - (span - extent[axis]) / 2 + stride * np.arange(n))  # [n]
    x0, y0 = (a.ravel() for a in np.meshgrid(starts[0], starts[1], indexing="ij"))  # [T] each
    return np.stack([x0, y0, x0 + tile, y0 + tile], axis=1)  # [T, 4]


def border_distance(xy: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``[n]`` signed x-y distance of each point to the nearest border of ``box``: >= 0 inside, < 0 outside."""
    xy = np.asarray(xy, dtype=np.float64)  # [n, 2]
    return np.minimum.reduce([xy[:, 0] - box[0], box[2] - xy[:, 0], xy[:, 1] - box[1], box[3] - xy[:, 1]])


def tile_members(xy: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``[n]`` bool: the points of the closed box ``box`` (those the tile's forward sees)."""
    return border_distance(xy, box) >= 0


def tile_weight(xy: np.ndarray, box: np.ndarray, overlap: float) -> np.ndarray:
    """``[n]`` float64 blending weight: ``min(1, d / overlap)`` inside (d = distance to the nearest border), 0
    outside; with ``overlap = 0`` 1 inside."""
    d = border_distance(xy, box)  # [n]
    if overlap <= 0:
        w = np.ones_like(d)
    else:
        with np.errstate(over="ignore"):  # an overlap near 0: d / overlap overflows to inf, clipped to 1
            w = np.clip(d / overlap, 0.0, 1.0)
    return np.where(d >= 0, w, 0.0)


def blend_plan(
    xy: np.ndarray, max_points: int, tile: float, overlap: float, where: str = ""
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per tile to run, ``(members [m] int64, share [m] float32)``: its points of ``xy`` ``[M, 2]`` and their
    normalised blending weights (summing to 1 over a point's tiles; exactly 1 for a point in one tile). One tile of
    all points when ``M <= max_points``; empty tiles are left out."""
    _check_tiling(tile, overlap)
    if len(xy) <= max_points:
        return [(np.arange(len(xy)), np.ones(len(xy), dtype=np.float32))]
    tiles = []
    for box in plan_tiles(xy, tile, overlap):
        members = np.flatnonzero(tile_members(xy, box))  # [m]
        if len(members):
            tiles.append((members, tile_weight(xy[members], box, overlap)))
    total = np.zeros(len(xy), dtype=np.float64)  # [M]
    for members, weight in tiles:
        total[members] += weight
    if not (total > 0).all():
        raise RuntimeError(f"{where}: the tiling left {int((total <= 0).sum())} points with no weight (a bug)")
    shares = [(members, (weight / total[members]).astype(np.float32)) for members, weight in tiles]
    return [(members, share) for members, share in shares if share.any()]  # a tile of border points only adds 0


# -- features ---------------------------------------------------------------------------------------------------


def fill_normals(cloud: PointCloud, where: str) -> PointCloud:
    """Estimate ``normal`` (k = 32 nearest neighbours, flipped toward the centroid) where the cloud has none."""
    if "normal" in cloud:
        return cloud
    coord = cloud["coord"]  # [M, 3]
    if len(coord) < 3:
        raise CloudError(f"{where}: {len(coord)} point(s) after grid sampling; estimating normals needs at least 3")
    normal = estimate_normals(coord, min(NORMAL_NEIGHBOURS, len(coord)))  # [M, 3]
    cloud["normal"] = orient_toward(normal, coord, coord.astype(np.float64).mean(axis=0))
    return cloud


def _forward(module: torch.nn.Module, cloud: PointCloud, device: torch.device, seed: int, where: str) -> np.ndarray:
    """``[m, C]`` float32 features of every point of ``cloud`` (one ``eval_view``, one sample)."""
    batch = collate_points([eval_view(cloud, where=where)], f" ({where})").to(device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    with torch.random.fork_rng(devices=[]), amp:
        torch.manual_seed(seed)
        encoded = module(batch)
    return encoded.at_points().float().cpu().numpy()  # [m, C]


def _subset(cloud: PointCloud, index: np.ndarray) -> PointCloud:
    return PointCloud({k: cloud[k][index] for k in ("coord", "color", "normal") if k in cloud}, cloud.meta)


def extract_with_tiles(
    module: torch.nn.Module,
    cloud: PointCloud,
    grid_size: float = 0.02,
    max_points: int = 200_000,
    tile: float = 6.0,
    overlap: float = 1.0,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> tuple[np.ndarray, int]:
    """``extract_features`` and the number of tiles it ran."""
    from tqdm.auto import tqdm

    where = str(cloud.meta.get("path", cloud.meta.get("scene", "?")))
    if max_points < 1 or grid_size <= 0:
        raise ValueError(f"{where}: max_points must be >= 1 and grid_size > 0, got {max_points}, {grid_size}")
    device = torch.device(device)
    rows, inverse = grid_eval_rows(cloud["coord"], grid_size, where)  # [M], [N]
    sampled = fill_normals(_subset(cloud, rows), where)  # M points
    tiles = blend_plan(sampled["coord"][:, :2], max_points, tile, overlap, where)
    module.to(device).eval()
    out: np.ndarray | None = None
    bar = tqdm(tiles, desc="tiles", unit="tile", disable=not progress or len(tiles) < 2)
    with torch.no_grad():
        for members, share in bar:
            feat = _forward(module, _subset(sampled, members), device, seed, where)  # [m, C]
            if out is None:
                out = np.zeros((len(sampled), feat.shape[1]), dtype=np.float32)  # [M, C]
            out[members] += feat * share[:, None]
    return out[inverse], len(tiles)  # [N, C]


def extract_features(
    module: torch.nn.Module,
    cloud: PointCloud,
    grid_size: float = 0.02,
    max_points: int = 200_000,
    tile: float = 6.0,
    overlap: float = 1.0,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> np.ndarray:
    """``[N, C]`` float32 features of every point of ``cloud`` from ``module`` (an encoder at full resolution, e.g.
    ``load_backbone(..., mode="encoder", upcast_level=0)``); tiled when the grid-sampled scene has more than
    ``max_points`` points (see the module docstring). Moves ``module`` to ``device`` and into eval mode."""
    return extract_with_tiles(module, cloud, grid_size, max_points, tile, overlap, device, seed, progress)[0]


# -- outputs ----------------------------------------------------------------------------------------------------


def write_outputs(
    out_dir: str | Path, features: np.ndarray, cloud: PointCloud, pca_ply: bool, dtype: str = "float16"
) -> list[Path]:
    """Write ``features.npy`` ([N, C] in ``dtype``), ``coord.npy`` ([N, 3] float32), ``pca.png`` (input colours
    beside the PCA colours) and, with ``pca_ply``, ``features-pca.ply`` (xyz + PCA colours); returns the paths."""
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, got {dtype!r}")
    n = len(cloud)
    if features.ndim != 2 or len(features) != n:
        raise ValueError(f"features have shape {list(features.shape)}, expected [{n}, C] (one row per point)")
    limit = float(np.finfo(np.float16).max)  # 65504
    if dtype == "float16" and features.size and max(-float(features.min()), float(features.max())) > limit:
        raise ValueError(f"features exceed float16's range (|value| > {limit:g}); write them with dtype float32")
    stored = features.astype(dtype, copy=False)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    coord = cloud["coord"]  # [N, 3]
    atomic_save_npy(out / "features.npy", stored)
    atomic_save_npy(out / "coord.npy", coord)
    written = [out / "features.npy", out / "coord.npy"]
    rgb = pca_fit(features).colours(features)  # [N, 3] uint8
    if pca_ply:
        write_ply(out / "features-pca.ply", {"coord": coord, "color": rgb})
        written.append(out / "features-pca.ply")
    colour = cloud["color"] if "color" in cloud else np.full((n, 3), round(GREY * 255), dtype=np.uint8)
    title = f"{cloud.meta.get('scene', '')}: {n:,} points, {features.shape[1]} channels"
    written.append(render_scene(coord, [("input colours", colour), ("PCA of features", rgb)], out / "pca.png", title))
    return written


# -- command line -----------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pcdag extract``."""
    parser.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="a run directory, checkpoint or export")
    parser.add_argument("file", type=Path, metavar="FILE", help=".ply, .npy, .npz or a Pointcept scene folder")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default features/<FILE's stem>)")
    parser.add_argument("--node", default=None, help="the backbone node of a training checkpoint (default: the one)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: CUDA when present")
    parser.add_argument("--grid-size", type=float, default=0.02, help="grid sampling voxel edge, m (default 0.02)")
    parser.add_argument("--max-points", type=int, default=200_000, help="tile scenes with more sampled points")
    parser.add_argument("--tile", type=float, default=6.0, help="tile edge in x-y, m (default 6)")
    parser.add_argument("--overlap", type=float, default=1.0, help="overlap of neighbouring tiles, m (default 1)")
    parser.add_argument("--pca-ply", action="store_true", help="also write features-pca.ply (xyz + PCA colours)")
    parser.add_argument("--dtype", default="float16", choices=("float16", "float32"), help="of features.npy")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """``pcdag extract``: load, read, extract, write; print what was written. Exit status 1 on bad input."""
    from pcdag.graphs.problems import GraphError
    from pcdag.runtime.backbone import load_backbone

    start = time.perf_counter()
    file = Path(args.file)
    out = args.out if args.out is not None else Path("features") / (file.stem if file.suffix else file.name)
    try:
        device = local_device(args.device)
        module = load_backbone(args.checkpoint, node=args.node, mode="encoder", upcast_level=0).to(device)
        cloud = read_points(file)
        features, tiles = extract_with_tiles(
            module, cloud, args.grid_size, args.max_points, args.tile, args.overlap, device, progress=not args.quiet
        )
        written = write_outputs(out, features, cloud, args.pca_ply, args.dtype)
    except (OSError, ValueError, KeyError, GraphError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start
    print(
        f"{file}: {len(cloud):,} points, {features.shape[1]} channels, {tiles} tile(s), {seconds:.1f} s on {device}; "
        f"wrote {', '.join(str(p) for p in written)}"
    )
    return 0
