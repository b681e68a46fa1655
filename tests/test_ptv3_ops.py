"""Property tests of the PTv3 low-level ops: serialisation codes, segment reductions, submanifold convolution."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pcdag.nodes.backbones.ptv3.serialization import ORDERS, decode, depth_for, encode, encode_orders
from pcdag.ops.segment import segment_max, segment_mean, segment_sum
from pcdag.ops.sparse_conv import (
    SubMConv3d,
    _one_thread_on_cpu,
    kernel_offsets,
    neighbour_map,
    spconv_available,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@st.composite
def grids(draw, max_n: int = 40, max_depth: int = 16, max_batch: int = 4):
    """(grid_coord [N, 3], batch [N], depth): coords fit in `depth` bits; some rows repeat."""
    depth = draw(st.integers(1, max_depth))
    coord = st.integers(0, (1 << depth) - 1)
    rows = draw(st.lists(st.tuples(st.integers(0, max_batch), coord, coord, coord), max_size=max_n))
    rows += draw(st.lists(st.sampled_from(rows), max_size=5)) if rows else []  # duplicates
    table = torch.tensor(rows, dtype=torch.int64).reshape(-1, 4)  # [N, 4]
    return table[:, 1:], table[:, 0], depth


# ---- serialisation -------------------------------------------------------------------------------------------


@settings(max_examples=50)
@given(grids(), st.sampled_from(ORDERS), st.sampled_from(DEVICES))
def test_decode_inverts_encode(data, order, device):
    grid, batch, depth = (t.to(device) if torch.is_tensor(t) else t for t in data)
    code = encode(grid, batch, order, depth)
    back, back_batch = decode(code, order, depth)
    assert code.dtype == torch.int64 and code.device == grid.device
    assert torch.equal(back, grid) and torch.equal(back_batch, batch)
    assert bool((code >> (3 * depth) == batch).all())


def bitwise_reference(grid: torch.Tensor, batch: torch.Tensor, order: str, depth: int) -> torch.Tensor:
    """Codes straight from the definitions, one bit at a time: Skilling's AxesToTranspose with its loops as
    written (excess-work undo, Gray encode, then t from every set bit of the last axis), then Morton interleave."""
    x, y, z = (int(v) for v in grid)
    if order.endswith("-trans"):
        x, y = y, x
    axes = [x, y, z]
    if order.startswith("hilbert"):
        q = 1 << (depth - 1)
        while q > 1:
            p = q - 1
            for i in range(3):
                if axes[i] & q:
                    axes[0] ^= p
                else:
                    t = (axes[0] ^ axes[i]) & p
                    axes[0] ^= t
                    axes[i] ^= t
            q >>= 1
        for i in (1, 2):
            axes[i] ^= axes[i - 1]
        t, q = 0, 1 << (depth - 1)
        while q > 1:
            if axes[2] & q:
                t ^= q - 1
            q >>= 1
        axes = [a ^ t for a in axes]
    code = 0
    for i in range(depth):
        for a, place in zip(axes, (2, 1, 0), strict=True):
            code |= ((a >> i) & 1) << (3 * i + place)
    return (int(batch) << (3 * depth)) | code


@settings(max_examples=60)
@given(grids(max_batch=1000), st.lists(st.sampled_from(ORDERS), min_size=1, max_size=6), st.sampled_from(DEVICES))
def test_stacked_encoding_equals_the_bitwise_definition(data, orders, device):
    """The vectorised pass (shift-and-mask spreading, all orders stacked, log-step Gray prefix) gives, bit for bit,
    the codes of the one-bit-at-a-time definition, for any list of orders (repeats, any mix)."""
    grid, batch, depth = data
    codes = encode_orders(grid.to(device), batch.to(device), tuple(orders), depth).cpu()  # [R, N]
    want = [[bitwise_reference(g, b, order, depth) for g, b in zip(grid, batch, strict=True)] for order in orders]
    assert codes.tolist() == want
    for r, order in enumerate(orders):
        assert torch.equal(encode(grid, batch, order, depth), codes[r])


@settings(max_examples=50)
@given(grids(max_batch=1000), st.sampled_from(ORDERS))
def test_codes_unique_per_voxel_and_batch_most_significant(data, order):
    grid, batch, depth = data
    code = encode(grid, batch, order, depth)
    n_voxels = torch.unique(torch.cat([batch[:, None], grid], dim=1), dim=0).shape[0]
    assert torch.unique(code).numel() == n_voxels
    later = batch[:, None] < batch[None, :]  # [N, N]: sample of i comes before sample of j
    assert bool((code[:, None] < code[None, :])[later].all())


@settings(max_examples=20)
@given(st.integers(1, 5), st.sampled_from(("hilbert", "hilbert-trans")))
def test_hilbert_steps_between_face_neighbours(depth, order):
    side = 1 << depth
    grid = torch.tensor(list(itertools.product(range(side), repeat=3)))  # [side³, 3] full cube
    code = encode(grid, torch.zeros(len(grid), dtype=torch.int64), order, depth)
    assert torch.equal(torch.sort(code).values, torch.arange(side**3))  # a bijection onto 0..8^d-1
    walk = grid[torch.argsort(code)]  # [side³, 3] along the curve
    assert bool(((walk[1:] - walk[:-1]).abs().sum(1) == 1).all())


@settings(max_examples=40)
@given(st.data(), st.sampled_from(ORDERS))
def test_aligned_blocks_are_contiguous_code_ranges(data, order):
    depth = data.draw(st.integers(1, 10))
    k = data.draw(st.integers(0, min(depth, 4)))
    corner = torch.tensor([data.draw(st.integers(0, (1 << (depth - k)) - 1)) for _ in range(3)]) << k
    block = corner + torch.tensor(list(itertools.product(range(1 << k), repeat=3)))  # [8^k, 3]
    code = torch.sort(encode(block, torch.zeros(len(block), dtype=torch.int64), order, depth)).values
    assert torch.equal(code - code[0], torch.arange(len(block)))
    assert int(code[0]) % len(block) == 0


def test_z_order_puts_x_first_in_each_bit_triple():
    grid = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [2, 0, 0], [3, 3, 3]])
    code = encode(grid, torch.tensor([0, 0, 0, 0, 1]), "z", 2)
    assert code.tolist() == [0b100, 0b010, 0b001, 0b100000, (1 << 6) | 0b111111]
    hilbert = encode(grid, torch.zeros(5, dtype=torch.int64), "hilbert", 2)
    assert hilbert.tolist() != code.tolist()


@settings(max_examples=40)
@given(grids(), st.sampled_from(("z", "hilbert")))
def test_transposed_order_is_plain_order_of_swapped_coords(data, order):
    grid, batch, depth = data
    swapped = grid[:, [1, 0, 2]]
    assert torch.equal(encode(grid, batch, f"{order}-trans", depth), encode(swapped, batch, order, depth))


@settings(max_examples=40)
@given(grids(max_depth=15))
def test_depth_for_is_bit_length_of_max_plus_one(data):
    grid, _, _ = data
    top = int(grid.max()) if grid.numel() else 0
    assert depth_for(grid) == (top + 1).bit_length()
    assert bool((grid < (1 << depth_for(grid))).all())


def test_serialisation_rejects_bad_input():
    grid, batch = torch.tensor([[0, 1, 2]]), torch.tensor([0])
    with pytest.raises(ValueError, match=">= 0"):
        encode(torch.tensor([[0, -1, 2]]), batch, "z", 4)
    with pytest.raises(ValueError, match="depth"):
        encode(grid, batch, "z", 17)
    with pytest.raises(ValueError, match="does not fit"):
        encode(torch.tensor([[0, 16, 2]]), batch, "z", 4)
    with pytest.raises(ValueError, match="unknown serialisation order 'peano'"):
        encode(grid, batch, "peano", 4)
    with pytest.raises(ValueError, match="depth 17"):
        depth_for(torch.tensor([[1 << 16, 0, 0]]))
    with pytest.raises(ValueError, match="batch"):
        encode(grid, torch.tensor([-1]), "z", 4)
    with pytest.raises(TypeError, match="integer"):
        encode(grid.float(), batch, "z", 4)


# ---- segment reductions --------------------------------------------------------------------------------------


def segment_reference(values: np.ndarray, index: np.ndarray, size: int) -> dict[str, np.ndarray]:
    out = {name: np.zeros((size, values.shape[1])) for name in ("sum", "mean", "max")}
    for m in range(size):
        rows = values[index == m]
        if len(rows):
            out["sum"][m], out["mean"][m], out["max"][m] = rows.sum(0), rows.mean(0), rows.max(0)
    return out


@settings(max_examples=40)
@given(st.integers(0, 30), st.integers(1, 8), st.integers(1, 4), st.integers(0, 2**31))
def test_segment_ops_match_loop_reference(n, size, channels, seed):
    gen = torch.Generator().manual_seed(seed)
    values = torch.randn(n, channels, generator=gen, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, size, (n,), generator=gen)
    ref = segment_reference(values.detach().numpy(), index.numpy(), size)
    got = {"sum": segment_sum, "mean": segment_mean, "max": segment_max}
    for name, fn in got.items():
        np.testing.assert_allclose(fn(values, index, size).detach().numpy(), ref[name], atol=1e-12, err_msg=name)
    segment_max(values, index, size).sum().backward()  # gradient goes to the arg-max row of each segment
    expected = np.zeros((n, channels))
    for m in np.unique(index.numpy()):
        rows = np.flatnonzero(index.numpy() == m)
        expected[rows[values.detach().numpy()[rows].argmax(0)], np.arange(channels)] = 1.0
    np.testing.assert_array_equal(values.grad.numpy(), expected)
    values.grad = None
    segment_mean(values, index, size).sum().backward()
    count = np.bincount(index.numpy(), minlength=size)[index.numpy()]  # [N]
    np.testing.assert_allclose(values.grad.numpy(), np.repeat(1.0 / count[:, None], channels, 1))


def test_segment_ops_reject_out_of_range_index():
    with pytest.raises(ValueError, match=r"0\.\.2"):
        segment_sum(torch.ones(3, 2), torch.tensor([0, 3, 1]), 3)
    with pytest.raises(ValueError, match="shape"):
        segment_max(torch.ones(3, 2), torch.tensor([0, 1]), 3)


# ---- sparse convolution --------------------------------------------------------------------------------------


@st.composite
def voxel_clouds(draw, max_n: int = 30, extent: int = 5, duplicates: bool = True):
    """Small random voxel clouds: (grid [N, 3], batch [N]) with coords in 0..extent-1 and up to two samples."""
    seed = draw(st.integers(0, 2**31))
    n = draw(st.integers(1, max_n))
    gen = torch.Generator().manual_seed(seed)
    rows = torch.cat([torch.randint(0, 2, (n, 1), generator=gen), torch.randint(0, extent, (n, 3), generator=gen)], 1)
    if not duplicates:
        rows = torch.unique(rows, dim=0)[torch.randperm(len(torch.unique(rows, dim=0)), generator=gen)]
    return rows[:, 1:].contiguous(), rows[:, 0].contiguous()


def brute_neighbours(grid: torch.Tensor, batch: torch.Tensor, kernel_size: int) -> list[list[int]]:
    """The documented rule by scanning: the point itself at the centre, else the lowest index at grid + offset."""
    offsets = list(itertools.product(range(-(kernel_size // 2), kernel_size // 2 + 1), repeat=3))
    points = [(b, *g) for b, g in zip(batch.tolist(), grid.tolist(), strict=True)]
    first: dict[tuple[int, ...], int] = {}
    for j, p in enumerate(points):
        first.setdefault(p, j)
    table = []
    for i, (b, x, y, z) in enumerate(points):
        row = [first.get((b, x + dx, y + dy, z + dz), -1) for dx, dy, dz in offsets]
        row[len(offsets) // 2] = i
        table.append(row)
    return table


@settings(max_examples=30)
@given(voxel_clouds(), st.sampled_from((1, 3, 5)))
def test_neighbour_map_matches_scan(cloud, kernel_size):
    grid, batch = cloud
    want = brute_neighbours(grid, batch, kernel_size)
    assert neighbour_map(grid, batch, kernel_size).tolist() == want
    bounds = (int(batch.max()) + 1, int(grid.max()))  # what the backbone passes instead of reading the device
    assert neighbour_map(grid, batch, kernel_size, bounds).tolist() == want


@settings(max_examples=25)
@given(voxel_clouds(max_n=20), st.integers(1, 4), st.integers(1, 4), st.booleans())
def test_torch_conv_matches_dense_reference(cloud, c_in, c_out, bias):
    grid, batch = cloud
    torch.manual_seed(0)
    conv = SubMConv3d(c_in, c_out, bias=bias, backend="torch").double()
    feat = torch.randn(len(grid), c_in, dtype=torch.float64)
    weight = conv.weight.detach()  # [out, 3, 3, 3, in]
    expected = torch.zeros(len(grid), c_out, dtype=torch.float64)
    nbrs = brute_neighbours(grid, batch, 3)
    for i, (a, b, c) in itertools.product(range(len(grid)), itertools.product(range(3), repeat=3)):
        j = nbrs[i][9 * a + 3 * b + c]
        if j >= 0:
            expected[i] += weight[:, a, b, c, :] @ feat[j]
    if bias:
        expected += conv.bias.detach()
    torch.testing.assert_close(conv(feat, grid, batch), expected)


def test_torch_conv_gradcheck():
    torch.manual_seed(0)
    grid = torch.tensor([[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 1, 1], [0, 0, 0], [3, 3, 3], [0, 0, 1]])
    batch = torch.tensor([0, 0, 0, 0, 1, 0, 0])  # the last point shares a voxel with the second
    conv = SubMConv3d(2, 3, backend="torch").double()
    feat = torch.randn(len(grid), 2, dtype=torch.float64, requires_grad=True)
    weight = conv.weight.detach().clone().requires_grad_()
    bias = conv.bias.detach().clone().requires_grad_()

    def run(f, w, b):
        return torch.func.functional_call(conv, {"weight": w, "bias": b}, (f, grid, batch))

    assert torch.autograd.gradcheck(run, (feat, weight, bias))


def test_cache_is_reused_and_checked():
    grid, batch = torch.tensor([[0, 0, 0], [0, 0, 1], [2, 2, 2]]), torch.zeros(3, dtype=torch.int64)
    conv, cache = SubMConv3d(2, 2, backend="torch"), {}
    feat = torch.randn(3, 2)
    first = conv(feat, grid, batch, cache)
    assert len(cache) == 1
    torch.testing.assert_close(conv(feat, grid, batch, cache), first)
    with pytest.raises(ValueError, match="built for 3 points"):
        conv(feat[:2], grid[:2], batch[:2], cache)


def test_conv_autocast_and_backend_choice():
    grid, batch = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 1]]), torch.zeros(3, dtype=torch.int64)
    conv = SubMConv3d(4, 4)
    assert conv.resolved_backend(torch.device("cpu")) == "torch"
    feat = torch.randn(3, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = conv(feat, grid, batch)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), conv(feat, grid, batch), atol=5e-2, rtol=5e-2)
    with pytest.raises(ValueError, match="feat must be"):
        conv(torch.randn(3, 5), grid, batch)
    with pytest.raises(ValueError, match="odd"):
        SubMConv3d(4, 4, kernel_size=2)


# ---- spconv agreement (spconv's CPU build: forward only) ------------------------------------------------------


@pytest.fixture(scope="module")
def spconv():
    return pytest.importorskip("spconv.pytorch")


def test_one_hot_kernels_move_features_by_their_offset(spconv):
    torch.manual_seed(0)
    grid = torch.unique(torch.randint(0, 4, (40, 3)), dim=0)
    batch = torch.zeros(len(grid), dtype=torch.int64)
    feat = torch.arange(1, len(grid) + 1, dtype=torch.float32)[:, None]  # [N, 1] = row + 1
    lookup = {tuple(g): i for i, g in enumerate(grid.tolist())}
    for backend in ("torch", "spconv"):
        conv = SubMConv3d(1, 1, bias=False, backend=backend)
        for k, off in enumerate(kernel_offsets(3).tolist()):
            with torch.no_grad():
                conv.weight.zero_()
                conv.weight.view(1, 27, 1)[0, k, 0] = 1.0
                out = conv(feat, grid, batch)[:, 0] - 1
            expected = [lookup.get(tuple(g + o for g, o in zip(p, off, strict=True)), -1) for p in grid.tolist()]
            assert out.tolist() == expected, (backend, k, off)


def test_state_dict_matches_spconv_module(spconv):
    torch.manual_seed(0)
    grid = torch.unique(torch.randint(0, 6, (150, 3)), dim=0)  # dense neighbourhoods
    batch = torch.randint(0, 2, (len(grid),))
    reference = spconv.SubMConv3d(5, 7, 3, bias=True, indice_key="ref", algo=spconv.ConvAlgo.Native)  # CPU-capable
    conv = SubMConv3d(5, 7, backend="torch")
    conv.load_state_dict(reference.state_dict())
    feat = torch.randn(len(grid), 5)
    indices = torch.cat([batch[:, None], grid], 1).int()
    with torch.no_grad():
        with _one_thread_on_cpu(feat.device):  # spconv's own module races on several CPU threads (test below)
            expected = reference(spconv.SparseConvTensor(feat, indices, [6, 6, 6], 2)).features
        torch.testing.assert_close(conv(feat, grid, batch), expected, atol=1e-5, rtol=1e-5)


@settings(max_examples=25)
@given(voxel_clouds(max_n=60, extent=8, duplicates=False), st.integers(1, 16), st.integers(1, 16))
def test_torch_and_spconv_backends_agree(spconv, cloud, c_in, c_out):
    grid, batch = cloud
    torch.manual_seed(0)
    ours = SubMConv3d(c_in, c_out, backend="torch")
    theirs = SubMConv3d(c_in, c_out, backend="spconv")
    theirs.load_state_dict(ours.state_dict())
    feat = torch.randn(len(grid), c_in)
    cache: dict = {}
    theirs.train(bool(c_in % 2))  # eval mode too (spconv's CPU path refuses its fused eval-mode bias)
    with torch.no_grad():
        expected = ours(feat, grid, batch)
        assert (theirs(feat, grid, batch, cache) - expected).abs().max() <= 1e-4
        assert (theirs(feat * 2, grid, batch, cache) - ours(feat * 2, grid, batch)).abs().max() <= 2e-4
        bounds = (int(batch.max()) + 1, int(grid.max()))  # spatial shape and batch size given, not read
        assert (theirs(feat, grid, batch, {}, bounds=bounds) - expected).abs().max() <= 1e-4


def test_spconv_backend_survives_duplicates_and_refuses_cpu_backward(spconv):
    assert spconv_available()
    grid = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 0, 1], [1, 1, 1]])
    batch = torch.zeros(4, dtype=torch.int64)
    conv = SubMConv3d(3, 2, backend="spconv")
    with torch.no_grad():
        assert conv(torch.randn(4, 3), grid, batch).shape == (4, 2)
    with pytest.raises(RuntimeError, match="no CPU backward"):
        conv(torch.randn(4, 3), grid, batch)


def test_spconv_cpu_path_agrees_on_full_neighbourhoods_on_any_thread_count(spconv) -> None:
    """spconv 2.3.8's CPU scatter-add races on several torch threads (a full block came out wrong in 40-50 of 50
    calls on 2 threads); the backend runs it on one and gives the caller's thread count back."""
    m = 9
    grid = torch.stack(torch.meshgrid(*[torch.arange(m)] * 3, indexing="ij"), -1).reshape(-1, 3)  # [729, 3], full
    batch = torch.zeros(len(grid), dtype=torch.long)
    torch.manual_seed(0)
    ours, theirs = SubMConv3d(4, 3, backend="torch"), SubMConv3d(4, 3, backend="spconv")
    theirs.load_state_dict(ours.state_dict())
    feat = torch.randn(len(grid), 4)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            expected = ours(feat, grid, batch)
            for _ in range(10):  # a race shows in most calls
                torch.testing.assert_close(theirs(feat, grid, batch), expected, atol=1e-4, rtol=1e-4)
                assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("counts", [[300, 200], [20, 7]])  # long samples: no mask (flash); short: a key mask
def test_attention_backends_chosen_for_speed_give_the_math_backends_result_and_gradients(counts) -> None:
    """The optimised path (SDPA without cuDNN) and the plain one (the math backend) agree on outputs and grads."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from pcdag.nodes.backbones.ptv3.attention import SDPA_BACKENDS, PatchAttention, patch_plan

    torch.manual_seed(0)
    n = sum(counts)
    attn = PatchAttention(32, 4)
    feat = torch.randn(n, 32, requires_grad=True)
    order = torch.randperm(n)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(n)
    offset = torch.cumsum(torch.tensor(counts), 0)
    plan = patch_plan(offset, counts, 64)
    results = []
    for plain in (False, True):
        with sdpa_kernel([SDPBackend.MATH] if plain else SDPA_BACKENDS):
            out = attn(feat, order, inverse, plan)
        (grad,) = torch.autograd.grad(out.square().sum(), feat)
        results.append((out.detach(), grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-5, atol=1e-5)


def test_spconv_runs_its_training_path_in_eval_mode_with_the_same_result(spconv) -> None:
    """A teacher (eval mode) gets spconv's training path, which computes what its eval path would."""
    grid = torch.tensor([[0, 0, 0], [0, 0, 2], [0, 2, 0], [2, 0, 0], [4, 4, 4]], dtype=torch.int64)
    batch = torch.zeros(5, dtype=torch.int64)
    conv = SubMConv3d(4, 6, backend="spconv", bias=True)
    feat = torch.randn(5, 4)
    with torch.no_grad():
        trained = conv.train()(feat, grid, batch, {})
        evaluated = conv.eval()(feat, grid, batch, {})
        torch_backend = SubMConv3d(4, 6, backend="torch", bias=True)
        torch_backend.load_state_dict(conv.state_dict())
        reference = torch_backend(feat, grid, batch, {})
    torch.testing.assert_close(evaluated, trained)
    torch.testing.assert_close(evaluated, reference, rtol=1e-4, atol=1e-5)


def test_backbone_reads_the_device_once_per_pooled_level(monkeypatch) -> None:
    """Host reads are GPU syncs. A forward reads the input counts and the largest grid value once (every level's
    serialisation depth and spconv bounds follow from it), then only each pooled level's counts (its patch
    layout); no range check, bincount or device copy of host lists. The public functions still check by default.
    """
    import traceback
    from pathlib import Path

    from pcdag.graphs.batch import PointBatch
    from pcdag.nodes.backbones.ptv3.model import PointTransformerV3Module, PTv3Config

    reads: list[str] = []
    backbone = {
        "backbone_input.py",
        "model.py",
        "layers.py",
        "attention.py",
        "serialization.py",
        "segment.py",
        "sparse_conv.py",
    }
    torch.manual_seed(0)
    config = PTv3Config.preset("tiny", backend="torch", shuffle_orders=False)  # shuffling is a host-side draw
    model = PointTransformerV3Module(config).eval()
    for name in ("tolist", "item", "__int__", "__bool__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **k):
            frames = [Path(f.filename).name for f in traceback.extract_stack()[:-1]]
            if frames and frames[-1] in backbone:
                reads.append(frames[-1])
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    coord = torch.rand(600, 3) * 2
    points = PointBatch(coord, torch.randn(600, 9), torch.tensor([300, 600]))
    with torch.no_grad():
        model(points)
    # the input counts and grid maximum; the torch convolution's pair counts per offset (its split sizes; spconv,
    # the GPU backend, reads none); then per pooled level its counts and again the pair counts
    assert reads == ["backbone_input.py", "serialization.py", "sparse_conv.py"] + ["layers.py", "sparse_conv.py"] * 4
    monkeypatch.undo()
    with pytest.raises(ValueError, match="index values must lie"):
        segment_sum(torch.ones(3, 2), torch.tensor([0, 1, 5]), 2)  # the default still checks
    with pytest.raises(ValueError, match=">= 0"):
        encode(torch.tensor([[0, -1, 0]]), torch.zeros(1, dtype=torch.int64), "z", 4)
