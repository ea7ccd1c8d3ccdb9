import os

import pytest
import torch

os.environ.setdefault("CLREPRO_QUIET", "1")
os.environ.setdefault("CLREPRO_DOWNLOAD", "0")  # tests never reach for the network


@pytest.fixture(autouse=True)
def _no_run_cache(monkeypatch):
    monkeypatch.setenv("CLREPRO_CACHE", "off")


@pytest.fixture
def tiny_stream():
    """A 2-task synthetic Split-style stream on 784-dim inputs (unit tests only)."""
    from clrepro.data.streams import Stream, Task

    g = torch.Generator().manual_seed(0)
    tasks = []
    for t in range(2):
        x = torch.randint(0, 256, (40, 784), generator=g, dtype=torch.uint8)
        y = torch.randint(2 * t, 2 * t + 2, (40,), generator=g)
        tasks.append(Task(t, f"t{t}", (2 * t, 2 * t + 1), x[:30], y[:30], x[30:], y[30:]))
    return Stream("synthetic", "task", tuple(tasks), 4)
