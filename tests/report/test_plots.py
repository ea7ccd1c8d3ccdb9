import numpy as np
import pytest

from clrepro.report import plots


def test_ci95_matches_the_tables_t_interval():
    low, high = plots.ci95([1.0, 2.0, 3.0])
    assert (low + high) / 2 == pytest.approx(2.0)
    assert (high - low) / 2 == pytest.approx(4.302652729 / np.sqrt(3))
    assert plots.ci95([5.0]) == (5.0, 5.0)


def test_heatmap_ticks_thin_out_past_ten_tasks():
    assert plots._sparse_ticks(5) == [1, 2, 3, 4, 5]
    ticks = plots._sparse_ticks(20)
    assert [t for t in ticks if t != ""] == [1, 5, 10, 15, 20] and len(ticks) == 20


def test_paper_vs_ours_labels_rows_and_shows_the_band(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    comparison = pd.DataFrame({
        "experiment": ["r/x", "r/x", "e/fig"], "method": ["der", "der", "ewc"],
        "match_params": ['{"buffer_size": 200}', '{"buffer_size": 500}', "{}"], "metric": ["acc", "acc", "acc@2"],
        "scenario": ["class", "class", "domain"], "paper": [80.0, 85.0, 99.0], "ours": [81.0, 83.0, 84.6],
        "ci95": [0.5, float("nan"), 0.4], "tolerance": [2.0, 2.0, 3.0], "diff": [1.0, -2.0, -14.4],
        "verdict": ["reproduced", "inconclusive", "not comparable (reduced protocol)"],
        "protocol": ["paper", "paper", "reduced"],
    })
    ax = plots.paper_vs_ours(comparison)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(set(labels)) == 3 and "buffer 200" in labels[0] and labels[2].endswith("[reduced]")
    assert any("tolerance" in t.get_text() for t in ax.get_legend().get_texts())
    assert len(ax.figure.axes) == 2  # the Δ view
    plots.save_figure(ax.figure, "pvo", tmp_path, svg=False)
