import math

import pandas as pd
import pytest

from clrepro.report import paper
from tests.report.test_results import fake_rows


def test_paper_table_is_well_formed():
    table = paper.paper_numbers()
    assert len(table) > 0
    assert table["source"].str.len().min() > 0
    assert table["tolerance"].gt(0).all() and table["value"].between(-100, 100).all()  # BWT can be negative
    keys = ["experiment", "benchmark", "scenario", "method", "match_params", "metric"]
    assert not table.duplicated(keys).any()
    assert set(table["tag"]) <= set(paper.TOLERANCE_POLICY)


def test_one_published_number_is_one_id_with_one_value():
    table = paper.paper_numbers()
    described = table.groupby("id")[["value", "paper_std", "tag", "benchmark", "metric"]].nunique(dropna=False)
    assert (described <= 1).all().all(), described[(described > 1).any(axis=1)]
    # DER's SGD on P-MNIST is compared in the ewc and the replay notebooks: one number, one tolerance
    sgd = table[table["id"] == "der20-t2/pmnist-domain/sgd/acc"]
    assert set(sgd["experiment"]) == {"ewc/der_pmnist", "replay/der_pmnist"}
    assert sgd["tolerance"].nunique() == 1 and (sgd["home"] == "yes").sum() == 1


def test_protocol_categories_are_marked():
    table = paper.paper_numbers()
    assert (table[table["experiment"] == "ewc/fig3b"]["protocol"] == "reduced").all()
    tuned = table[table["experiment"] == "ewc/der_pmnist_tuned"]
    assert (tuned["protocol"] == "re-tuned").all() and (tuned["home"] == "no").all()
    ogd = table[table["id"].str.startswith("gpm21sub-t1/")].set_index("metric")
    assert ogd.loc["acc", "value"] == 82.73 and ogd.loc["bwt", "value"] == -14.0 and ogd.loc["acc", "tag"] == "[R]"


def test_tolerance_policy():
    assert paper.tolerance("[P]") == pytest.approx(2.005)
    assert paper.tolerance("[~]") == pytest.approx(3.005)
    # an sd over 10 runs widens the band by 1.96 sd/√10
    assert paper.tolerance("[P]", 2.33, "sd", 10) == pytest.approx(2.005 + 1.959964 * 2.33 / math.sqrt(10), rel=1e-6)
    # a standard error is used as printed; a ± of unknown run count is read as a standard error
    assert paper.tolerance("[R]", 0.44, "se") == pytest.approx(2.005 + 1.959964 * 0.44, rel=1e-6)
    assert paper.tolerance("[R]", 0.57, "sd") == paper.tolerance("[R]", 0.57, "se")
    assert paper.tolerance("[R]", printed_step=1.0) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="tag"):
        paper.tolerance("[?]")


def test_verdicts_are_equivalence_tests():
    assert paper.verdict(80.0, 81.0, 0.5, 2.0) == "reproduced"  # CI [80.5, 81.5] inside [78, 82]
    assert paper.verdict(80.0, 81.0, 1.5, 2.0) == "inconclusive"  # CI reaches 82.5: straddles the edge
    assert paper.verdict(80.0, 75.0, 6.0, 2.0) == "inconclusive"
    assert paper.verdict(80.0, 75.0, 1.0, 2.0) == "below paper"
    assert paper.verdict(80.0, 90.0, 1.0, 2.0) == "above paper"
    assert paper.verdict(80.0, 80.0, math.nan, 2.0) == "inconclusive"  # one seed: no CI, no verdict
    assert paper.verdict(80.0, math.nan, math.nan, 2.0) == "not run"
    # the R-MNIST fine-tuning case: a point estimate inside the band with a CI far wider than it
    assert paper.verdict(67.66, 72.33, 15.01, 7.29) == "inconclusive"


def test_protocol_overrides_the_rule():
    assert paper.category("reproduced", "reduced") == paper.NOT_COMPARABLE
    assert paper.category("below paper", "re-tuned") == "re-tuned"
    assert paper.category("reproduced", "differs: trained masked") == "protocol differs: trained masked"
    assert paper.category("above paper", "paper") == "above paper"
    assert paper.category("not run", "reduced") == "not run"


def test_rule_text_states_the_rule_and_the_policy():
    text = paper.rule_text()
    assert "whole CI lies inside the band" in text and paper.POLICY_FIXED in text
    assert "paper's value lies inside our CI" not in text


def _table(rows):
    return pd.DataFrame([{
        "id": r[0], "experiment": r[1], "benchmark": "split_mnist", "scenario": "task", "method": "finetune",
        "match_params": "{}", "metric": "acc", "value": 54.0, "paper_std": math.nan, "paper_spread": "",
        "paper_runs": math.nan, "printed_step": math.nan, "source": "test", "tag": "[P]", "protocol": r[2],
        "home": r[3], "note": "", "tolerance": 3.0,
    } for r in rows])


def test_compare_matches_experiment_method_and_metric():
    rows = pd.concat([fake_rows(0, (50, 60)), fake_rows(1, (52, 62))])
    out = paper.compare(rows, _table([("x", "nb/exp", "paper", "yes")]))
    assert len(out) == 1
    # acc per seed: (45+60)/2 = 52.5 and (47+62)/2 = 54.5; CI half-width 12.7 · 1/√2 · √2 = 12.71
    assert out.loc[0, "ours"] == 53.5 and out.loc[0, "n_seeds"] == 2
    assert out.loc[0, "verdict"] == "inconclusive"


def test_replication_table_has_one_row_per_published_number():
    rows = pd.concat([fake_rows(s, (53.9 + 0.01 * s, 64.0)) for s in range(3)])
    rows = pd.concat([rows, rows.assign(experiment="nb/other"), rows.assign(experiment="nb/tuned")])
    table = _table([("x", "nb/exp", "paper", "yes"), ("x", "nb/other", "paper", "no"),
                    ("x", "nb/tuned", "re-tuned", "no"), ("y", "nb/never", "paper", "yes")])
    rep = paper.replication_table(paper.compare(rows, table))
    assert list(rep["id"]) == ["x"] and rep.loc[0, "verdict"] == "reproduced"
    assert rep.loc[0, "also_in"] == "nb/other" and rep.loc[0, "retuned_experiment"] == "nb/tuned"
    c = paper.counts(rep)
    assert c["reproduced"] == 1 and c["total"] == 1 and c["retuned"] == 1
    head = paper.headline(rep, table)
    assert head.startswith("**1 reproduced / 0 inconclusive / 0 differ") and "1 published number(s) without" in head
    md = paper.markdown_table(paper.format_replication(rep))
    assert "↳ nb/tuned (re-tuned)" in md and md.count("\n") == 3


def test_row_labels_name_buffer_and_parameters():
    label = paper.row_label("replay/x", "der", '{"buffer_size": 200, "alpha": 0.2}', "acc", "class")
    assert label == "replay/x · der (buffer 200, alpha=0.2) · class-IL · acc"


def test_protocol_rows_of_issue_16():
    table = paper.paper_numbers()
    # DER-protocol Task-IL rows are Class-IL runs masked at test, the paper's protocol: nothing says ours differs
    til = table[(table["experiment"] == "replay/der_smnist_til")
                | (table["experiment"].isin(["lwf/der", "pnn/smnist"]) & (table["scenario"] == "task"))]
    assert len(til) == 11 + 3 + 3 and (til["protocol"] == "paper").all()
    assert not til["note"].str.contains("trains masked|masks only at test").any()
    # the cumulative chain's ER row runs ER+T's replay minibatch: it differs, the plain-ER row is the home
    er = table[table["id"] == "tricks20-t1/sfmnist-class/er-200/acc"].set_index("experiment")
    assert er.loc["replay/tricks_buffers", "home"] == "yes" and er.loc["replay/tricks_cumulative", "home"] == "no"
    assert er.loc["replay/tricks_cumulative", "protocol"].startswith("differs: replay minibatch 32")
    # pnn's Class-IL rows point to the same published numbers as the replay notebook's (one id each)
    pnn = table[(table["experiment"] == "pnn/smnist") & (table["scenario"] == "class")].set_index("method")
    assert pnn.loc["finetune", "id"] == "der20-t2/smnist-class/sgd/acc" and pnn.loc["finetune", "home"] == "no"
    assert pnn.loc["online_ewc", "value"] == 20.46 and pnn.loc["online_ewc", "home"] == "yes"


def test_headline_counts_a_home_row_that_was_not_run_as_without_a_result():
    rows = pd.concat([fake_rows(s, (53.9 + 0.01 * s, 64.0)) for s in range(3)])
    # "nb/exp" has runs but not of this method: its home row is in the table as "not run"
    table = pd.concat([_table([("x", "nb/exp", "paper", "yes")]),
                       _table([("z", "nb/exp", "paper", "yes")]).assign(method="ewc")], ignore_index=True)
    rep = paper.replication_table(paper.compare(rows, table))
    assert set(rep["id"]) == {"x", "z"} and "not run" in set(rep["verdict"])
    assert "1 published number(s) without a result" in paper.headline(rep, table)
