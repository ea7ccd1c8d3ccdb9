import pytest

from clrepro.config import ConfigError
from clrepro.report.setups import experiment, load_setups, setup, setups_table

# Issue 16 §2: DER Table 2, S-MNIST, the authors' best_args (aimagelab/mammoth utils/best_args.py,
# key 'seq-mnist', the same from 7ab9db9 on); batch 10, 1 epoch everywhere.
# method → buffer → (lr, replay minibatch, α, β)
DER_SMNIST = {
    "er": {200: (0.01, 10, None, None), 500: (0.1, 10, None, None), 5120: (0.1, 10, None, None)},
    "der": {200: (0.03, 10, 0.2, None), 500: (0.03, 128, 1.0, None), 5120: (0.1, 128, 0.5, None)},
    "derpp": {200: (0.03, 128, 0.2, 1.0), 500: (0.03, 10, 1.0, 0.5), 5120: (0.1, 64, 0.2, 0.5)},
}


@pytest.mark.parametrize("method, buffer", [(m, b) for m, cells in DER_SMNIST.items() for b in cells])
def test_der_smnist_replay_cells_are_the_authors_best_args(method, buffer):
    lr, minibatch, alpha, beta = DER_SMNIST[method][buffer]
    for scenario in ("class", "task"):  # one setup: Task-IL is the Class-IL run, masked at test
        e = experiment("replay/x", "der", "split_mnist", method, scenario, buffer_size=buffer)
        assert (e.train.lr, e.train.batch_size, e.train.epochs, e.train.optimizer) == (lr, 10, 1, "sgd")
        assert e.method_params["buffer_size"] == buffer and e.method_params["minibatch_size"] == minibatch
        assert e.method_params.get("alpha") == alpha and e.method_params.get("beta") == beta
        assert e.model.hidden == (100, 100) and e.benchmark.n_tasks == 5


def test_der_smnist_methods_without_a_buffer():
    sgd = experiment("x/y", "der", "split_mnist", "finetune", "class")
    assert (sgd.train.lr, sgd.train.batch_size, sgd.train.epochs) == (0.03, 10, 1)
    oewc = experiment("x/y", "der", "split_mnist", "online_ewc", "class")
    assert oewc.train.lr == 0.03 and oewc.method_params["lam"] == 90 and oewc.method_params["gamma"] == 1.0
    lwf = experiment("x/y", "der", "split_mnist", "lwf", "class")
    # wd_reg 5e-4, added to the loss as wd_reg·Σθ² (mammoth models/lwf.py @7ab9db9): SGD weight decay 1e-3
    assert (lwf.train.lr, lwf.train.weight_decay) == (0.03, 1e-3)
    assert lwf.method_params["lam_o"] == 1 and lwf.method_params["temperature"] == 2
    assert experiment("x/y", "der", "split_mnist", "pnn", "task").train.lr == 0.1
    for buffer in (200, 500, 5120):
        agem = experiment("x/y", "der", "split_mnist", "agem", "class", buffer_size=buffer)
        assert agem.train.lr == 0.1 and agem.method_params["ref_batch"] == 128


def test_der_pmnist_and_rmnist_as_published():
    pm = experiment("x/y", "der", "permuted_mnist", "derpp", "domain", buffer_size=200)
    assert pm.benchmark.n_tasks == 20 and pm.train.lr == 0.1 and pm.train.batch_size == 128
    assert (pm.method_params["alpha"], pm.method_params["beta"]) == (1.0, 1.0)
    oewc = experiment("x/y", "der", "permuted_mnist", "online_ewc", "domain")
    assert oewc.train.lr == 0.1 and oewc.method_params["lam"] == 0.7
    rm = experiment("x/y", "der", "rotated_mnist", "der", "domain", buffer_size=500)
    assert rm.method_params["alpha"] == 0.5 and rm.benchmark.interpolation == "nearest"


def test_van_de_ven_protocol_and_their_class_il_loss():
    from clrepro.methods.lwf import VAN_DE_VEN_CLASS_IL

    e = experiment("lwf/x", "vandeven", "split_mnist", "lwf", "class")
    assert (e.train.optimizer, e.train.lr, e.train.batch_size, e.train.iterations) == ("adam", 1e-3, 128, 2000)
    assert e.train.reset_optimizer is False and e.model.hidden == (400, 400)
    assert VAN_DE_VEN_CLASS_IL.items() <= e.method_params.items()
    task = experiment("lwf/x", "vandeven", "split_mnist", "lwf", "task")
    assert task.method_params.get("distil_units", "old") == "old" and task.method_params["weighting"] == "relative"
    assert experiment("lwf/x", "hsu", "split_mnist", "finetune", "class").model.hidden == (400,)


def test_every_row_is_sourced_and_builds_an_experiment():
    setups = load_setups()
    assert len(setups) > 60
    assert all(s.source and s.tag for s in setups)
    table = setups_table()
    assert len(table) == len(setups) and {"paper", "lr", "batch_size", "source", "tag"} <= set(table.columns)


def test_unknown_setup_and_unnamed_scenario_are_errors():
    with pytest.raises(KeyError, match="buffer_size=999"):
        setup("der", "split_mnist", "er", buffer_size=999)
    with pytest.raises(ConfigError, match="scenario"):
        setup("der", "split_mnist", "er", buffer_size=200).experiment("x/y")


def test_bad_rows_fail_naming_the_line(tmp_path):
    from clrepro.report.setups import SETUPS

    lines = SETUPS.read_text().splitlines()
    bad = lines[1].replace('"{""n_tasks"": 20}"', '"{""n_taks"": 20}"')
    assert bad != lines[1]
    path = tmp_path / "setups.csv"
    path.write_text("\n".join([lines[0], bad]) + "\n")
    with pytest.raises(ValueError, match="line 2"):
        load_setups(path)


def test_der_and_tricks_rows_use_the_authors_xavier_init_and_the_others_pytorchs_default():
    # aimagelab/mammoth backbone/MNISTMLP.py (@7ab9db9) and hastings24/rethinking_er (@d32707b) call
    # backbone/__init__.py xavier(); van de Ven & Tolias, Hsu et al. and GPM keep nn.Linear's default.
    for s in load_setups():
        assert s.model.init == ("xavier" if s.paper in ("der", "tricks") else "default"), (s.paper, s.method)
    assert experiment("pnn/x", "der", "split_mnist", "pnn", "task").model.init == "xavier"
    assert "init" in setups_table().columns
