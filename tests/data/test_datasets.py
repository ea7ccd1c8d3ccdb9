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


PAYLOAD = b"\x00\x00\x08\x01" + b"\x00" * 8


@pytest.fixture
def fake_genuine(monkeypatch):
    """Pretend the genuine MNIST label file is PAYLOAD (the real one is 60 kB of real labels)."""
    import hashlib

    digest = hashlib.sha256(PAYLOAD).hexdigest()
    monkeypatch.setitem(data.GENUINE_SHA256, "MNIST", {"train-labels-idx1-ubyte": digest})
    return digest


def _labels_only(tmp_path: Path, sums: bool = True) -> Path:
    """A small fake dataset folder: label files are tiny, enough for checksum tests."""
    folder = tmp_path / "MNIST"
    (folder / "raw").mkdir(parents=True)
    (folder / "raw" / "train-labels-idx1-ubyte").write_bytes(PAYLOAD)
    if sums:
        digest = data._sha256(folder / "raw" / "train-labels-idx1-ubyte")
        (folder / "SHA256SUMS").write_text(f"{digest}  train-labels-idx1-ubyte\n")
    return folder


def test_corrupt_file_fails_checksum_with_its_name(tmp_path, fake_genuine):
    folder = _labels_only(tmp_path)
    assert data.verify_checksums(folder)  # intact: passes
    path = folder / "raw" / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:-1] + b"\x01")
    with pytest.raises(data.ChecksumError, match="train-labels-idx1-ubyte"):
        data.verify_checksums(folder)


def test_genuine_digests_are_checked_without_a_sha256sums_file(tmp_path, fake_genuine):
    folder = _labels_only(tmp_path, sums=False)
    assert data.verify_checksums(folder)
    (folder / "raw" / "train-labels-idx1-ubyte").write_bytes(PAYLOAD[:-1] + b"\x07")
    with pytest.raises(data.ChecksumError, match="checksum mismatch"):
        data.verify_checksums(folder)


def test_the_embedded_digests_are_the_shared_copies(tmp_path):
    for folder in ("MNIST", "FashionMNIST"):
        sums = SHARED / folder / "SHA256SUMS"
        if not sums.exists():
            pytest.skip("no ../shared/data")
        listed = dict(reversed(line.split()) for line in sums.read_text().splitlines() if line.strip())
        assert listed == data.GENUINE_SHA256[folder]


def _source(tmp_path: Path, payload: bytes = PAYLOAD, sums: bool = True) -> Path:
    import hashlib

    source = tmp_path / "src" / "MNIST"
    (source / "raw").mkdir(parents=True)
    with gzip.open(source / "raw" / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(payload)
    if sums:
        (source / "SHA256SUMS").write_text(f"{hashlib.sha256(payload).hexdigest()}  train-labels-idx1-ubyte\n")
    return source


def test_prepare_decompresses_and_verifies(tmp_path, fake_genuine):
    _source(tmp_path)
    assert data.prepare(tmp_path / "src", tmp_path / "out") == {"MNIST": True}
    assert (tmp_path / "out" / "MNIST" / "raw" / "train-labels-idx1-ubyte").read_bytes() == PAYLOAD
    shutil.rmtree(tmp_path / "src")
    _source(tmp_path, payload=PAYLOAD + b"shifted", sums=False)  # not the genuine file
    shutil.rmtree(tmp_path / "out")
    with pytest.raises(data.ChecksumError, match="train-labels-idx1-ubyte"):
        data.prepare(tmp_path / "src", tmp_path / "out")
    assert not list((tmp_path / "out" / "MNIST" / "raw").iterdir())  # nothing half-made left behind


def test_prepare_without_sha256sums_still_verifies(tmp_path, fake_genuine, capsys):
    _source(tmp_path, sums=False)
    assert data.main(["prepare", str(tmp_path / "src"), "--target", str(tmp_path / "out")]) == 0
    assert "(checksums verified)" in capsys.readouterr().out


@pytest.mark.parametrize("cut", ["truncated", "corrupt"])
def test_a_broken_archive_is_named_and_leaves_no_partial_file(tmp_path, fake_genuine, cut, capsys):
    source = _source(tmp_path, payload=PAYLOAD * 4000, sums=False)
    archive = source / "raw" / "train-labels-idx1-ubyte.gz"
    raw = archive.read_bytes()
    archive.write_bytes(raw[: len(raw) // 2] if cut == "truncated" else raw[:20] + b"\xff" * 40 + raw[60:])
    assert data.main(["prepare", str(tmp_path / "src"), "--target", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "train-labels-idx1-ubyte.gz" in err and err.count("\n") == 1
    assert not list((tmp_path / "out" / "MNIST" / "raw").iterdir())


def test_prepare_accepts_a_complete_read_only_target(tmp_path, fake_genuine, monkeypatch):
    _source(tmp_path)
    data.prepare(tmp_path / "src", tmp_path / "out")
    target = tmp_path / "out" / "MNIST"
    for path in (target / "raw", target, tmp_path / "out"):
        path.chmod(0o555)

    def no_write(*args):  # root ignores the modes above: make any write attempt fail loudly
        raise PermissionError("read-only")

    monkeypatch.setattr(data, "_decompress", no_write)
    monkeypatch.setattr(data, "_copy_via_temp", no_write)
    try:
        assert data.prepare(tmp_path / "src", tmp_path / "out") == {"MNIST": True}
    finally:
        for path in (tmp_path / "out", target, target / "raw"):
            path.chmod(0o755)


def test_a_clrepro_data_that_does_not_exist_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CLREPRO_DATA", str(tmp_path / "typo"))
    with pytest.raises(data.DatasetNotFoundError, match="CLREPRO_DATA=.*typo: no such folder"):
        data.load_dataset("mnist", download=False)


@pytest.mark.skipif(data.find_dataset_root("mnist") is None, reason="run `make data` first")
def test_real_mnist_shapes_and_counts():
    mnist = data.load_dataset("mnist")
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.train_images.dtype == torch.uint8
    assert mnist.test_images.shape == (10000, 28, 28)
    assert torch.bincount(mnist.test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
