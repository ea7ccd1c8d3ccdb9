import pandas as pd

from clrepro.config import BenchmarkConfig, ModelConfig, TrainConfig
from clrepro.experiment import Experiment
from clrepro.report import results
from clrepro.run import runner
from clrepro.run.profiles import get_profile


def test_run_code_files_are_the_core_plus_the_method():
    names = {p.relative_to(runner.PACKAGE_DIR).as_posix() for p in runner.run_code_files("finetune")}
    core = {p.relative_to(runner.PACKAGE_DIR).as_posix() for m in runner.RUN_CORE for p in runner.PACKAGE_DIR.glob(m)}
    assert {"train.py", "data/streams.py", "models/mlp.py", "report/results.py"} <= core
    assert names == core | {"methods/base.py", "methods/finetune.py"}
    assert not any(n.startswith(("lm/", "analysis/")) for n in names)
    assert "methods/ewc.py" in {p.relative_to(runner.PACKAGE_DIR).as_posix() for p in runner.run_code_files("l2")}


def test_run_code_hash_covers_the_method_chain_only():
    h_ewc, h_l2, h_ft = (runner.run_code_hash(m) for m in ("ewc", "l2", "finetune"))
    assert len({h_ewc, h_l2, h_ft}) == 3  # each hashes its own module chain
    assert runner.run_code_hash("online_ewc") == h_ewc  # same file as EWC


def test_cache_hit_returns_the_same_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("CLREPRO_CACHE", str(tmp_path))
    monkeypatch.setenv("CLREPRO_LOCKSTEP", "off")  # count one-seed runs
    calls = []
    real_run = runner.run

    def counting_run(*args, **kwargs):
        calls.append(1)
        return real_run(*args, **kwargs)

    monkeypatch.setattr(runner, "run", counting_run)
    exp = Experiment("test/cache", BenchmarkConfig("split_mnist", "task", n_tasks=2), "finetune",
                     model=ModelConfig(hidden=(8,)), train=TrainConfig(batch_size=32))
    first = runner.run_experiments(exp, get_profile("smoke"), "cpu", seeds=[0], store_in=tmp_path / "r.csv")
    second = runner.run_experiments(exp, get_profile("smoke"), "cpu", seeds=[0])
    assert len(calls) == 1
    pd.testing.assert_frame_equal(first, second, check_dtype=False)
    assert (tmp_path / "r.csv").exists()


def test_cache_key_changes_with_the_data_loaded(monkeypatch):
    experiment = Experiment("t/key", BenchmarkConfig("split_mnist", "class"), "finetune")

    class Fake:
        def __init__(self, digest):
            self.digest = digest

    monkeypatch.setattr(runner, "source_dataset", lambda cfg, data_dir=None: Fake("genuine"))
    genuine = runner.cache_key(experiment, 0, "cpu")
    monkeypatch.setattr(runner, "source_dataset", lambda cfg, data_dir=None: Fake("labels shifted"))
    assert runner.cache_key(experiment, 0, "cpu") != genuine


# ---------------------------------------------------------------------------------------------
# A cache that cannot lie: damaged or foreign entries are misses, recomputed with a warning

import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

TINY = Experiment("test/damage", BenchmarkConfig("split_mnist", "task", n_tasks=2), "finetune",
                  model=ModelConfig(hidden=(8,)), train=TrainConfig(batch_size=32))


def _counting(monkeypatch):
    monkeypatch.setenv("CLREPRO_LOCKSTEP", "off")  # count one-seed runs
    calls = []
    real_run = runner.run

    def counting_run(*args, **kwargs):
        calls.append(args[1])
        return real_run(*args, **kwargs)

    monkeypatch.setattr(runner, "run", counting_run)
    return calls


def _cut_to_header(path: Path) -> None:
    path.write_text(path.read_text().splitlines()[0] + "\n")


def _cut_inside_a_number(path: Path) -> None:
    text = path.read_text()
    # the last R row's accuracy, e.g. "61.0" becomes "6": the file ends mid-row
    row_start = text.rindex(",R,")
    accuracy_at = text.index(",", text.index(",", text.index(",", row_start + 3) + 1) + 1) + 1
    path.write_text(text[:accuracy_at + 1])


def _garbage(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 16] = os.urandom(16)
    path.write_bytes(bytes(data))


def _edited_number(path: Path) -> None:
    """One digit of an R row changed: the file still parses, only its digest tells."""
    text = path.read_text()
    at = text.index(",R,") + 3
    digit = next(i for i in range(at, len(text)) if text[i].isdigit())
    path.write_text(text[:digit] + str((int(text[digit]) + 1) % 10) + text[digit + 1:])


@pytest.mark.parametrize("damage", [_cut_to_header, _cut_inside_a_number, _garbage, _edited_number])
def test_a_damaged_cache_entry_is_recomputed_with_a_warning(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("CLREPRO_CACHE", str(tmp_path))
    calls = _counting(monkeypatch)
    smoke = get_profile("smoke")
    first = runner.run_experiments(TINY, smoke, "cpu", seeds=[0])
    (entry,) = tmp_path.glob("*.csv")
    damage(entry)
    with pytest.warns(UserWarning, match=str(entry.name)):
        second = runner.run_experiments(TINY, smoke, "cpu", seeds=[0])
    assert len(calls) == 2  # recomputed, not served
    untimed = [frame.drop(columns=results.TIMING_COLUMNS) for frame in (first, second)]
    pd.testing.assert_frame_equal(*untimed, check_dtype=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the recomputed entry is whole again: a silent hit
        runner.run_experiments(TINY, smoke, "cpu", seeds=[0])
    assert len(calls) == 2


def test_an_entry_of_another_seed_under_this_key_is_a_miss(tmp_path, monkeypatch):
    monkeypatch.setenv("CLREPRO_CACHE", str(tmp_path))
    calls = _counting(monkeypatch)
    smoke = get_profile("smoke")
    runner.run_experiments(TINY, smoke, "cpu", seeds=[0])
    entry = runner._cache_path(smoke.apply(TINY), 1, "cpu")
    (other,) = tmp_path.glob("*.csv")
    entry.write_bytes(other.read_bytes())  # well-formed, trailer intact, but seed 0's rows
    with pytest.warns(UserWarning, match="seed"):
        rows = runner.run_experiments(TINY, smoke, "cpu", seeds=[1])
    assert calls == [0, 1] and set(rows["seed"]) == {1}


def _rows(n_tasks=3, drop=(), method="finetune"):
    exp = Experiment("test/cells", BenchmarkConfig("split_mnist", "class", n_tasks=n_tasks), method)
    base = dict(experiment=exp.name, method=method, benchmark="split_mnist", scenario="class", params="{}",
                seed=0, epoch=float("nan"), seconds=1.0)
    records = [{**base, "kind": "initial", "after_task": -1, "eval_task": i, "accuracy": 10.0} for i in range(n_tasks)]
    records += [{**base, "kind": "R", "after_task": t, "eval_task": i, "accuracy": 50.0}
                for t in range(n_tasks) for i in range(n_tasks) if (t, i) not in drop]
    frame = pd.DataFrame.from_records(records)
    for column in results.COLUMNS:  # whatever columns the results table has now
        if column not in frame:
            frame[column] = "class" if column == "trained_as" else float("nan")
    return exp, frame


def test_required_cells_are_the_lower_triangle_only():
    exp, rows = _rows(drop={(0, 1), (0, 2), (1, 2)})  # no upper triangle: still complete
    assert runner.check_rows(rows, exp, 0) is None
    exp, rows = _rows(drop={(2, 1)})
    assert "R[2, 1]" in runner.check_rows(rows, exp, 0)
    exp, rows = _rows()
    assert "seed" in runner.check_rows(rows, exp, 1)
    rows.loc[3, "accuracy"] = 130.0
    assert "outside [0, 100]" in runner.check_rows(rows, exp, 0)
    rows.loc[3, "accuracy"] = float("nan")
    assert "missing" in runner.check_rows(rows, exp, 0)
    exp, rows = _rows()
    extra = rows.assign(scenario="task", accuracy=float("nan"))  # a Task-IL view left unmeasured: allowed
    assert runner.check_rows(pd.concat([rows, extra], ignore_index=True), exp, 0) is None
    exp, rows = _rows(method="joint", drop={(t, i) for t in range(2) for i in range(3)})
    assert runner.check_rows(rows, exp, 0) is None  # joint training fills the last row only


def test_default_jobs_are_bounded_by_memory_and_cores(monkeypatch):
    monkeypatch.delenv("CLREPRO_JOBS", raising=False)
    paper = get_profile("paper")
    monkeypatch.setattr(runner, "available_cores", lambda: 8)
    monkeypatch.setattr(runner, "available_memory", lambda: 5 * 1024**3)
    assert runner.default_jobs("cpu", paper) == 2
    monkeypatch.setattr(runner, "available_memory", lambda: 1 * 1024**3)
    assert runner.default_jobs("cpu", paper) == 1
    monkeypatch.setattr(runner, "available_memory", lambda: 64 * 1024**3)
    assert runner.default_jobs("cpu", paper) == 8
    assert runner.default_jobs("cuda", paper) == 1 and runner.default_jobs("cpu", get_profile("smoke")) == 1
    monkeypatch.setenv("CLREPRO_JOBS", "3")
    assert runner.default_jobs("cpu", paper) == 3


# ---------------------------------------------------------------------------------------------
# A killed parent leaves no worker behind

PARENT = """
import os, sys
from clrepro.config import BenchmarkConfig, ModelConfig, TrainConfig
from clrepro.experiment import Experiment
from clrepro.run import runner
from clrepro.run.profiles import get_profile
exp = Experiment("test/kill", BenchmarkConfig("split_mnist", "task", n_tasks=2), "finetune",
                 model=ModelConfig(hidden=(8,)), train=TrainConfig(epochs=10_000))
print(os.getpid(), flush=True)
runner.run_experiments(exp, get_profile("paper"), "cpu", seeds=[0, 1, 2, 3], jobs=2)
"""


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_the_parent_is_killed():
    env = {**os.environ, "CLREPRO_CACHE": "off", "CLREPRO_QUIET": "1", "CLREPRO_LOCKSTEP": "off"}  # 4 units
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, env=env)
    try:
        pid = int(parent.stdout.readline())
        deadline = time.monotonic() + 60
        workers = []
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            workers = [c for c in _children(pid)
                       if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert len(workers) == 2, "the pool's workers did not start"
        descendants = _children(pid)
        os.kill(pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(_alive(c) for c in descendants) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [c for c in descendants if _alive(c)], "a worker outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_an_experiment_in_lockstep_is_one_unit_and_caches_every_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("CLREPRO_CACHE", str(tmp_path))
    other = TINY.with_(name="test/other", method="pnn")  # PNN: one seed at a time
    assert runner.uses_lockstep(TINY) and not runner.uses_lockstep(other)
    runs = [(TINY, 0), (other, 0), (TINY, 1), (other, 1)]
    units = runner._units(runs, [0, 1, 2, 3])
    assert [(u[0].name, u[1], u[2]) for u in units] == [
        ("test/damage", [0, 1], [0, 2]), ("test/other", [0], [1]), ("test/other", [1], [3])]
    rows = runner.run_experiments(TINY, get_profile("smoke"), "cpu", seeds=[0, 1], progress=False)
    assert len(list(tmp_path.glob("*.csv"))) == 2
    alone = runner.run_experiments(TINY, get_profile("smoke"), "cpu", seeds=[1], progress=False)
    assert alone.equals(rows[rows["seed"] == 1].reset_index(drop=True))  # served from the cache
    monkeypatch.setenv("CLREPRO_CACHE", "off")  # a lone seed, computed: the same rows as in a batch
    alone = runner.run_experiments(TINY, get_profile("smoke"), "cpu", seeds=[1], progress=False)
    same = rows[rows["seed"] == 1].reset_index(drop=True)
    assert alone.drop(columns=results.TIMING_COLUMNS).equals(same.drop(columns=results.TIMING_COLUMNS))
    monkeypatch.setenv("CLREPRO_CACHE", str(tmp_path))
    monkeypatch.setenv("CLREPRO_LOCKSTEP", "off")
    assert runner.cache_key(TINY, 0, "cpu") not in {p.stem for p in tmp_path.glob("*.csv")}


def test_lockstep_units_are_split_to_fit_the_memory(monkeypatch):
    units = [(TINY, [0, 1, 2, 3, 4], [10, 11, 12, 13, 14])]
    monkeypatch.setattr(runner, "available_memory", lambda: 8 * runner.RUN_PEAK_BYTES)
    assert [u[1] for u in runner._bounded_by_memory(units, 2)] == [[0, 1, 2, 3], [4]]
    assert [u[2] for u in runner._bounded_by_memory(units, 2)] == [[10, 11, 12, 13], [14]]
    monkeypatch.setattr(runner, "available_memory", lambda: 3 * runner.RUN_PEAK_BYTES)
    assert [u[1] for u in runner._bounded_by_memory(units, 2)] == [[0, 1], [2, 3], [4]]  # never below two
    monkeypatch.setattr(runner, "available_memory", lambda: 64 * runner.RUN_PEAK_BYTES)
    assert runner._bounded_by_memory(units, 2) == units
