"""Results files with columns beyond the accuracy table's (KL, weight distance, ...).

`clrepro.report.results.store` keeps exactly results.COLUMNS; a notebook whose rows carry more
measurements (the SDFT-lite notebook) stores them here. The accuracy columns come first, so
`results.load_all` (which needs them and ignores the rest) reads such a file like any other.
"""

from __future__ import annotations

import os

import pandas as pd

from clrepro.report.results import COLUMNS, atomic_write_csv, read_results


def store_rows(frame: pd.DataFrame, path: str | os.PathLike) -> pd.DataFrame:
    """Replace the rows of the experiments in `frame` inside the CSV at path; keep the rest."""
    missing = set(COLUMNS) - set(frame.columns)
    if missing:
        raise ValueError(f"rows lack the accuracy columns {sorted(missing)}")
    if os.path.exists(path):
        old = read_results(path)
        frame = pd.concat([old[~old["experiment"].isin(frame["experiment"].unique())], frame], ignore_index=True)
    extra = [c for c in frame.columns if c not in COLUMNS]
    frame = frame[COLUMNS + extra].reset_index(drop=True)
    atomic_write_csv(frame, path)
    return frame
