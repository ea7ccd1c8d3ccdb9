"""OGD's two costs on the paper's MLP 784-100-100-10 (89,610 parameters), single-threaded CPU:

1. the projection g ← g − Sᵀ(S g) per training step, against the basis size k (k = 200 per task
   for GTL/AVE, so 0…1,800 over a 10-task stream), next to a plain SGD step at batch 10;
2. the per-example output gradients of end_task (torch.func vmap + grad) for 200 examples, per
   variant, plus the Gram–Schmidt extension of a 1,000-vector basis by them;
3. flat against factored storage (method_params.storage), through the method itself on a basis
   grown task by task from random inputs (GTL, 200 examples a task): projection per step at
   k = 200, 800, 1,800 and end_task (output gradients + Gram–Schmidt) at k = 0 and k = 1,600;
4. the factored storage's whole training step (forward, backward, projection, SGD step; batch 10)
   projecting W.grad every step (defer=False) against the deferred projection (defer=True: the
   projection's weight change kept as k coefficients, folded at the end of the task), next to a
   plain SGD step, at k = 200, 800, 1,800.

Run: `python benchmarks/ogd_projection.py` (PYTHONPATH at the repository root).
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from clrepro.config import ModelConfig, TrainConfig
from clrepro.methods import build_method
from clrepro.methods.base import Batch
from clrepro.methods.ogd import extend_orthonormal_basis, output_gradients, project_out
from clrepro.models import build_model


def best_of(fn, repeat: int = 5, number: int = 20) -> float:
    """Seconds per call: the best of `repeat` timings of `number` calls."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - started) / number)
    return best


def random_basis(k: int, n: int) -> torch.Tensor:
    if k == 0:
        return torch.zeros(0, n)
    q, _ = torch.linalg.qr(torch.randn(n, k))
    return q.T.contiguous()


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=(100, 100)), 10)
    n = sum(p.numel() for p in model.parameters())
    x, y = torch.rand(200, 784), torch.randint(0, 10, (200,))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def sgd_step():
        optimizer.zero_grad()
        F.cross_entropy(model(x[:10]), y[:10]).backward()
        optimizer.step()

    step = best_of(sgd_step, number=200)
    print(f"parameters P = {n:,}; one SGD step at batch 10: {1e3 * step:.3f} ms")
    print(f"{'basis k':>8} {'memory (MB)':>12} {'projection (ms)':>16} {'× SGD step':>11}")
    g = torch.randn(n)
    for k in (0, 200, 400, 800, 1000, 1800, 4000):
        basis = random_basis(k, n)
        cost = best_of(lambda basis=basis: project_out(g, basis)) if k else 0.0
        print(f"{k:>8} {4 * k * n / 2**20:>12.1f} {1e3 * cost:>16.3f} {cost / step:>11.2f}")

    print(f"\nper-example output gradients for {len(x)} examples (end_task), torch.func vmap + grad")
    print(f"{'variant':>8} {'vectors':>8} {'seconds':>8} {'examples/s':>11}")
    for variant in ("GTL", "AVE", "ALL"):
        seconds = best_of(lambda variant=variant: output_gradients(model, x, y, variant), repeat=3, number=2)
        rows = 200 * (10 if variant == "ALL" else 1)
        print(f"{variant:>8} {rows:>8} {seconds:>8.3f} {len(x) / seconds:>11,.0f}")
    loop = best_of(lambda: [torch.autograd.grad(model(x[i:i + 1])[0, y[i]], list(model.parameters()))
                            for i in range(len(x))], repeat=3, number=2)
    print(f"{'loop':>8} {200:>8} {loop:>8.3f} {len(x) / loop:>11,.0f}   (Python loop of autograd, for reference)")
    vectors = output_gradients(model, x, y, "GTL")
    basis = random_basis(1000, n)
    seconds = best_of(lambda: extend_orthonormal_basis(basis, vectors, 1e-4), repeat=2, number=1)
    print(f"Gram–Schmidt of 200 new vectors against k = 1000: {seconds:.2f} s")
    compare_storages()
    compare_deferred()


class _Stream:
    """What OGD reads from a stream: its length and (no) output masks."""

    def __init__(self, n_tasks: int) -> None:
        self.n_tasks = n_tasks

    def __len__(self) -> int:
        return self.n_tasks

    def output_mask(self, t: int) -> None:
        return None


def compare_storages(n_tasks: int = 9, timed_at: tuple[int, ...] = (200, 800, 1800)) -> None:
    """Both storages side by side on identical bases (same model, same examples, same RNG)."""
    methods = {}
    for storage in ("flat", "factored"):
        torch.manual_seed(0)
        model = build_model(ModelConfig(hidden=(100, 100)), 10)
        methods[storage] = build_method("ogd", {"variant": "GTL", "storage": storage}, model, _Stream(n_tasks))
    g = torch.Generator().manual_seed(1)
    tasks = [(torch.rand(1000, 784, generator=g), torch.randint(0, 10, (1000,), generator=g)) for _ in range(n_tasks)]
    end_task: dict[tuple[str, int], float] = {}
    projection: dict[tuple[str, int], float] = {}
    stored: dict[tuple[str, int], int] = {}
    for storage, method in methods.items():
        torch.manual_seed(2)  # end_task's example sampling
        for t, (x, y) in enumerate(tasks):
            k = method.rank
            started = time.perf_counter()
            method.end_task(SimpleNamespace(index=t), x, y)
            end_task[storage, k] = time.perf_counter() - started
            if method.rank in timed_at:
                for p in method.model.parameters():
                    p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()))
                projection[storage, method.rank] = best_of(lambda method=method: method.transform_gradients(None))
                stored[storage, method.rank] = method.memory_bytes
    flat, factored = methods["flat"], methods["factored"]
    assert flat.basis_sizes == factored.basis_sizes, (flat.basis_sizes, factored.basis_sizes)

    print("\nflat vs factored storage (GTL, 200 random examples a task), through OGD.transform_gradients")
    print(f"{'basis k':>8} {'flat (ms)':>10} {'factored (ms)':>14} {'speed-up':>9} {'flat MB':>8} {'factored MB':>12}")
    for k in timed_at:
        if ("flat", k) not in projection:
            print(f"{k:>8} (not reached: basis sizes {flat.basis_sizes})")
            continue
        a, b = projection["flat", k], projection["factored", k]
        print(f"{k:>8} {1e3 * a:>10.3f} {1e3 * b:>14.3f} {a / b:>8.1f}× "
              f"{stored['flat', k] / 2**20:>8.1f} {stored['factored', k] / 2**20:>12.1f}")
    print(f"{'end_task':>8} {'flat (s)':>10} {'factored (s)':>14} {'speed-up':>9}   (200 GTL examples, one timing)")
    for k in (0, max(k for _, k in end_task)):
        a, b = end_task["flat", k], end_task["factored", k]
        print(f"{'k = ' + str(k):>8} {a:>10.2f} {b:>14.2f} {a / b:>8.1f}×")


def compare_deferred(n_tasks: int = 10, timed_at: tuple[int, ...] = (200, 800, 1800)) -> None:
    """Training steps of the factored storage, eager and deferred projection, on identical bases."""
    g = torch.Generator().manual_seed(1)
    tasks = [(torch.rand(1000, 784, generator=g), torch.randint(0, 10, (1000,), generator=g)) for _ in range(n_tasks)]
    cfg = TrainConfig(lr=1e-3, batch_size=10)
    step_time: dict[tuple[bool, int], float] = {}
    plain = None
    for defer in (False, True):
        torch.manual_seed(0)
        model = build_model(ModelConfig(hidden=(100, 100)), 10)
        method = build_method("ogd", {"variant": "GTL", "storage": "factored", "defer": defer}, model, _Stream(n_tasks))
        torch.manual_seed(2)
        for t, (x, y) in enumerate(tasks):
            optimizer = method.make_optimizer(cfg)
            batch = Batch(x[:10], y[:10], t)

            def step(method=method, optimizer=optimizer, batch=batch):
                optimizer.zero_grad()
                method.loss(batch).backward()
                method.transform_gradients(batch)
                optimizer.step()

            if t == 0 and plain is None:
                plain = best_of(step, number=200)  # k = 0: nothing to project
            if method.rank in timed_at:
                step_time[defer, method.rank] = best_of(step, number=50)
            method.end_task(SimpleNamespace(index=t), x, y)
    print("\nfactored storage, one training step at batch 10 (forward, backward, projection, SGD step)")
    print(f"plain SGD step (k = 0): {1e3 * plain:.3f} ms")
    print(f"{'basis k':>8} {'eager (ms)':>11} {'deferred (ms)':>14} {'speed-up':>9}")
    for k in timed_at:
        if (False, k) in step_time:
            a, b = step_time[False, k], step_time[True, k]
            print(f"{k:>8} {1e3 * a:>11.3f} {1e3 * b:>14.3f} {a / b:>8.1f}×")


if __name__ == "__main__":
    main()
