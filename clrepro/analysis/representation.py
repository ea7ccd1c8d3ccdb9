"""Hidden-representation measures: how sparse the codes are and how much they overlap.

All measures take codes H [N, units] (one hidden code per example) and, for overlap, a group
label per example (its class or its task):

    mean_pairwise_cosine = mean over pairs (i, j) from different groups of cos(h_i, h_j)
    french_overlap       = the same mean of Σ_u min(h_iu, h_ju) / units  (French 1991's
                           "activation overlap", defined for activations in [0, 1])
    hoyer_sparsity       = mean over rows of (√n − ‖h‖₁/‖h‖₂) / (√n − 1): 0 for a uniform code,
                           1 for a one-hot code (Hoyer 2004; scale-free, so sigmoid and ReLU
                           codes are comparable)
    fraction_inactive    = fraction of entries ≤ threshold (exact zeros for ReLU at threshold 0)

`probe` trains one experiment through the shared loop (clrepro.train.run) and measures the
trained network's last hidden layer on every task's evaluation split.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clrepro import metrics, train
from clrepro.data.streams import build_stream, to_float
from clrepro.experiment import Experiment
from clrepro.paths import PACKAGE_DIR, files_hash
from clrepro.report.results import atomic_write_csv, read_results
from clrepro.run.profiles import Profile


def _different_group_pairs(groups: torch.Tensor) -> torch.Tensor:
    different = groups[:, None] != groups[None, :]
    return torch.triu(different, diagonal=1)


def mean_pairwise_cosine(codes: torch.Tensor, groups: torch.Tensor) -> float:
    """Mean cosine similarity over all pairs of rows that belong to different groups (zero rows
    count as cosine 0)."""
    unit = torch.nn.functional.normalize(codes.double(), dim=1)
    pairs = _different_group_pairs(groups)
    return float((unit @ unit.T)[pairs].mean()) if pairs.any() else float("nan")


def french_overlap(codes: torch.Tensor, groups: torch.Tensor) -> float:
    """Mean over different-group pairs of Σ_u min(h_iu, h_ju) / units."""
    codes = codes.double()
    pairs = _different_group_pairs(groups).nonzero()
    if len(pairs) == 0:
        return float("nan")
    mins = torch.minimum(codes[pairs[:, 0]], codes[pairs[:, 1]])
    return float(mins.mean())


def hoyer_sparsity(codes: torch.Tensor) -> float:
    n = codes.shape[1]
    codes = codes.double().abs()
    l1, l2 = codes.sum(1), codes.norm(dim=1)
    keep = l2 > 0
    ratio = (math.sqrt(n) - l1[keep] / l2[keep]) / (math.sqrt(n) - 1)
    return float(ratio.mean()) if keep.any() else float("nan")


def fraction_inactive(codes: torch.Tensor, threshold: float = 0.0) -> float:
    return float((codes <= threshold).double().mean())


def measure(codes: torch.Tensor, classes: torch.Tensor, tasks: torch.Tensor, sigmoid: bool) -> dict[str, float]:
    """Every measure on one set of codes (French's overlap only for [0, 1] activations)."""
    return {
        "cosine_across_classes": mean_pairwise_cosine(codes, classes),
        "cosine_across_tasks": mean_pairwise_cosine(codes, tasks),
        "french_overlap_classes": french_overlap(codes, classes) if sigmoid else float("nan"),
        "hoyer_sparsity": hoyer_sparsity(codes),
        "fraction_inactive": fraction_inactive(codes, 0.1 if sigmoid else 0.0),
    }


@torch.no_grad()
def hidden_codes(model, experiment: Experiment, seed: int, per_task: int, device: str):
    """Last-hidden-layer codes of up to per_task evaluation examples of every task."""
    stream = build_stream(experiment.benchmark, seed)
    model.eval()
    codes, classes, tasks = [], [], []
    for task in stream.tasks:
        x = to_float(task.x_test[:per_task], device)
        codes.append(model.features(x).cpu())
        classes.append(task.y_test[:per_task] + 1000 * task.index)  # a class of one task
        tasks.append(torch.full((len(x),), task.index))
    return torch.cat(codes), torch.cat(classes), torch.cat(tasks)


def _probe_key(experiment: Experiment, seed: int, per_task: int, device: str) -> str:
    code = files_hash([PACKAGE_DIR / n for n in ("analysis/representation.py", "train.py", "models/mlp.py",
                                            "data/streams.py")]
                      + [PACKAGE_DIR / "methods" / "sharpening.py", PACKAGE_DIR / "methods" / "base.py"])
    text = f"{experiment.to_json()}|{seed}|{per_task}|{device}|{code}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def probe_one(experiment: Experiment, seed: int, device: str = "cpu", per_task: int = 200) -> dict:
    """Train one run, then measure its codes; the row also holds ACC, BWT and forgetting."""
    from clrepro.run.runner import cache_dir

    folder = cache_dir()
    path = None if folder is None else folder / f"probe-{_probe_key(experiment, seed, per_task, device)}.csv"
    if path is not None and path.exists():
        return read_results(path).iloc[0].to_dict()
    if device == "cpu":
        torch.set_num_threads(1)
    captured: list = []
    result = train.run(experiment, seed, device=device, after_task=lambda t, method: captured.append(method))
    codes, classes, tasks = hidden_codes(captured[-1].model, experiment, seed, per_task, device)
    R = result.accuracy
    row = {
        "experiment": experiment.name, "method": experiment.method, "params": experiment.params_label(),
        "width": experiment.model.hidden[-1], "activation": experiment.model.activation, "seed": seed,
        "acc": metrics.average_accuracy(R), "bwt": metrics.backward_transfer(R),
        "forgetting": metrics.average_forgetting(R),
        **measure(codes, classes, tasks, experiment.model.activation == "sigmoid"),
    }
    if path is not None:
        atomic_write_csv(pd.DataFrame([row]), Path(path))
    return row


def probe(experiments: list[Experiment], profile: Profile, device: str, seeds: list[int],
          per_task: int = 200) -> pd.DataFrame:
    rows = [probe_one(profile.apply(e), s, device, per_task) for e in experiments for s in seeds]
    frame = pd.DataFrame(rows)
    frame["params"] = frame["params"].map(lambda p: json.dumps(json.loads(p), sort_keys=True))
    return frame.replace({None: np.nan})
