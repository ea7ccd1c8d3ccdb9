"""What a model predicts after each task: the package's own loop and method, with a look inside.

``clrepro.train.run`` returns only accuracies. To see *which* classes a model predicts (why LwF
collapses in Class-IL), ``run_with_predictions`` runs the very same loop and, right after each
task's end_task hook, records every test example's prediction by the method's own ``logits``
(what the accuracy matrix scores) and the prediction restricted to the example's task's units
(what a task oracle would give).
"""

from __future__ import annotations

import pandas as pd
import torch

from clrepro import train
from clrepro.data.streams import to_float
from clrepro.experiment import Experiment


@torch.no_grad()
def predict(method, after_task: int) -> pd.DataFrame:
    """One row per test example of every task: true unit, predicted unit, task-aware prediction."""
    model = method.model
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    frames = []
    for task in method.stream.tasks:
        x = to_float(task.x_test, device)
        logits = method.logits(x, task.index)
        units = torch.tensor(sorted(task.units), device=device)
        within = units[model(x)[:, units].argmax(1)]
        frames.append(pd.DataFrame({
            "after_task": after_task, "eval_task": task.index, "true": task.y_test.numpy(),
            "predicted": logits.argmax(1).cpu().numpy(), "predicted_within_task": within.cpu().numpy(),
        }))
    model.train(was_training)
    return pd.concat(frames, ignore_index=True)


def run_with_predictions(experiment: Experiment, seed: int, device: str = "cpu"):
    """(RunResult, predictions after every task) for one run of the package's loop."""
    records: list[pd.DataFrame] = []
    result = train.run(experiment, seed, device=device,
                       after_task=lambda t, method: records.append(predict(method, t)))
    frame = pd.concat(records, ignore_index=True).assign(seed=seed, scenario=experiment.benchmark.scenario)
    return result, frame
