import math

import numpy as np
import pandas as pd
import pytest

from clrepro.report import claims


def test_paired_uses_the_seed_pairing():
    a = pd.Series([10.0, 20.0, 30.0, 40.0], index=[0, 1, 2, 3])
    b = a - 1.0 + pd.Series([0.1, -0.1, 0.05, -0.05], index=[0, 1, 2, 3])
    paired = claims.paired(a, b)
    assert paired.effect == pytest.approx(1.0) and paired.p < 1e-3 and paired.n == 4
    # the same values unpaired: the spread between seeds hides the 1-point gap
    assert claims.unpaired(a, b).p > 0.5


def test_paired_aligns_on_seeds():
    a = pd.Series([3.0, 1.0, 2.0], index=[2, 0, 1])  # seed 0 → 1.0, 1 → 2.0, 2 → 3.0
    b = pd.Series([0.0, 1.0, 2.0], index=[0, 1, 2])
    assert claims.paired(a, b).effect == pytest.approx(1.0) and claims.paired(a, b).p == 0.0


def test_one_sample_tests_the_mean_against_a_reference():
    rho = [0.90, 0.92, 0.88, 0.91, np.nan]  # one ρ per seed; a seed without one drops out
    test = claims.one_sample(rho)
    assert test.effect == pytest.approx(0.9025) and test.p < 1e-4 and test.n == 4 and test.test == "one-sample t"
    assert claims.one_sample([0.5, 0.5], reference=0.5).p == 1.0
    assert math.isnan(claims.one_sample([np.nan]).effect)


def test_holm():
    adjusted = claims.holm([0.01, 0.04, np.nan, 0.03])
    assert adjusted[0] == pytest.approx(0.03) and adjusted[3] == pytest.approx(0.06)
    assert adjusted[1] == pytest.approx(0.06) and math.isnan(adjusted[2])


def test_verdict_words():
    assert claims.verdict(2.0, +1, 0.01, 1.0) == "holds"
    assert claims.verdict(0.5, +1, 0.01, 1.0) == "direction only"  # significant but negligible
    assert claims.verdict(2.0, +1, 0.2, 1.0) == "direction only"
    assert claims.verdict(2.0, +1, math.nan, 1.0) == "direction only"  # no test: a rank check
    assert claims.verdict(-2.0, +1, 0.01, 1.0) == "does not hold"
    assert claims.verdict(-2.0, +1, 0.2, 1.0) == "no evidence"
    assert claims.verdict(math.nan, +1, math.nan, 1.0) == "no evidence"


def test_family_corrects_within_the_notebook_and_skips_illustrations():
    records = [
        claims.claim("C1", "a beats b", claims.Test(2.0, 0.03, "paired t", 5), +1, "points", "2.0"),
        claims.claim("C2", "c beats d", claims.Test(3.0, 0.04, "paired t", 5), +1, "points", "3.0"),
        claims.illustration("C3", "out of the window scores 0", "0.0%", "true by construction"),
    ]
    frame = claims.family(records)
    assert list(frame.columns) == claims.COLUMNS
    # each is significant alone; after Holm over the two tested claims neither is (0.06, 0.06)
    assert list(frame["verdict"]) == ["direction only", "direction only", "illustration"]
    assert frame.loc[0, "p_holm"] == pytest.approx(0.06) and frame.loc[1, "p_holm"] == pytest.approx(0.06)


def test_bad_kind_or_unit_is_refused():
    with pytest.raises(ValueError, match="kind"):
        claims.claim("C", "x", claims.no_test(1.0), +1, "points", "", kind="guess")
    with pytest.raises(ValueError, match="unit"):
        claims.claim("C", "x", claims.no_test(1.0), +1, "percent", "")
