"""Registration quality metrics (plain functions), the session verdict and the stats columns."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from qsmprep import registration_qc as qc
from qsmprep.roi import add_qc_columns


@pytest.fixture(scope="module")
def blobs():
    """A smooth 'brain' with internal structure and its brain mask (seeded)."""
    rng = np.random.default_rng(0)
    shape = (40, 44, 36)
    img = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0).astype(np.float32)
    zz, yy, xx = np.indices(shape)
    mask = ((xx - 18) ** 2 / 15**2 + (yy - 22) ** 2 / 18**2 + (zz - 20) ** 2 / 16**2) < 1
    img = np.where(mask, 1.0 + img, 0).astype(np.float32)
    return img, mask


def test_ncc_identical_shifted_and_constant(blobs):
    img, mask = blobs
    assert qc.masked_ncc(img, img, mask) == pytest.approx(1.0)
    assert qc.masked_ncc(img, 3 * img + 5, mask) == pytest.approx(1.0)  # affine intensity change
    shifted = np.roll(img, 6, axis=0)  # misregistered by 6 voxels
    assert qc.masked_ncc(img, shifted, mask) < 0.5
    assert np.isnan(qc.masked_ncc(img, np.ones_like(img), mask))  # constant: undefined
    assert np.isnan(qc.masked_ncc(img, img, np.zeros_like(mask)))  # empty mask
    with pytest.raises(ValueError):
        qc.masked_ncc(img, img[:-1], mask)


def test_gradient_correlation_ignores_contrast_polarity(blobs):
    """GRE vs T1w: inverted contrast keeps the edges, so gc stays high while ncc is -1."""
    img, mask = blobs
    inverted = np.where(mask, img.max() + 1 - img, 0)
    assert qc.masked_ncc(img, inverted, mask) == pytest.approx(-1.0)
    assert qc.gradient_correlation(img, inverted, mask, voxel_size=(1, 1, 1)) > 0.9
    moved = np.roll(inverted, 5, axis=1)
    assert qc.gradient_correlation(img, moved, mask, voxel_size=(1, 1, 1)) < 0.5


def test_mask_overlap():
    a = np.zeros((10, 10, 10), bool)
    a[2:6] = True
    b = np.zeros_like(a)
    b[4:8] = True
    assert qc.mask_overlap(a, b) == pytest.approx(0.5)
    assert qc.mask_overlap(a, a) == 1.0
    assert np.isnan(qc.mask_overlap(np.zeros_like(a), b))


def test_assess_flags_below_threshold_and_nan():
    th = {"x_ncc": 0.8, "y_gc": 0.3}
    assert qc.assess({"x_ncc": 0.95, "y_gc": 0.6}, th) == (0, [])
    flagged, reasons = qc.assess({"x_ncc": 0.5, "y_gc": 0.6, "z_other": -1.0}, th)
    assert flagged == 1 and len(reasons) == 1 and reasons[0].startswith("x_ncc=0.500 < 0.8")
    flagged, reasons = qc.assess({"x_ncc": float("nan")}, th)
    assert flagged == 1 and "n/a" in reasons[0]
    # every documented registration metric has a threshold
    for reg, metrics in qc.METRICS.items():
        for m in metrics:
            assert f"{reg}_{m}" in qc.THRESHOLDS


def test_session_verdict_and_columns():
    docs = [{"RegistrationQuality": {"Metrics": {"gre_to_t1w_gc": 0.1,
                                                 "gre_to_t1w_overlap": 0.97}}},
            {"RegistrationQuality": {"Metrics": {"t1w_to_template_ncc": 0.95}}},
            {"RegistrationQuality": {"Metrics": {"atlas_to_template_ncc": None}}}]
    v = qc.session_verdict(docs)
    assert v["Flagged"] == 1
    assert any("gre_to_t1w_gc=0.100" in r for r in v["Reasons"])
    assert any("atlas_to_template_ncc=n/a" in r for r in v["Reasons"])
    assert {f["severity"] for f in v["QualityFlags"]} == {"warning"}
    json.dumps(v)  # JSON-serialisable (None for NaN)
    df = pd.DataFrame({"index": [1, 2], "mean_ppb": [10.0, 20.0]})
    out = add_qc_columns(df, v["Metrics"], v["Flagged"], v["Reasons"])
    assert list(out.columns[-6:]) == ["qc_gre_to_t1w_gc", "qc_gre_to_t1w_overlap",
                                      "qc_t1w_to_template_ncc", "qc_atlas_to_template_ncc",
                                      "qc_flagged", "qc_reasons"]
    assert (out["qc_flagged"] == 1).all() and np.isnan(out["qc_atlas_to_template_ncc"]).all()
    good = add_qc_columns(df, {"gre_to_t1w_gc": 0.6}, 0, [])
    assert good["qc_reasons"].isna().all() and (good["qc_flagged"] == 0).all()
    cols = qc.column_dictionary(v["Metrics"])
    assert set(cols) == {f"qc_{k}" for k in v["Metrics"]} | {"qc_flagged", "qc_reasons"}
    assert "0.3" in cols["qc_gre_to_t1w_gc"]["Description"]  # threshold stated


@pytest.fixture(scope="module")
def sim_session(tmp_path_factory):
    """One small simulated session written as files: GRE echo-1 magnitude, T1w, truth masks."""
    import nibabel as nb

    from qsmprep.simulate import simulate_session

    d = simulate_session(1, 0, preset="small", seed=3)
    root = tmp_path_factory.mktemp("qcsim")
    files = {}
    for key, arr, aff, dt in (("mag", d.mag[..., 0], d.affine, np.float32),
                              ("gre_mask", d.brain_mask, d.affine, np.uint8),
                              ("t1w", d.t1w, d.t1w_affine, np.float32),
                              ("t1w_mask", d.t1w_brain_mask, d.t1w_affine, np.uint8)):
        files[key] = str(root / f"{key}.nii.gz")
        nb.Nifti1Image(np.asarray(arr, dt), aff).to_filename(files[key])
    return files, root


def _broken(src, dest):
    """Issue 11's wrong T1w header: first two voxel axes swapped and an 80 mm shift."""
    import nibabel as nb

    img = nb.load(src)
    aff = img.affine.copy()
    aff[:, [0, 1]] = img.affine[:, [1, 0]]
    aff[0, 3] += 80.0
    nb.Nifti1Image(np.asarray(img.dataobj), aff, img.header).to_filename(dest)
    return str(dest)


def test_gre_to_t1w_quality_good_vs_broken_header(sim_session, tmp_path, caplog):
    """A good GRE -> T1w registration passes; a T1w with a wrong affine is flagged and logged."""
    pytest.importorskip("ants")
    from qsmprep import registration as R

    files, root = sim_session
    out = {}
    for case in ("good", "broken"):
        t1w, t1w_mask = files["t1w"], files["t1w_mask"]
        if case == "broken":
            t1w = _broken(t1w, tmp_path / "t1w_broken.nii.gz")
            t1w_mask = _broken(t1w_mask, tmp_path / "t1w_mask_broken.nii.gz")
        qc_file = tmp_path / f"{case}.json"
        with caplog.at_level("WARNING", logger="qsmprep.registration"):
            R.register_rigid(t1w, files["mag"], out_dir=tmp_path / case, src="MEGRE",
                             dst="T1w", fixed_mask=t1w_mask, moving_mask=files["gre_mask"],
                             qc_name="gre_to_t1w", qc_file=qc_file, num_threads=1)
        out[case] = json.loads(qc_file.read_text())["RegistrationQuality"]
    print({c: out[c]["Metrics"] for c in out})
    assert out["good"]["Flagged"] == 0, out["good"]
    assert out["good"]["Metrics"]["gre_to_t1w_gc"] > qc.THRESHOLDS["gre_to_t1w_gc"] + 0.2
    assert out["broken"]["Flagged"] == 1, out["broken"]
    assert any("gre_to_t1w_gc" in r for r in out["broken"]["Reasons"])
    assert "gre_to_t1w_gc" in caplog.text and "below its quality threshold" in caplog.text
