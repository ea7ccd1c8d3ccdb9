"""The published numbers we compare against, the tolerance policy, and the rule that yields each verdict.

The numbers live in ``paper_numbers.csv`` next to this file, one row per (published number,
measurement of ours that is compared with it):

- ``id`` names the published number. The same number compared in two notebooks (DER's SGD on
  P-MNIST, 40.70, in the ewc and replay notebooks) has one id; exactly one of its rows has
  ``home = yes``: that row's measurement gives the number's one verdict in the replication table,
  the other rows point to it.
- experiment, benchmark, scenario, method and metric identify our measurement (``match_params``
  is a JSON object whose entries must appear in the run's method parameters).
- value is the paper's number; paper_std its printed ± (``paper_spread``: ``sd`` over
  ``paper_runs`` runs, or ``se``); printed_step the unit of its last printed digit, in our units,
  where coarser than 0.01 (a BWT printed as a fraction with two decimals is known to 1 point).
- source (paper, table/figure) and tag: [P] stated in the paper, [R] re-printed by a later
  paper, [~] read off a figure.
- protocol: ``paper`` (we run the source's protocol), ``reduced`` (a deliberately reduced
  protocol: no verdict), ``re-tuned`` (the published protocol with a hyper-parameter we chose
  ourselves: shown beside the published configuration's row, not counted), or
  ``differs: <what>`` (listed with the difference, not counted as reproduced).

The tolerance is not a column: it follows from the tag and the printed spread by one policy
(TOLERANCE_POLICY, `tolerance`). All accuracies are in percent, BWT in percentage points.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from clrepro import metrics
from clrepro.report.results import aggregate

PAPER_NUMBERS = Path(__file__).with_name("paper_numbers.csv")
PAPER_COLUMNS = [
    "id", "experiment", "benchmark", "scenario", "method", "match_params", "metric", "value", "paper_std",
    "paper_spread", "paper_runs", "printed_step", "source", "tag", "protocol", "home", "note",
]

# --- the tolerance policy: one table, fixed before it was applied to any row ------------------
POLICY_FIXED = "2026-12-01"
# Margin (points) by source tag. A number stated or re-printed in a table is exact to its printed
# digits, so its margin is what we accept as "the same result" across implementations and
# hardware; a number read off a figure carries about one more point of reading error.
TOLERANCE_POLICY = {"[P]": 2.0, "[R]": 2.0, "[~]": 3.0}
Z95 = 1.959963984540054
DEFAULT_PRINTED_STEP = 0.01

PROTOCOLS = ("paper", "reduced", "re-tuned")  # or "differs: <what>"
NOT_COMPARABLE = "not comparable (reduced protocol)"
RETUNED = "re-tuned"
DIFFERS = "protocol differs"
RULE_VERDICTS = ("reproduced", "above paper", "below paper", "inconclusive")


def paper_standard_error(paper_std: float, spread: str = "", runs: float = math.nan) -> float:
    """The standard error of the published mean, from what the paper prints.

    ``se``: the ± is one. ``sd`` over a stated number of runs: sd/√runs. A ± whose kind or run
    count is not stated is taken as the standard error itself, the wider (more lenient) reading.
    No ±: 0 (the band is the margin alone)."""
    if paper_std is None or (isinstance(paper_std, float) and math.isnan(paper_std)):
        return 0.0
    if spread == "sd" and runs and not math.isnan(runs) and runs > 1:
        return paper_std / math.sqrt(runs)
    return float(paper_std)


def tolerance(tag: str, paper_std: float = math.nan, spread: str = "", runs: float = math.nan,
              printed_step: float = math.nan) -> float:
    """tol = margin(tag) + ½ · printed step + 1.96 · SE(published mean): the band [paper ± tol]
    inside which our whole 95% CI must lie. Raises for an unknown tag (no per-row choice)."""
    if tag not in TOLERANCE_POLICY:
        raise ValueError(f"tag {tag!r} has no margin in TOLERANCE_POLICY {sorted(TOLERANCE_POLICY)}")
    step = DEFAULT_PRINTED_STEP if printed_step is None or math.isnan(printed_step) else printed_step
    return TOLERANCE_POLICY[tag] + step / 2 + Z95 * paper_standard_error(paper_std, spread, runs)


def verdict(paper: float, mean: float, ci95: float, tolerance: float) -> str:
    """The equivalence rule. With our 95% CI [mean − ci95, mean + ci95] and the band
    [paper − tolerance, paper + tolerance]:

    reproduced   the whole CI lies inside the band;
    above/below  the whole CI lies outside the band, on that side;
    inconclusive otherwise: the CI straddles an edge of the band, or it cannot be computed (one
                 seed): more seeds would decide;
    not run      no measurement."""
    if math.isnan(mean):
        return "not run"
    if ci95 is None or math.isnan(ci95):
        return "inconclusive"
    low, high = mean - ci95, mean + ci95
    lo_band, hi_band = paper - tolerance, paper + tolerance
    if lo_band <= low and high <= hi_band:
        return "reproduced"
    if low > hi_band:
        return "above paper"
    if high < lo_band:
        return "below paper"
    return "inconclusive"


def category(rule_verdict: str, protocol: str) -> str:
    """The verdict shown: the rule's, unless the protocol makes the row not a replication."""
    if rule_verdict in ("not run", "ambiguous match"):
        return rule_verdict
    if protocol == "reduced":
        return NOT_COMPARABLE
    if protocol == "re-tuned":
        return RETUNED
    if protocol.startswith("differs"):
        what = protocol.partition(":")[2].strip()
        return f"{DIFFERS}: {what}" if what else DIFFERS
    return rule_verdict


def rule_text() -> str:
    """The verdict rule and the tolerance policy, as every notebook states them (markdown)."""
    margins = ", ".join(f"{tag} {m:g}" for tag, m in TOLERANCE_POLICY.items())
    return (
        "**Verdict rule** (`clrepro.report.paper.verdict`). Ours is the mean over seeds with its 95% "
        "t-interval (CI); the band is [paper − tol, paper + tol]. **reproduced**: the whole CI lies "
        "inside the band. **above paper** / **below paper**: the whole CI lies outside it, on that "
        "side. **inconclusive**: the CI straddles an edge of the band, or cannot be computed (one "
        "seed); more seeds would decide. A point estimate inside the band is not enough.\n\n"
        f"**Tolerance policy** (fixed {POLICY_FIXED}, applied to every row, never chosen per row): "
        f"tol = margin by source tag ({margins} points; [P] stated in a table, [R] re-printed by a "
        "later paper, [~] read off a figure) + half the unit of the paper's last printed digit + "
        "1.96 × the standard error of the paper's mean where it prints a ± (an sd over n runs counts "
        "as sd/√n; a ± of unstated kind or run count as the standard error itself).\n\n"
        "**Not a replication, not counted as reproduced**: *not comparable (reduced protocol)* — we "
        "ran a deliberately reduced protocol, no verdict; *re-tuned* — the published protocol with a "
        "hyper-parameter we chose ourselves, shown beside the published configuration's row, which "
        "carries the verdict; *protocol differs: <what>* — our run's protocol is not the source's.\n\n"
        "Each published number is one row of the replication table, with one tolerance and one "
        "verdict, even where several notebooks compare with it."
    )


def paper_numbers(path: str | Path = PAPER_NUMBERS) -> pd.DataFrame:
    """The published numbers, validated, with the policy's `tolerance` column added."""
    table = pd.read_csv(path, dtype={"match_params": str, "paper_spread": str, "protocol": str, "home": str},
                        keep_default_na=False, na_values=[""])
    missing = set(PAPER_COLUMNS) - set(table.columns)
    if missing:
        raise ValueError(f"{path} lacks columns {sorted(missing)}")
    table["match_params"] = table["match_params"].fillna("{}").replace("", "{}")
    for column in ("paper_spread", "note"):
        table[column] = table[column].fillna("")
    table["protocol"] = table["protocol"].fillna("paper")
    bad = table[~(table["protocol"].isin(PROTOCOLS) | table["protocol"].str.startswith("differs:"))]
    if len(bad):
        raise ValueError(f"{path}: protocol must be one of {PROTOCOLS} or 'differs: <what>', got "
                         f"{sorted(set(bad['protocol']))}")
    homes = table[table["home"] == "yes"].groupby("id").size().reindex(table["id"].unique(), fill_value=0)
    if (homes != 1).any():
        raise ValueError(f"{path}: every id needs exactly one row with home = yes: {list(homes[homes != 1].index)}")
    table["tolerance"] = [
        tolerance(r.tag, r.paper_std, r.paper_spread, r.paper_runs, r.printed_step) for r in table.itertuples()
    ]
    return table


def _params_match(params_json: str, wanted_json: str) -> bool:
    params, wanted = json.loads(params_json or "{}"), json.loads(wanted_json or "{}")
    return all(params.get(k) == v for k, v in wanted.items())


def compare(rows: pd.DataFrame, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Paper vs ours for every paper row whose experiment appears in `rows` (tidy results): one
    row per paper row, with the rule's verdict (`rule_verdict`) and the verdict shown (`verdict`,
    which the protocol can override)."""
    table = paper_numbers() if table is None else table
    table = table[table["experiment"].isin(rows["experiment"].unique())]
    names = sorted(table["metric"].unique())
    summary = aggregate(metrics.per_seed(rows, names)) if len(table) else pd.DataFrame()
    records = []
    for _, ref in table.iterrows():
        candidates = summary[
            (summary["experiment"] == ref["experiment"]) & (summary["method"] == ref["method"])
            & (summary["benchmark"] == ref["benchmark"]) & (summary["scenario"] == ref["scenario"])
            & (summary["metric"] == ref["metric"])
        ]
        candidates = candidates[[_params_match(p, ref["match_params"]) for p in candidates["params"]]]
        mean = ci = float("nan")
        n, state = 0, None
        if len(candidates) > 1:
            state = "ambiguous match"
        elif len(candidates) == 1:
            found = candidates.iloc[0]
            mean, ci, n = found["mean"], found["ci95"], int(found["n_seeds"])
        protocol = ref.get("protocol", "paper") or "paper"
        rule = state or verdict(ref["value"], mean, ci, ref["tolerance"])
        records.append({
            "id": ref.get("id", ""), "home": ref.get("home", "yes") == "yes",
            "experiment": ref["experiment"], "benchmark": ref["benchmark"], "scenario": ref["scenario"],
            "method": ref["method"], "match_params": ref["match_params"], "metric": ref["metric"],
            "paper": ref["value"], "paper_std": ref.get("paper_std", float("nan")),
            "ours": mean, "ci95": ci, "n_seeds": n, "diff": mean - ref["value"],
            "tolerance": ref["tolerance"], "rule_verdict": rule, "protocol": protocol,
            "verdict": category(rule, protocol),
            "source": f"{ref['source']} {ref['tag']}".strip(), "tag": ref["tag"], "note": ref.get("note", ""),
        })
    return pd.DataFrame.from_records(records)


REPLICATION_COLUMNS = [
    "id", "notebook", "experiment", "benchmark", "scenario", "method", "match_params", "metric",
    "paper", "paper_std", "source", "tag", "tolerance", "ours", "ci95", "ci_low", "ci_high", "n_seeds", "diff",
    "rule_verdict", "verdict", "protocol", "counted", "also_in", "retuned_experiment", "retuned_ours",
    "retuned_ci95", "retuned_n_seeds", "retuned_rule_verdict",
]


def replication_table(comparison: pd.DataFrame) -> pd.DataFrame:
    """One row per published number (id), from `compare` over every results file.

    The home row gives the measurement and the verdict; `also_in` lists the other experiments
    compared with the same number (with their own mean where it differs from the home's, i.e.
    where they are not the same runs); a re-tuned row's measurement is shown beside, in the
    retuned_* columns, and is never counted. `counted` is False for re-tuned and not-run rows."""
    records = []
    for _id, group in comparison.groupby("id", sort=False):
        home = group[group["home"]]
        if home.empty:  # the home experiment has no result here: the number has no verdict yet
            continue
        home = home.iloc[0]
        others = group[~group["home"] & (group["protocol"] != "re-tuned")]
        also = []
        for o in others.itertuples():
            same = (math.isnan(o.ours) and math.isnan(home["ours"])) or abs(o.ours - home["ours"]) < 1e-9
            also.append(o.experiment if same else f"{o.experiment} (ours {o.ours:.2f}: other runs)")
        retuned = group[group["protocol"] == "re-tuned"]
        record = {k: home[k] for k in home.index if k in REPLICATION_COLUMNS}
        record.update(
            notebook=home["experiment"].split("/")[0],
            ci_low=home["ours"] - home["ci95"], ci_high=home["ours"] + home["ci95"],
            counted=home["verdict"] not in ("not run", "ambiguous match") and home["protocol"] != "re-tuned",
            also_in="; ".join(also),
        )
        if len(retuned):
            r = retuned.iloc[0]
            record.update(retuned_experiment=r["experiment"], retuned_ours=r["ours"], retuned_ci95=r["ci95"],
                          retuned_n_seeds=r["n_seeds"], retuned_rule_verdict=r["rule_verdict"])
        records.append(record)
    return pd.DataFrame.from_records(records).reindex(columns=REPLICATION_COLUMNS)


def counts(replication: pd.DataFrame) -> dict[str, int]:
    """The headline's categories over the counted published numbers."""
    counted = replication[replication["counted"].astype(bool)]
    verdicts = counted["verdict"].astype(str)
    return {
        "reproduced": int((verdicts == "reproduced").sum()),
        "inconclusive": int((verdicts == "inconclusive").sum()),
        "above": int((verdicts == "above paper").sum()),
        "below": int((verdicts == "below paper").sum()),
        "reduced": int((verdicts == NOT_COMPARABLE).sum()),
        "differs": int(verdicts.str.startswith(DIFFERS).sum()),
        "total": len(counted),
        "retuned": int(replication["retuned_experiment"].notna().sum()),
    }


def headline(replication: pd.DataFrame, published: pd.DataFrame | None = None) -> str:
    """`N reproduced / M inconclusive / K differ / J not comparable, of T distinct published
    numbers`, generated from the replication table (never typed)."""
    c = counts(replication)
    text = (f"**{c['reproduced']} reproduced / {c['inconclusive']} inconclusive / {c['above'] + c['below']} differ "
            f"({c['above']} above, {c['below']} below the paper) / {c['reduced'] + c['differs']} not comparable "
            f"({c['reduced']} reduced protocol, {c['differs']} protocol differs), of {c['total']} distinct "
            f"published numbers with a result**")
    if c["retuned"]:
        text += f"; {c['retuned']} re-tuned row(s) shown beside their published configuration, not counted"
    if published is not None:
        with_result = replication.loc[~replication["verdict"].isin(["not run"]), "id"]
        missing = published.loc[published["home"] == "yes", "id"].nunique() - with_result.nunique()
        if missing > 0:
            text += f"; {missing} published number(s) without a result yet"
    return text + f". Tolerance policy of {POLICY_FIXED}."


def row_label(experiment: str, method: str, match_params: str, metric: str, scenario: str = "") -> str:
    """An unambiguous row name: experiment · method (buffer, distinguishing parameters) · scenario · metric."""
    params = json.loads(match_params or "{}")
    parts = []
    if "buffer_size" in params:
        parts.append(f"buffer {params.pop('buffer_size')}")
    parts += [f"{k}={v}" for k, v in params.items()]
    name = method + (f" ({', '.join(parts)})" if parts else "")
    return " · ".join(x for x in (experiment, name, scenario and f"{scenario}-IL", metric) if x)


def mean_ci(mean: float, ci95: float) -> str:
    """'mean ± half-width' as every table prints it ('–' when not run, the mean alone for one seed)."""
    if math.isnan(mean):
        return "–"
    return f"{mean:.2f}" if math.isnan(ci95) else f"{mean:.2f} ± {ci95:.2f}"


def format_table(comparison: pd.DataFrame) -> pd.DataFrame:
    """Rounded, human-readable paper-vs-ours table (one row per compared measurement)."""
    out = comparison.copy()
    out.insert(0, "row", [row_label(r.experiment, r.method, r.match_params, r.metric)
                          for r in out.itertuples()])
    out["ours ± 95% CI"] = [mean_ci(m, c) for m, c in zip(out["ours"], out["ci95"], strict=True)]
    out["Δ"] = out["diff"].round(2)
    out["tolerance"] = out["tolerance"].round(2)
    columns = ["row", "scenario", "paper", "ours ± 95% CI", "Δ", "tolerance", "verdict", "n_seeds", "source"]
    if "id" in out:
        columns.append("id")
    return out[columns]


def format_replication(replication: pd.DataFrame) -> pd.DataFrame:
    """The README's table: one line per published number, a re-tuned measurement on its own line
    under the row it belongs to (marked, not counted)."""
    lines = []
    for r in replication.itertuples():
        ours = mean_ci(r.ours, r.ci95)
        # the notebooks that compare with the same number (sharing its runs) point here
        others = [a.split("/")[0] for a in str(r.also_in or "").split("; ") if a]
        notebook = r.notebook + "".join(f" (+{o})" for o in dict.fromkeys(others) if o != r.notebook)
        lines.append({
            "notebook": notebook, "published number": row_label(r.experiment, r.method, r.match_params, r.metric),
            "scenario": r.scenario, "paper": f"{r.paper:.2f}", "tol.": f"± {r.tolerance:.2f}",
            "ours ± 95% CI": ours, "n": int(r.n_seeds), "Δ": "–" if math.isnan(r.diff) else f"{r.diff:+.2f}",
            "verdict": r.verdict, "source": r.source,
        })
        if isinstance(r.retuned_experiment, str):
            m, c = r.retuned_ours, r.retuned_ci95
            lines.append({
                "notebook": r.notebook, "published number": f"↳ {r.retuned_experiment} (re-tuned)",
                "scenario": r.scenario, "paper": f"{r.paper:.2f}", "tol.": f"± {r.tolerance:.2f}",
                "ours ± 95% CI": mean_ci(m, c), "n": int(r.retuned_n_seeds),
                "Δ": f"{m - r.paper:+.2f}", "verdict": f"re-tuned, not counted (rule: {r.retuned_rule_verdict})",
                "source": r.source,
            })
    return pd.DataFrame(lines)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (no extra dependency)."""
    def cell(value) -> str:
        if isinstance(value, float):
            return "–" if math.isnan(value) else f"{value:.2f}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)
