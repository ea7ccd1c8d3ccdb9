"""Profiles: the same experiments at different sizes.

``paper`` is the published protocol; ``smoke`` shrinks every experiment so a notebook runs in
seconds (CI). Only sizes change, never the code path.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from clrepro.config import ConfigError
from clrepro.experiment import Experiment


@dataclass(frozen=True)
class Profile:
    name: str
    n_seeds: int
    max_tasks: int | None = None
    train_per_task: int | None = None
    test_per_task: int | None = None
    max_epochs: int | None = None
    max_iterations: int | None = None

    @property
    def seeds(self) -> list[int]:
        return list(range(self.n_seeds))

    def apply(self, experiment: Experiment) -> Experiment:
        """Shrink an experiment to this profile's sizes (a no-op for the paper profile)."""
        bench, train = experiment.benchmark, experiment.train
        n_tasks = bench.n_tasks if self.max_tasks is None else min(bench.n_tasks, self.max_tasks)
        bench = replace(
            bench,
            n_tasks=n_tasks,
            angles=None if bench.angles is None else bench.angles[:n_tasks],
            train_per_task=_cap(bench.train_per_task, self.train_per_task),
            test_per_task=_cap(bench.test_per_task, self.test_per_task),
        )
        train = replace(
            train,
            epochs=None if train.epochs is None else _cap(train.epochs, self.max_epochs),
            iterations=None if train.iterations is None else _cap(train.iterations, self.max_iterations),
            eval_every=None if train.eval_every is None else _cap(train.eval_every, self.max_epochs),
        )
        return replace(experiment, benchmark=bench, train=train)


def _cap(value: int | None, cap: int | None) -> int | None:
    if cap is None:
        return value
    return cap if value is None else min(value, cap)


PROFILES = {
    "paper": Profile("paper", n_seeds=5),
    "smoke": Profile(
        "smoke", n_seeds=2, max_tasks=3, train_per_task=300, test_per_task=200,
        max_epochs=1, max_iterations=30,
    ),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ConfigError(f"profile: unknown {name!r}; one of {sorted(PROFILES)}")
    return PROFILES[name]


def resolve_device(device: str) -> str:
    """'auto' picks CUDA when present; anything else must be a device torch knows *and* this
    machine has (so `mps` on Linux, or `cuda:1` on a one-GPU machine, fails here, before any
    notebook runs, rather than late inside each one)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"device: {error}") from error
    if parsed.type == "cpu":
        return device
    available = available_devices()
    if parsed.type not in available:
        raise ConfigError(f"device: {device!r} is not available on this machine (available: {', '.join(available)})")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ConfigError(f"device: {device!r} requested but this machine has {torch.cuda.device_count()} "
                          f"CUDA device(s) (cuda:0 … cuda:{torch.cuda.device_count() - 1})")
    return device


def available_devices() -> list[str]:
    """The device types this machine can run on, cpu first."""
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices
