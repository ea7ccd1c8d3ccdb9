"""Speed-up of S seeds trained in lockstep (clrepro.lockstep) over S one-seed runs (clrepro.train).

Target (issue 18 §2): at least 1.7x for 5 seeds at batch 10 on one CPU thread. Prints, in one run,
for the S-MNIST protocol (DER Table 2: Class-IL, MLP 100-100, batch 10, 1 epoch) and a Permuted
MNIST protocol at batch 10 (the GPM/OGD protocol's batch size; 5 tasks of 10,000 examples, to
keep the benchmark short): CPU seconds of the five one-seed runs, of the lockstep run, their
ratio for the whole run and for the training steps alone, and the largest difference between
the two paths' accuracy matrices and final average accuracies (percentage points, per seed): the
paths round differently, so over thousands of steps the seeds' trajectories drift apart within
what a seed's run varies anyway.

Run: `.venv/bin/python benchmarks/lockstep.py` (a few minutes; `--methods finetune` for the quickest).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from clrepro.config import BenchmarkConfig, ModelConfig, TrainConfig
from clrepro.experiment import Experiment
from clrepro.lockstep import run_lockstep
from clrepro.metrics import average_accuracy
from clrepro.train import run

PROTOCOLS = {
    "S-MNIST": (BenchmarkConfig("split_mnist", "class"), 0.03),
    "P-MNIST": (BenchmarkConfig("permuted_mnist", "domain", n_tasks=5, train_per_task=10000), 0.03),
}
METHODS = {
    "finetune": {},
    "online_ewc": {"lam": 90.0, "fisher": "weighted_empirical", "convention": "full"},
    "der": {"buffer_size": 200, "minibatch_size": 10, "alpha": 0.2},
    "lwf": {"lam_o": 1.0, "temperature": 2.0, "form": "ce", "t2_scaling": False, "ce_units": "seen"},
}


def timed(fn):
    started = time.process_time()
    out = fn()
    return out, time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--methods", nargs="+", default=["finetune", "online_ewc", "der"], choices=list(METHODS))
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    parser.add_argument("--hidden", default="100,100",
                        help="hidden widths, e.g. 400,400 for the EWC Fig. 3A MLP (default: the DER MLP)")
    args = parser.parse_args()
    hidden = tuple(int(w) for w in args.hidden.split(","))
    torch.set_num_threads(1)
    seeds = list(range(args.seeds))
    print(f"{len(seeds)} seeds, MLP {hidden}, batch 10, one thread; CPU seconds (time.process_time)")
    print(f"{'protocol':9} {'method':11} {'one-seed runs':>13} {'lockstep':>9} {'speed-up':>9} "
          f"{'training (wall)':>15} {'max |ΔR|':>9} {'max |ΔACC|':>11}")
    for protocol in args.protocols:
        benchmark, lr = PROTOCOLS[protocol]
        for method in args.methods:
            exp = Experiment(f"benchmark/lockstep_{protocol}", benchmark, method, METHODS[method],
                             ModelConfig(hidden=hidden), TrainConfig(lr=lr, batch_size=10, epochs=1))
            singles, single_cpu = timed(lambda exp=exp: [run(exp, seed) for seed in seeds])
            together, lock_cpu = timed(lambda exp=exp: run_lockstep(exp, seeds))
            train_single = sum(r.train_seconds for r in singles)
            train_lock = sum(r.train_seconds for r in together)
            pairs = list(zip(singles, together, strict=True))
            diff = max(float(np.nanmax(np.abs(a.accuracy - b.accuracy))) for a, b in pairs)
            acc = max(abs(average_accuracy(a.accuracy) - average_accuracy(b.accuracy)) for a, b in pairs)
            print(f"{protocol:9} {method:11} {single_cpu:13.1f} {lock_cpu:9.1f} {single_cpu / lock_cpu:8.2f}x "
                  f"{train_single / train_lock:14.2f}x {diff:9.2f} {acc:11.2f}")


if __name__ == "__main__":
    main()
