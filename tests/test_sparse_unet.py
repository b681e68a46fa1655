"""SparseUNet: shapes, backends' agreement, Pointcept SpUNet-v1m1 checkpoints, bad input, the memory model."""

from __future__ import annotations

import pytest
import torch

from pcdag.graphs.backbone import BackboneModule, WeightsError
from pcdag.graphs.batch import PointBatch
from pcdag.nodes.backbones.sparse_unet import SparseUNet
from pcdag.nodes.backbones.spunet.memory import unet_memory
from pcdag.ops import sparse_conv_strided


def plane(side: int = 24, samples: int = 2, extra: int = 0) -> PointBatch:
    """``samples`` flat square patches of side x side voxels (0.02 m), one point per voxel (+ ``extra`` repeats)."""
    xy = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1).reshape(-1, 2)
    grid = torch.cat([xy, torch.zeros(len(xy), 1, dtype=torch.int64)], 1)
    grid = torch.cat([grid, grid[:extra]])
    coord = grid.float() * 0.02 + 0.01
    gen = torch.Generator().manual_seed(0)
    n = len(grid)
    return PointBatch(
        coord=coord.repeat(samples, 1),
        feat=torch.randn(n * samples, 9, generator=gen),
        offset=torch.arange(1, samples + 1) * n,
        origin_coord=coord.repeat(samples, 1),
        grid_coord=grid.repeat(samples, 1),
    )


def test_every_point_gets_features_and_the_module_keeps_the_protocol():
    torch.manual_seed(0)
    module = SparseUNet(preset="tiny", backend="torch").build({})
    assert isinstance(module, BackboneModule) and module.out_channels == 8
    batch = plane(extra=5)  # five points share a voxel with another
    out = module(batch)
    n_voxels = 24 * 24 * 2
    assert out.feat.shape == (n_voxels, 8) and out.extra["inverse"].shape == (len(batch),)
    assert out.offset.tolist() == [24 * 24, n_voxels] and out.at_points().shape == (len(batch), 8)
    out.feat.square().mean().backward()
    assert all(p.grad is not None for p in module.parameters())


def test_backends_agree_in_eval_mode():
    pytest.importorskip("spconv.pytorch")
    torch.manual_seed(0)
    ours = SparseUNet(preset="tiny", backend="torch").build({}).eval()
    theirs = SparseUNet(preset="tiny", backend="spconv").build({}).eval()
    for m in ours.modules():  # BN statistics away from (0, 1) so every layer matters
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 2.0), m.weight.data.uniform_(0.5, 2.0)
    theirs.load_state_dict(ours.state_dict())
    batch = plane()
    with torch.no_grad():
        a, b = ours(batch), theirs(batch)
    torch.testing.assert_close(a.feat, b.feat, atol=1e-4, rtol=1e-4)
    assert a.feat.std() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="spconv's backward needs CUDA")
def test_cuda_backends_agree_forward_and_backward_spconv():
    """On the GPU both backends train: same features and same gradients of every parameter (float32)."""
    pytest.importorskip("spconv.pytorch")
    torch.manual_seed(0)
    ours = SparseUNet(preset="tiny", backend="torch").build({}).cuda()
    theirs = SparseUNet(preset="tiny", backend="spconv").build({}).cuda()
    theirs.load_state_dict(ours.state_dict())
    batch = plane(side=40).to(torch.device("cuda"))
    a, b = ours(batch), theirs(batch)
    torch.testing.assert_close(a.feat, b.feat, atol=1e-4, rtol=1e-4)
    weights = torch.randn_like(a.feat)
    (a.feat * weights).sum().backward()
    (b.feat * weights).sum().backward()
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-3, rtol=1e-3, msg=lambda m, n=name: f"{n}: {m}")


def test_a_batch_too_small_to_down_sample_is_refused_naming_the_level():
    module = SparseUNet(preset="tiny", backend="torch").build({})
    with pytest.raises(
        ValueError, match=r"SparseUNet: level 2 \(grid 0.08 m\) has 1 voxel .* levels 0..2: 9, 4, 1\); BatchNorm"
    ):
        module(plane(side=3, samples=1))
    module.eval()  # BatchNorm with running statistics takes a single voxel
    assert module(plane(side=3, samples=1)).feat.shape == (9, 8)


def test_pointcept_export_import_round_trip_and_names(tmp_path):
    torch.manual_seed(0)
    node = SparseUNet(preset="14a")
    module = node.build_module()
    path = tmp_path / "spunet.pth"
    node.export_weights(module, path)
    saved = torch.load(path, weights_only=True)
    assert saved["config"]["type"] == "SpUNet-v1m1" and saved["config"]["layers"] == [1] * 8
    names = set(saved["state_dict"])
    assert {"conv_input.0.weight", "down.0.0.weight", "enc.3.block0.bn2.running_var", "up.3.0.weight"} <= names
    assert {"dec.0.block0.proj.0.weight", "dec.0.block0.proj.1.weight"} <= names
    assert saved["state_dict"]["conv_input.0.weight"].shape == (32, 5, 5, 5, 9)
    loaded = SparseUNet(preset="14a", weights=str(path)).build({})
    for k, v in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert SparseUNet.params_from_foreign(saved["config"]) == {"preset": "14a", "in_channels": 9, "mask_token": False}
    assert SparseUNet.params_from_foreign({"type": "PT-v3m2", "enc_depths": [1]}) is None
    # a Pointcept training checkpoint: DDP and segmentor prefixes, a classifier
    state = {f"module.backbone.{k}": v for k, v in saved["state_dict"].items()}
    state["module.backbone.final.weight"] = torch.zeros(20, 1, 1, 1, 96)
    torch.save({"state_dict": state}, tmp_path / "seg.pth")
    SparseUNet(preset="14a", weights=str(tmp_path / "seg.pth")).build({})


def test_weights_of_another_architecture_are_refused_naming_every_difference(tmp_path):
    node = SparseUNet(preset="14a")
    path = tmp_path / "a.pth"
    node.export_weights(node.build_module(), path)
    with pytest.raises(
        WeightsError, match=r"layers: file \[1, 1, 1, 1, 1, 1, 1, 1\] vs node \[2, 2, 2, 2, 2, 2, 2, 2\]"
    ):
        SparseUNet(preset="18a", weights=str(path)).build({})
    with pytest.raises(WeightsError, match=r"in_channels: file 9 vs node 6; mask_token: file False vs node True"):
        SparseUNet(preset="14a", in_channels=6, mask_token=True, weights=str(path)).build({})
    bare = tmp_path / "bare.pth"
    state = torch.load(path, weights_only=True)["state_dict"]
    del state["up.0.0.weight"]
    state["enc.0.block0.conv1.weight"] = torch.zeros(1)
    state["head.weight"] = torch.zeros(1)
    torch.save(state, bare)
    with pytest.raises(WeightsError) as err:
        SparseUNet(preset="14a", weights=str(bare)).build({})
    for text in (
        "missing up.0.0.weight",
        "unexpected head.weight",
        "enc.0.block0.conv1.weight [1] vs [32, 3, 3, 3, 32]",
    ):
        assert text in str(err.value)


def test_mask_token_replaces_masked_input_features():
    torch.manual_seed(0)
    module = SparseUNet(preset="tiny", backend="torch", mask_token=True).build({}).eval()
    batch = plane()
    with torch.no_grad():
        module.mask_token.fill_(3.0)
        plain = module(batch).feat
        masked = module(batch.replace(mask=torch.arange(len(batch)) % 2 == 0)).feat
    assert not torch.allclose(plain, masked)
    with pytest.raises(ValueError, match="mask_token is off"):
        SparseUNet(preset="tiny", backend="torch").build({})(batch.replace(mask=torch.ones(len(batch), dtype=bool)))


def test_memory_model_matches_the_saved_tensors(monkeypatch):
    """The model's bytes kept for the backward against a count of autograd's saved tensors (float32, torch
    backend, a planar cloud where the model's neighbour counts hold inside the patch)."""
    torch.manual_seed(0)
    module = SparseUNet(preset="tiny", backend="torch").build({})
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if t.dtype.is_floating_point and storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    sizes = []
    coarsen = sparse_conv_strided.coarsen
    monkeypatch.setattr(sparse_conv_strided, "coarsen", lambda *a: sizes.append(len(c := coarsen(*a))) or c)
    batch = plane(side=48)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = module(batch)
    n = len(out.feat)
    memory, rows, channels = unet_memory(module.config, n, True, [1.0] + [s / n for s in sizes], value_bytes=4)
    kept = memory.saved - rows * channels * 4  # the output is not a saved tensor
    assert 0.9 < kept / sum(seen.values()) < 1.1
    assert module.memory(1e5, False)[0].saved < module.memory(1e5, True)[0].saved


def test_plan_notes_count_parameters():
    assert SparseUNet(preset="34c").plan_notes()[0].startswith("39.2M parameters (34c)")
    with pytest.raises(Exception, match="channels"):
        SparseUNet(preset="tiny", channels=[8, 8])
