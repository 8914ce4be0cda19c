"""The head's orientation to B0 in the atlas frame (qsmprep.b0_orientation, registration.b0_orientation)."""

from __future__ import annotations

import json

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from qsmprep import b0_orientation as bo
from qsmprep import roi
from qsmprep.simulate.geometry import rotation_matrix


def _points(n=500, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-70, 70, (n, 3)) * [1.0, 1.2, 0.9]


@pytest.mark.parametrize("angles", [(0, 0, 0), (8, 0, 0), (-3, 2.5, 1), (20, -15, 40)])
def test_rigid_fit_recovers_a_known_rotation(angles):
    src = _points()
    r = rotation_matrix(angles)
    dst = src @ r.T + [3.0, -12.0, 40.0]
    rot, t, rms = bo.rigid_fit(src, dst)
    np.testing.assert_allclose(rot, r, atol=1e-10)
    np.testing.assert_allclose(t, [3.0, -12.0, 40.0], atol=1e-8)
    assert rms < 1e-8


def test_rigid_fit_keeps_the_rotation_of_a_scaled_and_warped_map():
    """Scaling (a head smaller than the atlas) and a smooth warp do not turn the fitted rotation."""
    src = _points(3000, seed=1)
    r = rotation_matrix([6, -4, 2])
    warp = 2.0 * np.sin(src / 25.0)  # a few mm, smooth, curl-free (no rotation of its own)
    dst = (src * [1.08, 0.95, 1.03] + warp) @ r.T + [1.0, 2.0, 3.0]
    rot, _, rms = bo.rigid_fit(src, dst)
    err = bo.angle_between_deg(rot @ [0, 0, 1], r @ [0, 0, 1])
    assert err < 0.3, err
    assert rms > 1.0  # the non-rigid part shows as residual


def test_rigid_fit_returns_a_proper_rotation_for_a_reflection():
    src = _points()
    dst = src * [-1.0, 1.0, 1.0]
    rot, _, _ = bo.rigid_fit(src, dst)
    assert np.linalg.det(rot) == pytest.approx(1.0)


def test_rigid_fit_rejects_bad_shapes():
    with pytest.raises(ValueError, match="point arrays"):
        bo.rigid_fit(np.zeros((5, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="point arrays"):
        bo.rigid_fit(np.zeros((2, 3)), np.zeros((2, 3)))


def test_angle_between_is_accurate_at_small_angles():
    for deg in (1e-4, 0.01, 0.5, 2.0, 90.0, 179.9):
        a = np.deg2rad(deg)
        assert bo.angle_between_deg([0, 0, 1], [0, np.sin(a), np.cos(a)]) == pytest.approx(deg, rel=1e-6)
    assert np.isnan(bo.angle_between_deg([0, 0, 0], [0, 0, 1]))
    assert np.isnan(bo.angle_between_deg([np.nan, 0, 1], [0, 0, 1]))


def test_session_orientation_is_b0_seen_from_the_head():
    """A head pitched by 8 degrees in the scanner sees B0 tilted by 8 degrees in its own frame."""
    head = _points()                       # atlas/head-frame points
    r = rotation_matrix([8, 0, 0])         # head -> scanner
    world = head @ r.T + [0, 10, -5]       # where the scanner sees them
    out = bo.session_orientation(world, head)
    np.testing.assert_allclose(out["B0Direction"], r.T @ [0, 0, 1], atol=1e-10)
    assert out["TiltDeg"] == pytest.approx(8.0)
    assert out["Points"] == len(head)


def test_mask_points_are_world_coordinates_and_ignore_the_slab():
    """Points are world coordinates: an oblique slab over the same head gives the same B0."""
    mask = np.zeros((20, 20, 20), bool)
    mask[5:15, 4:16, 6:14] = True
    straight = np.diag([2.0, 2.0, 2.0, 1.0])
    oblique = straight.copy()
    oblique[:3, :3] = rotation_matrix([15, 0, 0]) @ straight[:3, :3]
    for aff in (straight, oblique):
        pts = bo.mask_points(mask, aff)
        assert len(pts) == mask.sum()
        # the world points of a head at rest map to themselves in its frame: B0 stays on z
        out = bo.session_orientation(pts, pts)
        assert out["TiltDeg"] == pytest.approx(0.0, abs=1e-6)
    assert len(bo.mask_points(mask, straight, max_points=100)) <= 100
    with pytest.raises(ValueError, match="at least 4"):
        bo.mask_points(np.zeros((3, 3, 3)), straight)


def test_flag_rows_only_sensitive_structures_above_the_threshold():
    structures = ["caudate", "substantia_nigra", "red_nucleus", "thalamus"]
    assert bo.flag_rows(structures, bo.ANGLE_WARN_DEG).tolist() == [0, 0, 0, 0]
    assert bo.flag_rows(structures, bo.ANGLE_WARN_DEG + 0.1).tolist() == [0, 1, 1, 0]
    assert bo.flag_rows(structures, float("nan")).tolist() == [0, 0, 0, 0]


def _stats(b0=None, tilt=0.0):
    df = pd.DataFrame({"index": [1, 9, 11], "name": ["L_Caudate", "L_SN", "L_RN"],
                       "structure": ["caudate", "substantia_nigra", "red_nucleus"],
                       "hemisphere": ["left"] * 3, "mean_ppb": [50.0, 120.0, 90.0],
                       "median_ppb": [50.0, 120.0, 90.0], "sd_ppb": [5.0] * 3,
                       "n_voxels": [100, 20, 10], "volume_mm3": [100.0, 20.0, 10.0]})
    if b0 is not None:
        df = roi.add_b0_columns(df, {"B0Direction": b0, "TiltDeg": tilt})
    return df


def test_change_table_carries_the_angle_and_flags():
    a = np.deg2rad(5.0)
    stats = {"b": _stats([0, 0, 1]), "f": _stats([0, np.sin(a), np.cos(a)], 5.0)}
    out = roi.longitudinal_change(stats, "b", "f")
    assert list(out.columns) == roi.CHANGE_COLUMNS + roi.CHANGE_B0_COLUMNS
    assert out["b0_angle_deg"].tolist() == pytest.approx([5.0] * 3)
    assert out["orientation_flagged"].tolist() == [0, 1, 1]
    side = roi.roi_sidecar(change=True, b0=True)
    assert set(roi.CHANGE_COLUMNS + roi.CHANGE_B0_COLUMNS) <= set(side)
    assert side["b0_angle_deg"]["Units"] == "deg"

    small = {"b": _stats([0, 0, 1]), "f": _stats([0, np.sin(a / 5), np.cos(a / 5)])}
    assert roi.longitudinal_change(small, "b", "f")["orientation_flagged"].sum() == 0
    # a session without the columns (older outputs): no angle, no flag column
    old = {"b": _stats(), "f": _stats([0, 0, 1])}
    assert list(roi.longitudinal_change(old, "b", "f").columns) == roi.CHANGE_COLUMNS
    # a measured angle (the participant level's GRE -> GRE registration) wins over the vectors
    # and is used even when the tables have none
    measured = roi.longitudinal_change(stats, "b", "f", b0_angle_deg=1.5)
    assert measured["b0_angle_deg"].tolist() == [1.5] * 3
    assert measured["orientation_flagged"].sum() == 0
    assert roi.longitudinal_change(old, "b", "f", b0_angle_deg=3.0)[
        "orientation_flagged"].tolist() == [0, 1, 1]


def test_roi_sidecar_describes_the_b0_columns():
    df = _stats([0.1, 0.0, np.sqrt(0.99)], 5.7)
    side = roi.roi_sidecar(b0=True)
    assert all(c in side for c in df.columns)
    assert roi.session_b0(df) == pytest.approx([0.1, 0.0, np.sqrt(0.99)])
    assert roi.session_b0(_stats()) is None


def _write_transform(ants, tmp_path, angles, name):
    r_lps = rotation_matrix(angles)
    tx = ants.create_ants_transform(transform_type="AffineTransform", dimension=3, matrix=r_lps,
                                    translation=[4.0, -2.0, 7.0], center=[1.0, 2.0, 3.0])
    path = tmp_path / f"{name}.mat"
    ants.write_transform(tx, str(path))
    return path, r_lps


@pytest.mark.parametrize("invert", [False, True])
def test_b0_orientation_through_an_ants_transform(tmp_path, invert):
    """ANTs works in LPS and maps points opposite to images: the B0 that comes out must be the
    transform's rotation of the scanner z axis, in RAS, whichever way the file is used."""
    ants = pytest.importorskip("ants")
    from qsmprep import registration as reg

    path, r_lps = _write_transform(ants, tmp_path, [7, -3, 12], "xfm")
    mask = np.zeros((24, 24, 24), np.uint8)
    mask[4:20, 5:19, 6:18] = 1
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, :3] = rotation_matrix([15, 0, 0]) @ aff[:3, :3]  # an oblique slab
    aff[:3, 3] = [-20, -25, -10]
    nb.Nifti1Image(mask, aff).to_filename(tmp_path / "mask.nii.gz")
    out = reg.b0_orientation(tmp_path / "mask.nii.gz", [path], [invert],
                             out_file=tmp_path / "b0.json")
    doc = json.loads(open(out).read())
    flip = np.diag([-1.0, -1.0, 1.0])
    m = np.linalg.inv(r_lps) if invert else r_lps
    expected = flip @ m @ flip @ [0, 0, 1]
    np.testing.assert_allclose(doc["B0Direction"], expected, atol=1e-6)
    assert doc["FitResidualMm"] < 1e-3
    assert doc["Frame"] == "atlas"
    # point mapping agrees with image resampling: map_points and a direct evaluation
    pts = bo.mask_points(mask, aff, max_points=50)
    mapped = reg.map_points(pts, [path], [invert])
    lps = pts * [-1, -1, 1]
    c = np.array([1.0, 2.0, 3.0])
    fwd = (lps - c) @ r_lps.T + c + [4.0, -2.0, 7.0]
    if invert:
        fwd = (lps - c - [4.0, -2.0, 7.0]) @ np.linalg.inv(r_lps).T + c
    np.testing.assert_allclose(mapped, fwd * [-1, -1, 1], atol=1e-4)


def _long(angles_by_pid):
    rows = []
    for pid, angles in angles_by_pid.items():
        for k, deg in enumerate(angles):
            a = np.deg2rad(deg)
            for struct in ("caudate", "red_nucleus"):
                rows.append({"participant_id": pid, "session_id": f"ses-{k}", "structure": struct,
                             "b0_x": 0.0, "b0_y": np.sin(a), "b0_z": np.cos(a)})
    return pd.DataFrame(rows)


def test_largest_session_angles_and_the_group_warning():
    long = _long({"sub-01": [0.0, 1.0, 3.5], "sub-02": [0.0, 0.5], "sub-03": [2.0]})
    ang = bo.largest_session_angles(long)
    assert ang["participant_id"].tolist() == ["sub-01", "sub-02"]  # sub-03 has one session
    assert ang["b0_angle_deg"].tolist() == pytest.approx([3.5, 0.5])
    assert ang.iloc[0][["session_a", "session_b"]].tolist() == ["ses-0", "ses-2"]
    msg = bo.orientation_warning(long, ["caudate", "red_nucleus"])
    assert "1 of 2 participant(s)" in msg and "sub-01 3.5 deg" in msg and "red_nucleus" in msg
    assert "sub-02" not in msg
    # nothing sensitive analysed, or nobody above the threshold: no warning
    assert bo.orientation_warning(long, ["caudate"]) is None
    assert bo.orientation_warning(_long({"sub-01": [0.0, 1.5]}), ["red_nucleus"]) is None
    # tables without the columns (older outputs)
    assert bo.largest_session_angles(long.drop(columns="b0_x")).empty


def test_long_table_carries_the_b0_columns():
    from qsmprep.group.tables import dgm_long_sidecar
    from qsmprep.stats.cohort import stack_long_table

    tab = _stats([0.0, 0.1, np.sqrt(0.99)], 5.7)
    both = pd.concat([tab, _stats([0.0, 0.0, 1.0])], ignore_index=True)
    long = stack_long_table(both, ["01", "01"], ["a", "b"], [len(tab), len(tab)])
    assert set(roi.B0_COLUMNS) <= set(long.columns)
    assert long["b0_tilt_deg"].dtype.kind == "f"
    assert bo.largest_session_angles(long)["b0_angle_deg"].iloc[0] == pytest.approx(
        np.degrees(np.arcsin(0.1)), rel=1e-6)
    side = dgm_long_sidecar(long.columns)
    assert side["b0_tilt_deg"]["Units"] == "deg"


def test_group_warning_prefers_the_measured_angle():
    """A change table's measured angle replaces the atlas-frame estimate of its pair (and
    counts for a participant without vectors); the warning says which is which."""
    long = _long({"sub-01": [0.0, 1.5], "sub-02": [0.0, 3.0]})
    measured = pd.DataFrame({"participant_id": ["sub-01", "sub-02", "sub-03"],
                             "session_a": ["ses-0", "ses-0", "ses-0"],
                             "session_b": ["ses-1", "ses-1", "ses-1"],
                             "b0_angle_deg": [2.6, 1.0, 4.0]})
    ang = bo.largest_session_angles(long, measured=measured)
    assert ang["b0_angle_deg"].tolist() == pytest.approx([2.6, 1.0, 4.0])
    assert set(ang["source"]) == {"measured"}
    msg = bo.orientation_warning(long, ["red_nucleus"], measured=measured)
    assert "2 of 3 participant(s)" in msg and "sub-01 2.6 deg" in msg and "sub-02" not in msg
    assert "atlas-frame estimate" not in msg
    # without the measurement the atlas-frame estimate decides, and is labelled so
    msg = bo.orientation_warning(long, ["red_nucleus"])
    assert "sub-02 3.0 deg (ses-0 vs ses-1, atlas-frame estimate)" in msg


def test_read_change_angles(tmp_path):
    from qsmprep.derivatives.readers import read_change_angles

    anat = tmp_path / "sub-01" / "anat"
    anat.mkdir(parents=True)
    pd.DataFrame({"index": [1, 2], "baseline_session": ["baseline"] * 2,
                  "followup_session": ["followup"] * 2, "b0_angle_deg": [2.5, 2.5]}).to_csv(
        anat / "sub-01_atlas-DGM_desc-dgmchange_stats.tsv", sep="\t", index=False)
    (tmp_path / "sub-02" / "anat").mkdir(parents=True)  # no change table
    got = read_change_angles(tmp_path, ["sub-01", "sub-02"])
    assert got.to_dict("records") == [{"participant_id": "sub-01", "session_a": "ses-baseline",
                                       "session_b": "ses-followup", "b0_angle_deg": 2.5}]
    assert read_change_angles(tmp_path, ["sub-01"], atlas="Other").empty
