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


def test_largest_component_and_fill_holes_on_the_box_equal_the_whole_image():
    """Both work on the mask's bounding box; the result is scipy's on the whole image, voxel
    for voxel: components of equal size (the tie goes to the first in raster order), holes,
    background pockets open to the box's side or the image's border, masks that touch the
    border."""
    from scipy import ndimage as ndi

    def whole_largest(m):
        lab, n = ndi.label(m)
        if n == 0:
            return m.copy()
        c = np.bincount(lab.ravel())
        c[0] = 0
        return lab == int(np.argmax(c))

    rng = np.random.default_rng(3)
    for trial in range(40):
        shape = (int(rng.integers(8, 20)), int(rng.integers(8, 20)), int(rng.integers(8, 20)))
        m = ndi.binary_opening(rng.random(shape) > 0.45)
        if trial % 3 == 0:  # a solid block with a hole and a pocket open towards the border
            m = np.zeros(shape, bool)
            m[2:7, 2:7, 1:] = True
            m[4, 4, 4] = False
            m[3:6, 3:6, -1] = False
        assert np.array_equal(masking.largest_component(m), whole_largest(m))
        assert np.array_equal(masking.fill_holes(m), ndi.binary_fill_holes(m))
    ties = np.zeros((9, 9, 9), bool)
    ties[1:3, 1:3, 1:3] = ties[5:7, 5:7, 5:7] = True  # two components of 8 voxels
    first = masking.largest_component(ties)
    assert first[1, 1, 1] and not first[5, 5, 5]
    pocket = np.zeros((9, 9, 9), bool)
    pocket[2:7, 2:7, 2:7] = True
    pocket[4, 4, 4:7] = False  # a tunnel from the centre to the box's side, open outside
    assert not masking.fill_holes(pocket)[4, 4, 4]
    pocket[4, 4, 6] = True  # closed at the box's side: now a hole
    assert masking.fill_holes(pocket)[4, 4, 4]
    assert not masking.fill_holes(np.zeros((4, 4, 4), bool)).any()
