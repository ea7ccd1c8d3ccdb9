import math

import pytest
import torch
from torch import nn

from clrepro.lm.distill import distillation_loss, ema_update, forward_kl, kl, reverse_kl

P = torch.tensor([0.5, 0.25, 0.25])  # teacher
Q = torch.tensor([0.25, 0.25, 0.5])  # student


def test_forward_kl_matches_closed_form():
    # KL(P‖Q) = 0.5 ln 2 + 0.25 ln 1 + 0.25 ln 0.5 = 0.25 ln 2
    assert forward_kl(P.log(), Q.log()).item() == pytest.approx(0.25 * math.log(2), abs=1e-6)


def test_reverse_kl_matches_closed_form():
    # an asymmetric pair, so that the two directions differ
    p, q = torch.tensor([0.9, 0.1]), torch.tensor([0.5, 0.5])
    assert reverse_kl(p.log(), q.log()).item() == pytest.approx(0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(5), abs=1e-6)
    assert forward_kl(p.log(), q.log()).item() == pytest.approx(0.9 * math.log(1.8) + 0.1 * math.log(0.2), abs=1e-6)
    assert kl("forward", p.log(), q.log()).item() != pytest.approx(kl("reverse", p.log(), q.log()).item())


def test_kl_is_per_position_and_invariant_to_logit_shift():
    teacher = torch.stack([P.log(), Q.log()])[None]  # [1, 2, 3]: batch 1, two positions
    student = torch.stack([Q.log() + 3.0, Q.log() - 1.0])[None]
    out = forward_kl(teacher, student)
    assert out.shape == (1, 2)
    assert out[0, 0].item() == pytest.approx(0.25 * math.log(2), abs=1e-6)
    assert out[0, 1].item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_gradients_reach_only_the_student(direction):
    teacher = torch.randn(4, 5, requires_grad=True)
    student = torch.randn(4, 5, requires_grad=True)
    distillation_loss(direction, teacher, student).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_mask_averages_over_kept_positions_only():
    teacher = torch.stack([P.log(), P.log()])[None]
    student = torch.stack([Q.log(), P.log() + 100 * torch.tensor([1.0, 0, 0])])[None]
    masked = distillation_loss("forward", teacher, student, mask=torch.tensor([[1, 0]]))
    assert masked.item() == pytest.approx(0.25 * math.log(2), abs=1e-6)


def test_unknown_direction_raises():
    with pytest.raises(ValueError, match="direction"):
        kl("sideways", P.log(), Q.log())


def test_ema_update_follows_its_formula():
    teacher, student = nn.Linear(3, 2), nn.Linear(3, 2)
    before = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, 0.1)
    for t, old, s in zip(teacher.parameters(), before, student.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * old + 0.1 * s)
    ema_update(teacher, student, 1.0)
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        torch.testing.assert_close(t, s)
    with pytest.raises(ValueError):
        ema_update(teacher, student, 1.5)
