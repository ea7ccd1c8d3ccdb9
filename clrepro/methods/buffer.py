"""A fixed-capacity replay buffer (inputs, labels, task ids, optional logits) and its insertion policies.

Inputs are stored as the stream gives them (un-augmented), labels are output-unit targets.
Every random draw goes through the buffer's own ``torch.Generator``, so a buffer never touches
the global RNG (a method with an empty buffer trains exactly like fine-tuning).

Insertion policies (``policy``):

- ``reservoir`` — Vitter's algorithm R as in the DER code: while fewer than M items were seen,
  item n goes to slot n; afterwards draw r uniformly in {0..n} (n = items seen before it) and
  overwrite slot r if r < M. Every stream item ends up stored with probability M/N.
- ``balanced`` (bag of tricks, BRS) — the same acceptance test, but the evicted item is drawn
  from the most represented class; on a tie the incoming item's own class is preferred, so an
  insertion never widens the gap between class counts.
- ``loss_aware`` (bag of tricks, LARS) — the same acceptance test; the evicted slot is drawn
  with probability from the authors' merged score: 0.5·(−loss)/(mean|loss|·mean count) +
  0.5·(count of the item's class), min-max normalised. Low-loss items of crowded classes go
  first. Scores are −loss at insertion, refreshed whenever an item is replayed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

POLICIES = ("reservoir", "balanced", "loss_aware")


@dataclass
class Sample:
    index: torch.Tensor  # slots drawn
    x: torch.Tensor
    y: torch.Tensor
    task: torch.Tensor
    logits: torch.Tensor | None


class Buffer:
    def __init__(self, capacity: int, policy: str = "reservoir", generator: torch.Generator | None = None) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; one of {POLICIES}")
        self.capacity = capacity
        self.policy = policy
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.seen = 0  # stream items offered so far (N)
        self.size = 0  # items stored
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.task: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None
        self.scores: torch.Tensor | None = None  # −loss (loss_aware) or random keys (class-balanced fill)

    def __len__(self) -> int:
        return self.size

    # --- storage ---------------------------------------------------------------------------
    def _allocate(self, x: torch.Tensor, logits: torch.Tensor | None) -> None:
        m, device = self.capacity, x.device
        self.x = torch.zeros((m, *x.shape[1:]), dtype=x.dtype, device=device)
        self.y = torch.zeros(m, dtype=torch.long, device=device)
        self.task = torch.zeros(m, dtype=torch.long, device=device)
        self.scores = torch.zeros(m, device=device)
        if logits is not None:
            self.logits = torch.zeros((m, *logits.shape[1:]), dtype=logits.dtype, device=device)

    def _write(self, slots: torch.Tensor, items: torch.Tensor, x, y, task, logits, scores) -> None:
        # index_select / index_copy_: the same values as x[s] = x[i], 2-3x faster on small batches
        s, i = slots.to(self.x.device), items.to(x.device)
        self.x.index_copy_(0, s, x.index_select(0, i))
        self.y.index_copy_(0, s, y.index_select(0, i))
        self.task.index_copy_(0, s, task.index_select(0, i))
        if logits is not None:
            self.logits.index_copy_(0, s, logits.index_select(0, i).to(self.logits.dtype))
        if scores is not None:
            self.scores.index_copy_(0, s, scores.index_select(0, i))

    def _rand(self, n: int) -> torch.Tensor:
        return torch.rand(n, generator=self.generator, dtype=torch.float64)

    # --- insertion -------------------------------------------------------------------------
    def add(self, x: torch.Tensor, y: torch.Tensor, task: int | torch.Tensor, logits: torch.Tensor | None = None,
            loss: torch.Tensor | None = None) -> torch.Tensor:
        """Offer a batch of stream items; returns the slot each went to (−1: not stored)."""
        n = len(x)
        if self.capacity == 0 or n == 0:
            self.seen += n
            return torch.full((n,), -1, dtype=torch.long)
        if self.x is None:
            self._allocate(x, logits)
        task = torch.full((n,), task, dtype=torch.long, device=y.device) if isinstance(task, int) else task
        scores = None if loss is None else -loss.detach().to(self.scores.device, torch.float32)
        # Algorithm R, vectorised: item k has n_k = seen + k predecessors.
        before = torch.arange(self.seen, self.seen + n, dtype=torch.float64)
        draw = (self._rand(n) * (before + 1)).long()
        slots = torch.where(before < self.capacity, before.long(), torch.where(draw < self.capacity, draw, -1))
        if self.policy == "reservoir":
            items = (slots >= 0).nonzero().flatten()
            if len(items):
                chosen = slots[items]
                listed = chosen.tolist()
                if len(set(listed)) < len(listed):  # a slot hit twice keeps the later item, as sequentially
                    last = dict(zip(listed, items.tolist(), strict=True))
                    chosen, items = torch.tensor(list(last)), torch.tensor(list(last.values()))
                self._write(chosen, items, x, y, task, logits, scores)
        else:
            labels = y.tolist()
            for item in (slots >= 0).nonzero().flatten().tolist():  # the accepted items, in stream order
                slot = int(slots[item])
                if self.seen + item >= self.capacity:  # full: the policy picks the victim
                    slot = self._victim(labels[item])
                    slots[item] = slot
                self._write(torch.tensor([slot]), torch.tensor([item]), x, y, task, logits, scores)
                self.size = max(self.size, slot + 1)
        self.seen += n
        self.size = min(self.seen, self.capacity)
        return slots

    def _class_counts(self) -> torch.Tensor:
        return torch.bincount(self.y[: self.size])

    def _victim(self, incoming_class: int) -> int:
        counts = self._class_counts()
        if self.policy == "balanced":
            crowded = (counts == counts.max()).nonzero().flatten()
            if incoming_class < len(counts) and counts[incoming_class] == counts.max():
                victim_class = incoming_class
            else:
                victim_class = int(crowded[torch.randint(len(crowded), (1,), generator=self.generator)])
            members = (self.y[: self.size] == victim_class).nonzero().flatten()
            return int(members[torch.randint(len(members), (1,), generator=self.generator)])
        # loss_aware: the authors' merge of importance (−loss) and class-balance scores
        importance = self.scores[: self.size]
        balance = counts[self.y[: self.size]].float()
        scale = importance.abs().mean() * balance.abs().mean()
        merged = 0.5 * (importance / scale if scale > 0 else importance) + 0.5 * balance
        spread = merged.max() - merged.min()
        merged = (merged - merged.min()) / spread if spread > 0 else torch.ones_like(merged)
        return int(torch.multinomial(merged.cpu(), 1, generator=self.generator))

    def update_scores(self, slots: torch.Tensor, loss: torch.Tensor) -> None:
        """Refresh the loss-aware scores of replayed items with their current loss."""
        self.scores[slots.to(self.scores.device)] = -loss.detach().to(self.scores.dtype)

    def add_class_balanced(
        self, x: torch.Tensor, y: torch.Tensor, task: int,
        logits_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        """Avalanche's end-of-task fill (ClassBalancedBuffer): the capacity is split equally over
        the classes seen so far; each class keeps a uniformly random subset of its items (random
        keys, highest kept). Logits of the newly kept items are computed now by ``logits_fn``."""
        if self.capacity == 0 or len(x) == 0:
            self.seen += len(x)
            return
        new_keys = self._rand(len(x)).float().to(x.device)
        old = self.size
        all_y = torch.cat([self.y[:old], y]) if old else y
        keys = torch.cat([self.scores[:old], new_keys]) if old else new_keys
        classes = torch.unique(all_y).tolist()
        quota, extra = divmod(self.capacity, len(classes))
        chosen = []
        for rank, c in enumerate(classes):
            members = (all_y == c).nonzero().flatten()
            keep = quota + (1 if rank < extra else 0)
            chosen.append(members[keys[members].argsort(descending=True)[:keep]])
        chosen = torch.cat(chosen).sort().values
        from_old, from_new = chosen[chosen < old], chosen[chosen >= old] - old
        new_logits = None if logits_fn is None else logits_fn(x[from_new])
        task_ids = torch.full((len(from_new),), task, dtype=torch.long, device=y.device)
        parts = {
            "x": (None if self.x is None else self.x[from_old], x[from_new]),
            "y": (None if self.y is None else self.y[from_old], y[from_new]),
            "task": (None if self.task is None else self.task[from_old], task_ids),
            "scores": (None if self.scores is None else self.scores[from_old], new_keys[from_new]),
            "logits": (None if self.logits is None else self.logits[from_old], new_logits),
        }
        if self.x is None:
            self._allocate(x, new_logits)
        k = len(chosen)
        for name, (kept, added) in parts.items():
            if added is None:
                continue
            store = getattr(self, name)
            store[:k] = torch.cat([kept, added.to(store.dtype)]) if kept is not None else added.to(store.dtype)
        self.size = k
        self.seen += len(x)

    # --- sampling --------------------------------------------------------------------------
    def sample(self, size: int) -> Sample:
        """Uniformly without replacement (at most every stored item)."""
        index = torch.randperm(self.size, generator=self.generator)[:size].to(self.x.device)
        return Sample(index, self.x.index_select(0, index), self.y.index_select(0, index),
                      self.task.index_select(0, index),
                      None if self.logits is None else self.logits.index_select(0, index))
