"""Run experiments over seeds, with a progress bar and a per-run cache.

A run's rows are cached under build/cache/ keyed by the experiment, the seed, the device, the
hash of the code a run executes (the package minus the other methods' files and the
notebook-side modules) and a digest of the data it loads, so an interrupted notebook resumes
where it stopped, a finished run is never recomputed for unchanged code and data, and adding a
method does not invalidate other runs.
Set CLREPRO_CACHE=off to disable it (or to a folder to move it).

An entry is used only if it is whole and is the run it claims to be: its last line carries the
SHA-256 and row count of the CSV above it (so a cut or corrupted file is caught wherever the
damage is), and its rows must have the expected columns, the experiment, method and seed of the
key, accuracies in [0, 100] and every accuracy-matrix cell the run must produce
(`required_cells`). Anything else is a miss: the run is recomputed and a warning names the file.
What the cache cannot catch is a well-formed file of another run placed under this key by hand;
FORCE=1 (make) or CLREPRO_CACHE=off recompute from scratch.

Worker processes exit when the process that started them dies (`exit_with_parent`), and the
default number of parallel runs is bounded by the available memory as well as the cores
(`default_jobs`).
"""

from __future__ import annotations

import ctypes
import hashlib
import inspect
import io
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from clrepro.data.streams import source_dataset
from clrepro.experiment import Experiment
from clrepro.lockstep import lockstep_supported, run_lockstep
from clrepro.methods import method_class
from clrepro.paths import PACKAGE_DIR, REPO_ROOT, atomic_write, files_hash
from clrepro.report import results
from clrepro.report.results import read_results, run_rows, store
from clrepro.run import ray_executor
from clrepro.run.profiles import Profile, resolve_device
from clrepro.run.ray_executor import executor_from_env
from clrepro.train import run


def cache_dir() -> Path | None:
    setting = os.environ.get("CLREPRO_CACHE", str(REPO_ROOT / "build" / "cache"))
    return None if setting.lower() in ("off", "0", "") else Path(setting)


# The code every run executes, relative to the package; a method adds its own class chain and
# the clrepro modules those reference (one level), so adding a new method or a notebook-side
# module invalidates nothing else.
RUN_CORE = ("__init__.py", "config.py", "experiment.py", "paths.py", "metrics.py", "train.py",
            "data/*.py", "models/*.py", "run/profiles.py", "run/runner.py", "report/results.py")


def _referenced_files(module) -> set[Path]:
    files = set()
    for value in vars(module).values():
        name = value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", None)
        if isinstance(name, str) and name.startswith("clrepro.") and name != "clrepro.methods":
            source = sys.modules[name].__file__
            if source:
                files.add(Path(source))
    return files


def run_code_files(method: str) -> set[Path]:
    """The files one run executes: the core modules plus the method's own code (not
    methods/__init__.py: registering another method changes nothing about this one)."""
    files = {path for pattern in RUN_CORE for path in PACKAGE_DIR.glob(pattern)}
    for cls in method_class(method).__mro__:
        if cls.__module__.startswith("clrepro."):
            module = sys.modules[cls.__module__]
            files |= {Path(module.__file__)} | _referenced_files(module)
    return files


def run_code_hash(method: str, lockstep: bool = False) -> str:
    files = run_code_files(method)
    return files_hash(files | {PACKAGE_DIR / "lockstep.py"} if lockstep else files)


def uses_lockstep(experiment: Experiment) -> bool:
    """Whether this experiment's seeds train in lockstep (clrepro.lockstep): wherever the method
    supports it, unless CLREPRO_LOCKSTEP=off. A lockstep run matches its one-seed run only to
    float rounding, so the path is part of the run's identity (its cache key), and it is decided
    by the experiment alone: a seed computed alone or with others gives the same rows."""
    return os.environ.get("CLREPRO_LOCKSTEP", "on").lower() not in ("off", "0") and lockstep_supported(experiment)


def cache_key(experiment: Experiment, seed: int, device: str, data_dir: str | None = None) -> str:
    """The run's identity: experiment, seed, device, the code it executes (and the path: one seed
    or seeds in lockstep), and the data it was trained and tested on (a digest of the tensors as
    loaded, so runs on a modified data folder are never served for the genuine data, or the
    other way round)."""
    data = source_dataset(experiment.benchmark, data_dir).digest
    lockstep = uses_lockstep(experiment)
    code = run_code_hash(experiment.method, lockstep) + ("|lockstep" if lockstep else "")
    text = f"{experiment.to_json()}|{seed}|{device}|{code}|{data}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _cache_path(experiment: Experiment, seed: int, device: str) -> Path | None:
    folder = cache_dir()
    return None if folder is None else folder / f"{cache_key(experiment, seed, device)}.csv"


# ---------------------------------------------------------------------------------------------
# The cache's entries: written whole, read only when whole and right


TRAILER = "#clrepro-cache"


def required_cells(experiment: Experiment) -> tuple[set[int], set[tuple[int, int]]]:
    """What a finished run must have produced: (the tasks of the 'initial' rows, the (after_task,
    eval_task) cells of the 'R' rows).

    Every evaluated row holds at least R[t, i ≤ t] (ACC, BWT and forgetting read nothing else;
    the upper triangle is optional, FWT's R[t, t+1] included, so a loop that evaluates less
    above the diagonal stays valid); a method that trains on all tasks at once fills only the
    last row. When a run diverged at task d, the rows up to d are required (see check_rows)."""
    n_tasks = experiment.benchmark.n_tasks
    rows = [n_tasks - 1] if method_class(experiment.method).trains_jointly else range(n_tasks)
    return set(range(n_tasks)), {(t, i) for t in rows for i in range(t + 1)}


def check_rows(rows: pd.DataFrame, experiment: Experiment, seed: int) -> str | None:
    """Why `rows` are not a complete run of (experiment, seed), or None when they are."""
    missing = [c for c in results.COLUMNS if c not in rows.columns]  # read now: columns may be added
    if missing:
        return f"missing columns {missing}"
    if rows.empty:
        return "no rows"
    for column, expected in (("experiment", experiment.name), ("method", experiment.method)):
        found = set(rows[column].astype(str))
        if found != {expected}:
            return f"{column} is {sorted(found)}, expected {expected!r}"
    seeds = pd.to_numeric(rows["seed"], errors="coerce")
    if not (seeds == seed).all():
        return f"seed is {sorted(set(rows['seed'].astype(str)))}, expected {seed}"
    seconds = pd.to_numeric(rows["seconds"], errors="coerce")
    if seconds.isna().any() or seconds.nunique() != 1:
        return "the run's seconds are missing or differ between rows"
    kind = rows["kind"].astype(str)
    own = rows["scenario"].astype(str) == experiment.benchmark.scenario  # not extra scorings of the run
    accuracy = pd.to_numeric(rows["accuracy"], errors="coerce")
    if (accuracy.isna() & rows["accuracy"].notna()).any():
        return "an accuracy is not a number"
    if accuracy[own & (kind != "diverged")].isna().any():
        return "an accuracy is missing"
    if not accuracy.dropna().between(0, 100).all():
        return "an accuracy is outside [0, 100]"
    for column in ("after_task", "eval_task"):
        values = pd.to_numeric(rows[column], errors="coerce")
        if values.isna().any() or (values != values.round()).any():
            return f"{column} is missing or not an integer in some row"
    initial_tasks, cells = required_cells(experiment)
    after = pd.to_numeric(rows["after_task"]).astype(int)
    task = pd.to_numeric(rows["eval_task"]).astype(int)
    if not initial_tasks <= set(task[(kind == "initial") & own]):
        return "initial accuracies are missing"
    diverged = after[kind == "diverged"]
    if len(diverged) > 1:
        return "more than one 'diverged' row"
    if len(diverged):
        cells = {(t, i) for t, i in cells if t <= int(diverged.iloc[0])}
    present = set(zip(after[(kind == "R") & own], task[(kind == "R") & own], strict=True))
    if absent := sorted(cells - present):
        return f"{len(absent)} accuracy-matrix cell(s) missing, e.g. R[{absent[0][0]}, {absent[0][1]}]"
    return None


def write_entry(rows: pd.DataFrame, path: Path) -> None:
    """The rows as CSV, then a trailer line with their count and SHA-256; written to a unique
    temporary file and renamed, so readers see a whole entry or none."""
    body = rows.to_csv(index=False)
    atomic_write(path, f"{body}{TRAILER} rows={len(rows)} sha256={hashlib.sha256(body.encode()).hexdigest()}\n")


def read_entry(path: Path, experiment: Experiment, seed: int) -> pd.DataFrame | None:
    """The cached rows of (experiment, seed), or None (with a warning naming the file) when the
    entry is damaged, incomplete or not that run."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    problem, rows = _parse_entry(data)
    if problem is None:
        problem = check_rows(rows, experiment, seed)
    if problem is None:
        return rows
    warnings.warn(f"run cache: ignoring {path} ({problem}); recomputing {experiment.name} seed {seed}",
                  stacklevel=3)
    return None


def _parse_entry(data: bytes) -> tuple[str | None, pd.DataFrame | None]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 text", None
    body, _, last = text.rstrip("\n").rpartition("\n")
    fields = dict(item.split("=", 1) for item in last.split()[1:] if "=" in item)
    if not last.startswith(TRAILER) or "sha256" not in fields:
        return "no integrity trailer: cut short, damaged, or written by older code", None
    body += "\n"
    if hashlib.sha256(body.encode()).hexdigest() != fields["sha256"]:
        return "its content does not match its SHA-256 (damaged or edited)", None
    try:
        rows = read_results(io.StringIO(body))
    except Exception as error:  # any parse failure is a miss, named
        return f"unreadable CSV: {error}", None
    if str(len(rows)) != fields.get("rows"):
        return f"{len(rows)} rows, the trailer says {fields.get('rows')}", None
    return None, rows


def train_rows(experiment: Experiment, seed: int, device: str, progress: bool = False) -> pd.DataFrame:
    """Train one run and return its rows, writing nothing (single-threaded on CPU, so results do
    not depend on the core count)."""
    if device == "cpu":
        torch.set_num_threads(1)
    return run_rows(run(experiment, seed, device=device, progress=progress))


def train_unit(experiment: Experiment, seeds: list[int], device: str, progress: bool = False) -> list[pd.DataFrame]:
    """What every executor runs: the seeds of one experiment, in lockstep where the experiment
    uses it (uses_lockstep), else one at a time; the rows of each seed, writing nothing."""
    if not uses_lockstep(experiment):
        return [train_rows(experiment, seed, device, progress) for seed in seeds]
    if device == "cpu":
        torch.set_num_threads(1)
    # A seed's lockstep rows are the same whichever seeds share its batch, as long as there are at
    # least two (a batch of one takes other matmul kernels): a lone seed gets a companion whose
    # rows are dropped.
    companion = [max(seeds) + 1] if len(seeds) == 1 else []
    results = run_lockstep(experiment, seeds + companion, device=device)
    return [run_rows(result) for result in results[:len(seeds)]]


def _cache(experiment: Experiment, seed: int, device: str, rows: pd.DataFrame) -> pd.DataFrame:
    if (path := _cache_path(experiment, seed, device)) is not None:
        write_entry(rows, path)
    return rows




# ---------------------------------------------------------------------------------------------
# Worker processes: bounded in number, never outliving the process that started them

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
RUN_PEAK_BYTES = 2 * 1024**3  # one 20-task Permuted-MNIST run peaks at 1.94 GB (issue 19)


def exit_with_parent(parent_pid: int, poll_seconds: float = 1.0) -> None:
    """Pool initializer: end this worker when the process that started it dies, so a killed
    pipeline or notebook kernel leaves no worker training (or idling) for nobody.

    On Linux the kernel sends SIGTERM at the parent's death (PR_SET_PDEATHSIG; it follows the
    thread that started the worker, which run_experiments keeps alive while the pool exists).
    Everywhere, a daemon thread also checks every poll_seconds that the parent is still the same
    process and exits otherwise."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watchdog below still applies
    if os.getppid() != parent_pid:  # the parent died before we got here
        os._exit(1)

    def watchdog() -> None:
        while True:
            time.sleep(poll_seconds)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watchdog, name="exit-with-parent", daemon=True).start()


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of `workers` spawned processes (fork after torch's thread pools is unsafe) that
    exit when this process dies."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=exit_with_parent, initargs=(os.getpid(),))


def available_memory() -> int | None:
    """Bytes of memory available to new processes (Linux: MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use (containers, taskset)
    except AttributeError:
        return os.cpu_count() or 1


def default_jobs(device: str, profile: Profile) -> int:
    """Parallel runs on CPU: min(cores, available memory / 2 GB), a 20-task Permuted-MNIST run's
    measured peak being 1.94 GB; CLREPRO_JOBS overrides. One on a GPU, and one at the smoke
    profile, where starting worker processes would cost more than the runs."""
    if env := os.environ.get("CLREPRO_JOBS"):
        return max(1, int(env))
    if device != "cpu" or profile.name == "smoke":
        return 1
    memory = available_memory()
    by_memory = available_cores() if memory is None else max(1, memory // RUN_PEAK_BYTES)
    return max(1, min(available_cores(), by_memory))


def run_experiments(
    experiments: Experiment | Iterable[Experiment], profile: Profile, device: str = "auto",
    seeds: list[int] | None = None, progress: bool = True, store_in: Path | None = None,
    jobs: int | None = None, executor: str | None = None,
) -> pd.DataFrame:
    """Every experiment (shrunk to the profile) × every seed; returns the tidy rows and, with
    store_in, replaces those experiments' rows in that results CSV. Runs not in the cache are
    spread over `jobs` worker processes (default: default_jobs), or handed to Ray as tasks with
    executor='ray' (default: CLREPRO_EXECUTOR, else the process pool; see run/ray_executor.py)."""
    executor = executor_from_env(executor)
    experiments = [experiments] if isinstance(experiments, Experiment) else list(experiments)
    device = resolve_device(device)
    seeds = profile.seeds if seeds is None else seeds
    jobs_list = [(profile.apply(e), s) for e in experiments for s in seeds]
    quiet = not progress or bool(os.environ.get("CI")) or bool(os.environ.get("CLREPRO_QUIET"))
    frames: list[pd.DataFrame | None] = [None] * len(jobs_list)
    todo = []
    for i, (experiment, seed) in enumerate(jobs_list):
        path = _cache_path(experiment, seed, device)
        cached = None if path is None else read_entry(path, experiment, seed)
        if cached is not None:
            frames[i] = cached
        else:
            todo.append(i)
    bar = tqdm(total=len(jobs_list), initial=len(jobs_list) - len(todo), desc="runs", disable=quiet, mininterval=2.0)

    def done(i: int, rows: pd.DataFrame) -> None:
        frames[i] = rows
        bar.update(1)

    _run_todo([jobs_list[i] for i in todo], todo, device, jobs or default_jobs(device, profile), progress, done,
              executor)
    bar.close()
    rows = pd.concat(frames, ignore_index=True)
    if store_in is not None:
        store(rows, store_in)
    return rows


def _units(runs: list[tuple[Experiment, int]], ids: list[int]) -> list[tuple[Experiment, list[int], list[int]]]:
    """(experiment, seeds, ids): the seeds of an experiment that trains in lockstep form one unit
    (in the order they come); every other run is a unit of its own."""
    units: list[tuple[Experiment, list[int], list[int]]] = []
    grouped: dict[str, int] = {}
    for i, (experiment, seed) in zip(ids, runs, strict=True):
        key = f"{experiment.name}|{experiment.to_json()}"
        if uses_lockstep(experiment) and key in grouped:
            units[grouped[key]][1].append(seed)
            units[grouped[key]][2].append(i)
            continue
        if uses_lockstep(experiment):
            grouped[key] = len(units)
        units.append((experiment, [seed], [i]))
    return units


def _bounded_by_memory(units: list[tuple[Experiment, list[int], list[int]]], workers: int,
                       ) -> list[tuple[Experiment, list[int], list[int]]]:
    """Split lockstep units so that `workers` of them fit in the available memory: each seed of
    a unit holds its own stream (a 20-task Permuted-MNIST stream is ~1 GB; five seeds in
    lockstep peaked at 6 GB), so a unit may hold at most available / (workers × 2 GB) seeds,
    and never fewer than two (a lone seed would need a companion anyway, see train_unit). A
    seed's rows are the same in any unit of two or more, so the split never changes results.
    Renders started side by side each size themselves from the memory free when they start."""
    memory = available_memory()
    if memory is None or workers < 1:
        return units
    per_unit = max(2, memory // (max(1, workers) * RUN_PEAK_BYTES))
    out = []
    for experiment, seeds, unit_ids in units:
        for start in range(0, len(seeds), per_unit):
            out.append((experiment, seeds[start:start + per_unit], unit_ids[start:start + per_unit]))
    return out


def _run_todo(runs: list[tuple[Experiment, int]], ids: list[int], device: str, jobs: int, progress: bool,
              done: Callable[[int, pd.DataFrame], None], executor: str = "process") -> None:
    """Compute the runs not found in the cache, calling done(id, rows) as each finishes (in any
    order). The work comes in units (an experiment's seeds in lockstep, or one run): in this
    process for one job, otherwise on a pool of min(jobs, units) workers, or as Ray tasks. This
    process writes the cache, whichever executor computed the rows."""
    units = _bounded_by_memory(_units(runs, ids), min(jobs, len(runs)))

    def finish(unit: tuple[Experiment, list[int], list[int]], frames: list[pd.DataFrame]) -> None:
        experiment, seeds, unit_ids = unit
        for seed, i, rows in zip(seeds, unit_ids, frames, strict=True):
            done(i, _cache(experiment, seed, device, rows))

    if executor == "ray" and units:
        calls = [(experiment, seeds, device) for experiment, seeds, _ in units]
        for k, frames in ray_executor.execute(train_unit, calls, device, n_cpus=jobs):
            finish(units[k], frames)
        return
    workers = min(jobs, len(units))
    if workers <= 1:
        for unit in units:
            finish(unit, train_unit(unit[0], unit[1], device, progress=progress and len(runs) == 1))
        return
    with worker_pool(workers) as pool:
        futures = {pool.submit(train_unit, unit[0], unit[1], device): unit for unit in units}
        for future in as_completed(futures):
            finish(futures[future], future.result())
