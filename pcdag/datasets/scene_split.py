"""Splitting a room-walkthrough video into single-room sequences: frame labels, run rules, two classifiers.

The reference (LAM3C RoomTours) labels every frame with CLIP zero-shot prompts, indoor/outdoor and then a coarse
room type (living room, bedroom, bathroom), and cuts the video where the room type changes. ``split_video`` applies
its rules to per-frame labels, every duration a parameter (``Rules``; reference values as defaults):

1. temporal smoothing: each frame takes the most frequent label within ``smoothing_seconds`` centred on it
   (``smooth_labels``; the frame's own label wins ties), first for indoor/outdoor, then for room labels;
2. outdoor frames are discarded and indoor runs shorter than ``min_indoor_seconds`` dropped (``drop_short_runs``);
3. within each indoor stretch, room-label runs shorter than ``merge_run_seconds`` are merged into a neighbour,
   then segments shorter than ``min_segment_seconds`` likewise (``merge_short_runs``);
4. sequences shorter than ``min_seconds`` are dropped; the others are the scenes.

Durations come from timestamps: frame ``i`` lasts until frame ``i + 1`` (the last one a median frame interval), so
the durations of all frames add up to the video's length and the bookkeeping of ``SplitResult.report`` adds up.

The classifiers that produce the labels are in ``pcdag.datasets.frame_classifiers``.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
from scipy import sparse

REFERENCE_ROOMS = ("living room", "bedroom", "bathroom")

# ---------------------------------------------------------------------------------------------- time and runs


def frame_durations(timestamps: np.ndarray) -> np.ndarray:
    """Seconds each frame covers [F]: up to the next frame; the last frame a median interval (0 for one frame)."""
    t = np.asarray(timestamps, dtype=np.float64)  # [F]
    if t.ndim != 1 or not np.isfinite(t).all():
        raise ValueError(f"timestamps must be a finite 1-D array of seconds, got shape {list(t.shape)}")
    dt = np.diff(t)  # [F-1]
    if (dt <= 0).any():
        i = int(np.flatnonzero(dt <= 0)[0])
        raise ValueError(f"timestamps must increase strictly; frame {i + 1} is at {t[i + 1]} s after {t[i]} s")
    return np.append(dt, np.median(dt) if len(dt) else 0.0)


def runs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximal runs of equal labels: (starts [R], stops [R] exclusive, values [R])."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, labels[:0]
    change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    starts = np.r_[0, change]
    stops = np.r_[change, len(labels)]
    return starts, stops, labels[starts]


def smooth_labels(labels: np.ndarray, timestamps: np.ndarray, window_seconds: float) -> np.ndarray:
    """Mode filter: each frame takes the most frequent label among the frames within ``window_seconds / 2`` of it
    (its own label on a tie, else the smallest tied label). Only labels present in that window can appear."""
    labels = np.asarray(labels)
    t = np.asarray(timestamps, dtype=np.float64)
    n = len(labels)
    if n == 0 or window_seconds <= 0:
        return labels.copy()
    values, codes = np.unique(labels, return_inverse=True)  # [K], [F]
    lo = np.searchsorted(t, t - window_seconds / 2, side="left")  # [F] first frame in the window
    hi = np.searchsorted(t, t + window_seconds / 2, side="right")  # [F] one past the last
    width = hi - lo  # [F]
    rows = np.repeat(np.arange(n), width)  # [M] the frame whose window holds each member
    members = np.arange(width.sum()) - np.repeat(np.cumsum(width) - width, width) + np.repeat(lo, width)  # [M]
    counts = sparse.csr_matrix((np.ones(len(rows), np.int32), (rows, codes[members])), shape=(n, len(values)))
    best = counts.max(axis=1).toarray().ravel()  # [F]
    own = np.asarray(counts[np.arange(n), codes]).ravel()  # [F]
    winner = np.asarray(counts.argmax(axis=1)).ravel()  # [F] smallest code among the tied maxima
    return values[np.where(own == best, codes, winner)]


def drop_short_runs(mask: np.ndarray, durations: np.ndarray, min_seconds: float) -> tuple[np.ndarray, int, float]:
    """Set runs of True shorter than ``min_seconds`` to False; returns (mask, runs dropped, seconds dropped)."""
    starts, stops, values = runs(np.asarray(mask, dtype=bool))
    if len(starts) == 0:
        return np.zeros(0, bool), 0, 0.0
    secs = np.add.reduceat(np.asarray(durations, np.float64), starts)  # [R]
    short = values & (secs < min_seconds)  # [R]
    return np.repeat(values & ~short, stops - starts), int(short.sum()), float(secs[short].sum())


def merge_short_runs(labels: np.ndarray, durations: np.ndarray, min_seconds: float) -> tuple[np.ndarray, int]:
    """Merge runs shorter than ``min_seconds`` into a neighbour until none is left (or only one run remains).

    The shortest run goes first, into its longer neighbour (the earlier one on a tie); equal neighbours then join.
    Returns (labels, number of runs that disappeared). Boundaries are only ever removed, never created.
    """
    labels = np.asarray(labels)
    starts, stops, values = runs(labels)
    if len(starts) <= 1:
        return labels.copy(), 0
    secs = np.add.reduceat(np.asarray(durations, np.float64), starts)  # [R]
    lengths = stops - starts  # [R]
    n_runs = len(values)
    while len(values) > 1:
        i = int(np.argmin(secs))
        if secs[i] >= min_seconds:
            break
        left = secs[i - 1] if i > 0 else -np.inf
        right = secs[i + 1] if i + 1 < len(secs) else -np.inf
        values[i] = values[i - 1] if left >= right else values[i + 1]
        keep = np.r_[True, values[1:] != values[:-1]]  # [R] run starts a new group
        group = np.cumsum(keep) - 1
        secs = np.bincount(group, weights=secs)
        lengths = np.bincount(group, weights=lengths).astype(np.int64)
        values = values[keep]
    return np.repeat(values, lengths), n_runs - len(values)


def sample_frames(timestamps: np.ndarray, fps: float) -> np.ndarray:
    """Indices of the frames to classify at about ``fps`` per second (all frames for ``fps`` 0 or above the
    video's own rate): the first frame at or after each tick ``t0 + k / fps``."""
    t = np.asarray(timestamps, dtype=np.float64)
    if fps <= 0 or len(t) < 2:
        return np.arange(len(t))
    ticks = np.arange(t[0], t[-1] + 1e-9, 1.0 / fps)  # [S]
    return np.unique(np.minimum(np.searchsorted(t, ticks - 1e-9, side="left"), len(t) - 1))


def spread(sampled: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Per-frame values [n] from values [S] at frame indices ``sampled`` [S]: the last sample at or before."""
    where = np.searchsorted(sampled, np.arange(n), side="right") - 1  # [n]
    return np.asarray(values)[np.maximum(where, 0)]


# ---------------------------------------------------------------------------------------------- the rules


@attrs.frozen
class Rules:
    """Durations of the splitting rules in seconds (the reference's values by default)."""

    smoothing_seconds: float = 0.5
    min_indoor_seconds: float = 10.0
    merge_run_seconds: float = 2.0
    min_segment_seconds: float = 10.0
    min_seconds: float = 10.0


@attrs.frozen
class Segment:
    """Frames ``start:stop`` of the video, one room label, ``seconds`` long (sum of frame durations)."""

    start: int
    stop: int
    label: int
    seconds: float


@attrs.define
class SplitResult:
    kept: list[Segment]
    dropped: list[Segment]  # segments shorter than ``Rules.min_seconds``
    report: dict[str, Any]  # JSON-serialisable bookkeeping


def split_video(
    timestamps: np.ndarray, indoor_prob: np.ndarray, room: np.ndarray | None, rules: Rules = Rules()
) -> SplitResult:
    """Apply the rules of the module docstring to per-frame indoor probabilities [F] and room labels [F]."""
    t = np.asarray(timestamps, dtype=np.float64)
    dur = frame_durations(t)  # [F]
    n = len(t)
    indoor = smooth_labels(np.asarray(indoor_prob) >= 0.5, t, rules.smoothing_seconds)  # [F] bool
    outdoor_seconds = float(dur[~indoor].sum())
    indoor, n_short, short_seconds = drop_short_runs(indoor, dur, rules.min_indoor_seconds)
    room = np.zeros(n, np.int64) if room is None else np.asarray(room).astype(np.int64)
    kept: list[Segment] = []
    dropped: list[Segment] = []
    n_label_runs = n_merged_runs = n_merged_segments = 0
    for start, stop, value in zip(*runs(indoor), strict=True):
        if not value:
            continue
        d = dur[start:stop]
        labels = smooth_labels(room[start:stop], t[start:stop], rules.smoothing_seconds)
        n_label_runs += len(runs(labels)[0])
        labels, merged = merge_short_runs(labels, d, rules.merge_run_seconds)
        n_merged_runs += merged
        labels, merged = merge_short_runs(labels, d, rules.min_segment_seconds)
        n_merged_segments += merged
        for s, e, v in zip(*runs(labels), strict=True):
            seg = Segment(int(start + s), int(start + e), int(v), float(d[s:e].sum()))
            (kept if seg.seconds >= rules.min_seconds else dropped).append(seg)
    report = {
        "frames": n,
        "seconds": round(float(dur.sum()), 3),
        "outdoor_seconds": round(outdoor_seconds, 3),
        "short_indoor_runs_dropped": n_short,
        "short_indoor_seconds": round(short_seconds, 3),
        "label_runs": n_label_runs,
        "runs_merged": n_merged_runs,
        "segments_merged": n_merged_segments,
        "segments_found": len(kept) + len(dropped),
        "kept": len(kept),
        "dropped_shorter_than_min_seconds": len(dropped),
        "dropped_seconds": round(float(sum(s.seconds for s in dropped)), 3),
        "kept_seconds": round(float(sum(s.seconds for s in kept)), 3),
    }
    return SplitResult(kept, dropped, report)
