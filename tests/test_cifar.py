import pickle

import numpy as np
import pytest
import torch

from clrepro import cifar
from clrepro.data import DatasetNotFoundError


def write_fixture(root, n_per_batch=4, seed=0):
    """A tiny CIFAR-10 in its on-disk format: pickled dicts of uint8 rows and labels."""
    rng = np.random.default_rng(seed)
    folder = root / cifar.FOLDER
    folder.mkdir(parents=True)
    written = {}
    for name in (*cifar.TRAIN_BATCHES, cifar.TEST_BATCH):
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n_per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels,
                         b"filenames": [b"x.png"] * n_per_batch}, f)
        written[name] = (data, labels)
    return written


def test_loader_reads_the_on_disk_format_channel_planes_first(tmp_path):
    written = write_fixture(tmp_path)
    ds = cifar.read_cifar10(tmp_path, verify_files=False)
    assert ds.train_images.shape == (20, 3, 32, 32) and ds.train_images.dtype == torch.uint8
    assert ds.test_images.shape == (4, 3, 32, 32)
    data, labels = written["data_batch_2"]
    image = ds.train_images[4]  # first image of the second batch
    assert torch.equal(image[0].flatten(), torch.as_tensor(data[0, :1024]))  # red plane
    assert torch.equal(image[2].flatten(), torch.as_tensor(data[0, 2048:]))  # blue plane
    assert ds.train_labels[4:8].tolist() == labels
    assert ds.test_labels.tolist() == written["test_batch"][1]


def test_loader_rejects_missing_or_malformed_batches(tmp_path):
    write_fixture(tmp_path)
    (tmp_path / cifar.FOLDER / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="data_batch_3"):
        cifar.read_cifar10(tmp_path, verify_files=False)
    with open(tmp_path / cifar.FOLDER / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), dtype=np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match="3072"):
        cifar.read_cifar10(tmp_path, verify_files=False)


def test_genuine_checksums_are_enforced(tmp_path):
    write_fixture(tmp_path)
    with pytest.raises(ValueError, match="MD5"):
        cifar.read_cifar10(tmp_path)  # a fixture is not genuine CIFAR-10


def test_load_finds_the_explicit_folder_without_downloading(tmp_path, monkeypatch):
    write_fixture(tmp_path)
    monkeypatch.setattr(cifar, "verify", lambda folder: None)
    assert len(cifar.load_cifar10(tmp_path, download=False).train_images) == 20
    with pytest.raises(DatasetNotFoundError):
        cifar.load_cifar10(tmp_path / "elsewhere", download=False)
