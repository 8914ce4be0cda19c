"""Real 3-echo GRE crop from ROMEO.jl's test data (MIT; see shared/data/romeo-small-megre/README.md).

TEs 4/8/12 ms and B0 3 T are test parameters (not stored in the files). The header carries
scl_slope = 1/855: the scaled phase is +-0.0037 while the stored values are -pi..pi.
"""


import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

from qsmprep.qsm import echoes, masking, unwrap  # noqa: E402
from qsmprep.qsm.phase import choose_phase_values, detect_and_rescale_phase  # noqa: E402
from tests._paths import SHARED_DATA

DATA = SHARED_DATA / "romeo-small-megre"
SMALL = DATA / "small"
TES = np.array([0.004, 0.008, 0.012])

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not (SMALL / "Phase.nii").exists(),
                       reason=f"real data not found at {DATA} (shared/data next to the repo)"),
]


@pytest.fixture(scope="module")
def data():
    pimg = nib.load(SMALL / "Phase.nii")
    mimg = nib.load(SMALL / "Mag.nii")
    values, note = choose_phase_values(pimg.get_fdata(), np.asarray(pimg.dataobj.get_unscaled()))
    phase, info = detect_and_rescale_phase(values)
    mag = np.asarray(np.asarray(mimg.dataobj.get_unscaled()), dtype=np.float32)
    vs = tuple(float(v) for v in pimg.header.get_zooms()[:3])
    mask = masking.METHODS[masking.DEFAULT](mag, phase, TES, vs)
    return {"phase": phase, "info": info, "note": note, "mag": mag, "vs": vs, "mask": mask}


def test_phase_range_detected_on_raw_values(data):
    assert "header scaling ignored" in data["note"]
    assert data["info"]["detected"] == "radians"
    assert data["info"]["observed_max"] - data["info"]["observed_min"] > 6.0
    assert data["phase"].min() >= -np.pi and data["phase"].max() < np.pi


def test_phase_with_nans_is_cleaned():
    raw = np.asarray(nib.load(SMALL / "phase_with_nan.nii").dataobj.get_unscaled())
    phase, info = detect_and_rescale_phase(raw)
    assert info["n_nonfinite"] == int(np.count_nonzero(~np.isfinite(raw))) > 0
    assert np.all(np.isfinite(phase))
    assert phase.min() >= -np.pi and phase.max() < np.pi


def test_mask_on_crop(data):
    """The crop is all brain (no air): the magnitude mask must not split tissue classes."""
    cov_mag = masking.mask_magnitude(data["mag"], data["vs"]).mean()
    cov = data["mask"].mean()
    print(f"mask coverage: magnitude {cov_mag:.3f}, default ({masking.DEFAULT}) {cov:.3f}")
    assert cov_mag > 0.8
    assert 0.4 < cov <= cov_mag


@pytest.mark.parametrize("method", ["nonlinear", "linear"])
def test_field_fit_no_nans_and_smooth(data, method):
    mask = data["mask"]
    res = echoes.METHODS[method](data["phase"], data["mag"], TES, mask, data["vs"])
    f = res["field_hz"]
    assert np.all(np.isfinite(f)) and np.all(np.isfinite(res["noise_std_hz"]))
    assert 0 <= res["reliability"].min() and res["reliability"].max() <= 1
    # no alias jumps: neighbouring voxels differ by far less than half the alias period 1/dTE
    alias = 1.0 / (TES[1] - TES[0])
    worst = 0.0
    for axis in range(3):
        a = np.swapaxes(f, 0, axis)
        m = np.swapaxes(mask, 0, axis)
        both = m[1:] & m[:-1]
        worst = max(worst, float(np.abs(a[1:] - a[:-1])[both].max()))
    print(f"{method}: field 1/50/99 pct {np.percentile(f[mask], [1, 50, 99])} Hz, "
          f"max neighbour step {worst:.1f} Hz, median noise {np.median(res['noise_std_hz'][mask]):.2f} Hz")
    assert worst < alias / 2


def test_linear_and_nonlinear_agree(data):
    mask = data["mask"]
    a = echoes.fit_linear(data["phase"], data["mag"], TES, mask, data["vs"])["field_hz"][mask]
    b = echoes.fit_nonlinear(data["phase"], data["mag"], TES, mask, data["vs"])["field_hz"][mask]
    assert np.median(np.abs(a - b)) < 0.05
    assert np.mean(np.abs(a - b) > 1.0) < 1e-3


def test_unwrapped_echo1_has_no_2pi_jumps(data):
    mask = data["mask"]
    u = unwrap.unwrap_romeo(data["phase"][..., 0], data["vs"], mask=mask, mag=data["mag"][..., 0])
    for axis in range(3):
        a = np.swapaxes(u, 0, axis)
        m = np.swapaxes(mask, 0, axis)
        both = m[1:] & m[:-1]
        assert np.abs(a[1:] - a[:-1])[both].max() < np.pi
    # and it is exact (congruent to the data modulo 2 pi)
    d = np.angle(np.exp(1j * (u - data["phase"][..., 0])))[mask]
    assert np.abs(d).max() < 1e-4


def test_temporal_unwrapping_consistent_across_echoes(data):
    """Echo-to-echo increments of the temporally unwrapped phase agree with each other."""
    mask = data["mask"]
    res = echoes.fit_linear(data["phase"], data["mag"], TES, mask, data["vs"])
    u = res["unwrapped_phase"]
    inc1 = (u[..., 1] - u[..., 0])[mask]
    inc2 = (u[..., 2] - u[..., 1])[mask]
    # equal echo spacing: both increments are 2 pi f dTE; a temporal unwrapping error shows as 2 pi
    frac_bad = np.mean(np.abs(inc2 - inc1) > np.pi)
    print(f"echo increments disagree by > pi in {frac_bad:.2e} of the mask")
    assert frac_bad < 1e-3
    # ROMEO's own 4-D mode (spatial echo 1 + temporal scaling, offset not removed)
    u4 = unwrap.unwrap_romeo(data["phase"], data["vs"], mask=mask, mag=data["mag"], tes=TES)
    r = (u4[..., 2] - u4[..., 0] * TES[2] / TES[0])[mask]
    assert np.mean(np.abs(r - np.median(r)) > np.pi) < 1e-3
