"""Point Transformer V3 backbone: shapes, up-cast, mask token, patch attention, serialisation, gradients,
determinism, layer ids, backends, the node, and Pointcept checkpoint interop."""

from __future__ import annotations

import itertools
import math
from unittest import mock

import attrs
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pcdag.graphs import registry
from pcdag.graphs.batch import PointBatch
from pcdag.graphs.params import ParamError
from pcdag.nodes.backbones.ptv3.attention import PatchAttention, patch_plan
from pcdag.nodes.backbones.ptv3.layers import DropPath, serialise
from pcdag.nodes.backbones.ptv3.model import PointTransformerV3Module, PTv3Config, count_parameters
from pcdag.nodes.backbones.ptv3.pointcept import export_backbone, from_pointcept, import_backbone, to_pointcept
from pcdag.nodes.backbones.ptv3.serialization import ORDERS, depth_for, encode
from pcdag.ops.sparse_conv import spconv_available


def make_batch(counts: list[int], seed: int = 0, extent: float = 1.5, grid: bool = False) -> PointBatch:
    """Random points on a few planes (like room surfaces), one sample per entry of ``counts``."""
    g = torch.Generator().manual_seed(seed)
    coords = []
    for n in counts:
        xyz = torch.rand(n, 3, generator=g) * extent  # [n, 3]
        plane = torch.randint(0, 3, (n,), generator=g)  # flatten one axis per point: surfaces, not a volume
        xyz[torch.arange(n), plane] = torch.randint(0, 2, (n,), generator=g).float() * extent
        coords.append(xyz)
    coord = torch.cat(coords)
    feat = torch.randn(len(coord), 9, generator=g)
    offset = torch.cumsum(torch.tensor(counts), 0)
    batch = PointBatch(coord=coord, feat=feat, offset=offset, origin_coord=coord * 2 + 1)
    if grid:
        low = torch.cat([c.min(0).values.expand(len(c), 3) for c in coords])
        batch.grid_coord = torch.floor((coord - low) / 0.02).int()
    return batch


def tiny(**overrides) -> PointTransformerV3Module:
    torch.manual_seed(0)
    return PointTransformerV3Module(PTv3Config.preset("tiny", **overrides))


@pytest.fixture(scope="module")
def tiny_eval() -> PointTransformerV3Module:
    return tiny(shuffle_orders=False, upcast_level=0).eval()


# ------------------------------------------------------------------------------------------- presets and shapes


def test_preset_parameter_counts_and_channels() -> None:
    assert count_parameters(PTv3Config.preset("base")) == pytest.approx(108.5e6, abs=0.05e6)
    assert count_parameters(PTv3Config.preset("large")) == pytest.approx(207.7e6, abs=0.05e6)
    assert PTv3Config.preset("base").out_channels == 1088
    assert PTv3Config.preset("large").out_channels == 1536
    assert PTv3Config.preset("base", upcast_level=0).out_channels == 1232  # linear probe (spec E)
    assert PTv3Config.preset("large", upcast_level=0).out_channels == 1728
    assert PTv3Config.preset("base", mode="encoder-decoder").out_channels == 64


def test_base_structure_on_meta_device() -> None:
    with torch.device("meta"):
        module = PointTransformerV3Module(PTv3Config.preset("base", backend="torch"))
    blocks = [b for stage in module.stages for b in stage.blocks]
    assert [len(s.blocks) for s in module.stages] == [3, 3, 3, 12, 3]
    assert [b.attn.num_heads for b in blocks[::3]][:3] == [3, 6, 12]
    assert {b.patch_size for b in blocks} == {1024}
    assert [b.attn.channels // b.attn.num_heads for b in blocks] == [16] * 24  # head dim 16 throughout
    rates = [b.drop_path.rate for b in blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.3) and np.allclose(np.diff(rates), 0.3 / 23)
    assert module.stages[0].down is None and module.stages[4].down.proj.out_features == 512
    assert module.mask_token.shape == (1, 48) and module.decoder is None
    assert module.stem.linear.in_features == 9


@pytest.mark.parametrize("level", [0, 1, 2, 3, 4])
def test_upcast_levels(tiny_eval: PointTransformerV3Module, level: int) -> None:
    module = PointTransformerV3Module(attrs.evolve(tiny_eval.config, upcast_level=level)).eval()
    module.load_state_dict(tiny_eval.state_dict())
    points = make_batch([700, 300, 90], grid=True)
    with torch.no_grad():
        out = module(points)
    channels = (16, 32, 48, 64, 96)
    assert module.out_channels == sum(channels[level:]) == out.feat.shape[1]
    assert out.level == level and out.extra["inverse"].shape == (len(points),)
    # the level-u cells are exactly the distinct (sample, grid >> u): the inverse is that partition
    key = torch.cat([points.batch[:, None], points.grid_coord.long() >> level], 1)
    _, cell = torch.unique(key, dim=0, return_inverse=True)
    if level == 0:  # level 0 is the input points themselves (several may share a voxel)
        cell = torch.arange(len(points))
    assert len(out) == int(cell.max()) + 1
    assert torch.equal(out.extra["inverse"], cell)  # both sorted by (sample, grid)
    assert torch.equal(out.offset, torch.cumsum(torch.bincount(_first_batch(cell, points.batch), minlength=3), 0))
    # pooled coords lie inside the box of their input points; the top level part of the features is the up-cast
    lo = torch.full((len(out), 3), math.inf).scatter_reduce(0, cell[:, None].expand(-1, 3), points.coord, "amin")
    hi = torch.full((len(out), 3), -math.inf).scatter_reduce(0, cell[:, None].expand(-1, 3), points.coord, "amax")
    assert bool(((out.coord >= lo - 1e-5) & (out.coord <= hi + 1e-5)).all())
    assert torch.allclose(out.origin_coord, out.coord * 2 + 1, atol=1e-5)  # means commute with the affine map


def _first_batch(cell: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """Sample of every cell."""
    out = torch.empty(int(cell.max()) + 1, dtype=torch.long)
    out[cell] = batch
    return out


def test_upcast_concatenates_parents_and_children(tiny_eval: PointTransformerV3Module) -> None:
    """Level-1 features = [enc1 | enc2..4 gathered]; the level-2 output is that tensor's tail for each cell."""
    points = make_batch([500, 200], grid=True)
    module1 = PointTransformerV3Module(attrs.evolve(tiny_eval.config, upcast_level=1)).eval()
    module2 = PointTransformerV3Module(attrs.evolve(tiny_eval.config, upcast_level=2)).eval()
    module1.load_state_dict(tiny_eval.state_dict())
    module2.load_state_dict(tiny_eval.state_dict())
    with torch.no_grad():
        out1, out2 = module1(points), module2(points)
    up = torch.empty(len(out1), dtype=torch.long)
    up[out1.extra["inverse"]] = out2.extra["inverse"]  # level-1 cell -> level-2 cell
    assert torch.allclose(out1.feat[:, 32:], out2.feat[up], atol=1e-5)


def test_encoder_decoder_output(tiny_eval: PointTransformerV3Module) -> None:
    module = tiny(mode="encoder-decoder", shuffle_orders=False).eval()
    points = make_batch([400, 150])
    with torch.no_grad():
        out = module(points)
    assert out.feat.shape == (550, 16) == (len(points), module.out_channels)
    assert out.level == 0 and torch.equal(out.offset, points.offset)
    assert torch.equal(out.extra["inverse"], torch.arange(550)) and torch.equal(out.coord, points.coord)
    assert sorted(module.decoder[3].up.coarse.linear.weight.shape) == [64, 96]


def test_per_sample_grid_makes_samples_independent() -> None:
    """A sample's output does not depend on the other samples of the batch (z orders: Hilbert depends on depth)."""
    module = tiny(shuffle_orders=False, orders=("z", "z-trans"), upcast_level=1).eval()
    both = make_batch([300, 250], seed=3)
    alone = PointBatch(coord=both.coord[300:], feat=both.feat[300:], offset=torch.tensor([250]))
    with torch.no_grad():
        out_both, out_alone = module(both), module(alone)
    rows = out_both.extra["inverse"][300:]
    assert torch.allclose(out_both.feat[rows], out_alone.feat[out_alone.extra["inverse"]], atol=1e-5)


def test_bad_inputs_are_named() -> None:
    module = tiny()
    points = make_batch([50])
    with pytest.raises(ValueError, match="in_channels"):
        module(points.replace(feat=points.feat[:, :6]))
    with pytest.raises(ValueError, match="offset"):
        module(points.replace(offset=torch.tensor([40])))
    with pytest.raises(ValueError, match="mask_token"):
        tiny(mask_token=False)(points.replace(mask=torch.zeros(50, dtype=torch.bool)))
    with pytest.raises(ValueError, match="heads"):
        PTv3Config.preset("tiny", enc_heads=(3, 2, 3, 4, 6))


# ------------------------------------------------------------------------------------------------- mask token


def test_mask_token_replaces_only_masked_stem_outputs() -> None:
    module = tiny(shuffle_orders=False).eval()
    with torch.no_grad():
        module.mask_token.fill_(7.0)
    points = make_batch([200, 100])
    mask = torch.rand(300, generator=torch.Generator().manual_seed(1)) < 0.4
    seen = {}
    hook = module.stages[0].blocks[0].register_forward_pre_hook(lambda m, args: seen.update(x=args[0].clone()))
    with torch.no_grad():
        module(points.replace(mask=mask))
    hook.remove()
    stem = module.stem(points.feat).detach()
    assert torch.equal(seen["x"][mask], torch.full((int(mask.sum()), 16), 7.0))
    assert torch.equal(seen["x"][~mask], stem[~mask])


def test_all_false_mask_changes_nothing(tiny_eval: PointTransformerV3Module) -> None:
    points = make_batch([300])
    with torch.no_grad():
        plain = tiny_eval(points).feat
        masked = tiny_eval(points.replace(mask=torch.zeros(300, dtype=torch.bool))).feat
    assert torch.equal(plain, masked)


# --------------------------------------------------------------------------------------------- patch attention


def reference_attention(attn: PatchAttention, feat: torch.Tensor, order: torch.Tensor, counts: list[int], k: int):
    """Spec C literally, sample by sample and patch by patch (slow loops, test only)."""
    heads, dim = attn.num_heads, attn.channels // attn.num_heads
    q, kk, v = attn.qkv(feat).view(len(feat), 3, heads, dim).unbind(1)  # [N, H, D] each
    out = torch.zeros(len(feat), heads, dim)
    start = 0
    for n in counts:
        position = order[start : start + n]  # points of this sample in serialised order
        if n <= k:
            patches = [(list(range(n)), list(range(n)))]
        else:
            padded = -(-n // k) * k
            src = [j if j < n else j - k for j in range(padded)]  # last patch repeats the previous one's points
            patches = [([j for j in range(p, p + k) if j < n], src[p : p + k]) for p in range(0, padded, k)]
        for queries, keys in patches:
            qi, ki = position[queries], position[keys]
            w = torch.softmax(torch.einsum("qhd,khd->hqk", q[qi], kk[ki]) * attn.scale, dim=-1)  # [H, q, k]
            out[qi] = torch.einsum("hqk,khd->qhd", w, v[ki])
        start += n
    return attn.proj(out.reshape(len(feat), -1))


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(1, 30), min_size=1, max_size=4), k=st.integers(1, 9), seed=st.integers(0, 1000))
def test_patch_attention_matches_spec(counts: list[int], k: int, seed: int) -> None:
    torch.manual_seed(seed)
    attn = PatchAttention(8, 2)
    n = sum(counts)
    feat = torch.randn(n, 8)
    starts = np.cumsum([0] + counts[:-1])
    order = torch.cat([torch.randperm(c) + s for c, s in zip(counts, starts, strict=True)])  # samples contiguous
    inverse = torch.empty_like(order).scatter_(0, order, torch.arange(n))
    plan = patch_plan(torch.cumsum(torch.tensor(counts), 0), counts, k)
    with torch.no_grad():
        got = attn(feat, order, inverse, plan)
        want = reference_attention(attn, feat, order, counts, k)
    assert torch.allclose(got, want, atol=1e-5)
    assert (plan.key_mask is None) == all(c >= plan.length or c > k for c in counts)


def loop_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, scale):
    """Variable-length attention one sequence at a time (test only): packed [T, H, D] -> [T, H, D]."""
    out, bounds = torch.empty_like(q), cu_q.tolist()
    for a, b in zip(bounds, bounds[1:], strict=False):
        seq = [t[a:b].transpose(0, 1) for t in (q, k, v)]  # 3 x [H, len, D]
        out[a:b] = torch.nn.functional.scaled_dot_product_attention(*seq, scale=scale).transpose(0, 1)
    return out


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(1, 30), min_size=1, max_size=4), k=st.integers(1, 9), seed=st.integers(0, 1000))
def test_packed_sequences_give_the_masked_dense_result(counts: list[int], k: int, seed: int) -> None:
    """The GPU's packed layout (masked slots dropped, sequences end to end) with a variable-length attention
    (here a loop, on CPU) gives the spec's attention and the dense path's gradients."""
    from pcdag.nodes.backbones.ptv3 import attention

    torch.manual_seed(seed)
    attn = PatchAttention(8, 2)
    plan = patch_plan(torch.cumsum(torch.tensor(counts), 0), counts, k)
    feat = torch.randn(sum(counts), 8, requires_grad=True)
    order = torch.randperm(sum(counts)) if len(counts) == 1 else torch.arange(sum(counts))
    inverse = torch.empty_like(order).scatter_(0, order, torch.arange(sum(counts)))
    dense = attn(feat, order, inverse, plan)
    (dense_grad,) = torch.autograd.grad(dense.square().sum(), feat)
    if plan.packed is None:  # no masked slot: the dense path is the only one
        return
    lens = torch.diff(plan.packed.cu_seqlens)
    assert lens.tolist() == plan.key_mask.reshape(len(lens), -1).sum(1).tolist()  # exactly the real slots
    with (
        mock.patch.object(attention, "uses_packed", lambda plan, qkv: plan.packed is not None),
        mock.patch.object(attention, "varlen_attn", loop_varlen),
    ):
        packed = attn(feat, order, inverse, plan)
    (packed_grad,) = torch.autograd.grad(packed.square().sum(), feat)
    with torch.no_grad():
        assert torch.allclose(packed, reference_attention(attn, feat, order, counts, k), atol=1e-5)
    assert torch.allclose(packed, dense, atol=1e-5) and torch.allclose(packed_grad, dense_grad, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flash attention's variable-length kernel needs CUDA")
def test_flash_varlen_matches_the_masked_dense_path_on_cuda() -> None:
    """On a GPU under bf16 autocast: short and long samples together (a masked plan) through the packed
    variable-length flash kernel agree with the dense masked SDPA, outputs and gradients."""
    from pcdag.nodes.backbones.ptv3 import attention

    torch.manual_seed(0)
    attn = PatchAttention(64, 4).cuda()
    counts = [700, 90, 2500, 1024, 5]
    plan = patch_plan(torch.cumsum(torch.tensor(counts), 0).cuda(), counts, 1024)
    feat = torch.randn(sum(counts), 64, device="cuda", requires_grad=True)
    order = torch.arange(sum(counts), device="cuda")
    results = []
    for packed in (True, False):
        with torch.autocast("cuda", torch.bfloat16):
            assert attention.uses_packed(plan, attn.qkv(feat)) is (plan.packed is not None)
            with mock.patch.object(attention, "varlen_attn", attention.varlen_attn if packed else None):
                out = attn(feat, order, order, plan)
        (grad,) = torch.autograd.grad(out.float().square().sum(), feat)
        results.append((out.float(), grad))
    (po, pg), (do, dg) = results
    assert (po - do).abs().max() <= 2e-2 * do.abs().max() and (pg - dg).abs().max() <= 2e-2 * dg.abs().max()


def test_short_sample_is_full_attention_and_long_patches_are_local() -> None:
    torch.manual_seed(0)
    attn = PatchAttention(8, 2)
    k, n_short, n_long = 16, 11, 3 * 16 + 5
    counts = [n_short, n_long]
    feat = torch.randn(sum(counts), 8, requires_grad=True)
    order = torch.arange(sum(counts))
    plan = patch_plan(torch.cumsum(torch.tensor(counts), 0), counts, k)
    assert plan.gather.shape == (1 + 4, 16) and plan.key_mask is not None
    out = attn(feat, order, order, plan)
    # short sample: plain softmax attention over all its points
    q, kk, v = attn.qkv(feat[:n_short]).view(n_short, 3, 2, 4).unbind(1)
    w = torch.softmax(torch.einsum("qhd,khd->hqk", q, kk) / 2.0, -1)  # head dim 4: scale 1/2
    assert torch.allclose(out[:n_short], attn.proj(torch.einsum("hqk,khd->qhd", w, v).reshape(n_short, 8)), atol=1e-5)
    # long sample: an output of patch 1 depends on the inputs of patch 1 only
    (grad,) = torch.autograd.grad(out[n_short + 20].sum(), feat, retain_graph=True)
    touched = set(torch.nonzero(grad.abs().sum(1)).flatten().tolist())
    assert touched == set(range(n_short + 16, n_short + 32))
    # the last patch (5 real points) also sees the copies of patch 2's positions 5..15
    (grad,) = torch.autograd.grad(out[n_short + 50].sum(), feat)
    touched = set(torch.nonzero(grad.abs().sum(1)).flatten().tolist())
    assert touched == set(range(n_short + 48, n_short + 53)) | set(range(n_short + 32 + 5, n_short + 48))


# ----------------------------------------------------------------------------------------------- serialisation


@settings(max_examples=30, deadline=None)
@given(counts=st.lists(st.integers(1, 60), min_size=1, max_size=4), seed=st.integers(0, 1000), shuffle=st.booleans())
def test_serialisation_permutation_and_inverse(counts: list[int], seed: int, shuffle: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    n = sum(counts)
    grid = torch.randint(0, 40, (n, 3), generator=g)
    batch = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    torch.manual_seed(seed)
    got = serialise(grid, batch, ORDERS, shuffle)
    codes = [encode(grid, batch, name, depth_for(grid)) for name in ORDERS]
    for order, inverse in got:
        assert torch.equal(torch.sort(order).values, torch.arange(n))  # a permutation
        assert torch.equal(inverse[order], torch.arange(n)) and torch.equal(order[inverse], torch.arange(n))
        assert torch.equal(batch[order], batch)  # samples stay contiguous, in sample order
    sorted_by = [[bool((torch.diff(code[order]) >= 0).all()) for code in codes] for order, _ in got]  # [slot][curve]
    if not shuffle:
        assert all(sorted_by[r][r] for r in range(len(ORDERS)))
    # the slots hold the curves in some order, each once
    assert any(all(sorted_by[r][c] for r, c in enumerate(perm)) for perm in itertools.permutations(range(4)))


def test_shuffle_draws_different_order_assignments() -> None:
    grid = torch.randint(0, 64, (500, 3), generator=torch.Generator().manual_seed(0))
    batch = torch.zeros(500, dtype=torch.long)
    firsts = set()
    for seed in range(12):
        torch.manual_seed(seed)
        firsts.add(tuple(serialise(grid, batch, ORDERS, True)[0][0][:20].tolist()))
    assert len(firsts) > 1


# ---------------------------------------------------------------------------- gradients, determinism, layer ids


@pytest.mark.parametrize("mode", ["encoder", "encoder-decoder"])
def test_gradient_reaches_every_parameter(mode: str) -> None:
    module = tiny(mode=mode).train()
    points = make_batch([600, 300])
    mask = torch.rand(900, generator=torch.Generator().manual_seed(2)) < 0.5
    out = module(points.replace(mask=mask))
    out.feat.square().mean().backward()
    missing = [name for name, p in module.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert missing == []


def test_eval_is_deterministic_and_drop_path_only_trains() -> None:
    points = make_batch([500, 200])
    module = tiny(drop_path=0.5)
    with torch.no_grad():
        module.eval()
        torch.manual_seed(5)
        a = module(points).feat
        torch.manual_seed(5)
        b = module(points).feat  # shuffled orders come from the global RNG: same seed, same output
        module.train()
        torch.manual_seed(5)
        c = module(points).feat
        torch.manual_seed(6)
        d = module(points).feat
    assert torch.equal(a, b) and not torch.allclose(a, c) and not torch.allclose(c, d)
    fixed = tiny(drop_path=0.5, shuffle_orders=False).eval()
    with torch.no_grad():
        torch.manual_seed(1)
        e = fixed(points).feat
        torch.manual_seed(2)
        f = fixed(points).feat
    assert torch.equal(e, f)


def test_drop_path_drops_whole_rows() -> None:
    torch.manual_seed(0)
    drop = DropPath(0.5).train()
    y = drop(torch.ones(1000, 4))
    assert set(torch.unique(y).tolist()) == {0.0, 2.0} and bool((y[:, :1] == y).all())
    assert torch.equal(drop.eval()(torch.ones(3, 4)), torch.ones(3, 4))


def test_layer_ids_number_encoder_blocks_in_depth_order() -> None:
    with torch.device("meta"):
        module = PointTransformerV3Module(PTv3Config.preset("base", backend="torch"))
    ids = module.layer_ids()
    assert {layer for layer, _ in ids.values()} == set(range(24)) and {n for _, n in ids.values()} == {24}
    assert ids["stages.0.blocks.0.attn.qkv.weight"] == (0, 24)
    assert ids["stages.3.blocks.11.mlp.fc2.bias"] == (3 + 3 + 3 + 11, 24)
    assert ids["stages.4.blocks.2.cpe.conv.weight"] == (23, 24)
    params = dict(module.named_parameters())
    assert set(ids) == {name for name in params if ".blocks." in name}
    assert not any(k.startswith(("stem", "mask_token")) or ".down." in k for k in ids)


@pytest.mark.skipif(not spconv_available(), reason="spconv is not installed")
def test_torch_and_spconv_backends_agree(tiny_eval: PointTransformerV3Module) -> None:
    """Same weights, same forward (CPU spconv: forward only). Train mode with drop path 0 computes what eval mode
    does; it is used because spconv's CPU build refuses the bias it fuses into eval-mode convolutions."""
    # spconv adds up points sharing a voxel, hence one point per voxel; a small extent gives dense neighbourhoods
    points = one_point_per_voxel(make_batch([600, 250], extent=0.5), 0.02)
    config = attrs.evolve(tiny_eval.config, drop_path=0.0)
    outputs = []
    for backend in ("torch", "spconv"):
        module = PointTransformerV3Module(attrs.evolve(config, backend=backend)).train()
        module.load_state_dict(tiny_eval.state_dict())
        assert {b.cpe.conv.backend for s in module.stages for b in s.blocks} == {backend}
        torch.manual_seed(0)  # the same shuffled serialisation orders for both
        with torch.no_grad():
            outputs.append(module(points).feat)
    assert torch.allclose(outputs[0], outputs[1], atol=1e-4)


def one_point_per_voxel(points: PointBatch, size: float) -> PointBatch:
    """The first point of every (sample, voxel) of ``points``."""
    b = points.batch
    low = torch.stack([points.coord[b == i].min(0).values for i in range(points.n_samples)])[b]  # [N, 3]
    keys = torch.cat([b[:, None], torch.floor((points.coord - low) / size).long()], 1)  # [N, 4]
    _, inverse = torch.unique(keys, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(keys)).scatter_reduce(0, inverse, torch.arange(len(keys)), "amin")
    keep = torch.sort(first).values  # [M] kept rows, sample order preserved
    counts = torch.bincount(b[keep], minlength=points.n_samples)
    return PointBatch(points.coord[keep], points.feat[keep], torch.cumsum(counts, 0), points.origin_coord[keep])


# ------------------------------------------------------------------------------------------------------ node


def test_node_builds_the_module_and_plans() -> None:
    cls = registry.get("PointTransformerV3")
    node = cls(preset="tiny", upcast_level=1, patch_size=32, enc_channels=[16, 32, 48, 64, 96])
    module = node.build({})
    assert isinstance(module, PointTransformerV3Module) and module.out_channels == 32 + 48 + 64 + 96
    assert {b.patch_size for s in module.stages for b in s.blocks} == {32}
    assert node.forward(None, module) == {"model": module}
    notes = " ".join(node.plan_notes())
    assert "240 channels at level 1" in notes and f"{count_parameters(node.config) / 1e6:.1f}M" in notes
    assert "108.5M parameters" in cls().plan_notes()[0] and "1088 channels" in cls().plan_notes()[0]
    with pytest.raises(ParamError, match="heads"):
        cls(preset="tiny", enc_heads=[5, 2, 3, 4, 6])
    with pytest.raises(ParamError, match="enc_depths"):
        cls(enc_depths=[1, 2])


# ------------------------------------------------------------------------------------------------- Pointcept


def sonata_base_keys() -> set[str]:
    """Parameter names of Pointcept's PT-v3m2 Sonata Base encoder (enc_mode, mask token), as its source builds
    them: Embedding(stem: PointSequential(linear, norm, act)), PointSequential enc.enc{s} of GridPooling "down"
    (proj, norm as PointSequential) and Block "block{i}" (cpe = PointSequential(SubMConv3d, Linear, LayerNorm),
    norm1/norm2 PointSequential(LayerNorm), attn.qkv/proj, mlp = PointSequential(MLP(fc1, fc2)))."""
    keys = {"embedding.mask_token"}
    keys |= {f"embedding.stem.{m}.{p}" for m in ("linear", "norm") for p in ("weight", "bias")}
    for s, depth in enumerate((3, 3, 3, 12, 3)):
        if s:
            keys |= {f"enc.enc{s}.down.{m}.{p}" for m in ("proj", "norm.0") for p in ("weight", "bias")}
        for i in range(depth):
            mods = ("cpe.0", "cpe.1", "cpe.2", "norm1.0", "attn.qkv", "attn.proj", "norm2.0", "mlp.0.fc1", "mlp.0.fc2")
            keys |= {f"enc.enc{s}.block{i}.{m}.{p}" for m in mods for p in ("weight", "bias")}
    return keys


def test_exported_names_are_sonata_base_names() -> None:
    with torch.device("meta"):
        module = PointTransformerV3Module(PTv3Config.preset("base", backend="torch"))
    exported = to_pointcept(module.state_dict())
    assert set(exported) == sonata_base_keys()
    assert exported["enc.enc0.block0.cpe.0.weight"].shape == (48, 3, 3, 3, 48)  # spconv's [out, k, k, k, in]
    assert exported["enc.enc3.block0.attn.qkv.weight"].shape == (3 * 384, 384)


@pytest.mark.parametrize("mode", ["encoder", "encoder-decoder"])
def test_pointcept_round_trip_is_identity(mode: str) -> None:
    state = tiny(mode=mode).state_dict()
    back = from_pointcept(to_pointcept(state))
    assert list(back) == list(state) and all(back[k] is state[k] for k in state)
    prefixed = {f"module.student.backbone.{k}": v for k, v in to_pointcept(state).items()}
    assert set(from_pointcept(prefixed)) == set(state)
    both = {**prefixed, **{k.replace("student", "teacher"): v for k, v in prefixed.items()}}
    with pytest.raises(ValueError, match="prefix"):
        from_pointcept(both)
    assert set(from_pointcept(both, prefix="module.teacher.backbone.")) == set(state)


def test_export_import_file(tmp_path) -> None:
    source, target = tiny(shuffle_orders=False).eval(), tiny(shuffle_orders=False).eval()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = tmp_path / "ptv3.pth"
    export_backbone(source, path)
    saved = torch.load(path, weights_only=True)
    assert saved["config"]["enc_channels"] == [16, 32, 48, 64, 96] and saved["config"]["enc_mode"] is True
    import_backbone(target, path)
    points = make_batch([300])
    with torch.no_grad():
        assert torch.equal(source(points).feat, target(points).feat)


def test_import_refuses_what_does_not_fit(tmp_path) -> None:
    module = tiny()
    state = to_pointcept(module.state_dict())
    del state["enc.enc1.block0.attn.qkv.bias"]
    state["enc.enc0.block0.ls1.gamma"] = torch.ones(16)
    state["enc.enc0.block0.mlp.0.fc1.weight"] = torch.zeros(8, 16)
    state["dec.dec0.up.proj.0.weight"] = torch.zeros(16, 32)
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ValueError) as info:
        import_backbone(module, path)
    text = str(info.value)
    assert str(path) in text and "missing enc.enc1.block0.attn.qkv.bias" in text
    assert (
        "unexpected dec.dec0.up.proj.0.weight" in text and "no pcdag equivalent for enc.enc0.block0.ls1.gamma" in text
    )
    assert "enc.enc0.block0.mlp.0.fc1.weight [8, 16] vs [64, 16]" in text
    with pytest.raises(FileNotFoundError, match="nowhere"):
        import_backbone(module, tmp_path / "nowhere.pth")
