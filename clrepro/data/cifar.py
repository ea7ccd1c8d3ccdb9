"""CIFAR-10 for Seq-CIFAR-10 (the DER paper's GPU benchmark), read from its on-disk format.

The python version of CIFAR-10 (``cifar-10-python.tar.gz``, extracted to
``<root>/cifar-10-batches-py/``) holds five training batches ``data_batch_1`` … ``data_batch_5``
and ``test_batch``: pickled dicts with ``b"data"`` (uint8 [10000, 3072], each row the red, green
and blue 32×32 planes) and ``b"labels"`` (10,000 ints). We read them directly into uint8
tensors [N, 3, 32, 32], keeping the dataset in memory like the MNIST family.

Lookup order, as for MNIST (`clrepro.data.datasets`): an explicit ``data_dir`` or ``CLREPRO_DATA``, then
the repository's ``data/``, then a download by torchvision, which checks the archive's MD5.
Genuine files are verified against torchvision's per-file MD5 list before use; ``verify=False``
skips that for test fixtures written in the same format.

`clrepro.data.streams` builds the ``seq_cifar10`` stream from it (5 tasks of 2 classes).
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import torch

from clrepro.data.datasets import DatasetNotFoundError, ImageDataset, candidate_roots

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
FIXTURE_MARKER = "FIXTURE"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One pickled batch → uint8 images [N, 3, 32, 32] and int64 labels [N]."""
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    data = torch.as_tensor(batch[b"data"], dtype=torch.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: expected rows of 3072 bytes, got shape {tuple(data.shape)}")
    labels = torch.as_tensor(batch[b"labels"], dtype=torch.int64)
    if len(labels) != len(data):
        raise ValueError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data.view(-1, 3, 32, 32), labels


def _md5(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def verify(folder: Path) -> None:
    """Check every batch against torchvision's published MD5s (genuine CIFAR-10 only)."""
    from clrepro.data._torchvision import import_torchvision

    tv = import_torchvision()
    expected = dict(tv.datasets.CIFAR10.train_list + tv.datasets.CIFAR10.test_list)
    for name, md5 in expected.items():
        if _md5(folder / name) != md5:
            raise ValueError(f"{folder / name}: MD5 mismatch (corrupt or not genuine CIFAR-10)")


def read_cifar10(root: str | os.PathLike, verify_files: bool = True) -> ImageDataset:
    """The dataset under ``root/cifar-10-batches-py``. A folder written by `write_fixture` is
    read without the MD5 check and named ``cifar10-fixture`` so it is never mistaken for the
    real data."""
    folder = Path(root) / FOLDER
    missing = [n for n in (*TRAIN_BATCHES, TEST_BATCH) if not (folder / n).exists()]
    if missing:
        raise DatasetNotFoundError(f"{folder}: missing {', '.join(missing)}")
    fixture = (folder / FIXTURE_MARKER).exists()
    if verify_files and not fixture:
        verify(folder)
    train = [read_batch(folder / n) for n in TRAIN_BATCHES]
    test_images, test_labels = read_batch(folder / TEST_BATCH)
    return ImageDataset("cifar10-fixture" if fixture else "cifar10", torch.cat([x for x, _ in train]),
                        torch.cat([y for _, y in train]), test_images, test_labels)


def write_fixture(root: str | os.PathLike, n_per_batch: int = 4, seed: int = 0) -> dict[str, tuple]:
    """A tiny synthetic CIFAR-10 in the on-disk format (random pixels and labels), for the unit
    tests and the smoke profile, which check the code path without the real data. It carries a
    marker file, so the loader names it ``cifar10-fixture``. Returns {batch name: (rows, labels)}."""
    import numpy as np

    rng = np.random.default_rng(seed)
    folder = Path(root) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    (folder / FIXTURE_MARKER).write_text("synthetic test fixture in CIFAR-10's format, not CIFAR-10\n")
    written = {}
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n_per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels,
                         b"filenames": [b"x.png"] * n_per_batch}, f)
        written[name] = (data, labels)
    return written


def load_cifar10(data_dir: str | os.PathLike | None = None, download: bool | None = None) -> ImageDataset:
    """Find CIFAR-10 (explicit dir, CLREPRO_DATA, data/), else download it with torchvision.

    download: None means "only if CLREPRO_DOWNLOAD is not 0" (as for MNIST).
    """
    for root in candidate_roots(data_dir):
        if (root / FOLDER / TEST_BATCH).exists():
            return read_cifar10(root)
    looked = ", ".join(str(r / FOLDER) for r in candidate_roots(data_dir))
    if download is None:
        download = os.environ.get("CLREPRO_DOWNLOAD", "1") != "0"
    if not download:
        raise DatasetNotFoundError(f"CIFAR-10 not found in {looked} (downloads are off)")
    from clrepro.data._torchvision import import_torchvision

    root = candidate_roots(data_dir)[0]
    try:
        import_torchvision().datasets.CIFAR10(str(root), train=True, download=True)  # MD5-checked archive
    except Exception as error:  # offline machines end here
        raise DatasetNotFoundError(f"CIFAR-10 not found in {looked} and the download failed: {error}") from error
    return read_cifar10(root)
