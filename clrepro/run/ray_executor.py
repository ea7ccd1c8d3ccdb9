"""Sweeps on Ray: the runner's runs as Ray tasks, on a local Ray or on a cluster.

The process pool of clrepro.run.runner is the right default on one machine. When a sweep
outgrows it, `CLREPRO_EXECUTOR=ray` (or `make reproduce EXECUTOR=ray`) hands the same runs to
Ray: it joins the cluster at `RAY_ADDRESS` when that is set and starts a local Ray otherwise.
Each run is one task with one CPU (or one CPU and a fraction of a GPU, `CLREPRO_RAY_GPU_FRACTION`,
default 0.25, for CUDA runs: several small MLP runs share one GPU). Tasks only compute and
return their rows; the driver writes the run cache, so a cluster's nodes need no shared
filesystem for results, and the rows are the same as the process pool's (each task runs the
same single-threaded `train.run` with the same seed).

On a cluster every node needs this project's environment (`pip install -e '.[ray]'`) and the
datasets; `CLREPRO_DATA` (forwarded to the tasks) says where they are on the nodes. The package
source is shipped with the job (Ray's `py_modules`), so nodes run the driver's code.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pandas as pd

from clrepro.config import ConfigError
from clrepro.paths import PACKAGE_DIR

EXECUTORS = ("process", "ray")


def executor_from_env(explicit: str | None = None) -> str:
    """The executor named explicitly, else by CLREPRO_EXECUTOR, else the process pool."""
    name = explicit or os.environ.get("CLREPRO_EXECUTOR") or "process"
    if name not in EXECUTORS:
        raise ConfigError(f"executor: unknown {name!r}; one of {EXECUTORS}")
    return name


def _ray():
    try:
        import ray
    except ImportError as error:
        raise ConfigError("executor: 'ray' needs Ray: pip install -e '.[ray]'") from error
    return ray


def connect(n_cpus: int | None = None) -> None:
    """Join the cluster at RAY_ADDRESS, or start a local Ray with n_cpus CPUs."""
    ray = _ray()
    if ray.is_initialized():
        return
    env_vars = {k: os.environ[k] for k in ("CLREPRO_DATA", "CLREPRO_DOWNLOAD") if k in os.environ}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(runtime_env={"py_modules": [str(PACKAGE_DIR)], "env_vars": env_vars},
                 log_to_driver=False)
    else:
        ray.init(num_cpus=n_cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": env_vars})


def _resources(device: str) -> dict[str, float]:
    if device.startswith("cuda"):
        return {"num_cpus": 1, "num_gpus": float(os.environ.get("CLREPRO_RAY_GPU_FRACTION", "0.25"))}
    return {"num_cpus": 1}


def execute(
    work: Callable[..., pd.DataFrame], calls: Sequence[tuple[Any, ...]], device: str, n_cpus: int | None = None,
) -> Iterator[tuple[int, pd.DataFrame]]:
    """Run work(*call) for every call as a Ray task; yield (index, rows) as tasks finish.

    `work` must be a module-level function (Ray ships it by reference) that returns the run's
    rows without writing anything."""
    ray = _ray()
    connect(n_cpus)
    remote = ray.remote(**_resources(device))(work)
    pending = {remote.remote(*call): i for i, call in enumerate(calls)}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            yield pending.pop(ref), ray.get(ref)
