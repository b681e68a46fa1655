"""SinkhornKnopp, ClusteringHead and ClusteringLoss: the Sonata / LAM3C clustering side."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pcdag.graphs.batch import Encoded
from pcdag.graphs.device import StepContext
from pcdag.graphs.params import ParamError
from pcdag.nodes.heads.clustering_head import ClusteringHead
from pcdag.nodes.heads.clustering_loss import ClusteringLoss, view_pairs
from pcdag.nodes.heads.parts.clustering_module import ClusteringHeadModule
from pcdag.ops.sinkhorn import SinkhornKnopp
from pcdag.testing.autograd import saved_bytes
from pcdag.testing.network import free_port

# --------------------------------------------------------------------------------------------- references


def spec_sinkhorn(logits: np.ndarray, tau: float, iterations: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The spec's algorithm, float64, no shift; returns (Q [n, K], point masses after the last row step [n])."""
    q = np.exp(logits.astype(np.float64) / tau).T  # [K, n]
    k, n = q.shape
    q /= q.sum()
    masses = np.full(n, 1.0 / n)
    for _ in range(iterations):
        q /= q.sum(axis=1, keepdims=True) * k
        masses = q.sum(axis=0)  # [n]
        q /= q.sum(axis=0, keepdims=True) * n
    return (q * n).T, masses


def entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-30, None))).sum(-1)


@st.composite
def logit_matrices(draw, max_n: int = 40, max_k: int = 12) -> np.ndarray:
    """Cosine-like logits in [-1, 1], float32, from a seed (continuous values, no accidental ties)."""
    n, k = draw(st.integers(1, max_n)), draw(st.integers(1, max_k))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    return rng.uniform(-1, 1, size=(n, k)).astype(np.float32)


# --------------------------------------------------------------------------------------------- Sinkhorn


@settings(max_examples=40, deadline=None)
@given(logits=logit_matrices(), tau=st.floats(0.04, 1.0), iterations=st.integers(1, 5))
def test_sinkhorn_is_the_spec_algorithm(logits: np.ndarray, tau: float, iterations: int) -> None:
    q = SinkhornKnopp(iterations)(torch.from_numpy(logits), tau)
    want, _ = spec_sinkhorn(logits, tau, iterations)
    assert q.dtype == torch.float32 and q.shape == logits.shape
    np.testing.assert_allclose(q.numpy(), want, rtol=1e-4, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(logits=logit_matrices(), tau=st.floats(0.04, 1.0))
def test_sinkhorn_rows_exact_prototype_totals_bounded(logits: np.ndarray, tau: float) -> None:
    n, k = logits.shape
    q = SinkhornKnopp(3)(torch.from_numpy(logits), tau).double().numpy()
    # exact after the last (point) normalisation: every row is a distribution, the whole matrix sums to n
    np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-5)
    assert (q >= 0).all()
    # the prototype totals are n/K only approximately: after the last prototype step every prototype held
    # 1/K, the point step then divides point i by its mass c_i, so a total lies in [1/(K max c), 1/(K min c)]
    _, masses = spec_sinkhorn(logits, tau, 3)
    totals = q.sum(0)  # [K]
    lo, hi = 1.0 / (k * masses.max()), 1.0 / (k * masses.min())
    assert (totals >= lo * (1 - 1e-4)).all() and (totals <= hi * (1 + 1e-4)).all()
    assert lo * (1 - 1e-9) <= n / k <= hi * (1 + 1e-9)  # Σ_k totals = n, so n/K lies between the bounds


@settings(max_examples=30, deadline=None)
@given(logits=logit_matrices(max_n=30, max_k=8), tau=st.floats(0.25, 1.0))
def test_sinkhorn_prototype_totals_converge_with_iterations(logits: np.ndarray, tau: float) -> None:
    n, k = logits.shape
    q = SinkhornKnopp(300)(torch.from_numpy(logits), tau).double().numpy()
    np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(q.sum(0), n / k, rtol=1e-3)


@settings(max_examples=30, deadline=None)
@given(logits=logit_matrices(), tau=st.floats(0.04, 1.0), seed=st.integers(0, 2**31))
def test_sinkhorn_is_permutation_equivariant(logits: np.ndarray, tau: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows, cols = rng.permutation(logits.shape[0]), rng.permutation(logits.shape[1])
    sk = SinkhornKnopp(3)
    q = sk(torch.from_numpy(logits), tau).numpy()
    q_perm = sk(torch.from_numpy(logits[rows][:, cols].copy()), tau).numpy()
    np.testing.assert_allclose(q_perm, q[rows][:, cols], rtol=1e-5, atol=1e-7)


@settings(max_examples=30, deadline=None)
@given(
    k=st.integers(2, 8),
    m=st.integers(1, 6),
    hi_lo=st.tuples(st.floats(-1, 1), st.floats(-1, 1)).filter(lambda t: t[0] - t[1] > 0.05),
    taus=st.tuples(st.floats(0.04, 1.0), st.floats(0.04, 1.0)).filter(lambda t: t[1] - t[0] > 0.01),
    seed=st.integers(0, 2**31),
)
def test_lower_temperature_is_sharper(k: int, m: int, hi_lo, taus, seed: int) -> None:
    """Balanced preferences (each prototype preferred by m points): Sinkhorn = softmax, entropy falls with τ."""
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(k), m))  # [n]
    logits = np.full((k * m, k), hi_lo[1], np.float32)
    logits[np.arange(k * m), labels] = hi_lo[0]
    sharp, soft = (SinkhornKnopp(3)(torch.from_numpy(logits), tau).double().numpy() for tau in taus)
    np.testing.assert_allclose(sharp, torch.softmax(torch.from_numpy(logits).double() / taus[0], 1), rtol=1e-4)
    assert (entropy(sharp) < entropy(soft)).all()
    assert (sharp[np.arange(k * m), labels] > soft[np.arange(k * m), labels]).all()


def test_sinkhorn_high_temperature_is_uniform_and_empty_input_is_empty() -> None:
    logits = torch.rand(20, 5) * 2 - 1
    np.testing.assert_allclose(SinkhornKnopp(3)(logits, 1e4).numpy(), 0.2, atol=1e-4)
    assert SinkhornKnopp(3)(torch.zeros(0, 7), 0.05).shape == (0, 7)


def test_sinkhorn_runs_in_float32_under_autocast_without_grad() -> None:
    logits = (torch.rand(50, 16) * 2 - 1).to(torch.bfloat16).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = SinkhornKnopp(3)(logits, 0.04)
    assert q.dtype == torch.float32 and not q.requires_grad
    torch.testing.assert_close(q, SinkhornKnopp(3)(logits.detach().float(), 0.04))


def test_sinkhorn_constant_offset_changes_nothing_and_does_not_overflow() -> None:
    logits = torch.rand(30, 6) * 2 - 1
    q = SinkhornKnopp(3)(logits + 50.0, 0.5)  # exp(100) overflows float32 without the shift by the maximum
    assert torch.isfinite(q).all()
    torch.testing.assert_close(q, SinkhornKnopp(3)(logits, 0.5), rtol=1e-4, atol=1e-6)


def _sinkhorn_worker(rank: int, port: int, cases: list[tuple[torch.Tensor, int]], out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        for i, (logits, cut) in enumerate(cases):
            rows = logits[:cut] if rank == 0 else logits[cut:]
            torch.save(SinkhornKnopp(3)(rows, 0.05), Path(out) / f"{i}_{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_sinkhorn_on_two_ranks_equals_one_process(tmp_path: Path) -> None:
    torch.manual_seed(0)
    logits = torch.rand(13, 7) * 2 - 1
    cases = [(logits, 5), (logits, 0), (logits, 13), (torch.zeros(0, 7), 0)]  # uneven, an empty rank, all empty
    mp.spawn(_sinkhorn_worker, args=(free_port(), cases, str(tmp_path)), nprocs=2, join=True)
    for i, (rows, _) in enumerate(cases):
        parts = [torch.load(tmp_path / f"{i}_{r}.pt", weights_only=True) for r in (0, 1)]
        torch.testing.assert_close(torch.cat(parts), SinkhornKnopp(3)(rows, 0.05), rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------------------------- head


def test_head_parameters_and_init() -> None:
    torch.manual_seed(0)
    head = ClusteringHeadModule(in_channels=64, hidden=512, embed=32, prototypes=40)
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == {
        "mlp.0.weight": (512, 64),
        "mlp.0.bias": (512,),
        "mlp.2.weight": (32, 512),
        "mlp.2.bias": (32,),
        "prototype.weight": (40, 32),
    }
    assert head.out_channels == 40
    for layer in (head.mlp[0], head.mlp[2]):
        assert float(layer.weight.std()) == pytest.approx(0.02, rel=0.1)
        assert not layer.bias.any()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), scale=st.sampled_from([0.0, 1e-3, 1.0, 1e3]), n=st.integers(0, 20))
def test_head_logits_are_cosines_to_unit_prototypes(seed: int, scale: float, n: int) -> None:
    torch.manual_seed(seed)
    head = ClusteringHeadModule(in_channels=6, hidden=32, embed=8, prototypes=10)
    feat = torch.randn(n, 6) * scale
    logits = head(feat)
    assert logits.shape == (n, 10) and (logits.abs() <= 1 + 1e-6).all()
    z, w = head.embed(feat), head.prototype.weight
    cosines = torch.cosine_similarity(z[:, None], w[None], dim=-1)  # [n, 10]
    torch.testing.assert_close(logits, cosines * (z.norm(dim=1) > 0)[:, None])
    with torch.no_grad():  # rescaling a prototype's parameter row changes nothing: its magnitude is fixed at 1
        head.prototype.weight.mul_(torch.rand(10, 1) * 100 + 1e-3)
    torch.testing.assert_close(head(feat), logits)


class _PointceptLikeHead(nn.Module):
    """A head built as Pointcept's is (torch weight norm, magnitude frozen at 1), for the state-dict mapping."""

    def __init__(self, in_channels: int, hidden: int, embed: int, prototypes: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, hidden), nn.GELU(), nn.Linear(hidden, embed))
        self.prototype = nn.utils.parametrizations.weight_norm(nn.Linear(embed, prototypes, bias=False))
        self.prototype.parametrizations.weight.original0.data.fill_(1)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.prototype(nn.functional.normalize(self.mlp(feat), dim=-1))


def test_pointcept_state_dict_maps_onto_the_head() -> None:
    torch.manual_seed(0)
    theirs = _PointceptLikeHead(12, 24, 8, 16)
    ours = ClusteringHeadModule(12, 24, 8, 16)
    ours.load_state_dict(ClusteringHeadModule.pointcept_state(theirs.state_dict()))
    feat = torch.randn(30, 12)
    torch.testing.assert_close(ours(feat), theirs(feat))
    state = theirs.state_dict()
    state["prototype.parametrizations.weight.original0"] *= 2
    with pytest.raises(ValueError, match="original0"):
        ClusteringHeadModule.pointcept_state(state)


def test_head_node_takes_width_from_the_backbone() -> None:
    backbone = nn.Linear(3, 3)
    backbone.out_channels = 20  # type: ignore[assignment]
    ctx = _ctx()
    node = ClusteringHead(hidden=16, embed=4, prototypes=5)
    module = node.build({"backbone": backbone})
    assert module.mlp[0].in_features == 20 and node.forward(ctx, module, backbone=backbone)["model"] is module
    assert ClusteringHead(hidden=16, embed=4, prototypes=5, in_channels=7).build({}).mlp[0].in_features == 7
    with pytest.raises(ValueError, match="ClusteringHead.*'backbone'"):
        node.build({})
    with pytest.raises(ValueError, match="in_channels = 7.*20"):
        ClusteringHead(in_channels=7).build({"backbone": backbone})
    with pytest.raises(ParamError, match="embed"):
        ClusteringHead(embed=0)


# --------------------------------------------------------------------------------------------- loss


def _ctx(step: int = 0, total: int = 100) -> StepContext:
    return StepContext(step=step, total_steps=total, generator=torch.Generator(), device=torch.device("cpu"))


def _encoded(views: list[np.ndarray], kind: str, per_scene: int, feat: torch.Tensor | None = None, c: int = 8):
    origin = torch.from_numpy(np.concatenate(views).astype(np.float32)).reshape(-1, 3)
    counts = torch.tensor([len(v) for v in views])
    if feat is None:
        feat = torch.randn(len(origin), c)
    return Encoded(
        feat=feat, coord=origin.clone(), origin_coord=origin, offset=torch.cumsum(counts, 0), level=2,
        kind=kind, per_scene=per_scene,
    )  # fmt: skip


def _heads(c: int = 8, k: int = 6) -> tuple[ClusteringHeadModule, ClusteringHeadModule]:
    student = ClusteringHeadModule(c, hidden=16, embed=8, prototypes=k)
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        teacher.requires_grad_(False)
    return student, teacher


def direct_loss(student: Encoded, teacher: Encoded, heads, pairs: list[tuple[int, int]], tau_s: float, tau_t: float):
    """The loss from its definition, pair by pair, with the float64 spec Sinkhorn over all pairs at once."""
    head, teacher_head = heads
    qi, ti = zip(*pairs, strict=True)
    with torch.no_grad():
        t_logits = teacher_head(teacher.feat[list(ti)]).double().numpy()
        s_logits = head(student.feat[list(qi)]).double()
    q, _ = spec_sinkhorn(t_logits, tau_t)
    view = student.batch[list(qi)].tolist()
    per_view: dict[int, list[float]] = {}
    for j in range(len(pairs)):
        logp = torch.log_softmax(s_logits[j] / tau_s, 0).numpy()
        per_view.setdefault(view[j], []).append(-(q[j] * logp).sum())
    return float(np.mean([np.mean(v) for v in per_view.values()]))


def _line(xs, y: float = 0.0) -> np.ndarray:
    return np.array([[x, y, 0.0] for x in xs], np.float32)


def _hand_built(student_views: int = 2, kind: str = "global"):
    """2 scenes, 50 m apart; teacher views 0 / 1 have points at x = 0,1,2 / 0.5,1.5,2.5 (+50 s)."""
    teacher = _encoded([_line(np.array(x) + 50 * s) for s in (0, 1) for x in ([0, 1, 2], [0.5, 1.5, 2.5])], "global", 2)
    stud = [[0.05, 1.45, 5.0], [0.55, 2.1, 9.0], [1.02, 7.0], [2.6]][:student_views]
    student = _encoded([_line(np.array(x) + 50 * s) for s in (0, 1) for x in stud], kind, student_views)
    return student, teacher


# (student row, teacher row) within scene 0; scene 1 adds the views' sizes to both
HAND_PAIRS = {
    "same": [(0, 0), (3, 3)],  # 0.05→0 ; 0.55→0.5
    "other": [(1, 4), (4, 2)],  # 1.45→1.5 ; 2.1→2
    "first": [(0, 0), (4, 2)],  # 0.05→0 ; 2.1→2
}


def test_view_pairs() -> None:
    student, teacher = _hand_built()
    assert view_pairs(student, teacher, "same").tolist() == [[0, 0], [1, 1], [2, 2], [3, 3]]
    assert view_pairs(student, teacher, "other").tolist() == [[0, 1], [1, 0], [2, 3], [3, 2]]
    local, _ = _hand_built(4, "local")
    assert view_pairs(local, teacher, "first").tolist() == [[s * 4 + v, s * 2] for s in (0, 1) for v in range(4)]
    with pytest.raises(ValueError, match="'student'.*'teacher'.*use pairing 'first'"):
        view_pairs(local, teacher, "same")


@pytest.mark.parametrize("pairing", sorted(HAND_PAIRS))
def test_loss_on_hand_built_matches(pairing: str) -> None:
    torch.manual_seed(1)
    student, teacher = _hand_built()
    heads = _heads()
    node = ClusteringLoss(pairing=pairing, teacher_temperature=0.05)
    ctx = _ctx()
    out = node.forward(ctx, node.build({}), student=student, teacher=teacher, head=heads[0], teacher_head=heads[1])
    pairs = HAND_PAIRS[pairing] + [(q + 6, t + 6) for q, t in HAND_PAIRS[pairing]]
    assert ctx.metrics["pairs"] == 4 and ctx.metrics["empty"] == 0 and ctx.metrics["t_teacher"] == 0.05
    assert float(out["loss"].value) == pytest.approx(direct_loss(student, teacher, heads, pairs, 0.1, 0.05), rel=1e-4)


def test_unmask_pairs_local_views_with_the_first_global_view() -> None:
    torch.manual_seed(2)
    student, teacher = _hand_built(4, "local")
    heads = _heads()
    node = ClusteringLoss(pairing="first", weight=0.5)
    ctx = _ctx()
    out = node.forward(ctx, node.build({}), student=student, teacher=teacher, head=heads[0], teacher_head=heads[1])
    # view 2 (x 1.02, 7) matches teacher x=1; view 3 (x 2.6) is 0.6 from x=2: no match, the view is left out
    scene0 = [(0, 0), (4, 2), (6, 1)]
    pairs = scene0 + [(q + 9, t + 6) for q, t in scene0]
    assert ctx.metrics["pairs"] == 6 and out["loss"].weight == 0.5
    assert float(out["loss"].value) == pytest.approx(direct_loss(student, teacher, heads, pairs, 0.1, 0.04), rel=1e-4)


def test_reference_semantics_square_the_radius() -> None:
    teacher = _encoded([_line([0.0, 5.0])], "global", 1)
    student = _encoded([_line([0.2, 5.05])], "global", 1)  # 0.2 m and 0.05 m from their nearest teacher points
    heads = _heads()
    counts = {}
    for semantics in ("paper", "reference"):
        node, ctx = ClusteringLoss(semantics=semantics, radius=0.32), _ctx()
        node.forward(ctx, node.build({}), student=student, teacher=teacher, head=heads[0], teacher_head=heads[1])
        counts[semantics] = ctx.metrics["pairs"]
    assert counts == {"paper": 2, "reference": 1}  # 0.2 < 0.32 but 0.2 > 0.32² = 0.1024
    assert ClusteringLoss(semantics="reference", radius=0.32).match_radius == 0.32**2
    assert ClusteringLoss(radius=0.32).match_radius == 0.32


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    scenes=st.integers(1, 2),
    pairing=st.sampled_from(["same", "other", "first"]),
    local_views=st.integers(1, 4),
    step=st.integers(0, 99),
)
def test_loss_equals_direct_computation(seed: int, scenes: int, pairing: str, local_views: int, step: int) -> None:
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    per_scene = local_views if pairing == "first" else 2
    size = lambda: int(rng.integers(0, 12))  # noqa: E731
    teacher = _encoded([rng.uniform(0, 1, (size(), 3)) for _ in range(scenes * 2)], "global", 2)
    student = _encoded([rng.uniform(0, 1, (size(), 3)) for _ in range(scenes * per_scene)], "x", per_scene)
    heads = _heads()
    node, ctx = ClusteringLoss(pairing=pairing), _ctx(step)
    out = node.forward(ctx, node.build({}), student=student, teacher=teacher, head=heads[0], teacher_head=heads[1])
    pairs = []  # brute force: nearest teacher point of the paired view, kept when d < 0.32
    t_bounds, s_bounds = [0, *teacher.offset.tolist()], [0, *student.offset.tolist()]
    for sv, tv in view_pairs(student, teacher, pairing).tolist():
        t_pts = teacher.origin_coord[t_bounds[tv] : t_bounds[tv + 1]].double()
        for row in range(s_bounds[sv], s_bounds[sv + 1]):
            if len(t_pts):
                d = (t_pts - student.origin_coord[row].double()).norm(dim=1)
                if d.min() < 0.32:
                    pairs.append((row, t_bounds[tv] + int(d.argmin())))
    tau_t = min(0.07, 0.04 + 0.03 * ctx.progress / 0.05)
    assert ctx.metrics["pairs"] == len(pairs) and ctx.metrics["t_teacher"] == pytest.approx(tau_t)
    value = float(out["loss"].value)
    if pairs:
        assert value >= 0
        assert value == pytest.approx(direct_loss(student, teacher, heads, pairs, 0.1, tau_t), rel=1e-4)
    else:
        assert value == 0 and ctx.metrics["empty"] == 1


def test_gradient_reaches_the_student_head_only() -> None:
    torch.manual_seed(3)
    student, teacher = _hand_built()
    student.feat.requires_grad_()
    teacher.feat.requires_grad_()
    head, teacher_head = _heads()
    teacher_head.requires_grad_(True)  # even a trainable-looking teacher head must get no gradient
    node = ClusteringLoss(pairing="same")
    out = node.forward(_ctx(), node.build({}), student=student, teacher=teacher, head=head, teacher_head=teacher_head)
    out["loss"].value.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    assert all(p.grad is None for p in teacher_head.parameters()) and teacher.feat.grad is None
    assert student.feat.grad[[0, 3, 6, 9]].abs().sum() > 0


def test_no_match_gives_a_connected_zero_loss() -> None:
    student, teacher = _hand_built()
    far = _encoded([_line([100.0 + v]) for v in range(4)], "global", 2)
    student.feat.requires_grad_()
    head, teacher_head = _heads()
    node, ctx = ClusteringLoss(), _ctx()
    out = node.forward(ctx, node.build({}), student=far, teacher=teacher, head=head, teacher_head=teacher_head)
    loss = out["loss"].value
    loss.backward()
    assert float(loss) == 0 and ctx.metrics["empty"] == 1 and ctx.metrics["pairs"] == 0
    assert all(p.grad is not None and not p.grad.any() for p in head.parameters())


def test_loss_refuses_bad_inputs() -> None:
    student, teacher = _hand_built()
    heads = _heads()
    node = ClusteringLoss()
    one_scene = _encoded([_line([0.0]), _line([1.0])], "global", 2)
    with pytest.raises(ValueError, match="ClusteringLoss: ports 'student' and 'teacher' disagree.*scenes"):
        node.forward(_ctx(), node.build({}), student=one_scene, teacher=teacher, head=heads[0], teacher_head=heads[1])
    no_origin = _encoded([_line([0.0])] * 4, "global", 2)
    no_origin.origin_coord = None
    with pytest.raises(ValueError, match="port 'teacher' carries no origin_coord"):
        node.forward(_ctx(), node.build({}), student=student, teacher=no_origin, head=heads[0], teacher_head=heads[1])
    teacher.feat[0] = float("nan")
    with pytest.raises(FloatingPointError, match="ClusteringLoss at step 7"):
        node.forward(_ctx(7), node.build({}), student=student, teacher=teacher, head=heads[0], teacher_head=heads[1])
    with pytest.raises(ParamError, match="pairing"):
        ClusteringLoss(pairing="roll")
    with pytest.raises(ParamError, match="teacher_temperature"):
        ClusteringLoss(teacher_temperature=[[0, 0.0]])


def test_loss_schedules_follow_progress() -> None:
    student, teacher = _hand_built()
    heads = _heads()
    node = ClusteringLoss(weight=[[0, 0.0], [1, 1.0]])
    for step, tau, weight in ((0, 0.04, 0.0), (5, 0.07, 5 / 99), (99, 0.07, 1.0)):
        ctx = _ctx(step)
        out = node.forward(ctx, node.build({}), student=student, teacher=teacher, head=heads[0], teacher_head=heads[1])
        assert ctx.metrics["t_teacher"] == pytest.approx(tau) and out["loss"].weight == pytest.approx(weight)


def test_checkpointed_head_gives_the_plain_loss_and_gradients_and_keeps_less() -> None:
    torch.manual_seed(0)
    plain = ClusteringHeadModule(24, hidden=64, embed=8, prototypes=16)
    cp = ClusteringHeadModule(24, hidden=64, embed=8, prototypes=16, checkpoint=True)
    cp.load_state_dict(plain.state_dict())
    feat = torch.randn(50, 24)
    results, kept = [], []
    for head in (plain, cp):
        x = feat.clone().requires_grad_(True)
        loss, n_bytes = saved_bytes(lambda head=head, x=x: head(x).logsumexp(-1).mean())
        loss.backward()
        results.append((loss.detach(), x.grad, [p.grad for p in head.parameters()]))
        kept.append(n_bytes)
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])
    for a, b in zip(results[0][2], results[1][2], strict=True):
        torch.testing.assert_close(a, b)
    assert kept[1] < kept[0] / 2  # the hidden activations [50, 64] are not kept (their input and weights are)


def test_checkpointed_head_runs_plainly_without_grad(monkeypatch: pytest.MonkeyPatch) -> None:
    head = ClusteringHeadModule(6, hidden=8, embed=4, prototypes=5, checkpoint=True)
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda *a, **k: pytest.fail("checkpoint called"))
    with torch.no_grad():
        head(torch.randn(3, 6))
    head.eval()
    head(torch.randn(3, 6))
