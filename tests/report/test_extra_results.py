import pandas as pd
import pytest

from clrepro.report import results
from clrepro.report.extra_results import store_rows


def rows(experiment: str, accuracy: float, seed: int = 0, **extra) -> pd.DataFrame:
    base = dict(experiment=experiment, method="m", benchmark="b", scenario="task", params="{}", seed=seed, kind="R",
                after_task=0, eval_task=0, epoch=float("nan"), accuracy=accuracy, seconds=1.0)
    return pd.DataFrame([{**base, **extra}])


def test_store_rows_replaces_runs_and_keeps_extra_columns(tmp_path):
    path = tmp_path / "nb.csv"
    store_rows(rows("nb/a", 50.0, kl=0.1), path)
    store_rows(rows("nb/b", 60.0, other=2.0), path)
    store_rows(rows("nb/a", 70.0, kl=0.3), path)
    store_rows(rows("nb/a", 80.0, seed=1, kl=0.4), path)  # another run of nb/a: kept beside seed 0
    frame = results.read_results(path)
    assert list(frame.columns[:len(results.COLUMNS)]) == results.COLUMNS
    by_run = frame.set_index(["experiment", "seed"])
    assert by_run.loc[("nb/a", 0), "accuracy"] == 70.0
    assert by_run.loc[("nb/a", 0), "kl"] == pytest.approx(0.3)
    assert by_run.loc[("nb/a", 1), "accuracy"] == 80.0
    assert by_run.loc[("nb/b", 0), "other"] == 2.0
    assert set(results.load_all(tmp_path)["notebook"]) == {"nb"}


def test_store_rows_needs_the_accuracy_columns(tmp_path):
    with pytest.raises(ValueError, match="accuracy columns"):
        store_rows(pd.DataFrame([{"experiment": "x/y"}]), tmp_path / "x.csv")
