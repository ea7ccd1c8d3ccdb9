from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clrepro.config import ConfigError, ModelConfig, TrainConfig
from clrepro.data.streams import Stream, Task
from clrepro.methods import build_method
from clrepro.methods.base import Batch
from clrepro.methods.ogd import (
    extend_orthonormal_basis,
    extend_orthonormal_coefficients,
    output_gradients,
    project_out,
)
from clrepro.models import MLP


def make_ogd(stream, seed=0, dtype=torch.float32, activation="relu", **params):
    torch.manual_seed(seed)
    model = MLP(ModelConfig(hidden=(6,), activation=activation), stream.n_outputs).to(dtype)
    return build_method("ogd", params, model, stream)


def finish_task(method, stream, t=0):
    task = stream.tasks[t]
    x, y = task.train_tensors()
    method.end_task(task, x.to(method.basis.dtype), y)
    return x.to(method.basis.dtype), y


def set_random_grads(method, seed=1):
    g = torch.Generator().manual_seed(seed)
    for p in method.model.parameters():
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)


@pytest.mark.parametrize("variant", ["GTL", "ALL", "AVE"])
def test_basis_is_orthonormal(tiny_stream, variant):
    ogd = make_ogd(tiny_stream, variant=variant, n_examples=20)
    finish_task(ogd, tiny_stream, 0)
    finish_task(ogd, tiny_stream, 1)
    S = ogd.basis
    assert len(S) > 20  # both tasks contributed
    assert torch.linalg.matrix_norm(S @ S.T - torch.eye(len(S))) < 1e-5


def test_basis_sizes_and_memory(tiny_stream):
    ogd = make_ogd(tiny_stream, variant="ALL", n_examples=5)
    finish_task(ogd, tiny_stream, 0)
    assert ogd.basis_sizes == [10]  # 5 examples × the task's 2 units
    assert ogd.memory_bytes == 10 * sum(p.numel() for p in ogd.model.parameters()) * 4


def test_dependent_vectors_are_dropped():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 50, generator=g)
    vectors = torch.cat([a, a[:1] + 2 * a[1:2], torch.zeros(1, 50)])  # rank 3
    S = extend_orthonormal_basis(torch.zeros(0, 50), vectors, 1e-4)
    assert S.shape == (3, 50)
    S2 = extend_orthonormal_basis(S, a[2:] - a[:1], 1e-4)  # already in the span
    assert S2.shape == (3, 50)


def test_projected_gradient_is_orthogonal_to_every_basis_vector(tiny_stream):
    ogd = make_ogd(tiny_stream, n_examples=30)
    finish_task(ogd, tiny_stream, 0)
    set_random_grads(ogd)
    before = torch.cat([p.grad.reshape(-1) for p in ogd.model.parameters()])
    ogd.transform_gradients(Batch(torch.zeros(1, 784), torch.zeros(1, dtype=torch.long), 1))
    after = torch.cat([p.grad.reshape(-1) for p in ogd.model.parameters()])
    assert (ogd.basis @ after).abs().max() < 1e-5 * before.norm()
    assert not torch.allclose(before, after)  # something was removed
    torch.testing.assert_close(after, project_out(before, ogd.basis))


def test_empty_basis_is_sgd_exactly(tiny_stream):
    """Before the first task ends, OGD and fine-tuning take bit-identical steps."""
    methods = [make_ogd(tiny_stream), build_method("finetune", {}, make_ogd(tiny_stream).model, tiny_stream)]
    x, y = tiny_stream.tasks[0].train_tensors()
    for method in methods:
        opt = torch.optim.SGD(method.model.parameters(), lr=0.1)
        for step in range(5):
            idx = torch.arange(step * 6, step * 6 + 6)
            batch = Batch(x[idx], y[idx], 0)
            opt.zero_grad()
            method.loss(batch).backward()
            method.transform_gradients(batch)
            opt.step()
    for a, b in zip(methods[0].model.parameters(), methods[1].model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_gtl_vector_is_the_autograd_gradient_of_the_true_logit(tiny_stream):
    ogd = make_ogd(tiny_stream)
    x, y = tiny_stream.tasks[1].train_tensors()
    vector = output_gradients(ogd.model, x[:1], y[:1], "GTL")[0]
    ogd.model.zero_grad()
    ogd.model(x[:1])[0, y[0]].backward()
    expected = torch.cat([p.grad.reshape(-1) for p in ogd.model.parameters()])
    torch.testing.assert_close(vector, expected)


def test_all_and_ave_vectors_match_autograd(tiny_stream):
    ogd = make_ogd(tiny_stream)
    x, y = tiny_stream.tasks[1].train_tensors()
    units = torch.tensor([2, 3])
    all_rows = output_gradients(ogd.model, x[:2], y[:2], "ALL", units, chunk=1)
    ave_rows = output_gradients(ogd.model, x[:2], y[:2], "AVE", units)
    assert all_rows.shape[0] == 4 and ave_rows.shape[0] == 2
    for n in range(2):
        per_unit = []
        for u in units:
            ogd.model.zero_grad()
            ogd.model(x[n:n + 1])[0, u].backward()
            per_unit.append(torch.cat([p.grad.reshape(-1) for p in ogd.model.parameters()]))
        torch.testing.assert_close(all_rows[2 * n:2 * n + 2], torch.stack(per_unit))
        torch.testing.assert_close(ave_rows[n], torch.stack(per_unit).mean(0))


def test_projected_step_changes_stored_outputs_only_to_second_order(tiny_stream):
    """f_y(x; θ − η Pg) − f_y(x; θ) = O(η²) on stored examples; without projection it is O(η)."""
    ogd = make_ogd(tiny_stream, dtype=torch.float64, activation="tanh", n_examples=30)
    x, y = finish_task(ogd, tiny_stream, 0)  # n_examples = all 30: every example is stored
    x2, y2 = tiny_stream.tasks[1].train_tensors()
    params = list(ogd.model.parameters())

    def stored_outputs():
        with torch.no_grad():
            return ogd.model(x).gather(1, y[:, None]).squeeze(1)

    def change_after_step(lr, project):
        ogd.model.zero_grad()
        F.cross_entropy(ogd.logits(x2.double(), 1), y2).backward()
        if project:
            ogd.transform_gradients(Batch(x2, y2, 1))
        saved = [p.detach().clone() for p in params]
        before = stored_outputs()
        with torch.no_grad():
            for p in params:
                p -= lr * p.grad
        change = (stored_outputs() - before).abs().max().item()
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
        return change

    big, small = change_after_step(1e-2, True), change_after_step(5e-3, True)
    assert big / small == pytest.approx(4.0, rel=0.1)  # quadratic in the step size
    plain_big, plain_small = change_after_step(1e-2, False), change_after_step(5e-3, False)
    assert plain_big / plain_small == pytest.approx(2.0, rel=0.1)  # linear without projection
    assert big < 1e-2 * plain_big


def test_params_validation():
    with pytest.raises(ConfigError, match="method_params.variant"):
        build_method("ogd", {"variant": "gtl"}, None, None)
    with pytest.raises(ConfigError, match="method_params.n_examples"):
        build_method("ogd", {"n_examples": 0}, None, None)
    with pytest.raises(ConfigError, match="method_params.storage"):
        build_method("ogd", {"storage": "dense"}, None, None)


# --- factored storage --------------------------------------------------------------------------


def small_stream(scenario="task", duplicates=False):
    """2 tasks of 30 examples, 20 features, 4 outputs; `duplicates`: examples 5–9 repeat 0–4, so
    Gram–Schmidt has vectors to drop."""
    g = torch.Generator().manual_seed(0)
    tasks = []
    for t in range(2):
        x = torch.randint(0, 256, (30, 20), generator=g, dtype=torch.uint8)
        y = torch.randint(2 * t, 2 * t + 2, (30,), generator=g)
        if duplicates:
            x[5:10], y[5:10] = x[:5], y[:5]
        tasks.append(Task(t, f"t{t}", (2 * t, 2 * t + 1), x, y, x[:4], y[:4]))
    return Stream("synthetic", scenario, tuple(tasks), 4)


def make_small(stream, storage, seed=0, bias=True, dropout=0.0, **params):
    torch.manual_seed(seed)
    cfg = ModelConfig(hidden=(16, 16), bias=bias, dropout_hidden=dropout)
    return build_method("ogd", {"storage": storage, **params}, MLP(cfg, stream.n_outputs, in_features=20), stream)


def finish_tasks(method, stream, seed=7):
    torch.manual_seed(seed)  # the examples end_task samples
    for task in stream.tasks:
        method.end_task(task, *task.train_tensors())


def flat_grads(method):
    return torch.cat([p.grad.reshape(-1) for p in method.model.parameters()])


VARIANT_SCENARIOS = [(v, s) for v in ("GTL", "AVE", "ALL") for s in ("task", "class")]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(("variant", "scenario"), VARIANT_SCENARIOS)
def test_factored_basis_is_orthonormal(variant, scenario, bias):
    stream = small_stream(scenario)
    ogd = make_small(stream, "factored", bias=bias, variant=variant, n_examples=12)
    finish_tasks(ogd, stream)
    S = ogd.basis
    assert S.shape == (ogd.basis_sizes[-1], sum(p.numel() for p in ogd.model.parameters()))
    assert len(S) > ogd.basis_sizes[0] > 0  # both tasks contributed
    assert torch.linalg.matrix_norm(S @ S.T - torch.eye(len(S))) < 1e-5


@pytest.mark.parametrize(("variant", "scenario"), VARIANT_SCENARIOS)
def test_factored_raw_gradients_are_the_output_gradients(variant, scenario):
    stream = small_stream(scenario)
    ogd = make_small(stream, "factored", variant=variant, n_examples=6)
    finish_tasks(ogd, stream, seed=7)
    torch.manual_seed(7)  # the same draws as end_task: the storages see the same examples
    expected = []
    for task in stream.tasks:
        x, y = task.train_tensors()
        idx = torch.randperm(len(x))[:6]
        mask = ogd._masks[task.index]
        units = None if mask is None else mask.nonzero().flatten()
        expected.append(output_gradients(ogd.model, x[idx], y[idx], variant, units))
    expected = torch.cat(expected)
    assert len(expected) == ogd.basis_sizes[-1]  # nothing dropped, rows in the same order
    torch.testing.assert_close(ogd.stored_gradients(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("variant", "scenario"), VARIANT_SCENARIOS)
def test_factored_projection_equals_flat(variant, scenario):
    stream = small_stream(scenario, duplicates=True)
    methods = [make_small(stream, storage, variant=variant, n_examples=30) for storage in ("flat", "factored")]
    for method in methods:
        finish_tasks(method, stream)
    flat, factored = methods
    assert factored.basis_sizes == flat.basis_sizes
    per_example = 1 if variant != "ALL" else 2 if scenario == "task" else 4
    assert flat.basis_sizes[0] == 25 * per_example  # the 5 repeated examples were dropped
    before = []
    for method in methods:
        set_random_grads(method)
        before.append(flat_grads(method))
        method.transform_gradients(None)
    torch.testing.assert_close(before[0], before[1], rtol=0, atol=0)
    expected, after = flat_grads(flat), flat_grads(factored)
    assert (after - expected).norm() < 1e-4 * expected.norm()
    assert (after - before[1]).norm() > 0.1 * before[1].norm()  # something was removed
    raw = factored.stored_gradients()
    assert len(raw) == factored.basis_sizes[-1]  # dropped vectors are not kept
    assert (raw @ after).abs().max() < 1e-5 * raw.norm(dim=1).max() * before[1].norm()


def train_like_the_loop(method, passes, new_optimizer, steps=10, seed=3):
    """The loop's order: an optimiser per task (new_optimizer()), then loss, backward,
    transform_gradients, step; end_task."""
    torch.manual_seed(seed)
    for task in passes:
        optimizer = new_optimizer()
        x, y = task.train_tensors()
        method.model.train()
        for step in range(steps):
            idx = torch.arange(3 * step, 3 * step + 3)
            batch = Batch(x[idx], y[idx], task.index)
            optimizer.zero_grad()
            method.loss(batch).backward()
            method.transform_gradients(batch)
            optimizer.step()
        method.end_task(task, x, y)


def test_factored_training_matches_flat():
    """Real steps (dropout on, so the RNG draws must match too) over two tasks and a third pass."""
    stream = small_stream("task")
    methods = [make_small(stream, storage, dropout=0.2, n_examples=10) for storage in ("flat", "factored")]
    for method in methods:
        optimizer = torch.optim.SGD(method.model.parameters(), lr=0.1)  # one for all tasks
        train_like_the_loop(method, (*stream.tasks, stream.tasks[0]), lambda optimizer=optimizer: optimizer)
    flat, factored = methods
    assert factored.basis_sizes == flat.basis_sizes == [10, 20, 30]
    for a, b in zip(flat.model.parameters(), factored.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(flat.model.head.weight, make_small(stream, "flat").model.head.weight)  # it trained


def test_coefficient_gram_schmidt_matches_the_flat_one():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 40, generator=g, dtype=torch.float64)
    first = torch.cat([a[:3], a[:1] + 2 * a[1:2], torch.zeros(1, 40, dtype=torch.float64)])  # rank 3
    second = torch.cat([a[2:3] - a[:1], a[3:], torch.randn(2, 40, generator=g, dtype=torch.float64)])
    S = extend_orthonormal_basis(torch.zeros(0, 40, dtype=torch.float64), first, 1e-4)
    S = extend_orthonormal_basis(S, second, 1e-4)
    coef, keep = extend_orthonormal_coefficients(torch.zeros(0, 0, dtype=torch.float64), first @ first.T, 5, 1e-4)
    assert keep.tolist() == [True, True, True, False, False]
    raw = torch.cat([first[keep], second])
    coef, keep = extend_orthonormal_coefficients(coef[:, :3], raw @ raw.T, 4, 1e-4)
    assert keep.tolist() == [False, True, True, True]
    assert coef[:, 3].abs().max() == 0  # a dropped vector takes no part in the basis
    torch.testing.assert_close(coef @ raw, S, rtol=0, atol=1e-12)


def test_factored_empty_basis_is_sgd_exactly():
    stream = small_stream()
    ogd = make_small(stream, "factored")
    set_random_grads(ogd)
    before = [p.grad.clone() for p in ogd.model.parameters()]
    ogd.transform_gradients(None)
    assert all(torch.equal(p.grad, b) for p, b in zip(ogd.model.parameters(), before, strict=True))
    assert ogd.basis.shape == (0, ogd.n_params) and ogd.memory_bytes == 0 and ogd.flat_bytes == 0


def test_factored_memory_is_what_is_stored():
    stream = small_stream("class")
    flat, factored = (make_small(stream, storage, n_examples=20) for storage in ("flat", "factored"))
    for method in (flat, factored):
        finish_tasks(method, stream)
    k = factored.basis_sizes[-1]
    assert flat.memory_bytes == flat.flat_bytes == factored.flat_bytes == k * flat.n_params * 4
    # Δ per layer and A per layer (examples × inputs) in float32, C in float64 and float32, K in float64
    factors = k * (16 + 16 + 4) * 4 + k * (20 + 16 + 16) * 4 + k * 8
    assert factored.memory_bytes == factors + k * k * (8 + 4 + 8)


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(20, 4)
        self.scale = nn.Parameter(torch.ones(4))

    def forward(self, x):
        return self.linear(x) * self.scale


@pytest.mark.parametrize("model", [
    lambda: Scaled(),
    lambda: nn.Sequential(nn.Unflatten(1, (1, 20)), nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(36, 4)),
])
def test_factored_needs_a_linear_only_model(model):
    stream = small_stream()
    build_method("ogd", {}, model(), stream)  # the flat storage takes any model
    with pytest.raises(ConfigError, match="nn.Linear"):
        build_method("ogd", {"storage": "factored"}, model(), stream)


def test_factored_skips_frozen_parameters():
    stream = small_stream()
    ogd = make_small(stream, "factored", variant="ALL", n_examples=5)
    ogd.model.features[0].weight.requires_grad_(False)
    ogd = build_method("ogd", {"storage": "factored", "variant": "ALL", "n_examples": 5}, ogd.model, stream)
    finish_tasks(ogd, stream)
    trained = [p.requires_grad for p in ogd.model.parameters() for _ in range(p.numel())]
    torch.manual_seed(7)
    x, y = stream.tasks[0].train_tensors()
    rows = output_gradients(ogd.model, x[torch.randperm(30)[:5]], y, "ALL", torch.tensor([0, 1]))
    torch.testing.assert_close(ogd.stored_gradients()[:10], rows[:, torch.tensor(trained)], rtol=1e-5, atol=1e-6)
    for p in ogd.model.parameters():
        p.grad = None if not p.requires_grad else torch.randn(p.shape)
    before = torch.cat([p.grad.reshape(-1) for p in ogd.model.parameters() if p.requires_grad])
    ogd.transform_gradients(None)
    after = torch.cat([p.grad.reshape(-1) for p in ogd.model.parameters() if p.requires_grad])
    raw = ogd.stored_gradients()
    assert (raw @ after).abs().max() < 1e-5 * raw.norm(dim=1).max() * before.norm()


@pytest.mark.parametrize(("variant", "scenario"), VARIANT_SCENARIOS)
def test_factored_projection_from_the_batch_factors_equals_the_one_from_w_grad(variant, scenario):
    """G g from the batch's own factors (A Xᵀ E) gives the projection G g from W.grad gives."""
    stream = small_stream(scenario)
    ogd = make_small(stream, "factored", variant=variant, n_examples=12)
    finish_tasks(ogd, stream)
    x, y = stream.tasks[1].train_tensors()
    batch = Batch(x[:5], y[:5], 1)
    projected = []
    for use_batch_factors in (True, False):
        ogd.model.zero_grad()
        ogd.loss(batch).backward()
        assert len(ogd._batch_grads) == len(ogd._layers)  # every layer's factors were captured
        if not use_batch_factors:
            ogd._batch_inputs.clear()
        ogd.transform_gradients(batch)
        projected.append(flat_grads(ogd))
    torch.testing.assert_close(projected[0], projected[1], rtol=1e-5, atol=1e-6)
    ogd.model.eval()
    with torch.no_grad():
        ogd._batch_inputs.clear()
        ogd.logits(x, 1)
    assert not ogd._batch_inputs  # evaluation captures nothing


# --- deferred projection (factored storage under plain SGD) --------------------------------


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(("variant", "scenario"), VARIANT_SCENARIOS)
def test_deferred_training_matches_eager(variant, scenario, bias):
    stream = small_stream(scenario)
    cfg = TrainConfig(lr=0.1, batch_size=3)
    methods = [make_small(stream, "factored", bias=bias, variant=variant, n_examples=10, defer=defer)
               for defer in (False, True)]
    for method in methods:
        train_like_the_loop(method, (*stream.tasks, stream.tasks[0]), partial(method.make_optimizer, cfg))
    eager, deferred = methods
    assert eager._deferring is None and deferred._deferring is not None
    assert not deferred._pending_active  # folded at the end of the task
    assert deferred.basis_sizes == eager.basis_sizes and deferred.basis_sizes[-1] > deferred.basis_sizes[0]
    for a, b in zip(eager.model.parameters(), deferred.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    untrained = make_small(stream, "factored", bias=bias).model
    assert not torch.equal(deferred.model.head.weight, untrained.head.weight)  # it trained


def test_deferred_forward_is_the_folded_model():
    """Mid-task, the corrected forward pass equals the forward pass of the folded weights, and a
    forward pass without gradients (evaluation) folds first, so the weights are the true ones."""
    stream = small_stream("class")
    ogd = make_small(stream, "factored", n_examples=10)
    cfg = TrainConfig(lr=0.1, batch_size=3)
    train_like_the_loop(ogd, stream.tasks[:1], partial(ogd.make_optimizer, cfg))
    optimizer = ogd.make_optimizer(cfg)
    x, y = stream.tasks[1].train_tensors()
    for step in range(4):
        batch = Batch(x[3 * step:3 * step + 3], y[3 * step:3 * step + 3], 1)
        optimizer.zero_grad()
        ogd.loss(batch).backward()
        ogd.transform_gradients(batch)
        optimizer.step()
    assert ogd._pending_active and ogd._pending.abs().sum() > 0
    weights = [p.detach().clone() for p in ogd.model.parameters()]
    corrected = ogd.model(x).detach()
    with torch.no_grad():
        folded = ogd.model(x)
    assert not ogd._pending_active and ogd._pending.abs().sum() == 0
    assert any(not torch.equal(a, b) for a, b in zip(weights, ogd.model.parameters(), strict=True))
    torch.testing.assert_close(corrected, folded, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cfg", [TrainConfig(lr=0.1, momentum=0.9), TrainConfig(lr=0.1, weight_decay=1e-4),
                                 TrainConfig(lr=0.1, optimizer="adam")])
def test_other_optimisers_project_the_gradient_every_step(cfg):
    stream = small_stream()
    ogd = make_small(stream, "factored", n_examples=10)
    finish_tasks(ogd, stream)
    ogd.make_optimizer(cfg)
    assert ogd._deferring is None
    x, y = stream.tasks[1].train_tensors()
    batch = Batch(x[:5], y[:5], 1)
    ogd.model.zero_grad()
    ogd.loss(batch).backward()
    before = flat_grads(ogd).clone()
    ogd.transform_gradients(batch)
    raw = ogd.stored_gradients()
    after = flat_grads(ogd)
    assert not torch.equal(before, after) and not ogd._pending_active
    assert (raw @ after).abs().max() < 1e-5 * raw.norm(dim=1).max() * before.norm()


def test_deferred_runs_are_deterministic():
    stream = small_stream()
    cfg = TrainConfig(lr=0.1, batch_size=3)
    runs = []
    for _ in range(2):
        ogd = make_small(stream, "factored", n_examples=10)
        train_like_the_loop(ogd, stream.tasks, partial(ogd.make_optimizer, cfg))
        runs.append([p.detach().clone() for p in ogd.model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


@pytest.mark.parametrize(("variant", "scenario"), VARIANT_SCENARIOS)
def test_coefficients_are_lower_triangular_and_the_blocked_product_is_exact(variant, scenario):
    stream = small_stream(scenario, duplicates=True)
    ogd = make_small(stream, "factored", variant=variant, n_examples=30)
    finish_tasks(ogd, stream)
    C = ogd._coef_fast
    assert len(C) > 40 and ogd._coef_lower and torch.equal(C, C.tril())  # Gram–Schmidt order
    gg = torch.randn(len(C), generator=torch.Generator().manual_seed(0))
    expected = C.T @ (C @ gg)
    for block in (1, 7, 256):  # the same sums in another order: float32 rounding only
        assert (ogd._normal_product(gg, block=block) - expected).norm() < 1e-6 * expected.norm()
