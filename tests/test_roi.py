"""ROI statistics against numbers computed by hand on tiny arrays."""

import numpy as np
import pandas as pd
import pytest

from qsmprep import roi

TABLE = pd.DataFrame(
    {
        "index": [1, 2, 3],
        "name": ["Left_Caudate", "Right_Caudate", "Left_Putamen"],
        "structure": ["caudate", "caudate", "putamen"],
        "hemisphere": ["left", "right", "left"],
    }
)


def tiny():
    labels = np.zeros((4, 3, 2), dtype=np.int16)
    chi = np.zeros((4, 3, 2))
    labels[0, 0, 0] = 1
    labels[1, 0, 0] = 1
    labels[2, 0, 0] = 1
    chi[0, 0, 0], chi[1, 0, 0], chi[2, 0, 0] = 0.010, 0.020, 0.060  # ppm
    labels[0, 2, 1] = 2
    labels[1, 2, 1] = 2
    chi[0, 2, 1], chi[1, 2, 1] = -0.004, 0.002
    return chi, labels


def test_columns_and_hand_computed_values():
    chi, labels = tiny()
    df = roi.roi_statistics(chi, labels, TABLE, voxel_size=(1.0, 2.0, 0.5))
    assert list(df.columns) == roi.COLUMNS
    r1 = df.set_index("index").loc[1]
    assert r1["mean_ppb"] == pytest.approx(30.0)  # (10 + 20 + 60) / 3
    assert r1["median_ppb"] == pytest.approx(20.0)
    assert r1["sd_ppb"] == pytest.approx(np.sqrt(((10 - 30) ** 2 + (20 - 30) ** 2 + 30**2) / 2))
    assert r1["n_voxels"] == 3
    assert r1["volume_mm3"] == pytest.approx(3.0)  # 3 voxels x 1 mm^3
    r2 = df.set_index("index").loc[2]
    assert r2["mean_ppb"] == pytest.approx(-1.0)
    assert r2["structure"] == "caudate" and r2["hemisphere"] == "right"
    # empty label -> n/a statistics, zero voxels
    r3 = df.set_index("index").loc[3]
    assert r3["n_voxels"] == 0 and r3["volume_mm3"] == 0
    assert np.isnan(r3["mean_ppb"]) and np.isnan(r3["median_ppb"]) and np.isnan(r3["sd_ppb"])
    assert df["index"].tolist() == [1, 2, 3]


def test_mask_restriction_and_reliability():
    chi, labels = tiny()
    mask = np.ones(labels.shape, bool)
    mask[2, 0, 0] = False  # drop the 60 ppb voxel
    df = roi.roi_statistics(chi, labels, TABLE, (1, 1, 1), mask=mask).set_index("index")
    assert df.loc[1, "mean_ppb"] == pytest.approx(15.0)
    assert df.loc[1, "n_voxels"] == 2
    rel = np.ones(labels.shape)
    rel[0, 0, 0] = 0.2  # unreliable 10 ppb voxel
    df = roi.roi_statistics(
        chi, labels, TABLE, (1, 1, 1), reliability=rel, min_reliability=0.5
    ).set_index("index")
    assert df.loc[1, "mean_ppb"] == pytest.approx(40.0)  # (20 + 60) / 2
    # single voxel: SD undefined
    mask2 = np.zeros(labels.shape, bool)
    mask2[1, 2, 1] = True
    df = roi.roi_statistics(chi, labels, TABLE, (1, 1, 1), mask=mask2).set_index("index")
    assert df.loc[2, "n_voxels"] == 1 and np.isnan(df.loc[2, "sd_ppb"])
    assert df.loc[2, "mean_ppb"] == pytest.approx(2.0)
    with pytest.raises(ValueError):
        roi.roi_statistics(chi, labels, TABLE, (1, 1, 1), min_reliability=0.5)


def test_erosion():
    labels = np.zeros((7, 7, 7), dtype=np.int16)
    labels[1:6, 1:6, 1:6] = 1  # 5x5x5 cube -> 3x3x3 after one erosion
    labels[0, 0, 0] = 2  # single voxel next to nothing: vanishes
    chi = np.zeros(labels.shape)
    chi[labels == 1] = 0.1
    chi[2:5, 2:5, 2:5] = 0.05  # the core
    df = roi.roi_statistics(chi, labels, TABLE, (2, 2, 2), erode_vox=1).set_index("index")
    assert df.loc[1, "n_voxels"] == 27
    assert df.loc[1, "mean_ppb"] == pytest.approx(50.0)
    assert df.loc[1, "volume_mm3"] == pytest.approx(27 * 8)
    assert df.loc[2, "n_voxels"] == 0 and np.isnan(df.loc[2, "mean_ppb"])
    # erosion also separates touching labels
    lab = np.zeros((6, 3, 3), np.int16)
    lab[:3] = 1
    lab[3:] = 3
    er = roi.erode_labels(lab, 1)
    assert np.all(er[2] == 0) and np.all(er[3] == 0)
    assert er[1, 1, 1] == 1 and er[4, 1, 1] == 3
    df = roi.roi_statistics(np.zeros(labels.shape), labels, TABLE, (1, 1, 1), erode_vox=2)
    assert df.set_index("index").loc[1, "n_voxels"] == 1


def test_auto_erosion_depends_on_voxel_size():
    assert roi.auto_erosion((1.0, 1.0, 1.0)) == 1
    assert roi.auto_erosion((0.7, 0.7, 1.5)) == 1
    assert roi.auto_erosion((1.0, 1.0, 1.5000000000000002)) == 1  # oblique affine's norm
    assert roi.auto_erosion((1.0, 1.0, 1.51)) == 0
    assert roi.auto_erosion((1.0, 1.0, 2.0)) == 0
    assert roi.auto_erosion((3.0, 3.0, 3.0)) == 0
    assert roi.resolve_erosion("auto", (1, 1, 1)) == 1
    assert roi.resolve_erosion("auto", (3, 3, 3)) == 0
    assert roi.resolve_erosion(2, (3, 3, 3)) == 2
    for bad in ("two", -1):
        with pytest.raises(ValueError):
            roi.resolve_erosion(bad, (1, 1, 1))


def test_longitudinal_change_and_sidecar():
    chi, labels = tiny()
    base = roi.roi_statistics(chi, labels, TABLE, (1, 1, 1))
    foll = roi.roi_statistics(chi + 0.007, labels, TABLE, (1, 1, 1))
    ch = roi.longitudinal_change({"baseline": base, "followup": foll}, "baseline", "followup")
    assert list(ch.columns) == roi.CHANGE_COLUMNS
    c = ch.set_index("index")
    assert c.loc[1, "change_mean_ppb"] == pytest.approx(7.0)
    assert c.loc[2, "change_median_ppb"] == pytest.approx(7.0)
    assert np.isnan(c.loc[3, "change_mean_ppb"])
    assert c.loc[1, "baseline_session"] == "baseline"
    with pytest.raises(KeyError):
        roi.longitudinal_change({"baseline": base}, "baseline", "followup")
    sc = roi.roi_sidecar(reference="whole-brain mean", erode_vox=1, min_reliability=0.5)
    for col in roi.COLUMNS:
        assert col in sc
    assert sc["mean_ppb"]["Units"] == "ppb"
    assert sc["SusceptibilityReference"] == "whole-brain mean"
    sc2 = roi.roi_sidecar(change=True)
    assert all(col in sc2 for col in roi.CHANGE_COLUMNS)


def test_r2star_columns_use_the_same_voxels():
    """R2* columns (contract 3, 1/s) are computed over exactly the voxels of the chi statistics."""
    chi, labels = tiny()
    r2 = np.full(chi.shape, 99.0)
    r2[0, 0, 0], r2[1, 0, 0], r2[2, 0, 0] = 18.0, 22.0, 35.0
    r2[0, 2, 1], r2[1, 2, 1] = 20.0, 24.0
    mask = np.ones(chi.shape, bool)
    mask[2, 0, 0] = False  # drops the 35 1/s voxel from both chi and R2* statistics
    df = roi.roi_statistics(chi, labels, TABLE, (1.0, 1.0, 1.0), mask=mask, r2star=r2)
    assert list(df.columns) == roi.COLUMNS + roi.R2STAR_COLUMNS
    r1 = df.set_index("index").loc[1]
    assert r1["n_voxels"] == 2 and r1["mean_ppb"] == pytest.approx(15.0)
    assert r1["r2star_mean"] == pytest.approx(20.0)
    assert r1["r2star_median"] == pytest.approx(20.0)
    assert r1["r2star_sd"] == pytest.approx(np.sqrt(8.0))
    assert df.set_index("index").loc[2, "r2star_mean"] == pytest.approx(22.0)
    assert np.isnan(df.set_index("index").loc[3, "r2star_mean"])
    side = roi.roi_sidecar(r2star=True)
    assert all(side[c]["Units"] == "1/s" for c in roi.R2STAR_COLUMNS)
    assert "r2star_mean" not in roi.roi_sidecar()
    with pytest.raises(ValueError, match="r2star shape"):
        roi.roi_statistics(chi, labels, TABLE, (1, 1, 1), r2star=r2[:2])


@pytest.mark.parametrize("erode", [0, 1, 2])
def test_statistics_on_the_label_box_equal_the_whole_image(monkeypatch, erode):
    """roi_statistics works on the labels' bounding box; the table must be byte for byte that
    of the whole image (erosion, mask, reliability, R2*, a label touching the image border)."""
    rng = np.random.default_rng(5)
    shape = (40, 36, 30)
    labels = np.zeros(shape, np.int16)
    labels[10:18, 12:20, 8:14] = 1
    labels[18:24, 12:20, 8:14] = 2      # touches label 1
    labels[0:5, 30:36, 25:30] = 3       # touches three image borders
    chi = rng.normal(0.05, 0.02, shape)
    chi[12, 14, 9] = np.nan
    mask = np.ones(shape, bool)
    mask[20, 15, 10] = False
    rel = rng.uniform(0.5, 1.0, shape)
    r2 = rng.uniform(10, 40, shape)
    table = pd.DataFrame({"index": [1, 2, 3, 4], "name": ["a", "b", "c", "absent"]})
    kw = dict(mask=mask, erode_vox=erode, reliability=rel, min_reliability=0.6, r2star=r2)
    assert roi._label_box(labels, mask, rel, r2) is not None
    cropped = roi.roi_statistics(chi, labels, table, (1, 1, 1), **kw)
    monkeypatch.setattr(roi, "_label_box", lambda *a: None)
    whole = roi.roi_statistics(chi, labels, table, (1, 1, 1), **kw)
    assert cropped.to_csv() == whole.to_csv()
    assert int(cropped.loc[2, "n_voxels"]) > 0
