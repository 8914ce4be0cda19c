"""Group level end to end on a small output tree.

The ROI tables are written here (the group level only reads them), but every Chimap sidecar is
produced by the real QSM workflow (``init_qsm_wf`` on a small simulated session), so the reader
is tested against the keys the pipeline really writes (``Reference: {"reference": ...}``,
``Parameters: {"alpha": ...}``), not against a hand-written guess of them.
"""

import base64
import json
import re

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from qsmprep.errors import MissingInputError, NoMatchingData, UsageError
from qsmprep.publish import mark_complete
from qsmprep.derivatives.readers import collect_provenance, find_stats_tables, parse_entities
from qsmprep.group import run_group
from tests._paths import REPO_ROOT

STRUCTS = ("caudate", "putamen", "pallidum", "thalamus")
BASE = {"caudate": 55.0, "putamen": 45.0, "pallidum": 130.0, "thalamus": 5.0}
HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def real_sidecars(tmp_path_factory):
    """Chimap sidecars of the real QSM workflow: default referencing ('mean') and, rerun from the
    same work folder with only the reference step changed, 'none'."""
    from qsmprep.qsm.pipeline import QSMOptions
    from qsmprep.simulate import simulate_session
    from qsmprep.workflows.qsm import init_qsm_wf

    d = simulate_session(preset="small", seed=3)
    root = tmp_path_factory.mktemp("qsm")
    mags, phases = [], []
    for e in range(d.mag.shape[-1]):
        m, p = root / f"mag{e}.nii.gz", root / f"phase{e}.nii.gz"
        nb.Nifti1Image(d.mag[..., e].astype(np.float32), d.affine).to_filename(m)
        nb.Nifti1Image(d.phase[..., e].astype(np.float32), d.affine).to_filename(p)
        mags.append(str(m))
        phases.append(str(p))
    o = QSMOptions()
    out = {}
    for ref in (o.reference, "none"):
        wf = init_qsm_wf(echo_times=list(d.tes), b0=3.0, masking=o.masking, combination=o.combination,
                         unwrapping=o.unwrapping, bf_removal=o.bf_removal, inversion=o.inversion, reference=ref,
                         phase_units="rad")
        wf.base_dir = str(root / "work")
        wf.inputs.inputnode.mag_files = mags
        wf.inputs.inputnode.phase_files = phases
        graph = wf.run(plugin="Linear")
        node = next(n for n in graph.nodes() if n.name == "chimap_sidecar")
        out[ref] = node.result.outputs.sidecar
    return out


def _roi_rows(rng, u, grp, t, drop=None, struct_names=STRUCTS):
    rows, k = [], 0
    for s, sname in zip(STRUCTS, struct_names):
        for h in ("left", "right"):
            k += 1
            name = f"{h.capitalize()}_{s.capitalize()}"
            if name == drop:
                continue
            mean = BASE[s] + u + (8 if grp != "HC" else 0) + 3 * t + rng.normal(0, 1)
            r2 = 20.0 + 0.1 * BASE[s] + 0.5 * t + rng.normal(0, 0.5)
            rows.append([k, name, sname, h, mean, mean, 10.0, 50, 400.0, r2, r2, 2.0])
    return pd.DataFrame(rows, columns=["index", "name", "structure", "hemisphere", "mean_ppb", "median_ppb",
                                       "sd_ppb", "n_voxels", "volume_mm3", "r2star_mean", "r2star_median",
                                       "r2star_sd"])


def _write_tree(tmp_path, sidecar=None, n_ms=5, n_hc=4, sessions=("baseline", "followup"),
                missing=(("01", "followup"),), drop_label=("02", "baseline", "Left_Thalamus"), seed=0,
                groups=("MS", "HC"), struct_names=STRUCTS, sidecar_for=None, flagged=(), r2star=True,
                extra_participants=()):
    rng = np.random.default_rng(seed)
    bids, out = tmp_path / "bids", tmp_path / "out"
    bids.mkdir()
    parts = []
    for i in range(n_ms + n_hc):
        sub = f"{i + 1:02d}"
        grp = groups[0] if i < n_ms else groups[1]
        parts.append({"participant_id": f"sub-{sub}", "group": grp, "age": 30 + 3 * i + (i % 3),
                      "sex": "F" if i % 2 else "M"})
        u = rng.normal(0, 5)
        for t, ses in enumerate(sessions):
            if (sub, ses) in missing:
                continue
            drop = drop_label[2] if drop_label and drop_label[:2] == (sub, ses) else None
            df = _roi_rows(rng, u, "HC" if grp == groups[1] else "MS", t, drop, struct_names)
            if not r2star:
                df = df.drop(columns=["r2star_mean", "r2star_median", "r2star_sd"])
            if flagged:
                df["qc_ncc"] = 0.2 if (sub, ses) in flagged else 0.8
                df["qc_flagged"] = int((sub, ses) in flagged)
                df["qc_reasons"] = "NCC 0.20 below 0.5" if (sub, ses) in flagged else "n/a"
            d = out / f"sub-{sub}" / f"ses-{ses}" / "anat"
            d.mkdir(parents=True)
            stem = f"sub-{sub}_ses-{ses}"
            df.to_csv(d / f"{stem}_atlas-DGM_desc-dgm_stats.tsv", sep="\t", index=False, na_rep="n/a")
            side = sidecar_for(sub, ses) if sidecar_for else sidecar
            if side is not None:
                (d / f"{stem}_desc-medi_Chimap.json").write_text(json.dumps(side))
    parts += list(extra_participants)
    pd.DataFrame(parts).to_csv(bids / "participants.tsv", sep="\t", index=False)
    for p in parts:
        if (out / p["participant_id"]).exists():
            mark_complete(out, p["participant_id"])  # group level reads completed subjects only
    return bids, out


def _svgs(html):
    return [base64.b64decode(m).decode() for m in re.findall(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", html)]


# --------------------------------------------------------------------------------------------
def test_entities_and_discovery(tmp_path):
    ent = parse_entities("sub-01_ses-baseline_atlas-DGM_desc-dgm_stats.tsv")
    assert ent == {"sub": "01", "ses": "baseline", "atlas": "DGM"}
    bids, out = _write_tree(tmp_path)
    found = find_stats_tables(out)
    assert len(found) == 17 and found[0][:3] == ("sub-01", "ses-baseline", "DGM")


def test_provenance_reads_the_keys_the_pipeline_writes(tmp_path, real_sidecars):
    """Fails if the reader looks for keys the pipeline does not write (the old fixture used
    ``Reference: {"Method": ...}`` and ``lambda``): referencing then vanished from the methods."""
    side = real_sidecars["mean"]
    bids, out = _write_tree(tmp_path, sidecar=side)
    prov = collect_provenance(out)
    assert prov["n_files"] == 17
    assert list(prov["Reference"]) == ["whole_brain_mean"]  # measured value_ppm/n_voxels left out
    inv = side["DipoleInversion"]
    assert list(prov["DipoleInversion"])[0].startswith(inv["Method"] + " (")
    for key, val in inv["Parameters"].items():
        assert f"{key}={val}" in list(prov["DipoleInversion"])[0]
    # every step with a method is summarised by one setting (measured volumes differ per session)
    assert all(len(prov[k]) == 1 for k in ("BrainMask", "BackgroundFieldRemoval", "DipoleInversion"))


def test_run_group_writes_everything(tmp_path, real_sidecars):
    bids, out = _write_tree(tmp_path, sidecar=real_sidecars["mean"], n_ms=6, n_hc=5)
    (out / "sub-03.html").write_text("<html></html>")
    res = run_group(bids, out, covariates=("age",))
    gdir = out / "group"
    for name in ("dgm_long", "dgm_analysis", "descriptives", "anova", "ttests", "lmm", "exclusions"):
        tsv = gdir / f"{name}.tsv"
        assert res[name] == tsv and tsv.exists() and tsv.with_suffix(".json").exists()
        df = pd.read_csv(tsv, sep="\t", keep_default_na=False)
        side = json.loads(tsv.with_suffix(".json").read_text())
        assert set(df.columns) == set(side), name
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
    side = real_sidecars["mean"]
    assert side["DipoleInversion"]["Method"] in html and side["BackgroundFieldRemoval"]["Method"] in html
    assert "susceptibility referencing: whole_brain_mean" in html and "21 Chimap sidecars" in html
    assert "from 21 per-session ROI tables" in html
    assert "cohort mixes different settings" not in html
    assert "Benjamini" in html and "between-within" in html
    # participant reports linked by relative path; a missing report is said to be missing
    assert '<a href="../sub-03.html">sub-03</a>' in html and "sub-04 <small>(no report)</small>" in html


def test_mixed_reference_settings_are_warned(tmp_path, real_sidecars):
    """Half of the sessions referenced with 'none' (real sidecars of both runs): the methods text
    names both and warns; with the old reader referencing was invisible and nothing warned."""
    def pick(sub, ses):
        return real_sidecars["none" if int(sub) % 2 else "mean"]

    bids, out = _write_tree(tmp_path, sidecar_for=pick)
    res = run_group(bids, out, figures=False)
    html = res["report"].read_text()
    assert "whole_brain_mean" in html and "none [" in html
    assert re.search(r"cohort mixes different settings for [^<]*susceptibility referencing", html)


def test_single_group_single_session_and_hemispheres(tmp_path):
    bids, out = _write_tree(tmp_path, n_ms=0, n_hc=5, sessions=("baseline",), missing=(), drop_label=None)
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
    with pytest.raises(MissingInputError, match="run the participant level first") as exc:
        run_group(tmp_path, tmp_path)
    assert exc.value.exit_code == 66 and "\n" not in str(exc.value)
    bids, out = _write_tree(tmp_path)
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
    from qsmprep.cli.run import main

    bids, out = _write_tree(tmp_path)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.9.0"}))
    with pytest.raises(SystemExit) as exc:
        main([str(bids), str(out), "group", "-w", str(tmp_path / "work"), *argv_tail])
    err = capsys.readouterr().err
    assert exc.value.code == code
    assert text in err and "Traceback" not in err
    # one line (the logged error), not a traceback or a repeated message
    assert len([line for line in err.splitlines() if "ERROR" in line and text in line]) == 1


def test_cli_no_participant_outputs_exits_66(tmp_path, capsys):
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
    bids, out = _write_tree(tmp_path, sessions=("pre", "post"), missing=(), drop_label=None)
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
    bids, out = _write_tree(tmp_path, missing=())
    for hemis in (False, True):
        res = run_group(bids, out, structures=("thalamus",), hemispheres=hemis, figures=False)
        text = "\n".join(res["warnings"])
        assert "sub-02 ses-baseline" in text and "missing from the ROI table" in text, hemis
        anova = pd.read_csv(res["anova"], sep="\t")
        row = anova[anova["structure"] == ("thalamus_left" if hemis else "thalamus")].iloc[0]
        assert row["n_excluded"] == 1


def test_hostile_labels_are_escaped_everywhere(tmp_path):
    """Group, structure and participants.tsv labels holding HTML: no raw tag in the page or in the
    SVG figures, the text still readable (escaped), and the LMM does not crash on it."""
    structs = (HOSTILE, "putamen", "a$b$ (x)", "thalamus")
    bids, out = _write_tree(tmp_path, groups=(HOSTILE, "HC(a)"), struct_names=structs, n_ms=4, n_hc=4,
                            extra_participants=[{"participant_id": "sub-99" + HOSTILE, "group": "HC(a)"}])
    excl = tmp_path / "excl.tsv"
    excl.write_text(f"participant_id\tsession_id\treason\n03\tbaseline\t{HOSTILE}\n")
    res = run_group(bids, out, structures=(HOSTILE, "putamen", "a$b$ (x)"), exclude_file=excl)
    html = res["report"].read_text()
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    for svg in _svgs(html):
        assert "<img" not in svg
    assert any("&lt;img src=x onerror=alert(1)&gt;" in svg for svg in _svgs(html))
    lmm = pd.read_csv(res["lmm"], sep="\t")
    # 'HC(a)' crashed the formula before; levels are safe-coded and mapped back ('<' sorts first,
    # so the hostile label is the reference group)
    assert {"group[HC(a)]", "group[HC(a)]:time[ses-followup]"} <= set(lmm["term"])
    assert all(p.name.startswith("structure-") and "<" not in p.name for p in res["figures"])


def test_autoescape_is_never_disabled():
    root = REPO_ROOT / "qsmprep"
    needle = "autoescape" + "=False"  # spelled apart so this test file does not match itself
    offenders = [str(p) for p in root.rglob("*.py") if needle in p.read_text().replace(" ", "")]
    assert offenders == []


def test_four_subjects_with_covariates_highlight_nothing(tmp_path):
    """The documented example on 4 subjects (2 per group): below every minimum-n rule, so no
    test is run and nothing is highlighted; the report says why."""
    bids, out = _write_tree(tmp_path, n_ms=2, n_hc=2, missing=(), drop_label=None)
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


def test_participant_label_restricts_and_exclusion_file_is_listed(tmp_path):
    bids, out = _write_tree(tmp_path, n_ms=5, n_hc=5, missing=(), drop_label=None)
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
    flagged = (("03", "followup"), ("07", "baseline"))
    bids, out = _write_tree(tmp_path, missing=(), drop_label=None, flagged=flagged)
    res = run_group(bids, out, figures=False)
    table = pd.read_csv(res["dgm_analysis"], sep="\t")
    got = set(map(tuple, table.loc[table["chi_ppb"].isna(), ["participant_id", "session_id"]].drop_duplicates().values))
    assert got == {("sub-03", "ses-followup"), ("sub-07", "ses-baseline")}
    ex = pd.read_csv(res["exclusions"], sep="\t")
    assert set(ex["source"]) == {"qc_flagged"} and ex["excluded"].all()
    assert (ex["reason"] == "NCC 0.20 below 0.5").all()
    html = res["report"].read_text()
    assert "NCC 0.20 below 0.5" in html and "qc_flagged" in html

    res = run_group(bids, out, keep_flagged=True, figures=False)
    table = pd.read_csv(res["dgm_analysis"], sep="\t")
    assert table["chi_ppb"].notna().all()
    ex = pd.read_csv(res["exclusions"], sep="\t")
    assert len(ex) == 2 and not ex["excluded"].any()
    assert any("kept in the analysis (--keep-flagged)" in w for w in res["warnings"])


def test_measure_r2star_analyses_r2star_in_its_units(tmp_path):
    bids, out = _write_tree(tmp_path, missing=(), drop_label=None)
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
    bids2, out2 = _write_tree(tmp_path / "b", r2star=False)
    with pytest.raises(MissingInputError, match="no r2star_mean column"):
        run_group(bids2, out2, measure="r2star", figures=False)


def test_reconstruction_quality_flags_are_listed(tmp_path, real_sidecars):
    """Contract 1: QualityFlags records of the Chimap sidecars appear in the report (escaped)."""
    def pick(sub, ses):
        side = dict(real_sidecars["mean"])
        if (sub, ses) == ("02", "followup"):
            side["QualityFlags"] = [{"step": "DipoleInversion", "severity": "warning",
                                     "message": f"stopped at the iteration cap {HOSTILE}"}]
        return side

    bids, out = _write_tree(tmp_path, sidecar_for=pick)
    res = run_group(bids, out, figures=False)
    html = res["report"].read_text()
    assert "stopped at the iteration cap &lt;img" in html and "<img src=x" not in html
    assert re.search(r"<td>sub-02</td><td>ses-followup</td><td>DipoleInversion</td><td>warning</td>", html)


def test_read_stats_tables_equals_reading_each_file(tmp_path):
    """The batched reader (one parse per header) returns what reading each file returns."""
    from qsmprep.derivatives.readers import read_stats_tables, read_tsv as _read_tsv

    bids, out = _write_tree(tmp_path, flagged=(("03", "followup"),))
    extra = out / "sub-99" / "ses-x" / "anat"
    extra.mkdir(parents=True)
    (extra / "sub-99_ses-x_atlas-DGM_desc-dgm_stats.tsv").write_text(
        "index\tname\tstructure\themisphere\tmean_ppb\n1\tLeft_Caudate\tcaudate\tleft\tn/a\n")
    paths = [f[3] for f in find_stats_tables(out)]
    for path, got in zip(paths, read_stats_tables(paths)):
        pd.testing.assert_frame_equal(got, _read_tsv(path), check_dtype=False)


def test_cli_group_options_reach_the_analysis(tmp_path):
    """--participant-label, --exclude-file, --keep-flagged and --measure through main()."""
    from qsmprep.cli.run import main

    bids, out = _write_tree(tmp_path, n_ms=4, n_hc=4, missing=(), drop_label=None, flagged=(("02", "baseline"),))
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
