"""EMATeacher's BatchNorm modes: the student's running statistics (eval mode) or each batch's own."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from pcdag.nodes.teacher.ema import EMATeacher, ema_update


def student() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4, momentum=0.01), torch.nn.Dropout(0.5))


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(1e-3, 1e3), shift=st.floats(-10, 10), rows=st.integers(2, 40))
def test_batch_mode_normalises_with_the_batch_and_leaves_running_statistics(scale: float, shift: float, rows: int):
    model = student()
    teacher = EMATeacher(batch_norm="batch").build({"model": model})
    x = torch.randn(rows, 3, generator=torch.Generator().manual_seed(rows)) * scale + shift
    with torch.no_grad():
        hidden = teacher[0](x)
        expected = torch.nn.functional.batch_norm(hidden, None, None, teacher[1].weight, teacher[1].bias, True)
        got = teacher(x)  # eval mode: dropout off
    assert not teacher.training
    torch.testing.assert_close(got, expected)
    assert torch.equal(teacher[1].running_mean, torch.zeros(4)) and torch.equal(teacher[1].running_var, torch.ones(4))


def test_running_mode_is_eval_mode():
    model = student()
    teacher = EMATeacher().build({"model": model})
    x = torch.randn(8, 3) * 0.01
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), model.eval()(x))


@pytest.mark.parametrize("mode", ["running", "batch"])
def test_both_modes_keep_the_students_state_dict_and_follow_it(mode: str):
    model = student()
    teacher = EMATeacher(batch_norm=mode).build({"model": model})
    assert list(teacher.state_dict()) == list(model.state_dict())
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.fill_(3.0)
    ema_update(teacher, model, 0.5)
    torch.testing.assert_close(teacher[0].weight, model[0].weight - 0.5)
    assert torch.equal(teacher[1].running_mean, model[1].running_mean)  # buffers copied, used or not


def test_bad_mode_is_refused_naming_the_parameter():
    with pytest.raises(Exception, match="batch_norm"):
        EMATeacher(batch_norm="sync")
