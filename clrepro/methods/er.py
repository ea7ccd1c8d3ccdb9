"""Experience replay with a reservoir buffer, and the bag of tricks (Buzzega et al., ICPR 2020).

Each step (the authors' order):
    (x_B, y_B) ← M uniformly, without replacement       replay minibatch
    L = CE(f([x; x_B]), [y; y_B])                         one cross-entropy over the union
    θ ← θ − η ∇L
    M ← insert(M, (x, y))                                 the stream batch, un-augmented

The tricks, each a switch (so they can be added cumulatively):
    buffer_augmentation   IBA: augment replayed inputs independently, on streams that augment
                          (Seq-CIFAR-10). INACTIVE on the MNIST family: nothing is augmented there,
                          so the switch changes nothing (documented).
    bias_control          BiC: after each task, two scalars (shift b, scale w) on the logits of the
                          task just learned, o ← w·o + b, trained by SGD (lr 0.5, 50 epochs) on the
                          buffer with the network frozen; used at prediction time only.
    lr_decay              ELrD: η = η₀ · γ^(examples seen), set before every step.
    sampling='balanced'   BRS: evict from the most represented class (clrepro/buffer.py).
    sampling='loss_aware' LARS: evict low-loss items of crowded classes first (clrepro/buffer.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clrepro.config import ConfigError, TrainConfig
from clrepro.data.streams import augment
from clrepro.methods import register
from clrepro.methods.base import Batch, Method
from clrepro.methods.buffer import POLICIES, Buffer


@dataclass(frozen=True)
class ERParams:
    buffer_size: int = 200
    minibatch_size: int = 128  # replay minibatch
    sampling: str = "reservoir"  # reservoir | balanced (BRS) | loss_aware (LARS)
    bias_control: bool = False  # BiC
    bic_epochs: int = 50
    bic_lr: float = 0.5
    lr_decay: float = 1.0  # ELrD: γ per example seen (1: off)
    buffer_augmentation: bool = False  # IBA: no-op on streams without augmentation (MNIST family)

    def __post_init__(self) -> None:
        if self.buffer_size < 0:
            raise ConfigError(f"method_params.buffer_size: must be >= 0, got {self.buffer_size}")
        if self.minibatch_size < 1:
            raise ConfigError(f"method_params.minibatch_size: must be >= 1, got {self.minibatch_size}")
        if self.sampling not in POLICIES:
            raise ConfigError(f"method_params.sampling: unknown {self.sampling!r}; one of {POLICIES}")
        if self.bic_epochs < 1:
            raise ConfigError(f"method_params.bic_epochs: must be >= 1, got {self.bic_epochs}")
        if self.bic_lr <= 0:
            raise ConfigError(f"method_params.bic_lr: must be positive, got {self.bic_lr}")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"method_params.lr_decay: must be in (0, 1], got {self.lr_decay}")


class ReplayMethod(Method):
    """Shared by ER and DER: the buffer, per-example masking, and the buffer's own generator."""

    def __init__(self, model, stream, params) -> None:
        super().__init__(model, stream, params)
        # Seeded from the run's seed without consuming the global RNG (empty buffer = fine-tuning).
        generator = torch.Generator().manual_seed(torch.initial_seed() + 7919)
        sampling = getattr(params, "sampling", "reservoir")
        self.buffer = Buffer(params.buffer_size, sampling, generator)

    def replayed_inputs(self, x: torch.Tensor, augmented: bool = True) -> torch.Tensor:
        """Stored inputs as the network sees them: augmented independently of the stream batch
        where the stream augments (the authors augment every replay minibatch there)."""
        return augment(x, self.buffer.generator) if augmented and self.stream.augment else x

    def masked(self, out: torch.Tensor, tasks: torch.Tensor | int) -> torch.Tensor:
        """Task-IL: every example sees only its own task's units (replayed ones included)."""
        if self._masks[0] is None:
            return out
        if isinstance(tasks, int):
            return out.masked_fill(~self._masks[tasks], float("-inf"))
        return out.masked_fill(~torch.stack(self._masks)[tasks], float("-inf"))


@register
class ER(ReplayMethod):
    name = "er"
    Params = ERParams

    def __init__(self, model, stream, params: ERParams) -> None:
        super().__init__(model, stream, params)
        self.bic = torch.zeros(2)  # (shift, scale) as in the authors' code (both start at 0)
        self.bic_units: list[int] | None = None
        self._replayed: torch.Tensor | None = None
        self._losses: torch.Tensor | None = None

    # --- training --------------------------------------------------------------------------
    def make_optimizer(self, cfg: TrainConfig) -> torch.optim.Optimizer:
        self.base_lr, self.batch_size = cfg.lr, cfg.batch_size
        optimizer = super().make_optimizer(cfg)
        self._decay_lr()
        return optimizer

    def _decay_lr(self) -> None:
        if self.params.lr_decay != 1.0:
            for group in self.optimizer.param_groups:
                group["lr"] = self.base_lr * self.params.lr_decay ** self.buffer.seen

    def loss(self, batch: Batch) -> torch.Tensor:
        x, y = batch.x, batch.y
        tasks = torch.full_like(y, batch.task)
        self._replayed = None
        if len(self.buffer):
            replay = self.buffer.sample(self.params.minibatch_size)
            self._replayed = replay.index
            replay_x = self.replayed_inputs(replay.x, self.params.buffer_augmentation)
            x, y, tasks = torch.cat([x, replay_x]), torch.cat([y, replay.y]), torch.cat([tasks, replay.task])
        out = self.masked(self.model(x), tasks if self._replayed is not None else batch.task)
        if self.params.sampling != "loss_aware":
            return F.cross_entropy(out, y)
        losses = F.cross_entropy(out, y, reduction="none")
        self._losses = losses.detach()
        return losses.mean()

    def after_step(self, batch: Batch) -> None:
        n = len(batch.y)
        stream_loss = None
        if self.params.sampling == "loss_aware":
            if self._replayed is not None:
                self.buffer.update_scores(self._replayed, self._losses[n:])
            stream_loss = self._losses[:n]
        self.buffer.add(batch.x_stored, batch.y, batch.task, loss=stream_loss)
        self._decay_lr()

    # --- bias control ----------------------------------------------------------------------
    def end_task(self, task, x, y) -> None:
        if not self.params.bias_control or len(self.buffer) == 0:
            return
        self.bic_units = list(task.units)
        bic = self.bic.clone().to(x.device).requires_grad_(True)
        optimizer = torch.optim.SGD([bic], lr=self.params.bic_lr)
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():  # the network is frozen: its logits on the buffer are computed once
            stored = self.buffer.x[: len(self.buffer)]
            frozen = torch.cat([self.model(stored[i:i + 2048]) for i in range(0, len(stored), 2048)])
        self.model.train(was_training)
        labels, tasks = self.buffer.y[: len(stored)], self.buffer.task[: len(stored)]
        for _ in range(self.params.bic_epochs):
            order = torch.randperm(len(self.buffer), generator=self.buffer.generator).to(x.device)
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                out = self.masked(self._bias_corrected(frozen[idx], bic), tasks[idx])
                optimizer.zero_grad()
                F.cross_entropy(out, labels[idx]).backward()
                optimizer.step()
        self.bic = bic.detach()

    def _bias_corrected(self, out: torch.Tensor, bic: torch.Tensor) -> torch.Tensor:
        if self.bic_units is None:
            return out
        units = torch.tensor(self.bic_units, device=out.device)
        corrected = out[:, units] * bic[1] + bic[0]
        return out.index_copy(1, units, corrected)

    def logits(self, x: torch.Tensor, task: int) -> torch.Tensor:
        out = self._bias_corrected(self.model(x), self.bic.to(x.device))
        return self.masked(out, task)
