import pickle

import numpy as np
import pytest
import torch

from clrepro.data import cifar
from clrepro.data.datasets import DatasetNotFoundError


def write_fixture(root, n_per_batch=4, seed=0, marked=False):
    """The package's fixture; unmarked (as if it claimed to be the real CIFAR-10) by default."""
    written = cifar.write_fixture(root, n_per_batch, seed)
    if not marked:
        (root / cifar.FOLDER / cifar.FIXTURE_MARKER).unlink()
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


def test_a_marked_fixture_is_read_without_md5_and_named_as_a_fixture(tmp_path):
    write_fixture(tmp_path, marked=True)
    ds = cifar.load_cifar10(tmp_path, download=False)
    assert ds.name == "cifar10-fixture" and len(ds.train_images) == 20


def test_missing_data_without_download_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="downloads are off"):
        cifar.load_cifar10(tmp_path, download=False)
