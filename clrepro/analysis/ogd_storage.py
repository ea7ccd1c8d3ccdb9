"""The storage cost of OGD: basis size and bytes after each task, measured on a real run.

The results rows hold accuracies only, so this runs the shared loop (clrepro.train.run) and
reads the trained OGD instance through its after_task hook.
"""

from __future__ import annotations

import pandas as pd

from clrepro import train
from clrepro.experiment import Experiment


def basis_growth(experiment: Experiment, seed: int = 0, device: str = "cpu") -> pd.DataFrame:
    """One row per task: rows of the basis S after that task, the bytes of the paper's flat S
    [k, P] (float32), and the bytes the run's storage actually held (factored: far fewer)."""
    if experiment.method != "ogd":
        raise ValueError(f"basis_growth traces OGD runs, got {experiment.method!r}")
    trained = []
    train.run(experiment, seed, device=device, after_task=lambda t, method: trained.append(method))
    method = trained[-1]
    bytes_per_row = method.n_params * next(method.model.parameters()).element_size()
    return pd.DataFrame({
        "experiment": experiment.name, "variant": method.params.variant, "storage": method.params.storage,
        "seed": seed, "tasks": range(1, len(method.basis_sizes) + 1), "basis_size": method.basis_sizes,
        "bytes": [k * bytes_per_row for k in method.basis_sizes],  # the paper's flat S
        "stored_bytes": method.stored_bytes,  # what this storage actually holds
        "n_params": method.n_params,
    })
