"""The published numbers we compare against, and the comparison that yields each verdict.

The numbers live in ``paper_numbers.csv`` next to this file, one row per comparison:
experiment, benchmark, scenario, method and metric identify our measurement (``match_params``
is a JSON object whose entries must appear in the run's method parameters); value, paper_std,
tolerance, source (paper, table/figure) and tag ([P] stated, [R] re-printed, [~] read off a
figure) describe the paper's. All accuracies are in percent.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from clrepro import metrics
from clrepro.report.results import aggregate

PAPER_NUMBERS = Path(__file__).with_name("paper_numbers.csv")
PAPER_COLUMNS = [
    "experiment", "benchmark", "scenario", "method", "match_params", "metric",
    "value", "paper_std", "tolerance", "source", "tag", "note",
]


def paper_numbers(path: str | Path = PAPER_NUMBERS) -> pd.DataFrame:
    table = pd.read_csv(path, dtype={"match_params": str}, keep_default_na=False, na_values=[""])
    missing = set(PAPER_COLUMNS) - set(table.columns)
    if missing:
        raise ValueError(f"{path} lacks columns {sorted(missing)}")
    table["match_params"] = table["match_params"].fillna("{}").replace("", "{}")
    return table


def verdict(paper: float, mean: float, ci95: float, tolerance: float) -> str:
    """reproduced: |ours − paper| ≤ tolerance. inconclusive: outside the tolerance but the paper's
    value lies inside our 95% CI (too few seeds or too much variance to tell). Otherwise the side
    on which we miss."""
    if math.isnan(mean):
        return "not run"
    diff = mean - paper
    if abs(diff) <= tolerance:
        return "reproduced"
    if not math.isnan(ci95) and abs(diff) <= ci95:
        return "inconclusive"
    return "above paper" if diff > 0 else "below paper"


def _params_match(params_json: str, wanted_json: str) -> bool:
    params, wanted = json.loads(params_json or "{}"), json.loads(wanted_json or "{}")
    return all(params.get(k) == v for k, v in wanted.items())


def compare(rows: pd.DataFrame, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Paper vs ours for every paper row whose experiment appears in `rows` (tidy results)."""
    table = paper_numbers() if table is None else table
    table = table[table["experiment"].isin(rows["experiment"].unique())]
    names = sorted(table["metric"].unique())
    summary = aggregate(metrics.per_seed(rows, names)) if len(table) else pd.DataFrame()
    records = []
    for _, ref in table.iterrows():
        candidates = summary[
            (summary["experiment"] == ref["experiment"]) & (summary["method"] == ref["method"])
            & (summary["benchmark"] == ref["benchmark"]) & (summary["scenario"] == ref["scenario"])
            & (summary["metric"] == ref["metric"])
        ]
        candidates = candidates[[_params_match(p, ref["match_params"]) for p in candidates["params"]]]
        mean = ci = float("nan")
        n, state = 0, None
        if len(candidates) > 1:
            state = "ambiguous match"
        elif len(candidates) == 1:
            found = candidates.iloc[0]
            mean, ci, n = found["mean"], found["ci95"], int(found["n_seeds"])
        records.append({
            "experiment": ref["experiment"], "benchmark": ref["benchmark"], "scenario": ref["scenario"],
            "method": ref["method"], "match_params": ref["match_params"], "metric": ref["metric"],
            "paper": ref["value"], "ours": mean, "ci95": ci, "n_seeds": n, "diff": mean - ref["value"],
            "tolerance": ref["tolerance"],
            "verdict": state or verdict(ref["value"], mean, ci, ref["tolerance"]),
            "source": f"{ref['source']} {ref['tag']}".strip(),
        })
    return pd.DataFrame.from_records(records)


def format_table(comparison: pd.DataFrame) -> pd.DataFrame:
    """Rounded, human-readable paper-vs-ours table."""
    out = comparison.copy()
    variant = out["match_params"].map(lambda s: "" if s in ("{}", "") else f" {s}")
    out.insert(0, "row", out["experiment"] + " · " + out["method"] + variant + " · " + out["metric"])
    out["ours ± 95% CI"] = [
        "–" if math.isnan(m) else (f"{m:.2f}" if math.isnan(c) else f"{m:.2f} ± {c:.2f}")
        for m, c in zip(out["ours"], out["ci95"], strict=True)
    ]
    out["Δ"] = out["diff"].round(2)
    return out[["row", "scenario", "paper", "ours ± 95% CI", "Δ", "tolerance", "verdict", "n_seeds", "source"]]


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (no extra dependency)."""
    def cell(value) -> str:
        if isinstance(value, float):
            return "–" if math.isnan(value) else f"{value:.2f}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)
