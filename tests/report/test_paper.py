import math

import pandas as pd

from clrepro.report import paper
from tests.report.test_results import fake_rows


def test_paper_table_is_well_formed():
    table = paper.paper_numbers()
    assert len(table) > 0
    assert table["source"].str.len().min() > 0
    assert table["tolerance"].gt(0).all() and table["value"].between(-100, 100).all()  # BWT can be negative
    keys = ["experiment", "benchmark", "scenario", "method", "match_params", "metric"]
    assert not table.duplicated(keys).any()


def test_verdicts():
    assert paper.verdict(80.0, 81.0, 0.5, 2.0) == "reproduced"
    assert paper.verdict(80.0, 78.5, 0.5, 2.0) == "reproduced"
    assert paper.verdict(80.0, 75.0, 6.0, 2.0) == "inconclusive"  # paper value inside a wide CI
    assert paper.verdict(80.0, 75.0, 1.0, 2.0) == "below paper"
    assert paper.verdict(80.0, 90.0, 1.0, 2.0) == "above paper"
    assert paper.verdict(80.0, math.nan, math.nan, 2.0) == "not run"


def test_compare_matches_experiment_method_and_metric():
    rows = pd.concat([fake_rows(0, (50, 60)), fake_rows(1, (52, 62))])
    table = pd.DataFrame([{
        "experiment": "nb/exp", "benchmark": "split_mnist", "scenario": "task", "method": "finetune",
        "match_params": "{}", "metric": "acc", "value": 54.0, "paper_std": None, "tolerance": 1.0,
        "source": "test", "tag": "[P]", "note": "",
    }])
    out = paper.compare(rows, table)
    assert len(out) == 1
    # acc per seed: (45+60)/2 = 52.5 and (47+62)/2 = 54.5
    assert out.loc[0, "ours"] == 53.5 and out.loc[0, "n_seeds"] == 2
    assert out.loc[0, "verdict"] == "reproduced"
