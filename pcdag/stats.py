"""Dataset statistics of a scene store (LAM3C Fig. 8): points per scene, scene scale, point spacing.

Per committed scene: the number of points, the diagonal of its axis-aligned bounding box (the paper's "scale")
and the median nearest-neighbour distance (its "spacing"): the distance from each of at most ``max_points``
randomly chosen points (seeded per scene id, so the numbers do not depend on the order of scenes) to its nearest
*other* point of the whole cloud. Summaries give count, mean, median, std (population), min, max and the 5/25/75/95
percentiles (linear interpolation). ``pcdag stats STORE`` prints them next to ScanNet's reference scale, draws the
three histograms (optionally against a second store) and writes the numbers as JSON. Beside them, the provenance
of each scene's size from its report's ``scale`` (``metric``: depth or known cameras; ``drawn``: AlignScale's
paper draw; ``scaled``: a constant factor; ``arbitrary``: scale-free; ``unrecorded``) with the factors' range.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pcdag.atomic import atomic_write_json

METRICS = {
    "points": "points per scene",
    "bbox_diagonal": "bounding-box diagonal (m)",
    "nn_spacing": "median nearest-neighbour spacing (m)",
}
SUMMARY_KEYS = ("count", "mean", "median", "std", "min", "p5", "p25", "p75", "p95", "max")
# ScanNet scene scale (bounding-box diagonal, metres) used by the reference's scale alignment (spec section D.3)
SCANNET_DIAGONAL = {"mean": 7.984, "median": 7.791, "std": 2.386, "min": 2.835, "max": 20.04}
MAX_SPACING_POINTS = 100_000


def scene_numbers(coord: np.ndarray, rng: np.random.Generator, max_points: int = MAX_SPACING_POINTS) -> dict:
    """Points, bounding-box diagonal and median NN spacing of one cloud ``coord`` [N, 3] (N ≥ 1)."""
    from scipy.spatial import cKDTree

    xyz = np.asarray(coord, dtype=np.float64)  # [N, 3]
    n = len(xyz)
    diagonal = float(np.linalg.norm(xyz.max(axis=0) - xyz.min(axis=0)))
    if n < 2:
        return {"points": n, "bbox_diagonal": diagonal, "nn_spacing": float("nan")}
    query = xyz if n <= max_points else xyz[rng.choice(n, size=max_points, replace=False)]  # [Q, 3]
    dist, _ = cKDTree(xyz).query(query, k=2)  # [Q, 2]: itself (0) and its nearest other point
    return {"points": n, "bbox_diagonal": diagonal, "nn_spacing": float(np.median(dist[:, 1]))}


def summarise(values: np.ndarray) -> dict[str, float]:
    """count, mean, median, std, min, 5/25/75/95 percentiles, max of ``values`` (NaNs left out)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"count": 0} | {k: float("nan") for k in SUMMARY_KEYS[1:]}
    p5, p25, p50, p75, p95 = np.percentile(v, [5, 25, 50, 75, 95])
    return {
        "count": int(len(v)),
        "mean": float(v.mean()),
        "median": float(p50),
        "std": float(v.std()),
        "min": float(v.min()),
        "p5": float(p5),
        "p25": float(p25),
        "p75": float(p75),
        "p95": float(p95),
        "max": float(v.max()),
    }


def store_stats(
    store_path: str | os.PathLike, *, max_points: int = MAX_SPACING_POINTS, seed: int = 0, progress: bool = False
) -> dict[str, Any]:
    """Statistics of every committed scene of the store at ``store_path``; unreadable scenes are listed under
    ``errors`` and left out. Raises ``FileNotFoundError``/``StoreError``/``ValueError`` naming the store."""
    from tqdm.auto import tqdm

    from pcdag.runtime.offline import scene_rng
    from pcdag.runtime.store import SceneStore, StoreError  # imported here: `pcdag --help` stays quick

    path = Path(store_path)
    if not path.is_dir():
        raise FileNotFoundError(f"scene store {path} does not exist or is not a directory")
    store = SceneStore(path)
    if not store.scenes_dir.is_dir():
        raise StoreError(f"{path} is not a pcdag scene store (it has no scenes/ directory)")
    entries = store.current()  # stale scenes of older runs are not part of the dataset the loader sees
    if not entries:
        raise ValueError(f"scene store {path} has no committed scenes")
    scenes, errors = [], []
    for e in tqdm(entries, desc=f"stats {path.name}", unit="scene", disable=None if progress else True):
        try:
            coord = store.read(e.id, fields=["coord"])["coord"]
        except (OSError, StoreError) as exc:
            errors.append({"id": e.id, "error": f"{type(exc).__name__}: {exc}"})
            continue
        if len(coord) == 0:
            errors.append({"id": e.id, "error": "the scene has no points"})
            continue
        numbers = scene_numbers(coord, scene_rng(seed, e.id), max_points)
        scenes.append({"id": e.id, "split": e.split, **numbers, **scene_scale(store.report(e.id))})
    if not scenes:
        raise ValueError(f"no scene of store {path} could be read: {errors[0]['error']}")
    summary = {m: summarise(np.array([s[m] for s in scenes], np.float64)) for m in METRICS}
    return {"store": str(path), "name": path.resolve().name, "n_scenes": len(scenes), "summary": summary,
            "scale": scale_provenance(scenes), "scenes": scenes, "errors": errors, "max_spacing_points": max_points,
            "seed": seed}  # fmt: skip


def scene_scale(report: Mapping[str, Any]) -> dict[str, Any]:
    """Where a stored scene's size came from (its report's ``scale``): ``scale`` (``metric``, ``drawn``,
    ``scaled``, ``arbitrary``; ``unrecorded`` for scenes written without one) and ``scale_factor`` (or None)."""
    scale = report.get("scale")
    if not isinstance(scale, Mapping) or not isinstance(scale.get("units"), str):
        return {"scale": "unrecorded", "scale_factor": None}
    factor = scale.get("factor")
    return {"scale": scale["units"], "scale_factor": float(factor) if isinstance(factor, (int, float)) else None}


def scale_provenance(scenes: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Scenes per scale provenance and, for each provenance with factors (drawn, scaled), their range."""
    counts: dict[str, int] = {}
    factors: dict[str, list[float]] = {}
    for s in scenes:
        counts[s["scale"]] = counts.get(s["scale"], 0) + 1
        if s["scale_factor"] is not None:
            factors.setdefault(s["scale"], []).append(s["scale_factor"])
    ranges = {k: [min(v), max(v)] for k, v in factors.items()}
    return {"counts": dict(sorted(counts.items())), "factor_range": ranges}


def format_scale(stats: Mapping[str, Any]) -> str:
    """``scale (name): 3 drawn (factor 0.81-2.4), 1 metric``."""
    prov = stats["scale"]
    parts = []
    for units, n in prov["counts"].items():
        lo_hi = prov["factor_range"].get(units)
        parts.append(f"{n} {units}" + (f" (factor {lo_hi[0]:.3g}-{lo_hi[1]:.3g})" if lo_hi else ""))
    return f"scale ({stats['name']}): " + ", ".join(parts)


# ---------------------------------------------------------------------------------------------- table


def _fmt(metric: str, key: str, value: float) -> str:
    if key == "count" or (metric == "points" and np.isfinite(value) and key not in ("mean", "std")):
        return f"{value:,.0f}"
    if metric == "points":
        return f"{value:,.1f}"
    return f"{value:.4f}" if metric == "nn_spacing" else f"{value:.3f}"


def _cell(text: str, width: int, column: int) -> str:
    return text.ljust(width) if column < 2 else text.rjust(width)


def format_table(stats: Mapping[str, Any], compare: Mapping[str, Any] | None = None) -> str:
    """A plain-text table: one row per metric and store, plus ScanNet's reference bounding-box diagonal."""
    rows = [("metric", "store", *SUMMARY_KEYS)]
    for metric, title in METRICS.items():
        for st in (stats, compare) if compare else (stats,):
            s = st["summary"][metric]
            rows.append((title, st["name"], *(_fmt(metric, k, s[k]) for k in SUMMARY_KEYS)))
        if metric == "bbox_diagonal":
            ref = SCANNET_DIAGONAL
            cells = (f"{ref[k]:.3f}" if k in ref else "" for k in SUMMARY_KEYS)
            rows.append((title, "ScanNet (reference)", *cells))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(_cell(c, w, i) for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines += [format_scale(st) for st in (stats, compare) if st and "scale" in st]
    errors = [e for st in (stats, compare) if st for e in st["errors"]]
    lines += [f"unreadable: {e['id']}: {e['error']}" for e in errors]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- picture


# shown in the picture: (factor, axis title); the numbers and the JSON stay in metres
SHOWN = {
    "points": (1.0, "points per scene"),
    "bbox_diagonal": (1.0, "bounding-box diagonal (m)"),
    "nn_spacing": (1000.0, "median nearest-neighbour spacing (mm)"),
}
COLOURS = ("#1f77b4", "#ff7f0e")


def _bins(values: list[np.ndarray], log: bool) -> np.ndarray:
    v = np.concatenate(values)
    lo, hi = float(v.min()), float(v.max())
    if lo == hi:  # one value: a narrow bar around it
        pad = abs(lo) * 0.01 or 0.5
        return np.array([lo - pad, hi + pad])
    if log:
        return np.geomspace(lo, hi, 31)
    return np.histogram_bin_edges(v, bins=min(40, max(10, int(np.sqrt(len(v))) * 2)))


def _panel(ax: Any, metric: str, values: list[np.ndarray], names: list[str], fractions: bool) -> None:
    """One histogram panel: each store's values, its median (dashed), ScanNet's median scale (dotted)."""
    import matplotlib.ticker

    factor, title = SHOWN[metric]
    values = [v * factor for v in values]
    pos = np.concatenate(values)
    log = metric == "points" and pos.min() > 0 and pos.max() / pos.min() > 20
    for v, name, colour in zip(values, names, COLOURS, strict=False):
        median = float(np.median(v))
        text = f"{median:,.0f}" if metric == "points" else f"{median:.3g}"
        weights = np.full(len(v), 1.0 / len(v)) if fractions else None
        ax.hist(v, bins=_bins(values, log), weights=weights, alpha=0.55, color=colour, edgecolor="white",
                linewidth=0.5, label=f"{name} (n={len(v)}, median {text})")  # fmt: skip
        ax.axvline(median, color=colour, linestyle="--", linewidth=1.2)
    if metric == "bbox_diagonal":
        ref = SCANNET_DIAGONAL["median"]
        ax.axvline(ref, color="#444444", linestyle=":", linewidth=1.5, label=f"ScanNet median {ref} m")
    if log:
        ax.set_xscale("log")
    else:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(6))
    if metric == "points":
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(title)
    ax.set_ylabel("fraction of scenes" if fractions else "scenes")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best", framealpha=0.9)


def plot_stats(
    stats: Mapping[str, Any],
    out_png: str | os.PathLike,
    compare: Mapping[str, Any] | None = None,
    labels: tuple[str, str] | None = None,
) -> Path:
    """Three histograms (points, scale, spacing) of ``stats``, overlaid with ``compare`` when given, written to
    ``out_png`` atomically. With a comparison the bars are fractions of each store's scenes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = [stats] + ([compare] if compare else [])
    names = list(labels) if labels else [s["name"] for s in sets]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    for ax, metric in zip(axes, METRICS, strict=True):
        values = [np.array([s[metric] for s in st["scenes"]], np.float64) for st in sets]
        _panel(ax, metric, [v[np.isfinite(v)] for v in values], names, fractions=compare is not None)
    fig.suptitle("Scene statistics: " + " vs ".join(names), fontsize=12)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------------- command


def add_stats_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``pcdag stats`` on an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser("stats", help="points, scale and spacing of every scene of a store; table + PNG")
    add_stats_arguments(p)
    return p


def add_stats_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``pcdag stats`` (``pcdag.cli`` adds them only when the command is ``stats``)."""
    p.add_argument("store", type=Path, metavar="STORE", help="a scene store directory")
    p.add_argument("--compare", type=Path, default=None, metavar="STORE2", help="a second store to overlay")
    p.add_argument("--out", type=Path, default=None, help="PNG path (default out/stats/<store name>.png)")
    p.add_argument("--json", type=Path, default=None, help="JSON path (default: the PNG path with .json)")
    p.add_argument("--max-points", type=int, default=MAX_SPACING_POINTS, help="points per scene for the spacing")
    p.add_argument("--seed", type=int, default=0, help="seed of the spacing's point sample (default 0)")
    p.set_defaults(run=main_stats)


def main_stats(args: argparse.Namespace) -> int:
    """``pcdag stats``: print the table, write the PNG and the JSON; 1 with a message when a store is unusable."""
    if args.max_points < 1:
        print(f"--max-points = {args.max_points} must be at least 1", file=sys.stderr)
        return 1
    try:
        stats = store_stats(args.store, max_points=args.max_points, seed=args.seed, progress=True)
        compare = None
        if args.compare is not None:
            compare = store_stats(args.compare, max_points=args.max_points, seed=args.seed, progress=True)
    except (OSError, ValueError) as exc:
        print(f"pcdag stats: {exc}", file=sys.stderr)
        return 1
    print(format_table(stats, compare))
    png = args.out or Path("out") / "stats" / f"{stats['name']}.png"
    json_path = args.json or png.with_suffix(".json")
    plot_stats(stats, png, compare)
    atomic_write_json(json_path, {"stats": stats, "compare": compare, "scannet_bbox_diagonal": SCANNET_DIAGONAL})
    print(f"\npicture: {png}\nnumbers: {json_path}")
    return 0
