"""French's associator in miniature: learn set A of binary associations, then set B, and measure
how much of A is left.

The shared loop (clrepro.train) cannot express this experiment: it trains for a fixed number of
epochs on MNIST-family streams, while French trains on a handful of binary patterns *until a
criterion* and counts the epochs needed to relearn. So this module holds the small routine, and
the sharpening itself is the same method class as on MNIST (clrepro.methods.sharpening, form
"activation", sigmoid hidden and output units, ½ Σ (o − t)² output error, one pattern per step).

Forgetting is measured the two ways French did:
- exact recognition: a pattern of A is still known when every output is within `recognition`
  (0.5) of its target after B has been learned;
- savings: the epochs needed to relearn A to the training criterion.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import pandas as pd
import torch

from clrepro.config import ModelConfig, TrainConfig
from clrepro.data.streams import Stream
from clrepro.methods import Batch, build_method
from clrepro.models import MLP
from clrepro.paths import PACKAGE_DIR, files_hash
from clrepro.report.results import atomic_write_csv, read_results


@dataclass(frozen=True)
class AssociatorConfig:
    bits: int = 8  # input and output width
    hidden: int = 8
    n_first: int = 10  # patterns in set A
    n_second: int = 1  # patterns in set B
    lr: float = 0.2
    momentum: float = 0.9
    criterion: float = 0.2  # learned: every output within this of its target
    recognition: float = 0.5  # exact recognition after interference (French)
    max_epochs: int = 2000  # epochs are capped; a run that hits the cap is reported as such


def make_patterns(n: int, bits: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n random associations between distinct binary input vectors and binary output vectors."""
    codes = torch.randperm(2 ** bits, generator=generator)[:n]
    x = ((codes[:, None] >> torch.arange(bits)) & 1).float()
    y = torch.randint(0, 2, (n, bits), generator=generator).float()
    return x, y


def build(cfg: AssociatorConfig, method_params: dict, seed: int):
    torch.manual_seed(seed)
    model = MLP(ModelConfig(hidden=(cfg.hidden,), activation="sigmoid"), cfg.bits, in_features=cfg.bits)
    stream = Stream("associator", "domain", (), cfg.bits)  # no tasks to mask: one shared output layer
    return build_method("sharpening", {**method_params, "output_loss": "squared_error"}, model, stream)


@torch.no_grad()
def within(method, x: torch.Tensor, y: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Per pattern: is every output within tolerance of its target?"""
    return ((torch.sigmoid(method.model(x)) - y).abs() < tolerance).all(1)


def train_to_criterion(method, x, y, cfg: AssociatorConfig, generator: torch.Generator) -> int:
    """Epochs of one-pattern steps (shuffled) until every pattern meets the criterion; the cap
    + 1 when it never does. A fresh optimiser (no momentum carried over), as the shared loop does."""
    method.make_optimizer(TrainConfig(lr=cfg.lr, momentum=cfg.momentum, batch_size=1))
    for epoch in range(cfg.max_epochs + 1):
        if within(method, x, y, cfg.criterion).all():
            return epoch
        for i in torch.randperm(len(x), generator=generator):
            method.optimizer.zero_grad(set_to_none=True)
            method.loss(Batch(x[i:i + 1], y[i:i + 1], 0)).backward()
            method.optimizer.step()
    return cfg.max_epochs + 1


def run_once(cfg: AssociatorConfig, method_params: dict, seed: int) -> dict:
    """Learn A, then B, then relearn A; the forgetting measures of one seed."""
    generator = torch.Generator().manual_seed(seed)
    x, y = make_patterns(cfg.n_first + cfg.n_second, cfg.bits, generator)
    xa, ya, xb, yb = x[:cfg.n_first], y[:cfg.n_first], x[cfg.n_first:], y[cfg.n_first:]
    method = build(cfg, method_params, seed)
    epochs_a = train_to_criterion(method, xa, ya, cfg, generator)
    epochs_b = train_to_criterion(method, xb, yb, cfg, generator)
    recognised = within(method, xa, ya, cfg.recognition).float().mean().item()
    relearn = train_to_criterion(method, xa, ya, cfg, generator)
    learned = epochs_a <= cfg.max_epochs and epochs_b <= cfg.max_epochs
    return {"seed": seed, "epochs_a": epochs_a, "epochs_b": epochs_b, "learned": learned,
            "recognised_a": 100.0 * recognised, "relearn_epochs": relearn,
            "relearned": relearn <= cfg.max_epochs}


def run(cfg: AssociatorConfig, conditions: dict[str, dict], seeds: list[int], cache: str | None = None) -> pd.DataFrame:
    """Every condition (label → sharpening params) × seed; rows cached per run when cache is a folder."""
    code = files_hash([PACKAGE_DIR / "analysis" / "associator.py", PACKAGE_DIR / "methods" / "sharpening.py",
                       PACKAGE_DIR / "methods" / "base.py", PACKAGE_DIR / "models" / "mlp.py"])
    rows = []
    for label, params in conditions.items():
        for seed in seeds:
            key = hashlib.sha256(json.dumps([asdict(cfg), params, seed, code], sort_keys=True).encode()).hexdigest()
            path = None if cache is None else f"{cache}/associator-{key[:32]}.csv"
            if path is not None and _exists(path):
                row = read_results(path).iloc[0].to_dict()
            else:
                row = run_once(cfg, params, seed)
                if path is not None:
                    atomic_write_csv(pd.DataFrame([row]), path)
            rows.append({"condition": label, **row})
    return pd.DataFrame(rows)


def _exists(path: str) -> bool:
    from pathlib import Path

    return Path(path).exists()
