"""MNIST and Fashion-MNIST as in-memory uint8 tensors.

Lookup order for the files (torchvision's layout, ``<root>/<Name>/raw/*-ubyte``):
an explicit ``data_dir`` or the ``CLREPRO_DATA`` environment variable (which must name an
existing folder: a typo is an error, not a silent fall-back to another copy), then the
repository's ``data/`` folder, then a checksummed download by torchvision (needs internet).
Every raw file is verified before use against the genuine files' SHA-256 digests, which the
package knows (GENUINE_SHA256), and against the folder's ``SHA256SUMS`` where there is one.

``python -m clrepro.data.datasets prepare SOURCE`` copies gzip'd IDX files (e.g. ../shared/data) into
``data/``, decompressing them and verifying the checksums. A target that is already complete and
genuine is left alone (so a read-only ``data/`` is fine); a truncated or corrupt archive is named
and leaves no partial file behind.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import shutil
import sys
import tempfile
import zlib
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

import torch

from clrepro.paths import REPO_ROOT

DATASETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


# SHA-256 of the genuine decompressed IDX files (the same digests as ../shared/data/*/SHA256SUMS),
# so a copy is verified even where no SHA256SUMS came with it.
GENUINE_SHA256 = {
    "MNIST": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "FashionMNIST": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}


class DatasetNotFoundError(FileNotFoundError):
    pass


class ChecksumError(RuntimeError):
    pass


@dataclass(frozen=True)
class ImageDataset:
    """One split-free dataset: uint8 images [N, 28, 28] and int64 labels [N]."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor

    @property
    def n_classes(self) -> int:
        return 10

    @cached_property
    def digest(self) -> str:
        """SHA-256 of the tensors as loaded: part of every run's cache key, so runs made on other
        data (a modified copy, other labels) are never served for this data."""
        return _tensor_digest(self.train_images, self.train_labels, self.test_images, self.test_labels)


def _tensor_digest(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def expected_digests(folder: Path) -> dict[str, str]:
    """name → SHA-256 for the files of a dataset folder: the genuine digests when the folder is
    one of ours (by name), and the folder's SHA256SUMS, which must not contradict them."""
    expected = dict(GENUINE_SHA256.get(folder.name, {}))
    sums = folder / "SHA256SUMS"
    if sums.exists():
        for line in sums.read_text().splitlines():
            if not line.strip():
                continue
            digest, name = line.split()
            name = name.lstrip("*")
            if expected.get(name, digest) != digest:
                raise ChecksumError(f"{sums} lists {name} with a digest that is not the genuine file's")
            expected[name] = digest
    return expected


def verify_checksums(folder: Path) -> bool:
    """Check every raw file of folder (files live in folder/raw/) against expected_digests;
    True when something was verified, False when there is nothing to verify against."""
    expected = expected_digests(folder)
    for name, digest in expected.items():
        path = folder / "raw" / name
        if not path.exists():
            raise ChecksumError(f"{path} is missing (expected with SHA-256 {digest[:12]}…)")
        if _sha256(path) != digest:
            raise ChecksumError(
                f"checksum mismatch for {path}: the file is corrupt or not the genuine "
                f"dataset; delete it and run `make data` again"
            )
    return bool(expected)


def candidate_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    roots = []
    if data_dir is not None:
        roots.append(Path(data_dir))
    elif env := os.environ.get("CLREPRO_DATA"):
        if not Path(env).is_dir():
            raise DatasetNotFoundError(f"CLREPRO_DATA={env}: no such folder (unset it to use {REPO_ROOT / 'data'})")
        roots.append(Path(env))
    roots.append(REPO_ROOT / "data")
    return roots


def _has_raw_files(folder: Path) -> bool:
    return all((folder / "raw" / name).exists() for name in RAW_FILES)


def find_dataset_root(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    folder = DATASETS[name]
    for root in candidate_roots(data_dir):
        if _has_raw_files(root / folder):
            return root
    return None


def _torchvision_class(name: str):
    from clrepro.data._torchvision import import_torchvision

    datasets = import_torchvision().datasets
    return {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}[name]


@cache
def _load_cached(name: str, root: str) -> ImageDataset:
    verify_checksums(Path(root) / DATASETS[name])
    cls = _torchvision_class(name)
    train = cls(root, train=True, download=False)
    test = cls(root, train=False, download=False)
    return ImageDataset(name, train.data, train.targets, test.data, test.targets)


def load_dataset(
    name: str, data_dir: str | os.PathLike | None = None, download: bool | None = None
) -> ImageDataset:
    """Load a dataset once per process as uint8 tensors.

    download: None means "only if CLREPRO_DOWNLOAD is not 0"; a download goes to data/.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    root = find_dataset_root(name, data_dir)
    if root is None:
        if download is None:
            download = os.environ.get("CLREPRO_DOWNLOAD", "1") != "0"
        target = candidate_roots(data_dir)[0]
        if download:
            try:
                cls = _torchvision_class(name)
                cls(str(target), train=True, download=True)
                cls(str(target), train=False, download=True)
                root = target
            except Exception as error:  # offline machines end here
                raise DatasetNotFoundError(_missing_message(name, data_dir, error)) from error
        else:
            raise DatasetNotFoundError(_missing_message(name, data_dir))
    return _load_cached(name, str(root))


def _missing_message(name: str, data_dir, error: Exception | None = None) -> str:
    folder = DATASETS[name]
    looked = ", ".join(str(r / folder / "raw") for r in candidate_roots(data_dir))
    why = f" (download failed: {error})" if error else ""
    return (
        f"{folder} not found{why}. Looked in: {looked}. Provide it with `make data` "
        f"(copies ../shared/data), `python -m clrepro.data.datasets prepare <dir with {folder}/raw/*.gz>`, "
        f"by setting CLREPRO_DATA to a folder containing {folder}/raw/, or from a machine "
        f"with internet access (torchvision downloads and checksums it)."
    )


def prepare(source: Path, target: Path = REPO_ROOT / "data") -> dict[str, bool]:
    """Decompress <source>/<Name>/raw/*.gz into target/<Name>/raw/ and verify every file.

    Returns {folder: verified}. A target folder that is already complete and verifies is left
    untouched (nothing is written, so a read-only data/ is fine). Each file is decompressed into
    a unique temporary file and verified before it is renamed into place: a truncated or corrupt
    archive raises ChecksumError naming it and leaves nothing behind."""
    prepared = {}
    for folder in DATASETS.values():
        src = source / folder
        if not (src / "raw").is_dir():
            continue
        dst = target / folder
        expected = expected_digests(src)
        names = {gz.name[: -len(".gz")] for gz in (src / "raw").glob("*.gz")} | set(expected)
        if all((dst / "raw" / name).exists() for name in names) and _verifies(dst, expected):
            prepared[folder] = bool(expected)
            continue
        (dst / "raw").mkdir(parents=True, exist_ok=True)
        for gz in sorted((src / "raw").glob("*.gz")):
            name = gz.name[: -len(".gz")]
            out = dst / "raw" / name
            if out.exists() and (name not in expected or _sha256(out) == expected[name]):
                continue
            _decompress(gz, out, expected.get(name))
        if (src / "SHA256SUMS").exists():
            _copy_via_temp(src / "SHA256SUMS", dst / "SHA256SUMS")
        prepared[folder] = verify_checksums(dst)
    if not prepared:
        raise DatasetNotFoundError(f"no dataset folders (MNIST/raw, FashionMNIST/raw) in {source}")
    return prepared


def _verifies(folder: Path, expected: dict[str, str]) -> bool:
    try:
        if any(_sha256(folder / "raw" / name) != digest for name, digest in expected.items()):
            return False
        verify_checksums(folder)  # and its own SHA256SUMS, if it has one
        return True
    except (ChecksumError, OSError):
        return False


def _decompress(gz: Path, out: Path, digest: str | None) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with gzip.open(gz, "rb") as fin, os.fdopen(fd, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        if digest is not None and _sha256(Path(tmp)) != digest:
            raise ChecksumError(f"{gz} decompresses to a file that is not the genuine {out.name} (checksum mismatch)")
        os.replace(tmp, out)
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise ChecksumError(f"{gz} is truncated or corrupt ({error}); fetch it again") from error
    finally:
        Path(tmp).unlink(missing_ok=True)


def _copy_via_temp(src: Path, dst: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(src.read_bytes())
        os.replace(tmp, dst)
    finally:
        Path(tmp).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clrepro.data.datasets")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="decompress and verify a local copy of the datasets")
    p.add_argument("source", type=Path)
    p.add_argument("--target", type=Path, default=REPO_ROOT / "data")
    args = parser.parse_args(argv)
    try:
        done = prepare(args.source, args.target)
    except (DatasetNotFoundError, ChecksumError, PermissionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for folder, verified in done.items():
        state = "checksums verified" if verified else "NOT verified: no known checksums for this folder"
        print(f"prepared {folder} in {args.target / folder} ({state})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
