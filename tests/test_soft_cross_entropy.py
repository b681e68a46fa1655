"""soft_cross_entropy: the plain log-softmax form's values and gradients, with less kept for the backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from pcdag.ops.soft_cross_entropy import soft_cross_entropy
from pcdag.testing.autograd import saved_bytes


def plain(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    return -(targets * F.log_softmax(logits.float() / temperature, dim=-1)).sum(-1)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 20),
    k=st.integers(1, 40),
    temperature=st.floats(0.02, 2.0),
    scale=st.floats(0.1, 30.0),
    normalised=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_values_and_gradients_are_the_plain_forms(rows, k, temperature, scale, normalised, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, k, generator=g, dtype=torch.float64) * scale).requires_grad_(True)
    targets = torch.rand(rows, k, generator=g, dtype=torch.float64)
    if normalised:
        targets = targets / targets.sum(-1, keepdim=True)  # Sinkhorn's rows
    weights = torch.randn(rows, generator=g, dtype=torch.float64)  # a gradient that differs per row
    got = soft_cross_entropy(logits, targets, temperature)
    (grad_got,) = torch.autograd.grad((got * weights).sum(), logits)
    want = plain(logits, targets, temperature)
    (grad_want,) = torch.autograd.grad((want * weights).sum(), logits)
    torch.testing.assert_close(got.double(), want.double(), rtol=1e-5, atol=1e-5 * scale / temperature)
    # Both sides compute in float32. A gradient entry is w * (p * mass - t) / temperature, a difference of terms as
    # large as w * mass / temperature (mass: the row's target sum), so each side's rounding error is a few float32
    # epsilons (1.2e-7) of that size, however small the entry; 1e-6 is eight epsilons.
    size = weights.abs()[:, None] * targets.sum(-1, keepdim=True) / temperature  # [rows, 1]
    assert ((grad_got - grad_want).abs() <= 1e-4 * grad_want.abs() + 1e-6 * (1 + size)).all()
    if normalised:  # cross-entropy is at least the targets' entropy (Gibbs)
        entropy = -(targets * targets.log()).sum(-1)
        assert (got.detach() >= entropy - 1e-6 * (1 + scale / temperature)).all()


def test_one_hot_targets_give_minus_log_probability_and_perfect_logits_lower_it() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    got = soft_cross_entropy(logits, targets, 1.0)
    torch.testing.assert_close(got, -torch.log_softmax(logits, -1)[[0, 1], [0, 1]])
    assert soft_cross_entropy(logits * 10, targets[:1].expand(2, 3), 1.0)[0] < got[0]


def test_bf16_logits_keep_six_bytes_an_entry_instead_of_eight_and_get_a_bf16_gradient() -> None:
    rows, k = 64, 256
    logits = torch.randn(rows, k).bfloat16().requires_grad_(True)
    targets = torch.softmax(torch.randn(rows, k), -1)
    _, ours = saved_bytes(lambda: soft_cross_entropy(logits, targets, 0.1))
    _, theirs = saved_bytes(lambda: plain(logits, targets, 0.1))
    assert ours == pytest.approx(6 * rows * k, rel=0.05) and theirs == pytest.approx(8 * rows * k, rel=0.05)
    loss = soft_cross_entropy(logits, targets, 0.1).sum()
    (grad,) = torch.autograd.grad(loss, logits)
    (grad_plain,) = torch.autograd.grad(plain(logits, targets, 0.1).sum(), logits)
    assert grad.dtype == torch.bfloat16
    torch.testing.assert_close(grad.float(), grad_plain.float(), rtol=1e-2, atol=1e-2)


def test_bad_shapes_and_temperatures_are_refused() -> None:
    with pytest.raises(ValueError, match=r"logits \(2, 3\) and targets \(2, 4\)"):
        soft_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 4), 0.1)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        soft_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 3), 0.0)
