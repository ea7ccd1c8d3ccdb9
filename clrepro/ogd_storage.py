"""The storage cost of OGD: basis size and bytes after each task, measured on a real run.

The results rows hold accuracies only, so this traces one run of the shared loop
(clrepro.train.run) and reads the OGD instance it built. (A core hook returning per-method
diagnostics in RunResult would make the capture unnecessary.)
"""

from __future__ import annotations

from unittest import mock

import pandas as pd

from clrepro import train
from clrepro.config import Experiment
from clrepro.methods import build_method


def basis_growth(experiment: Experiment, seed: int = 0, device: str = "cpu") -> pd.DataFrame:
    """One row per task: rows of the basis S after that task, the bytes of the paper's flat S
    [k, P] (float32), and the bytes the run's storage actually held (factored: far fewer)."""
    if experiment.method != "ogd":
        raise ValueError(f"basis_growth traces OGD runs, got {experiment.method!r}")
    built = []

    def build_and_keep(*args, **kwargs):
        built.append(build_method(*args, **kwargs))
        return built[-1]

    with mock.patch.object(train, "build_method", build_and_keep):
        train.run(experiment, seed, device=device)
    method = built[-1]
    bytes_per_row = method.n_params * next(method.model.parameters()).element_size()
    return pd.DataFrame({
        "experiment": experiment.name, "variant": method.params.variant, "storage": method.params.storage,
        "seed": seed, "tasks": range(1, len(method.basis_sizes) + 1), "basis_size": method.basis_sizes,
        "bytes": [k * bytes_per_row for k in method.basis_sizes],  # the paper's flat S
        "stored_bytes": method.stored_bytes,  # what this storage actually holds
        "n_params": method.n_params,
    })
