import numpy as np
import pytest

from clrepro.report import plots


def test_ci95_matches_the_tables_t_interval():
    low, high = plots.ci95([1.0, 2.0, 3.0])
    assert (low + high) / 2 == pytest.approx(2.0)
    assert (high - low) / 2 == pytest.approx(4.302652729 / np.sqrt(3))
    assert plots.ci95([5.0]) == (5.0, 5.0)
