"""Figures: accuracy-matrix heatmap, per-task accuracy along training, paper vs ours."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from clrepro import metrics
from clrepro.report import results

sns.set_theme(context="notebook", style="whitegrid")
plt.rcParams["svg.hashsalt"] = "clrepro"  # stable SVG ids: a re-render gives the same file


def ci95(values) -> tuple[float, float]:
    """The 95% t-interval over seeds, as in every table (pass as seaborn's `errorbar=`;
    deterministic, unlike seaborn's bootstrap)."""
    mean, half, _, _ = results.confidence_interval(list(values))
    half = 0.0 if np.isnan(half) else half
    return mean - half, mean + half


def save_figure(fig: plt.Figure, name: str, figures_dir: str | Path, svg: bool = True) -> Path:
    """PNG (and SVG) under figures_dir; metadata stripped so re-renders are byte-stable."""
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    png = figures_dir / f"{name}.png"
    fig.savefig(png, dpi=120, bbox_inches="tight", metadata={"Software": None})
    if svg:
        fig.savefig(figures_dir / f"{name}.svg", bbox_inches="tight", metadata={"Date": None})
    return png


def accuracy_heatmap(rows: pd.DataFrame, ax=None, title: str | None = None):
    """Mean (over seeds) accuracy matrix R of one configuration."""
    R = metrics.mean_matrix(rows)
    ax = ax or plt.subplots(figsize=(0.5 * R.shape[0] + 3, 0.45 * R.shape[0] + 2.5))[1]
    sns.heatmap(R, annot=R.shape[0] <= 10, fmt=".1f", vmin=0, vmax=100, cmap="viridis", ax=ax,
                xticklabels=range(1, R.shape[1] + 1), yticklabels=range(1, R.shape[0] + 1),
                cbar_kws={"label": "accuracy (%)"})
    ax.set(xlabel="evaluated on task", ylabel="after training task", title=title or "")
    return ax


def learning_curves(rows: pd.DataFrame, hue: str = "method", col: str = "eval_task", **kwargs):
    """Per-task test accuracy along training (kind == 'curve'), mean and 95% t-CI over seeds."""
    curves = rows[rows["kind"] == "curve"].copy()
    curves["task"] = curves[col].astype(int) + 1
    grid = sns.relplot(data=curves, x="epoch", y="accuracy", hue=hue, col="task", kind="line",
                       errorbar=ci95, height=3, aspect=1.2, **kwargs)
    epochs_per_task = curves.groupby("after_task")["epoch"].max().to_numpy()
    for ax in grid.axes.flat:
        for boundary in epochs_per_task[:-1]:
            ax.axvline(boundary, color="grey", lw=0.8, ls=":")
    grid.set_axis_labels("epoch (all tasks)", "test accuracy (%)")
    return grid


def paper_vs_ours(comparison: pd.DataFrame, ax=None, title: str = "paper vs ours"):
    """Our mean with its 95% CI against the paper's value, one row per comparison."""
    comp = comparison.reset_index(drop=True)
    labels = [f"{r.experiment} · {r.method} · {r.metric}" for r in comp.itertuples()]
    ax = ax or plt.subplots(figsize=(7, 0.45 * len(comp) + 1.2))[1]
    y = np.arange(len(comp))
    ci = comp["ci95"].fillna(0).to_numpy()
    ax.errorbar(comp["ours"], y, xerr=ci, fmt="o", color="C0", label="ours (95% CI)")
    ax.scatter(comp["paper"], y, marker="x", s=60, color="C3", zorder=3, label="paper")
    for yi, (p, tol) in enumerate(zip(comp["paper"], comp["tolerance"], strict=True)):
        if not math.isnan(tol):
            ax.plot([p - tol, p + tol], [yi, yi], color="C3", alpha=0.25, lw=6)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set(xlabel="accuracy (%)", title=title)
    ax.legend(loc="best", fontsize="small")
    return ax
