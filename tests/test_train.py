import numpy as np
import pytest
import torch

from clrepro.config import BenchmarkConfig, ModelConfig, TrainConfig
from clrepro.data.datasets import find_dataset_root
from clrepro.experiment import Experiment
from clrepro.train import minibatches, run

needs_mnist = pytest.mark.skipif(find_dataset_root("mnist") is None, reason="run `make data` first")


def small(method="ewc", params=None, scenario="task", **train):
    return Experiment(
        "test/small", BenchmarkConfig("split_mnist", scenario, n_tasks=3, train_per_task=200, test_per_task=100),
        method, params if params is not None else {"lam": 50.0}, ModelConfig(hidden=(32,)),
        TrainConfig(lr=0.05, batch_size=16, epochs=1, **train),
    )


@needs_mnist
def test_same_seed_gives_bit_identical_accuracy_matrix_on_cpu():
    a, b = run(small(), seed=3), run(small(), seed=3)
    assert np.array_equal(a.accuracy, b.accuracy, equal_nan=True) and np.array_equal(a.initial, b.initial)
    c = run(small(), seed=4)
    assert not np.array_equal(a.accuracy, c.accuracy, equal_nan=True)


@needs_mnist
def test_accuracy_matrix_is_filled_and_learning_happens():
    result = run(small("finetune", {}, full_matrix=True), seed=0)
    assert result.accuracy.shape == (3, 3) and not np.isnan(result.accuracy).any()
    assert np.all(np.diag(result.accuracy) > 90)  # Task-IL with 2 classes is easy


@needs_mnist
def test_joint_fills_only_the_last_row():
    result = run(small("joint", {}, scenario="class"), seed=0)
    assert np.isnan(result.accuracy[0]).all() and not np.isnan(result.accuracy[-1]).any()


@needs_mnist
def test_curves_recorded_every_epoch():
    exp = small("finetune", {}, eval_every=1).with_(train={"epochs": 2})
    result = run(exp, seed=0)
    epochs = sorted({e for e, *_ in result.curves})
    assert epochs == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def test_minibatches_respect_epochs_and_iterations():
    g = torch.Generator().manual_seed(0)
    batches = list(minibatches(25, TrainConfig(batch_size=10, epochs=2), g))
    assert [len(i) for _, i in batches] == [10, 10, 5, 10, 10, 5]
    assert sorted(torch.cat([i for _, i in batches[:3]]).tolist()) == list(range(25))
    batches = list(minibatches(25, TrainConfig(batch_size=10, epochs=None, iterations=7), g))
    assert len(batches) == 7


@needs_mnist
def test_divergence_is_recorded_not_raised():
    from clrepro.report.results import run_rows

    exp = small("ewc", {"lam": 1e9, "fisher": "sampled"}).with_(train={"lr": 1.0})  # λ·lr far past stability
    result = run(exp, seed=0)
    assert result.diverged_at is not None and not np.isnan(result.accuracy[-1]).any()
    rows = run_rows(result)
    assert (rows["kind"] == "diverged").sum() == 1


@needs_mnist
def test_only_the_cells_the_metrics_read_are_evaluated_unless_the_full_matrix_is_asked_for():
    exp = small("finetune", {}).with_(benchmark={"n_tasks": 4})
    default, full = run(exp, seed=0), run(exp.with_(train={"full_matrix": True}), seed=0)
    upper = np.triu_indices(4, k=2)  # R[t, i > t+1]: read by no metric
    assert np.isnan(default.accuracy[upper]).all() and not np.isnan(full.accuracy).any()
    evaluated = ~np.isnan(default.accuracy)
    assert evaluated.sum() == 4 * 4 - len(upper[0])
    assert np.array_equal(default.accuracy[evaluated], full.accuracy[evaluated])  # same code per cell
    assert np.array_equal(default.initial, full.initial) and not np.isnan(default.initial).any()
    assert exp.to_json() == exp.with_(train={"full_matrix": False}).to_json()  # the default is not written


@needs_mnist
def test_class_il_runs_also_score_each_task_within_its_own_units():
    result = run(small("finetune", {}, scenario="class"), seed=0)
    til = result.task_il_accuracy
    assert til is not None and til.shape == result.accuracy.shape
    assert np.array_equal(np.isnan(til), np.isnan(result.accuracy))
    # restricting the argmax to a set that holds the true unit can only turn errors into hits
    evaluated = ~np.isnan(til)
    assert np.all(til[evaluated] >= result.accuracy[evaluated])
    assert til[-1, 0] > result.accuracy[-1, 0] + 20  # fine-tuning forgets task 1 in Class-IL, not within its units
    assert result.task_il_initial is not None and result.task_il_initial.shape == result.initial.shape
    assert run(small("finetune", {}), seed=0).task_il_accuracy is None  # Task-IL run: nothing to add
