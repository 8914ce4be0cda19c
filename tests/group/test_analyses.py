"""The registry of group statistics (qsmprep.group.analyses): every record is complete, and a new
statistic is one record (table, data dictionary, report section and methods clause follow)."""

import json

import markupsafe
import pandas as pd

import qsmprep.group.run as group_run
from qsmprep.group import run_group
from qsmprep.group.analyses import ANALYSES, Analysis, Design, run_analyses
from qsmprep.group.tables import KEY_COLUMNS
from tests._group_helpers import write_tree


def test_every_record_describes_every_column_it_returns(tmp_path):
    """write_table falls back to the column name when a column has no entry, so a check of the
    written JSON alone cannot catch an undescribed column; this one reads the records and fails
    when an analysis returns a column its ``sidecar`` does not describe."""
    bids, out = write_tree(tmp_path, n_ms=5, n_hc=4)
    res = run_group(bids, out, covariates=("age",), figures=False)
    for analysis in ANALYSES:
        df = pd.read_csv(res[analysis.name], sep="\t", keep_default_na=False)
        assert set(df.columns) <= set(analysis.sidecar), (analysis.name, set(df.columns) - set(analysis.sidecar))
        assert all("Description" in v for v in analysis.sidecar.values()), analysis.name
    assert [a.name for a in ANALYSES] == ["descriptives", "anova", "ttests", "lmm"]


def _medians(table, design):
    """Toy statistic: median chi per structure x group x session."""
    df = (table.groupby(["structure", "group", "session_id"], sort=False)["chi_ppb"].median()
          .rename("median_chi_ppb").reset_index())
    return df, ["medians: toy note"]


MEDIANS = Analysis(
    name="medians",
    title="Medians",
    run=_medians,
    sidecar={**KEY_COLUMNS, "median_chi_ppb": {"Description": "Median over participants", "Units": "ppb"}},
    caption=lambda d: markupsafe.Markup("Medians per group ({g} first).").format(g=d.groups[0]),
    methods=lambda df, d: ["toy medians per cell"],
)


def test_a_new_statistic_is_one_record(tmp_path, monkeypatch):
    """Registering one record is enough for its table, data dictionary, warnings, report table,
    caption and methods clause; fails if run_group or the report name the statistics one by one
    (the ~7 edits a statistic needed before)."""
    monkeypatch.setattr(group_run, "ANALYSES", ANALYSES + (MEDIANS,))
    bids, out = write_tree(tmp_path, n_ms=4, n_hc=4)
    res = run_group(bids, out, structures=("caudate",), figures=False, measure="r2star")
    tsv = out / "group" / "r2star" / "medians.tsv"
    assert res["medians"] == tsv
    df = pd.read_csv(tsv, sep="\t")
    side = json.loads(tsv.with_suffix(".json").read_text())
    assert "median_chi_per_s" in df.columns and side["median_chi_per_s"]["Units"] == "1/s"  # measure renaming applies
    assert "medians: toy note" in res["warnings"]
    html = res["report"].read_text()
    assert "<h3>Medians (medians.tsv)</h3>" in html and "Medians per group (HC first)." in html
    assert "toy medians per cell" in html
    assert f"{df['median_chi_per_s'].iloc[0]:.3f}" in html


def test_run_analyses_keeps_registry_order_and_drops_repeated_notes():
    """Fails if results come back in another order than the records (the report and the
    methods text follow it) or if a note repeated by two analyses is listed twice."""
    table = pd.DataFrame({"structure": ["a"] * 4, "group": ["HC", "HC", "MS", "MS"],
                          "session_id": ["ses-1"] * 4, "chi_ppb": [1.0, 2.0, 3.0, 5.0]})
    twice = Analysis(name="twice", title="t", run=lambda t, d: (t.head(1), ["shared", "own"]), sidecar={})
    results, notes = run_analyses(table, Design(groups=["HC", "MS"], sessions=["ses-1"]), (MEDIANS, twice, MEDIANS))
    assert list(results) == ["medians", "twice"]
    assert notes == ["medians: toy note", "shared", "own"]
    assert results["medians"]["median_chi_ppb"].tolist() == [1.5, 4.0]
