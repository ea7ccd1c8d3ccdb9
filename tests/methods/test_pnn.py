import copy

import numpy as np
import pandas as pd
import pytest
import torch

from clrepro.config import BenchmarkConfig, ConfigError, ModelConfig, TrainConfig
from clrepro.data.streams import Stream, Task
from clrepro.experiment import Experiment
from clrepro.methods import build_method
from clrepro.methods.base import Batch
from clrepro.methods.pnn import ProgressiveNet, parameter_counts, target_curve_auc, transfer_scores
from clrepro.models import MLP

IN, WIDTHS, UNITS = 7, (5, 3), 2


def stream(n_tasks=3, n=24, seed=0):
    """Synthetic Task-IL stream on IN-dim inputs, two output units per task."""
    g = torch.Generator().manual_seed(seed)
    tasks = []
    for t in range(n_tasks):
        x = torch.randint(0, 256, (n, IN), generator=g, dtype=torch.uint8)
        y = torch.randint(2 * t, 2 * t + 2, (n,), generator=g)
        tasks.append(Task(t, f"t{t}", (2 * t, 2 * t + 1), x, y, x, y))
    return Stream("synthetic", "task", tuple(tasks), 2 * n_tasks)


def make_pnn(s, variant="progressive", seed=0):
    torch.manual_seed(seed)
    model = MLP(ModelConfig(hidden=WIDTHS), s.n_outputs, in_features=IN)
    return build_method("pnn", {"variant": variant}, model, s)


def train_task(method, task, steps=5, lr=0.5):
    x, y = task.train_tensors()
    method.begin_task(task, x, y)
    optimizer = method.make_optimizer(TrainConfig(lr=lr, batch_size=8))
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        method.loss(Batch(x, y, task.index)).backward()
        optimizer.step()
    method.end_task(task, x, y)
    return x


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def test_training_a_later_column_leaves_every_earlier_column_bit_identical():
    s = stream(3)
    method = make_pnn(s)
    x = train_task(method, s.tasks[0])
    train_task(method, s.tasks[1])
    net = method.net
    before = [snapshot(c) for c in net.columns]
    outputs = [method.logits(x, t).clone() for t in (0, 1)]
    train_task(method, s.tasks[2])
    for c in (0, 1):
        after = snapshot(net.columns[c])
        assert all(torch.equal(a, b) for a, b in zip(before[c], after, strict=True))
    for t in (0, 1):
        assert torch.equal(method.logits(x, t), outputs[t])
    # ...while the new column did learn (the check above could fail)
    fresh = make_pnn(s)
    for t in range(3):
        fresh.begin_task(s.tasks[t], *s.tasks[t].train_tensors())
    assert not all(torch.equal(a, b) for a, b in zip(snapshot(fresh.net.columns[2]), snapshot(net.columns[2]),
                                                     strict=True))


def test_gradients_never_reach_frozen_columns():
    s = stream(2)
    method = make_pnn(s)
    train_task(method, s.tasks[0])
    x, y = s.tasks[1].train_tensors()
    method.begin_task(s.tasks[1], x, y)
    optimizer = method.make_optimizer(TrainConfig(lr=0.1))
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    method.loss(Batch(x, y, 1)).backward()
    old, new = method.net.columns
    for p in old.parameters():
        assert not p.requires_grad and p.grad is None and id(p) not in optimized
    assert all(p.grad is not None for p in new.parameters())
    assert any(p.grad.abs().sum() > 0 for p in new.adapters.parameters())  # laterals do learn


def test_with_adapters_zeroed_a_column_equals_an_independent_mlp():
    s = stream(3)
    method = make_pnn(s)
    for t in range(3):
        method.begin_task(s.tasks[t], *s.tasks[t].train_tensors())
    column = method.net.columns[2]
    mlp = MLP(ModelConfig(hidden=WIDTHS), UNITS, in_features=IN)
    linears = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for mine, theirs in zip([*column.hidden, column.head], linears, strict=True):
            theirs.weight.copy_(mine.weight)
            theirs.bias.copy_(mine.bias)
    x = torch.randn(6, IN)
    assert not torch.allclose(method.net(x, 2), mlp(x))  # the laterals matter before zeroing
    with torch.no_grad():
        for p in column.adapters.parameters():
            p.zero_()
    torch.testing.assert_close(method.net(x, 2), mlp(x), rtol=0, atol=0)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_parameter_count_matches_the_closed_form(k):
    s = stream(k)
    method = make_pnn(s)
    for t in range(k):
        method.begin_task(s.tasks[t], *s.tasks[t].train_tensors())
    dims = [IN, *WIDTHS]
    column = sum((a + 1) * b for a, b in zip(dims[:-1], dims[1:], strict=True)) + (WIDTHS[-1] + 1) * UNITS
    n = dims[1:]  # the width each adapter reads from one earlier column, layers 2…L+1
    m = [*WIDTHS[1:], UNITS]  # the width each adapter writes
    linear = sum(1 + ni + ni * mi for ni, mi in zip(n, m, strict=True))  # α, V's bias, U
    quadratic = sum(ni * ni for ni in n)  # V: (k−1)·n inputs → n
    expected = k * column + (k - 1) * linear + k * (k - 1) // 2 * quadratic
    assert sum(p.numel() for p in method.model.parameters()) == expected
    assert parameter_counts(method.net)["total"] == expected


def test_task_id_routes_to_its_column():
    s = stream(2)
    method = make_pnn(s)
    train_task(method, s.tasks[0])
    train_task(method, s.tasks[1])
    x = torch.randn(5, IN)
    for t, other in ((0, 1), (1, 0)):
        logits = method.logits(x, t)
        units = list(s.tasks[t].units)
        own = method.net.run_column(x, method.net.task_column[t])[1]
        assert torch.equal(logits[:, units], own)
        assert torch.isinf(logits[:, list(s.tasks[other].units)]).all()
        assert not torch.allclose(own, method.net.run_column(x, method.net.task_column[other])[1])


def test_unknown_task_id_is_a_clear_error():
    s = stream(2)
    method = make_pnn(s)
    train_task(method, s.tasks[0])
    x = torch.randn(3, IN)
    with pytest.raises(KeyError, match="unknown task id 5"):
        method.logits(x, 5)
    with pytest.raises(KeyError, match="no column for task 1"):
        method.net(x, 1)
    # a task of the stream not reached yet has no column: a constant prediction, no error
    assert torch.equal(method.logits(x, 1)[:, 2:], torch.zeros(3, 2))


def test_first_column_starts_from_the_loop_model_so_task_one_equals_finetune():
    s = stream(2)
    pnn = make_pnn(s)
    torch.manual_seed(0)
    finetune = build_method("finetune", {}, MLP(ModelConfig(hidden=WIDTHS), s.n_outputs, in_features=IN), s)
    x = train_task(pnn, s.tasks[0])
    train_task(finetune, s.tasks[0])
    torch.testing.assert_close(pnn.logits(x, 0)[:, :2], finetune.logits(x, 0)[:, :2])


def test_baseline_variants():
    s = stream(2)
    head_only, fine, rand = (make_pnn(s, v) for v in ("head_only", "finetune", "random_frozen"))
    for method in (head_only, fine, rand):
        train_task(method, s.tasks[0])
        train_task(method, s.tasks[1])
    c0, c1 = head_only.net.columns
    assert all(torch.equal(a, b) for a, b in zip(snapshot(c0.hidden), snapshot(c1.hidden), strict=True))
    assert not torch.equal(c0.head.weight, c1.head.weight)  # a new head, trained
    c0, c1 = fine.net.columns
    assert not all(torch.equal(a, b) for a, b in zip(snapshot(c0.hidden), snapshot(c1.hidden), strict=True))
    assert len(rand.net.columns) == 3 and rand.net.columns[2].sources == (1,)
    assert not any(p.requires_grad for p in rand.net.columns[1].parameters())


def test_params_and_scenarios_are_validated():
    with pytest.raises(ConfigError, match="method_params.variant"):
        Experiment("pnn/x", BenchmarkConfig("split_mnist", "task"), "pnn", {"variant": "bogus"})
    with pytest.raises(ConfigError, match="scenario"):
        Experiment("pnn/x", BenchmarkConfig("split_mnist", "class"), "pnn")


def test_reset_optimizer_false_still_optimises_the_new_column_only():
    s = stream(2)
    method = make_pnn(s)
    train_task(method, s.tasks[0])
    optimizer = method.optimizer
    x, y = s.tasks[1].train_tensors()
    method.begin_task(s.tasks[1], x, y)  # the loop would not call make_optimizer again
    params = {id(p) for p in optimizer.param_groups[0]["params"]}
    assert params == {id(p) for p in method.net.columns[1].parameters()}


def test_transfer_score_is_auc_relative_to_baseline_one():
    rows = []
    for method, params, accs in (("pnn", '{"variant": "independent"}', [50, 70]), ("pnn", "{}", [60, 90])):
        for epoch, acc in zip((3, 4), accs, strict=True):
            rows.append(dict(experiment="pnn/t", method=method, benchmark="b", scenario="task", params=params,
                             seed=0, kind="curve", after_task=1, eval_task=1, epoch=epoch, accuracy=acc))
        rows.append({**rows[-1], "eval_task": 0, "accuracy": 0.0})  # other tasks are ignored
    auc = target_curve_auc(pd.DataFrame(rows))
    np.testing.assert_allclose(sorted(auc["auc"]), [60.0, 75.0])
    scores = transfer_scores(auc, auc["params"].str.contains("independent"))
    assert scores.set_index("params").loc["{}", "transfer"] == pytest.approx(125.0)


def test_pnn_net_from_mlp_rejects_dropout():
    with pytest.raises(ConfigError, match="dropout"):
        ProgressiveNet.like(MLP(ModelConfig(hidden=(4,), dropout_hidden=0.5), 2, in_features=3))


def test_frozen_copy_is_independent_of_later_training():
    s = stream(2)
    method = make_pnn(s, "finetune")
    train_task(method, s.tasks[0])
    reference = copy.deepcopy(method.net.columns[0].state_dict())
    train_task(method, s.tasks[1])
    for key, value in method.net.columns[0].state_dict().items():
        assert torch.equal(value, reference[key])


def test_new_columns_and_adapters_take_the_models_initialisation():
    s = stream(2)
    for init in ("default", "xavier"):
        torch.manual_seed(0)
        model = MLP(ModelConfig(hidden=WIDTHS, init=init), s.n_outputs, in_features=IN)
        pnn = build_method("pnn", {"variant": "progressive"}, model, s)
        train_task(pnn, s.tasks[0], steps=1)
        pnn.begin_task(s.tasks[1], *s.tasks[1].train_tensors())  # column 2 and its adapters, untrained
        later = pnn.net.columns[1]
        biases = [m.bias for m in later.modules() if isinstance(m, torch.nn.Linear) and m.bias is not None]
        assert biases and all((torch.count_nonzero(b) == 0) == (init == "xavier") for b in biases)
