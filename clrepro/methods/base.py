"""The interface every method implements (one small class per file).

The training loop (clrepro.train) calls, for each task::

    method.begin_task(task, x, y)
    optimizer = method.make_optimizer(train_cfg)  # every task (first task only if not reset)
    for each minibatch:
        loss = method.loss(batch); loss.backward()
        method.transform_gradients(batch)        # e.g. gradient projection
        optimizer.step()
        method.after_step(batch)                 # e.g. buffer insertion
    method.end_task(task, x, y)                  # e.g. Fisher estimation

and ``method.logits(x, task)`` for evaluation. A method declares the scenarios it supports and
its hyper-parameters as a frozen dataclass ``Params``, validated before anything trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from clrepro.config import SCENARIOS, TrainConfig
from clrepro.data.streams import Stream, Task


@dataclass
class Batch:
    x: torch.Tensor
    y: torch.Tensor
    task: int
    task_ids: torch.Tensor | None = None  # per-example task ids (joint training only)
    x_raw: torch.Tensor | None = None  # the un-augmented inputs, where the stream augments

    @property
    def x_stored(self) -> torch.Tensor:
        """What a replay buffer keeps: the inputs before augmentation."""
        return self.x if self.x_raw is None else self.x_raw


@dataclass(frozen=True)
class NoParams:
    pass


class Method:
    name: ClassVar[str]
    scenarios: ClassVar[frozenset[str]] = frozenset(SCENARIOS)
    Params: ClassVar[type] = NoParams
    trains_jointly: ClassVar[bool] = False  # the loop trains once on all tasks together

    def __init__(self, model: nn.Module, stream: Stream, params) -> None:
        self.model = model
        self.stream = stream
        self.params = params
        device = next(model.parameters()).device
        masks = [stream.output_mask(t) for t in range(len(stream))]
        self._masks = [None if m is None else m.to(device) for m in masks]

    # --- forward -------------------------------------------------------------------------
    def logits(self, x: torch.Tensor, task: int) -> torch.Tensor:
        """Logits used for training and prediction; Task-IL masks other tasks' units."""
        out = self.model(x)
        mask = self._masks[task]
        return out if mask is None else out.masked_fill(~mask, float("-inf"))

    # --- hooks ---------------------------------------------------------------------------
    def begin_task(self, task: Task, x: torch.Tensor, y: torch.Tensor) -> None:
        pass

    def make_optimizer(self, cfg: TrainConfig) -> torch.optim.Optimizer:
        """The optimiser over the trainable parameters; kept as self.optimizer for methods that
        adjust it while training (e.g. a learning-rate decay per example seen)."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        if cfg.optimizer == "adam":
            self.optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        return self.optimizer

    def loss(self, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(batch.x, batch.task), batch.y)

    def transform_gradients(self, batch: Batch) -> None:
        pass

    def after_step(self, batch: Batch) -> None:
        pass

    def end_task(self, task: Task, x: torch.Tensor, y: torch.Tensor) -> None:
        pass
