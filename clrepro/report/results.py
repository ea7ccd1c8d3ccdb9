"""Tidy results: one CSV per notebook, written atomically; aggregation over seeds with 95% CIs.

Columns: experiment, method, benchmark, scenario, params, seed, kind, after_task, eval_task,
epoch, accuracy, seconds. kind is 'R' (an entry of the accuracy matrix), 'initial' (untrained
model), 'curve' (evaluation during training, at epoch) or 'diverged' (one row at the task after
which training diverged; the R rows from there on hold what the diverged model predicts).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from clrepro.train import RunResult

COLUMNS = [
    "experiment", "method", "benchmark", "scenario", "params", "seed",
    "kind", "after_task", "eval_task", "epoch", "accuracy", "seconds",
]
GROUP_KEYS = ["experiment", "method", "benchmark", "scenario", "params"]


def run_rows(result: RunResult) -> pd.DataFrame:
    exp = result.experiment
    base = dict(
        experiment=exp.name, method=exp.method, benchmark=exp.benchmark.name,
        scenario=exp.benchmark.scenario, params=exp.params_label(), seed=result.seed,
        seconds=round(result.seconds, 3),
    )
    records = [
        {**base, "kind": "initial", "after_task": -1, "eval_task": i, "epoch": np.nan, "accuracy": a}
        for i, a in enumerate(result.initial)
    ]
    T = result.accuracy.shape[0]
    for t in range(T):
        for i in range(T):
            if not np.isnan(result.accuracy[t, i]):
                records.append({**base, "kind": "R", "after_task": t, "eval_task": i,
                                "epoch": np.nan, "accuracy": result.accuracy[t, i]})
    if result.diverged_at is not None:
        records.append({**base, "kind": "diverged", "after_task": result.diverged_at, "eval_task": -1,
                        "epoch": np.nan, "accuracy": np.nan})
    for epoch, t, i, a in result.curves:
        records.append({**base, "kind": "curve", "after_task": t, "eval_task": i, "epoch": epoch, "accuracy": a})
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def atomic_write_csv(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write to a temporary file in the same folder, then rename: a crash leaves the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            frame.to_csv(f, index=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_results(path: str | os.PathLike) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"params": str}, keep_default_na=False, na_values=[""])


def store(frame: pd.DataFrame, path: str | os.PathLike) -> pd.DataFrame:
    """Replace the rows of the experiments in `frame` inside the CSV at path; keep the rest."""
    path = Path(path)
    if path.exists():
        old = read_results(path)
        frame = pd.concat([old[~old["experiment"].isin(frame["experiment"].unique())], frame])
    frame = frame[COLUMNS].reset_index(drop=True)
    atomic_write_csv(frame, path)
    return frame


def load_all(results_dir: str | os.PathLike) -> pd.DataFrame:
    """Every results/*.csv, with a `notebook` column naming the file it came from."""
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
