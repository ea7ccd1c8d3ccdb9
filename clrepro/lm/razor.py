"""The RL's Razor toy (Shenfeld, Pari & Agrawal 2025), with an SDFT arm (Shenfeld et al. 2026).

One MLP, 785→512→256→10 (+1 input for the demonstration channel), sees MNIST or Fashion-MNIST
pixels, a task flag (+1 parity, −1 Fashion-MNIST) and a hint. It is pretrained jointly on
ParityMNIST (target uniform over the digits of the right parity, so several answers are right)
and Fashion-MNIST, then fine-tuned on parity alone with

    SFT-1       cross-entropy to 0 (even) / 1 (odd)
    SFT-2       cross-entropy to {0, 4} (even) / {1, 5} (odd), uniformly (soft target)
    oracle SFT  cross-entropy to q(y|x) ∝ π0(y|x)·1[parity(y) = parity(x)]  (the KL-minimal target)
    GRPO        binary parity reward, G samples per input, group-normalised advantage, no KL
    GRPO + KL   the same + β·KL(π ‖ π0) (β = 0.1), computed exactly over the 10 classes
    SDFT        KL between the teacher π(·|x, hint) and the student π(·|x), teacher under
                stop-gradient and an EMA (or frozen, or live) copy of the student.

The hint is the SFT-1 label (+1 "answer 0", −1 "answer 1", 0 = no hint); pretraining shows it in
half the parity examples while the target stays "any digit of the right parity", so the
hinted network is a teacher that knows the parity and keeps π0's preferences among the right
digits. With a single output token the student's own answer is the whole completion, so the
per-example KL over the 10 classes is the on-policy SDFT loss exactly (no sampling needed).

Forgetting = Fashion-MNIST accuracy of π0 − that of π. Predictors, on parity test inputs:
forward KL(π0 ‖ π) (the paper's), reverse KL(π ‖ π0), and the weights' L2 distance to π0.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from clrepro.data.datasets import load_dataset
from clrepro.lm.distill import DIRECTIONS, distillation_loss, ema_update, forward_kl, reverse_kl
from clrepro.lm.sweep import over_seeds
from clrepro.run.runner import cache_dir

PARITY_FLAG, FASHION_FLAG = 1.0, -1.0
METHODS = ("sft1", "sft2", "oracle_sft", "grpo", "grpo_kl", "sdft")
TEACHERS = ("ema", "frozen", "live")
SCHEDULES = ("constant", "cosine")
SFT_DIGITS = {"sft1": ((0,), (1,)), "sft2": ((0, 4), (1, 5))}  # (digits for even, digits for odd)


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class ToyConfig:
    """Sizes of the toy. The paper: 500 + 500 pretraining examples; the rest is our choice."""

    n_pretrain: int = 500  # per task (ParityMNIST, Fashion-MNIST)
    hint_fraction: float = 0.5  # of the pretraining parity examples that carry the hint
    pretrain_epochs: int = 30
    pretrain_lr: float = 1e-3
    n_finetune: int = 2000  # ParityMNIST training examples for fine-tuning
    n_eval: int = 2000  # test examples per task
    batch_size: int = 32
    checkpoints_per_epoch: int = 4

    def __post_init__(self) -> None:
        if not 0.0 <= self.hint_fraction <= 1.0:
            raise ValueError(f"hint_fraction must be in [0, 1], got {self.hint_fraction}")
        for name in ("n_pretrain", "pretrain_epochs", "n_finetune", "n_eval", "batch_size", "checkpoints_per_epoch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class Finetune:
    """One fine-tuning run on parity."""

    method: str
    lr: float
    schedule: str = "constant"
    epochs: int = 1
    kl_coef: float = 0.1  # grpo_kl
    group_size: int = 8  # grpo, grpo_kl
    teacher: str = "ema"  # sdft
    direction: str = "forward"  # sdft
    ema_rate: float = 0.01  # sdft, teacher="ema"

    def __post_init__(self) -> None:
        checks = [("method", self.method, METHODS), ("schedule", self.schedule, SCHEDULES),
                  ("teacher", self.teacher, TEACHERS), ("direction", self.direction, DIRECTIONS)]
        for name, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"{name}: unknown {value!r}; one of {allowed}")
        if self.lr <= 0 or self.epochs < 1 or self.group_size < 2:
            raise ValueError(f"need lr > 0, epochs >= 1, group_size >= 2: {self}")

    @property
    def label(self) -> str:
        """Method name for tables: sdft variants carry their teacher and direction."""
        if self.method != "sdft":
            return self.method
        return "sdft" + ("" if self.teacher == "ema" else f"_{self.teacher}") + (
            "" if self.direction == "forward" else "_reverse")

    def params(self) -> dict:
        keep = {"lr": self.lr, "schedule": self.schedule, "epochs": self.epochs}
        if self.method == "grpo_kl":
            keep["kl_coef"] = self.kl_coef
        if self.method.startswith("grpo"):
            keep["group_size"] = self.group_size
        if self.method == "sdft":
            keep.update(teacher=self.teacher, direction=self.direction, ema_rate=self.ema_rate)
        return keep


# ---------------------------------------------------------------- data


def same_parity_mask(labels: torch.Tensor) -> torch.Tensor:
    """[N, 10] bool: digit y has the parity of the label (the answers a parity reward accepts)."""
    return (torch.arange(10)[None, :] % 2) == (labels[:, None] % 2)


def parity_target(labels: torch.Tensor) -> torch.Tensor:
    """ParityMNIST pretraining target: uniform over the five digits of the right parity."""
    mask = same_parity_mask(labels).float()
    return mask / mask.sum(1, keepdim=True)


def sft_target(method: str, labels: torch.Tensor) -> torch.Tensor:
    """SFT-1 / SFT-2 targets: uniform over the fixed digit(s) of the label's parity."""
    even, odd = SFT_DIGITS[method]
    target = torch.zeros(len(labels), 10)
    for parity, digits in ((0, even), (1, odd)):
        rows = (labels % 2) == parity
        target[rows.nonzero(), torch.tensor(digits)] = 1.0 / len(digits)
    return target


def oracle_target(base_probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """q(y|x) ∝ π0(y|x)·1[parity(y) = parity(x)]: the right-parity answer closest in KL to π0."""
    q = base_probs * same_parity_mask(labels)
    return q / q.sum(1, keepdim=True)


def hint_value(labels: torch.Tensor) -> torch.Tensor:
    """The SFT-1 label as a signed hint: +1 means "answer 0" (even), −1 means "answer 1" (odd)."""
    return 1.0 - 2.0 * (labels % 2).float()


def make_inputs(images: torch.Tensor, flag: float, hint: torch.Tensor | None = None) -> torch.Tensor:
    """[N, 786]: pixels in [0, 1], the task flag, the hint (0 = no hint)."""
    pixels = images.reshape(len(images), -1).float() / 255.0
    flags = torch.full((len(images), 1), flag)
    hints = torch.zeros(len(images), 1) if hint is None else hint.reshape(-1, 1).float()
    return torch.cat([pixels, flags, hints], dim=1)


@dataclass
class ToyData:
    pretrain_x: torch.Tensor
    pretrain_target: torch.Tensor
    finetune_images: torch.Tensor
    finetune_labels: torch.Tensor
    parity_test_x: torch.Tensor  # no hint
    parity_test_labels: torch.Tensor
    fashion_test_x: torch.Tensor
    fashion_test_labels: torch.Tensor

    def finetune_inputs(self, hint: bool = False) -> torch.Tensor:
        return make_inputs(self.finetune_images, PARITY_FLAG, hint_value(self.finetune_labels) if hint else None)


def toy_data(cfg: ToyConfig, seed: int) -> ToyData:
    """Disjoint draws per seed: pretraining and fine-tuning from the training sets, evaluation from the test sets."""
    g = torch.Generator().manual_seed(seed)
    mnist, fashion = load_dataset("mnist"), load_dataset("fashion_mnist")
    order = torch.randperm(len(mnist.train_labels), generator=g)
    pre, fine = order[: cfg.n_pretrain], order[cfg.n_pretrain: cfg.n_pretrain + cfg.n_finetune]
    f_pre = torch.randperm(len(fashion.train_labels), generator=g)[: cfg.n_pretrain]
    p_test = torch.randperm(len(mnist.test_labels), generator=g)[: cfg.n_eval]
    f_test = torch.randperm(len(fashion.test_labels), generator=g)[: cfg.n_eval]

    digits = mnist.train_labels[pre]
    hinted = torch.rand(len(pre), generator=g) < cfg.hint_fraction
    hints = torch.where(hinted, hint_value(digits), torch.zeros(len(pre)))
    pretrain_x = torch.cat([make_inputs(mnist.train_images[pre], PARITY_FLAG, hints),
                            make_inputs(fashion.train_images[f_pre], FASHION_FLAG)])
    pretrain_target = torch.cat([parity_target(digits),
                                 F.one_hot(fashion.train_labels[f_pre], 10).float()])
    return ToyData(
        pretrain_x, pretrain_target, mnist.train_images[fine], mnist.train_labels[fine],
        make_inputs(mnist.test_images[p_test], PARITY_FLAG), mnist.test_labels[p_test],
        make_inputs(fashion.test_images[f_test], FASHION_FLAG), fashion.test_labels[f_test],
    )


# ---------------------------------------------------------------- model, pretraining, evaluation


def toy_mlp(in_features: int = 786) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def pretrain(data: ToyData, cfg: ToyConfig, seed: int) -> nn.Module:
    """π0: joint training on ParityMNIST (half of it hinted) and Fashion-MNIST, Adam."""
    torch.manual_seed(seed)
    model = toy_mlp(data.pretrain_x.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.pretrain_lr)
    for _ in range(cfg.pretrain_epochs):
        for idx in torch.randperm(len(data.pretrain_x)).split(cfg.batch_size):
            optimizer.zero_grad()
            soft_cross_entropy(model(data.pretrain_x[idx]), data.pretrain_target[idx]).backward()
            optimizer.step()
    return model.eval()


def parity_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """% of inputs whose most likely answer has the label's parity."""
    return 100.0 * float(((logits.argmax(1) % 2) == (labels % 2)).float().mean())


def weight_distance(model: nn.Module, base: nn.Module) -> float:
    return float(sum(((p - q) ** 2).sum() for p, q in zip(model.parameters(), base.parameters(), strict=True)).sqrt())


@torch.no_grad()
def evaluate(model: nn.Module, base: nn.Module, data: ToyData) -> dict[str, float]:
    """New-task (parity) and old-task (Fashion-MNIST) accuracy, and the forgetting predictors."""
    logits, base_logits = model(data.parity_test_x), base(data.parity_test_x)
    fashion = model(data.fashion_test_x).argmax(1)
    return {
        "parity_acc": parity_accuracy(logits, data.parity_test_labels),
        "fashion_acc": 100.0 * float((fashion == data.fashion_test_labels).float().mean()),
        "forward_kl": float(forward_kl(base_logits, logits).mean()),  # KL(π0 ‖ π)
        "reverse_kl": float(reverse_kl(base_logits, logits).mean()),  # KL(π ‖ π0)
        "weight_l2": weight_distance(model, base),
    }


@torch.no_grad()
def hinted_parity_accuracy(model: nn.Module, data: ToyData) -> float:
    """The teacher's view: parity accuracy with the hint given."""
    x = data.parity_test_x.clone()
    x[:, -1] = hint_value(data.parity_test_labels)
    return parity_accuracy(model(x), data.parity_test_labels)


# ---------------------------------------------------------------- fine-tuning losses (one per method)


def grpo_loss(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, group_size: int,
              base: nn.Module | None = None, kl_coef: float = 0.0) -> torch.Tensor:
    """On-policy policy gradient with a group-normalised binary parity reward (+ β·KL(π ‖ π0))."""
    logits = model(x)
    logp = F.log_softmax(logits, dim=-1)
    answers = torch.multinomial(logp.exp().detach(), group_size, replacement=True)  # [B, G] from π
    reward = ((answers % 2) == (labels[:, None] % 2)).float()
    advantage = (reward - reward.mean(1, keepdim=True)) / (reward.std(1, keepdim=True) + 1e-6)
    loss = -(advantage * logp.gather(1, answers)).mean()
    if kl_coef > 0:
        with torch.no_grad():
            base_logits = base(x)
        loss = loss + kl_coef * reverse_kl(base_logits, logits).mean()  # KL(π ‖ π0), exact
    return loss


def sdft_loss(student: nn.Module, teacher: nn.Module, x: torch.Tensor, x_hinted: torch.Tensor,
              direction: str) -> torch.Tensor:
    """Teacher π(·|x, hint) under stop-gradient, student π(·|x): per-example KL over the 10 answers."""
    with torch.no_grad():
        teacher_logits = teacher(x_hinted)
    return distillation_loss(direction, teacher_logits, student(x))


def lr_at(step: int, total: int, lr: float, schedule: str) -> float:
    if schedule == "constant":
        return lr
    return 0.5 * lr * (1.0 + math.cos(math.pi * step / total))


def finetune(base: nn.Module, data: ToyData, run: Finetune, cfg: ToyConfig, seed: int) -> list[dict]:
    """Fine-tune a copy of π0 on parity; evaluate at checkpoints_per_epoch points per epoch."""
    torch.manual_seed(seed)
    model = copy.deepcopy(base).train()
    teacher = base if run.teacher == "frozen" else (model if run.teacher == "live" else copy.deepcopy(base))
    optimizer = torch.optim.Adam(model.parameters(), lr=run.lr)
    x, x_hinted, labels = data.finetune_inputs(), data.finetune_inputs(hint=True), data.finetune_labels
    with torch.no_grad():
        targets = (oracle_target(F.softmax(base(x), -1), labels) if run.method == "oracle_sft"
                   else sft_target(run.method, labels) if run.method in SFT_DIGITS else None)
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    total = steps_per_epoch * run.epochs
    every = max(1, steps_per_epoch // cfg.checkpoints_per_epoch)
    records, step = [], 0
    for _ in range(run.epochs):
        for idx in torch.randperm(len(x)).split(cfg.batch_size):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, run.lr, run.schedule)
            optimizer.zero_grad()
            if targets is not None:
                loss = soft_cross_entropy(model(x[idx]), targets[idx])
            elif run.method == "sdft":
                loss = sdft_loss(model, teacher, x[idx], x_hinted[idx], run.direction)
            else:
                kl_coef = run.kl_coef if run.method == "grpo_kl" else 0.0
                loss = grpo_loss(model, x[idx], labels[idx], run.group_size, base, kl_coef)
            loss.backward()
            optimizer.step()
            if run.method == "sdft" and run.teacher == "ema":
                ema_update(teacher, model, run.ema_rate)
            step += 1
            if step % every == 0 or step == total:
                records.append({"step": step, "epoch": step / steps_per_epoch, **evaluate(model.eval(), base, data)})
                model.train()
    return records


# ---------------------------------------------------------------- sweeps over seeds (cached, parallel)

SOURCES = [Path(__file__), Path(__file__).with_name("distill.py")]


def _cache_file(cfg: ToyConfig, runs: list[Finetune], seed: int) -> Path | None:
    folder = cache_dir()  # build/cache/ of the repository, like every other run's (CLREPRO_CACHE)
    if folder is None:
        return None
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in SOURCES))
    digest.update(json.dumps([asdict(cfg), [asdict(r) for r in runs], seed], sort_keys=True).encode())
    return folder / f"razor-{digest.hexdigest()[:32]}.csv"


def run_seed(cfg: ToyConfig, runs: list[Finetune], seed: int) -> pd.DataFrame:
    """Pretrain π0 for this seed, then every fine-tuning run from it: one row per checkpoint."""
    path = _cache_file(cfg, runs, seed)
    if path is not None and path.exists():
        return pd.read_csv(path, dtype={"params": str})
    torch.set_num_threads(1)  # runs are spread over processes instead
    data = toy_data(cfg, seed)
    base = pretrain(data, cfg, seed)
    start = {"step": 0, "epoch": 0.0, **evaluate(base, base, data)}
    rows = [{"seed": seed, "method": "base", "params": "{}", **start,
             "hinted_parity_acc": hinted_parity_accuracy(base, data)}]
    for i, run in enumerate(runs):
        for record in finetune(base, data, run, cfg, seed * 1000 + i):
            rows.append({"seed": seed, "method": run.label, "params": json.dumps(run.params(), sort_keys=True),
                         **record})
    frame = pd.DataFrame(rows)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        frame.to_csv(tmp, index=False)
        os.replace(tmp, path)
    return frame


def sweep(cfg: ToyConfig, runs: list[Finetune], seeds: list[int], jobs: int | None = None) -> pd.DataFrame:
    """Every run for every seed; seeds are spread over `jobs` processes (clrepro.lm.sweep.over_seeds)."""
    return pd.concat(over_seeds(run_seed, seeds, cfg, runs, jobs=jobs), ignore_index=True)


def grid(methods: list[str], lrs: list[float], schedules: list[tuple[str, int]], **extra) -> list[Finetune]:
    """The learning-rate sweep. A constant schedule is run for its longest epoch count only: its
    mid-training checkpoints are the shorter runs."""
    runs, seen = [], set()
    longest = max(e for _, e in schedules)
    for method in methods:
        for lr in lrs:
            for schedule, epochs in schedules:
                epochs = longest if schedule == "constant" else epochs
                key = (method, lr, schedule, epochs)
                if key not in seen:
                    seen.add(key)
                    runs.append(Finetune(method, lr, schedule, epochs, **extra.get(method, {})))
    return runs
