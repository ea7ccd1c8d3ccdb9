"""Every summary number is computed here, from the accuracy matrix R, and nowhere else.

R[t, i] is the accuracy (%) on task i after training on task t; b[i] is the accuracy of the
untrained model on task i. Definitions (Lopez-Paz & Ranzato 2017; Chaudhry et al. 2018):

    ACC        = mean_i R[T-1, i]
    ACC@k      = mean_{i<k} R[k-1, i]          (average over the k tasks seen so far)
    BWT        = mean_{i<T-1} (R[T-1, i] − R[i, i])
    FWT        = mean_{i>0} (R[i-1, i] − b[i])
    forgetting = mean_{i<T-1} (max_{i≤t<T-1} R[t, i] − R[T-1, i])
    task<i>    = R[T-1, i-1]                   (final accuracy on task i, 1-based)

These read only R[t, i ≤ t+1] (and b), the cells the training loop evaluates by default; the
rest of R may be NaN. Forgetting takes its maximum over the rows after task i was trained, as
the DER authors' code does (its results rows hold only the tasks seen so far): the accuracy a
task had before it was trained (high on neighbouring rotations, say) is not knowledge forgotten.
Before the loop stopped evaluating the upper triangle, the maximum also ran over the rows before
task i, which changed the forgetting of some runs (R-MNIST replay, P-MNIST runs that collapse).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pandas as pd


def average_accuracy(R: np.ndarray, k: int | None = None) -> float:
    k = R.shape[0] if k is None else k
    return float(np.mean(R[k - 1, :k]))


def backward_transfer(R: np.ndarray) -> float:
    T = R.shape[0]
    if T < 2:
        return float("nan")
    return float(np.mean([R[T - 1, i] - R[i, i] for i in range(T - 1)]))


def forward_transfer(R: np.ndarray, initial: np.ndarray) -> float:
    T = R.shape[0]
    if T < 2:
        return float("nan")
    return float(np.mean([R[i - 1, i] - initial[i] for i in range(1, T)]))


def forgetting_per_task(R: np.ndarray) -> np.ndarray:
    T = R.shape[0]
    return np.array([np.max(R[i: T - 1, i]) - R[T - 1, i] for i in range(T - 1)])


def average_forgetting(R: np.ndarray) -> float:
    f = forgetting_per_task(R)
    return float(np.mean(f)) if len(f) else float("nan")


def metric(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """Look up a metric by name: acc, bwt, fwt, forgetting, acc@<k>, task<i>."""
    fixed = {
        "acc": lambda R, b: average_accuracy(R),
        "bwt": lambda R, b: backward_transfer(R),
        "fwt": forward_transfer,
        "forgetting": lambda R, b: average_forgetting(R),
    }
    if name in fixed:
        return fixed[name]
    if m := re.fullmatch(r"acc@(\d+)", name):
        k = int(m.group(1))
        return lambda R, b: average_accuracy(R, k) if k <= R.shape[0] else float("nan")
    if m := re.fullmatch(r"task(\d+)", name):
        i = int(m.group(1)) - 1
        return lambda R, b: float(R[-1, i]) if i < R.shape[1] else float("nan")
    raise ValueError(f"unknown metric {name!r}; use acc, bwt, fwt, forgetting, acc@<k>, task<i>")


# trained_as: the Task-IL view of a Class-IL-trained run (scenario "task", trained_as "class") is
# another accuracy matrix of the same run; files written before that column existed lack it.
RUN_KEYS = ["experiment", "method", "benchmark", "scenario", "trained_as", "params", "seed"]


def matrices(rows: pd.DataFrame):
    """Yield (run key dict, R, b) for every run in a tidy results frame."""
    keys = [k for k in RUN_KEYS if k in rows.columns]
    for key, run in rows.groupby(keys, sort=False, dropna=False):
        final = run[run["kind"] == "R"]
        T = int(max(final["after_task"].max(), final["eval_task"].max())) + 1
        R = np.full((T, T), np.nan)
        R[final["after_task"].to_numpy(int), final["eval_task"].to_numpy(int)] = final["accuracy"]
        init = run[run["kind"] == "initial"].sort_values("eval_task")["accuracy"].to_numpy()
        yield dict(zip(keys, key, strict=True)), R, init


def per_seed(rows: pd.DataFrame, names: list[str] = ("acc", "bwt", "fwt", "forgetting")) -> pd.DataFrame:
    """One row per run and metric: RUN_KEYS + metric + value."""
    records = []
    for key, R, b in matrices(rows):
        for name in names:
            with np.errstate(all="ignore"):
                records.append({**key, "metric": name, "value": metric(name)(R, b)})
    return pd.DataFrame.from_records(records)


def trained_view(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows scored in the scenario each run was trained in (a Class-IL run's Task-IL view,
    scenario "task" with trained_as "class", left out)."""
    if "trained_as" not in rows.columns:
        return rows
    return rows[rows["trained_as"].isna() | (rows["scenario"] == rows["trained_as"])]


def mean_matrix(rows: pd.DataFrame, scenario: str | None = None) -> np.ndarray:
    """R averaged over the seeds of one configuration, scored in `scenario` (default: the one
    scoring the rows hold, or, where they hold a Class-IL run's two, the scenario it was trained
    in; "task" gives a Class-IL run's Task-IL view)."""
    if scenario is not None:
        rows = rows[rows["scenario"] == scenario]
    elif "trained_as" in rows.columns and len(rows[["scenario", "trained_as"]].drop_duplicates()) > 1:
        rows = trained_view(rows)
    return np.nanmean(np.stack([R for _, R, _ in matrices(rows)]), axis=0)
