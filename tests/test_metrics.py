"""Accuracy metrics of benchmarks/metrics.py on hand-computable cases."""

import numpy as np
import pandas as pd
import pytest

from tests._paths import load_script

M = load_script("benchmarks/metrics.py")


@pytest.fixture
def blob():
    rng = np.random.default_rng(0)
    from scipy import ndimage

    x = ndimage.gaussian_filter(rng.standard_normal((20, 22, 18)), 2.0)
    mask = np.zeros(x.shape, bool)
    mask[3:-3, 3:-3, 3:-3] = True
    return x, mask


def test_nrmse_hand_values(blob):
    x, mask = blob
    assert M.nrmse(x, x, mask) == 0.0
    assert M.nrmse(1.1 * x, x, mask) == pytest.approx(10.0)
    t = np.zeros((4, 4, 4))
    t[1, 1, 1], t[2, 2, 2] = 3.0, 4.0   # ||t|| = 5
    e = t.copy()
    e[1, 1, 1] = 2.0                      # ||e - t|| = 1
    assert M.nrmse(e, t, np.ones(t.shape, bool)) == pytest.approx(20.0)
    # voxels outside the mask do not count
    e2 = t.copy()
    e2[0, 0, 0] = 100.0
    m = np.ones(t.shape, bool)
    m[0, 0, 0] = False
    assert M.nrmse(e2, t, m) == 0.0
    with pytest.raises(ValueError):
        M.nrmse(t, np.zeros_like(t), m)


def test_hfen_linear_and_offset_blind(blob):
    x, mask = blob
    assert M.hfen(x, x, mask) == 0.0
    # LoG is linear: scaling the estimate by 2 gives 100 % error
    assert M.hfen(2.0 * x, x, mask) == pytest.approx(100.0)
    # a constant offset has no high frequencies (whole-grid mask, reflecting borders)
    full = np.ones(x.shape, bool)
    # (up to the truncation of the LoG kernel at 4 sigma)
    assert M.hfen(x + 0.3, x, full) < 1.0
    # but NRMSE sees it
    assert M.nrmse(x + 0.3, x, full) > 10.0


def test_xsim_constant_images_hand_value():
    full = np.ones((12, 12, 12), bool)
    a, b = np.full(full.shape, 0.1), np.full(full.shape, 0.2)
    c1 = (0.01 * 1.0) ** 2
    expected = (2 * 0.1 * 0.2 + c1) / (0.1**2 + 0.2**2 + c1)  # contrast/structure terms = 1
    assert M.xsim(b, a, full) == pytest.approx(expected, rel=1e-6)
    assert M.xsim(a, a, full) == pytest.approx(1.0)


def test_ssim_identity_and_degradation(blob):
    x, mask = blob
    assert M.ssim(x, x, mask) == pytest.approx(1.0)
    assert M.xsim(x, x, mask) == pytest.approx(1.0)
    noisy = x + 0.2 * np.random.default_rng(2).standard_normal(x.shape) * x.std()
    assert M.ssim(noisy, x, mask) < 0.99
    assert M.xsim(noisy, x, mask) < 1.0


def test_reference_mean(blob):
    x, mask = blob
    r = M.reference_mean(x + 5.0, mask)
    assert r[mask].mean() == pytest.approx(0.0, abs=1e-12)
    assert np.all(r[~mask] == 0)
    np.testing.assert_allclose(r[mask], (x - x[mask].mean())[mask])


def _labels():
    lab = np.zeros((16, 16, 16), np.int16)
    lab[1:4, 1:4, 1:4] = 1      # 27 voxels, caudate left
    lab[5:9, 1:4, 1:4] = 2      # 36 voxels, caudate right
    lab[1:4, 5:9, 5:9] = 3      # putamen left
    table = pd.DataFrame({"index": [1, 2, 3], "name": ["Lc", "Rc", "Lp"],
                          "structure": ["caudate", "caudate", "putamen"],
                          "hemisphere": ["left", "right", "left"]})
    return lab, table


def test_dgm_errors_and_structure_means():
    lab, table = _labels()
    truth = np.where(lab == 1, 0.06, 0.0) + np.where(lab == 2, 0.07, 0.0) + np.where(lab == 3, 0.045, 0.0)
    est = truth.copy()
    est[lab == 3] += 0.005                      # +5 ppb in putamen
    mask = np.ones(lab.shape, bool)
    errs, tm, em = M.dgm_errors(est, truth, lab, table, (1.0, 1.0, 1.0), mask)
    assert errs["putamen"] == pytest.approx(5.0)
    assert errs["caudate"] == pytest.approx(0.0, abs=1e-9)
    # caudate pooled over hemispheres, voxel weighted: (27*60 + 36*70) / 63 ppb
    assert tm["caudate"] == pytest.approx((27 * 60 + 36 * 70) / 63)
    assert em["putamen"] == pytest.approx(50.0)


def test_linearity_hand_line():
    x = np.array([5.0, 45.0, 60.0, 90.0, 120.0, 130.0])
    s, i = M.linearity(x, 0.9 * x + 3.0)
    assert s == pytest.approx(0.9)
    assert i == pytest.approx(3.0)
    with pytest.raises(ValueError):
        M.linearity([1.0, 1.0], [2.0, 3.0])


def test_benchmark_evaluate_perfect_and_biased(monkeypatch):
    """The benchmark's evaluation gives zero error for the truth and sees a planted bias
    (fails if referencing, the per-structure error or the slope of evaluate() changes)."""
    A = load_script("benchmarks/accuracy.py")
    lab, table = _labels()
    table = pd.concat([table, pd.DataFrame({"index": [4], "name": ["Rp"], "structure": ["putamen"],
                                            "hemisphere": ["right"]})], ignore_index=True)
    lab[5:9, 5:9, 5:9] = 4
    chi = np.where(lab == 1, 0.06, 0.0) + np.where(lab == 2, 0.06, 0.0) + np.where(lab >= 3, 0.045, 0.0)
    chi = chi + 0.001 * np.random.default_rng(0).standard_normal(chi.shape)
    brain = np.ones(lab.shape, bool)
    d = {"chi": chi, "brain_mask": brain, "labels": lab, "label_table": table}
    monkeypatch.setattr(A, "STRUCTURES", ["caudate", "putamen"])
    monkeypatch.setattr(A, "ABBR", {"caudate": "CN", "putamen": "PU"})
    res = {"eroded_mask": brain, "chi_unreferenced": chi + 0.02, "voxel_size": (1.0, 1.0, 1.0)}
    out = A.evaluate(res, d)
    assert out["nrmse"] == pytest.approx(0.0, abs=1e-6)   # offset removed by referencing
    assert out["CN"] == pytest.approx(0.0, abs=1e-6)
    assert out["slope"] == pytest.approx(1.0)
    biased = chi.copy()
    biased[lab == 1] += 0.010                               # +10 ppb left caudate only
    out = A.evaluate({**res, "chi_unreferenced": biased}, d)
    shift = 0.010 * (lab == 1).sum() / lab.size * 1e3      # referencing moves everything
    assert out["CN"] == pytest.approx(((10 - shift) + shift) / 2, abs=1e-6)
    assert out["PU"] == pytest.approx(shift, abs=1e-6)
