"""Figures: accuracy-matrix heatmap, per-task accuracy along training, paper vs ours."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from clrepro import metrics
from clrepro.report import results
from clrepro.report.paper import row_label

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


def _sparse_ticks(T: int) -> list:
    """Task numbers 1..T as tick labels, thinned past 10 tasks so that they do not collide
    (1, 5, 10, 15, ... for 20 tasks)."""
    if T <= 10:
        return list(range(1, T + 1))
    step = 5 if T <= 50 else 10
    return [i if i == 1 or i % step == 0 else "" for i in range(1, T + 1)]


def accuracy_heatmap(rows: pd.DataFrame, ax=None, title: str | None = None, scenario: str | None = None):
    """Mean (over seeds) accuracy matrix R of one configuration (scored as trained, unless
    scenario says otherwise: see metrics.mean_matrix)."""
    R = metrics.mean_matrix(rows, scenario)
    ax = ax or plt.subplots(figsize=(0.5 * R.shape[0] + 3, 0.45 * R.shape[0] + 2.5))[1]
    sns.heatmap(R, annot=R.shape[0] <= 10, fmt=".1f", vmin=0, vmax=100, cmap="viridis", ax=ax,
                xticklabels=_sparse_ticks(R.shape[1]), yticklabels=_sparse_ticks(R.shape[0]),
                cbar_kws={"label": "accuracy (%)"})
    ax.tick_params(axis="x", labelrotation=0)
    ax.tick_params(axis="y", labelrotation=0)
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


VERDICT_COLOURS = {"reproduced": "C2", "inconclusive": "C1", "above paper": "C0", "below paper": "C3",
                   "re-tuned": "C4", "not comparable (reduced protocol)": "C7"}


def verdict_colour(verdict: str) -> str:
    """One colour per verdict category (any 'protocol differs: ...' shares one)."""
    if verdict.startswith("protocol differs"):
        return "C5"
    return VERDICT_COLOURS.get(verdict, "C7")


def _labels(comparison: pd.DataFrame) -> list[str]:
    # experiment · method (buffer, distinguishing parameters) · scenario · metric: no two rows alike;
    # a row that is not a replication of the published protocol says so in its name
    labels = []
    for r in comparison.itertuples():
        label = row_label(r.experiment, r.method, r.match_params, r.metric, r.scenario)
        protocol = getattr(r, "protocol", "paper")
        labels.append(label if protocol in ("paper", "") else f"{label} [{protocol}]")
    return labels


def _band_handle():
    return Patch(color="C3", alpha=0.25, label="paper ± tolerance (the band)")


def delta_view(comparison: pd.DataFrame, ax=None, labels: bool = True, title: str = "ours − paper"):
    """Δ = ours − paper with our 95% CI, against each row's band ±tolerance around 0: the view in
    which a 2-point gap is visible (on a 0–100 axis it is not)."""
    comp = comparison.reset_index(drop=True)
    ax = ax or plt.subplots(figsize=(7, 0.4 * len(comp) + 1.5))[1]
    y = np.arange(len(comp))
    for yi, tol in zip(y, comp["tolerance"], strict=True):
        ax.plot([-tol, tol], [yi, yi], color="C3", alpha=0.25, lw=7, solid_capstyle="butt")
    for yi, r in zip(y, comp.itertuples(), strict=True):
        ci = 0.0 if math.isnan(r.ci95) else r.ci95
        ax.errorbar(r.diff, yi, xerr=ci, fmt="o", ms=5, color=verdict_colour(r.verdict), capsize=2)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(y, _labels(comp) if labels else [""] * len(comp))
    ax.set_ylim(len(comp) - 0.5, -0.5)
    ax.set(xlabel="ours − paper (points), 95% CI", title=title)
    handles = [_band_handle()] + [
        Line2D([], [], marker="o", ls="none", color=verdict_colour(v), label=v) for v in dict.fromkeys(comp["verdict"])
    ]
    ax.grid(axis="y", visible=False)
    ax.legend(handles=handles, fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1))
    return ax


def paper_vs_ours(comparison: pd.DataFrame, ax=None, title: str = "paper vs ours", delta: bool = True):
    """Our mean with its 95% CI against the paper's value and its tolerance band, one labelled
    row per comparison; with `delta` a second panel shows ours − paper (returns the first axis;
    ax.figure holds both)."""
    comp = comparison.reset_index(drop=True)
    height = 0.4 * len(comp) + 1.5
    ax_delta = None
    if ax is None:
        if delta:
            fig, (ax, ax_delta) = plt.subplots(1, 2, figsize=(13, height),
                                               gridspec_kw={"width_ratios": [1.3, 1]})
        else:
            fig, ax = plt.subplots(figsize=(8, height))
    y = np.arange(len(comp))
    for yi, (p, tol) in enumerate(zip(comp["paper"], comp["tolerance"], strict=True)):
        if not math.isnan(tol):
            ax.plot([p - tol, p + tol], [yi, yi], color="C3", alpha=0.25, lw=7, solid_capstyle="butt")
    ci = comp["ci95"].fillna(0).to_numpy()
    ax.errorbar(comp["ours"], y, xerr=ci, fmt="o", color="C0", capsize=2, label="ours (mean, 95% CI)")
    ax.scatter(comp["paper"], y, marker="x", s=60, color="C3", zorder=3, label="paper")
    ax.set_yticks(y, _labels(comp))
    ax.set_ylim(len(comp) - 0.5, -0.5)
    ax.set(xlabel="value (%)", title=title)
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=[*handles, _band_handle()], loc="best", fontsize="x-small")
    if ax_delta is not None:
        delta_view(comp, ax=ax_delta, labels=False)
    return ax
