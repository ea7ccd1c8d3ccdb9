"""Which device each experiment runs on when the device is 'auto' (a GPU used for what it is
good at).

A 100-unit MLP at batch 10 is launch-bound on a GPU: one such run at a time on the GPU is
slower than a CPU core. What does gain from a GPU is work with enough arithmetic per launch:
an experiment whose seeds train in lockstep (all seeds in one batched kernel, clrepro.lockstep)
and the ResNet-18 runs. So with device='auto' on a CUDA machine those experiments go to the GPU
(one unit at a time, in a thread of this process) while every other run goes to the CPU worker
processes, side by side. On a machine without CUDA 'auto' is the CPU for everything, exactly as
before. An explicit device ('cpu', 'cuda', 'cuda:1') still forces every run onto it.

The transformer runs of the lm notebooks do not pass through here: they take the resolved
device directly (the GPU under 'auto' when present).

Routing decides only where a run executes; the run's cache key records its device, so a run
computed on the GPU is never served for the CPU (or the other way round).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from clrepro.config import ConfigError
from clrepro.experiment import Experiment
from clrepro.report.results import store
from clrepro.run.profiles import Profile, resolve_device
from clrepro.run.runner import run_experiments, uses_lockstep

GPU_MODELS = ("resnet18",)


def gains_from_gpu(experiment: Experiment) -> bool:
    """Lockstep experiments (seeds batched into one kernel) and ResNet-18 runs."""
    return experiment.model.kind in GPU_MODELS or uses_lockstep(experiment)


def route(experiments: Iterable[Experiment], device: str) -> dict[str, list[Experiment]]:
    """device → its experiments, in their order. 'auto' on a CUDA machine splits them between
    'cuda' (gains_from_gpu) and 'cpu'; any other device (or 'auto' without CUDA) takes all."""
    experiments = list(experiments)
    resolved = resolve_device(device)
    if device != "auto" or resolved == "cpu":
        return {resolved: experiments} if experiments else {}
    groups: dict[str, list[Experiment]] = {}
    for experiment in experiments:
        groups.setdefault(resolved if gains_from_gpu(experiment) else "cpu", []).append(experiment)
    return groups


def run_routed(
    experiments: Experiment | Iterable[Experiment], profile: Profile, device: str = "auto",
    seeds: list[int] | None = None, progress: bool = True, store_in: Path | None = None,
    jobs: int | None = None, executor: str | None = None,
) -> pd.DataFrame:
    """run_experiments with each experiment on the device `route` gives it: the GPU group runs in
    a thread of this process while the CPU group runs on the worker processes. Returns the rows
    group by group (each in the order of `experiments`, then seed; with one device, exactly
    run_experiments' rows); store_in as there.

    jobs: CPU workers (default: the runner's). CLREPRO_GPU_JOBS: GPU units at a time (default 1;
    raise it where the GPU's memory holds several lockstep units)."""
    experiments = [experiments] if isinstance(experiments, Experiment) else list(experiments)
    groups = route(experiments, device)
    gpu_jobs = _gpu_jobs()
    frames: dict[str, pd.DataFrame] = {}
    errors: list[BaseException] = []

    def run_group(group_device: str) -> None:
        try:
            frames[group_device] = run_experiments(
                groups[group_device], profile, group_device, seeds, progress=progress,
                jobs=jobs if group_device == "cpu" else gpu_jobs, executor=executor)
        except BaseException as error:  # re-raised in the calling thread
            errors.append(error)

    threads = [threading.Thread(target=run_group, args=(d,), name=f"clrepro-{d}") for d in groups if d != "cpu"]
    for thread in threads:
        thread.start()
    if "cpu" in groups:
        run_group("cpu")
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    rows = pd.concat([frames[d] for d in groups], ignore_index=True) if groups else pd.DataFrame()
    if store_in is not None:
        store(rows, store_in)
    return rows


def _gpu_jobs() -> int:
    setting = os.environ.get("CLREPRO_GPU_JOBS", "1")
    if not setting.isdigit() or int(setting) < 1:
        raise ConfigError(f"CLREPRO_GPU_JOBS: must be an integer >= 1, got {setting!r}")
    return int(setting)
