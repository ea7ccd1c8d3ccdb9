"""What a query costs against the length of its context (the context-length notebook): FLOPs
in closed form and counted by `torch.utils.flop_counter`, wall time, peak memory, and how many
memory blocks a compute budget per query can carry."""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import asdict

import torch
from torch import nn

from clrepro.lm import tinylm as lm
from clrepro.lm.sweep import pool


def forward_flops(cfg: lm.LMConfig, length: int) -> dict[str, int]:
    """Closed-form multiply-add FLOPs (×2) of one forward pass over `length` tokens, batch 1.
    attention: QKᵀ and AV, 2·2·T²·d per layer (the full T×T product, as SDPA computes it with a
    mask); dense: qkv, proj and the 4d MLP, 2·12·T·d² per layer; head: 2·T·d·V."""
    d, T = cfg.d_model, length
    return {"attention": cfg.n_layers * 4 * T * T * d, "dense": cfg.n_layers * 24 * T * d * d,
            "head": 2 * T * d * cfg.vocab_size}


def _explicit_attention(q, k, v, attn_mask=None):
    """softmax(QKᵀ/√d + mask) V with explicit matmuls, so that the FLOP counter sees them (it
    has no formula for the CPU kernel behind scaled_dot_product_attention)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return scores.softmax(-1) @ v


def counted_flops(model: nn.Module, length: int) -> dict[str, int]:
    """FLOPs counted by torch.utils.flop_counter on one forward pass (batch 1): the attention
    products (batched matmuls) and the rest (the linear layers)."""
    from unittest import mock

    from torch.utils.flop_counter import FlopCounterMode

    tokens = torch.randint(len(lm.SPECIALS), len(lm.VOCAB), (1, length))
    with (mock.patch.object(torch.nn.functional, "scaled_dot_product_attention", _explicit_attention),
          FlopCounterMode(display=False) as counter, torch.no_grad()):
        model(tokens)
    per_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    attention = sum(n for op, n in per_op.items() if "bmm" in op)
    return {"attention": attention, "other": sum(per_op.values()) - attention}


def time_per_query(model: nn.Module, length: int, batch: int, repeats: int) -> float:
    """Median wall seconds per query of a batched forward over `length` tokens (one thread)."""
    tokens = torch.randint(len(lm.SPECIALS), len(lm.VOCAB), (batch, length))
    times = []
    with torch.no_grad():
        model(tokens)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model(tokens)
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] / batch


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory_child(cfg_json: str, length: int, batch: int, repeats: int = 3) -> int:
    """In a fresh process: the largest growth of the resident set over `repeats` forward passes,
    sampled every 0.2 ms by a thread (the CPU allocator returns large blocks to the system, so
    the resident set rises and falls with the activations)."""
    torch.set_num_threads(1)
    model = lm.TinyLM(lm.LMConfig(**json.loads(cfg_json))).eval()
    tokens = torch.randint(len(lm.SPECIALS), len(lm.VOCAB), (batch, length))
    with torch.no_grad():
        model(tokens[:, :8])  # allocator and kernels warmed on a short input
    baseline, peak, done = _resident_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _resident_bytes())
            time.sleep(0.0002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    with torch.no_grad():
        for _ in range(repeats):
            model(tokens)
    done.set()
    sampler.join()
    return max(0, peak[0] - baseline)


def peak_memory(cfg: lm.LMConfig, length: int, batch: int) -> int:
    """Peak resident-set growth (bytes) of a forward pass over `length` tokens, Linux only."""
    with pool(1) as workers:  # a fresh process, so the baseline is this forward pass alone
        return workers.submit(peak_memory_child, json.dumps(asdict(cfg)), length, batch).result()


def blocks_within_budget(cfg: lm.LMConfig, block_tokens: int, query_tokens: int, budget_flops: float) -> int:
    """How many past tasks' blocks fit in context when a query may cost `budget_flops`."""
    k = 0
    while sum(forward_flops(cfg, query_tokens + (k + 1) * block_tokens).values()) <= budget_flops:
        k += 1
        if (k + 1) * block_tokens + query_tokens > 10 ** 6:
            return k
    return k
