"""The thin Nipype interfaces of :mod:`qsmprep.interfaces.roi` (files in, files out)."""

import json

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from qsmprep import roi
from qsmprep.interfaces.roi import LongitudinalChange, ROIStats, read_stats_tsv, write_tsv
from tests.test_roi import TABLE


def test_roistats_interface_resolves_auto_erosion(tmp_path):
    """The Nipype wrapper erodes 1 voxel at 1 mm, none at 3 mm, and says so in the sidecar."""
    labels = np.zeros((12, 12, 12), np.int16)
    labels[2:10, 2:10, 2:10] = 1
    chi = np.where(labels == 1, 0.1, 0.0).astype(np.float32)
    table = tmp_path / "dseg.tsv"
    TABLE.to_csv(table, sep="\t", index=False)
    out = {}
    for vox in (1.0, 3.0):
        aff = np.diag([vox, vox, vox, 1.0])
        d = tmp_path / f"v{vox:g}"
        d.mkdir()
        nb.Nifti1Image(chi, aff).to_filename(d / "chi.nii.gz")
        nb.Nifti1Image(labels, aff).to_filename(d / "lab.nii.gz")
        res = ROIStats(in_file=str(d / "chi.nii.gz"), labels=str(d / "lab.nii.gz"),
                       label_table=str(table)).run(cwd=str(d))
        df = pd.read_csv(res.outputs.out_tsv, sep="\t", na_values="n/a").set_index("index")
        side = json.loads(open(res.outputs.out_json).read())
        out[vox] = (int(df.loc[1, "n_voxels"]), side["ErodeVoxels"], side["ErosionMode"])
    assert out[1.0] == (6**3, 1, "auto")
    assert out[3.0] == (8**3, 0, "auto")


def test_roistats_auto_erosion_is_the_same_for_an_oblique_session(tmp_path):
    """A 1 x 1 x 1.5 mm session tilted 8 degrees (the affine's column norms give 1.5 mm only up
    to rounding) gets the same one-voxel erosion as the axial one. Before the tolerance the
    oblique session got none: its small nuclei took in their partial-volume rim, 13 ppb off on
    the independent heads, and a longitudinal pair with different tilts changed erosion."""
    labels = np.zeros((12, 12, 12), np.int16)
    labels[2:10, 2:10, 2:10] = 1
    chi = np.where(labels == 1, 0.1, 0.0).astype(np.float32)
    table = tmp_path / "dseg.tsv"
    TABLE.to_csv(table, sep="\t", index=False)
    t = np.deg2rad(8.0)
    rot = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    out = {}
    for name, r in (("axial", np.eye(3)), ("oblique", rot)):
        aff = np.eye(4)
        aff[:3, :3] = r @ np.diag([1.0, 1.0, 1.5])
        d = tmp_path / name
        d.mkdir()
        nb.Nifti1Image(chi, aff).to_filename(d / "chi.nii.gz")
        nb.Nifti1Image(labels, aff).to_filename(d / "lab.nii.gz")
        res = ROIStats(in_file=str(d / "chi.nii.gz"), labels=str(d / "lab.nii.gz"),
                       label_table=str(table)).run(cwd=str(d))
        out[name] = json.loads(open(res.outputs.out_json).read())["ErodeVoxels"]
    assert out == {"axial": 1, "oblique": 1}


def test_longitudinal_change_interface_writes_the_change_contract(tmp_path):
    """Two session tables in, :data:`qsmprep.roi.CHANGE_COLUMNS` and the change sidecar out.
    Fails if the interface stops writing the contract's columns, mixes up baseline and
    follow-up, or writes a sidecar other than ``roi_sidecar(change=True)``."""
    files = []
    for ses, shift in (("a", 0.0), ("b", 5.0)):
        df = pd.DataFrame({**TABLE.to_dict("list"), "mean_ppb": [10.0 + shift, 20.0, np.nan],
                           "median_ppb": [11.0 + shift, 21.0, np.nan], "sd_ppb": 1.0,
                           "n_voxels": [9, 8, 0], "volume_mm3": [9.0, 8.0, 0.0]})[roi.COLUMNS]
        files.append(write_tsv(df, tmp_path / f"{ses}.tsv"))
    res = LongitudinalChange(in_files=files, session_ids=["a", "b"], baseline="a",
                             followup="b", atlas_name="Test").run(cwd=str(tmp_path))
    out = read_stats_tsv(res.outputs.out_tsv)
    assert list(out.columns) == roi.CHANGE_COLUMNS
    assert out["change_mean_ppb"].tolist()[:2] == [5.0, 0.0]
    assert np.isnan(out["change_mean_ppb"].iloc[2])
    assert (out["baseline_session"] == "a").all() and (out["followup_session"] == "b").all()
    side = json.loads(open(res.outputs.out_json).read())
    assert side == json.loads(json.dumps(roi.roi_sidecar(atlas_name="Test", change=True)))


def test_longitudinal_change_interface_flags_a_turned_head(tmp_path, caplog):
    """With the sessions' B0 directions 5 degrees apart, the change table carries the angle,
    flags the sensitive structures' rows, describes both columns, and the log names subject,
    sessions, angle and structures; 1 degree apart flags nothing and logs nothing."""
    import logging

    table = pd.DataFrame({"index": [1, 9], "name": ["Left_Caudate", "Left_SubstantiaNigra"],
                          "structure": ["caudate", "substantia_nigra"],
                          "hemisphere": ["left", "left"]})
    for deg, flagged in ((5.0, [0, 1]), (1.0, [0, 0])):
        d = tmp_path / f"deg{deg:g}"
        d.mkdir()
        files = []
        for ses, ang in (("a", 0.0), ("b", np.deg2rad(deg))):
            df = pd.DataFrame({**table.to_dict("list"), "mean_ppb": [10.0, 90.0],
                               "median_ppb": [10.0, 90.0], "sd_ppb": 1.0, "n_voxels": [9, 8],
                               "volume_mm3": [9.0, 8.0]})[roi.COLUMNS]
            df = roi.add_b0_columns(df, {"B0Direction": [0.0, np.sin(ang), np.cos(ang)],
                                         "TiltDeg": np.degrees(ang)})
            files.append(write_tsv(df, d / f"{ses}.tsv"))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="qsmprep.roi"):
            res = LongitudinalChange(in_files=files, session_ids=["a", "b"], baseline="a",
                                     followup="b", subject="07").run(cwd=str(d))
        out = read_stats_tsv(res.outputs.out_tsv)
        assert out["b0_angle_deg"].tolist() == pytest.approx([deg, deg], abs=0.01)
        assert out["orientation_flagged"].tolist() == flagged
        side = json.loads(open(res.outputs.out_json).read())
        assert "b0_angle_deg" in side and "orientation_flagged" in side
        msgs = [r.getMessage() for r in caplog.records if "orientation to B0" in r.getMessage()]
        if any(flagged):
            assert len(msgs) == 1
            assert all(s in msgs[0] for s in ("sub-07", "ses-a", "ses-b", "5.0 degrees",
                                              "Left_SubstantiaNigra"))
        else:
            assert msgs == []


def test_roistats_adds_the_b0_columns_from_the_orientation_file(tmp_path):
    labels = np.zeros((8, 8, 8), np.int16)
    labels[2:6, 2:6, 2:6] = 1
    aff = np.diag([3.0, 3.0, 3.0, 1.0])
    nb.Nifti1Image(np.zeros((8, 8, 8), np.float32), aff).to_filename(tmp_path / "chi.nii.gz")
    nb.Nifti1Image(labels, aff).to_filename(tmp_path / "lab.nii.gz")
    TABLE.to_csv(tmp_path / "dseg.tsv", sep="\t", index=False)
    doc = {"B0Direction": [0.0, 0.1, float(np.sqrt(0.99))], "TiltDeg": 5.74, "Frame": "atlas"}
    (tmp_path / "b0.json").write_text(json.dumps(doc))
    res = ROIStats(in_file=str(tmp_path / "chi.nii.gz"), labels=str(tmp_path / "lab.nii.gz"),
                   label_table=str(tmp_path / "dseg.tsv"),
                   orientation_file=str(tmp_path / "b0.json")).run(cwd=str(tmp_path))
    df = read_stats_tsv(res.outputs.out_tsv)
    assert list(df.columns[-4:]) == roi.B0_COLUMNS
    assert df["b0_y"].tolist() == pytest.approx([0.1] * len(df))
    side = json.loads(open(res.outputs.out_json).read())
    assert side["B0Orientation"] == doc and side["b0_tilt_deg"]["Units"] == "deg"


def test_longitudinal_change_interface_takes_the_measured_angle(tmp_path):
    """The B0Change JSON's angle is the change table's, with or without b0_* columns."""
    files = []
    for ses in ("a", "b"):
        df = pd.DataFrame({**TABLE.to_dict("list"), "mean_ppb": [10.0, 20.0, 30.0],
                           "median_ppb": [10.0, 20.0, 30.0], "sd_ppb": 1.0,
                           "n_voxels": [9, 8, 7], "volume_mm3": [9.0, 8.0, 7.0]})[roi.COLUMNS]
        files.append(write_tsv(df, tmp_path / f"{ses}.tsv"))
    (tmp_path / "angle.json").write_text(json.dumps({"B0AngleDeg": 3.25}))
    res = LongitudinalChange(in_files=files, session_ids=["a", "b"], baseline="a", followup="b",
                             angle_file=str(tmp_path / "angle.json")).run(cwd=str(tmp_path))
    out = read_stats_tsv(res.outputs.out_tsv)
    assert out["b0_angle_deg"].tolist() == [3.25] * 3
    assert out["orientation_flagged"].tolist() == [0, 0, 0]  # no sensitive structure here
    assert "b0_angle_deg" in json.loads(open(res.outputs.out_json).read())
