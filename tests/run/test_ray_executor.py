import pytest

from clrepro.config import BenchmarkConfig, ConfigError, TrainConfig
from clrepro.experiment import Experiment
from clrepro.report import results
from clrepro.run import runner
from clrepro.run.profiles import get_profile
from clrepro.run.ray_executor import executor_from_env


def test_executor_is_named_or_read_from_the_environment(monkeypatch):
    monkeypatch.delenv("CLREPRO_EXECUTOR", raising=False)
    assert executor_from_env() == "process"
    monkeypatch.setenv("CLREPRO_EXECUTOR", "ray")
    assert executor_from_env() == "ray"
    assert executor_from_env("process") == "process"
    with pytest.raises(ConfigError, match="executor"):
        executor_from_env("dask")


def test_a_sweep_on_a_local_ray_equals_the_process_pool(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    import ray

    experiments = [
        Experiment("t/ray", BenchmarkConfig("split_mnist", "class"), "der",
                   {"buffer_size": 20, "minibatch_size": 4}, train=TrainConfig(lr=0.03, batch_size=10)),
        Experiment("t/ray", BenchmarkConfig("permuted_mnist", "domain"), "ewc", {"lam": 10.0},
                   train=TrainConfig(batch_size=10)),
    ]
    smoke = get_profile("smoke")
    monkeypatch.setenv("CLREPRO_CACHE", str(tmp_path / "pool"))
    pool = runner.run_experiments(experiments, smoke, "cpu", jobs=2, progress=False)
    monkeypatch.setenv("CLREPRO_CACHE", str(tmp_path / "ray"))
    try:
        on_ray = runner.run_experiments(experiments, smoke, "cpu", jobs=2, progress=False, executor="ray")
    finally:
        ray.shutdown()
    assert on_ray.drop(columns=results.TIMING_COLUMNS).equals(pool.drop(columns=results.TIMING_COLUMNS))
    # the driver wrote the run cache, one entry per run
    assert len(list((tmp_path / "ray").glob("*.csv"))) == 2 * len(smoke.seeds)
