import os

import numpy as np
import pandas as pd
import pytest

from clrepro.config import BenchmarkConfig, TrainConfig
from clrepro.experiment import Experiment
from clrepro.report import results
from clrepro.train import RunResult

OLD_COLUMNS = ["experiment", "method", "benchmark", "scenario", "params", "seed",
               "kind", "after_task", "eval_task", "epoch", "accuracy", "seconds"]


def fake_result(seed=0, acc=(50.0, 60.0), scenario="task", params=None, name="nb/exp"):
    exp = Experiment(name, BenchmarkConfig("split_mnist", scenario, n_tasks=2), "finetune" if params is None else "er",
                     params or {}, train=TrainConfig(lr=0.03, batch_size=10, epochs=1))
    R = np.array([[acc[0], 10.0], [acc[0] - 5, acc[1]]])
    return RunResult(exp, seed, R, np.array([50.0, 50.0]), [(1.0, 0, 0, 40.0)])


def fake_rows(seed=0, acc=(50.0, 60.0), **kwargs):
    return results.run_rows(fake_result(seed, acc, **kwargs))


def test_run_rows_are_tidy():
    rows = fake_rows()
    assert list(rows.columns) == results.COLUMNS
    assert set(rows["kind"]) == {"initial", "R", "curve"}
    assert len(rows[rows["kind"] == "R"]) == 4
    assert (rows["trained_as"] == rows["scenario"]).all()


def test_run_rows_record_the_training_configuration():
    row = fake_rows().iloc[0]
    assert (row["lr"], row["batch_size"], row["epochs"], row["optimizer"]) == (0.03, 10, 1, "sgd")
    assert (row["momentum"], row["weight_decay"], bool(row["reset_optimizer"])) == (0.0, 0.0, True)
    assert np.isnan(row["iterations"])  # the schedule is given in epochs


def test_task_il_view_of_a_class_il_run_becomes_task_rows():
    # A Class-IL-trained run whose loop also evaluated it with each task's units only (Task-IL).
    result = fake_result(scenario="class")
    result.task_il_accuracy = np.array([[99.0, np.nan], [90.0, 98.0]])
    rows = results.run_rows(result)
    view = rows[rows["scenario"] == "task"]
    assert (view["trained_as"] == "class").all()
    assert set(view["kind"]) == {"R", "initial"}
    task_r = view[view["kind"] == "R"].set_index(["after_task", "eval_task"])["accuracy"]
    assert task_r.to_dict() == {(0, 0): 99.0, (1, 0): 90.0, (1, 1): 98.0}  # NaN = not evaluated
    assert view[view["kind"] == "initial"]["accuracy"].isna().all()  # not measured: FWT undefined
    class_rows = rows[rows["scenario"] == "class"]
    assert (class_rows["trained_as"] == "class").all() and len(class_rows[class_rows["kind"] == "R"]) == 4
    from clrepro import metrics

    acc = metrics.per_seed(rows, ["acc"]).set_index("scenario")["value"]
    assert acc["task"] == pytest.approx(94.0) and acc["class"] == pytest.approx(52.5)
    result.task_il_initial = np.array([48.0, 51.0])  # where the loop measured it, it is FWT's baseline
    rows = results.run_rows(result)
    initial = rows[(rows["scenario"] == "task") & (rows["kind"] == "initial")]
    assert initial["accuracy"].tolist() == [48.0, 51.0]


def test_store_replaces_only_the_same_runs(tmp_path):
    path = tmp_path / "nb.csv"
    results.store(fake_rows(), path)
    results.store(fake_rows().assign(experiment="nb/other"), path)
    results.store(fake_rows(seed=1), path)
    stored = results.read_results(path)
    assert set(stored["experiment"]) == {"nb/exp", "nb/other"}
    assert set(stored[stored["experiment"] == "nb/exp"]["seed"]) == {0, 1}
    # a second store of one run replaces that run's rows, and only those
    results.store(fake_rows(seed=1, acc=(70.0, 80.0)), path)
    stored = results.read_results(path)
    assert len(stored) == 3 * len(fake_rows())
    final = stored[(stored["kind"] == "R") & (stored["after_task"] == 1) & (stored["eval_task"] == 1)]
    assert final.set_index(["experiment", "seed"])["accuracy"].to_dict() == {
        ("nb/exp", 0): 60.0, ("nb/other", 0): 60.0, ("nb/exp", 1): 80.0}


def test_store_keeps_runs_that_differ_in_params_under_one_name(tmp_path):
    path = tmp_path / "nb.csv"
    results.store(fake_rows(params={"buffer_size": 200}), path)
    results.store(fake_rows(params={"buffer_size": 500}), path)
    assert len(set(results.read_results(path)["params"])) == 2


def test_store_keeps_extra_columns(tmp_path):
    path = tmp_path / "nb.csv"
    results.store(fake_rows().assign(kl=0.5), path)
    results.store(fake_rows(seed=1), path)
    stored = results.read_results(path)
    assert list(stored.columns) == [*results.COLUMNS, "kl"]
    assert (stored[stored["seed"] == 0]["kl"] == 0.5).all() and stored[stored["seed"] == 1]["kl"].isna().all()


def test_old_files_without_the_new_columns_load_and_store(tmp_path):
    old = fake_rows()[OLD_COLUMNS]
    old.to_csv(tmp_path / "old.csv", index=False)
    read = results.read_results(tmp_path / "old.csv")
    assert list(read.columns) == results.COLUMNS
    assert (read["trained_as"] == read["scenario"]).all() and read["lr"].isna().all()
    loaded = results.load_all(tmp_path)
    assert len(loaded) == len(old) and set(loaded["notebook"]) == {"old"}
    # storing the same run into an old file replaces its rows (the run key ignores the new columns)
    results.store(fake_rows(acc=(70.0, 80.0)), tmp_path / "old.csv")
    stored = results.read_results(tmp_path / "old.csv")
    assert len(stored) == len(old) and (stored["lr"] == 0.03).all()


def test_store_needs_the_accuracy_columns(tmp_path):
    with pytest.raises(ValueError, match="accuracy columns"):
        results.store(pd.DataFrame([{"experiment": "x/y"}]), tmp_path / "x.csv")


def test_crash_mid_write_leaves_old_file(tmp_path, monkeypatch):
    path = tmp_path / "nb.csv"
    results.store(fake_rows(), path)
    before = path.read_bytes()

    def crash(src, dst):  # the new file is written, the process dies before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        results.store(fake_rows(seed=5), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["nb.csv"]


def test_confidence_interval_t_distribution():
    mean, half, std, n = results.confidence_interval([1.0, 2.0, 3.0])
    assert (mean, std, n) == (2.0, 1.0, 3)
    assert half == pytest.approx(4.302652729 / np.sqrt(3))
    assert np.isnan(results.confidence_interval([5.0])[1])


def test_rows_record_the_runs_cpu_time_and_old_files_read_without_it(tmp_path):
    rows = fake_rows()
    assert "run_cpu_seconds" in rows.columns and rows["run_cpu_seconds"].notna().all()
    old = tmp_path / "old.csv"
    rows.drop(columns="run_cpu_seconds").to_csv(old, index=False)
    read = results.read_results(old)
    assert list(read.columns[: len(results.COLUMNS)]) == results.COLUMNS and read["run_cpu_seconds"].isna().all()
