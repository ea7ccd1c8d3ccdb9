"""Learning without Forgetting (Li & Hoiem, ECCV 2016 / TPAMI 2017): self-distillation against a
frozen copy of the previous model.

    before task t (t ≥ 1):  θ_old ← copy(θ)                     (frozen; its outputs on the new
                                                                 task's inputs are the targets)
    L(θ) = L_new(y, f_θ(x)) + λ_o · T² · KL( softmax(f_old(x)/T) ‖ softmax(f_θ(x)/T) )   on old units

The three protocols of the notebook, as parameters (van de Ven & Tolias's Class-IL loss is
VAN_DE_VEN_CLASS_IL below; their optimiser, Adam created once for all tasks, is
TrainConfig(optimizer="adam", reset_optimizer=False)).

Weight decay comes from TrainConfig.weight_decay (5e-4 in the paper). The frozen copy is taken in
begin_task, before any update on the new task, and run under no_grad on each minibatch: that is
exactly "record the old model's responses on the new task's inputs" (the old model never changes),
without storing one logit vector per training example.

Switches for the choices implementations disagree on (all in LwFParams):
    distil_units  'old': the earlier tasks' units (Task-IL: one softmax per earlier task's head,
                  averaged over those tasks; otherwise one softmax over their union)
                  'seen': one softmax over the units of every task seen so far, the current one
                  included (van de Ven & Tolias's Class-IL code)
                  'all': one softmax over every output unit
    pad_teacher   with 'seen' or 'all': the teacher's softmax spans the earlier tasks' units only
                  and is padded with zeros for the student's other units, so the loss pushes the
                  new task's inputs away from the new units (van de Ven & Tolias's code); off: the
                  teacher's softmax spans the same units as the student's
    reduction     'batch': summed over classes, averaged over the batch (Hinton et al.; the KL's
                  'batchmean'); 'batch_classes': averaged over batch × classes (van de Ven &
                  Tolias's code at the release of their published numbers, 86802a8 / 9c0ca78)
    form          'kl': KL(p_old ‖ p_new);  'ce': −Σ p_old log p_new (the paper's "modified
                  cross-entropy"). They differ by the teacher's entropy, a constant in θ: same gradient.
    t2_scaling    multiply the distillation loss by T² (Hinton et al.); the DER authors' code does not
    ce_units      'default': the scenario's own units (Task-IL: the task's head);
                  'seen': the units of every task seen so far (the DER authors' code, also in Task-IL)
    weighting     'lambda': L_new + λ_o·L_old;  'relative': (1/t)·L_new + (1 − 1/t)·λ_o·L_old on the
                  t-th task (van de Ven & Tolias's code)
    warmup_steps  the first N steps of every new task train only the new task's output units
                  (the paper's warm-up: old parameters frozen); 0 = off
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clrepro.config import ConfigError
from clrepro.methods import register
from clrepro.methods.base import Batch, Method

CHOICES = {
    "distil_units": ("old", "seen", "all"),
    "reduction": ("batch", "batch_classes"),
    "form": ("kl", "ce"),
    "ce_units": ("default", "seen"),
    "weighting": ("lambda", "relative"),
}


@dataclass(frozen=True)
class LwFParams:
    lam_o: float = 1.0
    temperature: float = 2.0
    distil_units: str = "old"
    form: str = "kl"
    t2_scaling: bool = True
    ce_units: str = "default"
    weighting: str = "lambda"
    warmup_steps: int = 0
    pad_teacher: bool = False
    reduction: str = "batch"

    def __post_init__(self) -> None:
        if self.lam_o < 0:
            raise ConfigError(f"method_params.lam_o: must be >= 0, got {self.lam_o}")
        if self.temperature <= 0:
            raise ConfigError(f"method_params.temperature: must be > 0, got {self.temperature}")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"method_params.{name}: one of {allowed}, got {getattr(self, name)!r}")
        for name in ("t2_scaling", "pad_teacher"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"method_params.{name}: must be true or false, got {getattr(self, name)!r}")
        if self.pad_teacher and self.distil_units == "old":
            raise ConfigError("method_params.pad_teacher: needs distil_units 'seen' or 'all' (with 'old' the "
                              "student spans the teacher's units only, there is nothing to pad)")
        if self.warmup_steps < 0:
            raise ConfigError(f"method_params.warmup_steps: must be >= 0, got {self.warmup_steps}")


def distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 2.0,
                 form: str = "kl", t2_scaling: bool = True, reduction: str = "batch") -> torch.Tensor:
    """Knowledge distillation between logits (finite: slice units, never pass -inf), student
    [N, K], teacher [N, K'] with K' ≤ K: when K' < K the teacher's softmax covers the student's
    first K' units and is padded with zeros for the others (van de Ven & Tolias's Class-IL LwF).
    Summed over classes and averaged over the batch ('batch'), or averaged over both
    ('batch_classes', i.e. divided by K as well). Without padding, its gradient w.r.t. the student
    logits is s·(q − p)/(T·N) with p, q the softened teacher and student distributions and s = T²
    (or 1 without t2_scaling)."""
    log_q = F.log_softmax(student / temperature, dim=1)
    teacher = teacher.detach()
    if teacher.shape[1] < student.shape[1]:  # zero-padded teacher: p·log p is 0 on the padded units
        p = F.pad(F.softmax(teacher / temperature, dim=1), (0, student.shape[1] - teacher.shape[1]))
        if form == "kl":
            loss = (torch.xlogy(p, p) - p * log_q).sum(1).mean()
        elif form == "ce":
            loss = -(p * log_q).sum(1).mean()
        else:
            raise ValueError(f"unknown distillation form {form!r}")
    elif form == "kl":
        loss = F.kl_div(log_q, F.log_softmax(teacher / temperature, dim=1), log_target=True, reduction="batchmean")
    elif form == "ce":
        loss = -(F.softmax(teacher / temperature, dim=1) * log_q).sum(1).mean()
    else:
        raise ValueError(f"unknown distillation form {form!r}")
    if reduction == "batch_classes":
        loss = loss / student.shape[1]
    elif reduction != "batch":
        raise ValueError(f"unknown distillation reduction {reduction!r}")
    return loss * temperature**2 if t2_scaling else loss


# van de Ven & Tolias's LwF in Class-IL (GMvandeVen/continual-learning at 86802a8 / 9c0ca78): the
# student's softmax over every unit seen so far, the teacher's over the old units padded with
# zeros, a mean over batch × classes, times T², and (1/t)·CE + (1 − 1/t)·KD with the CE over the
# seen classes. In Task-IL and Domain-IL their code distils each earlier head (distil_units 'old').
# Their loss is the cross-entropy form (same gradient as the KL, see `distillation`).
VAN_DE_VEN_CLASS_IL = {"distil_units": "seen", "pad_teacher": True, "reduction": "batch_classes", "form": "ce",
                       "weighting": "relative", "ce_units": "seen"}


@register
class LwF(Method):
    name = "lwf"
    Params = LwFParams

    def __init__(self, model, stream, params) -> None:
        super().__init__(model, stream, params)
        self.teacher: torch.nn.Module | None = None
        self.task = 0
        self.steps_in_task = 0
        device = next(model.parameters()).device
        self._all_units = torch.arange(stream.n_outputs, device=device)
        self._units = [torch.tensor(sorted(t.units), device=device) for t in stream.tasks]

    # --- LwF's bookkeeping ------------------------------------------------------------------
    def begin_task(self, task, x, y) -> None:
        self.task, self.steps_in_task = task.index, 0
        if task.index == 0:
            return
        # The old model, frozen before any update on the new task: its outputs are the targets.
        self.teacher = copy.deepcopy(self.model).eval().requires_grad_(False)

    def after_step(self, batch: Batch) -> None:
        self.steps_in_task += 1

    def old_unit_groups(self, task: int) -> list[torch.Tensor]:
        """The units distilled on, one tensor per softmax (with pad_teacher: the earlier tasks'
        units first, so the teacher's softmax over them is padded at the end)."""
        old = self._units[:task]
        if self.params.distil_units in ("seen", "all"):
            seen = torch.unique(torch.cat(self._units[:task + 1]))
            pool = self._all_units if self.params.distil_units == "all" else seen
            if not self.params.pad_teacher:
                return [pool]
            earlier = torch.unique(torch.cat(old))
            return [torch.cat([earlier, pool[~torch.isin(pool, earlier)]])]
        if self.stream.scenario == "task" and self.params.ce_units == "default":
            return old  # separate heads: one softmax per earlier task
        return [torch.unique(torch.cat(old))]

    # --- the objective ------------------------------------------------------------------------
    def new_task_logits(self, out: torch.Tensor, task: int) -> torch.Tensor:
        if self.params.ce_units == "seen":
            seen = torch.zeros(out.shape[1], dtype=torch.bool, device=out.device)
            seen[torch.cat(self._units[:task + 1])] = True
            return out.masked_fill(~seen, float("-inf"))
        mask = self._masks[task]
        return out if mask is None else out.masked_fill(~mask, float("-inf"))

    def distillation_loss(self, out: torch.Tensor, old: torch.Tensor, task: int) -> torch.Tensor:
        p = self.params
        groups = self.old_unit_groups(task)
        if p.pad_teacher:  # one group, the earlier tasks' units first: the teacher sees only those
            n_old = len(torch.unique(torch.cat(self._units[:task])))
            return distillation(out[:, groups[0]], old[:, groups[0][:n_old]], p.temperature, p.form,
                                p.t2_scaling, p.reduction)
        return sum(
            distillation(out[:, g], old[:, g], p.temperature, p.form, p.t2_scaling, p.reduction) for g in groups
        ) / len(groups)

    def loss(self, batch: Batch) -> torch.Tensor:
        out = self.model(batch.x)
        new = F.cross_entropy(self.new_task_logits(out, batch.task), batch.y)
        if self.teacher is None or self.params.lam_o == 0:
            return new
        with torch.no_grad():
            old_out = self.teacher(batch.x)
        old = self.distillation_loss(out, old_out, batch.task)
        if self.params.weighting == "relative":
            w = 1.0 / (batch.task + 1)
            return w * new + (1 - w) * self.params.lam_o * old
        return new + self.params.lam_o * old

    def transform_gradients(self, batch: Batch) -> None:
        """Warm-up: only the new task's output units learn; everything else stays put."""
        if self.teacher is None or self.steps_in_task >= self.params.warmup_steps:
            return
        head = self.model.head
        for param in self.model.parameters():
            if param is not head.weight and param is not head.bias:
                param.grad = None  # the optimiser skips it (weight decay included)
        keep = torch.zeros(head.weight.shape[0], dtype=torch.bool, device=head.weight.device)
        keep[self._units[batch.task]] = True
        for param in (head.weight, head.bias):
            if param is not None and param.grad is not None:
                param.grad[~keep] = 0
