"""The context window as memory (the context-length notebook), on the tiny transformer of
`clrepro.lm.tinylm`.

A *task* is a small table of facts — key letter → value letter — bound to a *tag* token. Its
memory block is the tag followed by its facts as the expert writes them (lower case); the
model answers in its own style (upper case). A query prompt is

    <bos> [tag k v ; k v ; …]* tag k            →  V

— every block in the window, then the query's tag and key. The model pretrains on windows of
1…max_blocks blocks of random facts under random tags (keys distinct within a window), each
followed by several queries, so a tag means nothing outside its window: to answer, the model
must find the fact in the window (an induction-head lookup). With no block in the window
(`<bos> tag key`) only what fine-tuning wrote into the weights can answer.

Memory by context keeps the newest blocks that fit a token budget (`fit_window` drops the
oldest first); memory by weights fine-tunes tag + key → value with SFT or SDFT
(`clrepro.lm.sdft.finetune`; SDFT's teacher sees the fact in its window).

(A first design used the SDFT-lite notebook's string *mappings* as tasks: the 2-layer model
had learned none of them in context after 3,000 pretraining steps — 0 % even with a single
block — too slow for this CPU budget, so tasks are facts; see the notebook. Retrieval itself
is learned only with several supervised queries per window: with one, accuracy was still
~30 % after 3,000 steps; with four it jumps to >99 % after about 1,000.)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from clrepro.lm import tinylm as lm
from clrepro.lm.sdft import LMFinetune, NewTask, finetune
from clrepro.lm.sweep import over_seeds
from clrepro.run.runner import cache_dir

TAGS = tuple(lm.SKILL_TOKENS + lm.PLACEHOLDERS)  # eight tag tokens, meaningless outside a window
KEYS = tuple(lm.LOWER)


@dataclass(frozen=True)
class Block:
    """One task's memory in the window: its tag and its facts (key, value)."""

    tag: str
    facts: tuple[tuple[str, str], ...]

    def tokens(self) -> list[str]:
        out = [self.tag]
        for key, value in self.facts:
            out += [key, value, ";"]
        return out

    def lookup(self, key: str) -> str:
        return dict(self.facts)[key]


def prompt(blocks: Sequence[Block], tag: str, key: str) -> tuple[str, ...]:
    return ("<bos>", *(t for b in blocks for t in b.tokens()), tag, key)


ANSWER_TOKENS = 1  # the value letter
QUERY_TOKENS = 3 + ANSWER_TOKENS  # <bos>, tag, key, then the answer


def fit_window(blocks: Sequence[Block], budget: int, query_tokens: int = QUERY_TOKENS) -> list[Block]:
    """The newest blocks whose prompt (with the query and its answer) fits in `budget` tokens;
    the oldest material is dropped first, whole blocks at a time."""
    kept: list[Block] = []
    used = query_tokens
    for block in reversed(blocks):
        size = len(block.tokens())
        if used + size > budget:
            break
        kept.insert(0, block)
        used += size
    return kept


def random_blocks(rng: random.Random, n_blocks: int, n_facts: Sequence[int]) -> list[Block]:
    """Blocks under distinct tags with distinct keys across all of them."""
    if n_blocks > len(TAGS) or sum(n_facts) > len(KEYS):
        raise ValueError(f"{n_blocks} blocks of {sum(n_facts)} facts exceed {len(TAGS)} tags / {len(KEYS)} keys")
    keys, tags = rng.sample(KEYS, sum(n_facts)), rng.sample(TAGS, n_blocks)
    blocks, used = [], 0
    for tag, n in zip(tags, n_facts, strict=True):
        blocks.append(Block(tag, tuple((k, rng.choice(lm.LOWER)) for k in keys[used:used + n])))
        used += n
    return blocks


def query_example(rng: random.Random, blocks: Sequence[Block], target: int) -> lm.Example:
    """A query for one of blocks[target]'s facts."""
    key, value = rng.choice(blocks[target].facts)
    return lm.Example(prompt(blocks, blocks[target].tag, key), lm.own_style(value))


# ---------------------------------------------------------------- pretraining on windows


@dataclass(frozen=True)
class WindowMix:
    """Pretraining windows: 1…max_blocks blocks of 1…max_facts facts, then `n_queries`
    queries `tag k V ;` on facts of the window, each answer supervised (dense supervision is
    what makes the lookup learnable within a CPU budget)."""

    max_blocks: int = 4
    max_facts: int = 4
    n_queries: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.max_blocks <= len(TAGS):
            raise ValueError(f"max_blocks must be in [1, {len(TAGS)}], got {self.max_blocks}")
        if not 1 <= self.max_facts or self.max_blocks * self.max_facts > len(KEYS):
            raise ValueError(f"max_blocks × max_facts must be in [1, {len(KEYS)}]")
        if self.n_queries < 1:
            raise ValueError(f"n_queries must be ≥ 1, got {self.n_queries}")

    @property
    def longest_window(self) -> int:
        """Tokens of the longest window up to its first query's answer (what a query prompt
        of the evaluation can match)."""
        return 1 + self.max_blocks * (1 + 3 * self.max_facts) + QUERY_TOKENS - 1

    @property
    def train_length(self) -> int:
        """Longest pretraining sequence: the window and all its queries."""
        return 1 + self.max_blocks * (1 + 3 * self.max_facts) + 4 * self.n_queries

    def window(self, rng: random.Random) -> list[Block]:
        n_blocks = rng.randint(1, self.max_blocks)
        return random_blocks(rng, n_blocks, [rng.randint(1, self.max_facts) for _ in range(n_blocks)])

    def sample(self, rng: random.Random) -> lm.Example:
        """One window and one query (for evaluation)."""
        blocks = self.window(rng)
        return query_example(rng, blocks, rng.randrange(len(blocks)))

    def training_sequence(self, rng: random.Random) -> tuple[list[int], list[bool]]:
        """Token ids and, per position, whether the next token is a supervised answer."""
        blocks = self.window(rng)
        tokens = ["<bos>", *(t for b in blocks for t in b.tokens())]
        answer_next = [False] * len(tokens)
        for _ in range(self.n_queries):
            block = rng.choice(blocks)
            key, value = rng.choice(block.facts)
            tokens += [block.tag, key, lm.own_style(value), ";"]
            answer_next += [False, True, False, False]
        return lm.encode(tokens), answer_next


def training_batch(mix: WindowMix, rng: random.Random, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded sequences and the mask of positions whose next token is an answer."""
    sequences = [mix.training_sequence(rng) for _ in range(batch_size)]
    tokens = lm.pad_left([ids for ids, _ in sequences])
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    for row, (_, answer_next) in enumerate(sequences):
        mask[row, tokens.shape[1] - len(answer_next):] = torch.tensor(answer_next)
    return tokens, mask


def pretrain_base(cfg: lm.LMConfig, mix: WindowMix, steps: int, batch_size: int, lr: float, seed: int) -> nn.Module:
    """AdamW with warm-up and cosine decay (the schedule of `tinylm.pretrain`) on fresh windows."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = lm.TinyLM(cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    for _ in range(steps):
        tokens, mask = training_batch(mix, rng, batch_size)
        logits = model(tokens)[:, :-1]
        loss = nn.functional.cross_entropy(logits[mask[:, :-1]], tokens[:, 1:][mask[:, :-1]])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    return model.eval()


def accuracy(model: nn.Module, examples: Sequence[lm.Example]) -> float:
    """Accuracy in percent (case-insensitive: content, not style, as in the SDFT-lite notebook)."""
    got = lm.answers(model, [ex.prompt for ex in examples], max_new=ANSWER_TOKENS)
    return 100.0 * sum(g.lower() == ex.answer.lower() for g, ex in zip(got, examples, strict=True)) / len(examples)


# ---------------------------------------------------------------- a stream of tasks


@dataclass(frozen=True)
class StreamTask(NewTask):
    """A task of the stream: its facts under its tag. The SDFT teacher sees the queried fact in
    the same window format as at inference."""

    block: Block = field(default=Block("U0", ()))

    def expert(self, query: str) -> str:
        return self.block.lookup(query)

    def student_prompt(self, query: str) -> tuple[str, ...]:
        return prompt([], self.token, query)

    def teacher_prompt(self, query: str, demo: tuple[str, str]) -> tuple[str, ...]:
        return prompt([Block(self.token, (demo,))], self.token, query)


def make_stream(seed: int, n_tasks: int, n_facts: int) -> list[StreamTask]:
    """n_tasks tasks under distinct tags, keys distinct across the stream, in a seeded order."""
    if not 1 <= n_tasks <= len(TAGS) or n_tasks * n_facts > len(KEYS):
        raise ValueError(f"n_tasks must be in [1, {len(TAGS)}] with n_tasks × n_facts ≤ {len(KEYS)}")
    blocks = random_blocks(random.Random(seed), n_tasks, [n_facts] * n_tasks)
    return [StreamTask(op="facts", token=b.tag, block=b) for b in blocks]


@dataclass(frozen=True)
class StreamConfig:
    """Sizes of the memory-by-context-vs-weights experiment."""

    n_tasks: int = 6
    n_facts: int = 4
    window_budget: int = 60  # tokens for memory + query + answer: 4 blocks of 4 facts
    finetune_steps: int = 150
    finetune_lr: float = 1e-3
    arms: tuple[str, ...] = ("context", "sft", "sdft", "sft+context", "sdft+context")

    def __post_init__(self) -> None:
        unknown = set(self.arms) - {"context", "sft", "sdft", "sft+context", "sdft+context"}
        if unknown:
            raise ValueError(f"arms: unknown {sorted(unknown)}")


def stream_accuracy(base: nn.Module, stream: Sequence[StreamTask], cfg: StreamConfig, seed: int) -> pd.DataFrame:
    """R matrices (after task j, accuracy on every fact of every task i ≤ j) for every arm.
    Context memory: the newest blocks that fit `window_budget`; weights: sequential
    fine-tuning on each task's facts, one task after another, from the base."""
    rows = []
    tuned = {m: base for m in ("sft", "sdft")}
    for j, task in enumerate(stream):
        keys = [k for k, _ in task.block.facts]
        for method in ("sft", "sdft"):
            if any(arm.startswith(method) for arm in cfg.arms):
                ft = LMFinetune(method=method, lr=cfg.finetune_lr, steps=cfg.finetune_steps, max_new=ANSWER_TOKENS)
                tuned[method] = finetune(tuned[method], task, keys, ft, seed * 1000 + j)
        window = fit_window([t.block for t in stream[:j + 1]], cfg.window_budget)
        for arm in cfg.arms:
            model = base if arm == "context" else tuned[arm.split("+")[0]]
            blocks = window if "context" in arm else []
            for i, old in enumerate(stream[:j + 1]):
                examples = [lm.Example(prompt(blocks, old.token, k), lm.own_style(v)) for k, v in old.block.facts]
                rows.append({"arm": arm, "after_task": j, "eval_task": i, "accuracy": accuracy(model, examples),
                             "in_window": any(b.tag == old.token for b in blocks)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- context rot and length


def rot_examples(seed: int, n: int, n_distractors: int, position: int | None, n_facts: int) -> list[lm.Example]:
    """Windows with one relevant block among `n_distractors` others, n_facts facts each;
    position: where the relevant block sits (0 = first, None = uniform)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        blocks = random_blocks(rng, n_distractors + 1, [n_facts] * (n_distractors + 1))
        target = rng.randrange(len(blocks)) if position is None else min(position, n_distractors)
        out.append(query_example(rng, blocks, target))
    return out


def length_examples(seed: int, n: int, n_distractors: int, n_facts: int, position: str = "last") -> list[lm.Example]:
    """Like rot_examples, with the relevant block last (nearest the query) or first."""
    return rot_examples(seed, n, n_distractors, n_distractors if position == "last" else 0, n_facts)


# ---------------------------------------------------------------- one seed, cached


@dataclass(frozen=True)
class ContextExperiment:
    model: lm.LMConfig = lm.LMConfig(d_model=64, n_layers=2, n_heads=4, context_length=128)
    mix: WindowMix = WindowMix()
    pretrain_steps: int = 4000
    pretrain_lr: float = 3e-3
    batch_size: int = 32
    stream: StreamConfig = StreamConfig()
    n_rot: int = 100
    rot_distractors: tuple[int, ...] = (0, 1, 2, 3)
    rot_facts: tuple[int, ...] = (1, 2, 3, 4)
    length_distractors: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7)


def _cache_path(exp: ContextExperiment, seed: int, kind: str, suffix: str) -> Path | None:
    folder = cache_dir()
    if folder is None:
        return None
    here = Path(__file__).parent
    digest = hashlib.sha256(b"".join((here / f).read_bytes()
                                     for f in ("tinylm.py", "sdft.py", "distill.py", "context_memory.py")))
    digest.update(json.dumps([asdict(exp), seed, kind], sort_keys=True, default=str).encode())
    return folder / f"context-{kind}-{digest.hexdigest()[:32]}.{suffix}"


def base_for(exp: ContextExperiment, seed: int) -> nn.Module:
    path = _cache_path(exp, seed, "base", "pt")
    if path is not None and path.exists():
        model = lm.TinyLM(exp.model)
        model.load_state_dict(torch.load(path))
        return model.eval()
    model = pretrain_base(exp.model, exp.mix, exp.pretrain_steps, exp.batch_size, exp.pretrain_lr, seed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    return model


def run_seed(exp: ContextExperiment, seed: int) -> dict[str, pd.DataFrame]:
    """Pretrain (or load) the base of one seed; the stream, context-rot and length tables."""
    path = _cache_path(exp, seed, "tables", "pkl")
    if path is not None and path.exists():
        return pd.read_pickle(path)
    torch.set_num_threads(1)
    start = time.process_time()
    base = base_for(exp, seed)
    pretrain_seconds = time.process_time() - start
    stream = stream_accuracy(base, make_stream(seed, exp.stream.n_tasks, exp.stream.n_facts), exp.stream, seed)
    rot = []
    for k in exp.rot_distractors:
        for m in exp.rot_facts:
            for pos in range(k + 1):
                ex = rot_examples(seed * 7919 + 31 * k + 7 * m + pos, exp.n_rot, k, pos, m)
                rot.append({"distractors": k, "facts": m, "position": pos, "accuracy": accuracy(base, ex),
                            "tokens": sum(len(e.prompt) for e in ex) / len(ex)})
    length = []
    for k in exp.length_distractors:
        for where in ("last", "first"):
            ex = length_examples(seed * 104729 + k, exp.n_rot, k, 3, where)
            tokens = max(len(e.prompt) for e in ex) + ANSWER_TOKENS
            if tokens > exp.model.context_length:
                continue
            length.append({"distractors": k, "relevant": where, "accuracy": accuracy(base, ex),
                           "tokens": sum(len(e.prompt) for e in ex) / len(ex), "max_tokens": tokens})
    tables = {name: frame.assign(seed=seed) for name, frame in
              (("stream", stream), ("rot", pd.DataFrame(rot)), ("length", pd.DataFrame(length)))}
    tables["cost"] = pd.DataFrame([{"seed": seed, "pretrain_cpu_seconds": pretrain_seconds,
                                    "total_cpu_seconds": time.process_time() - start}])
    if path is not None:
        tmp = path.with_suffix(".tmp")
        pd.to_pickle(tables, tmp)
        os.replace(tmp, path)
    return tables


def sweep(exp: ContextExperiment, seeds: Sequence[int], jobs: int | None = None) -> dict[str, pd.DataFrame]:
    """Every seed's tables (clrepro.lm.sweep.over_seeds: one worker process per seed, up to jobs),
    concatenated table by table."""
    parts = over_seeds(run_seed, seeds, exp, jobs=jobs)
    return {name: pd.concat([p[name] for p in parts], ignore_index=True) for name in parts[0]}


def stream_rows(stream: pd.DataFrame, experiment: str, exp: ContextExperiment) -> pd.DataFrame:
    """The stream's R matrices as rows of the results table (one `method` per arm)."""
    params = json.dumps({"window_budget": exp.stream.window_budget, "n_facts": exp.stream.n_facts,
                         "finetune_steps": exp.stream.finetune_steps}, sort_keys=True)
    return pd.DataFrame({
        "experiment": experiment, "method": stream["arm"], "benchmark": "string_tasks", "scenario": "task",
        "params": params, "seed": stream["seed"], "kind": "R", "after_task": stream["after_task"],
        "eval_task": stream["eval_task"], "epoch": math.nan, "accuracy": stream["accuracy"], "seconds": math.nan,
    })
