"""Results files with columns beyond the accuracy table's (KL, weight distance, ...).

`clrepro.report.results.store` keeps extra columns itself (after COLUMNS, empty in rows that lack
them), so this is the same store under the name the SDFT-lite notebook uses; it exists so the
notebook's call reads as what it does. The accuracy columns come first, so
`results.load_all` reads such a file like any other.
"""

from __future__ import annotations

import os

import pandas as pd

from clrepro.report.results import store


def store_rows(frame: pd.DataFrame, path: str | os.PathLike) -> pd.DataFrame:
    """Replace the rows of the runs in `frame` inside the CSV at path; keep the rest and every
    extra column (see results.store)."""
    return store(frame, path)
