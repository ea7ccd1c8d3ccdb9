"""One process pool over seeds for the language-model notebooks (context memory, SDFT-lite, RL's Razor).

`over_seeds(fn, seeds, *args)` returns [fn(*args, seed) for seed in seeds], in seed order, with
the seeds spread over `jobs` worker processes (CLREPRO_JOBS, default: one per core). Each seed is
seeded inside fn, so the results do not depend on how many workers ran them.

The workers are started with 'spawn' (forking after torch has started its thread pools is unsafe)
and with `worker_init`, which asks the kernel to stop a worker when its parent dies: a notebook
kernel killed mid-sweep would otherwise leave workers training for nobody.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import TypeVar

T = TypeVar("T")

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def worker_init(parent_pid: int) -> None:
    """Pool initializer: SIGTERM this worker when its parent process dies (Linux; elsewhere a no-op).

    The signal follows the thread that started the worker, so start pools from a thread that
    lives as long as they do (the notebook's main thread does). If the parent died before the
    request took effect the worker has already been re-parented, and it stops at once."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return  # not fatal: the worker merely outlives a dead parent, as before
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


def pool(workers: int) -> ProcessPoolExecutor:
    """A spawn-context pool whose workers exit when this process dies."""
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=worker_init,
                               initargs=(os.getpid(),))


def default_jobs() -> int:
    return int(os.environ.get("CLREPRO_JOBS", os.cpu_count() or 1))


def over_seeds(fn: Callable[..., T], seeds: Sequence[int], *args, jobs: int | None = None) -> list[T]:
    """[fn(*args, seed) for seed in seeds]: in this process for one job or one seed, otherwise
    spread over min(jobs, len(seeds)) workers (fn and args must pickle)."""
    seeds = list(seeds)
    jobs = jobs or default_jobs()
    if jobs <= 1 or len(seeds) <= 1:
        return [fn(*args, seed) for seed in seeds]
    with pool(min(jobs, len(seeds))) as workers:
        return list(workers.map(fn, *([a] * len(seeds) for a in args), seeds))
