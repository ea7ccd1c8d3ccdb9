"""Where things live: the repository root and the output folders of a profile."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent


@dataclass(frozen=True)
class OutputDirs:
    """Where a notebook run writes. The paper profile writes to the committed folders; every
    other profile writes under build/<profile>/ so a smoke run never overwrites paper results."""

    root: Path

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    def make(self) -> OutputDirs:
        self.results.mkdir(parents=True, exist_ok=True)
        self.figures.mkdir(parents=True, exist_ok=True)
        return self


def output_dirs(profile: str, root: str | os.PathLike | None = None) -> OutputDirs:
    if root is not None:
        return OutputDirs(Path(root)).make()
    if env := os.environ.get("CLREPRO_OUTPUT"):
        return OutputDirs(Path(env)).make()
    base = REPO_ROOT if profile == "paper" else REPO_ROOT / "build" / profile
    return OutputDirs(base).make()


def files_hash(paths) -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(str(path.relative_to(PACKAGE_DIR)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@cache
def code_hash() -> str:
    """Hash of the whole package's source (and paper table): part of every reproduce stamp."""
    return files_hash(
        p for p in PACKAGE_DIR.rglob("*") if p.suffix in {".py", ".csv"} and "__pycache__" not in p.parts
    )


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Write through a unique temporary file in the same folder, then rename: readers see the old
    file or the new one, never a mixture, a crash leaves the old file, and two writers never
    share a temporary file. The one way every file of results, stamps and cache is written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
