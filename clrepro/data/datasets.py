"""MNIST and Fashion-MNIST as in-memory uint8 tensors.

Lookup order for the files (torchvision's layout, ``<root>/<Name>/raw/*-ubyte``):
an explicit ``data_dir`` or the ``CLREPRO_DATA`` environment variable, then the repository's
``data/`` folder, then a checksummed download by torchvision (needs internet). Where the
dataset folder carries a ``SHA256SUMS`` file (our prepared local copies do), every raw file is
verified against it before use.

``python -m clrepro.data.datasets prepare SOURCE`` copies gzip'd IDX files (e.g. ../shared/data) into
``data/``, decompressing them and verifying the checksums.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import shutil
import sys
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


def verify_checksums(folder: Path) -> None:
    """Check every file listed in folder/SHA256SUMS (files live in folder/raw/)."""
    sums = folder / "SHA256SUMS"
    if not sums.exists():
        return
    for line in sums.read_text().splitlines():
        if not line.strip():
            continue
        expected, name = line.split()
        path = folder / "raw" / name.lstrip("*")
        if not path.exists():
            raise ChecksumError(f"{path} is listed in {sums} but missing")
        if _sha256(path) != expected:
            raise ChecksumError(
                f"checksum mismatch for {path}: the file is corrupt or not the genuine "
                f"dataset; delete it and run `make data` again"
            )


def candidate_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    roots = []
    if data_dir is not None:
        roots.append(Path(data_dir))
    elif env := os.environ.get("CLREPRO_DATA"):
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


def prepare(source: Path, target: Path = REPO_ROOT / "data") -> list[str]:
    """Decompress <source>/<Name>/raw/*.gz into target/<Name>/raw/ and verify SHA256SUMS."""
    prepared = []
    for folder in DATASETS.values():
        src = source / folder
        if not (src / "raw").is_dir():
            continue
        dst = target / folder
        (dst / "raw").mkdir(parents=True, exist_ok=True)
        if (src / "SHA256SUMS").exists():
            shutil.copyfile(src / "SHA256SUMS", dst / "SHA256SUMS")
        for gz in sorted((src / "raw").glob("*.gz")):
            out = dst / "raw" / gz.name[: -len(".gz")]
            if out.exists():
                continue
            tmp = out.with_suffix(".tmp")
            with gzip.open(gz, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout)
            os.replace(tmp, out)
        verify_checksums(dst)
        prepared.append(folder)
    if not prepared:
        raise DatasetNotFoundError(f"no dataset folders (MNIST/raw, FashionMNIST/raw) in {source}")
    return prepared


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clrepro.data.datasets")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="decompress and verify a local copy of the datasets")
    p.add_argument("source", type=Path)
    p.add_argument("--target", type=Path, default=REPO_ROOT / "data")
    args = parser.parse_args(argv)
    try:
        done = prepare(args.source, args.target)
    except (DatasetNotFoundError, ChecksumError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"prepared {', '.join(done)} in {args.target} (checksums verified)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
