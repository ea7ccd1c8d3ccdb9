"""The command line: options from the dataclasses, errors before training, one run end to end."""

import pytest

from clrepro import cli
from clrepro.data.datasets import find_dataset_root
from clrepro.methods import available_methods
from clrepro.report import results

needs_mnist = pytest.mark.skipif(find_dataset_root("mnist") is None, reason="run `make data` first")
TINY = ["--benchmark", "split_mnist", "--n-tasks", "2", "--train-per-task", "60", "--test-per-task", "40",
        "--hidden", "16", "--batch-size", "10", "--profile", "smoke", "--device", "cpu", "--quiet"]


def test_help_lists_every_method_benchmark_and_parameter_default(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for method in available_methods():
        assert f"  {method} (" in text
    assert "split_fashion_mnist" in text and "--batch-size" in text and "--buffer-size" in text
    assert "der (task, domain, class): buffer_size=200, minibatch_size=128, alpha=1.0" in text


def test_options_follow_the_dataclasses():
    dests = {o.dest for o in cli.config_options()}
    assert {"benchmark.name", "benchmark.scenario", "model.hidden", "train.lr", "train.reset_optimizer"} <= dests
    assert cli.method_parameters()["derpp"]["beta"] == (float, 0.5)


def test_experiment_from_options_keeps_dataclass_defaults():
    args = cli.build_parser().parse_args(
        ["run", "--method", "der", "--benchmark", "split_mnist", "--scenario", "class", "--buffer-size", "500",
         "--lr", "0.03", "--batch-size", "10", "--hidden", "400", "400", "--no-reset-optimizer"])
    exp = cli.experiment_from({k: v for k, v in vars(args).items() if "." in k})
    assert exp.method_params == {"buffer_size": 500}
    assert (exp.train.lr, exp.train.batch_size, exp.train.epochs, exp.train.reset_optimizer) == (0.03, 10, 1, False)
    assert exp.model.hidden == (400, 400) and exp.benchmark.n_tasks == 5 and exp.name == "cli/der"


@pytest.mark.parametrize("extra, message", [
    (["--method", "der", "--lr", "-1"], "error: train.lr: must be positive, got -1.0"),
    (["--method", "der", "--lr", "fast"], "error: train.lr: expected FLOAT, got 'fast'"),
    (["--method", "ewc", "--buffer-size", "50"], "error: method_params.buffer_size: not a parameter of ewc"),
    (["--method", "der", "--fill", "bogus"], "error: method_params.fill: unknown 'bogus'"),
])
def test_a_bad_value_is_one_config_error_line_before_anything_trains(extra, message, capsys, monkeypatch):
    import clrepro.run.runner as runner

    monkeypatch.setattr(runner, "run_experiments", lambda *a, **k: pytest.fail("trained despite a bad value"))
    assert cli.main(["run", *TINY, "--scenario", "class", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_list_names_methods_with_scenarios_benchmarks_and_notebooks(capsys):
    assert cli.main(["list"]) == 0
    text = capsys.readouterr().out
    assert "pnn          task\n" in text and "der          task, domain, class" in text
    assert "permuted_mnist" in text and "replay " in text and "summary " in text


@needs_mnist
def test_run_prints_metrics_and_matrix_and_writes_the_rows(tmp_path, capsys):
    out = tmp_path / "der.csv"
    code = cli.main(["run", *TINY, "--scenario", "class", "--method", "der", "--buffer-size", "50", "--lr", "0.03",
                     "--seeds", "0", "1", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "Class-IL, mean ± 95% CI over 2 seeds" in text and "ACC " in text and "forgetting " in text
    assert "after 2" in text and "task 2" in text
    rows = results.read_results(out)
    assert set(rows["seed"]) == {0, 1} and set(rows["lr"]) == {0.03} and set(rows["batch_size"]) == {10}
    assert set(rows["experiment"]) == {"cli/der"} and set(rows["trained_as"]) == {"class"}


@needs_mnist
def test_run_uses_the_run_cache(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CLREPRO_CACHE", str(tmp_path / "cache"))
    argv = ["run", *TINY, "--scenario", "task", "--method", "finetune", "--seeds", "3",
            "--out", str(tmp_path / "a.csv")]
    assert cli.main(argv) == 0
    first = capsys.readouterr().out
    assert len(list((tmp_path / "cache").glob("*.csv"))) == 1
    assert cli.main(argv) == 0
    assert capsys.readouterr().out == first  # served from the cache: the same rows, the same numbers
