"""The runtime meets backbones only through the backbone protocol (``pcdag.graphs.backbone``): a toy second
backbone type, defined here, goes through the same foreign-file dispatch, architecture checks and checkpoint
installation as PointTransformerV3, and ``pcdag extract`` runs the checkpoint graph's own view node."""

from __future__ import annotations

import io
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch

from pcdag.atomic import atomic_write_bytes
from pcdag.graphs import registry
from pcdag.graphs.backbone import BackboneNode, WeightsError
from pcdag.graphs.batch import Encoded, PointBatch
from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.overrides import apply_overrides
from pcdag.graphs.params import integer, of_type, one_of, or_none, param
from pcdag.graphs.yamlio import load_graph
from pcdag.nodes.backbones.point_transformer_v3 import PointTransformerV3
from pcdag.nodes.backbones.ptv3.pointcept import pointcept_config
from pcdag.runtime.backbone import load_backbone
from pcdag.runtime.eval_job import install_checkpoint
from pcdag.runtime.extract import view_maker

REPO = Path(__file__).resolve().parents[1]
LP = REPO / "graphs" / "eval" / "scannet-lp.yaml"


class ToyModule(torch.nn.Module):
    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.out_channels = width
        layers = [torch.nn.Linear(9, width)] + [torch.nn.Linear(width, width) for _ in range(depth - 1)]
        self.layers = torch.nn.Sequential(*layers)

    def forward(self, points: PointBatch) -> Encoded:
        return Encoded(self.layers(points.feat), points.coord, points.origin_coord, points.offset)

    def memory(self, points: float, grad: bool) -> None:
        return None


class ToyBackbone(BackboneNode):
    """A per-point MLP: enough of a backbone for the protocol."""

    foreign = "toy files"

    @attrs.frozen
    class Params:
        width: int = param(8, integer(1, 64), doc="channels")
        depth: int = param(1, integer(1, 4), doc="layers")
        weights: str | None = param(None, or_none(of_type(str), "none"), doc="initial weights", path="in-file")
        frozen: bool = param(False, one_of(False, True), doc="no gradient")

    def build_module(self) -> ToyModule:
        return ToyModule(self.params.width, self.params.depth)

    def architecture(self) -> dict:
        return {"width": self.params.width, "depth": self.params.depth}

    def export_weights(self, module: torch.nn.Module, path: Path) -> None:
        buffer = io.BytesIO()
        torch.save({"config": {"toy": self.architecture()}, "state_dict": module.state_dict()}, buffer)
        atomic_write_bytes(Path(path), buffer.getvalue())

    def import_weights(self, module: torch.nn.Module, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            raise WeightsError(f"{path}: {exc}") from None

    @classmethod
    def params_from_foreign(cls, config):
        return dict(config["toy"]) if "toy" in config else None


@pytest.fixture
def toy():
    with registry.registered(ToyBackbone):
        yield ToyBackbone


def test_a_foreign_file_goes_to_the_backbone_type_that_claims_it(toy, tmp_path) -> None:
    node = ToyBackbone(width=5, depth=2)
    module = node.build_module()
    node.export_weights(module, tmp_path / "toy.pth")
    loaded, again = load_backbone(tmp_path / "toy.pth")
    assert type(loaded) is ToyBackbone and loaded.architecture() == {"width": 5, "depth": 2}
    assert all(torch.equal(again.state_dict()[k], v) for k, v in module.state_dict().items())

    ptv3 = PointTransformerV3(preset="tiny", mask_token=False)
    ptv3.export_weights(ptv3.build_module(), tmp_path / "ptv3.pth")
    loaded, _ = load_backbone(tmp_path / "ptv3.pth")
    assert type(loaded) is PointTransformerV3 and loaded.architecture() == ptv3.architecture()
    assert pointcept_config(loaded.config) == pointcept_config(ptv3.config)

    torch.save({"config": {"blocks": 3}, "state_dict": {}}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match=r"other\.pth.*no backbone type.*ToyBackbone \(toy files\)"):
        load_backbone(tmp_path / "other.pth")


def test_foreign_configs_params_cannot_express_are_refused_naming_them(tmp_path) -> None:
    node = PointTransformerV3(preset="tiny")
    config = {**pointcept_config(node.config), "mlp_ratio": 2.0}
    torch.save({"config": config, "state_dict": {}}, tmp_path / "odd.pth")
    with pytest.raises(WeightsError, match=r"odd\.pth.*PointTransformerV3 cannot rebuild it: mlp_ratio 2\.0"):
        load_backbone(tmp_path / "odd.pth")


def test_architecture_differences_name_every_field() -> None:
    tiny, base = PointTransformerV3(preset="tiny"), PointTransformerV3(preset="base", mask_token=False)
    diffs = base.architecture_differences(tiny, ("checkpoint", "graph"))
    assert [d.split(":")[0] for d in diffs] == ["enc_depths", "enc_channels", "enc_heads", "mask_token"]
    assert "enc_channels: checkpoint [16, 32, 48, 64, 96] vs graph [48, 96, 192, 384, 512]" in diffs
    assert base.architecture_differences(ToyBackbone()) == ["type: ToyBackbone vs PointTransformerV3"]
    assert ToyBackbone(width=3).architecture_differences(ToyBackbone(width=4, depth=2)) == [
        "width: 4 vs 3",
        "depth: 2 vs 1",
    ]


def _lp_graph(tmp_path: Path):
    (tmp_path / "store").mkdir()
    return apply_overrides(load_graph(LP), {"store.path": str(tmp_path / "store")}, base=tmp_path)


def test_a_checkpoint_of_another_type_replaces_the_graphs_backbone(toy, tmp_path, capsys) -> None:
    node = ToyBackbone(width=6, depth=2)
    node.export_weights(node.build_module(), tmp_path / "toy.pth")
    graph, name = install_checkpoint(_lp_graph(tmp_path), tmp_path / "toy.pth", tmp_path / "run", None, None)
    decl = graph.nodes[name]
    assert name == "backbone" and decl.type == "ToyBackbone"
    assert decl.params["width"] == 6 and decl.params["depth"] == 2 and decl.params["frozen"] is True
    assert "preset" not in decl.params and Path(decl.params["weights"]) == tmp_path / "run" / "pretrained-backbone.pth"
    out = capsys.readouterr().out
    assert "node 'backbone' of graph 'scannet-lp' becomes a ToyBackbone (was PointTransformerV3)" in out
    assert "kept from the graph: frozen" in out


def test_a_checkpoint_of_the_same_type_and_another_architecture_is_refused(toy, tmp_path) -> None:
    graph = _lp_graph(tmp_path)
    graph.nodes["backbone"] = attrs.evolve(graph.nodes["backbone"], type="ToyBackbone", params={"width": 4})
    node = ToyBackbone(width=6, depth=2)
    node.export_weights(node.build_module(), tmp_path / "toy.pth")
    with pytest.raises(ValueError, match=r"does not match node 'backbone'.*width: checkpoint 6 vs graph 4; depth: "):
        install_checkpoint(graph, tmp_path / "toy.pth", tmp_path / "run", None, None)
    assert not (tmp_path / "run" / "pretrained-backbone.pth").exists()


def test_extract_uses_the_checkpoint_graphs_own_view_node(tmp_path) -> None:
    """A training checkpoint's plan gives the loader node's eval_sample: with its labels, the view carries them."""
    from pcdag.compiler import compile_graph

    graph = _lp_graph(tmp_path)
    plan = compile_graph(graph)
    make_sample, what = view_maker(plan)
    assert what == "node 'views' of the checkpoint's graph"
    rng = np.random.default_rng(0)
    cloud = PointCloud(
        {
            "coord": rng.uniform(0, 2, (50, 3)).astype(np.float32),
            "normal": np.tile(np.float32([0, 0, 1]), (50, 1)),
            "segment": rng.integers(0, 20, 50),
        },
        {"scene": "s"},
    )
    sample = make_sample(cloud)
    assert "segment" in sample.global_views[0]  # the graph's views node has labels: [segment]
    default, what = view_maker(None)
    assert "default parameters" in what and "segment" not in default(cloud).global_views[0]
    assert what.startswith("MultiViewGenerator")  # of the two view nodes with eval_sample, the eval_default one
