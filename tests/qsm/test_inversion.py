"""Dipole inversion: noise-free forward-then-inverse on an ellipsoid phantom of known chi.

Structure means are compared after whole-brain-mean referencing (the field does not determine
the mean of chi). 3 mm voxels and a 48x56x44 matrix keep every solver well under a second.
B0 is oblique in voxel axes.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from qsmprep.qsm import _fftgrid, inversion, kernels

VOX = (3.0, 3.0, 3.0)
SHAPE = (48, 56, 44)
B0 = np.array([0.25, 0.3, 0.92]) / np.linalg.norm([0.25, 0.3, 0.92])
# name: centre (mm), semi-axes (mm), chi (ppm) -- deep gray matter-like values
STRUCTS = {
    "caudate": ((-15, 15, 8), (7, 14, 9), 0.06),
    "pallidum": ((20, 0, -2), (6, 10, 7), 0.18),
    "thalamus": ((-10, -18, 4), (9, 13, 9), 0.04),
    "nigra": ((12, -18, -18), (7, 9, 6), 0.15),
}
# stated tolerances (ppb) on the error of each structure mean; closed-form methods are biased
# (they shrink the cone of k-space), the iterative ones are not
TOL_PPB = {"tkd": 45.0, "tikhonov": 30.0, "cg": 10.0, "tv_admm": 10.0, "medi": 10.0, "rts": 15.0}
ITERATIVE = ("cg", "tv_admm", "medi", "rts")


def _coords():
    return np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * d for n, d in zip(SHAPE, VOX)],
                       indexing="ij")


def _ellipsoid(centre, semi):
    g = _coords()
    return sum(((gi - c) / s) ** 2 for gi, c, s in zip(g, centre, semi)) <= 1.0


def _phantom(b0):
    brain = _ellipsoid((0, 0, 0), (60, 72, 56))
    chi = np.where(brain, -0.02, 0.0)
    mag = np.where(brain, 0.9, 0.0)
    labels = {}
    for name, (c, s, x) in STRUCTS.items():
        lab = _ellipsoid(c, s)
        chi[lab] = x
        mag[lab] = 0.85 - 1.5 * x
        labels[name] = lab
    field = kernels.forward_field(chi, VOX, b0, pad=16)
    return chi, field, brain, mag, labels


@pytest.fixture(scope="module")
def phantom():
    return _phantom(B0)


def _means_ppb(chi, mask, labels):
    chi = np.asarray(chi, np.float64)
    ref = chi[mask].mean()
    return {k: 1e3 * (chi[v].mean() - ref) for k, v in labels.items()}


def _errors(chi_est, phantom):
    chi, _, brain, _, labels = phantom
    est, true = _means_ppb(chi_est, brain, labels), _means_ppb(chi, brain, labels)
    return {k: est[k] - true[k] for k in labels}


def _run(name, phantom, **kw):
    _, field, brain, mag, _ = phantom
    return inversion.METHODS[name](field, brain, VOX, B0, magnitude=mag, **kw)


def test_registry():
    assert set(TOL_PPB) == set(inversion.METHODS)
    assert inversion.DEFAULT in ITERATIVE


@pytest.mark.parametrize("name", sorted(TOL_PPB))
def test_recovers_structure_means(phantom, name):
    _, _, brain, _, _ = phantom
    chi = _run(name, phantom)
    assert chi.shape == SHAPE and chi.dtype == np.float32
    assert np.isfinite(chi).all()
    assert np.all(chi[~brain] == 0)
    err = _errors(chi, phantom)
    print(name, {k: round(v, 1) for k, v in err.items()})
    assert max(abs(e) for e in err.values()) < TOL_PPB[name]


@pytest.mark.parametrize("name", ["tkd", "tv_admm"])
def test_b0_direction_is_used(phantom, name):
    """Inverting with the true oblique B0 beats inverting with B0 assumed along z."""
    _, field, brain, mag, _ = phantom
    good = _errors(inversion.METHODS[name](field, brain, VOX, B0, magnitude=mag), phantom)
    bad = _errors(inversion.METHODS[name](field, brain, VOX, (0, 0, 1), magnitude=mag), phantom)
    good_mae = np.mean(np.abs(list(good.values())))
    bad_mae = np.mean(np.abs(list(bad.values())))
    assert good_mae < 0.6 * bad_mae


@pytest.mark.parametrize("name", ITERATIVE)
def test_zero_weights_ignore_corrupted_region(phantom, name):
    """A region with weight 0 and a corrupted field must not spoil the rest."""
    _, field, brain, mag, _ = phantom
    bad = _ellipsoid((30, 40, 20), (12, 12, 10)) & brain
    assert bad.sum() > 50
    corrupted = field.copy()
    corrupted[bad] += 0.2  # e.g. an unwrapping error: a smooth, large offset
    w = np.ones(SHAPE)
    w[bad] = 0.0
    chi_w = inversion.METHODS[name](corrupted, brain, VOX, B0, weights=w, magnitude=mag)
    assert np.isfinite(chi_w).all()
    err = _errors(chi_w, phantom)
    assert max(abs(e) for e in err.values()) < TOL_PPB[name] + 5.0
    # ... whereas without the weights the corruption spreads into the rest of the brain
    chi_u = inversion.METHODS[name](corrupted, brain, VOX, B0, magnitude=mag)
    good = brain & ~bad

    def rmse(x):
        d = (x - chi)[good]
        return np.sqrt(np.mean((d - d.mean()) ** 2))

    chi = phantom[0]
    print(name, "rmse weighted %.4f unweighted %.4f" % (rmse(chi_w), rmse(chi_u)))
    assert rmse(chi_w) < 0.7 * rmse(chi_u)


@pytest.mark.parametrize("name", ["tv_admm", "medi"])
def test_l1_data_fidelity_resists_inconsistent_voxels(phantom, name):
    """L1-QSM (data_fidelity='l1'): voxels whose field no susceptibility explains (random
    errors of 0.3 ppm, like a haemorrhage or a failed unwrap, unweighted) streak through the L2
    map; with the L1 data term the rest of the brain stays close to the truth, and on clean data
    both norms recover the structures."""
    chi, field, brain, mag, labels = phantom
    bad = _ellipsoid((-30, 30, 20), (6, 6, 6)) & brain
    assert bad.sum() >= 30
    corrupted = field.copy()
    corrupted[bad] += np.random.default_rng(0).standard_normal(int(bad.sum())) * 0.3
    good = brain & ~bad

    def nrmse(x):
        d = (x - x[brain].mean()) - (chi - chi[brain].mean())
        t = chi - chi[brain].mean()
        return float(np.linalg.norm(d[good]) / np.linalg.norm(t[good]))

    f = inversion.METHODS[name]
    l1 = dict(data_fidelity="l1", l1_threshold=1e-3)
    chi_l2 = f(corrupted, brain, VOX, B0, magnitude=mag)
    chi_l1 = f(corrupted, brain, VOX, B0, magnitude=mag, **l1)
    print(name, "NRMSE outside the bad voxels: l2 %.3f l1 %.3f" % (nrmse(chi_l2), nrmse(chi_l1)))
    assert nrmse(chi_l1) < 0.4
    assert nrmse(chi_l2) > 5 * nrmse(chi_l1)
    assert max(abs(e) for e in _errors(chi_l1, phantom).values()) < 3.0
    clean = _errors(f(field, brain, VOX, B0, magnitude=mag, **l1), phantom)
    assert max(abs(e) for e in clean.values()) < TOL_PPB[name]
    with pytest.raises(ValueError, match="data_fidelity"):
        f(field, brain, VOX, B0, magnitude=mag, data_fidelity="l3")
    with pytest.raises(ValueError, match="l1_threshold"):
        f(field, brain, VOX, B0, magnitude=mag, data_fidelity="l1", l1_threshold=0.0)


@pytest.mark.parametrize("name", ["cg", "tv_admm", "medi", "rts"])
def test_deterministic(phantom, name):
    assert np.array_equal(_run(name, phantom), _run(name, phantom))


def test_float32_matches_float64(phantom):
    e32 = _errors(_run("tv_admm", phantom), phantom)
    e64 = _errors(_run("tv_admm", phantom, dtype=np.float64), phantom)
    assert max(abs(e32[k] - e64[k]) for k in e32) < 0.5


def test_medi_uses_magnitude(phantom):
    _, field, brain, mag, _ = phantom
    with pytest.warns(UserWarning, match="no magnitude"):
        a = inversion.medi(field, brain, VOX, B0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b = inversion.medi(field, brain, VOX, B0, magnitude=mag)
    assert not np.array_equal(a, b)
    wg = inversion.magnitude_edge_weights(mag, brain, VOX)
    assert wg.shape == (3,) + SHAPE
    frac_edges = 1 - wg[:, brain].mean()
    assert 0.0 < frac_edges <= 0.31  # ties at zero gradient are not edges


@pytest.mark.parametrize("vox", [(1.0, 2.0, 3.0), (2.0, 2.0, 2.0)])
def test_gradient_adjoint(vox):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 10, 6)).astype(np.float64)
    y = rng.normal(size=(3, 8, 10, 6)).astype(np.float64)
    gx = _fftgrid.grad(x, vox, np.empty_like(y))
    gty = _fftgrid.grad_adj(y, vox, np.empty_like(x))
    assert np.isclose((gx * y).sum(), (x * gty).sum())
    # G^T G matches its k-space symbol
    gtg = _fftgrid.grad_adj(gx, vox, np.empty_like(x))
    sym = _fftgrid.grad_symbol_sq(x.shape, vox, rfft_half=False)
    assert np.allclose(np.fft.ifftn(np.fft.fftn(x) * sym).real, gtg, atol=1e-4)


def test_bad_inputs(phantom):
    _, field, brain, _, _ = phantom
    with pytest.raises(ValueError, match="empty"):
        inversion.tkd(field, np.zeros(SHAPE, bool), VOX, B0)
    with pytest.raises(ValueError, match="b0_dir"):
        inversion.tkd(field, brain, VOX, (0, 0, 0))
    with pytest.raises(ValueError, match="zero everywhere"):
        inversion.cg(field, brain, VOX, B0, weights=np.zeros(SHAPE))


def test_contract_signatures():
    """Every registered method takes the architecture's common arguments by name."""
    import inspect

    from qsmprep.qsm import background

    for f in inversion.METHODS.values():
        params = list(inspect.signature(f).parameters)
        assert params[:6] == ["local_ppm", "mask", "voxel_size", "b0_dir", "weights", "magnitude"]
        assert f.__doc__ and "References" in f.__doc__
    for f in background.METHODS.values():
        params = list(inspect.signature(f).parameters)
        assert params[:5] == ["total_ppm", "mask", "voxel_size", "b0_dir", "weights"]
        assert f.__doc__ and "References" in f.__doc__


@pytest.mark.parametrize("name", ITERATIVE)
def test_convergence_record_at_cap(phantom, name):
    """A solver cut at 2 iterations (far from its tolerance) says so; the record names the method."""
    cap = {"max_iter": 2} if name == "cg" else {"n_iter": 2}
    info = {}
    _run(name, phantom, info=info, **cap)
    assert info["method"] == name
    assert info["iterations"] == 2 and info["max_iter"] == 2
    assert info["converged"] is False and info["final_change"] > info["tol"]
    flag = inversion.convergence_flag(info)
    assert flag["step"] == "dipole_inversion" and flag["severity"] == "warning"
    assert flag["message"].startswith(f"{name}:") and "2/2" in flag["message"]


@pytest.mark.parametrize("name", ["tv_admm", "medi", "rts"])
def test_convergence_record_when_tolerance_reached(phantom, name):
    """With a loose tolerance the solver stops before its cap, converged, and raises no flag."""
    info = {}
    _run(name, phantom, info=info, n_iter=200, tol=0.05)
    assert info["converged"] is True
    assert info["iterations"] < 200 and info["final_change"] < 0.05
    assert inversion.convergence_flag(info) is None


@pytest.mark.parametrize("name", ["tv_admm", "medi"])
def test_admm_budget_is_recorded_not_flagged(phantom, name):
    """The ADMM solvers' designed stop: at the iteration budget with the map settled (last change
    between tol and ADMM_WARN_CHANGE) is recorded as not converged but raises no flag; cut at 3
    iterations (change > 0.05) it is flagged."""
    info = {}
    _run(name, phantom, info=info, n_iter=50, tol=1e-6)
    assert info["converged"] is False and info["iterations"] == 50
    assert 1e-6 < info["final_change"] <= inversion.ADMM_WARN_CHANGE == info["warn_change"]
    assert inversion.convergence_flag(info) is None
    info = {}
    _run(name, phantom, info=info, n_iter=3, tol=1e-6)
    assert info["final_change"] > inversion.ADMM_WARN_CHANGE
    assert "0.05" in inversion.convergence_flag(info)["message"]


def test_field_residual_reads_noise_and_flags_a_wrap(phantom):
    """The field residual of MEDI's map is about the noise when the field is a dipole field plus
    noise (0.5-3: a map fits part of the noise), and far above FIELD_RESIDUAL_WARN when a phase wrap is left in a ball of the
    field (an unwrapping error: one cycle over 6 ms at 3 T is 1.3 ppm); flags follow."""
    chi_true, field, brain, mag, _ = phantom
    sd = 0.002
    rng = np.random.default_rng(7)
    noisy = np.where(brain, field + rng.standard_normal(field.shape) * sd, 0).astype(np.float32)
    chi = inversion.medi(noisy, brain, VOX, B0, magnitude=mag)
    ok = inversion.field_residual(chi, noisy, brain, VOX, B0, np.full(brain.shape, sd))
    assert 0.5 < ok < 3.0 and inversion.residual_flag(ok, "medi") is None
    # the true map explains everything but the noise
    truth = inversion.field_residual(np.where(brain, chi_true, 0), field * brain, brain, VOX, B0,
                                     sd)
    assert truth < 0.3
    g = np.indices(brain.shape)
    ball = sum(((g[k] - n // 2 - (8 if k == 0 else 0)) * VOX[k]) ** 2
               for k, n in enumerate(brain.shape)) < 10 ** 2
    wrapped = (noisy + np.where(ball & brain, 1.3, 0)).astype(np.float32)
    chi_w = inversion.medi(wrapped, brain, VOX, B0, magnitude=mag)
    bad = inversion.field_residual(chi_w, wrapped, brain, VOX, B0, sd)
    assert bad > inversion.FIELD_RESIDUAL_WARN
    flag = inversion.residual_flag(bad, "medi")
    assert flag["severity"] == "warning" and "unwrapping" in flag["message"]
    # no usable noise SD: not assessed
    assert inversion.field_residual(chi, noisy, brain, VOX, B0, 0.0) is None
    assert inversion.residual_flag(None, "medi") is None


def test_convergence_flag_ignores_direct_methods(phantom):
    info = {}
    _run("tkd", phantom)  # no info parameter: nothing recorded
    assert inversion.convergence_flag(info) is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_admm_and_cg_updates_are_bit_identical_to_numpy(dtype):
    """The numba kernels of qsmprep.qsm._admmkernel do the numpy code's float operations in
    the same order: equal bit for bit (signed zeros, thresholds of zero, exact ties and NaN
    included)."""
    from qsmprep.qsm import _admmkernel as K

    rng = np.random.default_rng(3)
    n = 30_000
    s0, g = (rng.standard_normal(n).astype(dtype) for _ in range(2))
    thr = np.abs(rng.standard_normal(n)).astype(dtype)
    thr[:500] = 0  # MEDI edges: no shrinkage
    s0[500:600] = -0.0
    g[500:600] = 0.0
    thr[600:700] = np.abs(s0[600:700] + g[600:700])  # |s| - thr exactly 0
    s0[700] = np.nan
    # numpy version (inversion._tv_admm before the fusion)
    s_ref = s0.copy()
    s_ref += g
    z_ref = np.abs(s_ref)
    z_ref -= thr
    np.maximum(z_ref, 0, out=z_ref)
    np.copysign(z_ref, s_ref, out=z_ref)
    s_ref -= z_ref
    s, z = s0.copy(), np.empty_like(s0)
    K.shrink_update(s, g, thr, z)
    for a, b in ((s, s_ref), (z, z_ref)):
        assert np.array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}"))

    dchi, t0, w2f = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    inv_w = (1 / (1 + np.abs(rng.standard_normal(n)))).astype(dtype)
    mu2 = dtype(1.3)
    tmp = np.add(dchi, t0)
    tmp *= mu2
    tmp += w2f
    v_ref = tmp * inv_w
    t_ref = t0.copy()
    t_ref += dchi
    t_ref -= v_ref
    t, v = t0.copy(), np.empty_like(t0)
    K.data_update(dchi, t, w2f, inv_w, mu2, v)
    assert np.array_equal(v.view(f"u{v.itemsize}"), v_ref.view(f"u{v.itemsize}"))
    assert np.array_equal(t.view(f"u{t.itemsize}"), t_ref.view(f"u{t.itemsize}"))

    # the L1 data step (data_fidelity="l1"): soft threshold of the residual, then the dual
    f0, thr_v = rng.standard_normal(n).astype(dtype), np.abs(rng.standard_normal(n)).astype(dtype)
    thr_v[:300] = 0  # outside the mask: v = dchi + t
    f0[300:400] = (dchi + t0)[300:400]  # zero residual
    u = dchi + t0
    r = u - f0
    a = np.abs(r) - thr_v
    np.maximum(a, 0, out=a)
    v_ref = f0 + np.copysign(a, r)
    t_ref = u - v_ref
    t, v = t0.copy(), np.empty_like(t0)
    K.data_update_l1(dchi, t, f0, thr_v, v)
    assert np.array_equal(v.view(f"u{v.itemsize}"), v_ref.view(f"u{v.itemsize}"))
    assert np.array_equal(t.view(f"u{t.itemsize}"), t_ref.view(f"u{t.itemsize}"))

    x0, r0, p0, ap = (rng.standard_normal(n).astype(dtype) for _ in range(4))
    alpha, beta = dtype(0.37), dtype(1.7)
    x_ref, r_ref, p_ref = x0 + alpha * p0, r0 - alpha * ap, p0.copy()
    x, r, p = x0.copy(), r0.copy(), p0.copy()
    K.cg_step(x, r, p, ap, alpha)
    p_ref *= beta
    p_ref += r_ref
    K.cg_direction(p, r, beta)
    for a, b in ((x, x_ref), (r, r_ref), (p, p_ref)):
        assert np.array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}"))


def _bits(a):
    return a.view(f"u{a.itemsize}")


@pytest.mark.parametrize("vox", [(1.0, 1.0, 1.0), (0.8, 0.8, 0.8), (1.0, 1.0, 1.5)])
def test_one_pass_admm_steps_are_bit_identical_to_numpy(vox):
    """The compiled passes of MEDI's ADMM iteration (float32) give the numpy steps' bits: the
    chi-step's right-hand side (mu1 G^T (z - s)), the weighted shrinkage with the gradient
    computed on the fly, and the spectrum update (signed zeros included)."""
    from qsmprep.qsm import _admmkernel as K

    rng = np.random.default_rng(11)
    shape = (9, 7, 8)
    f32 = np.float32
    z, s0 = (rng.standard_normal((3,) + shape).astype(f32) for _ in range(2))
    z[0, :2] = s0[0, :2]  # differences of exactly zero
    s0[1, 3] = -0.0
    z[1, 3] = 0.0
    mu1 = f32(0.03)
    iso = len(set(vox)) == 1
    g = z - s0
    ref = np.empty(shape, f32)
    _fftgrid.grad_adj(g, vox, ref)
    ref *= mu1
    out = np.empty(shape, f32)
    scale = np.array([1.0 / v for v in vox], dtype=f32)
    K.adjoint_difference(z, s0, scale, f32(1.0 / vox[0]) if iso else f32(0.0), mu1, out)
    assert np.array_equal(_bits(out), _bits(ref))

    x = rng.standard_normal(shape).astype(f32)
    x[4] = -0.0
    thr = np.abs(rng.standard_normal((3,) + shape)).astype(f32)
    thr[:, :2] = 0
    gx = np.empty((3,) + shape, f32)
    _fftgrid.grad(x, vox, gx)
    s_ref, z_ref = s0.copy(), np.empty_like(s0)
    K.shrink_update(s_ref.reshape(-1), gx.reshape(-1), thr.reshape(-1), z_ref.reshape(-1))
    s1, z1 = s0.copy(), np.empty_like(s0)
    K.grad_shrink_update(x, scale, s1, thr, z1)
    assert np.array_equal(_bits(s1), _bits(s_ref)) and np.array_equal(_bits(z1), _bits(z_ref))

    n = 5000
    rk0 = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)
    vk = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)
    d = rng.standard_normal(n).astype(f32)
    inv_den = np.abs(rng.standard_normal(n)).astype(f32)
    d[:50] = 0.0
    d[50:100] = -0.0
    vk[100:150] = -0.0 - 0.0j
    rk0[150:200] = complex(-0.0, 0.0)
    inv_den[200:250] = 0.0
    for mu2 in (f32(1.0), f32(1.3)):
        v_ref = vk.copy()
        v_ref *= d
        v_ref *= mu2
        r_ref = rk0.copy()
        r_ref += v_ref
        r_ref *= inv_den
        rk = rk0.copy()
        K.chi_step_spectrum(rk, vk, d, mu2, inv_den)
        assert np.array_equal(rk.view(np.uint32), r_ref.view(np.uint32))


@pytest.mark.parametrize("shape,dtype", [((12, 10, 9), np.float32), ((8, 6, 10), np.float64),
                                         ((16, 7), np.float32)])
def test_convolve_equals_irfftn_of_the_product(shape, dtype):
    import scipy.fft as sfft

    from qsmprep.qsm._fftgrid import convolve, irfft

    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(dtype)
    k = rng.standard_normal(shape[:-1] + (shape[-1] // 2 + 1,)).astype(dtype)
    ref = sfft.irfftn(sfft.rfftn(x) * k, s=shape)
    out = convolve(x, k, shape, 1)
    assert out.dtype == ref.dtype and out.shape == shape
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert np.abs(out - ref).max() <= tol * np.abs(ref).max()
    X = sfft.rfftn(x)
    np.testing.assert_allclose(irfft(X.copy(), shape, 1, overwrite=True), sfft.irfftn(X, s=shape),
                               atol=tol * np.abs(ref).max())
    # a float64 kernel on a float32 spectrum is not squeezed into complex64 in place
    k64 = k.astype(np.float64)
    assert convolve(x, k64, shape, 1).dtype == sfft.irfftn(sfft.rfftn(x) * k64, s=shape).dtype


def _blob_case(shape=(30, 34, 28), touch=False):
    rng = np.random.default_rng(21)
    g = np.indices(shape)
    c = (np.array(shape) - 1) / 2.0
    mask = (((g - c[:, None, None, None]) / (np.array(shape)[:, None, None, None] / 3.2)) ** 2
            ).sum(0) < 1.0
    if touch:
        mask[0, 10:20, 10:18] = True  # reaches the image border
    mag = rng.uniform(0.2, 1.5, shape).astype(np.float32)
    mag[5:12, 8:14, 9:15] *= 3.0
    rel = rng.uniform(-0.1, 1.0, shape)
    rel[3, 4, 5] = np.nan
    return mask, mag, rel


@pytest.mark.parametrize("touch", [False, True])
def test_weights_on_the_mask_box_equal_the_whole_grid(monkeypatch, touch):
    """magnitude_edge_weights and normalise_weights work on the mask's box; the results must be
    byte for byte those of the whole grid (mask_bounds patched away), border or not."""
    mask, mag, rel = _blob_case(touch=touch)
    wg = inversion.magnitude_edge_weights(mag, mask, (1.0, 1.1, 1.5))
    nw = _fftgrid.normalise_weights(rel, mask)
    monkeypatch.setattr(inversion, "mask_bounds", lambda m: None)
    monkeypatch.setattr(_fftgrid, "mask_bounds", lambda m: None)
    assert wg.tobytes() == inversion.magnitude_edge_weights(mag, mask, (1.0, 1.1, 1.5)).tobytes()
    assert nw.tobytes() == _fftgrid.normalise_weights(rel, mask).tobytes()
    assert wg.shape == (3,) + mask.shape and 0 < wg.mean() < 1


def test_problem_field_on_the_grid_equals_the_masked_full_field():
    """_Problem embeds the field and removes NaN/inf on the padded grid only: the same values
    as masking and cleaning the full field first."""
    mask, mag, rel = _blob_case()
    field = np.random.default_rng(2).normal(0, 0.05, mask.shape).astype(np.float32)
    field[15, 17, 14] = np.nan
    field[14, 17, 14] = np.inf
    field[0, 0, 0] = np.nan  # outside the mask
    p = inversion._Problem(field, mask, (1, 1, 1), (0, 0, 1), rel, 6.0, np.float32, 1)
    ref = p.grid.embed(np.where(mask, np.nan_to_num(field), 0.0), np.float32)
    assert p.f.dtype == np.float32 and p.f.tobytes() == ref.tobytes()
