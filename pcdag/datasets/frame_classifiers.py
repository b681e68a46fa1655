"""Frame classifiers for scene splitting: per-frame indoor probability and room labels.

``ShotBoundaryClassifier`` needs no weights: frames are embedded as colour histograms and every shot (the frames
between two cuts) is its own room label, all frames indoor. ``ClipClassifier`` runs a CLIP model from weights the
user already has on disk; it never downloads anything.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs
import numpy as np
from scipy.ndimage import maximum_filter1d

from pcdag.datasets.scene_split import REFERENCE_ROOMS
from pcdag.graphs.frames import Frames

# ---------------------------------------------------------------------------------------------- classifiers


class FrameClassifier(Protocol):
    """Labels frames: indoor probability [F] in [0, 1] and a room label [F] (integers; None = one room)."""

    def labels(self, frames: Frames) -> tuple[np.ndarray, np.ndarray | None]: ...


def histogram_embeddings(colors: np.ndarray, bins: int = 8, side: int = 64, chunk: int = 256) -> np.ndarray:
    """Per-frame colour embedding [F, bins³] float32: the square root of the normalised RGB histogram
    (``bins`` levels per channel) of the frame sampled on a ``side`` × ``side`` pixel grid. Rows have unit L2
    norm, so the Euclidean distance of two rows is √2 × the Hellinger distance of the two histograms."""
    f, h, w, _ = colors.shape
    ys = np.linspace(0, h - 1, min(h, side)).round().astype(np.int64)
    xs = np.linspace(0, w - 1, min(w, side)).round().astype(np.int64)
    out = np.empty((f, bins**3), np.float32)
    for c in range(0, f, chunk):  # bounded memory for long videos
        small = colors[c : c + chunk][:, ys][:, :, xs].astype(np.int64)  # [f, h', w', 3]
        q = small * bins >> 8  # [f, h', w', 3] levels 0..bins-1
        code = ((q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]).reshape(len(small), -1)  # [f, P]
        code += (np.arange(len(small)) * bins**3)[:, None]
        hist = np.bincount(code.ravel(), minlength=len(small) * bins**3).reshape(len(small), bins**3)
        out[c : c + chunk] = np.sqrt(hist / hist.sum(axis=1, keepdims=True))
    return out


def window_distances(emb: np.ndarray, k: int) -> np.ndarray:
    """Jump d [F] at each frame i ≥ 1: distance between the mean embedding of the ``k`` frames before i and of
    the ``k`` frames from i on (fewer at the ends); d[0] = 0. A hard cut peaks exactly at its first frame."""
    f = len(emb)
    cs = np.vstack([np.zeros((1, emb.shape[1])), np.cumsum(emb, axis=0, dtype=np.float64)])  # [F+1, D]
    i = np.arange(1, f)  # [F-1]
    lo, hi = np.maximum(i - k, 0), np.minimum(i + k, f)
    before = (cs[i] - cs[lo]) / (i - lo)[:, None]  # [F-1, D]
    after = (cs[hi] - cs[i]) / (hi - i)[:, None]
    return np.r_[0.0, np.linalg.norm(after - before, axis=1)]


def shot_boundaries(emb: np.ndarray, k: int, threshold: float, min_jump: float) -> np.ndarray:
    """First frames of new shots: frames whose jump (``window_distances``) is the largest within ±k frames,
    above ``threshold`` × the median jump of the video (scale-free) and above ``min_jump`` (absolute floor, for
    near-static videos whose median is ~0). ``min_jump`` is a Hellinger distance (the jump divided by √2). Only
    frames with ``k`` frames on both sides are candidates, so a cut within ``k`` frames of either end is missed
    (such a shot is far shorter than any duration the run rules keep)."""
    f = len(emb)
    if f < 2 * k:
        return np.zeros(0, np.int64)
    d = window_distances(emb, k)  # [F]
    full = np.zeros(f, bool)
    full[k : f - k + 1] = True  # k frames on both sides: equally noisy means (cuts nearer the ends are not seen)
    peak = d >= maximum_filter1d(d, size=2 * k + 1, mode="constant", cval=0.0)
    big = (d > threshold * np.median(d[full])) & (d / np.sqrt(2) > min_jump)
    cuts = np.flatnonzero(full & peak & big)
    if len(cuts) > 1:  # a plateau of equal peaks counts once
        cuts = cuts[np.r_[True, np.diff(cuts) > k]]
    return cuts


def novelty(emb: np.ndarray, keyframes: np.ndarray) -> np.ndarray:
    """Hellinger distance [P] from each embedding ``emb`` [P, D] to its nearest row of ``keyframes`` [K, D]."""
    sq = (emb**2).sum(1)[:, None] + (keyframes**2).sum(1)[None] - 2.0 * emb @ keyframes.T  # [P, K]
    return np.sqrt(np.maximum(sq.min(axis=1), 0.0) / 2.0)


def thumbnail(image: np.ndarray, width: int = 48, height: int = 36) -> np.ndarray:
    """Grey ``height`` × ``width`` thumbnail of an RGB frame [H, W, 3] (means of 4 × 4 sampled pixels per cell),
    standardised to mean 0 and std 1 so that exposure changes do not count."""
    h, w, _ = image.shape
    ys = np.linspace(0, h - 1, height * 4).round().astype(np.int64)
    xs = np.linspace(0, w - 1, width * 4).round().astype(np.int64)
    grey = image[ys][:, xs].astype(np.float64).mean(axis=2).reshape(height, 4, width, 4).mean(axis=(1, 3))
    return (grey - grey.mean()) / (grey.std() + 1e-6)


def overlap(a: np.ndarray, b: np.ndarray, min_shared: float = 0.5) -> float:
    """Feature-overlap proxy of two thumbnails [h, w]: the best normalised cross-correlation of ``b`` against
    ``a`` over every translation that keeps at least ``min_shared`` of the area. A pan leaves part of the view
    in both frames (≥ 0.9 on the real 7-Scenes sequence); a cut into another room does not (0.2-0.43)."""
    h, w = a.shape
    best = -1.0
    for dy in range(-(h // 2), h // 2 + 1):
        for dx in range(-(w // 2), w // 2 + 1):
            hh, ww = h - abs(dy), w - abs(dx)
            if hh * ww < min_shared * h * w:
                continue
            pa = a[max(dy, 0) : max(dy, 0) + hh, max(dx, 0) : max(dx, 0) + ww]
            pb = b[max(-dy, 0) : max(-dy, 0) + hh, max(-dx, 0) : max(-dx, 0) + ww]
            pa, pb = pa - pa.mean(), pb - pb.mean()
            best = max(best, float((pa * pb).sum() / np.sqrt((pa * pa).sum() * (pb * pb).sum() + 1e-12)))
    return best


def sustained_cuts(
    emb: np.ndarray, candidates: np.ndarray, n_after: int, min_novelty: float, max_keyframes: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the candidate cuts after which the content changes for good: each of the ``n_after`` frames from the
    candidate on (fewer at the end) is at least ``min_novelty`` (Hellinger) from EVERY frame of the current
    segment (frames since the last kept cut, at most ``max_keyframes`` evenly spaced), not only from the frames
    just before. A pan within a room fails this: its first new frames still share colours with what the segment
    has seen. Returns (kept cuts, novelty of each candidate: the smallest over its ``n_after`` frames)."""
    kept, scores, start = [], np.zeros(len(candidates)), 0
    for i, c in enumerate(candidates):
        keys = np.arange(start, c)
        if len(keys) > max_keyframes:
            keys = keys[np.linspace(0, len(keys) - 1, max_keyframes).round().astype(np.int64)]
        scores[i] = float(novelty(emb[c : c + max(n_after, 1)], emb[keys]).min()) if len(keys) else 0.0
        if scores[i] >= min_novelty:
            kept.append(c)
            start = c
    return np.asarray(kept, np.int64), scores


@attrs.frozen
class ShotBoundaryClassifier:
    """Weight-free classifier: every shot between two colour-histogram cuts is its own room; all frames indoor.

    A cut needs three things. (1) A jump: ``window_seconds`` on each side of a frame sets ``k`` (at least one
    frame) in ``shot_boundaries``, whose jump must be ≥ ``threshold`` × the median and ≥ ``min_jump``. (2) A loss
    of overlap: the best shifted correlation of the thumbnails just before and at the jump (``overlap``) is below
    ``max_overlap``. (3) A sustained change (``sustained_cuts``): for ``sustain_seconds`` from the jump on, every
    frame is at least ``min_novelty`` (Hellinger) from every frame of the segment so far. Jumps alone also fire
    on pans and exposure swings of hand-held footage: on the real 7-Scenes sequence at 5 / 10 / 30 fps the
    jumps' overlap is 0.92-0.98 and their novelty 0.26-0.29 at 5 and 10 fps; at the junction of that sequence
    and a rendered room, and between rendered rooms, overlap is 0.18-0.43 and novelty 0.37-0.71. Gradual
    transitions (walking through a door) are not cuts: use CLIP labels for those.
    """

    threshold: float = 2.5
    min_jump: float = 0.2
    window_seconds: float = 0.25
    bins: int = 8
    sustain_seconds: float = 2.0
    min_novelty: float = 0.3
    max_overlap: float = 0.6

    def frames_per_side(self, timestamps: np.ndarray | None) -> int:
        return self._frames(timestamps, self.window_seconds)

    @staticmethod
    def _frames(timestamps: np.ndarray | None, seconds: float) -> int:
        if timestamps is None or len(timestamps) < 2:
            return 1
        return max(1, int(round(seconds / float(np.median(np.diff(timestamps))))))

    def boundaries(self, frames: Frames) -> np.ndarray:
        return self.cuts(frames)[0]

    def cuts(self, frames: Frames) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cuts kept, jumps, novelty of each jump that lost overlap) in frame indices of ``frames``."""
        emb = histogram_embeddings(frames.colors, self.bins)  # [F, bins³]
        jumps = shot_boundaries(emb, self.frames_per_side(frames.timestamps), self.threshold, self.min_jump)
        overlaps = np.array([overlap(thumbnail(frames.colors[c - 1]), thumbnail(frames.colors[c])) for c in jumps])
        apart = jumps[overlaps < self.max_overlap] if len(jumps) else jumps
        n_after = self._frames(frames.timestamps, self.sustain_seconds)
        kept, scores = sustained_cuts(emb, apart, n_after, self.min_novelty)
        return kept, jumps, scores

    def labels(self, frames: Frames) -> tuple[np.ndarray, np.ndarray]:
        shot = np.zeros(len(frames), np.int64)
        shot[self.boundaries(frames)] = 1
        return np.ones(len(frames)), np.cumsum(shot)


# ---------------------------------------------------------------------------------------------- CLIP

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_NEVER = "pcdag never downloads weights"
SCENE_PROMPTS = ("a photo of an indoor scene", "a photo of an outdoor scene")


def clip_package(path: Path) -> str:
    """Which installed package loads the weights at ``path``: a folder → ``transformers`` (a Hugging Face CLIP
    folder with config.json), a file → ``open_clip`` (a checkpoint for ``model_name``). Raises a clear error."""
    if not path.exists():
        raise FileNotFoundError(
            f"CLIP weights {path} do not exist; {_NEVER}: copy a checkpoint there (an open_clip file such as "
            "ViT-B-32 .pt/.safetensors, or a Hugging Face CLIP folder with config.json), or use classifier 'shots'"
        )
    module, pip = ("transformers", "transformers") if path.is_dir() else ("open_clip", "open_clip_torch")
    if importlib.util.find_spec(module) is None:
        raise ImportError(
            f"CLIP weights {path} need the {module!r} package, which is not installed: pip install {pip} "
            f"({_NEVER}; the weights are read from {path} only)"
        )
    return module


class ClipClassifier:
    """CLIP zero-shot labels: "indoor"/"outdoor" probability and the most similar room prompt, as in the reference.

    Frames are resized to the model's input size (224 × 224 for ViT-B/32) and normalised with CLIP's statistics;
    prompts are "a photo of an indoor scene" / "... outdoor scene" and "a photo of a <room>". Tested only for its
    errors (no weights can be downloaded here); the model is loaded once per process and weights path.
    """

    def __init__(
        self,
        weights_path: str | Path,
        model_name: str = "ViT-B-32",
        rooms: Sequence[str] = REFERENCE_ROOMS,
        device: str = "cpu",
        batch_size: int = 64,
    ) -> None:
        self.path = Path(weights_path).expanduser()
        self.package = clip_package(self.path)
        self.model_name, self.rooms, self.device, self.batch_size = model_name, tuple(rooms), device, batch_size
        self.label_names = self.rooms

    def labels(self, frames: Frames) -> tuple[np.ndarray, np.ndarray]:
        import torch

        model = _load_clip(str(self.path), self.package, self.model_name, self.device)
        prompts = [*SCENE_PROMPTS, *(f"a photo of a {r}" for r in self.rooms)]
        with torch.inference_mode():
            text = torch.nn.functional.normalize(model.text(prompts).float(), dim=-1)  # [2 + R, D]
            feats = [model.image(self._pixels(frames.colors[c : c + self.batch_size], model.size))
                     for c in range(0, len(frames), self.batch_size)]  # fmt: skip
            image = torch.nn.functional.normalize(torch.cat(feats).float(), dim=-1)  # [F, D]
            sim = image @ text.T  # [F, 2 + R]
            indoor = torch.softmax(100.0 * sim[:, :2], dim=1)[:, 0]
            room = sim[:, 2:].argmax(dim=1)
        return indoor.cpu().numpy(), room.cpu().numpy().astype(np.int64)

    def _pixels(self, colors: np.ndarray, size: int) -> Any:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(colors)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", antialias=True).clamp(0, 1)
        mean = torch.tensor(CLIP_MEAN, device=x.device)[:, None, None]
        std = torch.tensor(CLIP_STD, device=x.device)[:, None, None]
        return (x - mean) / std  # [B, 3, size, size]


@attrs.frozen
class _Clip:
    image: Any  # pixels [B, 3, S, S] -> features [B, D]
    text: Any  # list of prompts -> features [P, D]
    size: int


@functools.lru_cache(maxsize=2)
def _load_clip(path: str, package: str, model_name: str, device: str) -> _Clip:
    """Load a CLIP model from local weights only (one per process, path and device)."""
    if package == "transformers":
        from transformers import CLIPModel, CLIPTokenizer

        model = CLIPModel.from_pretrained(path, local_files_only=True).to(device).eval()
        tok = CLIPTokenizer.from_pretrained(path, local_files_only=True)

        def text(prompts: list[str]) -> Any:
            return _tensor(model.get_text_features(**tok(prompts, padding=True, return_tensors="pt").to(device)))

        def image(px: Any) -> Any:
            return _tensor(model.get_image_features(pixel_values=px))

        return _Clip(image, text, int(model.config.vision_config.image_size))
    import open_clip

    model, _, _ = open_clip.create_model_and_transforms(model_name, pretrained=path, device=device)
    model.eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    size = model.visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    return _Clip(model.encode_image, lambda prompts: model.encode_text(tokenizer(prompts).to(device)), size)


def _tensor(out: Any) -> Any:
    """Features from a transformers call: a tensor, or (newer versions) an output object holding one."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    for name in ("image_embeds", "text_embeds", "pooler_output"):
        value = getattr(out, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"unexpected CLIP output {type(out).__name__}")
