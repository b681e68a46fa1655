"""Submanifold sparse 3-D convolution with two backends behind one module: spconv (GPU) and pure torch.

A submanifold convolution has an output at every input point and only reads the input points that exist:

    out[i] = bias + sum_k  W[:, a_k, b_k, c_k, :] @ feat[j]      j = the point at grid[i] + offset_k, same sample

with offset_k = (a_k - r, b_k - r, c_k - r), r = kernel_size // 2, the x offset varying slowest and z fastest
(``kernel_offsets``). This is spconv's own convention when its indices are (batch, x, y, z), so one weight
tensor [out, k, k, k, in] (spconv 2.3's layout, "KRSC") means the same thing under both backends and state dicts
are interchangeable.

Backends:
  * ``"torch"`` — ``neighbour_map`` hashes (batch, x, y, z) into one int64 key, sorts the keys and looks up the
    K offsets with ``torch.searchsorted``; the convolution then loops over the offsets and, for the point pairs
    present at each, accumulates ``feat[j] @ W_k`` into the output with ``index_add_`` (the centre offset is one
    dense matmul). Surface clouds have ~8 of 27 neighbours present, so this beat both the dense loop over all 27
    offsets and the vectorised form (gather [N, 27·C], one matmul): on one CPU thread at N=50k, C=64, forward
    141 / 320 / 545 ms and forward+backward 360 / 920 / 1196 ms (``python bench/sparse_conv.py --forms 50000``);
    it also saves only the present pairs' inputs for backward. Differentiable through autograd; CPU and CUDA;
    products accumulate in float32 (float64 input stays float64), the result has the matmul's dtype (the autocast
    dtype under autocast).
  * ``"spconv"`` — spconv's ``SubMConv3d`` on a ``SparseConvTensor`` built from (batch, x, y, z), called with this
    module's own weight and bias Parameters (on CPU tensors with spconv's Native algorithm on one torch thread,
    always in its training mode: its CPU path refuses the bias that eval mode fuses). spconv has no CPU backward,
    so on CPU it is refused where a gradient would be needed. One thread, because spconv 2.3.8's CPU scatter-add
    races when torch runs it on several: on 2 threads a full 9x9x9 block came out wrong in 40-50 of 50 calls,
    sparse clouds now and then (CI, 2026-11-21); on one thread, 0 of 50. Under autocast spconv casts its inputs to
    float16 (its own rule); the result is returned in the autocast dtype.
  * ``"auto"`` (default) — spconv when ``import spconv.pytorch`` works and the tensors are on CUDA, else torch.

On an H200 with spconv-cu126 2.3.8 the two backends agreed to ~3e-7 relative in the output and in the gradients
of feat, weight and bias (float32).

Several points in one voxel (duplicate coordinates) do not crash. In the torch backend the centre offset of
every point is the point itself, and a lookup at any other offset finds the lowest-index point of that voxel
(the others are never read as neighbours). spconv gives no such promise (its CPU build was seen to add up
several points of one voxel at some offsets), so with duplicates the two backends differ.

``cache``: pass one dict to all convolutions of a stage (same points); the neighbour pairs (torch) or the spconv
indice pairs are built by the first call and reused. A cache filled for a different number of points raises.

API (the PTv3 model relies on exactly these names):

    neighbour_map(grid_coord: LongTensor [N, 3], batch: LongTensor [N], kernel_size: int = 3,
                  bounds: (samples, largest grid value) | None = None) -> LongTensor [N, K]
    class SubMConv3d(torch.nn.Module):
        __init__(in_channels, out_channels, kernel_size=3, bias=True, backend="auto")   # "auto" | "torch" | "spconv"
        weight: Parameter [out, k, k, k, in]
        forward(feat [N, C_in], grid_coord [N, 3], batch [N], cache: dict | None = None,
                bounds: (samples, largest grid value) | None = None) -> [N, C_out]
    spconv_available() -> bool
    kernel_offsets(kernel_size: int, device=None) -> LongTensor [K, 3]
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math

import torch

BACKENDS = ("auto", "torch", "spconv")


@functools.cache
def spconv_available() -> bool:
    """True when ``import spconv.pytorch`` works (imported lazily: it is slow and optional)."""
    try:
        import spconv.pytorch  # noqa: F401
    except ImportError:
        return False
    return True


def kernel_offsets(kernel_size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Offsets [K, 3] (dx, dy, dz) in weight order: weight[:, a, b, c, :] pairs with (a - r, b - r, c - r)."""
    _check_kernel_size(kernel_size)
    r = kernel_size // 2
    grid = list(itertools.product(range(-r, r + 1), repeat=3))  # x slowest, z fastest
    return torch.tensor(grid, dtype=torch.int64, device=device)


def neighbour_map(
    grid_coord: torch.Tensor, batch: torch.Tensor, kernel_size: int = 3, bounds: tuple[int, int] | None = None
) -> torch.Tensor:
    """[N, K] index of the point at grid_coord[i] + offset_k in the same sample, or -1 where there is none.

    The centre column holds i itself; with several points in one voxel, other offsets find its lowest index.
    ``bounds``: (number of samples, largest grid value) for grid values >= 0, known to the caller (no host reads).
    """
    grid, batch = _check_points(grid_coord, batch)
    offsets = kernel_offsets(kernel_size, grid.device)  # [K, 3]
    n, r = grid.shape[0], kernel_size // 2
    if n == 0:
        return torch.empty(0, offsets.shape[0], dtype=torch.int64, device=grid.device)
    if bounds is None:
        grid = grid - grid.amin(0) + r  # [N, 3], >= r so every query stays >= 0
        batch = batch - batch.min()
        n_samples, side = int(batch.max()) + 1, int(grid.max()) + r + 1
    else:
        grid = grid + r
        n_samples, side = bounds[0], bounds[1] + 2 * r + 1
    if n_samples * side**3 >= 2**63:
        raise ValueError(f"grid extent {side} per axis is too large to hash (batch, x, y, z) into one int64")

    def key(b: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return ((b * side + g[..., 0]) * side + g[..., 1]) * side + g[..., 2]

    sorted_keys, order = torch.sort(key(batch, grid), stable=True)  # [N]; ties keep the lowest index first
    query = key(batch[:, None], grid[:, None, :] + offsets)  # [N, K]
    pos = torch.searchsorted(sorted_keys, query).clamp_(max=n - 1)  # [N, K]
    found = torch.where(sorted_keys[pos] == query, order[pos], -1)  # [N, K]
    found[:, offsets.shape[0] // 2] = torch.arange(n, device=grid.device)
    return found


class SubMConv3d(torch.nn.Module):
    """Submanifold k×k×k convolution over voxel points; one weight [out, k, k, k, in] for both backends."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True, backend: str = "auto"
    ) -> None:
        super().__init__()
        _check_kernel_size(kernel_size)
        if backend not in BACKENDS:
            raise ValueError(f"SubMConv3d backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "spconv" and not spconv_available():
            raise ImportError("SubMConv3d(backend='spconv') needs spconv: `import spconv.pytorch` failed")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.backend = kernel_size, backend
        k = kernel_size
        self.weight = torch.nn.Parameter(torch.empty(out_channels, k, k, k, in_channels))
        self.bias = torch.nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(±1/sqrt(fan_in)) for weight and bias, fan_in = in_channels * k³ (as spconv and nn.Conv3d)."""
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size**3)
        torch.nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            torch.nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        shape = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        return f"{shape}, bias={self.bias is not None}, backend={self.backend!r}"

    def resolved_backend(self, device: torch.device) -> str:
        """The backend a forward on `device` uses: "torch" or "spconv"."""
        if self.backend == "auto":
            return "spconv" if device.type == "cuda" and spconv_available() else "torch"
        return self.backend

    def forward(
        self,
        feat: torch.Tensor,
        grid_coord: torch.Tensor,
        batch: torch.Tensor,
        cache: dict | None = None,
        bounds: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """feat [N, C_in] at grid_coord [N, 3] of samples batch [N] -> [N, C_out]. ``bounds``: (number of samples,
        largest grid value) when the caller knows them, grid values >= 0; the neighbour pairs (torch) or spconv's
        sparse tensor are then built without reading them from the device (two GPU syncs)."""
        if feat.dim() != 2 or feat.shape[1] != self.in_channels:
            raise ValueError(
                f"SubMConv3d({self.extra_repr()}): feat must be [N, {self.in_channels}], got {tuple(feat.shape)}"
            )
        if grid_coord.shape[:1] != feat.shape[:1]:
            raise ValueError(f"SubMConv3d: grid_coord has {grid_coord.shape[0]} rows but feat has {feat.shape[0]}")
        cache = {} if cache is None else cache
        if self.resolved_backend(feat.device) == "spconv":
            return self._forward_spconv(feat, grid_coord, batch, cache, bounds)
        return self._forward_torch(feat, grid_coord, batch, cache, bounds)

    def _forward_torch(
        self, feat: torch.Tensor, grid: torch.Tensor, batch: torch.Tensor, cache: dict, bounds: tuple[int, int] | None
    ) -> torch.Tensor:
        rows, cols, counts = _cached(
            cache, f"subm{self.kernel_size}:torch", feat.shape[0], lambda: _pairs(grid, batch, self.kernel_size, bounds)
        )
        w = self.weight.flatten(1, 3).permute(1, 2, 0)  # [K, C_in, C_out]
        centre = w.shape[0] // 2
        dense = feat @ w[centre]  # [N, C_out]; the centre neighbour of every point is itself
        out_dtype = dense.dtype  # feat's dtype, or the autocast dtype
        acc = dense.to(torch.promote_types(out_dtype, torch.float32))  # [N, C_out]
        for k, (r, c) in enumerate(zip(rows.split(counts), cols.split(counts), strict=True)):
            if k != centre and r.numel():
                acc.index_add_(0, r, (feat[c] @ w[k]).to(acc.dtype))  # [P_k, C_out] into their output rows
        if self.bias is not None:
            acc = acc + self.bias.to(acc.dtype)
        return acc.to(out_dtype)

    def _forward_spconv(
        self, feat: torch.Tensor, grid: torch.Tensor, batch: torch.Tensor, cache: dict, bounds: tuple[int, int] | None
    ) -> torch.Tensor:
        needs_grad = torch.is_grad_enabled() and (feat.requires_grad or self.weight.requires_grad)
        if feat.device.type != "cuda" and needs_grad:
            raise RuntimeError(
                "SubMConv3d(backend='spconv'): spconv has no CPU backward; "
                "run it under torch.no_grad() or use backend='torch'"
            )
        conv = self._spconv_module(feat.device)
        conv.weight, conv.bias = self.weight, self.bias  # the same Parameters: one set of weights, two backends
        # Always spconv's training path: its eval path (fused bias) takes no fused bias on CPU and, on CUDA, skips
        # spconv's autocast cast to float16, running float32 SIMT kernels: 2.6 ms a call on an H200 (issue 6's
        # profile), against tensor-core kernels on the training path. Both compute the same convolution.
        conv.train(True)
        key = f"subm{self.kernel_size}:spconv"
        base = _cached(cache, key, feat.shape[0], lambda: _sparse_tensor(grid, batch, bounds))
        with _one_thread_on_cpu(feat.device):
            out = conv(base.replace_feature(feat.contiguous()))
        base.indice_dict = out.indice_dict  # later convolutions of the stage reuse the indice pairs
        result = out.features
        if torch.is_autocast_enabled(feat.device.type):
            return result.to(torch.get_autocast_dtype(feat.device.type))
        return result

    def _spconv_module(self, device: torch.device) -> torch.nn.Module:
        """spconv's SubMConv3d for this device type, kept out of the module tree (state dicts hold only ours).

        CPU tensors get spconv's Native algorithm, the only one it runs on CPU (a CUDA build would otherwise pick
        its implicit-GEMM algorithm for them too); on CUDA spconv chooses.
        """
        convs = self.__dict__.setdefault("_spconv_convs", {})
        if device.type not in convs:
            import spconv.pytorch as spconv

            k = self.kernel_size
            algo = spconv.ConvAlgo.Native if device.type == "cpu" else None
            conv = spconv.SubMConv3d(
                self.in_channels, self.out_channels, k, bias=self.bias is not None, indice_key=f"subm{k}", algo=algo
            )
            if tuple(conv.weight.shape) != tuple(self.weight.shape):
                raise RuntimeError(f"spconv weight layout {tuple(conv.weight.shape)} differs from [out, k, k, k, in]")
            convs[device.type] = conv
        return convs[device.type]


@contextlib.contextmanager
def _one_thread_on_cpu(device: torch.device):
    """torch's intra-op threads set to 1 on CPU for the block (spconv's CPU scatter-add races on several)."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _pairs(
    grid: torch.Tensor, batch: torch.Tensor, kernel_size: int, bounds: tuple[int, int] | None
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Present (output row, input row) pairs grouped by offset: rows [P], cols [P], counts per offset (K ints)."""
    nbr = neighbour_map(grid, batch, kernel_size, bounds)  # [N, K]
    k, rows = (nbr.T >= 0).nonzero(as_tuple=True)  # [P] each, sorted by offset
    cols = nbr[rows, k]  # [P]
    counts = torch.bincount(k, minlength=nbr.shape[1]).tolist()
    return rows, cols, counts


def _sparse_tensor(grid: torch.Tensor, batch: torch.Tensor, bounds: tuple[int, int] | None = None):
    """spconv's ``SparseConvTensor`` over these points (no features yet). Without ``bounds`` the grid and batch
    are shifted to start at 0 and their extents read from the device."""
    import spconv.pytorch as spconv

    grid, batch = _check_points(grid, batch)
    if grid.shape[0] == 0:
        raise ValueError("SubMConv3d(backend='spconv') needs at least one point")
    if bounds is None:
        grid = grid - grid.amin(0)  # [N, 3]; a shift keeps every neighbourhood
        batch = batch - batch.min()
        shape, n_samples = (grid.amax(0) + 1).tolist(), int(batch.max()) + 1
    else:
        n_samples, top = bounds
        shape = [top + 1] * 3
    indices = torch.cat([batch[:, None], grid], dim=1).to(torch.int32)  # [N, 4] (batch, x, y, z)
    features = torch.empty(grid.shape[0], 0, device=grid.device)  # [N, 0]; each call brings its own
    return spconv.SparseConvTensor(features, indices, shape, n_samples)


def _cached(cache: dict, key: str, n: int, build):
    """cache[key] built once per stage; refuse an entry that was built for another point set."""
    entry = cache.get(key)
    if entry is None:
        entry = cache[key] = (n, build())
    if entry[0] != n:
        raise ValueError(
            f"SubMConv3d cache entry {key!r} was built for {entry[0]} points, not {n}: use one cache per stage"
        )
    return entry[1]


def _check_kernel_size(kernel_size: int) -> None:
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd positive int (submanifold centre), got {kernel_size!r}")


def _check_points(grid_coord: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if grid_coord.dim() != 2 or grid_coord.shape[1] != 3:
        raise ValueError(f"grid_coord must have shape [N, 3], got {tuple(grid_coord.shape)}")
    if batch.shape != grid_coord.shape[:1]:
        raise ValueError(f"batch must have shape [{grid_coord.shape[0]}] like grid_coord, got {tuple(batch.shape)}")
    for name, t in (("grid_coord", grid_coord), ("batch", batch)):
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor, got {t.dtype}")
    return grid_coord.to(torch.int64), batch.to(torch.int64)
