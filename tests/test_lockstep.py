"""Seeds in lockstep agree with the one-seed runs of the same seeds.

Tolerances (stated here and in clrepro.lockstep's docstring): the two paths sum the same
products in a different order (batched vs plain matmul), so
- parameters after a few steps of every task agree to 1e-5 (absolute);
- smoke-size accuracy matrices (200 test examples per task) agree to 1 percentage point, i.e.
  at most two test predictions per cell flip (observed: 0 for R, 0.5 for one Task-IL cell).
Each path on its own is bit-identical across repeats.
"""

import numpy as np
import pytest
import torch

from clrepro.config import BenchmarkConfig, ModelConfig, TrainConfig
from clrepro.data.datasets import find_dataset_root
from clrepro.experiment import Experiment
from clrepro.lockstep import lockstep_supported, run_lockstep
from clrepro.train import run

needs_mnist = pytest.mark.skipif(find_dataset_root("mnist") is None, reason="run `make data` first")

PARAMETER_ATOL = 1e-5
ACCURACY_TOL = 1.0  # percentage points
SEEDS = [0, 1, 2]

CASES = {
    "finetune": ({}, "task", {}),
    "finetune-adam": ({}, "domain", {"optimizer": "adam", "lr": 1e-3, "reset_optimizer": False}),
    "l2": ({"lam": 1.0}, "class", {}),
    "ewc": ({"lam": 50.0, "fisher": "sampled", "fisher_samples": 100}, "task", {}),
    "online_ewc": ({"lam": 90.0, "fisher": "weighted_empirical"}, "class", {"momentum": 0.9}),
    "er": ({"buffer_size": 50, "minibatch_size": 10}, "class", {}),
    "er-bic": ({"buffer_size": 50, "minibatch_size": 10, "sampling": "balanced", "bias_control": True,
                "bic_epochs": 2}, "task", {}),
    "der": ({"buffer_size": 50, "minibatch_size": 10, "alpha": 0.5}, "class", {}),
    "derpp": ({"buffer_size": 50, "minibatch_size": 16, "alpha": 0.5, "beta": 0.5}, "task", {}),
    "agem": ({"buffer_size": 60, "ref_batch": 16}, "class", {}),
    "lwf": ({"lam_o": 1.0, "temperature": 2.0}, "task", {}),
    "lwf-vandeven": ({"distil_units": "seen", "pad_teacher": True, "reduction": "batch_classes", "form": "ce",
                      "weighting": "relative", "ce_units": "seen"}, "class",
                     {"optimizer": "adam", "lr": 1e-3, "reset_optimizer": False}),
}


def experiment(case: str, benchmark="split_mnist", **train) -> Experiment:
    params, scenario, extra = CASES[case]
    return Experiment(
        "test/lockstep", BenchmarkConfig(benchmark, scenario, n_tasks=3, train_per_task=300, test_per_task=200),
        case.split("-")[0], params, ModelConfig(hidden=(32, 32)),
        TrainConfig(**{"lr": 0.05, "batch_size": 10, "epochs": 1, **extra, **train}),
    )


def snapshots(runner) -> list[list[torch.Tensor]]:
    """The weights after every task's end_task hook, in call order (task-major, then seed)."""
    taken: list[list[torch.Tensor]] = []
    runner(lambda t, method: taken.append([p.detach().clone() for p in method.model.parameters()]))
    return taken


@needs_mnist
@pytest.mark.parametrize("case", ["finetune", "finetune-adam", "ewc", "online_ewc", "der", "derpp", "er", "agem",
                                  "lwf", "lwf-vandeven"])
def test_parameters_agree_with_one_seed_runs_after_the_first_steps(case):
    exp = experiment(case, epochs=None, iterations=5)
    lock = snapshots(lambda hook: run_lockstep(exp, SEEDS, after_task=hook))
    single = snapshots(lambda hook: [run(exp, seed, after_task=hook) for seed in SEEDS])
    # one-seed runs come seed-major; lockstep task-major
    single = [single[s * 3 + t] for t in range(3) for s in range(len(SEEDS))]
    assert len(lock) == len(single) == 3 * len(SEEDS)
    for a, b in zip(lock, single, strict=True):
        for p, q in zip(a, b, strict=True):
            torch.testing.assert_close(p, q, atol=PARAMETER_ATOL, rtol=0)


@needs_mnist
@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_accuracy_matrices_agree_with_one_seed_runs(case):
    exp = experiment(case)
    assert lockstep_supported(exp)
    lock = run_lockstep(exp, SEEDS)
    for seed, result in zip(SEEDS, lock, strict=True):
        single = run(exp, seed)
        assert result.seed == seed
        np.testing.assert_array_equal(result.initial, single.initial)  # untrained: the very same weights
        np.testing.assert_array_equal(np.isnan(result.accuracy), np.isnan(single.accuracy))
        np.testing.assert_allclose(result.accuracy, single.accuracy, atol=ACCURACY_TOL, rtol=0)
        if single.task_il_accuracy is None:
            assert result.task_il_accuracy is None
        else:
            np.testing.assert_allclose(result.task_il_accuracy, single.task_il_accuracy, atol=ACCURACY_TOL, rtol=0)


@needs_mnist
def test_lockstep_is_deterministic_and_seeds_differ():
    exp = experiment("derpp")
    a, b = run_lockstep(exp, SEEDS), run_lockstep(exp, SEEDS)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.accuracy, y.accuracy, equal_nan=True) and np.array_equal(x.initial, y.initial)
    assert not np.array_equal(a[0].accuracy, a[1].accuracy, equal_nan=True)


@needs_mnist
def test_divergence_is_recorded_per_seed():
    exp = experiment("ewc").with_(method_params={"lam": 1e9, "fisher": "sampled"}, train={"lr": 1.0})
    for lock, seed in zip(run_lockstep(exp, SEEDS[:2]), SEEDS[:2], strict=True):
        single = run(exp, seed)
        assert lock.diverged_at == single.diverged_at is not None
        np.testing.assert_array_equal(np.isnan(lock.accuracy), np.isnan(single.accuracy))


def test_what_runs_in_lockstep():
    assert lockstep_supported(experiment("der"))
    assert not lockstep_supported(experiment("finetune").with_(model=ModelConfig(dropout_hidden=0.5)))
    assert not lockstep_supported(experiment("er").with_(method_params={"sampling": "loss_aware"}))
    assert not lockstep_supported(experiment("er").with_(method_params={"lr_decay": 0.999}))
    assert not lockstep_supported(experiment("finetune").with_(method="pnn", method_params={}))
    assert not lockstep_supported(experiment("lwf").with_(method_params={"warmup_steps": 10}))


@needs_mnist
def test_unsupported_methods_fall_back_to_one_seed_runs():
    exp = experiment("finetune").with_(method="sharpening", method_params={"form": "loss"})
    assert not lockstep_supported(exp)
    for lock, seed in zip(run_lockstep(exp, SEEDS[:2]), SEEDS[:2], strict=True):
        assert np.array_equal(lock.accuracy, run(exp, seed).accuracy, equal_nan=True)


@needs_mnist
@pytest.mark.parametrize("case", ["online_ewc", "derpp", "agem"])
def test_a_seed_trains_the_same_whichever_seeds_share_its_batch(case):
    """Seed 0's weights are bit-identical in lockstep with seeds [0, 1, 2] and with [0, 5]: the
    batched matmuls and per-seed losses never mix seeds, so a lockstep run is reproducible per seed."""
    exp = experiment(case, epochs=None, iterations=20)
    three = snapshots(lambda hook: run_lockstep(exp, [0, 1, 2], after_task=hook))
    two = snapshots(lambda hook: run_lockstep(exp, [0, 5], after_task=hook))
    for t in range(3):
        assert all(torch.equal(p, q) for p, q in zip(three[3 * t], two[2 * t], strict=True))


@needs_mnist
def test_learning_curves_are_recorded_as_in_one_seed_runs():
    exp = experiment("l2", epochs=2, eval_every=1)
    for lock, seed in zip(run_lockstep(exp, SEEDS[:2]), SEEDS[:2], strict=True):
        single = run(exp, seed)
        assert [c[:3] for c in lock.curves] == [c[:3] for c in single.curves]
        np.testing.assert_allclose([c[3] for c in lock.curves], [c[3] for c in single.curves], atol=ACCURACY_TOL)



@needs_mnist
def test_xavier_initialised_seeds_agree_with_one_seed_runs():
    """ModelConfig.init is applied where each seed's model is built, in train.run's order."""
    exp = experiment("der", epochs=None, iterations=5)
    exp = Experiment(exp.name, exp.benchmark, exp.method, exp.method_params,
                     ModelConfig(hidden=(32, 32), init="xavier"), exp.train)
    lock = snapshots(lambda hook: run_lockstep(exp, SEEDS, after_task=hook))
    single = snapshots(lambda hook: [run(exp, seed, after_task=hook) for seed in SEEDS])
    single = [single[s * 3 + t] for t in range(3) for s in range(len(SEEDS))]
    for a, b in zip(lock, single, strict=True):
        for p, q in zip(a, b, strict=True):
            torch.testing.assert_close(p, q, atol=PARAMETER_ATOL, rtol=0)
