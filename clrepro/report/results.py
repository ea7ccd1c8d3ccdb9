"""Tidy results: one CSV per notebook, written atomically; aggregation over seeds with 95% CIs.

Columns (COLUMNS): experiment, method, benchmark, scenario, trained_as, params, the training
configuration (lr, batch_size, epochs, iterations, optimizer, momentum, weight_decay,
reset_optimizer: so a reader can check any row's setup from results/ alone), seed, kind,
after_task, eval_task, epoch, accuracy, seconds (wall), run_cpu_seconds (the run's CPU time, which
other processes on the machine do not inflate). kind is 'R' (an entry of the accuracy matrix),
'initial' (untrained model), 'curve' (evaluation during training, at epoch) or 'diverged' (one row
at the task after which training diverged; the R rows from there on hold what the diverged model
predicts). trained_as is the scenario the network was trained in: equal to scenario, except for
the Task-IL rows of a Class-IL-trained run (the DER paper's protocol: one Class-IL network,
evaluated once more with the other tasks' units masked), which have scenario 'task' and
trained_as 'class'.

A file may carry more columns (KL, weight distance, ...): they are kept, after COLUMNS. Files
written before a column existed are completed when read (trained_as = scenario, the training
configuration left empty), so old and new files load together.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from clrepro.paths import atomic_write
from clrepro.train import RunResult

TRAIN_COLUMNS = ["lr", "batch_size", "epochs", "iterations", "optimizer", "momentum", "weight_decay",
                 "reset_optimizer"]
COLUMNS = [
    "experiment", "method", "benchmark", "scenario", "trained_as", "params", *TRAIN_COLUMNS, "seed",
    "kind", "after_task", "eval_task", "epoch", "accuracy", "seconds", "run_cpu_seconds",
]
# How long a run took: differs between two computations of the same run, nothing else does.
TIMING_COLUMNS = ["seconds", "run_cpu_seconds"]
# What every results file has had from the start: a file with these is a results table.
CORE_COLUMNS = [
    "experiment", "method", "benchmark", "scenario", "params", "seed",
    "kind", "after_task", "eval_task", "epoch", "accuracy", "seconds",
]
GROUP_KEYS = ["experiment", "method", "benchmark", "scenario", "trained_as", "params"]
# One run's rows: store() replaces rows with these values, nothing else.
RUN_KEYS = ["experiment", "method", "benchmark", "scenario", "trained_as", "params", "seed"]


def run_rows(result: RunResult) -> pd.DataFrame:
    exp = result.experiment
    train = exp.train
    base = dict(
        experiment=exp.name, method=exp.method, benchmark=exp.benchmark.name,
        scenario=exp.benchmark.scenario, trained_as=exp.benchmark.scenario, params=exp.params_label(),
        **{c: np.nan if getattr(train, c) is None else getattr(train, c) for c in TRAIN_COLUMNS},
        seed=result.seed, seconds=round(result.seconds, 3), run_cpu_seconds=round(result.cpu_seconds, 3),
    )
    records = [
        {**base, "kind": "initial", "after_task": -1, "eval_task": i, "epoch": np.nan, "accuracy": a}
        for i, a in enumerate(result.initial)
    ]
    records += _matrix_records(base, result.accuracy)
    if result.diverged_at is not None:
        records.append({**base, "kind": "diverged", "after_task": result.diverged_at, "eval_task": -1,
                        "epoch": np.nan, "accuracy": np.nan})
    for epoch, t, i, a in result.curves:
        records.append({**base, "kind": "curve", "after_task": t, "eval_task": i, "epoch": epoch, "accuracy": a})
    # The same Class-IL-trained network evaluated with each task's logits restricted to that
    # task's units (Task-IL), as the DER paper measures its Task-IL column.
    task_il = getattr(result, "task_il_accuracy", None)
    if task_il is not None:
        view = {**base, "scenario": "task"}
        # The untrained model's Task-IL accuracy is FWT's baseline; NaN (FWT undefined) when the
        # loop did not measure it, rather than the Class-IL baseline under a Task-IL label.
        initial = getattr(result, "task_il_initial", None)
        initial = np.full(len(result.initial), np.nan) if initial is None else initial
        records += [{**view, "kind": "initial", "after_task": -1, "eval_task": i, "epoch": np.nan, "accuracy": a}
                    for i, a in enumerate(initial)]
        records += _matrix_records(view, task_il)
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def _matrix_records(base: dict, R: np.ndarray) -> list[dict]:
    T = R.shape[0]
    return [{**base, "kind": "R", "after_task": t, "eval_task": i, "epoch": np.nan, "accuracy": R[t, i]}
            for t in range(T) for i in range(T) if not np.isnan(R[t, i])]


def complete_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """A results frame with every column of COLUMNS, first and in order, then any extra columns.

    Rows from before a column existed get trained_as = scenario (every run then was evaluated in
    the scenario it was trained in), an empty training configuration and an empty run_cpu_seconds (not
    recorded)."""
    missing = set(CORE_COLUMNS) - set(frame.columns)
    if missing:
        raise ValueError(f"rows lack the accuracy columns {sorted(missing)}")
    frame = frame.copy()
    if "trained_as" not in frame.columns:
        frame["trained_as"] = frame["scenario"]
    else:
        frame["trained_as"] = frame["trained_as"].fillna(frame["scenario"])
    for column in [*TRAIN_COLUMNS, "run_cpu_seconds"]:
        if column not in frame.columns:
            frame[column] = np.nan
    extra = [c for c in frame.columns if c not in COLUMNS]
    return frame[COLUMNS + extra].reset_index(drop=True)


def atomic_write_csv(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write to a temporary file in the same folder, then rename: a crash leaves the old file."""
    atomic_write(path, frame.to_csv(index=False))


def read_results(path: str | os.PathLike) -> pd.DataFrame:
    """A CSV as written by atomic_write_csv; a results table (one with the accuracy columns) is
    completed to COLUMNS, so files written before a column existed read like new ones."""
    frame = pd.read_csv(path, dtype={"params": str, "trained_as": str, "optimizer": str},
                        keep_default_na=False, na_values=[""])
    return complete_columns(frame) if set(CORE_COLUMNS) <= set(frame.columns) else frame


def store(frame: pd.DataFrame, path: str | os.PathLike) -> pd.DataFrame:
    """Replace, inside the CSV at path, the rows of the runs in `frame`; keep every other row.

    A run is identified by RUN_KEYS (experiment, method, benchmark, scenario, trained_as, params,
    seed), not by the experiment name alone: two calls that store different runs under one
    experiment name both keep their rows. Columns beyond COLUMNS are kept (empty in rows that
    lack them)."""
    path = Path(path)
    frame = complete_columns(frame)
    if path.exists():
        old = read_results(path)
        replaced = old.set_index(RUN_KEYS).index.isin(frame.set_index(RUN_KEYS).index)
        frame = complete_columns(pd.concat([old[~replaced], frame], ignore_index=True))
    atomic_write_csv(frame, path)
    return frame


def load_all(results_dir: str | os.PathLike) -> pd.DataFrame:
    """Every results table in results_dir/*.csv (completed to COLUMNS), with a `notebook` column
    naming the file it came from; other CSVs (claims, tables) are skipped."""
    frames = []
    for path in sorted(Path(results_dir).glob("*.csv")):
        frame = read_results(path)
        if set(COLUMNS) <= set(frame.columns):
            frames.append(frame.assign(notebook=path.stem))
    if not frames:
        return pd.DataFrame(columns=[*COLUMNS, "notebook"])
    return pd.concat(frames, ignore_index=True)


def confidence_interval(values) -> tuple[float, float, float, int]:
    """Mean and the half-width of a 95% t-interval over seeds: (mean, half_width, std, n)."""
    values = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    n = len(values)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(values.mean())
    if n < 2:
        return mean, float("nan"), float("nan"), n
    std = float(values.std(ddof=1))
    return mean, float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)), std, n


def aggregate(per_seed: pd.DataFrame, keys: list[str] | None = None) -> pd.DataFrame:
    """Mean ± 95% CI over seeds for every configuration and metric."""
    keys = keys or [k for k in [*GROUP_KEYS, "metric"] if k in per_seed.columns]
    records = []
    for key, group in per_seed.groupby(keys, sort=False, dropna=False):
        mean, half, std, n = confidence_interval(group["value"])
        records.append({**dict(zip(keys, key, strict=True)), "mean": mean, "ci95": half, "std": std, "n_seeds": n})
    return pd.DataFrame.from_records(records)


def expand_params(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with one column per method hyper-parameter (from the `params` JSON)."""
    import json

    params = pd.DataFrame([json.loads(p or "{}") for p in frame["params"]], index=frame.index)
    return frame.join(params[[c for c in params.columns if c not in frame.columns]])
