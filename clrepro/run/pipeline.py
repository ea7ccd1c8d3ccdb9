"""`make reproduce` and the notebook half of `make test`.

reproduce: execute every notebook with papermill (the summary last) at a profile. Each run
writes into a staging folder; only when it succeeds are its rendered notebook, results and
figures moved into place, so a failure never touches earlier outputs. A notebook whose inputs
(its cells, the package code, its parameters) hash to the stamp of its last successful run is
skipped, so an interrupted `make reproduce` resumes where it stopped. When only markdown cells
changed, the new prose is copied into the rendered notebook without executing anything:
markdown is never executed, so the outputs stay those of the code that produced them.

prepare-tests: copies of the notebooks with the smoke profile injected, for nbval.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

from clrepro.paths import REPO_ROOT, code_hash, output_dirs
from clrepro.run.profiles import get_profile, resolve_device

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
SUMMARY = "summary"
README_START, README_END = "<!-- summary:start -->", "<!-- summary:end -->"


def notebooks(only: list[str] | None = None) -> list[Path]:
    """Every notebook, the summary last (it reads what the others wrote)."""
    paths = sorted(p for p in NOTEBOOKS_DIR.glob("*.ipynb") if p.stem != SUMMARY)
    if (NOTEBOOKS_DIR / f"{SUMMARY}.ipynb").exists():
        paths.append(NOTEBOOKS_DIR / f"{SUMMARY}.ipynb")
    if only:
        unknown = set(only) - {p.stem for p in paths}
        if unknown:
            raise SystemExit(f"unknown notebook(s): {sorted(unknown)}")
        paths = [p for p in paths if p.stem in only]
    return paths


def _is_injected(cell) -> bool:
    return "injected-parameters" in cell.get("metadata", {}).get("tags", [])


def input_hash(notebook: Path, parameters: dict, extra: bytes = b"",
               code_only: bool = False) -> str:
    """Hash of what determines a render: cell sources (not outputs), code, parameters.

    code_only: leave markdown cells out (what determines the outputs)."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    digest = hashlib.sha256()
    for cell in nb.cells:
        if _is_injected(cell) or (code_only and cell.cell_type == "markdown"):
            continue
        digest.update(cell.cell_type.encode() + b"\0" + cell.source.encode() + b"\0")
    digest.update(code_hash().encode())
    digest.update(json.dumps(parameters, sort_keys=True).encode())
    digest.update(extra)
    return digest.hexdigest()


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
    tmp = rendered.with_name(f".{rendered.name}.tmp")
    nbformat.write(old, tmp)
    os.replace(tmp, rendered)
    return True


def _results_fingerprint(results_dir: Path) -> bytes:
    digest = hashlib.sha256()
    for path in sorted(results_dir.glob("*.csv")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.digest()


def _load_stamps(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _update_stamp(path: Path, name: str, stamp: dict) -> None:
    """Re-read the stamps just before writing, so that concurrent runs of other notebooks
    keep theirs."""
    stamps = {**_load_stamps(path), name: stamp}
    _write_atomic(path, json.dumps(stamps, indent=2, sort_keys=True) + "\n")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _move_into_place(staging: Path, destination: Path) -> None:
    for sub in ("results", "figures"):
        for src in sorted((staging / sub).glob("*")):
            if src.is_file():
                target = destination / sub / src.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, target.with_name(f".{src.name}.tmp"))
                os.replace(target.with_name(f".{src.name}.tmp"), target)


def update_readme(table_markdown: str, readme: Path = REPO_ROOT / "README.md") -> None:
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    _write_atomic(readme, f"{head}{README_START}\n{table_markdown.strip()}\n{README_END}{tail}")


def reproduce(profile: str, device: str, force: bool = False, only: list[str] | None = None,
              n_seeds: int | None = None) -> int:
    import papermill

    get_profile(profile)
    device = resolve_device(device)
    dirs = output_dirs(profile)
    rendered_dir = NOTEBOOKS_DIR if profile == "paper" else dirs.root / "notebooks"
    rendered_dir.mkdir(parents=True, exist_ok=True)
    stamps_path = dirs.results / ".stamps.json"
    stamps = _load_stamps(stamps_path)
    failures = []
    for notebook in notebooks(only):
        parameters = {"profile": profile, "device": device}
        if n_seeds is not None:
            parameters["n_seeds"] = n_seeds
        extra = _results_fingerprint(dirs.results) if notebook.stem == SUMMARY else b""
        digest = input_hash(notebook, parameters, extra)
        code_digest = input_hash(notebook, parameters, extra, code_only=True)
        rendered = rendered_dir / notebook.name
        stamp = stamps.get(notebook.stem, {})
        if not force and rendered.exists() and stamp.get("inputs") == digest:
            print(f"[skip] {notebook.stem}: unchanged since its last successful run")
            continue
        if (not force and rendered.exists() and stamp.get("code_inputs") == code_digest
                and update_prose(notebook, rendered)):
            _update_stamp(stamps_path, notebook.stem, {**stamp, "inputs": digest})
            print(f"[text] {notebook.stem}: only markdown changed; prose updated, nothing re-run")
            continue
        staging = REPO_ROOT / "build" / "staging" / profile / notebook.stem
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "results").mkdir(parents=True)
        (staging / "figures").mkdir(parents=True)
        print(f"[run ] {notebook.stem} (profile={profile}, device={device})", flush=True)
        started = time.time()
        try:
            papermill.execute_notebook(
                str(notebook), str(staging / notebook.name),
                parameters={**parameters, "output_root": str(staging)},
                cwd=str(NOTEBOOKS_DIR), kernel_name="python3", progress_bar=False,
            )
        except Exception as error:  # papermill raises PapermillExecutionError with the cell
            print(f"[FAIL] {notebook.stem}: {error}", file=sys.stderr)
            print(f"       partial render kept in {staging}; committed outputs untouched", file=sys.stderr)
            failures.append(notebook.stem)
            continue
        _strip_output_root(staging / notebook.name)
        _move_into_place(staging, dirs.root)
        shutil.copyfile(staging / notebook.name, rendered.with_name(f".{rendered.name}.tmp"))
        os.replace(rendered.with_name(f".{rendered.name}.tmp"), rendered)
        if notebook.stem == SUMMARY and profile == "paper":
            table = dirs.results / "summary_table.md"
            if table.exists():
                update_readme(table.read_text())
        minutes = (time.time() - started) / 60
        _update_stamp(stamps_path, notebook.stem, {
            "inputs": digest, "code_inputs": code_digest, "minutes": round(minutes, 2),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        shutil.rmtree(staging, ignore_errors=True)
        print(f"[done] {notebook.stem} in {minutes:.1f} min", flush=True)
    if failures:
        print(f"failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


def _strip_output_root(path: Path) -> None:
    """The staging folder is an implementation detail: drop it from the injected cell."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            lines = [ln for ln in cell.source.splitlines() if not ln.startswith("output_root")]
            cell.source = "\n".join(lines)
    nbformat.write(nb, path)


def prepare_tests(out: Path, profile: str = "smoke") -> list[Path]:
    """Notebook copies with the given profile injected (outputs kept for nbval's checks)."""
    import papermill

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    prepared = []
    for notebook in notebooks():
        target = out / notebook.name
        papermill.execute_notebook(
            str(notebook), str(target), parameters={"profile": profile, "device": "cpu"},
            prepare_only=True, kernel_name="python3", progress_bar=False,
        )
        prepared.append(target)
    return prepared


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clrepro.run.pipeline")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="execute the notebooks with papermill")
    rep.add_argument("--profile", default="paper")
    rep.add_argument("--device", default="auto")
    rep.add_argument("--force", action="store_true", help="re-run even unchanged notebooks")
    rep.add_argument("--only", nargs="*", help="notebook names (without .ipynb)")
    rep.add_argument("--n-seeds", type=int, default=None)
    prose = sub.add_parser("prose", help="copy the markdown of edited notebooks into the rendered "
                           "ones in notebooks/ (same code cells), executing nothing")
    prose.add_argument("sources", nargs="+", type=Path, help="edited .ipynb files")
    tests = sub.add_parser("prepare-tests", help="smoke-profile notebook copies for nbval")
    tests.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "nbtest")
    args = parser.parse_args(argv)
    if args.command == "reproduce":
        return reproduce(args.profile, args.device, args.force, args.only, args.n_seeds)
    if args.command == "prose":
        refused = [src.stem for src in args.sources
                   if not update_prose(src, NOTEBOOKS_DIR / src.name)]
        for name in refused:
            print(f"{name}: code cells differ from the render; run `make reproduce`", file=sys.stderr)
        return 1 if refused else 0
    for path in prepare_tests(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
