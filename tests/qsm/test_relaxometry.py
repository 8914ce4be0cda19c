"""R2*/T2* from multi-echo magnitude: exact on noise-free decays, unbiased enough with noise."""

from __future__ import annotations

import numpy as np
import pytest

from qsmprep.qsm import relaxometry

TES = np.array([4.5, 10.5, 16.5, 22.5, 28.5]) * 1e-3


def _decay(r2s, s0=1.0, tes=TES):
    r2s = np.asarray(r2s, dtype=np.float64)
    return s0 * np.exp(-r2s[..., None] * tes)


@pytest.mark.parametrize("method", sorted(relaxometry.METHODS))
def test_exact_on_noise_free_decay(method):
    truth = np.linspace(2.0, 120.0, 4 * 5 * 6).reshape(4, 5, 6)
    mag = _decay(truth, s0=np.linspace(0.5, 2.0, truth.size).reshape(truth.shape)[..., None])
    mask = np.ones(truth.shape, bool)
    mask[0, 0, 0] = False
    r2, t2 = relaxometry.r2star_t2star(mag, TES, mask, method=method)
    assert r2.dtype == np.float32 and t2.dtype == np.float32
    assert r2[0, 0, 0] == 0 and t2[0, 0, 0] == 0
    tol = 1e-3 if method == "loglinear" else 0.02  # ARLO's Simpson rule: ~0.01 1/s at 120 1/s
    assert np.allclose(r2[mask], truth[mask], rtol=tol, atol=1e-3)
    assert np.allclose(t2[mask], 1.0 / truth[mask], rtol=tol)


@pytest.mark.parametrize("method", sorted(relaxometry.METHODS))
def test_noise_bias_below_one_per_second(method):
    """Brain-like SNR (50 at echo 1): the mean over 20000 voxels is within 1 1/s of the truth
    for WM-like (20 1/s) and pallidum-like (36 1/s) decays; a wrong TE scale would miss by far."""
    rng = np.random.default_rng(3)
    for r2 in (20.0, 36.0):
        clean = _decay(np.full((20, 20, 50), r2))
        sigma = 1.0 / 50.0
        noisy = np.abs(clean + sigma * (rng.standard_normal(clean.shape)
                                        + 1j * rng.standard_normal(clean.shape)))
        est = relaxometry.METHODS[method](noisy, TES, np.ones(clean.shape[:3], bool))
        assert abs(float(est.mean()) - r2) < 1.0, (method, r2, float(est.mean()))


def test_bad_inputs():
    mag = _decay(np.full((3, 3, 3), 20.0))
    mask = np.ones((3, 3, 3), bool)
    with pytest.raises(ValueError, match="at least 2 echoes"):
        relaxometry.r2star_loglinear(mag[..., :1], TES[:1], mask)
    with pytest.raises(ValueError, match="echo times"):
        relaxometry.r2star_loglinear(mag, TES[:4], mask)
    with pytest.raises(ValueError, match="equally spaced"):
        relaxometry.r2star_arlo(mag, TES * np.array([1, 1, 1, 1, 1.2]), mask)
    with pytest.raises(ValueError, match="Unknown R2"):
        relaxometry.r2star_t2star(mag, TES, mask, method="nope")
