"""CPU time of the paper profile, per notebook, from the committed results (or any results folder).

Every run's rows carry the run's wall seconds (single-threaded on CPU; a lockstep unit's time is
split evenly over its seeds); summing them once per run gives the CPU time a full re-render costs
when nothing is cached. Wall seconds include any slowdown from other processes on the machine.
Run it after a re-render to compare with the previous one:

    python benchmarks/cpu_hours.py                 # results/
    python benchmarks/cpu_hours.py build/paper/results
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from clrepro.metrics import trained_view

RUN_KEYS = ["experiment", "method", "benchmark", "scenario", "params", "seed"]


def cpu_hours(results_dir: Path) -> pd.DataFrame:
    records = []
    for path in sorted(results_dir.glob("*.csv")):
        frame = pd.read_csv(path, dtype={"params": str}, keep_default_na=False, na_values=[""])
        if not set(RUN_KEYS) | {"seconds"} <= set(frame.columns):
            continue
        frame = trained_view(frame)  # a Class-IL run's Task-IL view is the same run: count it once
        seconds = pd.to_numeric(frame["seconds"], errors="coerce")
        per_run = frame.assign(seconds=seconds).groupby(RUN_KEYS, dropna=False)["seconds"].max()
        records.append({"file": path.name, "runs": int(per_run.notna().sum()),
                        "cpu_hours": float(per_run.sum()) / 3600})
    table = pd.DataFrame.from_records(records, columns=["file", "runs", "cpu_hours"])
    total = pd.DataFrame([{"file": "total", "runs": table["runs"].sum(), "cpu_hours": table["cpu_hours"].sum()}])
    return pd.concat([table, total], ignore_index=True)


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "results"
    print(cpu_hours(folder).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
