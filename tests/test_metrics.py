import numpy as np
import pytest

from clrepro import metrics

# R[t, i]: accuracy on task i after training task t (hand-made, 3 tasks)
R = np.array([
    [90.0, 10.0, 12.0],
    [70.0, 95.0, 20.0],
    [60.0, 80.0, 99.0],
])
b = np.array([10.0, 11.0, 9.0])


def test_average_accuracy():
    assert metrics.average_accuracy(R) == pytest.approx((60 + 80 + 99) / 3)
    assert metrics.average_accuracy(R, 2) == pytest.approx((70 + 95) / 2)
    assert metrics.metric("acc@1")(R, b) == 90.0


def test_backward_transfer():
    assert metrics.backward_transfer(R) == pytest.approx(((60 - 90) + (80 - 95)) / 2)


def test_forward_transfer():
    assert metrics.forward_transfer(R, b) == pytest.approx(((10 - 11) + (20 - 9)) / 2)


def test_forgetting():
    np.testing.assert_allclose(metrics.forgetting_per_task(R), [90 - 60, 95 - 80])
    assert metrics.average_forgetting(R) == pytest.approx(22.5)


def test_named_metrics_and_unknown():
    assert metrics.metric("task1")(R, b) == 60.0
    assert metrics.metric("task3")(R, b) == 99.0
    assert np.isnan(metrics.metric("acc@5")(R, b))
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.metric("accuracy")


def test_single_task_has_no_bwt():
    assert np.isnan(metrics.backward_transfer(np.array([[50.0]])))


def test_metrics_read_only_the_cells_the_loop_evaluates():
    """The loop leaves R[t, i > t+1] NaN by default: no metric may read those cells."""
    T = 4
    full = np.random.default_rng(0).uniform(0, 100, (T, T))
    partial = full.copy()
    partial[np.triu_indices(T, k=2)] = np.nan
    init = np.full(T, 10.0)
    for name in ("acc", "bwt", "fwt", "forgetting", "acc@2", "task1"):
        assert metrics.metric(name)(partial, init) == metrics.metric(name)(full, init), name


def test_forgetting_ignores_accuracy_before_the_task_was_trained():
    R2 = np.array([[90.0, 85.0, 0.0], [50.0, 60.0, 0.0], [40.0, 55.0, 70.0]])  # task 2 scored 85 before training
    np.testing.assert_allclose(metrics.forgetting_per_task(R2), [90 - 40, 60 - 55])


def test_mean_matrix_scores_as_trained_where_the_rows_hold_two_views():
    from clrepro.report import results
    from tests.report.test_results import fake_result

    result = fake_result(scenario="class")
    result.task_il_accuracy = np.array([[99.0, np.nan], [90.0, 98.0]])
    rows = results.run_rows(result)
    assert metrics.mean_matrix(rows)[1, 0] == result.accuracy[1, 0]  # the Class-IL matrix, not a mixture
    assert metrics.mean_matrix(rows, "task")[1, 0] == 90.0
    assert metrics.mean_matrix(rows[rows["scenario"] == "task"])[1, 0] == 90.0  # one view: that one
