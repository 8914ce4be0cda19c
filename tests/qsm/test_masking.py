"""Brain masking on an analytic head with brain, CSF, skull, scalp (with a skull gap) and air."""

import numpy as np
import pytest

from tests._qsm_helpers import make_head
from qsmprep.qsm import masking


@pytest.fixture(scope="module")
def head():
    return make_head(seed=3)


@pytest.mark.parametrize("method", sorted(masking.METHODS))
def test_mask_excludes_scalp_keeps_brain(head, method):
    m = masking.METHODS[method](head["mag"], head["phase"], head["tes"], head["voxel_size"])
    assert m.dtype == bool and m.shape == head["brain"].shape
    brain_kept = m[head["brain"]].mean()
    scalp_in = m[head["scalp"]].mean()
    air_in = m[~head["head"]].mean()
    print(f"{method}: brain kept {brain_kept:.4f}, scalp in mask {scalp_in:.4f}, air {air_in:.5f}")
    assert brain_kept > 0.95
    assert scalp_in < 0.02
    assert air_in == 0.0
    assert m[head["skull"]].mean() < 0.02


def test_without_erosion_the_scalp_bridge_leaks(head):
    """The skull gap connects scalp and CSF: a plain threshold + largest component keeps scalp."""
    m = masking.mask_magnitude(head["mag"], head["voxel_size"], erode_radius_mm=0.0)
    assert m[head["scalp"]].mean() > 0.5


def test_phase_quality_map_separates_noise(head):
    m, q = masking.mask_phase_quality(head["mag"], head["phase"], head["tes"], head["voxel_size"],
                                      return_quality=True)
    assert 0.0 <= q.min() and q.max() <= 1.0
    assert np.median(q[head["brain"]]) > 0.8
    assert np.median(q[~head["head"]]) < 0.2
    # the phase-quality mask is the magnitude mask minus an outer shell (never larger)
    base = masking.mask_magnitude(head["mag"], head["voxel_size"])
    assert np.all(base[m])
    assert m.sum() < base.sum()


def test_mask_coverage(head):
    m = head["brain"]
    cov = masking.mask_coverage(m, head["voxel_size"])
    assert cov["n_voxels"] == int(m.sum())
    assert cov["volume_ml"] == pytest.approx(m.sum() * 8.0 / 1000.0)
    # a 36 mm radius sphere is ~195 mL
    assert cov["volume_ml"] == pytest.approx(4 / 3 * np.pi * 36.0**3 / 1000.0, rel=0.05)


def test_deterministic(head):
    a = masking.METHODS[masking.DEFAULT](head["mag"], head["phase"], head["tes"], head["voxel_size"])
    b = masking.METHODS[masking.DEFAULT](head["mag"], head["phase"], head["tes"], head["voxel_size"])
    assert np.array_equal(a, b)


def test_nonfinite_voxels_and_drop():
    """Any echo of any volume being NaN/Inf marks the voxel; dropping counts only mask voxels."""
    rng = np.random.default_rng(4)
    mag = rng.random((6, 5, 4, 3)).astype(np.float32)
    phase = rng.random((6, 5, 4, 3)).astype(np.float32)
    mag[1, 1, 1, 2] = np.inf
    phase[2, 3, 0, 0] = np.nan
    phase[4, 4, 3, 1] = -np.inf
    bad = masking.nonfinite_voxels(mag, phase)
    assert bad.shape == (6, 5, 4) and bad.sum() == 3
    assert bad[1, 1, 1] and bad[2, 3, 0] and bad[4, 4, 3]
    mask = np.zeros((6, 5, 4), bool)
    mask[:3] = True  # holds two of the three bad voxels
    out, n = masking.drop_voxels(mask, bad)
    assert n == 2 and out.sum() == mask.sum() - 2 and not (out & bad).any()
    with pytest.raises(ValueError):
        masking.drop_voxels(mask, bad[:-1])


@pytest.mark.parametrize("vs", [(1.0, 1.0, 1.0), (0.9375, 0.9375, 0.9375), (2.0, 2.0, 2.0),
                                (1.0, 1.0, 2.0), (1.1, 1.1, 1.1)])
def test_compiled_edt_matches_scipy_bit_for_bit(vs):
    """``masking._edt`` (numba exact squared distances on isotropic grids, scipy otherwise) equals
    ``scipy.ndimage.distance_transform_edt`` bit for bit on seeded random masks, including a mask
    with a single background voxel and lines without background."""
    from scipy import ndimage as ndi

    from qsmprep.qsm import masking

    rng = np.random.default_rng(7)
    for trial in range(5):
        shape = tuple(int(n) for n in rng.integers(4, 30, 3))
        m = ndi.gaussian_filter(rng.normal(size=shape), 1.5) > rng.uniform(-0.3, 0.1)
        if trial == 0:
            m[:] = True
            m[1, 2, 3] = False
        ref = ndi.distance_transform_edt(m, sampling=vs)
        got = masking._edt(m, vs)
        assert got.dtype == ref.dtype and got.tobytes() == ref.tobytes(), (vs, trial)
