"""Spatial and temporal unwrapping (qsmprep.qsm.unwrap)."""

import numpy as np
import pytest

from tests._qsm_helpers import smooth_phase
from qsmprep.qsm import unwrap
from qsmprep.qsm.phase import wrap_to_pi

VS = (2.0, 2.0, 2.0)


@pytest.fixture(scope="module")
def wrapped_case():
    true, mask = smooth_phase(amplitude=8 * np.pi)
    assert np.ptp(true[mask]) > 4 * np.pi
    return true, mask, wrap_to_pi(true).astype(np.float32)


def _err_up_to_2pi_n(u, true, mask):
    d = (u - true)[mask]
    k = np.round(np.median(d) / (2 * np.pi))
    return d - 2 * np.pi * k


@pytest.mark.parametrize("method", ["romeo", "skimage"])
def test_exact_unwrapping_on_masked_region(wrapped_case, method):
    true, mask, w = wrapped_case
    u = unwrap.METHODS[method](w, VS, mask=mask)
    err = _err_up_to_2pi_n(u, true, mask)
    # exact: only float32 rounding remains, no 2 pi errors anywhere in the mask
    assert np.max(np.abs(err)) < 1e-4
    assert np.all(u[~mask] == 0)
    # congruent to the data modulo 2 pi
    assert np.max(np.abs(wrap_to_pi(u[mask] - w[mask]))) < 1e-4


def test_romeo_with_noise_and_magnitude(wrapped_case):
    true, mask, _ = wrapped_case
    rng = np.random.default_rng(1)
    noisy = true + 0.3 * rng.standard_normal(true.shape)
    mag = np.where(mask, 1.0, 0.05).astype(np.float32)
    u = unwrap.unwrap_romeo(wrap_to_pi(noisy), VS, mask=mask, mag=mag)
    err = _err_up_to_2pi_n(u, noisy, mask)
    assert np.mean(np.abs(err) > 1.0) < 1e-3  # essentially no 2 pi errors despite noise


def test_romeo_disconnected_regions_get_seeds(wrapped_case):
    true, mask, w = wrapped_case
    two = mask.copy()
    two[:, 24:27, :] = False  # split into two halves
    u, info = unwrap.unwrap_romeo(w, VS, mask=two, return_info=True)
    assert info["n_seeds"] == 2
    for half in (two & (np.arange(two.shape[1])[None, :, None] < 24),
                 two & (np.arange(two.shape[1])[None, :, None] >= 27)):
        assert np.max(np.abs(_err_up_to_2pi_n(u, true, half))) < 1e-4


def test_laplacian_is_approximate(wrapped_case):
    """Laplacian unwrapping is smooth but not exact: tolerance 0.15 rad RMS, 1 rad max (< pi)."""
    true, mask, w = wrapped_case
    u = unwrap.unwrap_laplacian(w, VS, mask=mask)
    d = (u - true)[mask]
    d -= np.median(d)
    print(f"laplacian: rms {np.sqrt(np.mean(d**2)):.3f} rad, max {np.abs(d).max():.3f} rad")
    assert np.sqrt(np.mean(d**2)) < 0.15
    assert np.abs(d).max() < 1.0
    # ... and clearly not congruent to the data (it is not an exact method)
    assert np.max(np.abs(wrap_to_pi(u[mask] - w[mask]))) > 1e-3


def test_temporal_unwrap_follows_te_scaling(wrapped_case):
    true, mask, _ = wrapped_case
    tes = np.array([0.004, 0.008, 0.012, 0.016])
    phases = np.stack([wrap_to_pi(true * te / tes[0]) for te in tes], axis=-1)
    first = unwrap.unwrap_romeo(phases[..., 0], VS, mask=mask)
    out = unwrap.temporal_unwrap(phases, tes, first, mask=mask)
    for e, te in enumerate(tes):
        err = _err_up_to_2pi_n(out[..., e], true * te / tes[0], mask)
        assert np.max(np.abs(err)) < 1e-3
    # 4-D romeo = spatial first echo + temporal
    out4 = unwrap.unwrap_romeo(phases, VS, mask=mask, tes=tes)
    np.testing.assert_allclose(out4, out, atol=1e-5)


def test_temporal_unwrap_with_offset(wrapped_case):
    true, mask, _ = wrapped_case
    tes = np.array([0.005, 0.010, 0.015])
    offset = np.full(true.shape, 2.0)
    field_phase = true / 3.0  # phase at TE1 due to the field
    data = np.stack([wrap_to_pi(offset + field_phase * te / tes[0]) for te in tes], axis=-1)
    ref = unwrap.unwrap_romeo(data[..., 0], VS, mask=mask)
    out = unwrap.temporal_unwrap(data, tes, ref, offset=offset, mask=mask)
    k = np.round(np.median((ref - (offset + field_phase))[mask]) / (2 * np.pi))
    for e, te in enumerate(tes):
        expect = offset + field_phase * te / tes[0] + 2 * np.pi * k
        # a global 2 pi k on the reference echo scales with TE, the rest must be exact
        assert np.max(np.abs((out[..., e] - expect)[mask] - 2 * np.pi * k * (te / tes[0] - 1))) < 1e-3


def test_romeo_edge_weights_range(wrapped_case):
    _, mask, w = wrapped_case
    wts = unwrap.romeo_edge_weights(w, mask)
    assert wts.dtype == np.uint8 and wts.shape == (3,) + w.shape
    assert wts[0, -1].max() == 0 and wts[1, :, -1].max() == 0 and wts[2, :, :, -1].max() == 0
    assert wts[:, ~mask].max() == 0
    assert wts.max() <= 255 and wts[:, mask].max() > 200


def test_compiled_edge_weights_match_the_numpy_steps_bit_for_bit():
    """The compiled ROMEO edge weights equal the numpy steps byte for byte: C and Fortran
    order, with and without magnitude and second echo, partial masks, zero magnitude, ties,
    phase at +-pi; a NaN magnitude or an out-of-range phase falls back to the numpy steps."""
    rng = np.random.default_rng(11)
    shape = (23, 19, 17)
    phi = rng.uniform(-np.pi, np.pi, shape).astype(np.float32)
    phi.flat[::53] = np.float32(-np.pi)
    phi.flat[1::61] = np.nextafter(np.float32(np.pi), np.float32(0))
    p2 = wrap_to_pi(2.2 * phi + rng.normal(0, 0.3, shape)).astype(np.float32)
    mag = rng.uniform(0, 2, shape).astype(np.float32)
    mag.flat[::7] = 0.0
    mag.flat[3::11] = mag.flat[4::11][: mag.flat[3::11].size]  # ties between neighbours
    mask = rng.random(shape) < 0.8
    bad_mag = mag.copy()
    bad_mag.flat[100] = np.nan
    wide = (phi * 2.5).astype(np.float32)  # differences beyond the exactly wrapped range
    for order in ("C", "F"):
        a = lambda x: np.asarray(x, order=order)  # noqa: E731
        for m, p, tr in ((a(mag), a(p2), 0.45), (None, a(p2), 0.45), (a(mag), None, None),
                         (None, None, None), (a(bad_mag), a(p2), 0.45), (a(mag), a(wide), 0.45)):
            for ph in (a(phi), a(wide)):
                got = unwrap.romeo_edge_weights(ph, a(mask), m, p, tr)
                m_max = 1.0
                if m is not None:  # as romeo_edge_weights: NaN (bad_mag) or 0 -> 1
                    m_max = float(np.percentile(m[mask], 99.9))
                    m_max = m_max if m_max > 0 else 1.0
                ref = unwrap._edge_weights_numpy(ph, mask, m, p, tr, m_max, 255)
                assert got.dtype == np.uint8 and got.shape == (3,) + shape
                assert got.flags.c_contiguous
                assert got.tobytes() == ref.tobytes(), (order, m is None, p is None)
    # the compiled pass itself declines NaN magnitude and out-of-range differences
    assert unwrap._edge_weights_compiled(phi, mask, bad_mag, p2, 0.45, 1.0, 255) is None
    assert unwrap._edge_weights_compiled(phi, mask, None, None, None, 1.0, 255) is not None
