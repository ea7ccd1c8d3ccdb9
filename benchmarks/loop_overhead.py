"""Samples/s of the clrepro training loop vs a bare PyTorch loop (same MLP, data, batch size).

Target: the clrepro loop costs at most 10% more than the bare loop. Run: `make benchmark`.
Both loops train fine-tuning on one Permuted-MNIST task (60k examples, 1 epoch) on the CPU.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from clrepro.config import BenchmarkConfig, ModelConfig, TrainConfig
from clrepro.data.streams import build_stream
from clrepro.experiment import Experiment
from clrepro.models import build_model
from clrepro.train import run


def bare_loop(x: torch.Tensor, y: torch.Tensor, hidden, batch_size: int, lr: float) -> float:
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=hidden), 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    order = torch.randperm(len(x), generator=g)
    for start in range(0, len(x), batch_size):
        idx = order[start:start + batch_size]
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        optimizer.step()
    return len(x) / (time.perf_counter() - started)


def clrepro_loop(hidden, batch_size: int, lr: float) -> float:
    exp = Experiment(
        "benchmark/loop", BenchmarkConfig("permuted_mnist", "domain", n_tasks=1), "finetune",
        model=ModelConfig(hidden=hidden), train=TrainConfig(lr=lr, batch_size=batch_size, epochs=1),
    )
    return 60000 / run(exp, seed=0).train_seconds  # curve evaluations excluded (there are none)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # no options; --help says so
    torch.set_num_threads(torch.get_num_threads())
    stream = build_stream(BenchmarkConfig("permuted_mnist", "domain", n_tasks=1), 0)
    x, y = stream.tasks[0].train_tensors()
    print(f"{'MLP':>10} {'batch':>5} {'bare (samples/s)':>17} {'clrepro':>10} {'overhead':>9}")
    for hidden, batch_size, lr in [((100, 100), 10, 0.03), ((100, 100), 128, 0.1), ((400, 400), 10, 1e-3),
                                   ((400, 400), 128, 1e-3)]:
        bare = max(bare_loop(x, y, hidden, batch_size, lr) for _ in range(3))
        ours = max(clrepro_loop(hidden, batch_size, lr) for _ in range(3))
        print(f"{'-'.join(map(str, hidden)):>10} {batch_size:>5} {bare:>17,.0f} {ours:>10,.0f} {bare / ours - 1:>8.1%}")


if __name__ == "__main__":
    main()
