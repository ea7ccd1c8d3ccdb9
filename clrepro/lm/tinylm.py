"""A tiny decoder-only transformer and the string tasks it learns (SDFT-lite part B; reused by
the context-length notebook).

Tasks are mappings of short lowercase words (3–6 letters). The model answers in **its own
style**, UPPERCASE; demonstrations written by an expert are lowercase. A prompt is

    zero-shot   <bos> <task> q u e r y >                         (answer: Q' U' E' … <eos>)
    in context  <bos> <task> d e m o > d' e' m' o' ; … ; q u e r y >

where <task> is a skill token (S0…S3: a fixed mapping the model must know by heart) or a
placeholder (U0…U3: the mapping must be read off the demonstrations; placeholders carry no
meaning of their own during pretraining). Sequences are left-padded; positions count real
tokens only, so a prompt's meaning does not depend on its padding.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------- vocabulary

SPECIALS = ["<pad>", "<bos>", "<eos>", ">", ";"]
LOWER = [chr(c) for c in range(ord("a"), ord("z") + 1)]
UPPER = [c.upper() for c in LOWER]
SKILL_TOKENS = ["S0", "S1", "S2", "S3"]
PLACEHOLDERS = ["U0", "U1", "U2", "U3"]
VOCAB = SPECIALS + LOWER + UPPER + SKILL_TOKENS + PLACEHOLDERS
INDEX = {tok: i for i, tok in enumerate(VOCAB)}
PAD, BOS, EOS, ARROW, SEMI = (INDEX[t] for t in SPECIALS)


def encode(tokens: Sequence[str] | str) -> list[int]:
    return [INDEX[t] for t in tokens]


def decode(ids: Sequence[int]) -> str:
    """Characters up to the first <eos> (specials other than > and ; are dropped)."""
    out = []
    for i in ids:
        if i == EOS:
            break
        tok = VOCAB[i]
        if len(tok) == 1:
            out.append(tok)
    return "".join(out)


# ---------------------------------------------------------------- string mappings


def caesar(word: str, k: int) -> str:
    return "".join(chr((ord(c) - 97 + k) % 26 + 97) for c in word)


OPS: dict[str, Callable[[str], str]] = {
    "reverse": lambda w: w[::-1],
    "rotate": lambda w: w[1:] + w[:1],
    "shift1": lambda w: caesar(w, 1),
    "sort": lambda w: "".join(sorted(w)),
    "reverse_shift1": lambda w: caesar(w[::-1], 1),
    "rotate_reverse": lambda w: (w[::-1])[1:] + (w[::-1])[:1],
    "shift2": lambda w: caesar(w, 2),
    "swap_pairs": lambda w: "".join(w[i + 1] + w[i] if i + 1 < len(w) else w[i] for i in range(0, len(w), 2)),
}
SKILLS = ("reverse", "rotate", "shift1", "sort")  # known by heart, one skill token each
FAMILY = tuple(OPS)  # what in-context episodes draw from


def random_word(rng: random.Random, min_len: int = 3, max_len: int = 6) -> str:
    return "".join(rng.choice(LOWER) for _ in range(rng.randint(min_len, max_len)))


def own_style(answer: str) -> str:
    """The model's habit: answers in upper case (the expert writes lower case)."""
    return answer.upper()


@dataclass(frozen=True)
class Example:
    """One prompt and the answer the model is trained towards (without <eos>)."""

    prompt: tuple[str, ...]
    answer: str


def zero_shot(task_token: str, query: str) -> tuple[str, ...]:
    return ("<bos>", task_token, *query, ">")


def in_context(task_token: str, demos: Sequence[tuple[str, str]], query: str) -> tuple[str, ...]:
    """Demonstrations as written (expert's lower case), then the query."""
    body: list[str] = []
    for d_in, d_out in demos:
        body += [*d_in, ">", *d_out, ";"]
    return ("<bos>", task_token, *body, *query, ">")


def skill_example(rng: random.Random, skill: int) -> Example:
    query = random_word(rng)
    return Example(zero_shot(SKILL_TOKENS[skill], query), own_style(OPS[SKILLS[skill]](query)))


def icl_example(rng: random.Random, op: str, n_demos: int, query_in_demos: bool = False) -> Example:
    """An in-context episode: a random placeholder names the task; the demos define it."""
    query = random_word(rng)
    demos = [(w, OPS[op](w)) for w in (random_word(rng) for _ in range(n_demos))]
    if query_in_demos:  # the SDFT teacher's situation: the expert's answer to this very query
        demos[rng.randrange(n_demos)] = (query, OPS[op](query))
    return Example(in_context(rng.choice(PLACEHOLDERS), demos, query), own_style(OPS[op](query)))


@dataclass(frozen=True)
class PretrainMix:
    """What the base model sees: skill examples, and in-context episodes with probability
    `icl_fraction` (the knob for in-context ability), 1–max_demos demonstrations each; in a
    share `query_in_demos` of them one demonstration is the query itself."""

    icl_fraction: float = 0.5
    max_demos: int = 3
    query_in_demos: float = 0.5

    def sample(self, rng: random.Random) -> Example:
        if rng.random() < self.icl_fraction:
            return icl_example(rng, rng.choice(FAMILY), rng.randint(1, self.max_demos),
                               rng.random() < self.query_in_demos)
        return skill_example(rng, rng.randrange(len(SKILLS)))


# ---------------------------------------------------------------- batching


def pad_left(sequences: Sequence[Sequence[int]], length: int | None = None) -> torch.Tensor:
    length = length or max(len(s) for s in sequences)
    out = torch.full((len(sequences), length), PAD, dtype=torch.long)
    for i, s in enumerate(sequences):
        if len(s) > length:
            raise ValueError(f"sequence of {len(s)} tokens exceeds the context of {length}")
        out[i, length - len(s):] = torch.tensor(s, dtype=torch.long)
    return out


def training_batch(examples: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompt+answer+<eos> and a mask of the positions whose *next* token is an
    answer token (where the loss applies): logits[:, t] predict tokens[:, t + 1]."""
    seqs, n_answer = [], []
    for ex in examples:
        answer = [*encode(ex.answer), EOS]
        seqs.append([*encode(ex.prompt), *answer])
        n_answer.append(len(answer))
    tokens = pad_left(seqs)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    for i, n in enumerate(n_answer):
        mask[i, tokens.shape[1] - 1 - n: tokens.shape[1] - 1] = True
    return tokens, mask


def next_token_loss(model: nn.Module, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    logits = model(tokens)[:, :-1]
    targets = tokens[:, 1:]
    return F.cross_entropy(logits[mask[:, :-1]], targets[mask[:, :-1]])


# ---------------------------------------------------------------- the transformer


@dataclass(frozen=True)
class LMConfig:
    d_model: int = 128
    n_layers: int = 3
    n_heads: int = 4
    context_length: int = 64
    vocab_size: int = len(VOCAB)


class Block(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        width = 4 * cfg.d_model
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, width), nn.GELU(), nn.Linear(width, cfg.d_model))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        x = x + self.proj(attended.transpose(1, 2).reshape(B, T, D))
        return x + self.mlp(self.ln2(x))


class TinyLM(nn.Module):
    """Pre-LayerNorm decoder-only transformer with learned positions (the context length is a
    parameter: positions beyond it have no embedding)."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.position = nn.Embedding(cfg.context_length, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, T], left-padded with PAD → logits [B, T, V]."""
        real = tokens != PAD
        if tokens.shape[1] > self.cfg.context_length:
            raise ValueError(f"{tokens.shape[1]} tokens exceed the context length {self.cfg.context_length}")
        positions = (real.cumsum(1) - 1).clamp_min(0)
        causal = torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool, device=tokens.device).tril()
        # a padded row attends to itself only, so softmax never sees an empty row
        eye = torch.eye(tokens.shape[1], dtype=torch.bool, device=tokens.device)
        attn_mask = ((causal & real[:, None, :]) | eye)[:, None]
        x = self.embed(tokens) + self.position(positions)
        for block in self.blocks:
            x = block(x, attn_mask)
        return self.head(self.ln(x))


@torch.no_grad()
def generate(model: nn.Module, prompts: torch.Tensor, max_new: int, temperature: float = 0.0,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Batched decoding from left-padded prompts: [B, max_new] new tokens, PAD after <eos>.
    temperature 0 is greedy; otherwise samples from softmax(logits / temperature). One loop
    over positions, never over examples."""
    tokens, done = prompts, torch.zeros(len(prompts), dtype=torch.bool, device=prompts.device)
    out = []
    for _ in range(max_new):
        logits = model(tokens)[:, -1]
        if temperature > 0:
            nxt = torch.multinomial(F.softmax(logits / temperature, -1), 1, generator=generator).squeeze(1)
        else:
            nxt = logits.argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
        out.append(nxt)
        done = done | (nxt == EOS)
        tokens = torch.cat([tokens, nxt[:, None]], 1)
        if bool(done.all()):
            break
    new = torch.stack(out, 1)
    return F.pad(new, (0, max_new - new.shape[1]), value=PAD)


def answers(model: nn.Module, prompts: Sequence[Sequence[str]], max_new: int = 8, batch: int = 256) -> list[str]:
    """Greedy answers (decoded strings) for many prompts, in batches."""
    model.eval()
    out: list[str] = []
    for i in range(0, len(prompts), batch):
        chunk = pad_left([encode(p) for p in prompts[i:i + batch]])
        out += [decode(row.tolist()) for row in generate(model, chunk, max_new)]
    return out


def pretrain(model: nn.Module, mix: PretrainMix, steps: int, batch_size: int = 64, lr: float = 1e-3,
             seed: int = 0) -> list[float]:
    """AdamW with warm-up and cosine decay on freshly sampled examples; the loss falls on answers only."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    losses = []
    model.train()
    for _ in range(steps):
        tokens, mask = training_batch([mix.sample(rng) for _ in range(batch_size)])
        loss = next_token_loss(model, tokens, mask)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    return losses
