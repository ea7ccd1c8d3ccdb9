import pytest

from clrepro.analysis.ogd_storage import basis_growth
from clrepro.config import BenchmarkConfig, ModelConfig, TrainConfig
from clrepro.experiment import Experiment


def test_basis_growth_counts_rows_and_bytes(monkeypatch, tiny_stream):
    import clrepro.train as train

    monkeypatch.setattr(train, "build_stream", lambda *a, **k: tiny_stream)
    exp = Experiment("t/ogd", BenchmarkConfig("split_mnist", "task", n_tasks=2), "ogd", {"n_examples": 7},
                     ModelConfig(hidden=(5,)), TrainConfig(batch_size=10, epochs=1))
    table = basis_growth(exp)
    n_params = 784 * 5 + 5 + 5 * 4 + 4
    assert table["basis_size"].tolist() == [7, 14]
    assert table["bytes"].tolist() == [7 * n_params * 4, 14 * n_params * 4]
    with pytest.raises(ValueError):
        basis_growth(exp.with_(method="finetune", method_params={}))


def test_factored_storage_holds_fewer_bytes_than_the_flat_basis(monkeypatch, tiny_stream):
    import clrepro.train as train

    monkeypatch.setattr(train, "build_stream", lambda *a, **k: tiny_stream)
    exp = Experiment("t/ogd", BenchmarkConfig("split_mnist", "task", n_tasks=2), "ogd", {"n_examples": 7},
                     ModelConfig(hidden=(5,)), TrainConfig(batch_size=10, epochs=1))
    flat = basis_growth(exp)
    factored = basis_growth(exp.with_(method_params={"storage": "factored"}))
    assert flat["stored_bytes"].tolist() == flat["bytes"].tolist()
    assert factored["basis_size"].tolist() == flat["basis_size"].tolist()
    assert (factored["stored_bytes"] < factored["bytes"] / 2).all()  # mostly the stored images themselves
