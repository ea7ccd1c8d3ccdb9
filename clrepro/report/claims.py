"""Claims without a published number: one test per claim, Holm within a notebook's family, and
verdict words that mean one thing everywhere.

A notebook builds one record per claim with `tested` (a paired, unpaired or trend test run
here), `untested` (a comparison with no test: a rank check on means), `illustration` (true by
construction or a closed-form formula: shown, never counted) or with kind "exploratory" /
"confounded" to label what the claim's comparison does not control; `family` then applies
Holm's correction over the notebook's tested claims and gives each its verdict:

holds           the claimed sign, significant after Holm (p_holm < ALPHA), and an effect at
                least the stated minimum (MIN_EFFECT for its unit);
direction only  the claimed sign, but not significant after correction, or no test was run, or
                significant yet below the minimum effect (negligible);
does not hold   significant after correction, the other way;
no evidence     the other sign without significance, or nothing measured.

Seeds that give every arm the same stream, order and initialisation are paired: use `paired`
(a t-test on the per-seed differences), never an unpaired test on paired seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
# The smallest effect a claim must show to "hold", by unit: below it a significant difference
# is still negligible. Accuracy and BWT in percentage points; a rank correlation's |ρ|; a ratio
# (e.g. protection, a share of SGD's forgetting removed) as a fraction; a growth exponent's
# excess over a reference (T^1.1 against linear).
MIN_EFFECT = {"points": 1.0, "rho": 0.3, "fraction": 0.05, "exponent": 0.1, "epochs": 1.0}
VERDICTS = ("holds", "direction only", "does not hold", "no evidence")
KINDS = ("tested", "exploratory", "confounded", "illustration")
COLUMNS = ["id", "claim", "setting", "measured", "kind", "test", "n", "effect", "unit", "min_effect",
           "p", "p_holm", "verdict", "note"]


@dataclass(frozen=True)
class Test:
    """One comparison: the effect in the claim's direction-free units (a − b, or ρ), its p-value
    (NaN when no test was run) and what was run."""
    effect: float
    p: float
    test: str
    n: int


def paired(a: pd.Series, b: pd.Series) -> Test:
    """a − b on the seeds both have (Series indexed by seed), paired t-test on the differences."""
    both = pd.concat({"a": a, "b": b}, axis=1).dropna()
    diff = both["a"] - both["b"]
    if len(diff) == 0:
        return Test(float("nan"), float("nan"), "paired t", 0)
    if len(diff) < 2:
        p = float("nan")
    elif float(diff.std(ddof=1)) == 0.0:  # identical differences: the t statistic is undefined
        p = 0.0 if diff.iloc[0] != 0 else 1.0
    else:
        p = float(stats.ttest_rel(both["a"], both["b"]).pvalue)
    return Test(float(diff.mean()), p, "paired t", len(diff))


def unpaired(a: Sequence[float], b: Sequence[float]) -> Test:
    """mean(a) − mean(b) with Welch's t-test, for samples that share no seed structure."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) == 0 or len(b) == 0:
        return Test(float("nan"), float("nan"), "Welch t", 0)
    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue) if min(len(a), len(b)) > 1 else float("nan")
    return Test(float(a.mean() - b.mean()), p, "Welch t", min(len(a), len(b)))


def one_sample(values: Sequence[float], reference: float = 0.0) -> Test:
    """mean(values) − reference with a one-sample t-test, for one statistic per independent seed
    (e.g. each seed's own Spearman ρ, so that checkpoints of one seed are not counted as independent)."""
    v = np.asarray(values, float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return Test(float("nan"), float("nan"), "one-sample t", 0)
    if len(v) < 2:
        p = float("nan")
    elif float(v.std(ddof=1)) == 0.0:  # identical values: the t statistic is undefined
        p = 0.0 if v[0] != reference else 1.0
    else:
        p = float(stats.ttest_1samp(v, reference).pvalue)
    return Test(float(v.mean() - reference), p, "one-sample t", len(v))


def trend(x: Sequence[float], y: Sequence[float]) -> Test:
    """Spearman's ρ between x and y (effect = ρ)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3:
        return Test(float("nan"), float("nan"), "Spearman", len(x))
    result = stats.spearmanr(x, y)
    return Test(float(result.statistic), float(result.pvalue), "Spearman", len(x))


def no_test(effect: float, what: str = "rank check on means, no test", n: int = 0) -> Test:
    """A comparison without a test: at best "direction only"."""
    return Test(float(effect), float("nan"), what, n)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count in the family size)."""
    p = np.asarray(p_values, float)
    out = np.full_like(p, np.nan)
    idx = np.where(~np.isnan(p))[0]
    m = len(idx)
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def verdict(effect: float, sign: int, p_holm: float, min_effect: float) -> str:
    """The verdict word for 'the effect has the sign `sign`' (see the module docstring)."""
    if effect is None or math.isnan(effect):
        return "no evidence"
    right = sign * effect > 0
    if p_holm is not None and not math.isnan(p_holm) and p_holm < ALPHA:
        if not right:
            return "does not hold"
        return "holds" if abs(effect) >= min_effect else "direction only"
    return "direction only" if right else "no evidence"


def claim(claim_id: str, statement: str, result: Test, sign: int, unit: str, measured: str, setting: str = "",
          kind: str = "tested", note: str = "") -> dict:
    """One claim record: `result` is the test of the claimed effect, `sign` its claimed sign
    (+1: effect > 0), `unit` a key of MIN_EFFECT."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if unit not in MIN_EFFECT:
        raise ValueError(f"unit must be one of {sorted(MIN_EFFECT)}, got {unit!r}")
    return {"id": claim_id, "claim": statement, "setting": setting, "measured": measured, "kind": kind,
            "test": result.test, "n": result.n, "effect": result.effect, "sign": sign, "unit": unit,
            "min_effect": MIN_EFFECT[unit], "p": result.p, "note": note}


def illustration(claim_id: str, statement: str, measured: str, note: str) -> dict:
    """Shown, not tested: true by construction, or a closed-form formula checked against itself."""
    return {"id": claim_id, "claim": statement, "setting": "", "measured": measured, "kind": "illustration",
            "test": "none", "n": 0, "effect": float("nan"), "sign": 0, "unit": "", "min_effect": float("nan"),
            "p": float("nan"), "note": note}


def family(records: list[dict]) -> pd.DataFrame:
    """A notebook's claims: Holm over every record with a p-value (illustrations excluded), then
    the verdict words. Illustrations get the verdict 'illustration'."""
    frame = pd.DataFrame.from_records(records)
    if frame.empty:
        return pd.DataFrame(columns=COLUMNS)
    testable = frame["kind"] != "illustration"
    frame["p_holm"] = np.nan
    frame.loc[testable, "p_holm"] = holm(frame.loc[testable, "p"].to_numpy(float))
    frame["verdict"] = [
        "illustration" if r.kind == "illustration" else verdict(r.effect, r.sign, r.p_holm, r.min_effect)
        for r in frame.itertuples()
    ]
    return frame[COLUMNS]


def rule_text() -> str:
    """How claims are judged, as every notebook states it (markdown)."""
    mins = ", ".join(f"{v:g} {k}" for k, v in MIN_EFFECT.items())
    return (
        "**Claims** (`clrepro.report.claims`). Each claim is tested once: paired t-test over seeds where "
        "the seeds are paired (same stream, order and initialisation for both arms), Welch's t-test "
        "otherwise, Spearman's ρ for trends; p-values are corrected with Holm's method within this "
        f"notebook's family of claims (α = {ALPHA}). Minimum effect: {mins}. **holds**: the claimed "
        "sign, significant after correction, at least the minimum effect; **direction only**: the "
        "claimed sign without that (not significant, negligible, or not tested: a rank check on means); "
        "**does not hold**: significant the other way; **no evidence**: the other sign, not significant. "
        "*Illustrations* (true by construction, or a closed-form formula) are shown, not tested; "
        "*exploratory* comparisons (chosen after looking, or on the test split) and *confounded* ones "
        "are labelled as such."
    )
