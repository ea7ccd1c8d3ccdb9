"""CPU time of the same runs with the code of an earlier revision and with today's, in one run.

The per-notebook sums of benchmarks/cpu_hours.py compare renders made months apart on a shared
machine, so they mix the code's speed with the machine's load. This benchmark holds the machine
fixed: each workload (a reduced copy of a paper-profile experiment) runs once with the package as
committed at --before (extracted with `git archive` under build/bench/<rev>) and once with the
working tree, each in a fresh single-threaded process, alternating which goes first. "now" runs
the seeds the way the runner does today (in lockstep where `uses_lockstep` says so), "before" one
seed at a time, as wave 1 did. It prints CPU seconds (time.process_time of the training, imports
excluded), the ratio now/before, and the largest difference between the two accuracy matrices
on the cells both evaluated (0.00 means bit-identical there).

--contention runs each workload's "now" side alone and then as two copies at the same time (one
per core): the ratio of CPU seconds says how much a second busy worker on this machine inflates a
run's CPU time (the renders run two workers).

    .venv/bin/python benchmarks/before_after.py --before ee80251        # ~10 minutes
    .venv/bin/python benchmarks/before_after.py --contention            # ~10 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# Reduced copies of the paper profile's costliest experiments (cpu_by_experiment: OGD R-MNIST and
# the GPM P-MNIST protocol, EWC Fig. 3A, the S-MNIST protocol). Each spec is plain JSON so that
# both revisions' config classes can build it.
WORKLOADS = {
    "ogd_rmnist": {  # ogd/rmnist: OGD-GTL, 200 examples per task, factored storage, batch 10, lr 0.001
        "benchmark": {"name": "rotated_mnist", "scenario": "domain", "n_tasks": 3, "angles": [0.0, 10.0, 20.0],
                      "train_per_task": 10000},
        "method": "ogd", "params": {"n_examples": 200, "variant": "GTL", "storage": "factored"},
        "model": {"hidden": [100, 100]}, "train": {"lr": 0.001, "batch_size": 10, "epochs": 1}, "seeds": [0],
    },
    "ogd_rmnist_paper": {  # one seed of ogd/rmnist exactly as the paper profile runs it (~4 min a side)
        "benchmark": {"name": "rotated_mnist", "scenario": "domain", "n_tasks": 5,
                      "angles": [0.0, 10.0, 20.0, 30.0, 40.0]},
        "method": "ogd", "params": {"n_examples": 200, "variant": "GTL", "storage": "factored"},
        "model": {"hidden": [100, 100]}, "train": {"lr": 0.001, "batch_size": 10, "epochs": 5}, "seeds": [0],
    },
    "finetune_rmnist": {  # the same stream and loop without OGD: the loop and data alone
        "benchmark": {"name": "rotated_mnist", "scenario": "domain", "n_tasks": 3, "angles": [0.0, 10.0, 20.0],
                      "train_per_task": 10000},
        "method": "finetune", "params": {},
        "model": {"hidden": [100, 100]}, "train": {"lr": 0.001, "batch_size": 10, "epochs": 1}, "seeds": [0],
    },
    "ewc_fig3a": {  # ewc/fig3a: EWC on P-MNIST, MLP 400-400, 5 seeds (lockstep now)
        "benchmark": {"name": "permuted_mnist", "scenario": "domain", "n_tasks": 3, "train_per_task": 5000},
        "method": "ewc", "params": {"lam": 100.0, "fisher": "empirical"},
        "model": {"hidden": [400, 400]}, "train": {"lr": 0.01, "batch_size": 10, "epochs": 1},
        "seeds": [0, 1, 2, 3, 4],
    },
    "finetune_smnist": {  # the DER S-MNIST protocol: Class-IL, MLP 100-100, batch 10, 5 seeds
        "benchmark": {"name": "split_mnist", "scenario": "class", "train_per_task": 4000},
        "method": "finetune", "params": {},
        "model": {"hidden": [100, 100]}, "train": {"lr": 0.03, "batch_size": 10, "epochs": 1},
        "seeds": [0, 1, 2, 3, 4],
    },
}

WORKER = r"""
import json, sys, time
import torch
spec, side = json.loads(sys.argv[1]), sys.argv[2]
from clrepro.config import BenchmarkConfig, ModelConfig, TrainConfig
from clrepro.experiment import Experiment
from clrepro.train import run
torch.set_num_threads(1)
b = dict(spec["benchmark"])
if b.get("angles") is not None:
    b["angles"] = tuple(b["angles"])
exp = Experiment("benchmark/before_after", BenchmarkConfig(**b), spec["method"], spec["params"],
                 ModelConfig(hidden=tuple(spec["model"]["hidden"])), TrainConfig(**spec["train"]))
seeds = spec["seeds"]
lockstep = False
if side == "now":
    from clrepro.run.runner import uses_lockstep
    lockstep = uses_lockstep(exp) and len(seeds) > 1
started, wall = time.process_time(), time.perf_counter()
if lockstep:
    from clrepro.lockstep import run_lockstep
    results = run_lockstep(exp, seeds, data_dir=spec["data_dir"])
else:
    results = [run(exp, seed, data_dir=spec["data_dir"]) for seed in seeds]
cpu, wall = time.process_time() - started, time.perf_counter() - wall
import clrepro
print(json.dumps({"cpu": cpu, "wall": wall, "lockstep": lockstep, "package": clrepro.__file__,
                  "accuracy": [r.accuracy.tolist() for r in results]}))
"""


def package_at(revision: str) -> Path:
    """The package as committed at `revision`, extracted once under build/bench/<revision>."""
    target = ROOT / "build" / "bench" / revision
    if not (target / "clrepro").is_dir():
        archive = subprocess.run(["git", "archive", revision, "clrepro"], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(target, filter="data")
    return target


def start(spec: dict, side: str, package_root: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(package_root), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(spec), side], cwd=package_root, env=env,
                            stdout=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, package_root: Path) -> dict:
    out, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"a benchmark worker failed (exit {process.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    if not Path(result["package"]).resolve().is_relative_to(package_root.resolve()):
        raise SystemExit(f"the worker imported {result['package']}, not the package under {package_root}")
    return result


def max_difference(a: dict, b: dict) -> float:
    """Largest |ΔR| (percentage points) over the cells both sides evaluated."""
    worst = 0.0
    for x, y in zip(a["accuracy"], b["accuracy"], strict=True):
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        both = ~np.isnan(x) & ~np.isnan(y)
        worst = max(worst, float(np.abs(x[both] - y[both]).max(initial=0.0)))
    return worst


def before_after(revision: str, names: list[str]) -> None:
    old_root = package_at(revision)
    print(f"CPU seconds, one thread per process; before = {revision} (one seed at a time), now = working tree")
    print(f"{'workload':16} {'seeds':>5} {'before':>8} {'now':>8} {'now/before':>10} {'now path':>9} {'max |ΔR|':>9}")
    for i, name in enumerate(names):
        spec = {**WORKLOADS[name], "data_dir": str(ROOT / "data")}
        order = [("before", old_root), ("now", ROOT)]
        if i % 2:
            order.reverse()  # alternate which side runs first, so a drift in the machine's load cancels
        measured = {side: finish(start(spec, side, root), root) for side, root in order}
        b, n = measured["before"], measured["now"]
        print(f"{name:16} {len(spec['seeds']):5d} {b['cpu']:8.1f} {n['cpu']:8.1f} {n['cpu'] / b['cpu']:10.2f} "
              f"{'lockstep' if n['lockstep'] else 'one-seed':>9} {max_difference(b, n):9.2f}", flush=True)


def contention(names: list[str]) -> None:
    print("CPU seconds of the working tree's runs: alone, then two copies at once (one per core)")
    print(f"{'workload':16} {'alone':>8} {'paired (mean)':>13} {'paired/alone':>12} "
          f"{'wall alone':>10} {'wall paired':>11}")
    for name in names:
        spec = {**WORKLOADS[name], "data_dir": str(ROOT / "data")}
        alone = finish(start(spec, "now", ROOT), ROOT)
        pair = [finish(p, ROOT) for p in [start(spec, "now", ROOT), start(spec, "now", ROOT)]]
        cpu = sum(p["cpu"] for p in pair) / 2
        wall = sum(p["wall"] for p in pair) / 2
        print(f"{name:16} {alone['cpu']:8.1f} {cpu:13.1f} {cpu / alone['cpu']:12.2f} "
              f"{alone['wall']:10.1f} {wall:11.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", metavar="REV", default="ee80251", help="the earlier revision (default: wave 1)")
    parser.add_argument("--workloads", nargs="+", default=[w for w in WORKLOADS if not w.endswith("_paper")],
                        choices=list(WORKLOADS), help="default: all but the full-size *_paper ones")
    parser.add_argument("--contention", action="store_true", help="alone vs two at once, instead of before/after")
    args = parser.parse_args()
    if args.contention:
        contention(args.workloads)
    else:
        before_after(args.before, args.workloads)


if __name__ == "__main__":
    main()
