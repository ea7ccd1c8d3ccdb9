import numpy as np
import pandas as pd
import pytest

from clrepro.config import BenchmarkConfig
from clrepro.experiment import Experiment
from clrepro.report import results
from clrepro.train import RunResult


def fake_rows(seed=0, acc=(50.0, 60.0)):
    exp = Experiment("nb/exp", BenchmarkConfig("split_mnist", "task", n_tasks=2), "finetune")
    R = np.array([[acc[0], 10.0], [acc[0] - 5, acc[1]]])
    return results.run_rows(RunResult(exp, seed, R, np.array([50.0, 50.0]), [(1.0, 0, 0, 40.0)]))


def test_run_rows_are_tidy():
    rows = fake_rows()
    assert list(rows.columns) == results.COLUMNS
    assert set(rows["kind"]) == {"initial", "R", "curve"}
    assert len(rows[rows["kind"] == "R"]) == 4


def test_store_replaces_only_same_experiment(tmp_path):
    path = tmp_path / "nb.csv"
    results.store(fake_rows(), path)
    other = fake_rows().assign(experiment="nb/other")
    results.store(other, path)
    results.store(fake_rows(seed=1), path)
    stored = results.read_results(path)
    assert set(stored["experiment"]) == {"nb/exp", "nb/other"}
    assert set(stored[stored["experiment"] == "nb/exp"]["seed"]) == {1}


def test_crash_mid_write_leaves_old_file(tmp_path, monkeypatch):
    path = tmp_path / "nb.csv"
    results.store(fake_rows(), path)
    before = path.read_bytes()

    def crash(self, f, **kwargs):
        f.write("experiment,meth")
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", crash)
    with pytest.raises(KeyboardInterrupt):
        results.store(fake_rows(seed=5), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["nb.csv"]


def test_confidence_interval_t_distribution():
    mean, half, std, n = results.confidence_interval([1.0, 2.0, 3.0])
    assert (mean, std, n) == (2.0, 1.0, 3)
    assert half == pytest.approx(4.302652729 / np.sqrt(3))
    assert np.isnan(results.confidence_interval([5.0])[1])
