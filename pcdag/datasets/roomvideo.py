"""Synthetic room-walkthrough videos with ground truth: colour, z-depth, camera poses and intrinsics.

A room is a closed box (floor at z = 0, centred on x = y = 0, 3.5–7 m × 3–6 m × 2.4–3 m) with a few furniture
boxes against the walls and a low table in the middle. Every surface carries a procedural texture evaluated in
its own metric (u, v) coordinates, so it is fixed in the world and never repeats: hashed multi-octave value noise
(luminance detail down to ~1 cm), low-frequency colour blobs and sharp-edged stains. Octaves finer than the pixel
footprint are faded out (a cheap mip-map), so distant walls do not alias. Shading is a mild Lambert term from a
light under the ceiling (view-independent, as for a diffuse surface).

Frames are ray cast for all pixels at once: each ray meets the room's inside (exit of the room box) and the
furniture (slab test); the nearest hit gives depth, face and texture coordinates. The camera walks at constant
angular speed along a wobbly ellipse around the room centre at eye height (above the table, inside the ring of
furniture), looking across the room with a swaying yaw and pitch, so consecutive frames always have baseline (the
path never stops to rotate on the spot).

Conventions: OpenCV camera (x right, y down, z forward), poses camera-to-world in each room's own frame, pixel
centres at integer coordinates, depth along the optical axis. Videos with ``n_rooms > 1`` show rooms one after
another with hard cuts; ``room_ids`` says which room each frame shows (each room has its own world frame).
"""

from __future__ import annotations

import io
import os
import tempfile
from fractions import Fraction
from pathlib import Path

import attrs
import numpy as np

from pcdag.atomic import atomic_write_bytes
from pcdag.datasets.video import sidecar_path
from pcdag.graphs.frames import Frames

HFOV_DEG = 70.0
RAY_BLOCK = 8192
EYE_HEIGHT = (1.35, 1.65)  # metres
OCTAVES = (1.5 * 2.0 ** np.arange(7)).astype(np.float32)  # [7] cycles per metre of the luminance noise (finest ~1 cm)
_K = np.array([0x8DA6B343, 0xD8163841, 0xCB1AB31F, 0x7FEB352D, 0x846CA68B], np.uint32)  # hash multipliers


@attrs.define(eq=False)
class RoomVideo:
    """Rendered frames of one synthetic walkthrough and its ground truth."""

    frames: np.ndarray  # [F, H, W, 3] uint8
    depths: np.ndarray  # [F, H, W] float32 metres along the optical axis, 0 = no hit
    poses: np.ndarray  # [F, 4, 4] float32 camera-to-world, OpenCV convention
    intrinsics: np.ndarray  # [3, 3] float32
    fps: float
    room_ids: np.ndarray  # [F] int64: which room each frame shows

    def to_frames(self) -> Frames:
        """The video as ``Frames`` with everything known (timestamps, depth, poses, intrinsics)."""
        f = len(self.frames)
        return Frames(
            colors=self.frames,
            frame_ids=[f"{i:06d}" for i in range(f)],
            timestamps=np.arange(f, dtype=np.float64) / self.fps,
            depths=self.depths,
            poses=self.poses,
            intrinsics=self.intrinsics,
            meta={"synthetic": True},
        )


# ------------------------------------------------------------------------------------------- noise


def _mix(h: np.ndarray) -> np.ndarray:
    """Finalise a uint32 key into 32 well-mixed bits (multiply-xorshift; in place)."""
    h ^= h >> np.uint32(16)
    h *= _K[3]
    h ^= h >> np.uint32(15)
    h *= _K[4]
    h ^= h >> np.uint32(16)
    return h


def value_noise(u: np.ndarray, v: np.ndarray, seed: np.ndarray, channels: int = 1) -> np.ndarray:
    """Smooth lattice noise in [0, 1] at (u, v) (lattice spacing 1), one independent field per ``seed``;
    ``channels`` (≤ 3) independent fields from 10-bit slices of one hash ([P] for 1 channel, else [P, C])."""
    iu, iv = np.floor(u), np.floor(v)
    su, sv = u - iu, v - iv
    su, sv = su * su * (3 - 2 * su), sv * sv * (3 - 2 * sv)  # smoothstep weights
    s = seed.astype(np.uint32) * _K[2]
    a0 = iu.astype(np.int32).view(np.uint32) * _K[0]  # lattice key terms; (i + 1) * K = i * K + K (mod 2^32)
    b = iv.astype(np.int32).view(np.uint32) * _K[1]
    a1, b0, b1 = a0 + _K[0], b ^ s, (b + _K[1]) ^ s
    corners = [_mix(a ^ b) for a, b in ((a0, b0), (a1, b0), (a0, b1), (a1, b1))]
    if channels == 1:
        c00, c10, c01, c11 = ((h >> np.uint32(8)).astype(np.float32) * np.float32(2.0**-24) for h in corners)
    else:
        shifts = np.arange(channels, dtype=np.uint32) * np.uint32(10)  # [C]
        c00, c10, c01, c11 = (((h[:, None] >> shifts) & np.uint32(1023)).astype(np.float32) / 1023 for h in corners)
        su, sv = su[:, None], sv[:, None]
    return (c00 + (c10 - c00) * su) * (1 - sv) + (c01 + (c11 - c01) * su) * sv


def texture(face: np.ndarray, u: np.ndarray, v: np.ndarray, footprint: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] [P, 3] of surface points: face ids [P] (seeding the noise), metric (u, v) [P] on the face,
    pixel footprint [P] in metres (octaves finer than ~2 pixels fade out), ``palette`` [faces, 2, 3] colours."""
    seed = face.astype(np.int64) * 64
    detail = np.zeros_like(u)  # [P]
    for k, freq in enumerate(OCTAVES):
        weight = np.clip(2.0 - 4.0 * freq * footprint, 0.0, 1.0)  # 1 below Nyquist/2, 0 past Nyquist
        detail += weight * 0.8**k * (value_noise(u * freq, v * freq, seed + k) - 0.5)
    tint = value_noise(u * 1.3, v * 1.3, seed + 20, channels=3) - 0.5  # [P, 3]
    stain = value_noise(u * 3.0 + 7.1, v * 3.0 - 2.3, seed + 30)
    width = np.maximum(0.03, 3.0 * footprint)
    mask = np.clip((stain - 0.62) / width, 0.0, 1.0)[:, None]  # [P, 1] sharp-edged blobs
    base = palette[face, 0] * (1 - mask) + palette[face, 1] * mask  # [P, 3]
    return np.clip(base * (1.0 + 0.5 * tint) * (1.0 + 1.4 * detail[:, None]), 0.0, 1.0)


# -------------------------------------------------------------------------------------------- scene


@attrs.define(eq=False)
class Room:
    size: np.ndarray  # [3] lx, ly, h
    boxes: np.ndarray  # [B, 2, 3] furniture boxes (min corner, max corner)
    palette: np.ndarray  # [6 + 6B, 2, 3] two colours per face
    light: np.ndarray  # [3] point light position

    @property
    def bounds(self) -> np.ndarray:
        lx, ly, h = self.size
        return np.array([[-lx / 2, -ly / 2, 0.0], [lx / 2, ly / 2, h]])  # [2, 3]


def _overlaps(box: np.ndarray, others: list[np.ndarray], margin: float = 0.1) -> bool:
    return any(bool(np.all(box[0] < o[1] + margin) and np.all(o[0] < box[1] + margin)) for o in others)


def make_room(rng: np.random.Generator) -> Room:
    """A random room: 2–4 cabinets/shelves against the walls and a low central table."""
    lx, ly, h = rng.uniform(3.5, 7.0), rng.uniform(3.0, 6.0), rng.uniform(2.4, 3.0)
    half = np.array([lx / 2, ly / 2])
    boxes: list[np.ndarray] = []
    for _ in range(int(rng.integers(2, 5))):
        for _try in range(20):
            axis, side = int(rng.integers(2)), rng.choice([-1.0, 1.0])  # which wall (x or y), which side
            along, depth, height = rng.uniform(0.6, 1.6), rng.uniform(0.3, 0.55), rng.uniform(0.5, 2.0)
            centre = rng.uniform(-1, 1) * (half[1 - axis] - along / 2 - 0.05)
            lo, hi = np.zeros(3), np.array([0.0, 0.0, height])
            wall = side * half[axis]
            lo[axis], hi[axis] = sorted((wall, wall - side * depth))
            lo[1 - axis], hi[1 - axis] = centre - along / 2, centre + along / 2
            box = np.stack([lo, hi])
            if not _overlaps(box, boxes):
                boxes.append(box)
                break
    t = rng.uniform(0.5, 0.9, 2) / 2  # central table half sizes
    boxes.append(np.array([[-t[0], -t[1], 0.0], [t[0], t[1], rng.uniform(0.4, 0.75)]]))
    n_faces = 6 * (1 + len(boxes))
    palette = rng.uniform(0.25, 0.85, (n_faces, 2, 3)) ** 0.8
    light = np.array([rng.uniform(-0.3, 0.3) * lx, rng.uniform(-0.3, 0.3) * ly, h - 0.2])
    return Room(np.array([lx, ly, h]), np.stack(boxes), palette.astype(np.float32), light)


def camera_path(rng: np.random.Generator, room: Room, n: int) -> np.ndarray:
    """``n`` camera-to-world poses [n, 4, 4] on a wobbly ellipse around the room centre, looking across the room."""
    s = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)  # [n]
    c = rng.uniform(0, 2 * np.pi, 4)  # phases of the sways
    phi = rng.uniform(0, 2 * np.pi) + rng.choice([-1, 1]) * rng.uniform(0.55, 0.8) * 2 * np.pi * s
    radius = 0.25 * (1.0 + 0.15 * np.sin(3 * phi + c[0]))
    eye = rng.uniform(*EYE_HEIGHT)
    pos = np.stack(
        [
            radius * room.size[0] * np.cos(phi),
            radius * room.size[1] * np.sin(phi),
            eye + 0.08 * np.sin(2 * np.pi * 1.3 * s + c[1]),
        ],
        axis=1,
    )  # [n, 3]
    yaw = phi + np.pi + 0.5 * np.sin(2 * np.pi * 0.8 * s + c[2])  # across the room, swaying
    pitch = -0.3 + 0.1 * np.sin(2 * np.pi * 0.6 * s + c[3])
    fwd = np.stack([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)], axis=1)  # [n, 3]
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right, axis=1, keepdims=True)
    down = np.cross(fwd, right)
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, :3, :3] = np.stack([right, down, fwd], axis=2)  # columns: camera x, y, z in world
    poses[:, :3, 3] = pos
    return poses


def intrinsics_for(width: int, height: int) -> np.ndarray:
    """Pinhole of ``HFOV_DEG`` horizontal field of view, principal point at the image centre."""
    f = width / 2 / np.tan(np.radians(HFOV_DEG) / 2)
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], np.float64)


# ------------------------------------------------------------------------------------------ ray cast


def _pick(axis: np.ndarray, per_axis: list[np.ndarray]) -> np.ndarray:
    """``per_axis[axis[i]][i]`` for three [P] arrays."""
    return np.where(axis == 0, per_axis[0], np.where(axis == 1, per_axis[1], per_axis[2]))


def _room_exit(o: np.ndarray, inv: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance from ``o`` (inside the room) along rays with inverse directions ``inv`` [3, P] to the walls,
    and the face id (axis * 2 + side, side 1 = the max face)."""
    t = [np.where(inv[a] > 0, bounds[1, a] - o[a], bounds[0, a] - o[a]) * inv[a] for a in range(3)]  # 3 x [P]
    best, axis = t[0], np.zeros(inv.shape[1], np.int64)
    for a in (1, 2):
        closer = t[a] < best
        best, axis = np.where(closer, t[a], best), np.where(closer, a, axis)
    return best, axis * 2 + (_pick(axis, list(inv)) > 0)


def _box_entry(o: np.ndarray, inv: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest entry distance into any box [P] (inf = none) and its face id 6 + 6 b + axis * 2 + side."""
    best = np.full(inv.shape[1], np.inf, inv.dtype)  # [P]
    face = np.zeros(inv.shape[1], np.int64)
    for b, (lo, hi) in enumerate(boxes):  # a handful of boxes; every ray at once (slab test)
        t1 = [(lo[a] - o[a]) * inv[a] for a in range(3)]
        t2 = [(hi[a] - o[a]) * inv[a] for a in range(3)]
        t_in, axis = np.minimum(t1[0], t2[0]), np.zeros(inv.shape[1], np.int64)
        t_out = np.maximum(t1[0], t2[0])
        for a in (1, 2):
            near = np.minimum(t1[a], t2[a])
            later = near > t_in
            t_in, axis = np.where(later, near, t_in), np.where(later, a, axis)
            t_out = np.minimum(t_out, np.maximum(t1[a], t2[a]))
        hit = (t_in <= t_out) & (t_in > 1e-6) & (t_in < best)
        best = np.where(hit, t_in, best)
        face = np.where(hit, 6 + 6 * b + axis * 2 + (_pick(axis, list(inv)) < 0), face)  # max face when going -
    return best, face


def camera_rays(k: np.ndarray, width: int, height: int) -> np.ndarray:
    """Ray directions [3, H*W] float32 through every pixel centre, with unit z (so distance = z-depth)."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    k = k.astype(np.float32)
    return np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)]).reshape(3, -1)


def render_frame(room: Room, pose: np.ndarray, rays: np.ndarray, focal: float) -> tuple[np.ndarray, np.ndarray]:
    """Colour [P, 3] uint8 and z-depth [P] float32 along ``rays`` [3, P] (from ``camera_rays``) of a pose.

    Rays go in blocks of ``RAY_BLOCK``: small temporaries stay in the allocator's cache (about 2x faster than
    whole-frame arrays, which the allocator maps and page-faults afresh for every operation)."""
    parts = [_render_rays(room, pose, rays[:, i : i + RAY_BLOCK], focal) for i in range(0, rays.shape[1], RAY_BLOCK)]
    return np.concatenate([c for c, _ in parts]), np.concatenate([t for _, t in parts])


def _render_rays(room: Room, pose: np.ndarray, rays: np.ndarray, focal: float) -> tuple[np.ndarray, np.ndarray]:
    """``render_frame`` for one block of rays."""
    d = pose[:3, :3].astype(np.float32) @ rays  # [3, P] world directions
    o = pose[:3, 3].astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = 1.0 / d  # [3, P]; ±inf along axes the ray is parallel to
    t_room, f_room = _room_exit(o, inv, room.bounds.astype(np.float32))
    t_box, f_box = _box_entry(o, inv, room.boxes.astype(np.float32))
    hit_box = t_box < t_room
    t = np.where(hit_box, t_box, t_room)  # [P] z-depth, because rays have unit camera z
    face = np.where(hit_box, f_box, f_room)
    p = o[:, None] + t * d  # [3, P] hit points
    axis = (face % 6) // 2  # the face's normal axis
    u, v = np.where(axis == 0, p[1], p[0]), np.where(axis == 2, p[1], p[2])  # in-plane metric coordinates
    dd = np.sum(d * d, axis=0)
    dn = np.maximum(np.abs(_pick(axis, list(d))), 0.2 * np.sqrt(dd))  # |d · n|, floored at grazing angles
    rgb = texture(face, u, v, t * dd / (focal * dn), room.palette)  # footprint: metres per pixel on the surface
    to_light = room.light.astype(np.float32)[:, None] - p  # [3, P]
    cos = np.abs(_pick(axis, list(to_light))) / np.sqrt(np.sum(to_light * to_light, axis=0))
    color = np.round(np.clip(rgb * (0.7 + 0.3 * cos)[:, None], 0, 1) * 255).astype(np.uint8)
    return color, t


def render_room_video(
    seed: int, n_frames: int = 48, width: int = 320, height: int = 240, fps: float = 10.0, n_rooms: int = 1
) -> RoomVideo:
    """Render a walkthrough of ``n_rooms`` random rooms (frames split evenly between them, hard cuts)."""
    if n_rooms < 1 or n_frames < n_rooms:
        raise ValueError(f"render_room_video: need n_rooms >= 1 and n_frames >= n_rooms, got {n_frames}, {n_rooms}")
    if width < 8 or height < 8 or fps <= 0:
        raise ValueError(f"render_room_video: bad size {width}x{height} or fps {fps}")
    rng = np.random.default_rng(seed)
    k = intrinsics_for(width, height)
    rays = camera_rays(k, width, height)
    frames = np.empty((n_frames, height, width, 3), np.uint8)
    depths = np.empty((n_frames, height, width), np.float32)
    poses = np.empty((n_frames, 4, 4), np.float32)
    room_ids = np.empty(n_frames, np.int64)
    for r, idx in enumerate(np.array_split(np.arange(n_frames), n_rooms)):
        room = make_room(rng)
        path = camera_path(rng, room, len(idx))
        for i, pose in zip(idx, path, strict=True):
            color, depth = render_frame(room, pose, rays, float(k[0, 0]))
            frames[i], depths[i] = color.reshape(height, width, 3), depth.reshape(height, width)
        poses[idx], room_ids[idx] = path, r
    return RoomVideo(frames, depths, poses, k.astype(np.float32), float(fps), room_ids)


# -------------------------------------------------------------------------------------------- files


def write_video(path: str | os.PathLike, video: RoomVideo, crf: int = 18) -> None:
    """Write ``video`` as H.264 mp4 (yuv420p, ``crf``) and its ``.cameras.npz`` sidecar, both atomically."""
    import av

    path = Path(path)
    _, height, width, _ = video.frames.shape
    if width % 2 or height % 2:
        raise ValueError(f"{path}: H.264 (yuv420p) needs even frame sides, got {width}x{height}")
    buf = io.BytesIO()
    arrays = {"poses": video.poses, "intrinsics": video.intrinsics, "depths": video.depths}
    np.savez_compressed(buf, **arrays, room_ids=video.room_ids, fps=np.float64(video.fps))
    atomic_write_bytes(sidecar_path(path), buf.getvalue())  # first: a video never appears without its cameras
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with av.open(tmp, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(video.fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": str(crf), "preset": "medium"}
            for rgb in video.frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
            container.mux(stream.encode(None))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_video_folder(root: str | os.PathLike, n_videos: int, seed: int, **kw) -> list[Path]:
    """``n_videos`` rendered videos ``root/video_XXX.mp4`` (+ sidecars), seeds ``seed``, ``seed + 1``, ...;
    ``kw`` goes to ``render_room_video``."""
    root = Path(root)
    paths = []
    for i in range(n_videos):
        path = root / f"video_{i:03d}.mp4"
        write_video(path, render_room_video(seed + i, **kw))
        paths.append(path)
    return paths
