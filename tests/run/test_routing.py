import threading

import pandas as pd
import pytest

from clrepro.config import BenchmarkConfig, ConfigError, ModelConfig, TrainConfig
from clrepro.experiment import Experiment
from clrepro.run import routing, runner
from clrepro.run.profiles import get_profile

LOCKSTEP = Experiment("t/lockstep", BenchmarkConfig("split_mnist", "class", n_tasks=2), "der",
                      model=ModelConfig(hidden=(8,)))
ONE_SEED = Experiment("t/ogd", BenchmarkConfig("split_mnist", "task", n_tasks=2), "ogd",
                      model=ModelConfig(hidden=(8,)))
RESNET = Experiment("t/resnet", BenchmarkConfig("seq_cifar10", "class"), "er", model=ModelConfig(kind="resnet18"))


def test_gpu_gets_lockstep_and_resnet_runs_only():
    assert runner.uses_lockstep(LOCKSTEP) and not runner.uses_lockstep(ONE_SEED)
    assert routing.gains_from_gpu(LOCKSTEP) and routing.gains_from_gpu(RESNET)
    assert not routing.gains_from_gpu(ONE_SEED)


def test_auto_without_cuda_and_an_explicit_device_take_everything(monkeypatch):
    monkeypatch.setattr(routing, "resolve_device", lambda device: "cpu" if device == "auto" else device)
    assert routing.route([LOCKSTEP, ONE_SEED], "auto") == {"cpu": [LOCKSTEP, ONE_SEED]}
    assert routing.route([LOCKSTEP, ONE_SEED], "cpu") == {"cpu": [LOCKSTEP, ONE_SEED]}
    monkeypatch.setattr(routing, "resolve_device", lambda device: "cuda")
    assert routing.route([LOCKSTEP, ONE_SEED], "cuda") == {"cuda": [LOCKSTEP, ONE_SEED]}


def test_auto_with_cuda_splits_the_experiments_in_order(monkeypatch):
    monkeypatch.setattr(routing, "resolve_device", lambda device: "cuda")
    assert routing.route([ONE_SEED, LOCKSTEP, RESNET], "auto") == {"cpu": [ONE_SEED], "cuda": [LOCKSTEP, RESNET]}


def test_the_gpu_group_runs_in_a_thread_beside_the_cpu_workers(monkeypatch):
    monkeypatch.setattr(routing, "resolve_device", lambda device: "cuda")
    calls = []

    def fake_run(experiments, profile, device, seeds, progress, jobs, executor):
        calls.append((device, jobs, threading.current_thread() is threading.main_thread()))
        return pd.DataFrame({"experiment": [e.name for e in experiments], "device": device})

    monkeypatch.setattr(routing, "run_experiments", fake_run)
    rows = routing.run_routed([ONE_SEED, LOCKSTEP], get_profile("smoke"), "auto", jobs=2)
    assert sorted(calls) == [("cpu", 2, True), ("cuda", 1, False)]
    assert rows.to_dict("records") == [{"experiment": "t/ogd", "device": "cpu"},
                                       {"experiment": "t/lockstep", "device": "cuda"}]


def test_an_error_on_the_gpu_thread_reaches_the_caller(monkeypatch):
    monkeypatch.setattr(routing, "resolve_device", lambda device: "cuda")

    def fake_run(experiments, profile, device, **kwargs):
        if device == "cuda":
            raise RuntimeError("CUDA out of memory")
        return pd.DataFrame({"experiment": [e.name for e in experiments]})

    monkeypatch.setattr(routing, "run_experiments", lambda e, p, d, s, **kw: fake_run(e, p, d, **kw))
    with pytest.raises(RuntimeError, match="out of memory"):
        routing.run_routed([ONE_SEED, LOCKSTEP], get_profile("smoke"), "auto")


def test_gpu_jobs_setting_is_checked(monkeypatch):
    monkeypatch.setenv("CLREPRO_GPU_JOBS", "two")
    with pytest.raises(ConfigError, match="CLREPRO_GPU_JOBS"):
        routing.run_routed([], get_profile("smoke"), "cpu")


def test_routed_rows_on_the_cpu_are_the_runners_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("CLREPRO_CACHE", str(tmp_path))
    exp = Experiment("t/routed", BenchmarkConfig("split_mnist", "task", n_tasks=2), "finetune",
                     model=ModelConfig(hidden=(8,)), train=TrainConfig(batch_size=32))
    routed = routing.run_routed(exp, get_profile("smoke"), "auto" if not runner.torch.cuda.is_available() else "cpu",
                                seeds=[0], store_in=tmp_path / "r.csv")
    direct = runner.run_experiments(exp, get_profile("smoke"), "cpu", seeds=[0])
    pd.testing.assert_frame_equal(routed, direct, check_dtype=False)
    assert (tmp_path / "r.csv").exists()
