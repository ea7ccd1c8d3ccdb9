import pandas as pd

from clrepro.config import BenchmarkConfig, ModelConfig, TrainConfig
from clrepro.experiment import Experiment
from clrepro.run import runner
from clrepro.run.profiles import get_profile


def test_run_code_files_are_the_core_plus_the_method():
    names = {p.relative_to(runner.PACKAGE_DIR).as_posix() for p in runner.run_code_files("finetune")}
    core = {p.relative_to(runner.PACKAGE_DIR).as_posix() for m in runner.RUN_CORE for p in runner.PACKAGE_DIR.glob(m)}
    assert {"train.py", "data/streams.py", "models/mlp.py", "report/results.py"} <= core
    assert names == core | {"methods/base.py", "methods/finetune.py"}
    assert not any(n.startswith(("lm/", "analysis/")) for n in names)
    assert "methods/ewc.py" in {p.relative_to(runner.PACKAGE_DIR).as_posix() for p in runner.run_code_files("l2")}


def test_run_code_hash_covers_the_method_chain_only():
    h_ewc, h_l2, h_ft = (runner.run_code_hash(m) for m in ("ewc", "l2", "finetune"))
    assert len({h_ewc, h_l2, h_ft}) == 3  # each hashes its own module chain
    assert runner.run_code_hash("online_ewc") == h_ewc  # same file as EWC


def test_cache_hit_returns_the_same_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("CLREPRO_CACHE", str(tmp_path))
    calls = []
    real_run = runner.run

    def counting_run(*args, **kwargs):
        calls.append(1)
        return real_run(*args, **kwargs)

    monkeypatch.setattr(runner, "run", counting_run)
    exp = Experiment("test/cache", BenchmarkConfig("split_mnist", "task", n_tasks=2), "finetune",
                     model=ModelConfig(hidden=(8,)), train=TrainConfig(batch_size=32))
    first = runner.run_experiments(exp, get_profile("smoke"), "cpu", seeds=[0], store_in=tmp_path / "r.csv")
    second = runner.run_experiments(exp, get_profile("smoke"), "cpu", seeds=[0])
    assert len(calls) == 1
    pd.testing.assert_frame_equal(first, second, check_dtype=False)
    assert (tmp_path / "r.csv").exists()


def test_cache_key_changes_with_the_data_loaded(monkeypatch):
    experiment = Experiment("t/key", BenchmarkConfig("split_mnist", "class"), "finetune")

    class Fake:
        def __init__(self, digest):
            self.digest = digest

    monkeypatch.setattr(runner, "source_dataset", lambda cfg, data_dir=None: Fake("genuine"))
    genuine = runner.cache_key(experiment, 0, "cpu")
    monkeypatch.setattr(runner, "source_dataset", lambda cfg, data_dir=None: Fake("labels shifted"))
    assert runner.cache_key(experiment, 0, "cpu") != genuine
