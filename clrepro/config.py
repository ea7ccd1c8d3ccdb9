"""Experiment configuration: plain dataclasses, validated on construction.

The parts of an experiment (clrepro.experiment.Experiment): the benchmark, the model and the
training schedule. Everything here is checked on construction, before anything trains, and
every error names the offending parameter. This module imports nothing of the package, so
every other module (the methods included) may depend on it.
"""

from __future__ import annotations

import functools
import math
import numbers
import types
import typing
from dataclasses import dataclass, fields
from typing import Any, Literal

BENCHMARKS = ("permuted_mnist", "rotated_mnist", "split_mnist", "split_fashion_mnist", "seq_cifar10")
SPLIT_BENCHMARKS = ("split_mnist", "split_fashion_mnist", "seq_cifar10")  # 5 tasks of 2 classes
MODELS = ("mlp", "resnet18")
SCENARIOS = ("task", "domain", "class")
OPTIMIZERS = ("sgd", "adam")
ACTIVATIONS = ("relu", "sigmoid", "tanh")
INTERPOLATIONS = ("bilinear", "nearest")  # rotated_mnist's resampling
INITS = ("default", "xavier")  # an MLP's initial weights (ModelConfig.init)

Scenario = Literal["task", "domain", "class"]


class ConfigError(ValueError):
    """A parameter has an invalid value; the message names the parameter."""


def _require(condition: bool, parameter: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{parameter}: {message}")


def check_types(cls: type, values: dict[str, Any], prefix: str) -> None:
    """Refuse values whose type does not match the dataclass annotation, and non-finite numbers.

    Runs before a dataclass's own range checks, so `lr="0.01"` is a ConfigError naming the
    parameter rather than a TypeError later, `epochs=2.5` is refused rather than run as 3, and
    NaN (which passes every `x < 0` test) never reaches training. Ints are accepted where floats
    are expected; bools are not numbers here."""
    hints = _hints(cls)
    for name, value in values.items():
        if name in hints:
            problem = _type_problem(value, hints[name])
            if problem:
                raise ConfigError(f"{prefix}{name}: {problem}, got {value!r}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_problem(value: Any, annotation: Any) -> str | None:
    """Why value does not fit annotation ("must be ..."), or None when it does; unknown
    annotations (Any, dicts, classes) pass."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if value is None and len(options) < len(args):
            return None
        problems = [_type_problem(value, a) for a in options]
        if any(p is None for p in problems):
            return None
        none = " or None" if len(options) < len(args) else ""
        if len(options) == 1:  # "every element must be ..." is about the contents: None is no remedy
            return problems[0] + (none if problems[0].startswith("must be") else "")
        return "must be " + " or ".join(_describe(a) for a in options) + none
    if origin is typing.Literal:
        return None if value in args else f"must be one of {list(args)}"
    if origin is tuple:
        if not isinstance(value, tuple):
            return f"must be {_describe(annotation)}"
        if len(args) == 2 and args[1] is Ellipsis:
            for element in value:
                if problem := _type_problem(element, args[0]):
                    return f"every element {problem}"
        return None
    if annotation is bool:
        # numpy's bool_ (from a comparison) is a bool in all but type.
        return None if isinstance(value, bool) or type(value).__name__ == "bool_" else "must be true or false"
    if annotation is int:
        return None if isinstance(value, numbers.Integral) and not isinstance(value, bool) else "must be an integer"
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return "must be a number"
        return None if math.isfinite(value) else "must be a finite number"
    if annotation is str:
        return None if isinstance(value, str) else "must be a string"
    return None


def _describe(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return "a tuple of " + {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(
            args[0], _describe(args[0]))
    if origin is typing.Literal:
        return f"one of {list(args)}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))


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
        check_types(BenchmarkConfig, {f.name: getattr(self, f.name) for f in fields(self)}, "benchmark.")
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
    init: the MLP's initial weights. 'default' is PyTorch's nn.Linear (weights and biases uniform
    in ±1/√fan_in); 'xavier' is the DER authors' backbone (weights uniform in
    ±√(6/(fan_in + fan_out)), biases 0: aimagelab/mammoth and hastings24/rethinking_er,
    backbone/__init__.py `xavier`): about twice the default initial weights on the DER MLPs.
    """

    hidden: tuple[int, ...] = (100, 100)
    dropout_input: float = 0.0
    dropout_hidden: float = 0.0
    bias: bool = True
    activation: str = "relu"
    kind: str = "mlp"
    init: str = "default"

    def __post_init__(self) -> None:
        check_types(ModelConfig, {f.name: getattr(self, f.name) for f in fields(self)}, "model.")
        _require(self.kind in MODELS, "model.kind", f"unknown {self.kind!r}; one of {MODELS}")
        _require(all(h > 0 for h in self.hidden), "model.hidden", f"widths must be positive, got {self.hidden}")
        _require(self.activation in ACTIVATIONS, "model.activation",
                 f"unknown {self.activation!r}; one of {ACTIVATIONS}")
        _require(self.init in INITS, "model.init", f"unknown {self.init!r}; one of {INITS}")
        _require(self.init == "default" or self.kind == "mlp", "model.init",
                 f"{self.init!r} applies to the MLP only, not to {self.kind!r}")
        for attr in ("dropout_input", "dropout_hidden"):
            p = getattr(self, attr)
            _require(0.0 <= p < 1.0, f"model.{attr}", f"must be in [0, 1), got {p}")


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation schedule of one task (the same for every task).

    Give either epochs or iterations (steps per task, van de Ven's protocol).
    eval_every: evaluate every task after this many epochs to record learning curves
    (None: only after each task).
    full_matrix: evaluate every task after every task (the whole accuracy matrix, e.g. for a heat
    map); by default only the cells the metrics read, R[t, i ≤ t+1].
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
    full_matrix: bool = False

    def __post_init__(self) -> None:
        check_types(TrainConfig, {f.name: getattr(self, f.name) for f in fields(self)}, "train.")
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
