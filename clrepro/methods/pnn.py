"""Progressive Neural Networks (Rusu et al. 2016), Task-IL.

A new column (an MLP of the model's widths, with its own head) per task; the columns of earlier
tasks are frozen. Layer i of column k sees its own layer i−1 and, through one adapter, layer
i−1 of every earlier column (the paper's Eq. 2, the "non-linear lateral connections"):

    h_i^(k) = f( W_i^(k) h_{i−1}^(k) + U_i^(k) σ( V_i^(k) α_i^(k) h_{i−1}^(<k) ) )

h_{i−1}^(<k) = [h_{i−1}^(1) … h_{i−1}^(k−1)] (concatenated), α a learned scalar initialised to a
small random value, V: (k−1)·n_{i−1} → n_{i−1} (with bias), σ = f, U: n_{i−1} → n_i (no bias:
W_i has one). The first layer has no lateral (its input, x, is shared); the output layer is
linear and gets laterals like any other. Earlier columns get no gradient (requires_grad False)
and no optimiser state, so nothing a task learned can change: zero forgetting by construction.

Variants (``variant``) give the paper's transfer baselines on the same code path:
    progressive     the PNN
    independent     baseline 1: a fresh column per task, no laterals
    head_only       baseline 2: the previous task's column copied and frozen, a new head trained
    finetune        baseline 3: the previous task's column copied, fully trained, a new head
    random_frozen   baseline 4: a random frozen column, and a new column with laterals from it
Each task keeps its own column, so no variant forgets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from clrepro.config import ConfigError
from clrepro.methods import register
from clrepro.methods.base import Method
from clrepro.models.mlp import xavier_init

VARIANTS = ("progressive", "independent", "head_only", "finetune", "random_frozen")


class Adapter(nn.Module):
    """x ↦ U σ(V (α x)): the lateral connection into one layer of one column."""

    def __init__(self, in_features: int, hidden: int, out_features: int, activation: type[nn.Module],
                 bias: bool, alpha_init: float) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.rand(()) * alpha_init)
        self.project = nn.Linear(in_features, hidden, bias=bias)  # V
        self.activation = activation()
        self.out = nn.Linear(hidden, out_features, bias=False)  # U

    def forward(self, anterior: torch.Tensor) -> torch.Tensor:
        return self.out(self.activation(self.project(self.alpha * anterior)))


class Column(nn.Module):
    """Hidden layers and a head; adapters into layers 2…L+1 from the columns in `sources`."""

    def __init__(self, in_features: int, widths: tuple[int, ...], n_out: int, sources: tuple[int, ...],
                 activation: type[nn.Module], bias: bool, alpha_init: float) -> None:
        super().__init__()
        dims = [in_features, *widths]
        self.sources = sources
        self.hidden = nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.head = nn.Linear(widths[-1], n_out, bias=bias)
        self.activation = activation()
        outs = [*widths[1:], n_out]  # layer i ≥ 1 reads width dims[i] and writes outs[i − 1]
        self.adapters = nn.ModuleList(
            Adapter(len(sources) * dims[i], dims[i], outs[i - 1], activation, bias, alpha_init)
            for i in range(1, len(widths) + 1)
        ) if sources else nn.ModuleList()

    def forward(self, x: torch.Tensor, anterior: list[list[torch.Tensor]]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """anterior[j][i]: hidden activation i of source column j. Returns (hiddens, logits)."""
        hiddens: list[torch.Tensor] = []
        h = x
        for i, layer in enumerate([*self.hidden, self.head]):
            pre = layer(h)
            if i >= 1 and self.sources:
                pre = pre + self.adapters[i - 1](torch.cat([a[i - 1] for a in anterior], dim=1))
            if i == len(self.hidden):
                return hiddens, pre
            h = self.activation(pre)
            hiddens.append(h)
        raise AssertionError("unreachable")

    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())


class ProgressiveNet(nn.Module):
    """Columns of one MLP shape; `task_column` routes a task id to the column that serves it."""

    def __init__(self, in_features: int, widths: tuple[int, ...], activation: type[nn.Module], bias: bool = True,
                 alpha_init: float = 0.1, init: str = "default") -> None:
        super().__init__()
        self.in_features, self.widths, self.activation = in_features, tuple(widths), activation
        self.bias, self.alpha_init, self.init = bias, alpha_init, init
        self.columns = nn.ModuleList()
        self.task_column: dict[int, int] = {}

    @classmethod
    def like(cls, mlp: nn.Module, alpha_init: float = 0.1) -> ProgressiveNet:
        """Widths, nonlinearity and bias from an MLP's Linear layers (the last one is its head), and
        its initialisation (ModelConfig.init, for every new column and adapter)."""
        linears = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
        if any(isinstance(m, nn.Dropout) for m in mlp.modules()):
            raise ConfigError("model.dropout_input: pnn does not support dropout (frozen columns must not change)")
        activations = [type(m) for m in mlp.modules() if type(m) in (nn.ReLU, nn.Sigmoid, nn.Tanh)]
        widths = tuple(m.out_features for m in linears[:-1])
        return cls(linears[0].in_features, widths, activations[0], linears[0].bias is not None, alpha_init,
                   getattr(mlp, "init", "default"))

    def add_column(self, n_out: int, sources: tuple[int, ...] = (), task: int | None = None) -> Column:
        column = Column(self.in_features, self.widths, n_out, tuple(sources), self.activation, self.bias,
                        self.alpha_init)
        if self.init == "xavier":  # as the DER authors' PNN backbone does for its layers and adaptors
            column.apply(xavier_init)
        device = next(self.parameters()).device if len(self.columns) else None
        self.columns.append(column.to(device) if device is not None else column)
        if task is not None:
            self.task_column[task] = len(self.columns) - 1
        return column

    def freeze(self, index: int) -> None:
        for p in self.columns[index].parameters():
            p.requires_grad_(False)
            p.grad = None  # a stale gradient would look like one that reached the frozen column

    def column_for(self, task: int) -> int:
        if task not in self.task_column:
            raise KeyError(f"no column for task {task}: columns serve tasks {sorted(self.task_column)}")
        return self.task_column[task]

    def forward(self, x: torch.Tensor, task: int) -> torch.Tensor:
        return self.run_column(x, self.column_for(task))[1]

    def run_column(self, x: torch.Tensor, index: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Run column `index` and, first, every column it reads from (directly or not)."""
        needed, stack = set(), [index]
        while stack:
            c = stack.pop()
            if c not in needed:
                needed.add(c)
                stack.extend(self.columns[c].sources)
        hiddens: dict[int, list[torch.Tensor]] = {}
        for c in sorted(needed):  # sources always have smaller indices
            column = self.columns[c]
            # A column without trainable parameters needs no graph: laterals reading it still get one.
            with torch.set_grad_enabled(torch.is_grad_enabled() and column.trainable()):
                hiddens[c], out = column(x, [hiddens[s] for s in column.sources])
        return hiddens[index], out


@dataclass(frozen=True)
class PNNParams:
    variant: str = "progressive"
    alpha_init: float = 0.1  # α ~ U(0, alpha_init): "initialised by a random small value"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ConfigError(f"method_params.variant: unknown {self.variant!r}; one of {VARIANTS}")
        if self.alpha_init < 0:
            raise ConfigError(f"method_params.alpha_init: must be >= 0, got {self.alpha_init}")


@register
class PNN(Method):
    name = "pnn"
    scenarios = frozenset({"task"})
    Params = PNNParams

    def __init__(self, model: nn.Module, stream, params: PNNParams) -> None:
        super().__init__(model, stream, params)
        self.device = next(model.parameters()).device
        self.mlp = model  # the loop's model: column 1 starts from its weights
        self.net = ProgressiveNet.like(model, params.alpha_init).to(self.device)
        self.model = self.net
        self.units = [torch.tensor(t.units, device=self.device) for t in stream.tasks]

    def begin_task(self, task, x, y) -> None:
        t, n_out, variant = task.index, len(task.units), self.params.variant
        net = self.net
        for c in range(len(net.columns)):
            net.freeze(c)
        previous = len(net.columns) - 1
        if previous < 0:
            column = net.add_column(n_out, (), t)
            self._copy_from_mlp(column, task.units)
        elif variant == "progressive":
            net.add_column(n_out, tuple(range(len(net.columns))), t)
        elif variant == "independent":
            net.add_column(n_out, (), t)
        elif variant in ("head_only", "finetune"):
            source = net.columns[net.task_column[t - 1]] if t - 1 in net.task_column else net.columns[previous]
            column = net.add_column(n_out, source.sources, t)
            column.hidden.load_state_dict(source.hidden.state_dict())
            column.adapters.load_state_dict(source.adapters.state_dict())
            if variant == "head_only":
                for p in [*column.hidden.parameters(), *column.adapters.parameters()]:
                    p.requires_grad_(False)  # fresh copies: no stale gradient
        else:  # random_frozen: a column nobody trains, read through laterals
            net.add_column(n_out)
            net.freeze(len(net.columns) - 1)
            net.add_column(n_out, (len(net.columns) - 1,), t)
        net.to(self.device)
        if getattr(self, "optimizer", None) is not None:  # reset_optimizer=False keeps one optimiser
            self.optimizer.state.clear()
            self.optimizer.param_groups[0]["params"] = [p for p in net.parameters() if p.requires_grad]

    @torch.no_grad()
    def _copy_from_mlp(self, column: Column, units: tuple[int, ...]) -> None:
        """Column 1 starts where the loop's MLP starts (same seed ⇒ same first task as finetune)."""
        linears = [m for m in self.mlp.modules() if isinstance(m, nn.Linear)]
        for mine, theirs in zip([*column.hidden, column.head], linears, strict=True):
            rows = list(units) if mine is column.head else slice(None)
            mine.weight.copy_(theirs.weight[rows])
            if mine.bias is not None:
                mine.bias.copy_(theirs.bias[rows])

    def logits(self, x: torch.Tensor, task: int) -> torch.Tensor:
        """The task's column's head on the task's output units; −∞ on every other unit."""
        if not 0 <= task < len(self.stream):
            raise KeyError(f"unknown task id {task}: the stream has tasks 0…{len(self.stream) - 1}")
        full = x.new_full((len(x), self.stream.n_outputs), float("-inf"))
        if task not in self.net.task_column:  # not reached yet: no column, a constant prediction
            return full.index_fill(1, self.units[task], 0.0)
        return full.index_copy(1, self.units[task], self.net(x, task))


def parameter_counts(net: ProgressiveNet) -> dict[str, int]:
    """Parameters in the columns proper and in the lateral adapters."""
    adapters = sum(p.numel() for c in net.columns for p in c.adapters.parameters())
    total = sum(p.numel() for p in net.parameters())
    return {"columns": total - adapters, "adapters": adapters, "total": total}


def hidden_units(net: ProgressiveNet) -> dict[str, int]:
    """Hidden units of the columns and of the adapters' hidden layers."""
    columns = sum(sum(net.widths) for _ in net.columns)
    adapters = sum(a.project.out_features for c in net.columns for a in c.adapters)
    return {"columns": columns, "adapters": adapters, "total": columns + adapters}


def target_curve_auc(rows: pd.DataFrame) -> pd.DataFrame:
    """Area under the learning curve of the last task while it trains, per run.

    The mean of the accuracies recorded every `eval_every` epochs during the last task (the
    trapezoid-free area with unit spacing, as a percentage), from the loop's 'curve' rows.
    """
    keys = ["experiment", "method", "benchmark", "scenario", "params", "seed"]
    curves = rows[rows["kind"] == "curve"]
    records = []
    for key, run in curves.groupby(keys, sort=False):
        last = int(run["after_task"].max())
        target = run[(run["after_task"] == last) & (run["eval_task"] == last)].sort_values("epoch")
        records.append({**dict(zip(keys, key, strict=True)), "n_tasks": last + 1,
                        "auc": float(np.mean(target["accuracy"]))})
    return pd.DataFrame.from_records(records)


def transfer_scores(auc: pd.DataFrame, baseline: pd.Series) -> pd.DataFrame:
    """The paper's transfer score: AUC relative to baseline 1 in the same experiment and seed, in %.

    `baseline` selects the baseline-1 rows of `auc` (one per experiment and seed).
    """
    pair = ["experiment", "seed"]
    base = auc[baseline][pair + ["auc"]].rename(columns={"auc": "baseline_auc"})
    out = auc.merge(base, on=pair, how="inner", validate="many_to_one")
    out["transfer"] = 100.0 * out["auc"] / out["baseline_auc"]
    return out
