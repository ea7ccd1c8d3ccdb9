"""The published setups our replication rows run: one sourced table, ``setups.csv`` next to this file.

One row per paper, benchmark, method, variant and buffer size (and scenario where a setup differs
between scenarios; blank = every scenario): the schedule (lr, batch size, epochs or iterations,
optimizer and its options), the network, the method's parameters in this package's names (JSON)
and the benchmark's (JSON: number of tasks, rotation interpolation, ...), with where each value
comes from — ``tag`` ([P] the paper, [C] the authors' code, [R] re-printed by a later paper, [?]
not stated anywhere we found: our choice, said in ``note``) and ``source`` (the paper's table, or
repository, file and commit). A blank cell means "the package's default": fields the source does
not state are blank and their choice is the notebook's, said in the note.

``init`` is the network's initialisation, which no paper states: the ``der`` and ``tricks`` rows
use ``xavier``, the authors' backbone (aimagelab/mammoth ``backbone/MNISTMLP.py`` and
``MNISTMLP_PNN.py`` → ``backbone/__init__.py`` ``xavier``, @7ab9db9; hastings24/rethinking_er, the
same files, @d32707b); the other papers' code (van de Ven & Tolias, Hsu et al., GPM) keeps
PyTorch's default, as blank rows do.

The notebooks build their experiments from it:

    experiment("replay/der_smnist_cil", "der", "split_mnist", "der", "class", buffer_size=200)

and ``tests/report/test_setups.py`` checks the entries of issue 16 §2 against it. The published
*numbers* live elsewhere (``paper_numbers.csv``, ``clrepro.report.paper``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from clrepro.config import BenchmarkConfig, ConfigError, ModelConfig, TrainConfig
from clrepro.experiment import Experiment
from clrepro.methods import method_class

SETUPS = Path(__file__).with_name("setups.csv")
KEY = ["paper", "benchmark", "scenario", "method", "variant", "buffer_size"]
TRAIN_FIELDS = ["lr", "batch_size", "epochs", "iterations", "optimizer", "momentum", "weight_decay", "reset_optimizer"]
MODEL_FIELDS = ["hidden", "bias", "dropout_input", "dropout_hidden", "init"]
COLUMNS = [*KEY, *TRAIN_FIELDS, *MODEL_FIELDS, "method_params", "benchmark_params", "tag", "source", "note"]
TAGS = ("[P]", "[C]", "[R]", "[?]")
BUFFER_METHODS = ("er", "der", "derpp", "agem")  # their setups differ per buffer size


@dataclass(frozen=True)
class Setup:
    """One published setup, as configs of this package."""

    paper: str
    benchmark: str
    scenario: str | None  # None: the same setup in every scenario
    method: str
    variant: str
    buffer_size: int | None
    train: TrainConfig
    model: ModelConfig
    method_params: dict[str, Any] = field(default_factory=dict)
    benchmark_params: dict[str, Any] = field(default_factory=dict)
    tag: str = ""
    source: str = ""
    note: str = ""

    def experiment(self, name: str, scenario: str | None = None, **benchmark: Any) -> Experiment:
        """The experiment `name` running this setup (in `scenario`, required when the setup is
        shared by several); `benchmark` overrides or adds benchmark fields (e.g. validation=True)."""
        scenario = scenario or self.scenario
        if scenario is None:
            raise ConfigError(f"experiment.benchmark.scenario: the {self.paper} {self.method} setup on "
                              f"{self.benchmark} is shared by every scenario: name one")
        if self.scenario is not None and scenario != self.scenario:
            raise ConfigError(f"experiment.benchmark.scenario: this setup is for {self.scenario!r}, not {scenario!r}")
        params = dict(self.method_params)
        if self.buffer_size is not None:
            params = {"buffer_size": self.buffer_size, **params}
        bench = BenchmarkConfig(self.benchmark, scenario, **{**self.benchmark_params, **benchmark})
        return Experiment(name, bench, self.method, params, self.model, self.train)


def _blank(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def _number(value: Any, kind: type) -> Any:
    return None if _blank(value) else kind(float(value)) if kind is int else kind(value)


def _bool(value: Any) -> bool | None:
    if _blank(value):
        return None
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise ValueError(f"expected true or false, got {value!r}")
    return text == "true"


def _row_to_setup(row: dict[str, Any]) -> Setup:
    train_types = {"lr": float, "batch_size": int, "epochs": int, "iterations": int, "optimizer": str,
                   "momentum": float, "weight_decay": float}
    train = {k: _number(row[k], t) for k, t in train_types.items()}
    train["reset_optimizer"] = _bool(row["reset_optimizer"])
    train = {k: v for k, v in train.items() if v is not None}
    if "iterations" in train:
        train.setdefault("epochs", None)
    model: dict[str, Any] = {}
    if not _blank(row["hidden"]):
        model["hidden"] = tuple(int(w) for w in str(row["hidden"]).split("-"))
    if (bias := _bool(row["bias"])) is not None:
        model["bias"] = bias
    for k in ("dropout_input", "dropout_hidden"):
        if not _blank(row[k]):
            model[k] = float(row[k])
    if not _blank(row["init"]):
        model["init"] = row["init"]
    return Setup(
        paper=row["paper"], benchmark=row["benchmark"],
        scenario=None if _blank(row["scenario"]) else row["scenario"], method=row["method"],
        variant="" if _blank(row["variant"]) else row["variant"],
        buffer_size=_number(row["buffer_size"], int), train=TrainConfig(**train), model=ModelConfig(**model),
        method_params=json.loads(row["method_params"]) if not _blank(row["method_params"]) else {},
        benchmark_params=json.loads(row["benchmark_params"]) if not _blank(row["benchmark_params"]) else {},
        tag=row["tag"], source=row["source"], note="" if _blank(row["note"]) else row["note"],
    )


def load_setups(path: str | Path = SETUPS) -> list[Setup]:
    """Every setup of the table, each checked by building its experiment (so a typo in a
    parameter name or value fails here, naming the row)."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = set(COLUMNS) - set(table.columns)
    if missing:
        raise ValueError(f"{path} lacks columns {sorted(missing)}")
    setups, seen = [], set()
    for i, row in enumerate(table.to_dict("records"), start=2):
        where = f"{Path(path).name} line {i} ({row['paper']} {row['benchmark']} {row['method']})"
        try:
            setup = _row_to_setup(row)
            for scenario in [setup.scenario] if setup.scenario else sorted(method_class(setup.method).scenarios):
                setup.experiment(f"{setup.paper}/check", scenario)
        except (ConfigError, ValueError, TypeError) as error:
            raise ValueError(f"{where}: {error}") from error
        if not any(tag in setup.tag for tag in TAGS) or _blank(setup.source):
            raise ValueError(f"{where}: every setup needs a tag {TAGS} and a source")
        key = (setup.paper, setup.benchmark, setup.scenario, setup.method, setup.variant, setup.buffer_size)
        if key in seen:
            raise ValueError(f"{where}: duplicate setup {key}")
        seen.add(key)
        setups.append(setup)
    return setups


def setup(paper: str, benchmark: str, method: str, scenario: str | None = None, buffer_size: int | None = None,
          variant: str = "", path: str | Path = SETUPS) -> Setup:
    """The published setup of a method (the scenario's own row if there is one, else the shared one)."""
    matches = [s for s in load_setups(path) if (s.paper, s.benchmark, s.method, s.variant, s.buffer_size)
               == (paper, benchmark, method, variant, buffer_size)]
    own = [s for s in matches if s.scenario == scenario and scenario is not None]
    shared = [s for s in matches if s.scenario is None]
    found = own or shared
    if not found:
        raise KeyError(f"no setup for paper={paper!r} benchmark={benchmark!r} method={method!r} "
                       f"scenario={scenario!r} buffer_size={buffer_size!r} variant={variant!r} in {Path(path).name}")
    return found[0]


def experiment(name: str, paper: str, benchmark: str, method: str, scenario: str | None = None,
               buffer_size: int | None = None, variant: str = "", **benchmark_fields: Any) -> Experiment:
    """The experiment `name` running a published setup (see `setup`)."""
    found = setup(paper, benchmark, method, scenario, buffer_size, variant)
    return found.experiment(name, scenario, **benchmark_fields)


def setups_table(path: str | Path = SETUPS) -> pd.DataFrame:
    """The table as printed in the notebooks: one row per setup, its provenance beside it."""
    records = []
    for s in load_setups(path):
        train = {f.name: getattr(s.train, f.name) for f in fields(TrainConfig)
                 if f.name in TRAIN_FIELDS and getattr(s.train, f.name) is not None}
        records.append({"paper": s.paper, "benchmark": s.benchmark, "scenario": s.scenario or "all",
                        "method": s.method + (f" ({s.variant})" if s.variant else ""),
                        "buffer": s.buffer_size, **train, "hidden": "-".join(map(str, s.model.hidden)),
                        "init": s.model.init,
                        "params": json.dumps(s.method_params, sort_keys=True), "tag": s.tag, "source": s.source})
    return pd.DataFrame.from_records(records)
