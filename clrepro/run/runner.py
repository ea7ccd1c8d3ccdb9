"""Run experiments over seeds, with a progress bar and a per-run cache.

A run's rows are cached under build/cache/ keyed by the experiment, the seed, the device, the
hash of the code a run executes (the package minus the other methods' files and the
notebook-side modules) and a digest of the data it loads, so an interrupted notebook resumes
where it stopped, a finished run is never recomputed for unchanged code and data, and adding a
method does not invalidate other runs.
Set CLREPRO_CACHE=off to disable it (or to a folder to move it).
"""

from __future__ import annotations

import hashlib
import inspect
import multiprocessing
import os
import sys
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from clrepro.data.streams import source_dataset
from clrepro.experiment import Experiment
from clrepro.methods import method_class
from clrepro.paths import PACKAGE_DIR, REPO_ROOT, files_hash
from clrepro.report.results import atomic_write_csv, read_results, run_rows, store
from clrepro.run.profiles import Profile, resolve_device
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


def run_code_hash(method: str) -> str:
    return files_hash(run_code_files(method))


def cache_key(experiment: Experiment, seed: int, device: str, data_dir: str | None = None) -> str:
    """The run's identity: experiment, seed, device, the code it executes, and the data it was
    trained and tested on (a digest of the tensors as loaded, so runs on a modified data folder
    are never served for the genuine data, or the other way round)."""
    data = source_dataset(experiment.benchmark, data_dir).digest
    text = f"{experiment.to_json()}|{seed}|{device}|{run_code_hash(experiment.method)}|{data}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _cache_path(experiment: Experiment, seed: int, device: str) -> Path | None:
    folder = cache_dir()
    return None if folder is None else folder / f"{cache_key(experiment, seed, device)}.csv"


def _execute(experiment: Experiment, seed: int, device: str, progress: bool = False) -> pd.DataFrame:
    """Train one run (single-threaded on CPU, so results do not depend on the core count)."""
    if device == "cpu":
        torch.set_num_threads(1)
    rows = run_rows(run(experiment, seed, device=device, progress=progress))
    if (path := _cache_path(experiment, seed, device)) is not None:
        atomic_write_csv(rows, path)
    return rows


def default_jobs(device: str, profile: Profile) -> int:
    """Parallel runs: one per CPU core on CPU (CLREPRO_JOBS overrides); one on a GPU, and one at
    the smoke profile, where starting worker processes would cost more than the runs."""
    if env := os.environ.get("CLREPRO_JOBS"):
        return max(1, int(env))
    if device != "cpu" or profile.name == "smoke":
        return 1
    return max(1, os.cpu_count() or 1)


def run_experiments(
    experiments: Experiment | Iterable[Experiment], profile: Profile, device: str = "auto",
    seeds: list[int] | None = None, progress: bool = True, store_in: Path | None = None,
    jobs: int | None = None,
) -> pd.DataFrame:
    """Every experiment (shrunk to the profile) × every seed; returns the tidy rows and, with
    store_in, replaces those experiments' rows in that results CSV. Runs not in the cache are
    spread over `jobs` worker processes."""
    experiments = [experiments] if isinstance(experiments, Experiment) else list(experiments)
    device = resolve_device(device)
    seeds = profile.seeds if seeds is None else seeds
    jobs_list = [(profile.apply(e), s) for e in experiments for s in seeds]
    quiet = not progress or bool(os.environ.get("CI")) or bool(os.environ.get("CLREPRO_QUIET"))
    frames: list[pd.DataFrame | None] = [None] * len(jobs_list)
    todo = []
    for i, (experiment, seed) in enumerate(jobs_list):
        path = _cache_path(experiment, seed, device)
        if path is not None and path.exists():
            frames[i] = read_results(path)
        else:
            todo.append(i)
    workers = min(jobs or default_jobs(device, profile), len(todo))
    bar = tqdm(total=len(jobs_list), initial=len(jobs_list) - len(todo), desc="runs", disable=quiet, mininterval=2.0)
    if workers <= 1:
        for i in todo:
            frames[i] = _execute(*jobs_list[i], device, progress=progress and len(todo) == 1)
            bar.update(1)
    else:
        context = multiprocessing.get_context("spawn")  # fork after torch's thread pools is unsafe
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(_execute, *jobs_list[i], device): i for i in todo}
            for future in as_completed(futures):
                frames[futures[future]] = future.result()
                bar.update(1)
    bar.close()
    rows = pd.concat(frames, ignore_index=True)
    if store_in is not None:
        store(rows, store_in)
    return rows
