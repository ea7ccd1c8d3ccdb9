"""Dark Experience Replay, DER and DER++ (Buzzega et al., NeurIPS 2020).

Each step (the authors' order):
    z = f(x)                                          logits of the stream batch
    L = CE(z, y)
    (x', z') ← M                                      replay minibatch with stored logits
    L += α · MSE(f(x'), z')                           DER: match the logits seen at insertion
    (x'', y'') ← M                                    DER++: a second, independent minibatch
    L += β · CE(f(x''), y'')
    θ ← θ − η ∇L
    M ← reservoir(M, (x, y, z.detach()))              fill='reservoir' (the paper)

fill='task_end' is Avalanche's implementation instead: nothing is inserted while training; at
the end of each task the buffer is refilled class-balanced and the new items' logits are
*recomputed* with the model as it is at the end of the task (eval mode).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clrepro.config import ConfigError
from clrepro.data.streams import Task
from clrepro.methods import register
from clrepro.methods.base import Batch
from clrepro.methods.er import ReplayMethod

FILLS = ("reservoir", "task_end")


@dataclass(frozen=True)
class DERParams:
    buffer_size: int = 200
    minibatch_size: int = 128
    alpha: float = 1.0
    fill: str = "reservoir"

    def __post_init__(self) -> None:
        if self.buffer_size < 0:
            raise ConfigError(f"method_params.buffer_size: must be >= 0, got {self.buffer_size}")
        if self.minibatch_size < 1:
            raise ConfigError(f"method_params.minibatch_size: must be >= 1, got {self.minibatch_size}")
        if self.alpha < 0:
            raise ConfigError(f"method_params.alpha: must be >= 0, got {self.alpha}")
        if self.fill not in FILLS:
            raise ConfigError(f"method_params.fill: unknown {self.fill!r}; one of {FILLS}")


@dataclass(frozen=True)
class DERPPParams(DERParams):
    beta: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta < 0:
            raise ConfigError(f"method_params.beta: must be >= 0, got {self.beta}")


@register
class DER(ReplayMethod):
    name = "der"
    Params = DERParams

    def __init__(self, model, stream, params) -> None:
        super().__init__(model, stream, params)
        self._stream_logits: torch.Tensor | None = None  # cached by loss for after_step

    def loss(self, batch: Batch) -> torch.Tensor:
        out = self.model(batch.x)
        self._stream_logits = out.detach()  # raw (unmasked) logits: what the buffer stores
        loss = F.cross_entropy(self.masked(out, batch.task), batch.y)
        if len(self.buffer):
            replay = self.buffer.sample(self.params.minibatch_size)
            loss = loss + self.params.alpha * F.mse_loss(self.model(self.replayed_inputs(replay.x)), replay.logits)
            beta = getattr(self.params, "beta", 0.0)
            if beta:
                replay = self.buffer.sample(self.params.minibatch_size)
                out = self.model(self.replayed_inputs(replay.x))
                loss = loss + beta * F.cross_entropy(self.masked(out, replay.task), replay.y)
        return loss

    def after_step(self, batch: Batch) -> None:
        if self.params.fill == "reservoir":
            self.buffer.add(batch.x_stored, batch.y, batch.task, logits=self._stream_logits)

    def end_task(self, task: Task, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.params.fill == "task_end":
            self.buffer.add_class_balanced(x, y, task.index, logits_fn=self._eval_logits)

    @torch.no_grad()
    def _eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        out = torch.cat([self.model(x[i:i + 2048]) for i in range(0, len(x), 2048)]) if len(x) else x[:, :0]
        self.model.train(was_training)
        return out


@register
class DERPP(DER):
    """DER++: DER plus β·CE on the labels of a second, independently drawn buffer minibatch."""

    name = "derpp"
    Params = DERPPParams
