"""Time per training step of ER / DER / DER++ vs plain SGD on the same stream, and the share of a
step spent in the buffer (reservoir insertion, drawing the replay indices and gathering them).

Target: buffer bookkeeping < 10% of a replay step (replay itself roughly doubles the forward and
backward work: that is the method, not overhead). Wall-clock time, one thread, the best of three
repetitions (on a busy machine, the minimum is the least disturbed). Two Permuted-MNIST tasks of 10,000 examples,
1 epoch, MLP 100-100, the DER protocol's batch 128 and the S-MNIST batch 10.
Run: `python benchmarks/replay_step.py`.
"""

from __future__ import annotations

import time

import torch

from clrepro.config import BenchmarkConfig, ModelConfig, TrainConfig
from clrepro.data.streams import build_stream
from clrepro.methods import Batch, build_method
from clrepro.methods.buffer import Buffer
from clrepro.models import build_model

clock = time.perf_counter


class Stopwatch:
    """Wraps the Buffer's methods to add up the CPU time spent inside them."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._originals = {name: getattr(Buffer, name) for name in ("add", "sample", "update_scores")}

    def __enter__(self) -> Stopwatch:
        for name, original in self._originals.items():
            def timed(*args, _original=original, **kwargs):
                started = clock()
                try:
                    return _original(*args, **kwargs)
                finally:
                    self.seconds += clock() - started
            setattr(Buffer, name, timed)
        return self

    def __exit__(self, *exc) -> None:
        for name, original in self._originals.items():
            setattr(Buffer, name, original)


def measure(stream, method: str, params: dict, batch_size: int) -> tuple[float, float]:
    """(CPU seconds per step, share of it inside the buffer) over the whole stream."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=(100, 100)), stream.n_outputs)
    m = build_method(method, params, model, stream)
    g = torch.Generator().manual_seed(0)
    steps, total = 0, 0.0
    with Stopwatch() as watch:
        for task in stream.tasks:
            x, y = task.train_tensors()
            optimizer = m.make_optimizer(TrainConfig(lr=0.1, batch_size=batch_size))
            order = torch.randperm(len(x), generator=g)
            started = clock()
            for start in range(0, len(x), batch_size):
                idx = order[start:start + batch_size]
                batch = Batch(x[idx], y[idx], task.index)
                optimizer.zero_grad(set_to_none=True)
                m.loss(batch).backward()
                optimizer.step()
                m.after_step(batch)
                steps += 1
            total += clock() - started
    return total / steps, watch.seconds / total


def main() -> None:
    torch.set_num_threads(1)
    stream = build_stream(BenchmarkConfig("permuted_mnist", "domain", n_tasks=2, train_per_task=10_000,
                                          test_per_task=10), seed=0)
    configs = [
        ("finetune", {}),
        ("er", {"buffer_size": 200}),
        ("er", {"buffer_size": 5120}),
        ("er", {"buffer_size": 200, "sampling": "balanced"}),
        ("er", {"buffer_size": 200, "sampling": "loss_aware"}),
        ("der", {"buffer_size": 5120}),
        ("derpp", {"buffer_size": 5120}),
    ]
    print(f"{'method':>8} {'params':>38} {'batch':>5} {'ms/step':>8} {'x SGD':>6} {'in buffer':>9}")
    for batch_size in (128, 10):
        base = None
        for method, params in configs:
            per_step, share = min(measure(stream, method, params, batch_size) for _ in range(3))
            base = base or per_step
            label = ", ".join(f"{k}={v}" for k, v in params.items())
            print(f"{method:>8} {label:>38} {batch_size:>5} {1000 * per_step:>8.2f} {per_step / base:>6.2f}"
                  f" {share:>9.1%}")


if __name__ == "__main__":
    main()
