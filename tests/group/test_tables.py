"""Output tables of the group level (qsmprep.group.tables): the TSV + JSON writer and the
data dictionaries."""

import json

import numpy as np
import pandas as pd

from qsmprep.group.tables import analysis_sidecar, dgm_long_sidecar, write_table


def test_write_table_bids_values_and_measure_renaming(tmp_path):
    """Missing values must be ``n/a``, booleans ``true``/``false``; with ``--measure r2star`` the
    ``_ppb`` columns become ``_per_s`` with unit 1/s and the word susceptibility replaced.  Fails
    if a ppb unit or column name survives in an R2* table."""
    df = pd.DataFrame({"structure": ["caudate", "putamen"], "chi_ppb": [1.25, np.nan], "mean_ppb": [2.0, 3.0],
                       "significant_fdr": [True, False]})
    side = {"structure": {"Description": "Structure"},
            "chi_ppb": {"Description": "Mean magnetic susceptibility", "Units": "ppb"},
            "mean_ppb": {"Description": "Mean susceptibility", "Units": "ppb"}}
    path = write_table(df, tmp_path / "t.tsv", side)
    assert path.read_text() == "structure\tchi_ppb\tmean_ppb\tsignificant_fdr\ncaudate\t1.25\t2\ttrue\nputamen\tn/a\t3\tfalse\n"
    got = json.loads(path.with_suffix(".json").read_text())
    assert got["significant_fdr"] == {"Description": "significant_fdr"}  # undescribed: its name
    path = write_table(df, tmp_path / "r.tsv", side, measure="r2star")
    assert path.read_text().splitlines()[0] == "structure\tr2star_per_s\tmean_per_s\tsignificant_fdr"
    got = json.loads(path.with_suffix(".json").read_text())
    assert got["r2star_per_s"] == {"Description": "Mean R2*", "Units": "1/s"}
    assert got["mean_per_s"] == {"Description": "Mean R2*", "Units": "1/s"}
    assert "ppb" not in path.with_suffix(".json").read_text()


def test_sidecars_reuse_participants_json():
    """Descriptions of participants.tsv columns come from participants.json when it has them;
    fails if the user's descriptions (and units) are replaced by a generic text."""
    psid = {"age": {"Description": "Age at baseline", "Units": "year"}}
    long = dgm_long_sidecar(["participant_id", "age", "sex", "mean_ppb"], psid)
    assert long["age"] == psid["age"]
    assert long["sex"] == {"Description": "Column 'sex' of participants.tsv"}
    assert long["mean_ppb"]["Units"] == "ppb"
    ana = analysis_sidecar("r2star", covariates=("age",), participants_sidecar=psid)
    assert ana["age"] == psid["age"] and ana["chi_ppb"]["Units"] == "1/s"
    assert "r2star_mean" in ana["chi_ppb"]["Description"]


def test_long_table_describes_r2star_and_qc_columns_as_the_participant_level_does(tmp_path):
    """dgm_long.json described r2star_mean, qc_<metric>, qc_flagged ... as "Column 'x' of
    participants.tsv" (no unit).  They must carry the participant level's own entries (R2* in
    1/s from qsmprep.roi.roi_sidecar, QC from registration_qc.column_dictionary); fails if a
    ROI-table column is described as a participants.tsv column again."""
    from qsmprep.group import run_group
    from qsmprep.registration_qc import column_dictionary
    from qsmprep.roi import roi_sidecar
    from tests._group_helpers import QC_METRIC, write_tree

    bids, out = write_tree(tmp_path, flagged=(("03", "followup"),), missing=(), drop_label=None)
    res = run_group(bids, out, figures=False, keep_flagged=True)
    side = json.loads(res["dgm_long"].with_suffix(".json").read_text())
    assert side["r2star_mean"] == roi_sidecar(r2star=True)["r2star_mean"] and side["r2star_mean"]["Units"] == "1/s"
    qc = column_dictionary([QC_METRIC])
    assert {k: side[k] for k in (f"qc_{QC_METRIC}", "qc_flagged", "qc_reasons")} == qc
    assert not [k for k, v in side.items() if "of participants.tsv" in v["Description"]
                and k not in ("group", "age", "sex")]
