import pandas as pd
import pytest

from clrepro.report import results
from clrepro.report.extra_results import store_rows


def rows(experiment: str, accuracy: float, **extra) -> pd.DataFrame:
    base = dict(experiment=experiment, method="m", benchmark="b", scenario="task", params="{}", seed=0, kind="R",
                after_task=0, eval_task=0, epoch=float("nan"), accuracy=accuracy, seconds=1.0)
    return pd.DataFrame([{**base, **extra}])


def test_store_rows_replaces_experiments_and_keeps_extra_columns(tmp_path):
    path = tmp_path / "nb.csv"
    store_rows(rows("nb/a", 50.0, kl=0.1), path)
    store_rows(rows("nb/b", 60.0, other=2.0), path)
    store_rows(rows("nb/a", 70.0, kl=0.3), path)
    frame = results.read_results(path)
    assert list(frame.columns[:len(results.COLUMNS)]) == results.COLUMNS
    assert frame.set_index("experiment").loc["nb/a", "accuracy"] == 70.0
    assert frame.set_index("experiment").loc["nb/a", "kl"] == pytest.approx(0.3)
    assert frame.set_index("experiment").loc["nb/b", "other"] == 2.0
    assert set(results.load_all(tmp_path)["notebook"]) == {"nb"}


def test_store_rows_needs_the_accuracy_columns(tmp_path):
    with pytest.raises(ValueError, match="accuracy columns"):
        store_rows(pd.DataFrame([{"experiment": "x/y"}]), tmp_path / "x.csv")
