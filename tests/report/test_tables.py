import pandas as pd

from clrepro.report import tables
from tests.report.test_results import fake_rows


def test_metric_table_formats_mean_and_ci():
    rows = pd.concat([fake_rows(0, (50, 60)), fake_rows(1, (52, 62))])
    table = tables.metric_table(rows, ["acc", "bwt"])
    assert list(table.columns) == ["acc", "bwt", "seeds"]
    acc = table.iloc[0]["acc"]
    assert acc.startswith("53.50 ± ") and table.iloc[0]["seeds"] == 2
