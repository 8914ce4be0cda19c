"""Susceptibility referencing (qsmprep.qsm.reference)."""

import numpy as np
import pytest

from tests._qsm_helpers import ellipsoid_radius
from qsmprep.qsm import reference


@pytest.fixture(scope="module")
def phantom():
    shape, vs = (40, 44, 36), (2.0, 2.0, 2.0)
    r = ellipsoid_radius(shape, vs)
    mask = r < 30.0
    ventricle = ellipsoid_radius(shape, vs, (0, 4, 2), (10, 5, 6)) < 1.0
    rng = np.random.default_rng(2)
    chi = np.where(mask, 0.02 + 0.01 * rng.standard_normal(shape), 0.0)
    chi[ventricle] = -0.03 + 0.001 * rng.standard_normal(int(ventricle.sum()))
    return chi.astype(np.float32), mask, ventricle, vs


def test_mean_reference(phantom):
    chi, mask, _, _ = phantom
    out, info = reference.reference_mean(chi, mask)
    assert info["reference"] == "whole_brain_mean" and info["n_voxels"] == mask.sum()
    assert info["value_ppm"] == pytest.approx(chi[mask].mean(), abs=1e-6)
    assert abs(out[mask].mean()) < 1e-6
    assert np.all(out[~mask] == 0)


def test_csf_reference(phantom):
    chi, mask, vent, _ = phantom
    out, info = reference.reference_csf(chi, mask, vent)
    assert info["reference"] == "csf" and info["n_voxels"] == int((vent & mask).sum())
    assert info["value_ppm"] == pytest.approx(-0.03, abs=1e-3)
    assert abs(out[vent].mean()) < 1e-6
    with pytest.raises(ValueError):
        reference.reference_csf(chi, mask, None)
    with pytest.raises(ValueError):
        reference.reference_csf(chi, mask, np.zeros_like(mask))


def test_none_reference(phantom):
    chi, mask, _, _ = phantom
    out, info = reference.reference_none(chi, mask)
    assert info == {"reference": "none", "value_ppm": 0.0, "n_voxels": 0}
    np.testing.assert_array_equal(out[mask], chi[mask])


def test_registry():
    assert set(reference.METHODS) == {"mean", "csf", "none"}
    assert reference.DEFAULT in reference.METHODS


def test_r2star_and_csf_mask(phantom):
    _, mask, vent, vs = phantom
    tes = np.array([0.004, 0.010, 0.016, 0.022])
    r2s_true = np.where(vent, 3.0, 22.0)
    s0 = np.where(vent, 1.3, 1.0)
    mag = s0[..., None] * np.exp(-r2s_true[..., None] * tes)
    r2s = reference.r2star_loglinear(mag, tes, mask)
    np.testing.assert_allclose(r2s[mask], r2s_true[mask], rtol=1e-6)
    csf = reference.csf_mask_from_r2star(mag, tes, mask, vs, min_depth_mm=6.0)
    # the deep part of the ventricle is found, nothing else
    assert csf.sum() > 0.5 * vent.sum()
    assert not np.any(csf & ~vent)
