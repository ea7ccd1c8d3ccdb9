import gzip
import shutil
from pathlib import Path

import pytest
import torch

from clrepro.data import datasets as data

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_missing_dataset_gives_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "REPO_ROOT", tmp_path)  # no data/ folder to fall back on
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.load_dataset("mnist", data_dir=tmp_path, download=False)
    message = str(info.value)
    assert "MNIST not found" in message and "make data" in message and "CLREPRO_DATA" in message


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'cifar10'"):
        data.load_dataset("cifar10")


def _copy_labels_only(tmp_path: Path) -> Path:
    """A small fake dataset folder: label files are tiny, enough for checksum tests."""
    folder = tmp_path / "MNIST"
    (folder / "raw").mkdir(parents=True)
    payload = b"\x00\x00\x08\x01" + b"\x00" * 8
    (folder / "raw" / "train-labels-idx1-ubyte").write_bytes(payload)
    digest = data._sha256(folder / "raw" / "train-labels-idx1-ubyte")
    (folder / "SHA256SUMS").write_text(f"{digest}  train-labels-idx1-ubyte\n")
    return folder


def test_corrupt_file_fails_checksum_with_its_name(tmp_path):
    folder = _copy_labels_only(tmp_path)
    data.verify_checksums(folder)  # intact: passes
    path = folder / "raw" / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:-1] + b"\x01")
    with pytest.raises(data.ChecksumError, match="train-labels-idx1-ubyte"):
        data.verify_checksums(folder)


def test_prepare_decompresses_and_verifies(tmp_path):
    source = tmp_path / "src" / "MNIST"
    (source / "raw").mkdir(parents=True)
    payload = b"idx-bytes"
    with gzip.open(source / "raw" / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(payload)
    import hashlib

    (source / "SHA256SUMS").write_text(f"{hashlib.sha256(payload).hexdigest()}  train-labels-idx1-ubyte\n")
    assert data.prepare(tmp_path / "src", tmp_path / "out") == ["MNIST"]
    assert (tmp_path / "out" / "MNIST" / "raw" / "train-labels-idx1-ubyte").read_bytes() == payload
    (source / "SHA256SUMS").write_text(f"{'0' * 64}  train-labels-idx1-ubyte\n")
    shutil.rmtree(tmp_path / "out")
    with pytest.raises(data.ChecksumError, match="train-labels-idx1-ubyte"):
        data.prepare(tmp_path / "src", tmp_path / "out")


@pytest.mark.skipif(data.find_dataset_root("mnist") is None, reason="run `make data` first")
def test_real_mnist_shapes_and_counts():
    mnist = data.load_dataset("mnist")
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.train_images.dtype == torch.uint8
    assert mnist.test_images.shape == (10000, 28, 28)
    assert torch.bincount(mnist.test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
