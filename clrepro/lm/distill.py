"""Distillation pieces shared by the RL's Razor toy and the tiny transformer (SDFT, Shenfeld et al. 2026).

Both KL directions are computed over the full output distribution (every class / vocabulary
token), per position, with the teacher under stop-gradient: only the student receives gradients.

    forward KL(teacher ‖ student) = Σ_v p_T(v) (log p_T(v) − log p_S(v))   (the paper's reported runs)
    reverse KL(student ‖ teacher) = Σ_v p_S(v) (log p_S(v) − log p_T(v))   (the paper's Eq. 1)

The teacher's weights follow the student by an exponential moving average,
θ_T ← (1 − rate)·θ_T + rate·θ_S (rate 0.01 per step in the paper).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Direction = Literal["forward", "reverse"]
DIRECTIONS = ("forward", "reverse")


def forward_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ student) per position (last dim = vocabulary); no gradient to the teacher."""
    log_t = F.log_softmax(teacher_logits.detach(), dim=-1)
    log_s = F.log_softmax(student_logits, dim=-1)
    return (log_t.exp() * (log_t - log_s)).sum(-1)


def reverse_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """KL(student ‖ teacher) per position (last dim = vocabulary); no gradient to the teacher."""
    log_t = F.log_softmax(teacher_logits.detach(), dim=-1)
    log_s = F.log_softmax(student_logits, dim=-1)
    return (log_s.exp() * (log_s - log_t)).sum(-1)


def kl(direction: Direction, teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    if direction == "forward":
        return forward_kl(teacher_logits, student_logits)
    if direction == "reverse":
        return reverse_kl(teacher_logits, student_logits)
    raise ValueError(f"direction: unknown {direction!r}; one of {DIRECTIONS}")


def distillation_loss(
    direction: Direction, teacher_logits: torch.Tensor, student_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token KL summed over the vocabulary, averaged over the (masked) positions."""
    per_token = kl(direction, teacher_logits, student_logits)
    if mask is None:
        return per_token.mean()
    mask = mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp_min(1.0)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, rate: float) -> None:
    """θ_T ← (1 − rate)·θ_T + rate·θ_S, parameter by parameter (buffers copied)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.lerp_(s, rate)
    for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
        t.copy_(s)
