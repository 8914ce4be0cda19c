"""Selection of the sessions analysed (qsmprep.group.inputs): --participant-label, --exclude-file,
registration QC flags, completed subjects."""

import json
from html import escape as html_escape

import pandas as pd
import pytest

from qsmprep.cli.run import main
from qsmprep.errors import DataError
from qsmprep.group import run_group
from qsmprep.publish import mark_complete
from tests._group_helpers import QC_REASON, write_tree


def test_participant_label_restricts_and_exclusion_file_is_listed(tmp_path):
    """Fails if --participant-label keeps other participants or reports the unselected ones as missing,
    if an exclusion-file row (whole participant or one session) is not applied, or if a row that
    matches nothing is not listed and warned."""
    bids, out = write_tree(tmp_path, n_ms=5, n_hc=5, missing=(), drop_label=None)
    res = run_group(bids, out, participant_label=["01", "sub-02", "03", "06", "07", "08"], figures=False)
    long = pd.read_csv(res["dgm_long"], sep="\t")
    assert sorted(long["participant_id"].unique()) == ["sub-01", "sub-02", "sub-03", "sub-06", "sub-07", "sub-08"]
    assert not any("sub-04" in w for w in res["warnings"])  # not selected, so not "missing"

    excl = tmp_path / "exclusions.tsv"
    excl.write_text("participant_id\tsession_id\treason\nsub-04\t\tmotion artefacts\n"
                    "05\tfollowup\tscanner upgrade\n42\tn/a\ttypo\n")
    res = run_group(bids, out, exclude_file=excl)
    table = pd.read_csv(res["dgm_analysis"], sep="\t")
    assert "sub-04" not in set(table["participant_id"])
    sub5 = table[table["participant_id"] == "sub-05"]
    assert sub5.loc[sub5["session_id"] == "ses-followup", "chi_ppb"].isna().all()
    assert sub5.loc[sub5["session_id"] == "ses-baseline", "chi_ppb"].notna().all()
    ex = pd.read_csv(res["exclusions"], sep="\t")
    assert list(ex["reason"]) == ["motion artefacts", "scanner upgrade", "typo"]
    assert list(ex["excluded"]) == [True, True, False]
    html = res["report"].read_text()
    assert "motion artefacts" in html and "scanner upgrade" in html
    assert any("sub-42 matches no ROI table" in w for w in res["warnings"])


def test_qc_flagged_sessions_left_out_unless_kept(tmp_path):
    """Fails if a session flagged by registration QC enters the analysis by default, is not listed with
    the reason the QC assessment gave, or is dropped although --keep-flagged was given."""
    flagged = (("03", "followup"), ("07", "baseline"))
    bids, out = write_tree(tmp_path, missing=(), drop_label=None, flagged=flagged)
    res = run_group(bids, out, figures=False)
    table = pd.read_csv(res["dgm_analysis"], sep="\t")
    got = set(map(tuple, table.loc[table["chi_ppb"].isna(), ["participant_id", "session_id"]].drop_duplicates().values))
    assert got == {("sub-03", "ses-followup"), ("sub-07", "ses-baseline")}
    ex = pd.read_csv(res["exclusions"], sep="\t")
    assert set(ex["source"]) == {"qc_flagged"} and ex["excluded"].all()
    assert (ex["reason"] == QC_REASON).all()
    html = res["report"].read_text()
    assert html_escape(QC_REASON) in html and "qc_flagged" in html  # the real reason holds a "<"

    res = run_group(bids, out, keep_flagged=True, figures=False)
    table = pd.read_csv(res["dgm_analysis"], sep="\t")
    assert table["chi_ppb"].notna().all()
    ex = pd.read_csv(res["exclusions"], sep="\t")
    assert len(ex) == 2 and not ex["excluded"].any()
    assert any("kept in the analysis (--keep-flagged)" in w for w in res["warnings"])


def test_roi_table_without_needed_columns_is_a_data_error(tmp_path, capsys):
    """A published file that is not a ROI table crashed the group level with a ValueError
    traceback (exit 1); it must be a one-line DataError (exit 65) naming the file.  Fails if the
    check is dropped or raises another class."""
    bids, out = write_tree(tmp_path, missing=(), drop_label=None)
    bad = sorted(out.glob("sub-02/ses-baseline/anat/*_stats.tsv"))[0]
    bad.write_text("index\tname\n1\tLeft_Caudate\n")
    mark_complete(out, "sub-02")  # published in that state
    with pytest.raises(DataError) as exc:
        run_group(bids, out, figures=False)
    assert exc.value.exit_code == 65 and bad.name in str(exc.value) and "\n" not in str(exc.value)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.9.0"}))
    with pytest.raises(SystemExit) as ex:
        main([str(bids), str(out), "group", "-w", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert ex.value.code == 65 and "Traceback" not in err and "structure, hemisphere, mean_ppb" in err
