"""GroupContrast's losses against plain references; centering across two gloo processes; degenerate batches."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st

from pcdag.graphs import registry
from pcdag.graphs.device import StepContext
from pcdag.nodes.heads.parts.group_contrast import grouping_loss, pool_segments, semantic_contrast
from pcdag.ops.centering import LogitCentering
from pcdag.testing.examples import features, two_views


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 60), size=st.integers(1, 8), dim=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_pooling_equals_a_per_segment_loop(n, size, dim, seed):
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(n, dim, generator=g, dtype=torch.float64)
    segment = torch.randint(-1, size, (n,), generator=g)
    pooled, present = pool_segments(feat, segment, size)
    for s in range(size):
        rows = feat[segment == s]
        assert bool(present[s]) == (len(rows) > 0)
        if len(rows):
            mean = rows.mean(0)
            torch.testing.assert_close(pooled[s], mean / mean.norm().clamp_min(1e-12))
        else:
            assert (pooled[s] == 0).all()


def test_grouping_loss_hand_computed():
    # two segments, two prototypes: K rows (0.5, 0.5) and (1, 0); Q = softmax of logits (0, 0) and (log 3, 0)
    k = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    q_logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    # H = (log 2, 0): only the first segment counts; its cross-entropy is -(0.5 log 0.5 + 0.5 log 0.5) = log 2
    assert grouping_loss(q_logits, k).item() == pytest.approx(math.log(2.0))
    # unweighted: mean of log 2 and -log(3/4)
    assert grouping_loss(q_logits, k, entropy_weights=False).item() == pytest.approx(
        (math.log(2.0) - math.log(0.75)) / 2
    )
    assert grouping_loss(q_logits[:0], k[:0]).item() == 0.0  # no segment: 0, not NaN


def slow_contrast(vq, vk, lq, lk, cq, ck, tau, confidence):
    total, count, no_negative = 0.0, 0, 0
    m = len(vq)
    for i in range(m):
        negatives = [k for k in range(m) if lk[k] != lq[i]]
        if not negatives:
            no_negative += 1
            continue
        for j in range(m):
            if lk[j] != lq[i]:
                continue
            s = lambda a, b: float(vq[a] @ vk[b]) / tau  # noqa: E731
            denominator = math.exp(s(i, j)) + sum(math.exp(s(i, k)) for k in negatives)
            weight = float(cq[i] * ck[j]) if confidence else 1.0
            total += -weight * math.log(math.exp(s(i, j)) / denominator)
            count += 1
    return total, count, no_negative


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(0, 12),
    groups=st.integers(1, 4),
    seed=st.integers(0, 10_000),
    tau=st.sampled_from([0.1, 0.4, 1.0]),
    confidence=st.booleans(),
)
def test_contrast_equals_a_slow_loop_over_positives(m, groups, seed, tau, confidence):
    g = torch.Generator().manual_seed(seed)
    vq = torch.nn.functional.normalize(torch.randn(m, 4, generator=g, dtype=torch.float64), dim=1)
    vk = torch.nn.functional.normalize(torch.randn(m, 4, generator=g, dtype=torch.float64), dim=1)
    lq, lk = torch.randint(0, groups, (m,), generator=g), torch.randint(0, groups, (m,), generator=g)
    cq, ck = torch.rand(m, generator=g, dtype=torch.float64), torch.rand(m, generator=g, dtype=torch.float64)
    got = semantic_contrast(vq.double(), vk.double(), lq, lk, cq, ck, tau, confidence)
    total, count, no_negative = slow_contrast(vq, vk, lq, lk, cq, ck, tau, confidence)
    assert (got.positives, got.no_negative) == (count, no_negative)
    assert got.total.item() == pytest.approx(total, rel=1e-5, abs=1e-6)


def test_contrast_all_one_group_is_finite_with_zero_grad():
    vq = torch.nn.functional.normalize(torch.randn(5, 3), dim=1).requires_grad_(True)
    vk = torch.nn.functional.normalize(torch.randn(5, 3), dim=1)
    same = torch.zeros(5, dtype=torch.int64)
    got = semantic_contrast(vq, vk, same, same, torch.ones(5), torch.ones(5), 0.4)
    got.total.backward()
    assert (got.positives, got.no_negative, got.total.item()) == (0, 5, 0.0)
    assert torch.isfinite(vq.grad).all() and (vq.grad == 0).all()


def _centering_worker(rank: int, world: int, port: int, out) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    centre = LogitCentering(3, momentum=0.5)
    for step in range(3):
        rows = 0 if (rank == 1 and step == 1) else 2 + rank  # rank 1 has no rows at step 1: still calls update
        logits = torch.arange(rows * 3, dtype=torch.float32).reshape(rows, 3) * (rank + 1) + step
        centre.update(logits)
    out[rank] = centre.center.tolist()
    dist.destroy_process_group()


def test_centering_stays_synchronised_across_two_gloo_processes():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_centering_worker, args=(2, port, out), nprocs=2, join=True)
        got = dict(out)
    expected = LogitCentering(3, momentum=0.5)  # one process seeing every rank's rows
    for step in range(3):
        rows = [torch.arange((2 + r) * 3, dtype=torch.float32).reshape(2 + r, 3) * (r + 1) + step for r in (0, 1)]
        if step == 1:
            rows = rows[:1]
        expected.update(torch.cat(rows))
    assert got[0] == got[1]
    np.testing.assert_allclose(got[0], expected.center.tolist(), rtol=1e-6)


def context() -> StepContext:
    return StepContext(step=0, total_steps=10, generator=torch.Generator(), device=torch.device("cpu"))


def run_loss(batch, **params):
    channels = 12
    head = registry.get("GroupContrastHead")(hidden=16, embed=8, point_embed=8, prototypes=4, in_channels=channels)
    head = head.build({})
    node = registry.get("GroupContrastLoss")(**params)
    module = node.build({"head": head}).eval()  # as the runtime keeps a module nothing trains
    student = features(batch.global_views, channels, 2)
    teacher = features(batch.global_views, channels, 1)
    teacher.feat = teacher.feat.detach()
    ctx = context()
    out = node.forward(
        ctx, module, student=student, teacher=teacher, head=head, teacher_head=copy.deepcopy(head), views=batch
    )["loss"]
    out.value.backward()
    return out, ctx, head, module


def test_loss_trains_the_student_head_and_moves_the_centre():
    out, ctx, head, module = run_loss(two_views())
    assert torch.isfinite(out.value) and out.value.item() > 0
    assert ctx.metrics["segments"] > 0 and ctx.metrics["positives"] + ctx.metrics["no_negative"] > 0  # pairs used
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())
    assert module.center.abs().sum() > 0


def test_degenerate_batches_give_zero_with_a_flag_not_nan():
    batch = two_views()
    points = batch.global_views
    none = points.replace(extra={k: torch.full_like(v, -1) for k, v in points.extra.items()})
    out, ctx, head, _ = run_loss(batch.replace(global_views=none))
    assert out.value.item() == 0.0 and ctx.metrics["empty_group"] == 1.0 and ctx.metrics["empty_contrast"] == 1.0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())
    one = dict(points.extra)
    one["overlap_segment"] = torch.where(one["overlap_segment"] >= 0, 0, -1)  # one segment: one group, no negative
    out, ctx, _, _ = run_loss(
        batch.replace(
            global_views=points.replace(extra=one), id_ends={"overlap_segment": (1, 1), "pair": batch.id_ends["pair"]}
        )
    )
    assert torch.isfinite(out.value) and ctx.metrics["no_negative"] > 0 and out.terms["contrast"].item() == 0.0


def test_refuses_views_without_overlap_ids():
    batch = two_views()
    bare = batch.replace(global_views=batch.global_views.replace(extra={}))
    with pytest.raises(ValueError, match="GroupContrastLoss: the views carry no 'overlap_segment'.*TwoViewGenerator"):
        run_loss(bare)


@pytest.mark.parametrize(("scenes", "samples"), [(2, 256), (1, 1024)])
def test_memory_model_matches_what_autograd_keeps(scenes: int, samples: int):
    """memory() against saved-tensor hooks under bf16 autocast: the projector over the view rows, h and h′ over the
    sampled pairs and the per-scene m × m contrast (the three terms change in different proportions here)."""
    from pcdag.testing.autograd import saved_bytes
    from pcdag.testing.device_contract import memory_inputs

    batch, channels = two_views(scenes, samples=samples, points=6000), 96
    loss = registry.get("GroupContrastLoss")()
    head = registry.get("GroupContrastHead")(in_channels=channels).build({})
    teacher = features(batch.global_views, channels, 1)
    teacher.feat = teacher.feat.detach()
    inputs = {
        "student": features(batch.global_views, channels, 2),
        "teacher": teacher,
        "head": head,
        "teacher_head": copy.deepcopy(head),
        "views": batch,
    }
    module = loss.build({"head": head})
    ctx = StepContext(0, 10, torch.Generator(), torch.device("cpu"))
    with torch.autocast("cpu", torch.bfloat16):
        _, measured = saved_bytes(lambda: loss.forward(ctx, module, **inputs))
    modelled = loss.memory(module, memory_inputs(inputs)).saved
    assert batch.id_count("pair") == scenes * samples  # the contrast term is exercised at full size
    assert 0.95 * measured <= modelled <= 1.3 * measured
