"""SDFT on the tiny transformer (part B): learn a new string task from expert demonstrations.

    SFT         cross-entropy on the expert's answers (lower case: not the model's style)
    SDFT        y ~ π_θ(·|x) (the student, query only, on-policy); the teacher π_θ̄(·|x, c) sees
                the expert's demonstration c for this query; minimise Σ_t KL over the full
                vocabulary at every answer position, teacher under stop-gradient; θ̄ an EMA of θ
                (or frozen at θ0, or live = θ)
    off-policy  the same KL, but y ~ teacher (distillation on the teacher's own samples)

The new task is a mapping in the in-context family, named by a placeholder token the base model
has never seen used consistently, so the base is weak zero-shot and strong with a demonstration.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from clrepro.lm import tinylm as lm
from clrepro.lm.distill import DIRECTIONS, distillation_loss, ema_update, forward_kl
from clrepro.lm.sweep import over_seeds
from clrepro.run.runner import cache_dir

METHODS = ("sft", "sdft", "offpolicy")
TEACHERS = ("ema", "frozen", "live")


@dataclass(frozen=True)
class NewTask:
    op: str = "reverse_shift1"
    token: str = "U1"

    def expert(self, query: str) -> str:
        """The expert's demonstration: the right content, in the expert's (lower-case) style."""
        return lm.OPS[self.op](query)

    def student_prompt(self, query: str) -> tuple[str, ...]:
        return lm.zero_shot(self.token, query)

    def teacher_prompt(self, query: str, demo: tuple[str, str]) -> tuple[str, ...]:
        return lm.in_context(self.token, [demo], query)


@dataclass(frozen=True)
class LMFinetune:
    method: str = "sdft"
    teacher: str = "ema"
    direction: str = "forward"
    ema_rate: float = 0.01
    lr: float = 3e-4
    steps: int = 300
    batch_size: int = 32
    temperature: float = 1.0
    max_new: int = 8

    def __post_init__(self) -> None:
        for name, value, allowed in (("method", self.method, METHODS), ("teacher", self.teacher, TEACHERS),
                                     ("direction", self.direction, DIRECTIONS)):
            if value not in allowed:
                raise ValueError(f"{name}: unknown {value!r}; one of {allowed}")

    @property
    def label(self) -> str:
        if self.method == "sft":
            return "sft"
        parts = [self.method] + ([] if self.teacher == "ema" else [self.teacher]) + (
            [] if self.direction == "forward" else ["reverse"])
        return "_".join(parts)


def sequences_with(prompts: torch.Tensor, completions: torch.Tensor) -> torch.Tensor:
    return torch.cat([prompts, completions], 1)


def completion_logits(model: nn.Module, prompts: torch.Tensor, completions: torch.Tensor) -> torch.Tensor:
    """Logits that predict each completion token: [B, M, V] (prompts left-padded to a common length)."""
    logits = model(sequences_with(prompts, completions))
    start = prompts.shape[1] - 1
    return logits[:, start:start + completions.shape[1]]


def sample_completions(model: nn.Module, prompts: torch.Tensor, cfg: LMFinetune,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    was_training = model.training
    model.eval()
    out = lm.generate(model, prompts, cfg.max_new, cfg.temperature, generator)
    model.train(was_training)
    return out


def sdft_loss(student: nn.Module, teacher: nn.Module, task: NewTask, queries: Sequence[str], cfg: LMFinetune,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """One SDFT (or off-policy) loss on a batch of queries."""
    demos = [(q, task.expert(q)) for q in queries]
    student_prompts = lm.pad_left([lm.encode(task.student_prompt(q)) for q in queries])
    teacher_prompts = lm.pad_left([lm.encode(task.teacher_prompt(q, d)) for q, d in zip(queries, demos, strict=True)])
    if cfg.method == "sdft":  # on-policy: the student answers the bare query
        y = sample_completions(student, student_prompts, cfg, generator)
    else:  # off-policy: the teacher answers with the demonstration in view
        y = sample_completions(teacher, teacher_prompts, cfg, generator)
    with torch.no_grad():
        teacher_logits = completion_logits(teacher, teacher_prompts, y)
    student_logits = completion_logits(student, student_prompts, y)
    return distillation_loss(cfg.direction, teacher_logits, student_logits, mask=y != lm.PAD)


def sft_loss(model: nn.Module, task: NewTask, queries: Sequence[str]) -> torch.Tensor:
    examples = [lm.Example(task.student_prompt(q), task.expert(q)) for q in queries]
    return lm.next_token_loss(model, *lm.training_batch(examples))


def finetune(base: nn.Module, task: NewTask, train_queries: Sequence[str], cfg: LMFinetune, seed: int) -> nn.Module:
    """Adam on batches of the new task's training queries, `steps` steps."""
    rng, generator = random.Random(seed), torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    student = copy.deepcopy(base).train()
    if cfg.teacher == "frozen":
        teacher = base
    elif cfg.teacher == "live":
        teacher = student  # the current weights, under no_grad in the loss
    else:
        teacher = copy.deepcopy(base).eval()
    optimizer = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    for _ in range(cfg.steps):
        queries = rng.sample(list(train_queries), min(cfg.batch_size, len(train_queries)))
        loss = sft_loss(student, task, queries) if cfg.method == "sft" else sdft_loss(
            student, teacher, task, queries, cfg, generator)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        if cfg.method != "sft" and cfg.teacher == "ema":
            ema_update(teacher, student, cfg.ema_rate)
    return student.eval()


# ---------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class EvalSet:
    new_queries: tuple[str, ...]
    skill_examples: tuple[tuple[int, str], ...]  # (skill index, query)
    icl_examples: tuple[lm.Example, ...]  # in-context episodes, demos not containing the query


def eval_set(seed: int, n: int, task: NewTask, exclude: set[str] = frozenset()) -> EvalSet:
    rng = random.Random(10_000 + seed)
    words = []
    while len(words) < n:
        w = lm.random_word(rng)
        if w not in exclude:
            words.append(w)
    skills = tuple((i % len(lm.SKILLS), lm.random_word(rng)) for i in range(n))
    icl_ops = [op for op in lm.FAMILY if op != task.op]
    icl = tuple(lm.icl_example(rng, icl_ops[i % len(icl_ops)], 2) for i in range(n))
    return EvalSet(tuple(words), skills, icl)


def _accuracy(predicted: Sequence[str], expected: Sequence[str], strict: bool) -> float:
    if strict:
        hits = [p == e for p, e in zip(predicted, expected, strict=True)]
    else:
        hits = [p.lower() == e.lower() for p, e in zip(predicted, expected, strict=True)]
    return 100.0 * sum(hits) / max(1, len(hits))


@torch.no_grad()
def kl_to_base(model: nn.Module, base: nn.Module, task: NewTask, queries: Sequence[str], max_new: int = 8) -> float:
    """E_x Σ_t KL(π0 ‖ π) along the model's own greedy answer to the new task's prompts."""
    prompts = lm.pad_left([lm.encode(task.student_prompt(q)) for q in queries])
    y = lm.generate(model, prompts, max_new)
    per_token = forward_kl(completion_logits(base, prompts, y), completion_logits(model, prompts, y))
    return float((per_token * (y != lm.PAD)).sum(1).mean())


def evaluate(model: nn.Module, base: nn.Module, task: NewTask, ev: EvalSet) -> dict[str, float]:
    new = lm.answers(model, [task.student_prompt(q) for q in ev.new_queries])
    new_expected = [lm.own_style(task.expert(q)) for q in ev.new_queries]
    skills = lm.answers(model, [lm.zero_shot(lm.SKILL_TOKENS[s], q) for s, q in ev.skill_examples])
    skills_expected = [lm.own_style(lm.OPS[lm.SKILLS[s]](q)) for s, q in ev.skill_examples]
    icl = lm.answers(model, [ex.prompt for ex in ev.icl_examples])
    icl_expected = [ex.answer for ex in ev.icl_examples]
    return {
        "new_task": _accuracy(new, new_expected, strict=False),
        "new_task_own_style": _accuracy(new, new_expected, strict=True),
        "old_strict": _accuracy(skills, skills_expected, strict=True),
        "old_content": _accuracy(skills, skills_expected, strict=False),
        "icl_strict": _accuracy(icl, icl_expected, strict=True),
        "kl_to_base": kl_to_base(model, base, task, ev.new_queries),
    }


def teacher_accuracy(model: nn.Module, task: NewTask, queries: Sequence[str]) -> float:
    """Content accuracy with the expert's demonstration for the same query in context (the teacher)."""
    out = lm.answers(model, [task.teacher_prompt(q, (q, task.expert(q))) for q in queries])
    return _accuracy(out, [task.expert(q) for q in queries], strict=False)


# ---------------------------------------------------------------- the experiment: bases × fine-tunings, per seed


@dataclass(frozen=True)
class PartB:
    """Sizes of part B. One base per in-context fraction; `finetunes` run from the base at
    `main_icl_fraction`, `trend_finetunes` from every base (the in-context-ability trend)."""
    model: lm.LMConfig = lm.LMConfig(d_model=64, n_layers=2, n_heads=4)
    pretrain_steps: int = 4000
    pretrain_lr: float = 3e-3
    batch_size: int = 32
    n_train: int = 256
    n_eval: int = 200
    icl_fractions: tuple[float, ...] = (0.5, 0.2, 0.05)
    main_icl_fraction: float = 0.5
    finetunes: tuple[LMFinetune, ...] = ()
    trend_finetunes: tuple[LMFinetune, ...] = ()


def _cache(part: PartB, seed: int, kind: str, suffix: str):
    folder = cache_dir()  # build/cache/ of the repository, like every other run's (CLREPRO_CACHE)
    if folder is None:
        return None
    here = Path(__file__).parent
    digest = hashlib.sha256(b"".join((here / f).read_bytes() for f in ("tinylm.py", "sdft.py", "distill.py")))
    digest.update(json.dumps([asdict(part), seed, kind], sort_keys=True, default=str).encode())
    return folder / f"sdftlm-{kind}-{digest.hexdigest()[:32]}.{suffix}"


def base_model(part: PartB, icl_fraction: float, seed: int) -> nn.Module:
    """Pretrain (or load from the cache) the base model for one in-context fraction."""
    path = _cache(part, seed, f"base{icl_fraction}", "pt")
    model = lm.TinyLM(part.model)
    if path is not None and path.exists():
        model.load_state_dict(torch.load(path))
        return model.eval()
    torch.manual_seed(seed)
    model = lm.TinyLM(part.model)
    lm.pretrain(model, lm.PretrainMix(icl_fraction=icl_fraction), part.pretrain_steps, part.batch_size,
                part.pretrain_lr, seed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    return model.eval()


def run_seed(part: PartB, seed: int):
    """Every base and fine-tuning of one seed: one row per model, with its metrics and CPU seconds."""
    path = _cache(part, seed, "rows", "csv")
    if path is not None and path.exists():
        return pd.read_csv(path, dtype={"params": str})
    torch.set_num_threads(1)
    task = NewTask()
    ev = eval_set(seed, part.n_eval, task)
    rng = random.Random(seed)
    train_queries = []
    while len(train_queries) < part.n_train:
        w = lm.random_word(rng)
        if w not in ev.new_queries:
            train_queries.append(w)
    rows = []
    for icl in part.icl_fractions:
        start = time.process_time()
        base = base_model(part, icl, seed)
        common = {"seed": seed, "icl_fraction": icl}
        rows.append({**common, "method": "base", "params": "{}", "cpu_seconds": time.process_time() - start,
                     **evaluate(base, base, task, ev), "teacher_acc": teacher_accuracy(base, task, ev.new_queries)})
        runs = part.trend_finetunes + (part.finetunes if icl == part.main_icl_fraction else ())
        for i, cfg in enumerate(runs):
            start = time.process_time()
            tuned = finetune(base, task, train_queries, cfg, seed * 100 + i)
            params = json.dumps({"lr": cfg.lr, "steps": cfg.steps, "icl_fraction": icl}, sort_keys=True)
            rows.append({**common, "method": cfg.label, "params": params,
                         "cpu_seconds": time.process_time() - start, **evaluate(tuned, base, task, ev)})
    frame = pd.DataFrame(rows)
    if path is not None:
        tmp = path.with_suffix(".tmp")
        frame.to_csv(tmp, index=False)
        os.replace(tmp, path)
    return frame


def sweep(part: PartB, seeds: list[int], jobs: int | None = None) -> pd.DataFrame:
    """Every seed's rows (clrepro.lm.sweep.over_seeds: one worker process per seed, up to jobs)."""
    return pd.concat(over_seeds(run_seed, seeds, part, jobs=jobs), ignore_index=True)


def tidy_rows(frame, experiment: str):
    """Accuracy-table rows: task 0 = old skills (strict), task 1 = the new task; after_task 0 =
    the base, 1 = the fine-tuned model; the other measurements ride along as extra columns."""
    records = []
    bases = frame[frame["method"] == "base"].set_index(["seed", "icl_fraction"])
    extra = ["old_content", "icl_strict", "kl_to_base", "new_task_own_style", "cpu_seconds"]
    for _, row in frame[frame["method"] != "base"].iterrows():
        base = bases.loc[(row["seed"], row["icl_fraction"])]
        common = dict(experiment=experiment, method=row["method"], benchmark="string_tasks", scenario="task",
                      params=row["params"], seed=row["seed"], kind="R", epoch=float("nan"), seconds=row["cpu_seconds"])
        for after, source in ((0, base), (1, row)):
            for task, column in enumerate(("old_strict", "new_task")):
                records.append({**common, "after_task": after, "eval_task": task, "accuracy": source[column],
                                **{c: source[c] for c in extra}})
    return pd.DataFrame.from_records(records)
