import copy

import pytest
import torch
import torch.nn.functional as F

from clrepro.config import ConfigError, ModelConfig
from clrepro.experiment import Experiment
from clrepro.methods import build_method
from clrepro.methods.base import Batch
from clrepro.methods.lwf import distillation
from clrepro.models import MLP


def logits(seed, n=6, k=4, dtype=torch.float64):
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("form", ["kl", "ce"])
def test_distillation_is_zero_iff_student_equals_teacher_in_kl_form(form):
    teacher = logits(0)
    same = distillation(teacher.clone(), teacher, 2.0, "kl")
    assert same.abs().item() < 1e-12
    other = distillation(logits(1), teacher, 2.0, form)
    assert other.item() > 1e-3
    if form == "ce":  # the cross-entropy form is the KL plus the teacher's entropy: never below it
        assert distillation(teacher.clone(), teacher, 2.0, "ce").item() > same.item() + 1e-3


@pytest.mark.parametrize("form", ["kl", "ce"])
@pytest.mark.parametrize("t2_scaling", [True, False])
def test_gradient_matches_finite_differences(form, t2_scaling):
    student = logits(2).requires_grad_(True)
    teacher = logits(3)
    assert torch.autograd.gradcheck(lambda s: distillation(s, teacher, 2.0, form, t2_scaling), (student,))


def test_kl_and_cross_entropy_forms_give_identical_gradients_through_a_network():
    model = MLP(ModelConfig(hidden=(7,)), 5, in_features=4).double()
    x = torch.randn(9, 4, dtype=torch.float64)
    teacher = logits(4, n=9, k=5)
    grads = {}
    for form in ("kl", "ce"):
        model.zero_grad()
        loss = distillation(model(x), teacher, 3.0, form)
        loss.backward()
        grads[form] = [p.grad.clone() for p in model.parameters()]
        grads[form + "_value"] = loss.item()
    for a, b in zip(grads["kl"], grads["ce"], strict=True):
        torch.testing.assert_close(a, b)
    entropy = -(F.softmax(teacher / 3.0, 1) * F.log_softmax(teacher / 3.0, 1)).sum(1).mean() * 9.0
    assert grads["ce_value"] - grads["kl_value"] == pytest.approx(entropy.item())


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0])
def test_temperature_scaling_as_specified(temperature):
    student, teacher = logits(5).requires_grad_(True), logits(6)
    n = len(student)
    distillation(student, teacher, temperature).backward()
    p, q = F.softmax(teacher / temperature, 1), F.softmax(student.detach() / temperature, 1)
    # T²·KL(p_T ‖ q_T): gradient T·(q − p)/N, so gradient magnitudes do not shrink as T grows
    torch.testing.assert_close(student.grad, temperature * (q - p) / n)
    student.grad = None
    distillation(student, teacher, temperature, t2_scaling=False).backward()
    torch.testing.assert_close(student.grad, (q - p) / (temperature * n))
    expected = (p * (p.log() - q.log())).sum(1).mean() * temperature**2
    assert distillation(student.detach(), teacher, temperature).item() == pytest.approx(expected.item())


def make_lwf(stream, **params):
    torch.manual_seed(0)
    model = MLP(ModelConfig(hidden=(8,)), stream.n_outputs)
    return build_method("lwf", params, model, stream)


def train_task(method, task, steps=5, lr=0.05):
    x, y = task.train_tensors()
    method.begin_task(task, x, y)
    opt = torch.optim.SGD(method.model.parameters(), lr=lr)
    for _ in range(steps):
        batch = Batch(x, y, task.index)
        opt.zero_grad()
        method.loss(batch).backward()
        method.transform_gradients(batch)
        opt.step()
        method.after_step(batch)
    method.end_task(task, x, y)
    return x, y


def test_teacher_is_the_model_before_any_update_and_never_changes(tiny_stream):
    lwf = make_lwf(tiny_stream)
    train_task(lwf, tiny_stream.tasks[0])
    assert lwf.teacher is None  # nothing to distil on the first task
    before = copy.deepcopy(lwf.model)
    x, y = train_task(lwf, tiny_stream.tasks[1])
    teacher_state = {k: v.clone() for k, v in lwf.teacher.state_dict().items()}
    for k, v in before.state_dict().items():
        torch.testing.assert_close(teacher_state[k], v, rtol=0, atol=0)  # recorded before any update
    assert any(not torch.equal(a, b) for a, b in zip(lwf.model.parameters(), before.parameters(), strict=True))
    assert all(p.grad is None and not p.requires_grad for p in lwf.teacher.parameters())
    lwf.loss(Batch(x, y, 1)).backward()
    assert all(p.grad is None for p in lwf.teacher.parameters())
    torch.testing.assert_close(lwf.teacher(x), before(x), rtol=0, atol=0)


def test_loss_equals_cross_entropy_plus_distillation_on_old_units(tiny_stream):
    lwf = make_lwf(tiny_stream, lam_o=0.7)
    train_task(lwf, tiny_stream.tasks[0])
    x, y = train_task(lwf, tiny_stream.tasks[1])
    out, old = lwf.model(x), lwf.teacher(x)
    mask = torch.tensor([False, False, True, True])
    expected = F.cross_entropy(out.masked_fill(~mask, float("-inf")), y) + 0.7 * distillation(out[:, :2], old[:, :2])
    torch.testing.assert_close(lwf.loss(Batch(x, y, 1)), expected)
    assert torch.isfinite(expected)  # the masked (-inf) units never reach the softmax of the distillation


def test_distil_units_old_vs_all(tiny_stream):
    lwf = make_lwf(tiny_stream)
    assert [g.tolist() for g in lwf.old_unit_groups(1)] == [[0, 1]]
    assert [g.tolist() for g in make_lwf(tiny_stream, distil_units="all").old_unit_groups(1)] == [[0, 1, 2, 3]]


def test_relative_weighting_and_seen_units(tiny_stream):
    lwf = make_lwf(tiny_stream, weighting="relative", ce_units="seen")
    train_task(lwf, tiny_stream.tasks[0])
    x, y = train_task(lwf, tiny_stream.tasks[1])
    out, old = lwf.model(x), lwf.teacher(x)
    expected = 0.5 * F.cross_entropy(out, y) + 0.5 * distillation(out[:, :2], old[:, :2])
    torch.testing.assert_close(lwf.loss(Batch(x, y, 1)), expected)


def test_warmup_trains_only_the_new_units_then_everything(tiny_stream):
    lwf = make_lwf(tiny_stream, warmup_steps=3)
    train_task(lwf, tiny_stream.tasks[0])
    before = copy.deepcopy(lwf.model)
    train_task(lwf, tiny_stream.tasks[1], steps=3)
    torch.testing.assert_close(lwf.model.features[0].weight, before.features[0].weight, rtol=0, atol=0)
    torch.testing.assert_close(lwf.model.head.weight[:2], before.head.weight[:2], rtol=0, atol=0)
    assert not torch.equal(lwf.model.head.weight[2:], before.head.weight[2:])
    train_task(lwf, tiny_stream.tasks[1], steps=4)  # a new task starts a new warm-up: 3 frozen, 1 free step
    assert not torch.equal(lwf.model.features[0].weight, before.features[0].weight)


@pytest.mark.parametrize("bad", [
    {"lam_o": -1.0}, {"temperature": 0.0}, {"distil_units": "new"}, {"form": "mse"},
    {"ce_units": "all"}, {"weighting": "equal"}, {"warmup_steps": -1}, {"t2_scaling": "yes"},
])
def test_invalid_params_name_the_parameter(bad):
    from clrepro.config import BenchmarkConfig

    name = next(iter(bad))
    with pytest.raises(ConfigError, match=f"method_params.{name}"):
        Experiment("lwf/x", BenchmarkConfig("split_mnist", "class"), "lwf", bad)


# --- van de Ven & Tolias's Class-IL LwF (zero-padded teacher, mean over batch × classes) -------
def class_stream(n_tasks=3):
    """A synthetic Class-IL stream of 3 two-class tasks on 6 units, so 'seen' ≠ 'all' at task 2."""
    from clrepro.data.streams import Stream, Task

    g = torch.Generator().manual_seed(1)
    tasks = []
    for t in range(n_tasks):
        x = torch.randint(0, 256, (40, 784), generator=g, dtype=torch.uint8)
        y = torch.randint(2 * t, 2 * t + 2, (40,), generator=g)
        tasks.append(Task(t, f"t{t}", (2 * t, 2 * t + 1), x[:30], y[:30], x[30:], y[30:]))
    return Stream("synthetic", "class", tuple(tasks), 2 * n_tasks)


def van_de_ven_kd(scores, target_scores, T=2.0):
    """Their loss_fn_kd as at 86802a8 / 9c0ca78, written out: softmax targets padded with zeros,
    −Σ p log q averaged over batch and classes, times T²."""
    log_q = F.log_softmax(scores / T, dim=1)
    p = F.softmax(target_scores / T, dim=1)
    p = torch.cat([p, torch.zeros(len(p), scores.shape[1] - p.shape[1], dtype=p.dtype)], dim=1)
    return -(p * log_q).mean() * T**2


def test_van_de_ven_class_il_loss_matches_their_formula():
    from clrepro.methods.lwf import VAN_DE_VEN_CLASS_IL

    stream = class_stream()
    lwf = make_lwf(stream, **VAN_DE_VEN_CLASS_IL)
    train_task(lwf, stream.tasks[0])
    train_task(lwf, stream.tasks[1])
    x, y = train_task(lwf, stream.tasks[2])  # t = 3 (counted from 1): old units 0-3, seen 0-5
    out, old = lwf.model(x), lwf.teacher(x)
    kd = van_de_ven_kd(out[:, :6], old[:, :4])
    expected = F.cross_entropy(out[:, :6], y) / 3 + (1 - 1 / 3) * kd
    torch.testing.assert_close(lwf.loss(Batch(x, y, 2)), expected)
    assert [g.tolist() for g in lwf.old_unit_groups(2)] == [[0, 1, 2, 3, 4, 5]]


def test_padded_teacher_pushes_new_inputs_away_from_the_new_units():
    student = logits(7, k=4).requires_grad_(True)
    teacher = logits(8, k=2)
    distillation(student, teacher, 2.0, "ce", reduction="batch_classes").backward()
    assert (student.grad[:, 2:] > 0).all()  # gradient descent lowers the new units' logits
    # KL and cross-entropy forms differ by the teacher's entropy only: same gradient with padding too
    kl = logits(7, k=4).requires_grad_(True)
    distillation(kl, teacher, 2.0, "kl", reduction="batch_classes").backward()
    torch.testing.assert_close(kl.grad, student.grad)
    other = logits(9, k=4).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: distillation(s, teacher, 2.0, "kl"), (other,))


def test_reduction_over_batch_and_classes_divides_by_the_units():
    student, teacher = logits(10, k=5), logits(11, k=5)
    assert distillation(student, teacher, reduction="batch_classes").item() == pytest.approx(
        distillation(student, teacher).item() / 5)


def test_pad_teacher_needs_seen_or_all_units():
    from clrepro.config import BenchmarkConfig

    with pytest.raises(ConfigError, match="method_params.pad_teacher"):
        Experiment("lwf/x", BenchmarkConfig("split_mnist", "class"), "lwf", {"pad_teacher": True})
    with pytest.raises(ConfigError, match="method_params.reduction"):
        Experiment("lwf/x", BenchmarkConfig("split_mnist", "class"), "lwf", {"reduction": "sum"})
