"""Group level end to end on a small synthetic output tree (tables written here)."""

import json

import numpy as np
import pandas as pd
import pytest

from qsmprep.publish import mark_complete
from qsmprep.workflows.group import find_stats_tables, parse_entities, run_group

STRUCTS = ("caudate", "putamen", "pallidum", "thalamus")
BASE = {"caudate": 55.0, "putamen": 45.0, "pallidum": 130.0, "thalamus": 5.0}


def _write_tree(tmp_path, n_ms=5, n_hc=4, sessions=("baseline", "followup"), missing=(("01", "followup"),),
                drop_label=("02", "baseline", "Left_Thalamus"), chimap=True, seed=0):
    rng = np.random.default_rng(seed)
    bids, out = tmp_path / "bids", tmp_path / "out"
    bids.mkdir()
    parts = []
    for i in range(n_ms + n_hc):
        sub = f"{i + 1:02d}"
        grp = "MS" if i < n_ms else "HC"
        parts.append({"participant_id": f"sub-{sub}", "group": grp, "age": 30 + i, "sex": "F" if i % 2 else "M"})
        u = rng.normal(0, 5)
        for t, ses in enumerate(sessions):
            if (sub, ses) in missing:
                continue
            rows = []
            k = 0
            for s in STRUCTS:
                for h in ("left", "right"):
                    k += 1
                    name = f"{h.capitalize()}_{s.capitalize()}"
                    if (sub, ses, name) == drop_label:
                        continue
                    mean = BASE[s] + u + (8 if grp == "MS" else 0) + 3 * t + rng.normal(0, 1)
                    rows.append([k, name, s, h, mean, mean, 10.0, 50, 400.0])
            df = pd.DataFrame(rows, columns=["index", "name", "structure", "hemisphere", "mean_ppb", "median_ppb",
                                             "sd_ppb", "n_voxels", "volume_mm3"])
            d = out / f"sub-{sub}" / f"ses-{ses}" / "anat"
            d.mkdir(parents=True)
            stem = f"sub-{sub}_ses-{ses}"
            df.to_csv(d / f"{stem}_atlas-DGM_desc-dgm_stats.tsv", sep="\t", index=False, na_rep="n/a")
            if chimap:
                (d / f"{stem}_desc-tgv_Chimap.json").write_text(json.dumps({
                    "Units": "ppm", "MagneticFieldStrength": 3.0, "EchoTime": [0.004, 0.008, 0.012],
                    "DipoleInversion": {"Method": "tikhonov", "Parameters": {"lambda": 0.05}},
                    "BackgroundFieldRemoval": {"Method": "vsharp", "Parameters": {"radii_mm": [6, 4]},
                                               "ErodedMaskVolumeML": 1200.0},
                    "Reference": {"Method": "brain_mean"},
                }))
    pd.DataFrame(parts).to_csv(bids / "participants.tsv", sep="\t", index=False)
    for p in parts:
        if (out / p["participant_id"]).exists():
            mark_complete(out, p["participant_id"])  # group level reads completed subjects only
    return bids, out


def test_entities_and_discovery(tmp_path):
    ent = parse_entities("sub-01_ses-baseline_atlas-DGM_desc-dgm_stats.tsv")
    assert ent == {"sub": "01", "ses": "baseline", "atlas": "DGM"}
    bids, out = _write_tree(tmp_path)
    found = find_stats_tables(out)
    assert len(found) == 17 and found[0][:3] == ("sub-01", "ses-baseline", "DGM")


def test_run_group_writes_everything(tmp_path):
    bids, out = _write_tree(tmp_path)
    res = run_group(bids, out, covariates=("age",))
    gdir = out / "group"
    for name in ("dgm_long", "dgm_analysis", "descriptives", "anova", "ttests", "lmm"):
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
    assert list(long.columns[-9:]) == ["index", "name", "structure", "hemisphere", "mean_ppb", "median_ppb",
                                       "sd_ppb", "n_voxels", "volume_mm3"]
    assert list(long.columns[2:5]) == ["group", "age", "sex"] and long.shape[1] == 14
    assert len(long) == 17 * 8 - 1

    anova = pd.read_csv(res["anova"], sep="\t")
    assert set(anova["source"]) == {"group", "time", "group_x_time"} and len(anova) == 12
    assert (anova["n_excluded"] >= 1).all()
    thal = anova[(anova["structure"] == "thalamus")]
    assert (thal["n_excluded"] == 2).all()  # sub-01 missing follow-up, sub-02 missing a hemisphere
    lmm = pd.read_csv(res["lmm"], sep="\t")
    assert "age" in set(lmm["term"])
    assert (lmm.loc[lmm["structure"] == "caudate", "n_observations"] == 17).all()
    tt = pd.read_csv(res["ttests"], sep="\t")
    assert len(tt) == 4 * 4

    # warnings: the missing session and the missing hemisphere are reported, not dropped silently
    text = "\n".join(res["warnings"])
    assert "sub-01: no ROI table for session(s) ses-followup" in text
    assert "sub-02 ses-baseline: thalamus left" in text or "sub-02 ses-baseline: structure(s) thalamus" in text
    warn_tsv = pd.read_csv(gdir / "warnings.tsv", sep="\t")
    assert "sub-01: no ROI table for session(s) ses-followup" in set(warn_tsv["message"])

    assert len(res["figures"]) == 8 and all(p.exists() for p in res["figures"])
    html = res["report"].read_text()
    assert html.count("data:image/svg+xml;base64,") == 8
    assert "Main table" in html and "sub-01: no ROI table for session(s) ses-followup" in html
    assert "tikhonov" in html and "vsharp" in html and "17 Chimap sidecars" in html
    assert "Benjamini" in html and "pingouin" in html


def test_run_group_single_group_single_session_and_hemispheres(tmp_path):
    bids, out = _write_tree(tmp_path, n_ms=0, n_hc=5, sessions=("baseline",), missing=(), drop_label=None,
                            chimap=False)
    res = run_group(bids, out, hemispheres=True, structures=("caudate",), figures=False)
    text = "\n".join(res["warnings"])
    assert "only one session" in text and "only one group" in text
    assert "LMM skipped" in text
    desc = pd.read_csv(res["descriptives"], sep="\t")
    assert set(desc["structure"]) == {"caudate_left", "caudate_right"}
    assert pd.read_csv(res["anova"], sep="\t").empty
    html = res["report"].read_text()
    assert "No Chimap sidecar" in html and "only one session" in html


def test_run_group_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the participant level first"):
        run_group(tmp_path, tmp_path)
    bids, out = _write_tree(tmp_path)
    with pytest.raises(ValueError, match="group column 'diagnosis'"):
        run_group(bids, out, group_column="diagnosis", figures=False)
    with pytest.raises(ValueError, match="covariate"):
        run_group(bids, out, covariates=("bmi",), figures=False)


def test_session_selection_and_order(tmp_path):
    bids, out = _write_tree(tmp_path, sessions=("pre", "post"), missing=(), drop_label=None, chimap=False)
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
    bids, out = _write_tree(tmp_path, missing=(), chimap=False)
    for hemis in (False, True):
        res = run_group(bids, out, structures=("thalamus",), hemispheres=hemis, figures=False)
        text = "\n".join(res["warnings"])
        assert "sub-02 ses-baseline" in text and "missing from the ROI table" in text, hemis
        anova = pd.read_csv(res["anova"], sep="\t")
        row = anova[anova["structure"] == ("thalamus_left" if hemis else "thalamus")].iloc[0]
        assert row["n_excluded"] == 1
