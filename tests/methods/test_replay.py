import pytest
import torch

from clrepro.config import ConfigError, ModelConfig, TrainConfig
from clrepro.data.streams import Stream, Task
from clrepro.methods import build_method
from clrepro.methods.base import Batch
from clrepro.models import build_model


def class_stream(n_tasks=3, n=40, seed=0):
    """A Class-IL synthetic stream: task t holds classes 2t, 2t+1 (inputs in [0, 1])."""
    g = torch.Generator().manual_seed(seed)
    tasks = []
    for t in range(n_tasks):
        x = torch.randint(0, 256, (n, 784), generator=g, dtype=torch.uint8)
        y = torch.randint(2 * t, 2 * t + 2, (n,), generator=g)
        tasks.append(Task(t, f"t{t}", (2 * t, 2 * t + 1), x[:30], y[:30], x[30:], y[30:]))
    return Stream("synthetic", "class", tuple(tasks), 2 * n_tasks)


def train(method_name, params, stream, lr=0.1, batch_size=8, seed=0):
    """The clrepro.train loop, step for step, on a synthetic stream."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig(hidden=(16,)), stream.n_outputs)
    method = build_method(method_name, params, model, stream)
    cfg = TrainConfig(lr=lr, batch_size=batch_size)
    g = torch.Generator().manual_seed(seed)
    for task in stream.tasks:
        x, y = task.train_tensors()
        method.begin_task(task, x, y)
        optimizer = method.make_optimizer(cfg)
        for _ in range(0, len(x), batch_size):
            idx = torch.randperm(len(x), generator=g)[:batch_size]
            batch = Batch(x[idx], y[idx], task.index)
            optimizer.zero_grad(set_to_none=True)
            method.loss(batch).backward()
            method.transform_gradients(batch)
            optimizer.step()
            method.after_step(batch)
        method.end_task(task, x, y)
    return method


@pytest.mark.parametrize("scenario", ["class", "task"])
def test_er_with_a_zero_size_buffer_equals_finetune_exactly(scenario, tiny_stream):
    stream = class_stream() if scenario == "class" else tiny_stream
    er = train("er", {"buffer_size": 0}, stream)
    sgd = train("finetune", {}, stream)
    for a, b in zip(er.model.parameters(), sgd.model.parameters(), strict=True):
        assert torch.equal(a, b)
    # and a real buffer does change the result
    er200 = train("er", {"buffer_size": 20}, stream)
    assert not all(torch.equal(a, b) for a, b in zip(er200.model.parameters(), sgd.model.parameters(), strict=True))


def test_der_with_a_zero_size_buffer_equals_finetune_exactly():
    stream = class_stream()
    for name in ("der", "derpp"):
        der = train(name, {"buffer_size": 0}, stream)
        sgd = train("finetune", {}, stream)
        assert all(torch.equal(a, b) for a, b in zip(der.model.parameters(), sgd.model.parameters(), strict=True))


def test_er_replays_the_union_of_stream_and_buffer():
    stream = class_stream()
    method = train("er", {"buffer_size": 30, "minibatch_size": 5}, stream)
    x, y = stream.tasks[0].train_tensors()
    batch = Batch(x[:8], y[:8], 2)
    # the union's cross-entropy, recomputed by hand with the same replay draw
    state = method.buffer.generator.get_state()
    loss = method.loss(batch)
    method.buffer.generator.set_state(state)
    replay = method.buffer.sample(5)
    expected = torch.nn.functional.cross_entropy(
        method.model(torch.cat([batch.x, replay.x])), torch.cat([batch.y, replay.y]))
    assert torch.allclose(loss, expected)
    # reservoir over the whole stream: every task is represented in the buffer
    assert set(method.buffer.task.tolist()) == {0, 1, 2}


def test_bias_control_changes_only_its_two_scalars():
    stream = class_stream()
    method = train("er", {"buffer_size": 30, "bic_epochs": 3}, stream)  # trained through two tasks
    before = [p.detach().clone() for p in method.model.parameters()]
    bic_before = method.bic.clone()
    task = stream.tasks[2]
    method.end_task(task, *task.train_tensors())  # bias control off: nothing happens
    assert torch.equal(method.bic, bic_before)

    method = train("er", {"buffer_size": 30, "bias_control": True, "bic_epochs": 3}, stream)
    before = [p.detach().clone() for p in method.model.parameters()]
    bic_before = method.bic.clone()
    method.end_task(task, *task.train_tensors())
    assert all(torch.equal(a, b) for a, b in zip(before, method.model.parameters(), strict=True))
    assert method.bic.shape == (2,) and not torch.equal(method.bic, bic_before)
    assert method.bic_units == [4, 5]
    # prediction: only the last task's units move, by w·o + b
    x = task.train_tensors()[0][:4]
    raw, corrected = method.model(x), method.logits(x, 2)
    w, b = method.bic[1], method.bic[0]
    assert torch.allclose(corrected[:, :4], raw[:, :4])
    assert torch.allclose(corrected[:, 4:], raw[:, 4:] * w + b)


def test_exponential_lr_decay_per_example_seen():
    stream = class_stream()
    method = train("er", {"buffer_size": 10, "lr_decay": 0.99}, stream, lr=0.1)
    assert method.buffer.seen == 96  # 3 tasks × 4 steps × 8
    assert method.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.99 ** 96)
    method = train("er", {"buffer_size": 10}, stream, lr=0.1)
    assert method.optimizer.param_groups[0]["lr"] == 0.1


def test_der_stores_the_logits_seen_at_insertion_not_recomputed_ones():
    stream = class_stream()
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=(16,)), stream.n_outputs)
    method = build_method("der", {"buffer_size": 50}, model, stream)
    optimizer = method.make_optimizer(TrainConfig(lr=0.5, batch_size=10))
    x, y = stream.tasks[0].train_tensors()
    batches = [Batch(x[i:i + 10], y[i:i + 10], 0) for i in range(0, 30, 10)]
    with torch.no_grad():
        before_step = model(batches[0].x).clone()  # the logits the first batch gets in its own step
    for batch in batches:
        optimizer.zero_grad()
        method.loss(batch).backward()
        optimizer.step()
        method.after_step(batch)
    assert len(method.buffer) == 30
    assert torch.allclose(method.buffer.logits[:10], before_step)  # insertion-time logits
    with torch.no_grad():
        now = model(method.buffer.x[:10])
    assert not torch.allclose(method.buffer.logits[:10], now, atol=1e-3)  # not what the model says now


def test_der_task_end_fill_recomputes_logits_after_the_task():
    stream = class_stream()
    method = train("der", {"buffer_size": 12, "fill": "task_end"}, stream)
    assert len(method.buffer) == 12 and torch.bincount(method.buffer.y).tolist() == [2] * 6
    last = method.buffer.task == 2
    with torch.no_grad():
        method.model.eval()
        assert torch.allclose(method.buffer.logits[last], method.model(method.buffer.x[last]))


def test_derpp_adds_beta_ce_on_a_second_minibatch():
    stream = class_stream()
    der = train("derpp", {"buffer_size": 20, "beta": 0.0}, stream)
    plain = train("der", {"buffer_size": 20}, stream)
    assert all(torch.equal(a, b) for a, b in zip(der.model.parameters(), plain.model.parameters(), strict=True))
    derpp = train("derpp", {"buffer_size": 20, "beta": 1.0}, stream)
    assert not all(torch.equal(a, b) for a, b in zip(derpp.model.parameters(), plain.model.parameters(), strict=True))


@pytest.mark.parametrize("method,params,name", [
    ("er", {"buffer_size": -1}, "buffer_size"), ("er", {"sampling": "fifo"}, "sampling"),
    ("er", {"lr_decay": 1.5}, "lr_decay"), ("er", {"minibatch_size": 0}, "minibatch_size"),
    ("der", {"alpha": -1.0}, "alpha"), ("der", {"fill": "ring"}, "fill"), ("derpp", {"beta": -0.1}, "beta"),
])
def test_invalid_params_name_the_parameter(method, params, name, tiny_stream):
    with pytest.raises(ConfigError, match=f"method_params.{name}"):
        build_method(method, params, build_model(ModelConfig(hidden=(4,)), 4), tiny_stream)
