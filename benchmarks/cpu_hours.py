"""CPU time of the paper profile, per notebook, from the committed results (or any results folder).

Every run's rows carry the run's wall seconds and, from the wave-2 loop on, its CPU seconds (the
worker's time.process_time; single-threaded; a lockstep unit's time is split evenly over its
seeds). Summing them once per run gives the CPU time a full re-render costs when nothing is
cached. cpu_hours uses a run's CPU seconds where recorded, else its wall seconds (`measure` says
which); wall seconds include any slowdown from other processes on the machine, CPU seconds do not.
Run it after a re-render to compare with the previous one:

    python benchmarks/cpu_hours.py                       # results/
    python benchmarks/cpu_hours.py build/paper/results
    python benchmarks/cpu_hours.py --before ee80251      # next to the results committed at a revision
"""

from __future__ import annotations

import argparse
import subprocess
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import pandas as pd

from clrepro.run.pipeline import run_times


def cpu_hours(results_dir: Path) -> pd.DataFrame:
    records = []
    for path in sorted(results_dir.glob("*.csv")):
        per_run = run_times(path)
        if per_run is None:
            continue
        has_cpu = per_run["run_cpu_seconds"].notna()
        measure = "cpu" if has_cpu.all() else "wall" if not has_cpu.any() else "mixed"
        records.append({"file": path.name, "runs": int(per_run["seconds"].notna().sum()),
                        "wall_hours": float(per_run["seconds"].sum()) / 3600,
                        "cpu_hours": float(per_run["run_cpu_seconds"].fillna(per_run["seconds"]).sum()) / 3600,
                        "measure": measure})
    table = pd.DataFrame.from_records(records, columns=["file", "runs", "wall_hours", "cpu_hours", "measure"])
    total = pd.DataFrame([{"file": "total", "runs": table["runs"].sum(), "wall_hours": table["wall_hours"].sum(),
                           "cpu_hours": table["cpu_hours"].sum(), "measure": ""}])
    return pd.concat([table, total], ignore_index=True)


def cpu_hours_at(revision: str, repo: Path) -> pd.DataFrame:
    """cpu_hours of the results/ folder as committed at `revision` (git archive into a temp dir)."""
    archive = subprocess.run(["git", "archive", revision, "results"], cwd=repo, check=True,
                             capture_output=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        return cpu_hours(Path(tmp) / "results")


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=root / "results")
    parser.add_argument("--before", metavar="REV", help="also show the results committed at this git revision")
    args = parser.parse_args()
    table = cpu_hours(args.folder)
    if args.before:
        before = cpu_hours_at(args.before, root)
        table = before.merge(table, on="file", how="outer", suffixes=(f"_{args.before}", "_now"))
        table["now/before"] = table["cpu_hours_now"] / table[f"cpu_hours_{args.before}"]
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
