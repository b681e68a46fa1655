"""Scene-split signals on real frames: the jumps SplitScenes' `shots` classifier finds, their thumbnail overlap and
their novelty against the segment so far, on the 7-Scenes colour frames (one room) at several playback rates and
followed by a rendered room (another room). Prints one line per jump; docs/roomtours.md quotes the figures.

    python bench/scene_split_real.py [--data ../shared/data/rgbd-7scenes]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pcdag.datasets import frame_classifiers as fc
from pcdag.datasets import rgbd
from pcdag.datasets import scene_split as ss
from pcdag.datasets.roomvideo import render_room_video
from pcdag.graphs.frames import Frames


def signals(colors: np.ndarray, fps: float, tag: str, label_fps: float = 5.0) -> None:
    frames = Frames(colors, [str(i) for i in range(len(colors))], timestamps=np.arange(len(colors)) / fps)
    sub = frames.subset(ss.sample_frames(frames.timestamps, label_fps))
    clf = fc.ShotBoundaryClassifier()
    kept, jumps, _ = clf.cuts(sub)
    emb = fc.histogram_embeddings(sub.colors)
    n_after = max(1, round(clf.sustain_seconds * label_fps))
    start = 0
    for c in jumps:
        ov = fc.overlap(fc.thumbnail(sub.colors[c - 1]), fc.thumbnail(sub.colors[c]))
        nov = float(fc.novelty(emb[c : c + n_after], emb[start:c]).min())
        print(f"{tag:>14} {fps:4.0f} fps  jump at labelled frame {c:3d}: overlap {ov:.2f} novelty {nov:.2f} "
              f"{'CUT' if c in kept else 'no cut'}")  # fmt: skip
        start = c if c in kept else start
    if not len(jumps):
        print(f"{tag:>14} {fps:4.0f} fps  no jump")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / "../shared/data/rgbd-7scenes")
    args = ap.parse_args()
    room = np.stack([rgbd.read_color(p)[::4, ::4] for _, p in rgbd.list_frames(args.data)])  # [300, 120, 160, 3]
    for fps in (5.0, 10.0, 15.0, 30.0):
        signals(room, fps, "7-Scenes")
    for seed in range(4):
        other = render_room_video(seed, n_frames=120, width=160, height=120, fps=5.0, n_rooms=2).frames
        signals(np.concatenate([room, other]), 5.0, f"+rendered {seed}")


if __name__ == "__main__":
    main()
