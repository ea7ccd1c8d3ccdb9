"""What a run spends outside the minibatch steps, and what issue 18 §1 changed about it.

Prints, in one run, single-threaded on the CPU:
1. the accuracy matrix evaluated in full vs only the cells the metrics read (R[t, i ≤ t+1]):
   20-task Permuted-MNIST fine-tuning at batch 128 (the issue's example), seconds and ratio, and
   whether the evaluated cells are bit-identical;
2. the stream build (20 permutations of MNIST) per run;
3. torch.set_flush_denormal(True) vs off on short real runs (SGD fine-tuning, EWC, an
   Adam-trained MLP): seconds, ratio, and whether the accuracy matrices are identical.

Times are CPU seconds of this process (time.process_time, one thread), which other processes
on a shared machine disturb far less than wall time.

Run: `.venv/bin/python benchmarks/eval_cost.py` (about 3 minutes; `--tasks 5` for a quick look).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from clrepro.config import BenchmarkConfig, ModelConfig, TrainConfig
from clrepro.data.datasets import load_dataset
from clrepro.data.streams import build_stream
from clrepro.experiment import Experiment
from clrepro.train import run


def pmnist(n_tasks: int, **train) -> Experiment:
    return Experiment(
        "benchmark/eval_cost", BenchmarkConfig("permuted_mnist", "domain", n_tasks=n_tasks), "finetune",
        model=ModelConfig(hidden=(100, 100)), train=TrainConfig(lr=0.1, batch_size=128, epochs=1, **train),
    )


def timed(experiment: Experiment):
    started = time.process_time()
    result = run(experiment, seed=0)
    return result, time.process_time() - started


def evaluation(n_tasks: int) -> None:
    print(f"1. Evaluation: {n_tasks}-task P-MNIST fine-tuning, batch 128, 1 epoch per task (CPU seconds)")
    full, full_cpu = timed(pmnist(n_tasks, full_matrix=True))
    needed, needed_cpu = timed(pmnist(n_tasks))
    cells = ~np.isnan(needed.accuracy)
    same = np.array_equal(full.accuracy[cells], needed.accuracy[cells])
    print(f"   {'':22} {'run (s)':>8} {'cells':>6}")
    for label, r, cpu in (("full matrix", full, full_cpu), ("metrics' cells only", needed, needed_cpu)):
        print(f"   {label:22} {cpu:8.1f} {int((~np.isnan(r.accuracy)).sum()):6d}")
    print(f"   run time ratio full / default: {full_cpu / needed_cpu:.2f}x; evaluated cells bit-identical: {same}")


def stream_build(n_tasks: int) -> None:
    load_dataset("mnist")  # loaded (and checksummed) once per process, not per run
    started = time.process_time()
    build_stream(BenchmarkConfig("permuted_mnist", "domain", n_tasks=n_tasks), 0)
    seconds = time.process_time() - started
    print(f"2. Stream build: {n_tasks} permutations of MNIST {seconds:.1f} s ({seconds / n_tasks:.2f} s per task)")


def denormals() -> None:
    split = BenchmarkConfig("split_mnist", "class", train_per_task=2000)
    runs = {
        "SGD fine-tuning, S-MNIST, batch 10": Experiment(
            "benchmark/denormal_sgd", split, "finetune", train=TrainConfig(lr=0.03, batch_size=10)),
        "EWC, S-MNIST, batch 10": Experiment(
            "benchmark/denormal_ewc", split, "online_ewc", {"lam": 90.0, "fisher": "weighted_empirical"},
            train=TrainConfig(lr=0.03, batch_size=10)),
        "Adam, 2x400 MLP, batch 128": Experiment(
            "benchmark/denormal_adam", BenchmarkConfig("split_mnist", "task"), "finetune",
            model=ModelConfig(hidden=(400, 400)),
            train=TrainConfig(lr=1e-3, batch_size=128, epochs=None, iterations=300, optimizer="adam",
                              reset_optimizer=False)),
    }
    print("3. torch.set_flush_denormal(True) vs off")
    print(f"   {'run':36} {'off (s)':>8} {'on (s)':>8} {'off/on':>7} {'same R':>7}")
    for label, exp in runs.items():
        torch.set_flush_denormal(False)
        off, off_cpu = timed(exp)
        torch.set_flush_denormal(True)
        on, on_cpu = timed(exp)
        torch.set_flush_denormal(False)
        same = np.array_equal(off.accuracy, on.accuracy, equal_nan=True)
        print(f"   {label:36} {off_cpu:8.1f} {on_cpu:8.1f} {off_cpu / on_cpu:7.2f} {str(same):>7}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    evaluation(args.tasks)
    stream_build(args.tasks)
    denormals()


if __name__ == "__main__":
    main()
