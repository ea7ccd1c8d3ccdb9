"""Display tables for notebooks: mean ± 95% CI per configuration and metric (from
clrepro.metrics and clrepro.report.results, so every number is computed the same way)."""

from __future__ import annotations

import json
import math

import pandas as pd

from clrepro import metrics
from clrepro.report import results


def _short_params(params: str, drop: tuple[str, ...]) -> str:
    values = {k: v for k, v in json.loads(params or "{}").items() if k not in drop}
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "–"


def metric_table(rows: pd.DataFrame, names: list[str], drop_params: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per (experiment, method, params), one column per metric: 'mean ± ci95'; per
    scenario too where the rows hold more than one (a Class-IL run's Task-IL view, say)."""
    agg = results.aggregate(metrics.per_seed(rows, list(names)))
    agg["value"] = [
        "–" if math.isnan(m) else (f"{m:.2f}" if math.isnan(c) else f"{m:.2f} ± {c:.2f}")
        for m, c in zip(agg["mean"], agg["ci95"], strict=True)
    ]
    agg["params"] = [_short_params(p, drop_params) for p in agg["params"]]
    index = ["experiment", "method", "params"] + (["scenario"] if agg["scenario"].nunique() > 1 else [])
    table = agg.pivot_table(index=index, columns="metric", values="value", aggfunc="first", sort=False)
    table = table[[n for n in names if n in table.columns]]
    table["seeds"] = agg.groupby(index, sort=False)["n_seeds"].max().to_numpy()
    return table
