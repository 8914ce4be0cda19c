"""Phase range detection and rescaling (qsmprep.qsm.phase)."""

import numpy as np
import pytest

from qsmprep.qsm.phase import choose_phase_values, detect_and_rescale_phase, wrap_to_pi


@pytest.fixture
def true_phase():
    rng = np.random.default_rng(0)
    return rng.uniform(-np.pi, np.pi, size=(8, 9, 7, 2))


def test_radians_detected_and_unchanged(true_phase):
    out, info = detect_and_rescale_phase(true_phase)
    assert info["detected"] == "radians"
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, true_phase, atol=1e-6)
    assert out.min() >= -np.pi and out.max() < np.pi


def test_siemens_signed_integers(true_phase):
    raw = np.clip(np.round(true_phase / np.pi * 4096), -4096, 4095).astype(np.int16)
    out, info = detect_and_rescale_phase(raw)
    assert info["detected"] == "integer -4096..4095"
    np.testing.assert_allclose(out, raw * np.pi / 4096, atol=1e-6)
    assert np.max(np.abs(wrap_to_pi(out - true_phase))) < 2 * np.pi / 8192 + 1e-6


def test_unsigned_12bit_integers(true_phase):
    raw = np.clip(np.round((true_phase + np.pi) / (2 * np.pi) * 4096), 0, 4095).astype(np.uint16)
    out, info = detect_and_rescale_phase(raw.astype(np.float32))  # float storage of ints too
    assert info["detected"] == "integer 0..4095"
    assert np.max(np.abs(wrap_to_pi(out - true_phase))) < 2 * np.pi / 4096 + 1e-6
    assert out.min() >= -np.pi and out.max() < np.pi


def test_arbitrary_range_minmax(true_phase):
    true_phase = true_phase.copy()
    true_phase[0, 0, 0, 0], true_phase[0, 0, 0, 1] = -np.pi, np.pi  # full range stored
    raw = true_phase * 7.3 + 100.0  # float, not integer-like, not radians
    out, info = detect_and_rescale_phase(raw)
    assert info["detected"] == "minmax"
    assert np.max(np.abs(wrap_to_pi(out - true_phase))) < 1e-3


def test_units_rad_forces_wrap_only():
    raw = np.array([0.0, 3.5, -4.0, 1.0], dtype=np.float32)
    out, info = detect_and_rescale_phase(raw, units="rad")
    assert info["detected"] == "radians"
    np.testing.assert_allclose(out, wrap_to_pi(raw.astype(np.float64)), atol=1e-6)
    with pytest.raises(ValueError):
        detect_and_rescale_phase(raw, units="degrees")


def test_nans_set_to_zero_and_counted(true_phase):
    raw = true_phase.copy()
    raw[0, 0, 0, 0] = np.nan
    raw[1, 2, 3, 1] = np.inf
    out, info = detect_and_rescale_phase(raw)
    assert info["n_nonfinite"] == 2
    assert np.all(np.isfinite(out))
    assert out[0, 0, 0, 0] == 0 and out[1, 2, 3, 1] == 0
    assert info["detected"] == "radians"


def test_header_scaling_trap(true_phase):
    """ROMEO's files: scl_slope = 1/855 makes scaled phase +-0.0037 while raw is -pi..pi."""
    unscaled = true_phase.astype(np.float32)
    scaled = unscaled * (1.0 / 855.0)
    values, note = choose_phase_values(scaled, unscaled)
    assert values is unscaled
    assert "header scaling ignored" in note
    out, info = detect_and_rescale_phase(values)
    assert info["detected"] == "radians"
    # and with sane scaling the scaled values are kept
    values2, note2 = choose_phase_values(unscaled, unscaled)
    assert values2 is unscaled and "header-scaled" in note2
    # integer storage with a slope that maps onto radians: scaled version wins
    ints = np.round(true_phase / np.pi * 4096).clip(-4096, 4095)
    v3, _ = choose_phase_values(ints * np.pi / 4096, ints)
    assert np.abs(v3).max() <= np.pi + 1e-3


def test_wrap_to_pi_matches_plain_mod_bit_for_bit():
    """The fast path of ``wrap_to_pi`` (values already in range) gives exactly
    ``np.mod(x + pi, 2 pi) - pi``, dtype, NaN, infinities and signed zeros included."""
    from qsmprep.qsm.phase import wrap_to_pi

    rng = np.random.default_rng(3)
    special = [np.pi, -np.pi, 0.0, -0.0, 1e-300, -1e-30, np.nan, np.inf, -np.inf, 2 * np.pi,
               -2 * np.pi, np.nextafter(np.pi, 0.0), np.nextafter(-np.pi, -4.0)]
    big = rng.uniform(-2 * np.pi, 2 * np.pi, 6000)
    big[::7][: len(special)] = special  # special values in an array large enough to be compiled
    cases = [rng.uniform(-np.pi, np.pi, 5000), rng.uniform(-30, 30, 5000), np.array(special), big,
             rng.uniform(-7, 7, (20, 30, 40)).transpose(2, 0, 1), rng.uniform(-7, 7, (40, 400))[:, ::3],
             np.asfortranarray(rng.uniform(-7, 7, (20, 30, 40)))]
    cases += [c.astype(np.float32) for c in cases] + [np.arange(-9, 9), np.float64(4.0)]
    with np.errstate(invalid="ignore"):
        for x in cases:
            ref = np.mod(np.asarray(x) + np.pi, 2.0 * np.pi) - np.pi
            got = wrap_to_pi(x)
            assert got.dtype == ref.dtype and np.shape(got) == np.shape(ref)
            assert np.asarray(got).tobytes() == np.asarray(ref).tobytes()


def _rescale_reference(values, scale, offset, radians):
    """The numpy steps of detect_and_rescale_phase (the compiled pass must equal them)."""
    out = values.astype(np.float64, copy=True)
    out[~np.isfinite(out)] = 0.0
    if not radians:
        out *= scale
        out += offset
    out = (np.mod(out + np.pi, 2.0 * np.pi) - np.pi).astype(np.float32)
    out[~np.isfinite(values)] = 0.0
    return out


def test_compiled_phase_rescaling_matches_the_numpy_steps_bit_for_bit():
    """LoadGRE's phase (integer ranges, min/max, radians; int16, float32, float64; C and
    Fortran order; non-finite values) is the same bit for bit as the numpy steps it replaced,
    and values outside the compiled pass's exact range fall back to those steps."""
    rng = np.random.default_rng(7)
    shape = (20, 24, 18)
    ints = rng.integers(-4096, 4096, shape)
    floats = rng.uniform(-np.pi, np.pi, shape)
    floats.flat[::97] = np.nan
    floats.flat[5::997] = np.inf
    floats.flat[7::991] = -0.0
    cases = [ints.astype(np.int16), ints.astype(np.float32),
             np.asfortranarray(ints.astype(np.float32)),
             floats, floats.astype(np.float32), np.asfortranarray(floats.astype(np.float32)),
             rng.uniform(-3.0, 17.0, shape).astype(np.float32),   # min/max rescaling
             ints.astype(">i2"), floats.astype(np.float16),         # numpy steps: same result
             np.where(rng.random(shape) < 0.01, 50.0, floats)]     # radians units, far outside
    with np.errstate(invalid="ignore"):
        for i, raw in enumerate(cases):
            units = "rad" if i == len(cases) - 1 else None
            got, info = detect_and_rescale_phase(raw, units=units)
            ref = _rescale_reference(np.asarray(raw), info["scale"], info["offset"],
                                     info["detected"] == "radians")
            assert got.dtype == np.float32 and got.shape == raw.shape
            assert got.tobytes() == ref.tobytes(), (i, info["detected"])
