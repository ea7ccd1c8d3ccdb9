"""An experiment: one method with its hyper-parameters on one benchmark, model and schedule.

One mechanism for every notebook and the command line. The benchmark, model and schedule are
checked by their own dataclasses (clrepro.config); the method's hyper-parameters by the method
(clrepro.methods). This module sits above both, so the dependencies point one way:
config ← methods ← experiment.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from typing import Any

from clrepro.config import BenchmarkConfig, ModelConfig, TrainConfig, _require
from clrepro.methods import method_class, validate_params


@dataclass(frozen=True)
class Experiment:
    """One cell of a results table: a method on a benchmark, run over several seeds.

    name: globally unique, '<notebook>/<experiment>' (e.g. 'ewc/fig3a'); results and paper
    numbers are matched on it.
    """

    name: str
    benchmark: BenchmarkConfig
    method: str
    method_params: dict[str, Any] = field(default_factory=dict)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        _require("/" in self.name, "experiment.name", f"use '<notebook>/<experiment>', got {self.name!r}")
        cls = method_class(self.method)
        _require(
            self.benchmark.scenario in cls.scenarios,
            "experiment.method",
            f"{self.method} does not support the {self.benchmark.scenario!r} scenario "
            f"(supports {sorted(cls.scenarios)})",
        )
        validate_params(self.method, self.method_params)
        images = self.benchmark.name == "seq_cifar10"  # 3×32×32 inputs need the convolutional net
        _require(images == (self.model.kind == "resnet18"), "model.kind",
                 f"{self.benchmark.name} needs {'resnet18' if images else 'mlp'}, got {self.model.kind!r}")

    def with_(self, **changes: Any) -> Experiment:
        """A copy with some fields replaced; nested configs may be given as dicts of changes."""
        for key in ("benchmark", "model", "train"):
            if isinstance(changes.get(key), dict):
                changes[key] = replace(getattr(self, key), **changes[key])
        if "method_params" in changes and "method" not in changes:
            changes["method_params"] = {**self.method_params, **changes["method_params"]}
        return replace(self, **changes)

    def to_json(self) -> str:
        """Stable description (fields left at their defaults are omitted, so adding a field
        with a default later does not change the description of existing experiments)."""
        return json.dumps(_non_default(self), sort_keys=True, default=str)

    def params_label(self) -> str:
        """Compact, stable description of the method's hyper-parameters."""
        return json.dumps(self.method_params, sort_keys=True, default=str)


def _non_default(value: Any) -> Any:
    if not is_dataclass(value):
        return value
    out = {}
    for f in fields(value):
        v = getattr(value, f.name)
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else MISSING)
        if default is MISSING or v != default:
            out[f.name] = _non_default(v)
    return out
