"""The one training loop every method runs through.

For each task: the method's begin_task hook, minibatch steps (loss → backward → gradient
transform → optimiser step → after_step), the end_task hook, then an evaluation that fills row t
of the accuracy matrix R (R[t, i] = accuracy on task i after training on task t, in percent).

Only the cells the metrics read are evaluated: R[t, i ≤ t] (ACC, BWT, forgetting) and R[t, t+1]
(FWT, with the untrained model's accuracy on every task); the rest stay NaN unless the
experiment asks for the full matrix (TrainConfig.full_matrix, for heat maps of the upper
triangle). On a 20-task stream that halves the evaluation, which costs as many FLOPs as the
training itself. Every cell that is evaluated goes through the same code as before.

Class-IL runs are also scored the way the DER paper gets its Task-IL column from the same run:
in the same forward pass, each task's prediction restricted to its own units
(RunResult.task_il_accuracy).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from clrepro.config import TrainConfig
from clrepro.data.streams import Stream, augment, build_stream, to_float
from clrepro.experiment import Experiment
from clrepro.methods import Batch, Method, build_method
from clrepro.models import build_model

EVAL_CHUNK = 2048


@dataclass
class RunResult:
    experiment: Experiment
    seed: int
    accuracy: np.ndarray  # R, [T, T], percent; NaN where not evaluated
    initial: np.ndarray  # accuracy of the untrained model on each task (FWT's baseline)
    curves: list[tuple[float, int, int, float]] = field(default_factory=list)  # (epoch, after_task, task, acc)
    diverged_at: int | None = None  # task after which the parameters were no longer finite
    seconds: float = 0.0  # the whole run
    train_seconds: float = 0.0  # the minibatch steps only (what the loop-overhead benchmark times)
    # Class-IL runs only (None otherwise): the same network and evaluation pass, each task's
    # prediction restricted to its own units (the DER paper's Task-IL of a Class-IL-trained net).
    task_il_accuracy: np.ndarray | None = None  # [T, T], same cells and NaN convention as accuracy
    task_il_initial: np.ndarray | None = None  # the same for the untrained model
    # CPU time of the process over the run (time.process_time): unlike `seconds`, not inflated
    # when other processes share the cores; what benchmarks/cpu_hours.py sums.
    cpu_seconds: float = 0.0


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def minibatches(n: int, cfg: TrainConfig, generator: torch.Generator) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (epoch, indices): reshuffled every epoch; stops after epochs or iterations."""
    steps, epoch = 0, 0
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, cfg.batch_size):
            yield epoch, order[start:start + cfg.batch_size]
            steps += 1
            if cfg.iterations is not None and steps >= cfg.iterations:
                return
        epoch += 1
        if cfg.epochs is not None and epoch >= cfg.epochs:
            return


def steps_per_task(n: int, cfg: TrainConfig) -> int:
    if cfg.iterations is not None:
        return cfg.iterations
    return cfg.epochs * -(-n // cfg.batch_size)


def cells_to_evaluate(t: int, n_tasks: int, full_matrix: bool) -> list[int]:
    """The tasks to evaluate after training task t: i ≤ t+1 (what ACC, BWT, forgetting and FWT
    read), or every task when the full matrix is asked for."""
    return list(range(n_tasks if full_matrix else min(t + 2, n_tasks)))


@torch.no_grad()
def evaluate(method: Method, stream: Stream, device: str | torch.device, tasks: list[int] | None = None) -> np.ndarray:
    """Accuracy (%) on the evaluation split of the given tasks (default: all), each with its own
    task id; NaN for the tasks not evaluated."""
    return evaluate_both(method, stream, device, tasks, task_il=False)[0]


@torch.no_grad()
def evaluate_both(
    method: Method, stream: Stream, device: str | torch.device, tasks: list[int] | None = None, task_il: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(accuracy, task-IL accuracy) in one forward pass per chunk. The task-IL prediction is the
    argmax of the same logits restricted to the task's own units (None unless task_il)."""
    model = method.model
    was_training = model.training
    model.eval()
    accuracies = np.full(len(stream), np.nan)
    within = np.full(len(stream), np.nan) if task_il else None
    for i in range(len(stream)) if tasks is None else tasks:
        task = stream.tasks[i]
        units = torch.tensor(task.units, device=device) if task_il else None
        correct = correct_within = 0
        for start in range(0, len(task.x_test), EVAL_CHUNK):
            x = to_float(task.x_test[start:start + EVAL_CHUNK], device)
            y = task.y_test[start:start + EVAL_CHUNK].to(device)
            logits = method.logits(x, task.index)
            correct += (logits.argmax(1) == y).sum().item()
            if units is not None:
                correct_within += (units[logits[:, units].argmax(1)] == y).sum().item()
        accuracies[i] = 100.0 * correct / len(task.x_test)
        if within is not None:
            within[i] = 100.0 * correct_within / len(task.x_test)
    model.train(was_training)
    return accuracies, within


def _progress(total: int, desc: str, enabled: bool):
    quiet = not enabled or bool(os.environ.get("CI")) or bool(os.environ.get("CLREPRO_QUIET"))
    return tqdm(total=total, desc=desc, disable=quiet, leave=False, mininterval=1.0)


TaskHook = Callable[[int, Method], None]


def run(
    experiment: Experiment, seed: int, device: str = "cpu", progress: bool = False,
    data_dir: str | None = None, after_task: TaskHook | None = None,
) -> RunResult:
    """Train one method on one stream with one seed; deterministic on CPU.

    On the CPU, call torch.set_num_threads(1) first to reproduce the notebooks' cached runs bit
    for bit (the runner does this in every worker; with 2 threads, 188 of 210 cells of one run
    differed in the last digits).

    after_task(t, method): called after each task's end_task hook (and before its evaluation),
    so analyses can read the trained method (its basis, buffer, predictions) without touching
    the loop. It must not change the model.
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    seed_everything(seed)
    stream = build_stream(experiment.benchmark, seed, data_dir)
    model = build_model(experiment.model, stream.n_outputs).to(device)
    method = build_method(experiment.method, experiment.method_params, model, stream)
    generator = torch.Generator().manual_seed(seed)
    augmentation = torch.Generator().manual_seed(seed + 1) if stream.augment else None
    cfg = experiment.train
    n_tasks = len(stream)
    accuracy = np.full((n_tasks, n_tasks), np.nan)
    task_il = stream.scenario == "class"
    task_il_accuracy = np.full((n_tasks, n_tasks), np.nan) if task_il else None
    initial, task_il_initial = evaluate_both(method, stream, device, task_il=task_il)
    curves: list[tuple[float, int, int, float]] = []

    if method.trains_jointly:
        phases = [(n_tasks - 1, _joint_data(stream, device))]
    else:
        phases = [(t, None) for t in range(n_tasks)]

    bar = _progress(
        sum(steps_per_task(len(stream.tasks[t].x_train) if d is None else len(d[0]), cfg) for t, d in phases),
        f"{experiment.method} seed {seed}", progress,
    )
    optimizer = None
    train_seconds = 0.0
    diverged_at = None
    for t, joint in phases:
        task = stream.tasks[t]
        x, y = task.train_tensors(device) if joint is None else joint[:2]
        task_ids = None if joint is None else joint[2]
        method.begin_task(task, x, y)  # may grow the model (e.g. a new column), so before the optimiser
        if optimizer is None or cfg.reset_optimizer:
            optimizer = method.make_optimizer(cfg)
        method.model.train()
        last_epoch, pending = 0, 0
        task_started = time.perf_counter()
        for epoch, idx in minibatches(len(x), cfg, generator):
            if epoch != last_epoch:
                if cfg.eval_every and epoch % cfg.eval_every == 0:
                    record_curve(curves, method, stream, device, t, cfg, epoch)
                last_epoch = epoch
            batch = Batch(x[idx], y[idx], t, None if task_ids is None else task_ids[idx])
            if augmentation is not None:
                batch.x, batch.x_raw = augment(batch.x, augmentation), batch.x
            optimizer.zero_grad(set_to_none=True)
            method.loss(batch).backward()
            method.transform_gradients(batch)
            optimizer.step()
            method.after_step(batch)
            pending += 1
            if pending == 100:
                bar.update(pending)
                pending = 0
        bar.update(pending)
        train_seconds += time.perf_counter() - task_started
        if not all(torch.isfinite(p).all() for p in method.model.parameters()):
            # Training diverged (e.g. λ·lr too large): stop, and record what the model now
            # predicts for this and every later row rather than crashing the whole notebook.
            final = evaluate_both(method, stream, device, task_il=task_il)
            for row in range(t, n_tasks):
                cells = cells_to_evaluate(row, n_tasks, cfg.full_matrix)
                for matrix, values in zip((accuracy, task_il_accuracy), final, strict=True):
                    if matrix is not None:
                        matrix[row, cells] = values[cells]
            diverged_at = t
            break
        method.end_task(task, x, y)
        if after_task is not None:
            after_task(t, method)
        if cfg.eval_every and cfg.epochs is not None:
            record_curve(curves, method, stream, device, t, cfg, cfg.epochs)
        accuracy[t], row_within = evaluate_both(
            method, stream, device, cells_to_evaluate(t, n_tasks, cfg.full_matrix), task_il)
        if task_il_accuracy is not None:
            task_il_accuracy[t] = row_within
    bar.close()
    return RunResult(experiment, seed, accuracy, initial, curves, diverged_at, time.perf_counter() - started,
                     train_seconds, task_il_accuracy, task_il_initial, time.process_time() - cpu_started)


def record_curve(curves, method, stream, device, task: int, cfg: TrainConfig, epoch: int) -> None:
    global_epoch = task * (cfg.epochs or 0) + epoch
    for i, acc in enumerate(evaluate(method, stream, device)):
        curves.append((float(global_epoch), task, i, float(acc)))


def _joint_data(stream: Stream, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    xs, ys, ids = [], [], []
    for task in stream.tasks:
        x, y = task.train_tensors(device)
        xs.append(x)
        ys.append(y)
        ids.append(torch.full((len(y),), task.index, device=device))
    return torch.cat(xs), torch.cat(ys), torch.cat(ids)
