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
    assert np.array_equal(a.accuracy, b.accuracy) and np.array_equal(a.initial, b.initial)
    c = run(small(), seed=4)
    assert not np.array_equal(a.accuracy, c.accuracy)


@needs_mnist
def test_accuracy_matrix_is_filled_and_learning_happens():
    result = run(small("finetune", {}), seed=0)
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
