"""Group level end to end (qsmprep.group.run_group and ``qsmprep ... group``) on small output trees
written by the real participant-level writers (tests/_group_helpers.py): ROI tables from
qsmprep.roi, Chimap sidecars from the real QSM workflow."""

import json
import re

import pandas as pd
import pytest

from qsmprep.errors import MissingInputError, NoMatchingData, UsageError
from qsmprep.group import run_group
from tests._group_helpers import real_sidecars, write_tree


@pytest.fixture(scope="module")
def sidecars(tmp_path_factory):
    """Chimap sidecars of the real QSM workflow (computed once per test session)."""
    return real_sidecars(tmp_path_factory.mktemp("qsm"))


def test_run_group_writes_everything(tmp_path, sidecars):
    """Fails if a table or its data dictionary is missing, a column name is not BIDS-style, a value is
    written as nan instead of n/a, the long table loses its column order, a statistic counts the
    wrong participants, a missing session or hemisphere is not warned, or the report lacks figures,
    the provenance read from the real Chimap sidecars or the participant report links."""
    bids, out = write_tree(tmp_path, sidecar=sidecars["mean"], n_ms=6, n_hc=5)
    (out / "sub-03.html").write_text("<html></html>")
    res = run_group(bids, out, covariates=("age",))
    gdir = out / "group"
    for name in ("dgm_long", "dgm_analysis", "descriptives", "anova", "ttests", "lmm", "exclusions"):
        tsv = gdir / f"{name}.tsv"
        assert res[name] == tsv and tsv.exists() and tsv.with_suffix(".json").exists()
        df = pd.read_csv(tsv, sep="\t", keep_default_na=False)
        side = json.loads(tsv.with_suffix(".json").read_text())
        assert set(df.columns) == set(side), name
        assert not [c for c in df.columns if side[c] == {"Description": c}], name  # writer fallback: undescribed
        assert all("Description" in v for v in side.values())
        for col in df.columns:
            assert col == col.lower() and " " not in col
            if col.endswith("_ppb"):
                assert side[col]["Units"] == "ppb"
        assert "nan" not in set(df.astype(str).values.ravel()), name
    long = pd.read_csv(gdir / "dgm_long.tsv", sep="\t")
    assert list(long.columns[:2]) == ["participant_id", "session_id"]
    assert list(long.columns[5:14]) == ["index", "name", "structure", "hemisphere", "mean_ppb", "median_ppb",
                                        "sd_ppb", "n_voxels", "volume_mm3"]
    assert list(long.columns[2:5]) == ["group", "age", "sex"]
    assert list(long.columns[14:]) == ["r2star_mean", "r2star_median", "r2star_sd"]
    assert len(long) == 21 * 8 - 1

    anova = pd.read_csv(res["anova"], sep="\t")
    assert set(anova["source"]) == {"group", "time", "group_x_time"} and len(anova) == 12
    thal = anova[(anova["structure"] == "thalamus")]
    assert (thal["n_excluded"] == 2).all()  # sub-01 missing follow-up, sub-02 missing a hemisphere
    lmm = pd.read_csv(res["lmm"], sep="\t")
    assert "age" in set(lmm["term"]) and {"t", "df", "fit_ok"} <= set(lmm.columns)
    assert (lmm.loc[lmm["structure"] == "caudate", "n_observations"] == 21).all()
    tt = pd.read_csv(res["ttests"], sep="\t")
    assert len(tt) == 4 * 4

    text = "\n".join(res["warnings"])
    assert "sub-01: no ROI table for session(s) ses-followup" in text
    assert "sub-02 ses-baseline: thalamus left" in text
    warn_tsv = pd.read_csv(gdir / "warnings.tsv", sep="\t")
    assert "sub-01: no ROI table for session(s) ses-followup" in set(warn_tsv["message"])

    assert len(res["figures"]) == 8 and all(p.exists() for p in res["figures"])
    html = res["report"].read_text()
    assert html.count("data:image/svg+xml;base64,") == 8
    assert "Main table" in html and "sub-01: no ROI table for session(s) ses-followup" in html
    side = sidecars["mean"]
    assert side["DipoleInversion"]["Method"] in html and side["BackgroundFieldRemoval"]["Method"] in html
    assert "susceptibility referencing: whole_brain_mean" in html and "21 Chimap sidecars" in html
    assert "from 21 per-session ROI tables" in html
    assert "cohort mixes different settings" not in html
    assert "Benjamini" in html and "between-within" in html
    # participant reports linked by relative path; a missing report is said to be missing
    assert '<a href="../sub-03.html">sub-03</a>' in html and "sub-04 <small>(no report)</small>" in html


def test_single_group_single_session_and_hemispheres(tmp_path):
    """One group, one session, per-hemisphere structures: fails if the analyses that cannot run are not
    skipped with a stated reason, or if hemispheres are not analysed separately."""
    bids, out = write_tree(tmp_path, n_ms=0, n_hc=5, sessions=("baseline",), missing=(), drop_label=None)
    res = run_group(bids, out, hemispheres=True, structures=("caudate",), figures=False)
    text = "\n".join(res["warnings"])
    assert "only one session" in text and "only one group" in text
    assert "LMM skipped" in text
    desc = pd.read_csv(res["descriptives"], sep="\t")
    assert set(desc["structure"]) == {"caudate_left", "caudate_right"}
    assert pd.read_csv(res["anova"], sep="\t").empty
    html = res["report"].read_text()
    assert "No Chimap sidecar" in html and "only one session" in html


def test_input_errors_have_exit_codes_and_one_line_messages(tmp_path):
    """Fails if an input error is not its QSMPrepError subclass with the documented exit code and a
    one-line message, or if anything is written before the checks pass."""
    with pytest.raises(MissingInputError, match="run the participant level first") as exc:
        run_group(tmp_path, tmp_path)
    assert exc.value.exit_code == 66 and "\n" not in str(exc.value)
    bids, out = write_tree(tmp_path)
    cases = [
        (dict(group_column="diagnosis"), UsageError, 64, "--group-column 'diagnosis'"),
        (dict(covariates=("bmi",)), UsageError, 64, "--covariates bmi"),
        (dict(structures=("caudate", "hippocampus")), UsageError, 64, "--structures hippocampus"),
        (dict(participant_label=["77"]), NoMatchingData, 18, "--participant-label 77"),
        (dict(exclude_file=tmp_path / "nope.tsv"), MissingInputError, 66, "nope.tsv does not exist"),
    ]
    for kwargs, cls, code, text in cases:
        with pytest.raises(cls) as exc:
            run_group(bids, out, figures=False, **kwargs)
        assert exc.value.exit_code == code and text in str(exc.value) and "\n" not in str(exc.value), kwargs
    bad = tmp_path / "bad.tsv"
    bad.write_text("subject\twhy\n01\tmotion\n")
    with pytest.raises(UsageError, match="lacks column"):
        run_group(bids, out, exclude_file=bad, figures=False)
    (bids / "participants.tsv").unlink()
    with pytest.raises(MissingInputError, match="participants.tsv not found"):
        run_group(bids, out, figures=False)
    assert not (out / "group").exists()  # nothing written before the checks pass


@pytest.mark.parametrize("argv_tail, code, text", [
    (["--group-column", "diagnosis"], 64, "--group-column 'diagnosis'"),
    (["--covariates", "bmi"], 64, "--covariates bmi"),
    (["--structures", "hippocampus"], 64, "--structures hippocampus"),
    (["--participant-label", "77"], 18, "--participant-label 77"),
    (["--exclude-file", "no_such.tsv"], 66, "no_such.tsv does not exist"),
    (["--measure", "r2star", "--structures", "hippocampus"], 64, "--structures hippocampus"),
])
def test_cli_group_errors_exit_without_traceback(tmp_path, capsys, argv_tail, code, text):
    """Through main(): fails if the exit code differs from the documented one, a traceback is printed,
    or the error is logged more than once."""
    from qsmprep.cli.run import main

    bids, out = write_tree(tmp_path)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.9.0"}))
    with pytest.raises(SystemExit) as exc:
        main([str(bids), str(out), "group", "-w", str(tmp_path / "work"), *argv_tail])
    err = capsys.readouterr().err
    assert exc.value.code == code
    assert text in err and "Traceback" not in err
    # one line (the logged error), not a traceback or a repeated message
    assert len([line for line in err.splitlines() if "ERROR" in line and text in line]) == 1


def test_cli_no_participant_outputs_exits_66(tmp_path, capsys):
    """Through main(): fails unless an output folder without participant results exits 66 with the hint
    to run the participant level, without traceback."""
    from qsmprep.cli.run import main

    bids, out = tmp_path / "bids", tmp_path / "out"
    bids.mkdir()
    out.mkdir()
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.9.0"}))
    with pytest.raises(SystemExit) as exc:
        main([str(bids), str(out), "group", "-w", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert exc.value.code == 66 and "run the participant level first" in err and "Traceback" not in err


def test_session_selection_and_order(tmp_path):
    """Fails if --sessions does not fix the time order (the paired difference would change sign) or if
    a requested session that does not exist, or one found but not requested, is not warned."""
    bids, out = write_tree(tmp_path, sessions=("pre", "post"), missing=(), drop_label=None)
    res = run_group(bids, out, sessions=["pre", "post"], structures=("caudate",), figures=False)
    desc = pd.read_csv(res["descriptives"], sep="\t")
    assert list(desc["session_id"].unique()) == ["ses-pre", "ses-post"]
    tt = pd.read_csv(res["ttests"], sep="\t")
    paired = tt[tt["test"] == "paired"]
    assert (paired["contrast"] == "ses-post - ses-pre").all() and (paired["difference_ppb"] > 0).all()
    res = run_group(bids, out, sessions=["pre", "missing"], structures=("caudate",), figures=False)
    assert any("ses-missing were not found" in w for w in res["warnings"])
    assert any("ses-post found but not requested" in w for w in res["warnings"])


def test_missing_hemisphere_label_reported_in_both_modes(tmp_path):
    """A ROI table without one hemisphere label: fails unless it is warned and that participant is
    excluded from the ANOVA, bilateral and per hemisphere."""
    bids, out = write_tree(tmp_path, missing=())
    for hemis in (False, True):
        res = run_group(bids, out, structures=("thalamus",), hemispheres=hemis, figures=False)
        text = "\n".join(res["warnings"])
        assert "sub-02 ses-baseline" in text and "missing from the ROI table" in text, hemis
        anova = pd.read_csv(res["anova"], sep="\t")
        row = anova[anova["structure"] == ("thalamus_left" if hemis else "thalamus")].iloc[0]
        assert row["n_excluded"] == 1


def test_four_subjects_with_covariates_highlight_nothing(tmp_path):
    """The documented example on 4 subjects (2 per group): below every minimum-n rule, so no
    test is run and nothing is highlighted; the report says why."""
    bids, out = write_tree(tmp_path, n_ms=2, n_hc=2, missing=(), drop_label=None)
    res = run_group(bids, out, covariates=("age", "sex"))
    for name in ("anova", "ttests", "lmm"):
        df = pd.read_csv(res[name], sep="\t", keep_default_na=False)
        assert "true" not in set(df.get("significant_fdr", [])), name
    assert pd.read_csv(res["ttests"], sep="\t").empty
    assert pd.read_csv(res["anova"], sep="\t").empty
    text = "\n".join(res["warnings"])
    assert "minimum 3" in text and "LMM" in text
    html = res["report"].read_text()
    assert 'class="sig"' not in html
    assert re.search(r"<b>(\d+)</b>warnings", html).group(1) != "0"


def test_measure_r2star_analyses_r2star_in_its_units(tmp_path):
    """Fails if --measure r2star analyses another column, leaves a ppb unit or _ppb name in its tables,
    overwrites the chi results, or runs on tables without R2* columns."""
    bids, out = write_tree(tmp_path, missing=(), drop_label=None)
    res = run_group(bids, out, measure="r2star", structures=("caudate",), figures=False)
    gdir = out / "group" / "r2star"
    assert res["report"] == gdir / "report.html"
    ana = pd.read_csv(gdir / "dgm_analysis.tsv", sep="\t")
    side = json.loads((gdir / "dgm_analysis.json").read_text())
    assert "r2star_per_s" in ana.columns and side["r2star_per_s"]["Units"] == "1/s"
    long = pd.read_csv(gdir / "dgm_long.tsv", sep="\t")
    one = long[(long["participant_id"] == "sub-01") & (long["session_id"] == "ses-baseline")
               & (long["structure"] == "caudate")]
    got = ana.loc[(ana["participant_id"] == "sub-01") & (ana["session_id"] == "ses-baseline"), "r2star_per_s"]
    assert got.iloc[0] == pytest.approx(one["r2star_mean"].mean(), rel=1e-5)
    desc = pd.read_csv(gdir / "descriptives.tsv", sep="\t")
    dside = json.loads((gdir / "descriptives.json").read_text())
    assert "mean_per_s" in desc.columns and dside["mean_per_s"]["Units"] == "1/s"
    assert not any(c.endswith("_ppb") for c in desc.columns)
    lside = json.loads((gdir / "lmm.json").read_text())
    assert lside["estimate"]["Units"] == "1/s"
    html = res["report"].read_text()
    assert "R2* (1/s)" in html
    assert not (out / "group" / "report.html").exists()  # the chi results are not overwritten

    (tmp_path / "b").mkdir()
    bids2, out2 = write_tree(tmp_path / "b", r2star=False)
    with pytest.raises(MissingInputError, match="no r2star_mean column"):
        run_group(bids2, out2, measure="r2star", figures=False)


def test_cli_group_options_reach_the_analysis(tmp_path):
    """--participant-label, --exclude-file, --keep-flagged and --measure through main()."""
    from qsmprep.cli.run import main

    bids, out = write_tree(tmp_path, n_ms=4, n_hc=4, missing=(), drop_label=None, flagged=(("02", "baseline"),))
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.9.0"}))
    excl = tmp_path / "excl.tsv"
    excl.write_text("participant_id\treason\n03\tdropped out\n")
    with pytest.raises(SystemExit) as exc:
        main([str(bids), str(out), "group", "-w", str(tmp_path / "work"), "--participant-label", "01", "02", "03",
              "05", "06", "07", "--exclude-file", str(excl), "--keep-flagged", "--measure", "r2star",
              "--structures", "caudate"])
    assert exc.value.code == 0
    gdir = out / "group" / "r2star"
    ana = pd.read_csv(gdir / "dgm_analysis.tsv", sep="\t")
    assert sorted(ana["participant_id"].unique()) == ["sub-01", "sub-02", "sub-05", "sub-06", "sub-07"]
    assert ana["r2star_per_s"].notna().all()  # sub-02 baseline flagged but kept
    ex = pd.read_csv(gdir / "exclusions.tsv", sep="\t")
    assert set(zip(ex["source"], ex["excluded"])) == {("exclusion_file", True), ("qc_flagged", False)}


def test_default_structures_are_atlas_structures_and_the_cli_default(tmp_path):
    """DEFAULT_STRUCTURES is defined once (qsmprep.stats.cohort); fails if one of them is not a
    structure of the default atlas label table (a rename there would make the default group
    run exit 64), if the --structures help text states another default, or if run_group's
    default analyses other structures."""
    from qsmprep import stats
    from qsmprep.atlas import label_table
    from qsmprep.cli.parser import get_parser
    from qsmprep.group import DEFAULT_STRUCTURES

    assert DEFAULT_STRUCTURES is stats.cohort.DEFAULT_STRUCTURES
    assert set(DEFAULT_STRUCTURES) <= set(label_table(dentate=False)["structure"])
    action = next(a for a in get_parser()._actions if "--structures" in a.option_strings)
    assert f"default {' '.join(DEFAULT_STRUCTURES)}" in action.help
    bids, out = write_tree(tmp_path, missing=(), drop_label=None)
    res = run_group(bids, out, figures=False)
    assert list(pd.read_csv(res["descriptives"], sep="\t")["structure"].unique()) == list(DEFAULT_STRUCTURES)
