"""Experiment configuration: plain dataclasses, validated on construction.

The parts of an experiment (clrepro.experiment.Experiment): the benchmark, the model and the
training schedule. Everything here is checked on construction, before anything trains, and
every error names the offending parameter. This module imports nothing of the package, so
every other module (the methods included) may depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BENCHMARKS = ("permuted_mnist", "rotated_mnist", "split_mnist", "split_fashion_mnist", "seq_cifar10")
SPLIT_BENCHMARKS = ("split_mnist", "split_fashion_mnist", "seq_cifar10")  # 5 tasks of 2 classes
MODELS = ("mlp", "resnet18")
SCENARIOS = ("task", "domain", "class")
OPTIMIZERS = ("sgd", "adam")
ACTIVATIONS = ("relu", "sigmoid", "tanh")
INTERPOLATIONS = ("bilinear", "nearest")  # rotated_mnist's resampling

Scenario = Literal["task", "domain", "class"]


class ConfigError(ValueError):
    """A parameter has an invalid value; the message names the parameter."""


def _require(condition: bool, parameter: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{parameter}: {message}")


@dataclass(frozen=True)
class BenchmarkConfig:
    """A stream of tasks built from MNIST, Fashion-MNIST or CIFAR-10 (seq_cifar10: the DER
    paper's Seq-CIFAR-10, 32×32 colour images, augmented by random crop and flip in training).

    scenario: 'task' (task id given: per-task output units, masked), 'domain' (one shared
    head, task id not given) or 'class' (one head over all classes seen so far).
    validation: hold out 10% of each task's training set and evaluate on it instead of the
    test set (for hyper-parameter selection).
    train_per_task / test_per_task: optional subsampling (profiles use it; None = all).
    """

    name: str
    scenario: Scenario
    n_tasks: int = 5
    first_task_permuted: bool = True  # permuted_mnist: is task 1 permuted as well?
    angles: tuple[float, ...] | None = None  # rotated_mnist: None draws uniformly in [0, 180)
    interpolation: str = "bilinear"  # rotated_mnist: how rotated pixels are resampled (the DER code: nearest)
    validation: bool = False
    train_per_task: int | None = None
    test_per_task: int | None = None

    def __post_init__(self) -> None:
        _require(self.name in BENCHMARKS, "benchmark.name", f"unknown {self.name!r}; one of {BENCHMARKS}")
        _require(self.scenario in SCENARIOS, "benchmark.scenario", f"unknown {self.scenario!r}; one of {SCENARIOS}")
        _require(self.n_tasks >= 1, "benchmark.n_tasks", f"must be at least 1, got {self.n_tasks}")
        if self.name in SPLIT_BENCHMARKS:
            _require(self.n_tasks <= 5, "benchmark.n_tasks", "split benchmarks have at most 5 tasks of 2 classes")
        if self.angles is not None:
            _require(self.name == "rotated_mnist", "benchmark.angles", "only rotated_mnist takes angles")
            _require(len(self.angles) == self.n_tasks, "benchmark.angles",
                     f"needs {self.n_tasks} angles, got {len(self.angles)}")
        _require(self.interpolation in INTERPOLATIONS, "benchmark.interpolation",
                 f"unknown {self.interpolation!r}; one of {INTERPOLATIONS}")
        if self.interpolation != "bilinear":
            _require(self.name == "rotated_mnist", "benchmark.interpolation", "only rotated_mnist rotates its images")
        for attr in ("train_per_task", "test_per_task"):
            value = getattr(self, attr)
            _require(value is None or value > 0, f"benchmark.{attr}", f"must be positive or None, got {value}")


@dataclass(frozen=True)
class ModelConfig:
    """The network; its output width follows from the benchmark and scenario.

    kind: 'mlp' (the fields below) or 'resnet18' (the CIFAR ResNet-18 of clrepro.models.resnet, for
    seq_cifar10; the MLP fields do not apply to it).
    """

    hidden: tuple[int, ...] = (100, 100)
    dropout_input: float = 0.0
    dropout_hidden: float = 0.0
    bias: bool = True
    activation: str = "relu"
    kind: str = "mlp"

    def __post_init__(self) -> None:
        _require(self.kind in MODELS, "model.kind", f"unknown {self.kind!r}; one of {MODELS}")
        _require(all(h > 0 for h in self.hidden), "model.hidden", f"widths must be positive, got {self.hidden}")
        _require(self.activation in ACTIVATIONS, "model.activation",
                 f"unknown {self.activation!r}; one of {ACTIVATIONS}")
        for attr in ("dropout_input", "dropout_hidden"):
            p = getattr(self, attr)
            _require(0.0 <= p < 1.0, f"model.{attr}", f"must be in [0, 1), got {p}")


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation schedule of one task (the same for every task).

    Give either epochs or iterations (steps per task, van de Ven's protocol).
    eval_every: evaluate every task after this many epochs to record learning curves
    (None: only after each task).
    """

    lr: float = 0.01
    batch_size: int = 128
    epochs: int | None = 1
    iterations: int | None = None
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    reset_optimizer: bool = True  # a fresh optimiser (and state) at every task
    eval_every: int | None = None

    def __post_init__(self) -> None:
        _require(self.lr > 0, "train.lr", f"must be positive, got {self.lr}")
        _require(self.batch_size >= 1, "train.batch_size", f"must be at least 1, got {self.batch_size}")
        _require((self.epochs is None) != (self.iterations is None), "train.epochs",
                 "give exactly one of epochs and iterations")
        for attr in ("epochs", "iterations", "eval_every"):
            value = getattr(self, attr)
            _require(value is None or value >= 1, f"train.{attr}", f"must be at least 1 or None, got {value}")
        _require(self.optimizer in OPTIMIZERS, "train.optimizer", f"unknown {self.optimizer!r}; one of {OPTIMIZERS}")
        _require(self.momentum >= 0, "train.momentum", f"must be >= 0, got {self.momentum}")
        _require(self.weight_decay >= 0, "train.weight_decay", f"must be >= 0, got {self.weight_decay}")
