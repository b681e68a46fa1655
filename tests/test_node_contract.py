"""Every registered node type is under a contract: the CloudTransforms (with proof below that those checks catch
breaches), the device nodes, sources, evaluators, ``Node.run`` nodes and the store (``pcdag.testing``; proof that
those checks catch breaches: ``tests/test_contract_breaches.py``). ``test_every_node_type_is_under_a_contract``
says how many of each."""

from __future__ import annotations

from collections import Counter

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcdag.graphs import registry
from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.graphs.device import DeviceNode
from pcdag.graphs.evaluation import Evaluator
from pcdag.graphs.node import CloudTransform, FieldEffect, Node, SceneSource, effect
from pcdag.graphs.params import in_range, param
from pcdag.testing import ContractError, check_reads_declared, check_transform_contract, point_clouds, seeds
from pcdag.testing import shape_examples as shapes
from pcdag.testing.device_contract import check_device_node
from pcdag.testing.eval_contract import check_evaluator
from pcdag.testing.examples import DEVICE_EXAMPLES, device_examples
from pcdag.testing.shape_contract import check_run_node, check_source, check_store
from pcdag.testing.strategies import FIELD_MAKERS


def _of(kind: type) -> list[str]:
    return [n for n in registry.names() if issubclass(registry.get(n), kind)]


TRANSFORMS = _of(CloudTransform)
DEVICE = _of(DeviceNode)
SOURCES = _of(SceneSource)
EVALUATORS = _of(Evaluator)
OTHERS = sorted(set(registry.names()) - set(TRANSFORMS) - set(DEVICE) - set(SOURCES) - set(EVALUATORS))
MAKERS = "pcdag/testing/shape_examples.py"


def contract_of(name: str) -> str | None:
    """The contract node type ``name`` is under, None when none (a shape without checks, or no example maker)."""
    if name in TRANSFORMS:
        return "transform"
    tables = {"device": (DEVICE, DEVICE_EXAMPLES), "source": (SOURCES, shapes.SOURCES)}
    tables |= {"evaluator": (EVALUATORS, shapes.EVALUATORS), "run": (OTHERS, shapes.RUN_NODES)}
    tables |= {"store": (OTHERS, shapes.STORES)}
    return next((kind for kind, (names, makers) in tables.items() if name in names and name in makers), None)


def test_every_node_type_is_under_a_contract() -> None:
    names = registry.names()
    kinds = Counter(contract_of(n) for n in names)
    summary = ", ".join(f"{kinds[k]} {k}" for k in ("transform", "device", "source", "evaluator", "run", "store"))
    none = sorted(n for n in names if contract_of(n) is None)
    print(f"{len(names)} node types: {summary}; " + ("all covered" if not none else f"NOT covered: {none}"))
    assert not none, (
        f"node types under no contract: {none}; add an example maker (device nodes: pcdag/testing/examples.py, "
        f"sources, evaluators, run nodes and stores: {MAKERS})"
    )


def _maker(table: dict, name: str, kind: str):
    if name not in table:
        pytest.fail(f"{kind} {name} has no example maker; add one in {MAKERS}")
    return table[name]


@pytest.mark.parametrize("name", DEVICE)
def test_device_contract(name: str) -> None:
    for node, example in device_examples(name):  # ContractError "add one in pcdag/testing/examples.py"
        check_device_node(node, example)


@pytest.mark.parametrize("name", SOURCES)
def test_source_contract(name: str, shared_data, tmp_path) -> None:
    node = _maker(shapes.SOURCES, name, "source")(shared_data, tmp_path)
    assert check_source(node, missing_root=tmp_path / "nowhere")


@pytest.mark.parametrize("name", [n for n in OTHERS if n not in shapes.STORES])
def test_run_node_contract(name: str, shared_data, tmp_path) -> None:
    node, inputs = _maker(shapes.RUN_NODES, name, "run node")(shared_data, tmp_path)
    check_run_node(node, inputs)


@pytest.mark.parametrize("name", EVALUATORS)
def test_evaluator_contract(name: str, shared_data, tmp_path) -> None:
    node, example = _maker(shapes.EVALUATORS, name, "evaluator")(shared_data, tmp_path)
    (tmp_path / "eval").mkdir()
    check_evaluator(node, example, tmp_path / "eval")


@pytest.mark.parametrize("name", [n for n in OTHERS if n in shapes.STORES])
def test_store_contract(name: str, shared_data, tmp_path) -> None:
    check_store(registry.get(name), tmp_path / "store", shapes.STORES[name](shared_data, tmp_path))


def test_a_node_type_without_a_maker_is_named() -> None:
    class Unknown(Node):
        pass

    with pytest.raises(ContractError, match="add one in pcdag/testing/examples.py"):
        device_examples("NoSuchDeviceNode")
    assert contract_of(Unknown.type_name()) is None


def clouds_for(node: CloudTransform, always_all: bool = False) -> st.SearchStrategy[PointCloud]:
    """Clouds with every field the node reads plus a random subset of the others, at several scales."""
    required = node.fields().reads - {"coord"}
    unknown = sorted(required - set(FIELD_MAKERS))
    if unknown:
        pytest.fail(f"{node!r} reads {unknown}, which pcdag.testing.point_clouds cannot generate; add a maker")
    others = sorted(set(FIELD_MAKERS) - required)
    extra = st.just(set(others)) if always_all else st.sets(st.sampled_from(others))
    return st.tuples(extra, st.sampled_from((0.05, 1.0, 10.0))).flatmap(
        lambda t: point_clouds(max_points=150, fields=tuple(sorted(required | t[0])), scale=t[1])
    )


def test_every_cloud_transform_is_covered() -> None:
    assert {"GridSample", "EstimateNormals", "Oversegment", "RandomRotate", "NormalizeColor"} <= set(TRANSFORMS)


@pytest.mark.parametrize("name", TRANSFORMS)
def test_transform_contract(name: str) -> None:
    node = registry.get(name)()  # default parameters: every shipped transform must have usable defaults
    outcomes: Counter[str] = Counter()

    @settings(max_examples=40, deadline=None)
    @given(cloud=clouds_for(node), seed=seeds())
    def run(cloud: PointCloud, seed: int) -> None:
        try:
            out = check_transform_contract(node, cloud, np.random.default_rng(seed))
        except CloudError:  # a refusal that names the node (the contract checked the name)
            outcomes["refused"] += 1
            return
        outcomes["applied"] += 1
        assert "_contract_row" not in out

    run()
    assert outcomes["applied"] > 0, f"{name} refused every generated cloud: {dict(outcomes)}"


@pytest.mark.parametrize("name", TRANSFORMS)
def test_declared_reads_are_real(name: str) -> None:
    node = registry.get(name)()

    @settings(max_examples=10, deadline=None)
    @given(cloud=clouds_for(node, always_all=True), seed=seeds())
    def run(cloud: PointCloud, seed: int) -> None:
        check_reads_declared(node, cloud, np.random.default_rng(seed))

    run()


# ------------------------------------------------------------------ the checks themselves must catch breaches
# These nodes are deliberately broken and NOT registered (they would join the parametrised tests above).


class _Base(CloudTransform):
    def fields(self) -> FieldEffect:
        return effect(reads=["coord"])


class Identity(_Base):
    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        return cloud


class DropsUndeclared(_Base):
    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        del cloud["segment"]
        return cloud


class ReadsUndeclared(_Base):
    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        return cloud.select(cloud["color"][:, 0] < 255)


class ShufflesOneField(_Base):
    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        cloud["coord"] = cloud["coord"][::-1].copy()  # coord reordered, the other fields not
        return cloud


class UsesGlobalRandomness(_Base):
    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        return cloud.select(np.random.default_rng().permutation(len(cloud)))


class AnonymousRefusal(_Base):
    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        raise CloudError("too few points")


class WrongDtype(_Base):
    def fields(self) -> FieldEffect:
        return effect(reads=["coord"], writes=["normal"])

    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        cloud["normal"] = np.zeros((len(cloud), 3))  # float64: breaks the field contract
        return cloud


class MissingWrite(_Base):
    def fields(self) -> FieldEffect:
        return effect(reads=["coord"], writes=["grid_coord"])

    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        return cloud


class AddsPoints(_Base):
    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        return cloud.select(np.concatenate([np.arange(len(cloud)), [0]]))


class ReadNotReal(CloudTransform):
    def fields(self) -> FieldEffect:
        return effect(reads=["coord", "color"])

    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        return cloud


class OptionalReallyRequired(CloudTransform):
    def fields(self) -> FieldEffect:
        return effect(reads=["coord"], optional_reads=["normal"], writes=["coord"])

    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        cloud["coord"] = cloud["coord"] + cloud["normal"]
        return cloud


class WithParam(_Base):
    @attrs.frozen
    class Params:
        p: float = param(0.5, in_range(0.0, 1.0))

    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        return cloud.select(rng.random(len(cloud)) < self.params.p)


def _cloud(n: int = 60) -> PointCloud:
    rng = np.random.default_rng(7)
    return PointCloud(
        {
            "coord": rng.normal(size=(n, 3)).astype(np.float32),
            "color": rng.integers(0, 255, size=(n, 3), dtype=np.uint8),  # never 255: ReadsUndeclared keeps all
            "segment": rng.integers(0, 20, size=n).astype(np.int16),
            "normal": np.tile(np.array([0, 0, 1], np.float32), (n, 1)),
        },
        {"scene": "hand-made"},
    )


def test_contract_accepts_a_correct_node_and_leaves_the_input_alone() -> None:
    cloud = _cloud()
    before = {k: v.copy() for k, v in cloud.materialise().items()}
    out = check_transform_contract(WithParam(p=0.5), cloud, np.random.default_rng(0))
    assert 0 < len(out) < len(cloud) and set(out) == set(before)
    assert all(np.array_equal(cloud[k], v) for k, v in before.items())
    check_transform_contract(Identity(), cloud, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (DropsUndeclared(), "removed fields it does not declare"),
        (ReadsUndeclared(), "read fields it does not declare"),
        (ShufflesOneField(), "changed field 'coord'"),
        (UsesGlobalRandomness(), "different results for the same seed"),
        (AnonymousRefusal(), "does not name the node"),
        (WrongDtype(), "dtype float64"),
        (MissingWrite(), "declared writes missing"),
        (AddsPoints(), "no transform may add points"),
    ],
)
def test_contract_catches_breaches(node: CloudTransform, message: str) -> None:
    with pytest.raises(ContractError, match=message) as info:
        check_transform_contract(node, _cloud(), np.random.default_rng(0))
    assert node.type_name() in str(info.value)


def test_undeclared_read_of_an_absent_field_is_a_contract_error() -> None:
    cloud = _cloud()
    del cloud["color"]
    with pytest.raises(ContractError, match="KeyError"):
        check_transform_contract(ReadsUndeclared(), cloud, np.random.default_rng(0))


def test_reads_check_catches_unused_and_wrongly_optional_reads() -> None:
    with pytest.raises(ContractError, match="declares it reads 'color'"):
        check_reads_declared(ReadNotReal(), _cloud(), np.random.default_rng(0))
    with pytest.raises(ContractError, match="declares 'normal' optional"):
        check_reads_declared(OptionalReallyRequired(), _cloud(), np.random.default_rng(0))
    check_reads_declared(Identity(), _cloud(), np.random.default_rng(0))


def test_invalid_input_cloud_is_the_callers_error() -> None:
    cloud = _cloud()
    cloud["coord"] = np.full((len(cloud), 3), np.nan, np.float32)
    with pytest.raises(ValueError, match="valid input cloud"):
        check_transform_contract(Identity(), cloud, np.random.default_rng(0))
