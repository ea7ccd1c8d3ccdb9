"""`make reproduce` and the notebook half of `make test`.

reproduce: execute every notebook with papermill (the summary last) at a profile. Each run
writes into a staging folder; only when it succeeds are its rendered notebook, results and
figures moved into place, so a failure never touches earlier outputs. A notebook whose inputs
(its cells, the package code, its parameters) hash to the stamp of its last successful run is
skipped, so an interrupted `make reproduce` resumes where it stopped. When only markdown cells
changed, the new prose is copied into the rendered notebook without executing anything:
markdown is never executed, so the outputs stay those of the code that produced them.

Concurrency: each render stages into its own folder (build/staging/<profile>/<notebook>-<pid>-…),
holds a lock on its notebook's outputs from start to stamp (a second render of the same
notebook waits, or gives up after --wait seconds), and every shared file (.stamps.json, the
README, rendered notebooks, results) is replaced through a unique temporary file, under a short
lock where it is read-modified-written. Renders of different notebooks run side by side.

Provenance: each stamp records the commit and whether the tree was clean when the render
started; a paper-profile render from a dirty tree is refused unless --allow-dirty (and the
stamp says so). `check-renders` lists which rendered notebooks are no longer current. A change
to package files a notebook does not execute (modules its cells do not import, directly or
through others, and modules of methods it does not run) leaves its render current: the render's
inputs are read back from its stamped commit and compared on the files that matter.

prepare-tests: copies of the notebooks with the smoke profile injected, for nbval.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from clrepro.config import ConfigError
from clrepro.paths import PACKAGE_DIR, REPO_ROOT, OutputDirs, atomic_write, code_hash, output_dirs
from clrepro.run.profiles import PROFILES, get_profile, resolve_device
from clrepro.run.ray_executor import EXECUTORS, executor_from_env

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
SUMMARY = "summary"
README_START, README_END = "<!-- summary:start -->", "<!-- summary:end -->"
DURATIONS_START, DURATIONS_END = "<!-- durations:start -->", "<!-- durations:end -->"
# The kernel's own log (its "running over TCP without encryption" warning once per notebook, and
# an ERROR-level "KeyboardInterrupt caught" when papermill shuts it down) would bury the one
# progress line per notebook. A failing cell or a dead kernel still fails the render through
# papermill, with the cell named.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]


def notebooks(only: list[str] | None = None) -> list[Path]:
    """Every notebook, the summary last (it reads what the others wrote)."""
    paths = sorted(p for p in NOTEBOOKS_DIR.glob("*.ipynb") if p.stem != SUMMARY)
    if (NOTEBOOKS_DIR / f"{SUMMARY}.ipynb").exists():
        paths.append(NOTEBOOKS_DIR / f"{SUMMARY}.ipynb")
    if only:
        unknown = set(only) - {p.stem for p in paths}
        if unknown:
            raise ConfigError(f"--only: unknown notebook(s) {sorted(unknown)}; one of {[p.stem for p in paths]}")
        paths = [p for p in paths if p.stem in only]
    return paths


def _is_injected(cell) -> bool:
    return "injected-parameters" in cell.get("metadata", {}).get("tags", [])


def input_hash(notebook: Path, parameters: dict, extra: bytes = b"",
               code_only: bool = False, code: str | None = None) -> str:
    """Hash of what determines a render: cell sources (not outputs), code, parameters.

    code_only: leave markdown cells out (what determines the outputs). code: the package's hash
    (default: the whole package as it is now, `paths.code_hash`)."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    digest = hashlib.sha256()
    for cell in nb.cells:
        if _is_injected(cell) or (code_only and cell.cell_type == "markdown"):
            continue
        digest.update(cell.cell_type.encode() + b"\0" + cell.source.encode() + b"\0")
    digest.update((code or code_hash()).encode())
    digest.update(json.dumps(parameters, sort_keys=True).encode())
    digest.update(extra)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Which package changes concern a render
#
# The stamp hashes the whole package, so any change to it (one method's file, the renderer itself)
# makes every render look stale, and `make reproduce` would re-run notebooks that never execute
# the changed code. When the hashes differ, the render's own inputs are read back from its commit
# (git), checked against the stamp, and compared with today's on the files that can change the
# notebook's outputs: the package modules its cells import, and what those import in turn (any
# import, module level or not), the package's data tables, but not the modules of methods it
# does not run (the line the run cache draws too: runner.run_code_files).


def _module_files(name: str, package_dir: Path) -> list[Path]:
    """The files that importing module `name` (clrepro.…) executes: it and its packages' __init__s."""
    parts = name.split(".")[1:]
    files = [package_dir.joinpath(*parts[:i], "__init__.py") for i in range(len(parts))]
    module = package_dir.joinpath(*parts)
    files.append(module / "__init__.py" if module.is_dir() else module.with_suffix(".py"))
    return [f for f in files if f.is_file()]


def _imports(source: str, package_dir: Path) -> set[Path]:
    """Package files named by the imports in `source` (notebook magics and shell lines skipped)."""
    code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    files: set[Path] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == PACKAGE_DIR.name or name.startswith(PACKAGE_DIR.name + "."):
                files.update(_module_files(name, package_dir))
    return files


def notebook_code_files(notebook: Path, package_dir: Path | None = None) -> set[str]:
    """Package-relative paths of what the notebook's kernel can execute: the transitive closure of
    its code cells' package imports, and the package's .csv tables."""
    import nbformat

    package_dir = package_dir or PACKAGE_DIR
    nb = nbformat.read(notebook, as_version=4)
    todo = set().union(*(_imports(c.source, package_dir) for c in nb.cells if c.cell_type == "code"))
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        seen.add(path)
        todo |= _imports(path.read_text(), package_dir) - seen
    return {str(p.relative_to(package_dir)) for p in seen | set(package_dir.rglob("*.csv"))}


def _files_hash(package_dir: Path, files: set[str]) -> str:
    """paths.code_hash restricted to `files` (package-relative); a file missing counts as such."""
    digest = hashlib.sha256()
    for name in sorted(files):
        path = package_dir / name
        digest.update(name.encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"\0absent\0")
    return digest.hexdigest()


def _package_files(package_dir: Path) -> list[Path]:
    """The files paths.code_hash covers, in `package_dir`."""
    return sorted(p for p in package_dir.rglob("*") if p.suffix in {".py", ".csv"} and "__pycache__" not in p.parts)


def _package_hash(package_dir: Path) -> str:
    """paths.code_hash, byte for byte, of the package in `package_dir` (this one, or one read back
    from a commit). Not paths.files_hash with a root argument: paths.py is code every run executes,
    so changing it would re-key every cached run."""
    digest = hashlib.sha256()
    for path in _package_files(package_dir):
        digest.update(str(path.relative_to(package_dir)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def methods_run(stem: str, results_dir: Path) -> set[str]:
    """The registered methods in the `method` column of the notebook's results (`<stem>.csv`,
    `<stem>_*.csv`): what its runs executed."""
    from clrepro.methods import available_methods

    names: set[str] = set()
    for path in [results_dir / f"{stem}.csv", *sorted(results_dir.glob(f"{stem}_*.csv"))]:
        if path.is_file():
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                if "method" in (reader.fieldnames or []):
                    names |= {row["method"] for row in reader}
    return names & set(available_methods())


def method_files_not_run(methods: set[str], notebook: Path | None = None) -> frozenset[str]:
    """Package-relative paths of method modules that none of `methods` executes (their class
    chains and what those reference, as in the run cache key) and that neither the notebook nor a
    module outside clrepro/methods names. Modules defining no registered method (base, buffer)
    always count."""
    from clrepro.methods import available_methods, method_class
    from clrepro.run.runner import run_code_files

    method_dir = PACKAGE_DIR / "methods"
    defining = {Path(sys.modules[method_class(m).__module__].__file__) for m in available_methods()}
    needed = set().union(*(run_code_files(m) for m in methods))
    sources = [p.read_text() for p in PACKAGE_DIR.rglob("*.py") if method_dir not in p.parents]
    if notebook is not None:
        sources.append(notebook.read_text())
    named = {method_dir / f"{name}.py" for text in sources for name in re.findall(r"clrepro\.methods\.(\w+)", text)}
    return frozenset(str(p.relative_to(PACKAGE_DIR)) for p in defining - needed - named)


def _tree_at(commit: str, paths: list[str], into: Path) -> bool:
    """Extract `paths` as they were at `commit` into `into`; False without git or that commit."""
    try:
        archive = subprocess.run(["git", "archive", "--format=tar", commit, "--", *paths], cwd=REPO_ROOT,
                                 capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return False
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return True


def compare_with_render(notebook: Path, stamp: dict, parameters: dict, results_dir: Path,
                        code_only: bool = True) -> dict | None:
    """The notebook's inputs now against those of its last render, on the package files that can
    change its outputs (notebook_code_files, less method_files_not_run). None when the render's
    inputs cannot be recovered (no stamped commit, a render from a dirty tree, no git) or do not
    hash to its stamp. Otherwise
    {"same": whether they agree, "changed": package files changed since the render,
    "ignored": those among them that cannot change its outputs (not imported by it, or modules
    of methods it does not run)}.

    code_only: compare what determines the outputs (the stamp's code_inputs, at its commit);
    otherwise also the markdown (its inputs, at the commit of its last prose update)."""
    provenance = stamp if code_only or "prose" not in stamp else stamp["prose"]
    key = "code_inputs" if code_only else "inputs"
    commit = provenance.get("commit")
    if not commit or provenance.get("clean") is not True or key not in stamp or "parameters" not in stamp:
        return None
    summary = notebook.stem == SUMMARY
    try:
        relative_notebook, relative_results = (str(p.relative_to(REPO_ROOT)) for p in (notebook, results_dir))
    except ValueError:  # outside the checkout: not in git
        return None
    with tempfile.TemporaryDirectory() as tmp:
        then = Path(tmp)
        paths = [PACKAGE_DIR.name, relative_notebook] + ([relative_results] if summary else [])
        if not _tree_at(commit, paths, then):
            return None
        old_notebook, old_package = then / relative_notebook, then / PACKAGE_DIR.name
        old_extra = _results_fingerprint(then / relative_results) if summary else b""
        if input_hash(old_notebook, stamp["parameters"], old_extra, code_only,
                      code=_package_hash(old_package)) != stamp[key]:
            return None  # the stamp was not written from this commit's files
        skip = method_files_not_run(methods_run(notebook.stem, results_dir), notebook)
        executed = (notebook_code_files(notebook) | notebook_code_files(old_notebook, old_package)) - skip
        extra = _results_fingerprint(results_dir) if summary else b""
        same = input_hash(old_notebook, stamp["parameters"], old_extra, code_only,
                          code=_files_hash(old_package, executed)) == input_hash(
            notebook, parameters, extra, code_only, code=_files_hash(PACKAGE_DIR, executed))
        files = {}
        for root in (old_package, PACKAGE_DIR):
            for path in _package_files(root):
                files.setdefault(str(path.relative_to(root)), []).append(path.read_bytes())
    changed = sorted(name for name, contents in files.items() if len(contents) == 1 or contents[0] != contents[1])
    return {"same": same, "changed": changed, "ignored": [name for name in changed if name not in executed]}


def update_prose(source: Path, rendered: Path) -> bool:
    """Copy the markdown cells of `source` into `rendered` when their code cells are the same.

    Returns False (and changes nothing) when the two notebooks differ in anything but markdown."""
    import nbformat

    new = nbformat.read(source, as_version=4)
    old = nbformat.read(rendered, as_version=4)
    new_cells = [c for c in new.cells if not _is_injected(c)]
    old_cells = [c for c in old.cells if not _is_injected(c)]
    same_shape = len(new_cells) == len(old_cells) and all(
        a.cell_type == b.cell_type and (a.cell_type == "markdown" or a.source == b.source)
        for a, b in zip(new_cells, old_cells, strict=False))
    if not same_shape:
        return False
    for a, b in zip(new_cells, old_cells, strict=True):
        b.source = a.source
    text = nbformat.writes(old)
    atomic_write(rendered, text if text.endswith("\n") else text + "\n")
    return True


# What the summary itself writes: not among its inputs, or it could never be current.
SUMMARY_OUTPUTS = frozenset({"replication_table.csv"})


def _results_fingerprint(results_dir: Path) -> bytes:
    """The results files the summary reads (every CSV but its own outputs)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in results_dir.glob("*.csv") if p.name not in SUMMARY_OUTPUTS):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.digest()


# ---------------------------------------------------------------------------------------------
# Locks and atomic writes


class LockBusy(RuntimeError):
    """Another process holds the lock and did not release it within the wait."""


def _lock_dir(dirs: OutputDirs) -> Path:
    return dirs.results / ".locks"


@contextlib.contextmanager
def file_lock(path: Path, what: str = "", wait: float | None = None, poll: float = 0.5) -> Iterator[None]:
    """An exclusive flock on `path`, released when the block ends or the process dies (the
    kernel drops flocks of dead processes, so a crash never leaves a stale lock behind).

    what: shown while waiting; wait: seconds to wait before LockBusy (None: as long as it takes,
    0: not at all)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            if what:
                limit = "as long as it takes (Ctrl-C to stop)" if wait is None else f"up to {wait:g} s"
                print(f"[wait] {what}: another process (pid {holder}) holds {path}; waiting {limit}", flush=True)
            deadline = None if wait is None else time.monotonic() + wait
            while True:
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockBusy(f"{what or path}: another process (pid {holder}) holds {path}") from None
                time.sleep(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic())))
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _copy_atomic(src: Path, target: Path) -> None:
    atomic_write(target, src.read_bytes())


def _load_stamps(path: Path) -> dict:
    """The stamps, or {} (every notebook re-renders) with a warning naming the file when it is
    damaged: a broken bookkeeping file must not block every run."""
    if not path.exists():
        return {}
    try:
        stamps = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        warnings.warn(f"{path} is damaged ({error}); treating it as no stamps (every notebook re-renders)",
                      stacklevel=2)
        return {}
    if not isinstance(stamps, dict) or not all(isinstance(v, dict) for v in stamps.values()):
        warnings.warn(f"{path} is not a mapping of notebook → stamp; treating it as no stamps", stacklevel=2)
        return {}
    return stamps


def _update_stamp(path: Path, name: str, stamp: dict) -> None:
    """Read, change and write the stamps under their lock, so that concurrent renders of other
    notebooks keep theirs."""
    with file_lock(path.parent / ".locks" / "stamps.lock"):
        stamps = {**_load_stamps(path), name: stamp}
        atomic_write(path, json.dumps(stamps, indent=2, sort_keys=True) + "\n")


def _is_temporary(path: Path) -> bool:
    return path.name.startswith(".") or path.name.endswith((".tmp", ".lock", ".partial"))


def _move_into_place(staging: Path, destination: Path) -> None:
    """Copy the render's results and figures into place, one atomic replace per file; dot-files
    and temporary files (a write the notebook did not finish) stay behind."""
    for sub in ("results", "figures"):
        for src in sorted((staging / sub).glob("*")):
            if src.is_file() and not _is_temporary(src):
                _copy_atomic(src, destination / sub / src.name)


def _splice(readme: Path, start: str, end: str, markdown: str) -> bool:
    text = readme.read_text()
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    atomic_write(readme, f"{head}{start}\n{markdown.strip()}\n{end}{tail}")
    return True


def _readme_lock() -> Path:
    return _lock_dir(output_dirs("paper")) / "readme.lock"


def update_readme(table_markdown: str, readme: Path = REPO_ROOT / "README.md") -> None:
    with file_lock(_readme_lock()):
        _splice(readme, README_START, README_END, table_markdown)


# ---------------------------------------------------------------------------------------------
# Provenance


def git_state(root: Path = REPO_ROOT) -> tuple[str | None, bool | None]:
    """(commit, clean): HEAD and whether `git status` shows nothing (tracked changes or
    untracked files); (None, None) outside a git checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
                                check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit, not status.strip()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _rendered_dir(profile: str, dirs: OutputDirs) -> Path:
    return NOTEBOOKS_DIR if profile == "paper" else dirs.root / "notebooks"


def _parameters(profile: str, device: str, n_seeds: int | None) -> dict:
    parameters = {"profile": profile, "device": device}
    if n_seeds is not None:
        parameters["n_seeds"] = n_seeds
    return parameters


def render_status(profile: str = "paper"):
    """One row per notebook: its last render's commit, whether the tree was clean, when it
    finished and how long it took, and whether it is current (its stamp's inputs hash equals the
    hash of the notebook's cells, the package code and its parameters now), with the reason when
    it is not. The summary notebook shows this table; `make check-renders` prints it."""
    import pandas as pd

    dirs = output_dirs(profile)
    stamps = _load_stamps(dirs.results / ".stamps.json")
    rendered_dir = _rendered_dir(profile, dirs)
    rows = []
    for notebook in notebooks():
        stamp = stamps.get(notebook.stem)
        row = {"notebook": notebook.stem, "commit": None, "clean": None, "finished": None, "minutes": None,
               "current": False, "reason": ""}
        if stamp is None:
            rows.append({**row, "reason": "never rendered (no stamp)"})
            continue
        row.update(commit=(stamp.get("commit") or "")[:12] or None, clean=stamp.get("clean"),
                   finished=stamp.get("finished"), minutes=stamp.get("minutes"))
        if not (rendered_dir / notebook.name).exists():
            rows.append({**row, "reason": "the rendered notebook is missing"})
            continue
        extra = _results_fingerprint(dirs.results) if notebook.stem == SUMMARY else b""
        # Stamps written before parameters were recorded: the device was 'cpu' or 'cuda'.
        candidates = [stamp["parameters"]] if "parameters" in stamp else [
            _parameters(profile, device, None) for device in ("cpu", "cuda")]
        prose_only = "only markdown changed (`make reproduce` copies the prose, runs nothing)"
        if any(input_hash(notebook, params, extra) == stamp.get("inputs") for params in candidates):
            rows.append({**row, "current": True})
            continue
        if any(input_hash(notebook, params, extra, code_only=True) == stamp.get("code_inputs")
               for params in candidates):
            rows.append({**row, "reason": prose_only})
            continue
        outputs = compare_with_render(notebook, stamp, stamp.get("parameters", {}), dirs.results)
        if outputs is not None and outputs["same"]:
            text = compare_with_render(notebook, stamp, stamp["parameters"], dirs.results, code_only=False)
            note = f"changed since its render only in files it does not execute: {', '.join(outputs['ignored'])}"
            rows.append({**row, "current": True, "reason": note} if text is not None and text["same"] else
                        {**row, "reason": f"{prose_only}; {note}"})
        elif outputs is not None:
            relevant = [name for name in outputs["changed"] if name not in outputs["ignored"]]
            what = f"changed since its render: {', '.join(relevant)}" if relevant else \
                "its code cells or the results it reads changed" if notebook.stem == SUMMARY else \
                "its code cells or parameters changed"
            rows.append({**row, "reason": what})
        elif "code_inputs" not in stamp:
            rows.append({**row, "reason": "inputs changed (and the stamp predates code_inputs)"})
        elif notebook.stem == SUMMARY:
            rows.append({**row, "reason": "its cells, the package code or the results it reads changed"})
        else:
            rows.append({**row, "reason": "its code cells, the package code or its parameters changed"})
    return pd.DataFrame(rows, columns=["notebook", "commit", "clean", "finished", "minutes", "current", "reason"])


RUN_KEYS = ["experiment", "method", "benchmark", "scenario", "params", "seed"]


def run_times(results_csv: Path):
    """One row per run of a notebook's results file (its RUN_KEYS) with the run's wall `seconds`
    and `run_cpu_seconds` (NaN where not recorded: renders before wave 2), or None when the file
    records no run times. A Class-IL run's Task-IL view is the same run, so it is counted once."""
    import pandas as pd

    from clrepro.metrics import trained_view

    try:
        rows = pd.read_csv(results_csv, dtype={"params": str}, keep_default_na=False, na_values=[""])
    except (OSError, ValueError):
        return None
    if not set(RUN_KEYS) | {"seconds"} <= set(rows.columns):
        return None
    rows = trained_view(rows)
    cpu = rows["run_cpu_seconds"] if "run_cpu_seconds" in rows else pd.Series(float("nan"), index=rows.index)
    rows = rows.assign(seconds=pd.to_numeric(rows["seconds"], errors="coerce"),
                       run_cpu_seconds=pd.to_numeric(cpu, errors="coerce"))
    return rows.groupby(RUN_KEYS, dropna=False)[["seconds", "run_cpu_seconds"]].max()


def run_cpu_hours(results_csv: Path) -> float | None:
    """The sum of the per-run times recorded in a notebook's results file, in hours: what its
    runs cost from an empty cache on one core (None when the file records no run times). A run's
    CPU time (run_cpu_seconds) where it was recorded, else its wall seconds."""
    runs = run_times(results_csv)
    if runs is None or not runs["seconds"].notna().any():
        return None
    return float(runs["run_cpu_seconds"].fillna(runs["seconds"]).sum()) / 3600


def durations_markdown(stamps: dict, results_dir: Path | None = None) -> str:
    """The README's table of render times, from the stamps and the results (never typed)."""
    results_dir = output_dirs("paper").results if results_dir is None else results_dir
    lines = ["| notebook | minutes (last paper-profile render) | CPU-hours of its runs | finished | CPU cores |",
             "|---|---:|---:|---|---:|"]
    total, total_cpu = 0.0, 0.0
    for name in [p.stem for p in notebooks()]:
        stamp = stamps.get(name)
        cpu = run_cpu_hours(results_dir / f"{name}.csv")
        total_cpu += cpu or 0.0
        cpu_text = "–" if cpu is None else f"{cpu:.1f}"
        if stamp is None or stamp.get("minutes") is None:
            lines.append(f"| {name} | – | {cpu_text} | not rendered | |")
            continue
        total += float(stamp["minutes"])
        lines.append(f"| {name} | {float(stamp['minutes']):.1f} | {cpu_text} | {stamp.get('finished', '–')} "
                     f"| {stamp.get('cores', 'not recorded')} |")
    lines.append(f"| **total** | **{total:.1f}** ({total / 60:.1f} h) | **{total_cpu:.1f}** | | |")
    return "\n".join(lines)


def update_durations(readme: Path = REPO_ROOT / "README.md") -> bool:
    """Splice the render times of the paper-profile stamps into the README."""
    stamps = _load_stamps(output_dirs("paper").results / ".stamps.json")
    with file_lock(_readme_lock()):
        return _splice(readme, DURATIONS_START, DURATIONS_END, durations_markdown(stamps))


# ---------------------------------------------------------------------------------------------
# reproduce


def reproduce(profile: str, device: str, force: bool = False, only: list[str] | None = None,
              n_seeds: int | None = None, allow_dirty: bool = False, wait: float | None = None) -> int:
    """Render the notebooks (the summary last). Errors in the arguments raise ConfigError before
    any notebook runs; a failed or refused notebook is reported and the others still run.

    allow_dirty: render at the paper profile although the tree has uncommitted changes (the stamp
    records clean=False). wait: seconds to wait for another render of the same notebook (None:
    as long as it takes)."""
    import papermill

    get_profile(profile)
    if n_seeds is not None and (isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 1):
        raise ConfigError(f"--n-seeds: must be an integer >= 1, got {n_seeds!r}")
    if only is not None and not only:
        raise ConfigError("--only: give at least one notebook name (leave --only out to run them all)")
    resolve_device(device)  # fails early on a device this machine lacks; 'auto' goes to the notebooks as is,
    # where the runs are routed (clrepro.run.routing)
    selected = notebooks(only)
    commit, clean = git_state()
    if profile == "paper" and not clean and not allow_dirty:
        why = "not a git checkout, so the commit cannot be named" if clean is None else \
            "the tree has uncommitted changes (`git status`)"
        raise ConfigError(f"--allow-dirty: a paper-profile render must come from a committed state, but {why}; "
                          "commit first, or pass --allow-dirty (ALLOW_DIRTY=1) and the stamps record it")
    dirs = output_dirs(profile)
    rendered_dir = _rendered_dir(profile, dirs)
    rendered_dir.mkdir(parents=True, exist_ok=True)
    stamps_path = dirs.results / ".stamps.json"
    parameters = _parameters(profile, device, n_seeds)
    failures = []
    for notebook in selected:
        try:
            with file_lock(_lock_dir(dirs) / f"render-{notebook.stem}.lock",
                           f"{notebook.stem}: another render of its outputs is running", wait):
                outcome = _render(notebook, profile, device, force, parameters, dirs, rendered_dir, stamps_path,
                                  commit, clean, papermill)
        except LockBusy as error:
            print(f"[busy] {error}; not rendered", file=sys.stderr, flush=True)
            outcome = False
        if not outcome:
            failures.append(notebook.stem)
    if profile == "paper":
        update_durations()
    if failures:
        print(f"failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


def _render(notebook: Path, profile: str, device: str, force: bool, parameters: dict, dirs: OutputDirs,
            rendered_dir: Path, stamps_path: Path, commit: str | None, clean: bool | None, papermill) -> bool:
    """One notebook, under its lock: skip, copy prose, or execute in a private staging folder and
    move the outputs into place. Returns False on failure."""
    # Read the stamps only now, inside the lock: a render that finished while we waited is seen.
    stamp = _load_stamps(stamps_path).get(notebook.stem, {})
    extra = _results_fingerprint(dirs.results) if notebook.stem == SUMMARY else b""
    digest = input_hash(notebook, parameters, extra)
    code_digest = input_hash(notebook, parameters, extra, code_only=True)
    rendered = rendered_dir / notebook.name
    provenance = {"commit": commit, "clean": clean, "parameters": parameters, "cores": _cores()}
    if not force and rendered.exists() and stamp.get("inputs") == digest:
        print(f"[skip] {notebook.stem}: unchanged since its last successful run", flush=True)
        return True
    outputs_current = stamp.get("code_inputs") == code_digest
    if not force and rendered.exists() and not outputs_current:
        outputs = compare_with_render(notebook, stamp, parameters, dirs.results)
        if outputs is not None and outputs["same"]:
            outputs_current = True
            ignored = ", ".join(outputs["ignored"])
            text = compare_with_render(notebook, stamp, parameters, dirs.results, code_only=False)
            if text is not None and text["same"]:
                print(f"[skip] {notebook.stem}: changed since its last successful run only in package files it "
                      f"does not execute ({ignored})", flush=True)
                return True
    if not force and rendered.exists() and outputs_current and update_prose(notebook, rendered):
        # The stamp keeps the commit its outputs came from (code_inputs); the prose gets its own.
        _update_stamp(stamps_path, notebook.stem, {**stamp, "inputs": digest, "prose": provenance})
        print(f"[text] {notebook.stem}: only markdown changed; prose updated, nothing re-run", flush=True)
        return True
    # A folder of its own per render: two renders never delete or move each other's files.
    parent = REPO_ROOT / "build" / "staging" / profile
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{notebook.stem}-{os.getpid()}-", dir=parent))
    (staging / "results").mkdir()
    (staging / "figures").mkdir()
    print(f"[run ] {notebook.stem} (profile={profile}, device={device})", flush=True)
    started = time.time()
    try:
        papermill.execute_notebook(
            str(notebook), str(staging / notebook.name),
            parameters={**parameters, "output_root": str(staging)},
            cwd=str(NOTEBOOKS_DIR), kernel_name="python3", progress_bar=False,
            extra_arguments=KERNEL_ARGUMENTS,
        )
    except Exception as error:  # papermill raises PapermillExecutionError with the cell
        print(f"[FAIL] {notebook.stem}: {error}", file=sys.stderr)
        print(f"       partial render kept in {staging}; committed outputs untouched", file=sys.stderr)
        return False
    _strip_output_root(staging / notebook.name)
    _move_into_place(staging, dirs.root)
    _copy_atomic(staging / notebook.name, rendered)
    if notebook.stem == SUMMARY and profile == "paper":
        table = dirs.results / "summary_table.md"
        if table.exists():
            update_readme(table.read_text())
    minutes = (time.time() - started) / 60
    _update_stamp(stamps_path, notebook.stem, {
        "inputs": digest, "code_inputs": code_digest, "minutes": round(minutes, 2),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **provenance})
    shutil.rmtree(staging, ignore_errors=True)
    print(f"[done] {notebook.stem} in {minutes:.1f} min", flush=True)
    return True


def _strip_output_root(path: Path) -> None:
    """The staging folder is an implementation detail: drop it from the injected cell."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            lines = [ln for ln in cell.source.splitlines() if not ln.startswith("output_root")]
            cell.source = "\n".join(lines)
    nbformat.write(nb, path)


CHECK_OUTPUT = "# NBVAL_CHECK_OUTPUT"


def prepare_tests(out: Path, profile: str = "smoke") -> list[Path]:
    """Notebook copies with the given profile injected, for nbval. Cells marked
    NBVAL_CHECK_OUTPUT compare their output with the rendered notebook's; that comparison means
    something only against a render of the current code, so in the copy of a stale render the
    marker is dropped (the cells still run) and a line says so (`make check-renders` lists them)."""
    import nbformat
    import papermill

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    status = render_status("paper").set_index("notebook")
    prepared = []
    for notebook in notebooks():
        target = out / notebook.name
        papermill.execute_notebook(
            str(notebook), str(target), parameters={"profile": profile, "device": "cpu"},
            prepare_only=True, kernel_name="python3", progress_bar=False,
        )
        if notebook.stem in status.index and not status.loc[notebook.stem, "current"]:
            nb = nbformat.read(target, as_version=4)
            checked = [c for c in nb.cells if c.cell_type == "code" and CHECK_OUTPUT in c.source]
            for cell in checked:
                cell.source = "\n".join(ln for ln in cell.source.splitlines() if ln.strip() != CHECK_OUTPUT)
            if checked:
                nbformat.write(nb, target)
                print(f"[stale] {notebook.stem}: its render is not current, so {len(checked)} checked cell(s) "
                      f"run without comparing outputs ({status.loc[notebook.stem, 'reason']})", file=sys.stderr)
        prepared.append(target)
    return prepared


# ---------------------------------------------------------------------------------------------
# Command line


class _Parser(argparse.ArgumentParser):
    """Errors as one line naming the option (`error: --only: …`), no usage block."""

    def error(self, message: str):
        self.exit(2, f"error: {message.removeprefix('argument ')}\n")


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m clrepro.run.pipeline")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    rep = sub.add_parser(
        "reproduce", help="execute the notebooks with papermill",
        description="Execute the notebooks (the summary last) at a profile. Inside a notebook, runs go to "
                    "min(cores, available memory / ~2 GB) worker processes on CPU (CLREPRO_JOBS overrides).")
    rep.add_argument("--profile", default="paper", choices=sorted(PROFILES))
    rep.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N or mps; "
                     "a device this machine lacks is an error before anything runs")
    rep.add_argument("--force", action="store_true", help="re-run even unchanged notebooks")
    rep.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="notebook names (without .ipynb)")
    rep.add_argument("--n-seeds", type=_at_least_one, default=None, help="seeds per experiment (>= 1)")
    rep.add_argument("--allow-dirty", action="store_true",
                     help="allow a paper-profile render from a tree with uncommitted changes (recorded in the stamp)")
    rep.add_argument("--wait", type=_seconds, default=None, metavar="SECONDS",
                     help="how long to wait for another render of the same notebook (default: as long as it "
                          "takes; 0: give up at once)")
    rep.add_argument("--executor", choices=EXECUTORS, default=None,
                     help="where the notebooks' runs execute: 'process' (a pool of worker processes on this "
                          "machine, the default) or 'ray' (Ray tasks on the cluster at RAY_ADDRESS, else a local "
                          "Ray); same results, same run cache (default: CLREPRO_EXECUTOR, else process)")
    prose = sub.add_parser("prose", help="copy the markdown of edited notebooks into the rendered "
                           "ones in notebooks/ (same code cells), executing nothing")
    prose.add_argument("sources", nargs="+", type=Path, help="edited .ipynb files")
    check = sub.add_parser("check-renders", help="list each rendered notebook's commit and whether it is current; "
                           "exit 1 when any is stale")
    check.add_argument("--profile", default="paper", choices=sorted(PROFILES))
    sub.add_parser("durations", help="splice the paper-profile render times from the stamps into the README")
    tests = sub.add_parser("prepare-tests", help="smoke-profile notebook copies for nbval")
    tests.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "nbtest")
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _dispatch(args) -> int:
    if args.command == "reproduce":
        # The kernels inherit the environment; the executor changes where runs execute, never
        # their results, so it is not part of a render's inputs.
        os.environ["CLREPRO_EXECUTOR"] = executor_from_env(args.executor)
        return reproduce(args.profile, args.device, args.force, args.only, args.n_seeds,
                         allow_dirty=args.allow_dirty, wait=args.wait)
    if args.command == "prose":
        dirs = output_dirs("paper")
        refused = []
        for src in args.sources:
            with file_lock(_lock_dir(dirs) / f"render-{src.stem}.lock", f"{src.stem}: a render is running"):
                if not update_prose(src, NOTEBOOKS_DIR / src.name):
                    refused.append(src.stem)
        for name in refused:
            print(f"{name}: code cells differ from the render; run `make reproduce`", file=sys.stderr)
        return 1 if refused else 0
    if args.command == "check-renders":
        import pandas as pd

        status = render_status(args.profile)
        with pd.option_context("display.max_colwidth", 90, "display.width", 200):
            print(status.to_string(index=False))
        stale = status.loc[~status["current"], "notebook"].tolist()
        print(f"{len(stale)} of {len(status)} rendered notebooks stale" + (f": {', '.join(stale)}" if stale else ""))
        return 1 if stale else 0
    if args.command == "durations":
        return 0 if update_durations() else 1
    for path in prepare_tests(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
