"""Acquisition names and noise seeds of benchmarks/independent.py (no qsm-forward needed)."""

from __future__ import annotations

import numpy as np
import pytest

from tests._paths import load_script

B = load_script("benchmarks/independent.py")


def test_retest_acquisitions_get_their_own_noise_seeds():
    """Every acquisition of a seed, re-tests included, draws its own noise: a re-test that
    reused the baseline's seed would show a change error of exactly zero."""
    names = ["axial", "followup", "oblique", "retest", "retest2", "retest3"]
    offsets = [B._noise_offset(a) for a in names]
    assert len(set(offsets)) == len(names)
    # the cached baseline, follow-up and oblique acquisitions keep their seeds
    assert offsets[:4] == [0, 1, 2, 3]


@pytest.mark.parametrize("bad", ["retest0", "retestx", "sagittal"])
def test_unknown_acquisition_is_refused(bad):
    with pytest.raises(ValueError, match="unknown acquisition"):
        B._noise_offset(bad)


def test_oblique_repeats_are_tilted_and_get_their_own_noise_seeds():
    """``oblique2``, ``oblique3``: the tilted head again with new noise, never the seed of
    another acquisition of the same or the next head seed (``1000 * seed + offset``)."""
    names = ["axial", "followup", "oblique", "retest", "retest2", "oblique2", "oblique3"]
    offsets = [B._noise_offset(a) for a in names]
    assert len(set(offsets)) == len(names)
    assert all(0 <= o < 1000 for o in offsets)
    assert [B.is_oblique(a) for a in names] == [False, False, True, False, False, True, True]


@pytest.mark.parametrize("bad", ["oblique1", "oblique0", "obliquex", "retest98"])
def test_unknown_oblique_repeat_is_refused(bad):
    with pytest.raises(ValueError, match="unknown acquisition"):
        B._noise_offset(bad)


# ----------------------------------------------------------------------------- noise-free
# independent_head.acquire with a stand-in for qsm-forward (numpy only): the diagnostics of
# benchmarks/independent_tilt.py relies on ``noise=False``.
HEAD = load_script("benchmarks/independent_head.py")


class _FakeQF:
    """The qsm-forward calls of ``acquire``, for a given 1 mm field (ppm)."""

    def __init__(self, field):
        self.field = field

    def generate_field(self, chi, brain, voxel_size, B0_dir):
        return self.field

    def generate_shimmed_field(self, field, mask, order):
        return None, field, None

    def generate_phase_offset(self, m0, mask, shape):
        return np.full(shape, 0.3)

    def generate_signal(self, field, B0, TR, TE, flip_angle, phase_offset, R1, R2star, M0):
        return M0 * np.exp(1j * (2 * np.pi * field * B0 * 42.58 * TE + phase_offset) - TE * R2star)

    @staticmethod
    def crop_kspace(v, dims):
        k = np.fft.fftshift(np.fft.fftn(v))
        lo = [(n - d) // 2 for n, d in zip(v.shape, dims)]
        k = k[tuple(slice(a, a + d) for a, d in zip(lo, dims))]
        return np.fft.ifftn(np.fft.ifftshift(k)) * np.prod(dims) / np.prod(v.shape)

    @staticmethod
    def add_noise(s, peak_snr, rng):
        sd = np.abs(s).max() / peak_snr
        return s + sd * (rng.standard_normal(s.shape) + 1j * rng.standard_normal(s.shape))

    @staticmethod
    def rotation_matrix_from_vectors(a, b):
        return np.eye(3)


def _head_and_qf(field_z):
    shape = (4, 4, 24)
    ones = np.ones(shape)
    head = HEAD.Head(tissue=np.zeros(shape, int), labels=np.zeros(shape, int),
                     brain=np.ones(shape, bool), chi=np.zeros(shape), m0=ones, r1=ones,
                     r2s=20 * ones)
    return head, _FakeQF(np.broadcast_to(field_z, shape).copy())


def _acquire(head, qf, **kw):
    return HEAD.acquire(head, qf=qf, slab_mm=(-100.0, 100.0), **kw)


def test_noise_free_acquisition_ignores_the_noise_seed():
    head, qf = _head_and_qf(np.linspace(0, 0.1, 24))
    a = _acquire(head, qf, noise=False, noise_seed=1)
    b = _acquire(head, qf, noise=False, noise_seed=2)
    np.testing.assert_array_equal(a["phase"], b["phase"])
    c = _acquire(head, qf, noise_seed=1)
    assert np.abs(c["mag"] - a["mag"]).max() > 0


def test_tilt_effect_pairs_each_tilted_case_with_its_axial_one():
    """benchmarks/independent_tilt.py: tilted minus axial reported value, per seed and case;
    a case without its axial row is left out."""
    import pandas as pd

    tilt = load_script("benchmarks/independent_tilt.py")
    rep = lambda *v: pd.Series(v, index=[11, 12])  # noqa: E731
    rows = [{"seed": 1, "model": "forward", "tilt": 0.0, "_rep": rep(10.0, 20.0)},
            {"seed": 1, "model": "forward", "tilt": 8.0, "_rep": rep(6.5, 21.0)},
            {"seed": 2, "model": "forward", "tilt": 8.0, "_rep": rep(1.0, 1.0)},
            {"seed": 1, "model": "local", "tilt": 0.0, "_rep": rep(3.0, 3.0)},
            {"seed": 1, "model": "local", "tilt": 8.0, "_rep": rep(3.0, 2.0)}]
    eff = tilt.tilt_effect(rows).set_index(["seed", "model"])
    assert list(eff.index) == [(1, "forward"), (1, "local")]
    assert eff.loc[(1, "forward"), 11] == pytest.approx(-3.5)
    assert eff.loc[(1, "forward"), 12] == pytest.approx(1.0)
    assert eff.loc[(1, "local"), 12] == pytest.approx(-1.0)
