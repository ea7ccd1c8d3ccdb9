from dataclasses import dataclass

import pytest

from clrepro.config import BenchmarkConfig, ConfigError, ModelConfig, TrainConfig
from clrepro.experiment import Experiment
from clrepro.methods import _REGISTRY, Method
from clrepro.run.profiles import get_profile, resolve_device

PMNIST = BenchmarkConfig("permuted_mnist", "domain", n_tasks=3)


def test_unknown_method_names_parameter():
    with pytest.raises(ConfigError, match="method: unknown 'ewcc'"):
        Experiment("ewc/x", PMNIST, "ewcc")


def test_negative_lambda():
    with pytest.raises(ConfigError, match="method_params.lam"):
        Experiment("ewc/x", PMNIST, "ewc", {"lam": -1.0})


def test_unknown_method_parameter():
    with pytest.raises(ConfigError, match="method_params.lambda_"):
        Experiment("ewc/x", PMNIST, "ewc", {"lambda_": 1.0})


def test_zero_tasks():
    with pytest.raises(ConfigError, match="benchmark.n_tasks"):
        BenchmarkConfig("permuted_mnist", "domain", n_tasks=0)


def test_unknown_benchmark_and_scenario():
    with pytest.raises(ConfigError, match="benchmark.name"):
        BenchmarkConfig("cifar", "domain")
    with pytest.raises(ConfigError, match="benchmark.scenario"):
        BenchmarkConfig("split_mnist", "instance")


def test_unsupported_scenario(monkeypatch):
    @dataclass(frozen=True)
    class P:
        pass

    class TaskOnly(Method):
        name = "task_only"
        scenarios = frozenset({"task"})
        Params = P

    monkeypatch.setitem(_REGISTRY, "task_only", TaskOnly)
    with pytest.raises(ConfigError, match="does not support the 'class' scenario"):
        Experiment("x/y", BenchmarkConfig("split_mnist", "class"), "task_only")
    Experiment("x/y", BenchmarkConfig("split_mnist", "task"), "task_only")


def test_unknown_profile_and_device():
    with pytest.raises(ConfigError, match="profile: unknown 'fast'"):
        get_profile("fast")
    with pytest.raises(ConfigError, match="device"):
        resolve_device("tpu")


def test_training_and_model_validation():
    with pytest.raises(ConfigError, match="train.lr"):
        TrainConfig(lr=0)
    with pytest.raises(ConfigError, match="train.epochs"):
        TrainConfig(epochs=None, iterations=None)
    with pytest.raises(ConfigError, match="model.dropout_hidden"):
        ModelConfig(dropout_hidden=1.0)
    with pytest.raises(ConfigError, match="experiment.name"):
        Experiment("noslash", PMNIST, "finetune")


def test_profile_shrinks_sizes_only():
    exp = Experiment("ewc/x", PMNIST, "ewc", {"lam": 10.0}, train=TrainConfig(epochs=20, eval_every=1))
    smoke = get_profile("smoke").apply(exp)
    assert smoke.train.epochs == 1 and smoke.benchmark.train_per_task == 300
    assert smoke.method_params == exp.method_params and smoke.train.lr == exp.train.lr
    assert get_profile("paper").apply(exp) == exp


def test_with_merges_nested_changes():
    exp = Experiment("ewc/x", PMNIST, "ewc", {"lam": 10.0})
    changed = exp.with_(train={"lr": 0.5}, method_params={"gamma": 0.9})
    assert changed.train.lr == 0.5 and changed.method_params == {"lam": 10.0, "gamma": 0.9}


def test_to_json_omits_defaults_so_new_fields_do_not_change_it():
    exp = Experiment("ewc/x", PMNIST, "ewc", {"lam": 1.0})
    text = exp.to_json()
    assert "dropout_input" not in text and '"n_tasks": 3' in text
    assert exp.with_(model={"dropout_input": 0.2}).to_json() != text


# Non-finite numbers and wrong types: refused before anything trains, naming the parameter.

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("method, params, name", [
    ("ewc", {"lam": NAN}, "lam"), ("online_ewc", {"lam": INF}, "lam"), ("lwf", {"lam_o": NAN}, "lam_o"),
    ("der", {"alpha": -INF}, "alpha"), ("derpp", {"beta": NAN}, "beta"), ("ewc", {"gamma": NAN}, "gamma"),
    ("sharpening", {"hidden_lr": INF}, "hidden_lr"), ("ogd", {"tolerance": NAN}, "tolerance"),
])
def test_non_finite_method_parameters_are_refused(method, params, name):
    with pytest.raises(ConfigError, match=rf"method_params\.{name}: must be a finite number"):
        Experiment("x/y", PMNIST, method, params)


@pytest.mark.parametrize("kwargs, name", [
    ({"lr": NAN}, "lr"), ({"lr": INF}, "lr"), ({"weight_decay": NAN}, "weight_decay"), ({"momentum": INF}, "momentum"),
])
def test_non_finite_training_parameters_are_refused(kwargs, name):
    with pytest.raises(ConfigError, match=rf"train\.{name}: must be a finite number"):
        TrainConfig(**kwargs)


@pytest.mark.parametrize("build, message", [
    (lambda: TrainConfig(lr="0.01"), r"train\.lr: must be a number, got '0.01'"),
    (lambda: TrainConfig(batch_size=1.5), r"train\.batch_size: must be an integer"),
    (lambda: TrainConfig(epochs=2.5), r"train\.epochs: must be an integer or None, got 2.5"),
    (lambda: TrainConfig(momentum=True), r"train\.momentum: must be a number, got True"),
    (lambda: TrainConfig(reset_optimizer="no"), r"train\.reset_optimizer: must be true or false"),
    (lambda: ModelConfig(hidden=100), r"model\.hidden: must be a tuple of integers, got 100"),
    (lambda: ModelConfig(hidden=(100, 2.5)), r"model\.hidden: every element must be an integer"),
    (lambda: ModelConfig(dropout_input=NAN), r"model\.dropout_input: must be a finite number"),
    (lambda: BenchmarkConfig("permuted_mnist", "domain", n_tasks=2.0), r"benchmark\.n_tasks: must be an integer"),
    (lambda: BenchmarkConfig("rotated_mnist", "domain", n_tasks=2, angles=(0.0, NAN)),
     r"benchmark\.angles: every element must be a finite number"),
    (lambda: Experiment("x/y", PMNIST, "ewc", {"lam": "1"}), r"method_params\.lam: must be a number"),
    (lambda: Experiment("x/y", PMNIST, "er", {"buffer_size": 200.5}), r"method_params\.buffer_size: must be an int"),
    (lambda: Experiment("x/y", PMNIST, "lwf", {"t2_scaling": 1}), r"method_params\.t2_scaling: must be true or false"),
])
def test_wrong_types_are_refused_naming_the_parameter(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_numbers_of_other_numeric_types_are_accepted():
    import numpy as np

    TrainConfig(lr=1, batch_size=np.int64(32), momentum=np.float32(0.9))
    Experiment("x/y", PMNIST, "ewc", {"lam": np.float64(10.0), "fisher_samples": None})
    BenchmarkConfig("rotated_mnist", "domain", n_tasks=2, angles=(0, 45.0))
