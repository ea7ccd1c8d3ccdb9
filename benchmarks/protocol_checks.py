"""The small protocol checks of issue 16 (§4, §5), two seeds each, written to results/protocol_checks.csv.

The notebooks' protocol prose quotes these numbers (tests/test_prose_numbers.py traces them here):
- lwf_class:   LwF in Class-IL with van de Ven & Tolias's loss as coded, on van de Ven's protocol
               (published 23.85) and on Hsu's schedule (published 24.17)
- lwf_hsu:     the same loss in Hsu's Task-IL and Domain-IL (published 99.60, 71.02)
- adam_reset:  fine-tuning Task-IL on van de Ven's protocol, Adam reset at every task or created
               once (published 87.19)
- elrd:        bag of tricks, Split Fashion-MNIST, buffer 200: ELrD as the authors code it (γ per
               stream example), per step instead (γ^(N/10)), and off; with and without BiC
- rotation:    DER R-MNIST (20 tasks), SGD and ER-200, nearest vs bilinear rotation
- digit_order: Hsu's Domain-IL and Class-IL rows (LwF, fine-tuning), digits paired in order
               (0/1, 2/3, …: ours) vs shuffled per seed as van de Ven & Tolias's data.py does;
               five seeds, paired by seed
- init:        bag of tricks, Split Fashion-MNIST: Joint, ER and ER + BiC + ELrD (buffer 200), ER+T
               (buffer 500), and DER S-MNIST Class-IL ER-200, with PyTorch's default
               initialisation (ours) vs the authors' backbone xavier() (uniform
               ±√(6/(fan_in + fan_out)) weights, zero biases); three seeds, paired by seed
- lwf_der:     the DER protocol's LwF (S-MNIST, trained Class-IL; ACC and, from the same run, the
               Task-IL ACC), with SGD weight decay 5e-4 or 1e-3 (the authors add wd_reg·Σθ² to the
               loss, wd_reg 5e-4: a gradient of 1e-3·θ) and with or without the authors' head-only
               warm-up epoch before each task (HeadWarmupLwF); five seeds, paired by seed

Each run is clrepro.train.run on the setups of clrepro/report/setups.csv (single thread, CPU,
bit-identical per seed). Run: `.venv/bin/python benchmarks/protocol_checks.py [--only elrd ...]`
(about 35 CPU-minutes for all; the file keeps the rows of the checks not run).
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from clrepro.data import streams
from clrepro.data.datasets import ImageDataset
from clrepro.methods import register
from clrepro.methods.lwf import LwF
from clrepro.report.results import atomic_write_csv
from clrepro.report.setups import experiment, setup
from clrepro.train import run

OUT = Path(__file__).resolve().parents[1] / "results" / "protocol_checks.csv"
SEEDS = (0, 1)
SEEDS_PER_CHECK = {"digit_order": (0, 1, 2, 3, 4), "init": (0, 1, 2), "lwf_der": (0, 1, 2, 3, 4)}
SHUFFLED = "digits shuffled"
DEFAULT = {"model": {"init": "default"}}  # PyTorch's nn.Linear initialisation (ModelConfig.init)


@contextmanager
def digits_shuffled(seed: int):
    """Split MNIST with the digits relabelled by a per-seed permutation, as van de Ven & Tolias's
    data.py does (target_transform y → p[y], p = np.random.permutation(10) after seeding), so task
    t holds the two digits that p sends to 2t and 2t + 1. The package has no such option (adding
    one would change every run's cache key), so this check swaps the split stream's dataset for
    the duration of one run, in this process only."""
    genuine = streams._split_dataset("split_mnist", None)
    relabel = torch.from_numpy(np.random.RandomState(seed).permutation(10))
    shuffled = ImageDataset(genuine.name, genuine.train_images, relabel[genuine.train_labels],
                            genuine.test_images, relabel[genuine.test_labels])
    with mock.patch.object(streams, "_split_dataset", lambda name, data_dir: shuffled):
        yield


LWF_DER = experiment("checks/lwf_der", "der", "split_mnist", "lwf", "class")


@register
class HeadWarmupLwF(LwF):
    """The DER authors' LwF warm-up (mammoth models/lwf.py @7ab9db9, begin_task): before every task
    after the first, one epoch over the task's training set that trains only the output layer, on
    the new task's units (cross-entropy over those units, features computed without gradient; SGD
    at the run's lr and batch size, no weight decay), before the frozen teacher is taken. Only this
    check uses it: the DER rows of the lwf notebook run without it, as their setups note says."""

    name = "lwf_head_warmup"
    lr, batch_size = LWF_DER.train.lr, LWF_DER.train.batch_size  # the DER S-MNIST setup's (setups.csv)

    def begin_task(self, task, x, y) -> None:
        if task.index > 0:
            head, units = self.model.head, self._units[task.index]
            optimizer = torch.optim.SGD(head.parameters(), lr=self.lr)
            self.model.eval()
            for idx in torch.randperm(len(x)).split(self.batch_size):
                with torch.no_grad():
                    features = self.model.features(x[idx])
                loss = F.cross_entropy(head(features)[:, units], y[idx] - units.min())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            self.model.train()
        super().begin_task(task, x, y)


def checks() -> dict[str, list[tuple[str, object]]]:
    """check → [(variant label, experiment)]."""
    er_t = setup("tricks", "split_fashion_mnist", "er", "class", buffer_size=200, variant="ER+T")
    # elrd and rotation isolate one switch each; they ran with PyTorch's default initialisation
    # (before the authors' was found, see `init`) and keep it, so their rows stay reproducible.
    er = er_t.experiment("checks/elrd").with_(method_params={"lr_decay": 1.0, "sampling": "reservoir"}, **DEFAULT)
    vdv_sgd = experiment("checks/adam", "vandeven", "split_mnist", "finetune", "task")
    return {
        "lwf_class": [
            ("van de Ven protocol", experiment("checks/lwf", "vandeven", "split_mnist", "lwf", "class")),
            ("Hsu schedule", experiment("checks/lwf", "hsu", "split_mnist", "lwf", "class")),
        ],
        "lwf_hsu": [(s, experiment("checks/lwf", "hsu", "split_mnist", "lwf", s)) for s in ("task", "domain")],
        "adam_reset": [
            ("Adam reset every task", vdv_sgd.with_(train={"reset_optimizer": True})),
            ("one Adam for all tasks", vdv_sgd),
        ],
        "elrd": [
            ("ER+BiC", er),
            ("ER+BiC+ELrD per example (code)", er.with_(method_params={"lr_decay": 0.99995})),
            ("ER+BiC+ELrD per step", er.with_(method_params={"lr_decay": 0.99995 ** 0.1})),
            ("ER", er.with_(method_params={"bias_control": False})),
            ("ER+ELrD", er.with_(method_params={"bias_control": False, "lr_decay": 0.99995})),
        ],
        "rotation": [
            (f"{method} {interpolation}",
             experiment("checks/rotation", "der", "rotated_mnist", method, "domain",
                        buffer_size=buffer, interpolation=interpolation).with_(**DEFAULT))
            for method, buffer in (("finetune", None), ("er", 200)) for interpolation in ("nearest", "bilinear")
        ],
        "digit_order": [
            (f"{name} {scenario}, {order}", experiment("checks/digits", "hsu", "split_mnist", method, scenario))
            for scenario in ("domain", "class") for method, name in (("lwf", "LwF"), ("finetune", "fine-tuning"))
            for order in ("digits in order", SHUFFLED)
        ],
        "init": [
            (f"{name}, {label}", exp.with_(model={"init": init}))
            for name, exp in (
                ("Joint", experiment("checks/init", "tricks", "split_fashion_mnist", "joint", "class")),
                ("ER", er.with_(method_params={"bias_control": False})),
                ("ER+BiC+ELrD", er.with_(method_params={"lr_decay": 0.99995})),
                ("ER+T 500", setup("tricks", "split_fashion_mnist", "er", "class", buffer_size=500,
                                   variant="ER+T").experiment("checks/init")),
                ("DER S-MNIST Class-IL ER-200", experiment("checks/init", "der", "split_mnist", "er", "class",
                                                           buffer_size=200)),
            )
            for init, label in (("default", "default init"), ("xavier", "authors' xavier init"))
        ],
        "lwf_der": [
            (f"{warmup_label}, weight decay {wd:g}",
             LWF_DER.with_(train={"weight_decay": wd}, **({"method": HeadWarmupLwF.name} if warmup else {})))
            for warmup, warmup_label in ((False, "no warm-up"), (True, "head warm-up"))
            for wd in (5e-4, 1e-3)
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="checks to run (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    selected = {k: v for k, v in checks().items() if not args.only or k in args.only}
    old = pd.read_csv(OUT) if OUT.exists() else pd.DataFrame()
    records = []
    for check, variants in selected.items():
        for label, exp in variants:
            for seed in SEEDS_PER_CHECK.get(check, SEEDS):
                started = time.process_time()
                with digits_shuffled(seed) if label.endswith(SHUFFLED) else nullcontext():
                    result = run(exp, seed)
                acc = float(np.nanmean(result.accuracy[-1]))
                R = result.accuracy
                task_il = result.task_il_accuracy  # a Class-IL run's Task-IL view, from the same run
                task_acc = None if task_il is None else round(float(np.nanmean(task_il[-1])), 2)
                records.append({"check": check, "variant": label, "seed": seed, "acc": round(acc, 2),
                                "task_acc": task_acc,
                                "final_row": " ".join(f"{a:.1f}" for a in R[-1]),
                                "diagonal": " ".join(f"{R[i, i]:.1f}" for i in range(len(R))),
                                "cpu_seconds": round(time.process_time() - started, 1), "experiment": exp.to_json()})
                print(f"{check:11s} {label:32s} seed {seed}: ACC {acc:.2f}", flush=True)
    frame = pd.DataFrame.from_records(records)
    if len(old):
        frame = pd.concat([old[~old["check"].isin(selected)], frame], ignore_index=True)
    atomic_write_csv(frame, OUT)


if __name__ == "__main__":
    main()
