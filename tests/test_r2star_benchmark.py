"""The NLLS comparator and the per-label error of benchmarks/r2star_independent.py."""

from __future__ import annotations

import numpy as np

from qsmprep.qsm import relaxometry
from tests._paths import load_script

B = load_script("benchmarks/r2star_independent.py")
TES = np.array([4.5, 10.5, 16.5, 22.5, 28.5]) * 1e-3


def test_nlls_exact_on_noise_free_decay():
    truth = np.linspace(2.0, 120.0, 60).reshape(3, 4, 5)
    mag = np.linspace(0.5, 2.0, truth.size).reshape(truth.shape)[..., None] * np.exp(
        -truth[..., None] * TES)
    mask = np.ones(truth.shape, bool)
    mask[0, 0, 0] = False
    r2 = B.r2star_nlls(mag, TES, mask)
    assert r2.dtype == np.float32 and r2[0, 0, 0] == 0
    assert np.allclose(r2[mask], truth[mask], rtol=1e-4)


def test_nlls_with_noise_unbiased_enough_and_matches_fit_dispatch():
    """Seeded complex noise, SNR 50 at echo 1, pallidum-like 36 1/s: the mean over 8000 voxels is
    within 0.5 1/s of the truth; ``fit`` dispatches to it and to the registered methods."""
    rng = np.random.default_rng(7)
    clean = np.exp(-36.0 * TES) * np.ones((20, 20, 20, 1))
    noisy = np.abs(clean + 0.02 * (rng.standard_normal(clean.shape)
                                   + 1j * rng.standard_normal(clean.shape)))
    mask = np.ones(clean.shape[:3], bool)
    est = B.fit("nlls", noisy, TES, mask)
    assert abs(float(est.mean()) - 36.0) < 0.5
    assert np.array_equal(B.fit("loglinear", noisy, TES, mask),
                          relaxometry.r2star_loglinear(noisy, TES, mask))


def test_label_errors_signed_and_interior():
    labels = np.zeros((7, 7, 7), int)
    labels[1:6, 1:6, 1:6] = 1  # Left_caudate; its 1-voxel erosion is the 3 x 3 x 3 core
    truth = np.full(labels.shape, 20.0)
    r2 = truth + 1.0
    r2[2:5, 2:5, 2:5] = 18.0
    out = B.label_errors(r2, truth, labels, np.ones(labels.shape, bool))
    e = out["Left_caudate"]
    assert e["n"] == 125 and e["true"] == 20.0
    assert np.isclose(e["err_int"], -2.0)
    assert np.isclose(e["err"], (98 * 1.0 - 27 * 2.0) / 125)
    assert out["Right_caudate"]["n"] == 0 and np.isnan(out["Right_caudate"]["err"])
