"""Seeds in lockstep: S seeds of one experiment trained as one batched model (issue 18 §2).

Every seed keeps what a one-seed run (clrepro.train.run) has: its own stream, its own initial
weights (each seed's model is built after seed_everything(seed), exactly as train.run builds it,
then the S models are stacked), its own minibatch order (its own generator) and its own method
state (its own Method object: buffer, Fisher, ...). Only the arithmetic of the training step is
shared: every weight gets a leading seed dimension, one batched matmul (torch.baddbmm) runs the
S seeds' layer at once, and the loss is the sum over seeds of each seed's own loss, so each
seed's gradient is exactly its own loss's gradient (no parameter is shared). SGD and Adam act
elementwise, so one optimiser over the stacked tensors is S independent optimisers.

At batch 10 a one-seed step is dominated by per-operation overhead, not arithmetic, so S seeds
cost little more than one (benchmarks/lockstep.py measures it).

Not bit-identical to the one-seed path: a batched matmul sums in another order than a plain one,
so the weights differ at float rounding (≲1e-6 after the first steps), and over a whole run a
prediction near a decision boundary may flip now and then (tests/test_lockstep.py states the
tolerances). Each path on its own is deterministic.

The hooks (end_task: EWC's Fisher, BiC, DER's task-end fill), A-GEM's draws from its memory and
the evaluation run per seed on that seed's own nn.Module, with the stacked weights copied in
first and with that seed's own global (CPU) RNG state, so they go through the very code of the
one-seed path. (On CUDA, draws a method makes on the device's own generator, e.g. a sampled
Fisher, are not kept apart per seed: still random, but not the one-seed run's draws.)

Supported (lockstep_supported): the MLP without dropout; fine-tuning, L2, EWC / online EWC,
ER (reservoir or balanced sampling, no lr decay), DER, DER++, A-GEM and LwF (every loss variant,
without warm-up). Everything else (OGD, PNN, sharpening, joint, the ResNet) runs one seed at a time
(run_lockstep falls back to clrepro.train.run).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clrepro.config import TrainConfig
from clrepro.data.streams import Stream, build_stream, to_float
from clrepro.experiment import Experiment
from clrepro.methods import Method, build_method, validate_params
from clrepro.methods.ewc import QuadraticPenalty
from clrepro.models import build_model
from clrepro.train import (
    RunResult,
    TaskHook,
    cells_to_evaluate,
    evaluate_both,
    minibatches,
    record_curve,
    run,
    seed_everything,
)


# --- which experiments ----------------------------------------------------------------------
def _always(params) -> bool:
    return True


def _er_supported(params) -> bool:
    # Loss-aware sampling scores items by each step's losses and ELrD changes the lr per example
    # seen: both would need per-seed bookkeeping inside the step, so they run one seed at a time.
    return params.sampling != "loss_aware" and params.lr_decay == 1.0


def _lwf_supported(params) -> bool:
    return params.warmup_steps == 0  # the warm-up freezes all but the head: not batched (yet)


SUPPORTED: dict[str, Callable[[object], bool]] = {
    "finetune": _always, "l2": _always, "ewc": _always, "online_ewc": _always,
    "er": _er_supported, "der": _always, "derpp": _always, "agem": _always, "lwf": _lwf_supported,
}


def lockstep_supported(experiment: Experiment) -> bool:
    """Whether run_lockstep trains this experiment's seeds as one batched model (otherwise it
    runs them one at a time)."""
    model = experiment.model
    if model.kind != "mlp" or model.dropout_input > 0 or model.dropout_hidden > 0:
        return False  # dropout masks come from the global RNG, one seed at a time
    check = SUPPORTED.get(experiment.method)
    return check is not None and check(validate_params(experiment.method, experiment.method_params))


# --- the stacked network --------------------------------------------------------------------
class StackedMLP:
    """S copies of one MLP architecture with their weights stacked along a leading seed dimension.

    A Linear layer's weight is kept transposed, [S, in, out], so that its gradient comes out of
    the batched matmul in the layout of the parameter: with [S, out, in] autograd has to copy
    every weight gradient into place, which took a third of the step at batch 10.
    """

    def __init__(self, models: list[nn.Module], trainable: bool = True) -> None:
        self.names = [name for name, _ in models[0].named_parameters()]
        self.transposed = [p.dim() == 2 for _, p in models[0].named_parameters()]
        self.params = [
            self.stack([dict(m.named_parameters())[name].detach() for m in models], k).requires_grad_(trainable)
            for k, name in enumerate(self.names)
        ]
        index = {name: i for i, name in enumerate(self.names)}
        self.ops: list[tuple[int, int | None] | nn.Module] = []  # (weight, bias) or an activation
        for prefix, module in [*((f"features.{i}", m) for i, m in enumerate(models[0].features)),
                               ("head", models[0].head)]:
            if isinstance(module, nn.Linear):
                self.ops.append((index[f"{prefix}.weight"], index.get(f"{prefix}.bias")))
            elif isinstance(module, nn.Dropout):
                raise ValueError("lockstep: dropout is not supported (lockstep_supported says so)")
            else:
                self.ops.append(module)

    def stack(self, per_seed: list[torch.Tensor], k: int) -> torch.Tensor:
        """Per-seed tensors shaped like parameter k (its values, a Fisher, ...) in the stacked layout."""
        return torch.stack([t.T if self.transposed[k] else t for t in per_seed]).contiguous()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [S, N, in] → logits [S, N, out]."""
        for op in self.ops:
            if isinstance(op, tuple):
                weight = self.params[op[0]]
                if op[1] is None:
                    x = torch.bmm(x, weight)
                else:
                    x = torch.baddbmm(self.params[op[1]].unsqueeze(1), x, weight)
            else:
                x = op(x)
        return x

    @torch.no_grad()
    def copy_into(self, s: int, model: nn.Module) -> None:
        """Seed s's weights into its own module (for its hooks and its evaluation)."""
        own = dict(model.named_parameters())
        for name, stacked, transposed in zip(self.names, self.params, self.transposed, strict=True):
            own[name].copy_(stacked[s].T if transposed else stacked[s])

    def finite(self, s: int) -> bool:
        return all(torch.isfinite(p[s]).all() for p in self.params)


def _make_optimizer(params: list[torch.Tensor], cfg: TrainConfig) -> torch.optim.Optimizer:
    """Method.make_optimizer over the stacked tensors (elementwise updates: S optimisers in one)."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


# --- one seed's state -----------------------------------------------------------------------
@dataclass
class _Seed:
    seed: int
    stream: Stream
    method: Method
    generator: torch.Generator
    rng: torch.Tensor  # this seed's global torch RNG state between its hooks
    accuracy: np.ndarray
    task_il: np.ndarray | None
    initial: np.ndarray | None = None
    task_il_initial: np.ndarray | None = None
    curves: list = field(default_factory=list)
    diverged_at: int | None = None


@contextmanager
def _own_rng(state: _Seed) -> Iterator[None]:
    """Run a hook with the seed's own global RNG, as if it were the only run in the process."""
    outer = torch.get_rng_state()
    torch.set_rng_state(state.rng)
    try:
        yield
    finally:
        state.rng = torch.get_rng_state()
        torch.set_rng_state(outer)


def _build_seed(experiment: Experiment, seed: int, device: str, data_dir: str | None) -> _Seed:
    """Exactly train.run's construction order, so the weights and generators are the same."""
    seed_everything(seed)
    stream = build_stream(experiment.benchmark, seed, data_dir)
    model = build_model(experiment.model, stream.n_outputs).to(device)
    method = build_method(experiment.method, experiment.method_params, model, stream)
    n = len(stream)
    return _Seed(seed, stream, method, torch.Generator().manual_seed(seed), torch.get_rng_state(),
                 np.full((n, n), np.nan), np.full((n, n), np.nan) if stream.scenario == "class" else None)


# --- the batched losses ---------------------------------------------------------------------
@dataclass
class _Step:
    x: torch.Tensor  # [S, B, in], float
    y: torch.Tensor  # [S, B]
    task: int


def _per_seed_ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[S] mean cross-entropy of each seed (out [S, N, C], y [S, N])."""
    return F.cross_entropy(out.transpose(1, 2), y, reduction="none").mean(1)


def _mask(methods: list[Method], out: torch.Tensor, tasks: int | torch.Tensor) -> torch.Tensor:
    """Task-IL masking as ReplayMethod.masked / Method.logits (the masks are the same for every seed)."""
    masks = methods[0]._masks
    if masks[0] is None:
        return out
    if isinstance(tasks, int):
        return out.masked_fill(~masks[tasks], float("-inf"))
    return out.masked_fill(~torch.stack(masks)[tasks], float("-inf"))


def _plain_loss(net: StackedMLP, methods: list[Method], step: _Step) -> torch.Tensor:
    """Fine-tuning, L2, EWC: each seed's cross-entropy (the penalty is added to the gradients)."""
    return _per_seed_ce(_mask(methods, net(step.x), step.task), step.y).sum()


def _er_loss(net: StackedMLP, methods: list[Method], step: _Step) -> torch.Tensor:
    """ER: one cross-entropy over the stream batch and each seed's own replay minibatch."""
    if not len(methods[0].buffer):  # every seed has seen as many examples, so all are empty
        return _plain_loss(net, methods, step)
    replays = [m.buffer.sample(m.params.minibatch_size) for m in methods]
    x = torch.cat([step.x, torch.stack([r.x for r in replays])], 1)
    y = torch.cat([step.y, torch.stack([r.y for r in replays])], 1)
    tasks = torch.cat([torch.full_like(step.y, step.task), torch.stack([r.task for r in replays])], 1)
    return _per_seed_ce(_mask(methods, net(x), tasks), y).sum()


def _er_after_step(methods: list[Method], step: _Step, stream_logits: torch.Tensor | None) -> None:
    for s, m in enumerate(methods):
        m.buffer.add(step.x[s], step.y[s], step.task)


def _der_loss(net: StackedMLP, methods: list[Method], step: _Step) -> tuple[torch.Tensor, torch.Tensor]:
    """DER / DER++ with every seed's replay minibatches in the same forward as its stream batch.
    Returns the loss and the raw stream logits (what reservoir insertion stores)."""
    params = methods[0].params
    beta = getattr(params, "beta", 0.0)
    parts = [step.x]
    first = second = None
    if len(methods[0].buffer):
        first = [m.buffer.sample(params.minibatch_size) for m in methods]
        parts.append(torch.stack([r.x for r in first]))
        if beta:
            second = [m.buffer.sample(params.minibatch_size) for m in methods]
            parts.append(torch.stack([r.x for r in second]))
    out = net(torch.cat(parts, 1)) if len(parts) > 1 else net(step.x)
    b = step.x.shape[1]
    stream_out = out[:, :b]
    loss = _per_seed_ce(_mask(methods, stream_out, step.task), step.y)
    if first is not None:
        m1 = first[0].x.shape[0]
        target = torch.stack([r.logits for r in first])
        loss = loss + params.alpha * (out[:, b:b + m1] - target).pow(2).mean((1, 2))
        if second is not None:
            tasks = torch.stack([r.task for r in second])
            y2 = torch.stack([r.y for r in second])
            loss = loss + beta * _per_seed_ce(_mask(methods, out[:, b + m1:], tasks), y2)
    return loss.sum(), stream_out.detach()


def _der_after_step(methods: list[Method], step: _Step, stream_logits: torch.Tensor | None) -> None:
    if methods[0].params.fill == "reservoir":
        for s, m in enumerate(methods):
            m.buffer.add(step.x[s], step.y[s], step.task, logits=stream_logits[s])


def _lwf_loss(net: StackedMLP, methods: list[Method], step: _Step, teacher: StackedMLP | None) -> torch.Tensor:
    """LwF for every seed with the method's own pieces (new_task_logits, distillation_loss) on the
    seeds' rows laid end to end. Every term of LwF's loss is a mean over the batch's rows (the
    cross-entropy, the distillation's mean or batchmean, /K for reduction 'batch_classes'), with
    weights that do not depend on the seed, so S × (the loss over all S·B rows) = Σ_s loss_s: each
    seed's gradient is its own loss's."""
    m = methods[0]
    n_seeds = step.y.shape[0]
    out = net(step.x).flatten(0, 1)
    new = F.cross_entropy(m.new_task_logits(out, step.task), step.y.flatten())
    if teacher is None or m.params.lam_o == 0:
        return n_seeds * new
    with torch.no_grad():
        old_out = teacher(step.x).flatten(0, 1)
    old = m.distillation_loss(out, old_out, step.task)
    if m.params.weighting == "relative":  # as LwF.loss
        w = 1.0 / (step.task + 1)
        return n_seeds * (w * new + (1 - w) * m.params.lam_o * old)
    return n_seeds * (new + m.params.lam_o * old)


def _lwf_after_step(methods: list[Method], step: _Step, stream_logits: torch.Tensor | None) -> None:
    for m in methods:
        m.after_step(step)  # LwF counts the steps of the task (its batch argument is not read)


def _quadratic_transform(net: StackedMLP, seeds: list[_Seed]) -> Callable[[], None] | None:
    """QuadraticPenalty.transform_gradients on the stacked tensors: grad += 2·c·λ·A (θ − μ)."""
    methods = [st.method for st in seeds]
    if not isinstance(methods[0], QuadraticPenalty) or methods[0].coefficient == 0:
        return None
    state: dict[str, list[torch.Tensor]] = {}

    def restack() -> None:  # after every end_task: the seeds' own A and μ, stacked
        live = [st for st in seeds if st.diverged_at is None]
        if live[0].method.precision is None:
            return
        precision, center = [], []
        for k, like in enumerate(live[0].method.precision):
            # A diverged seed has no hooks run any more: zeros stand in for its (ignored) penalty.
            precision.append(net.stack([
                st.method.precision[k] if st.diverged_at is None else torch.zeros_like(like) for st in seeds], k))
            center.append(net.stack([
                st.method.center[k] if st.diverged_at is None else torch.zeros_like(like) for st in seeds], k))
        state["precision"], state["center"] = precision, center

    def transform() -> None:
        if "precision" not in state:
            return
        with torch.no_grad():
            diffs = torch._foreach_sub([p.detach() for p in net.params], state["center"])
            torch._foreach_mul_(diffs, state["precision"])
            torch._foreach_add_([p.grad for p in net.params], diffs, alpha=2 * methods[0].coefficient)

    transform.restack = restack  # type: ignore[attr-defined]
    return transform


def _agem_transform(net: StackedMLP, seeds: list[_Seed]) -> Callable[[], None]:
    """AGEM.transform_gradients for every seed at once: each seed's reference gradient on its own
    memory (drawn with its own global RNG, as the one-seed path draws it), then A-GEM's projection
    where that seed's g·g_ref < 0."""
    methods = [st.method for st in seeds]

    def transform() -> None:
        if not methods[0].memory:
            return
        picks = []
        for st in seeds:
            x, y, tasks = st.method._flat_memory
            with _own_rng(st):
                idx = torch.randperm(len(x), device=x.device)[:st.method.params.ref_batch]
            picks.append((x[idx], y[idx], tasks[idx]))
        x, y, tasks = (torch.stack(parts) for parts in zip(*picks, strict=True))
        ref = torch.autograd.grad(_per_seed_ce(_mask(methods, net(x), tasks), y).sum(), net.params)
        with torch.no_grad():
            g = torch.cat([p.grad.flatten(1) for p in net.params], 1)  # [S, P]
            g_ref = torch.cat([r.flatten(1) for r in ref], 1)
            dot = (g * g_ref).sum(1)
            scale = torch.where(dot < 0, dot / (g_ref * g_ref).sum(1), torch.zeros_like(dot))
            for p, r in zip(net.params, ref, strict=True):
                p.grad.sub_(scale.view(-1, *[1] * (r.dim() - 1)) * r)

    return transform


def _transform(net: StackedMLP, seeds: list[_Seed]):
    if seeds[0].method.name == "agem":
        return _agem_transform(net, seeds)
    return _quadratic_transform(net, seeds)


LOSSES = {"finetune": _plain_loss, "l2": _plain_loss, "ewc": _plain_loss, "online_ewc": _plain_loss,
          "agem": _plain_loss, "er": _er_loss, "der": _der_loss, "derpp": _der_loss, "lwf": _lwf_loss}
AFTER_STEP = {"er": _er_after_step, "der": _der_after_step, "derpp": _der_after_step, "lwf": _lwf_after_step}


# --- the loop -------------------------------------------------------------------------------
def _overrides(method: Method, hook: str) -> bool:
    """Whether the method has its own hook (the base ones do nothing: skip building their inputs)."""
    return getattr(type(method), hook) is not getattr(Method, hook)


def run_lockstep(
    experiment: Experiment, seeds: list[int], device: str = "cpu", data_dir: str | None = None,
    after_task: TaskHook | None = None,
) -> list[RunResult]:
    """One RunResult per seed, as clrepro.train.run returns it, with the seeds trained together.

    Falls back to one seed at a time where lockstep_supported is False. Each result's seconds
    (and train_seconds, cpu_seconds) is its share of the lockstep run's time (the total over S),
    so sums of per-run times stay the time spent. after_task(t, method) is train.run's hook, called
    for every seed in turn (in the order of seeds) with that seed's method and its weights.
    """
    seeds = list(seeds)
    if not lockstep_supported(experiment) or len(seeds) < 2:
        return [run(experiment, seed, device=device, data_dir=data_dir, after_task=after_task) for seed in seeds]
    started, cpu_started = time.perf_counter(), time.process_time()
    states = [_build_seed(experiment, seed, device, data_dir) for seed in seeds]
    sizes = {tuple(len(t.x_train) for t in st.stream.tasks) for st in states}
    if len(sizes) != 1:  # never by construction (subsampling takes the same count for every seed)
        return [run(experiment, seed, device=device, data_dir=data_dir, after_task=after_task) for seed in seeds]
    methods = [st.method for st in states]
    cfg = experiment.train
    n_tasks = len(states[0].stream)
    task_il = states[0].stream.scenario == "class"
    net = StackedMLP([m.model for m in methods])
    loss_fn = LOSSES[experiment.method]
    after_step = AFTER_STEP.get(experiment.method)
    transform = _transform(net, states)

    for st in states:
        with _own_rng(st):
            st.initial, st.task_il_initial = evaluate_both(st.method, st.stream, device, task_il=task_il)

    optimizer = None
    train_seconds = 0.0
    for t in range(n_tasks):
        live = [st for st in states if st.diverged_at is None]
        if not live:
            break
        tasks = [st.stream.tasks[t] for st in states]
        if _overrides(methods[0], "begin_task"):
            for st, task in zip(states, tasks, strict=True):
                if st.diverged_at is None:
                    with _own_rng(st):  # the hook sees the float tensors train.run gives it
                        st.method.begin_task(task, *task.train_tensors(device))
        # LwF: the seeds' teachers (frozen copies made by begin_task), stacked like the student
        teachers = [getattr(m, "teacher", None) for m in methods]
        teacher = None if any(tm is None for tm in teachers) else StackedMLP(teachers, trainable=False)
        if optimizer is None or cfg.reset_optimizer:
            optimizer = _make_optimizer(net.params, cfg)
            for m in methods:  # keeps each method's own bookkeeping (e.g. ER's batch size for BiC)
                m.make_optimizer(cfg)
        # Every seed's examples in one uint8 table (floats only per batch), row s·N + i = seed s's i-th:
        # one index_select gathers all seeds' minibatches (advanced indexing [s, i] was 5x slower).
        n = len(tasks[0].x_train)
        x_all = torch.cat([task.x_train for task in tasks])
        y_all = torch.cat([task.y_train for task in tasks])
        offsets = torch.arange(len(states))[:, None] * n
        last_epoch = 0
        task_started = time.perf_counter()
        for steps in zip(*(minibatches(n, cfg, st.generator) for st in states), strict=True):
            epoch = steps[0][0]
            if epoch != last_epoch:
                if cfg.eval_every and epoch % cfg.eval_every == 0:
                    _curves(net, states, device, t, cfg, epoch)
                last_epoch = epoch
            rows = (torch.stack([i for _, i in steps]) + offsets).flatten()  # each seed's own order
            shape = (len(states), -1)
            step = _Step(to_float(x_all.index_select(0, rows), device).view(*shape, x_all.shape[1]),
                         y_all.index_select(0, rows).to(device).view(shape), t)
            optimizer.zero_grad(set_to_none=True)
            out = loss_fn(net, methods, step, teacher) if loss_fn is _lwf_loss else loss_fn(net, methods, step)
            loss, stream_logits = out if isinstance(out, tuple) else (out, None)
            loss.backward()
            if transform is not None:
                transform()
            optimizer.step()
            if after_step is not None:
                after_step(methods, step, stream_logits)
        train_seconds += time.perf_counter() - task_started

        for s, (st, task) in enumerate(zip(states, tasks, strict=True)):
            if st.diverged_at is not None:
                continue
            net.copy_into(s, st.method.model)
            if not net.finite(s):  # as train.run: record what the diverged model predicts, then stop
                final = evaluate_both(st.method, st.stream, device, task_il=task_il)
                for row in range(t, n_tasks):
                    cells = cells_to_evaluate(row, n_tasks, cfg.full_matrix)
                    for matrix, values in zip((st.accuracy, st.task_il), final, strict=True):
                        if matrix is not None:
                            matrix[row, cells] = values[cells]
                st.diverged_at = t
                continue
            with _own_rng(st):
                if _overrides(st.method, "end_task"):
                    st.method.end_task(task, *task.train_tensors(device))
                if after_task is not None:
                    after_task(t, st.method)
                if cfg.eval_every and cfg.epochs is not None:
                    record_curve(st.curves, st.method, st.stream, device, t, cfg, cfg.epochs)
                st.accuracy[t], within = evaluate_both(
                    st.method, st.stream, device, cells_to_evaluate(t, n_tasks, cfg.full_matrix), task_il)
            if st.task_il is not None:
                st.task_il[t] = within
        if hasattr(transform, "restack") and any(st.diverged_at is None for st in states):
            transform.restack()

    share = (time.perf_counter() - started) / len(states)
    cpu_share = (time.process_time() - cpu_started) / len(states)
    return [
        RunResult(experiment, st.seed, st.accuracy, st.initial, st.curves, st.diverged_at, share,
                  train_seconds / len(states), st.task_il, st.task_il_initial, cpu_share)
        for st in states
    ]


def _curves(net: StackedMLP, states: list[_Seed], device, task: int, cfg: TrainConfig, epoch: int) -> None:
    for s, st in enumerate(states):
        if st.diverged_at is None:
            net.copy_into(s, st.method.model)
            record_curve(st.curves, st.method, st.stream, device, task, cfg, epoch)
