"""Analysis of the RL's Razor toy's checkpoints (kept apart from clrepro/razor.py, whose source
keys the run cache, so that editing an analysis does not retrain anything)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def add_forgetting(checkpoints: pd.DataFrame) -> pd.DataFrame:
    """forgetting = Fashion-MNIST accuracy of π0 (same seed) − that of the checkpoint."""
    base = checkpoints[checkpoints["method"] == "base"].set_index("seed")["fashion_acc"]
    return checkpoints.assign(forgetting=base.loc[checkpoints["seed"]].to_numpy() - checkpoints["fashion_acc"])


def quadratic_r2(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares y ≈ a·x² + b·x + c and its coefficient of determination R²."""
    coef = np.polyfit(x, y, 2)
    residual = y - np.polyval(coef, x)
    return coef, float(1.0 - (residual ** 2).sum() / ((y - y.mean()) ** 2).sum())


def pareto_front(frame: pd.DataFrame, x: str = "parity_acc", y: str = "fashion_acc") -> pd.DataFrame:
    """Rows not dominated in (x, y), both larger-is-better, sorted by x."""
    ordered = frame.sort_values([x, y], ascending=[False, False])
    best, keep = -np.inf, []
    for index, value in zip(ordered.index, ordered[y], strict=True):
        if value > best:
            keep.append(index)
            best = value
    return frame.loc[keep].sort_values(x)


def old_task_at(checkpoints: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per method and seed: the best Fashion-MNIST accuracy among checkpoints whose parity
    accuracy reaches `threshold` (NaN when no checkpoint of that method reaches it)."""
    runs = checkpoints[checkpoints["method"] != "base"]
    reached = runs[runs["parity_acc"] >= threshold]
    best = reached.groupby(["method", "seed"])["fashion_acc"].max()
    index = pd.MultiIndex.from_frame(runs[["method", "seed"]].drop_duplicates())
    return best.reindex(index).rename("fashion_acc").reset_index()


def tidy_rows(checkpoints: pd.DataFrame, experiment: str) -> pd.DataFrame:
    """Accuracy-table rows (clrepro.report.results.COLUMNS) + the predictors, task 0 = Fashion-MNIST
    (old), task 1 = parity (new); after_task 0 = π0, 1 = the fine-tuned model; 'curve' rows
    are the checkpoints, epoch = epochs of fine-tuning."""
    base = checkpoints[checkpoints["method"] == "base"].set_index("seed")
    records = []
    for (method, params, seed), run in checkpoints[checkpoints["method"] != "base"].groupby(
            ["method", "params", "seed"], sort=False):
        common = dict(experiment=experiment, method=method, benchmark="parity_fashion_mnist", scenario="task",
                      params=params, seed=seed, seconds=float("nan"))
        final = run.sort_values("step").iloc[-1]
        for after, row in ((0, base.loc[seed]), (1, final)):
            for task, column in enumerate(("fashion_acc", "parity_acc")):
                records.append({**common, "kind": "R", "after_task": after, "eval_task": task,
                                "epoch": float("nan"), "accuracy": row[column]})
        for _, row in run.iterrows():
            for task, column in enumerate(("fashion_acc", "parity_acc")):
                records.append({**common, "kind": "curve", "after_task": 1, "eval_task": task,
                                "epoch": row["epoch"], "accuracy": row[column], "step": row["step"],
                                "forward_kl": row["forward_kl"], "reverse_kl": row["reverse_kl"],
                                "weight_l2": row["weight_l2"]})
    return pd.DataFrame.from_records(records)
