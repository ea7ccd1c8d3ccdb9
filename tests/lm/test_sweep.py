import operator
import os
import signal
import subprocess
import sys
import time

import pytest

from clrepro.lm.sweep import over_seeds


def test_over_seeds_is_the_same_in_process_and_over_workers():
    seeds = [3, 1, 2]
    assert over_seeds(operator.mul, seeds, 10, jobs=1) == [30, 10, 20]
    assert over_seeds(operator.mul, seeds, 10, jobs=2) == [30, 10, 20]  # seed order, whatever finishes first
    assert over_seeds(operator.mul, [], 10, jobs=2) == []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()  # a zombie has exited
    except FileNotFoundError:
        return False


PARENT = """
import os, time
from clrepro.lm.sweep import pool
workers = pool(1)
print(workers.submit(os.getpid).result(), flush=True)
workers.submit(time.sleep, 120)
time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_workers_exit_when_their_parent_dies():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(parent.stdout.readline())
        assert _alive(worker)
        os.kill(parent.pid, signal.SIGKILL)  # no clean-up of any kind in the parent
        parent.wait()
        deadline = time.time() + 20
        while _alive(worker) and time.time() < deadline:
            time.sleep(0.1)
        assert not _alive(worker)
    finally:
        if parent.poll() is None:
            parent.kill()
