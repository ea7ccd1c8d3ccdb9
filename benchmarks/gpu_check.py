"""The GPU check (issue 18 §3): does everything run on CUDA, and what does a GPU buy?

Writes one JSON report (default build/gpu_check.json) with
- notebooks: every notebook at the smoke profile on the device (papermill; an error in any cell
  fails that notebook, as nbval would), with its wall time;
- lockstep: runs per second for the S-MNIST (DER protocol: Class-IL, batch 10) and P-MNIST
  (DER protocol: batch 128) settings, as S seeds in lockstep on the device vs one-seed runs on
  one CPU thread, on the same reduced stream (2 tasks, 2,000 training images each), and the ratio;
- resnet: the Seq-CIFAR-10 ResNet-18 step time (batch 32, SGD) on the CIFAR-10 fixture, and the
  paper-profile time of replay_cifar extrapolated from it;
- routing: device='auto' on a small mix (a lockstep experiment and an OGD one): which device
  each group ran on (clrepro.run.routing: lockstep and ResNet-18 runs to the GPU, the rest to
  CPU workers, side by side) and the wall time;
- projection: `make reproduce` on this machine, from the CPU-hours of the committed results.

Every number is measured in this one run; the extrapolations say what they assume. Run it
through benchmarks/gpu_check.sh (which bounds its time); GPU_CHECK_DEVICE=cpu runs the same
code on a CPU (to check the script itself).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from cpu_hours import cpu_hours  # noqa: E402

from clrepro.config import BenchmarkConfig, TrainConfig  # noqa: E402
from clrepro.experiment import Experiment  # noqa: E402
from clrepro.lockstep import lockstep_supported, run_lockstep  # noqa: E402
from clrepro.run import routing  # noqa: E402
from clrepro.run.profiles import get_profile  # noqa: E402
from clrepro.train import run  # noqa: E402

SMALL = dict(n_tasks=2, train_per_task=2000, test_per_task=500)
PROTOCOLS = {  # the DER paper's settings (report/setups.csv), on a reduced stream
    "smnist_der": Experiment("gpu/smnist", BenchmarkConfig("split_mnist", "class", **SMALL), "der",
                             {"buffer_size": 500, "minibatch_size": 128, "alpha": 1.0},
                             train=TrainConfig(lr=0.03, batch_size=10)),
    "pmnist_sgd": Experiment("gpu/pmnist", BenchmarkConfig("permuted_mnist", "domain", **SMALL), "finetune",
                             train=TrainConfig(lr=0.2, batch_size=128)),
}


def check_notebooks(device: str, out: Path, timeout: int, parallel: int) -> list[dict]:
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))

    def one(path: Path) -> dict:
        started = time.perf_counter()
        target = out / "notebooks" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "papermill", str(path), str(target), "-p", "profile", "smoke",
               "-p", "device", device, "-p", "output_root", str(out / "outputs" / path.stem),
               "--cwd", str(path.parent), "--no-progress-bar", "--log-level", "ERROR"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "CLREPRO_QUIET": "1"})
            ok, tail = proc.returncode == 0, proc.stderr[-600:]
        except subprocess.TimeoutExpired:
            ok, tail = False, f"timed out after {timeout} s"
        return {"notebook": path.stem, "ok": ok, "seconds": round(time.perf_counter() - started, 1),
                **({} if ok else {"error": tail})}

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(one, notebooks))


def runs_per_second(experiment: Experiment, device: str, n_seeds: int) -> dict:
    assert lockstep_supported(experiment), experiment.method
    seeds = list(range(n_seeds))
    torch.set_num_threads(1)
    started = time.perf_counter()
    for seed in seeds[:2]:  # one-seed runs on one CPU thread (the runner's CPU workers)
        run(experiment, seed, device="cpu")
    cpu_rate = 2 / (time.perf_counter() - started)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    run_lockstep(experiment, seeds[:2], device=device)  # warm-up (CUDA context, kernels)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    run_lockstep(experiment, seeds, device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    device_rate = n_seeds / (time.perf_counter() - started)
    return {"seeds_in_lockstep": n_seeds, "device_runs_per_s": round(device_rate, 4),
            "cpu_one_thread_runs_per_s": round(cpu_rate, 4), "ratio": round(device_rate / cpu_rate, 2)}


def resnet_step(device: str, steps: int) -> dict:
    from clrepro.config import ModelConfig
    from clrepro.data import cifar
    from clrepro.data.streams import augment, build_stream
    from clrepro.models import build_model

    with tempfile.TemporaryDirectory() as root:
        cifar.write_fixture(root, n_per_batch=64)
        stream = build_stream(BenchmarkConfig("seq_cifar10", "class"), 0, root)
        model = build_model(ModelConfig(kind="resnet18"), stream.n_outputs).to(device)
        x, y = stream.tasks[0].train_tensors(device)
        x, y = x[:32], y[:32]
        optimizer = torch.optim.SGD(model.parameters(), lr=0.03)
        generator = torch.Generator().manual_seed(0)

        def step():
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(augment(x, generator)), y).backward()
            optimizer.step()

        for _ in range(5):
            step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(steps):
            step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - started) / steps
    # replay_cifar at the paper profile: 5 tasks × 10,000 images × 50 epochs at batch 32 = 78,125
    # steps per run; replay methods forward a replay minibatch too (≈2× a step); 5 methods
    # (SGD, ER, DER, DER++, JOINT — JOINT: 50,000 images × 50 epochs, the same step count) × 5 seeds.
    steps_per_run = 5 * 10_000 * 50 // 32
    step_equivalents = steps_per_run * (1 + 2 + 2 + 2 + 1) * 5
    return {"batch": 32, "step_ms": round(1000 * seconds, 3),
            "replay_cifar_paper_hours": round(step_equivalents * seconds / 3600, 2),
            "assumes": "5 methods x 5 seeds x 78,125 steps, replay steps counted twice, one run at a time, "
                       "evaluation not counted"}


def routing_check(seeds: int) -> dict:
    """run_routed under device='auto': the lockstep experiment on the GPU (when there is one), the
    OGD experiment on a CPU worker, both at once; rows must come back for every seed."""
    mix = [PROTOCOLS["smnist_der"].with_(name="gpu/routed_der"),
           Experiment("gpu/routed_ogd", BenchmarkConfig("split_mnist", "task", **SMALL), "ogd",
                      {"n_examples": 20, "storage": "factored"}, train=TrainConfig(lr=0.001, batch_size=10))]
    groups = {device: [e.name for e in group] for device, group in routing.route(mix, "auto").items()}
    started = time.perf_counter()
    rows = routing.run_routed(mix, get_profile("paper"), "auto", seeds=list(range(seeds)), progress=False)
    seconds = time.perf_counter() - started
    runs = rows.groupby(["experiment", "seed"]).ngroups
    return {"groups": groups, "seeds": seeds, "runs_returned": runs, "ok": runs == len(mix) * seeds,
            "seconds": round(seconds, 1)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "gpu_check.json")
    parser.add_argument("--device", default=os.environ.get("GPU_CHECK_DEVICE", "cuda"))
    parser.add_argument("--seeds", type=int, default=20, help="seeds in one lockstep batch")
    parser.add_argument("--notebook-timeout", type=int, default=240)
    parser.add_argument("--parallel", type=int, default=4, help="notebooks at once")
    parser.add_argument("--skip-notebooks", action="store_true")
    args = parser.parse_args()
    report: dict = {"device": args.device, "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    if not args.skip_notebooks:
        report["notebooks"] = check_notebooks(args.device, work, args.notebook_timeout, args.parallel)
    report["lockstep"] = {name: runs_per_second(e, args.device, args.seeds) for name, e in PROTOCOLS.items()}
    report["resnet"] = resnet_step(args.device, steps=30)
    report["routing"] = routing_check(seeds=4)
    hours = cpu_hours(ROOT / "results")
    total = float(hours.loc[hours["file"] == "total", "cpu_hours"].iloc[0])
    speedup = min(v["ratio"] for v in report["lockstep"].values())
    report["projection"] = {
        "paper_profile_cpu_hours": round(total, 2),
        "make_reproduce_hours_if_every_run_gains_the_smaller_lockstep_ratio": round(total / speedup, 2),
        "plus_replay_cifar_hours": report["resnet"]["replay_cifar_paper_hours"],
        "caveat": "OGD, PNN, sharpening, JOINT and the language-model notebooks do not run in lockstep; under "
                  "device=auto their runs go to CPU workers, so this is a lower bound",
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["ok"] = all(n["ok"] for n in report.get("notebooks", [])) and report["routing"]["ok"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
