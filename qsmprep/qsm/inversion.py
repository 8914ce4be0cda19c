"""Dipole inversion: local field (ppm) -> susceptibility (ppm).

Every method has the signature::

    f(local_ppm, mask, voxel_size, b0_dir, weights=None, magnitude=None, **opts) -> chi_ppm

``local_ppm`` is the local field inside ``mask`` (the eroded mask from background removal),
``voxel_size`` in mm, ``b0_dir`` the unit B0 vector in voxel axes, ``weights`` an optional data
reliability map (>= 0; normalised to mean 1 inside the mask, zero allowed), ``magnitude`` an
optional (echo-combined) magnitude image used for morphological priors. ``chi_ppm`` is float32
(or ``dtype``) and zero outside ``mask``. The mean of ``chi`` is not determined by the field
(``D(0) = 0``): reference it afterwards (:mod:`qsmprep.qsm.reference`).

Iterative methods (``cg``, ``tv_admm``, ``medi``, ``rts``) also accept ``info``: a dict that they
fill with their convergence record (``method``, ``iterations``, ``max_iter``, ``tol``,
``final_change``, ``converged``, ``warn_change``); :func:`convergence_flag` turns a record of a
solver that stopped at its iteration cap with its last relative change above ``warn_change``
into a ``QualityFlags`` entry. For ``cg`` and ``rts`` ``warn_change`` is the tolerance; for the
ADMM solvers (``medi``, ``tv_admm``) it is :data:`ADMM_WARN_CHANGE`, because their iteration
budget, not the tolerance, is what stops the default (see there).

Numerics shared by all methods:

* the volume is cropped to the mask's bounding box plus ``pad_mm`` (default 12 mm) of zeros per
  side and padded to an FFT-friendly even shape; real FFTs (``scipy.fft.rfftn``, ``workers``)
  in float32/complex64; the dipole kernel (``kernels.dipole_kernel(..., rfft=True)``) is cached;
* gradients are forward differences with periodic boundaries in 1/mm, so the regularisation
  weights (``lam``, ``alpha``) are expressed per mm and keep their meaning across voxel sizes
  (the discrete sums approximate the same continuous functional at 1 mm and 3 mm);
* iterative methods allocate their buffers once and update them in place.

Methods (``METHODS``, the ``inversion`` records of :mod:`qsmprep.qsm.methods`): ``tkd``,
``tikhonov``, ``cg`` (weighted L2 by conjugate gradients), ``tv_admm`` (FANSI-style weighted TV),
``medi`` (morphology-enabled weighted TV), ``rts``. The default (``medi``) was chosen by
measuring the bias of deep-gray-matter structure means on the simulator's head, not only NRMSE
(the numbers are in ``docs/algorithms_inversion.md`` and ``docs/algorithms.md``). MEDI needs the
magnitude (the pipeline passes the echo-combined one).
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np

from . import kernels
from . import methods as _registry
from ._fftgrid import (
    CropGrid,
    cg as _cg,
    grad,
    grad_adj,
    convolve,
    grad_symbol_sq,
    irfft,
    mask_bounds,
    normalise_inputs,
    normalise_weights,
    rfft,
    workers as _workers,
)

LOGGER = logging.getLogger("qsmprep.qsm.inversion")

#: The ADMM solvers (``medi``, ``tv_admm``) stop at their iteration budget (``n_iter``, 50 for
#: MEDI) in every validated run, with a last relative change of 0.005-0.024 against ``tol =
#: 1e-3`` (qsmprep's simulator 3 mm and 1 mm, the independent heads, real data; docs/validation.md,
#: "What MEDI's iteration cap says"). There more iterations move the DGM means by about 2 ppb
#: without making them more accurate, and the last change does not tell a wrong map from a
#: right one (inverting the total field, or a field with an unwrapping error, ends at 0.005-
#: 0.009). So reaching the budget is the designed stop, recorded but not flagged; a solve cut
#: far shorter (last change above this level, twice the largest validated one: e.g. 10 MEDI
#: iterations, 0.08) is flagged as under-converged.
ADMM_WARN_CHANGE = 0.05

__all__ = ["tkd", "tikhonov", "cg", "tv_admm", "medi", "rts", "magnitude_edge_weights",
           "convergence_flag", "ADMM_WARN_CHANGE", "field_residual", "field_misfit", "residual_flag",
           "FIELD_RESIDUAL_WARN", "METHODS", "DEFAULT"]


def _record(info, method, iterations, max_iter, tol, final_change, converged, warn_change=None):
    """Fill the caller's ``info`` dict (if any) with a solver's convergence record; log it.

    ``warn_change``: the last relative change above which a solver stopped at its cap is
    flagged (:func:`convergence_flag`); default ``tol``."""
    rec = {"method": method, "iterations": int(iterations), "max_iter": int(max_iter),
           "tol": float(tol), "final_change": float(final_change), "converged": bool(converged),
           "warn_change": float(tol if warn_change is None else warn_change)}
    LOGGER.debug("%s: %d/%d iterations, last relative change %.3g (tol %.3g), converged=%s",
                 method, rec["iterations"], rec["max_iter"], rec["final_change"], rec["tol"],
                 rec["converged"])
    if info is not None:
        info.update(rec)
    return rec


def convergence_flag(info: dict | None) -> dict | None:
    """A ``QualityFlags`` record for a solver cut short at its iteration cap.

    A solver that stopped at its cap with its last relative change at or below the record's
    ``warn_change`` (the tolerance, or :data:`ADMM_WARN_CHANGE` for the ADMM solvers) is not
    flagged: for MEDI that is how every default run ends (the record stays in the sidecar).

    Parameters
    ----------
    info : dict or None
        A convergence record filled by an iterative method (``method``, ``iterations``,
        ``max_iter``, ``tol``, ``final_change``, ``converged``; ``warn_change``, default ``tol``).

    Returns
    -------
    dict or None
        ``{"step": "dipole_inversion", "severity": "warning", "message": ...}`` when the solver
        stopped at its cap with its last change above ``warn_change``; ``None`` otherwise, and
        when ``info`` holds no convergence record (direct methods such as TKD).
    """
    if not info or "converged" not in info or info["converged"]:
        return None
    if info["final_change"] <= info.get("warn_change", info["tol"]):
        return None
    return {
        "step": "dipole_inversion",
        "severity": "warning",
        "message": (f"{info['method']}: stopped at its iteration cap ({info['iterations']}/"
                    f"{info['max_iter']} iterations) with the map still changing (last relative "
                    f"change {info['final_change']:.3g} > "
                    f"{info.get('warn_change', info['tol']):.3g}); it is under-converged "
                    f"(raise n_iter/max_iter)."),
    }


#: ``field_residual`` above this flags a map (:func:`residual_flag`). The default chain's maps
#: leave 0.7-3.4 times the field noise unexplained (the independent heads 0.8, real data 0.7,
#: qsmprep's own simulator 2.4-3.4; the other method chains 0.6-6.0), while inputs that cannot
#: give a right map read 16-32 on the independent head (a phase wrap left in the field over a
#: 12 mm ball: 16; the total field inverted without background removal: 32); docs/validation.md,
#: "What MEDI's iteration cap says" (``benchmarks/medi_budget.py``). 10 is three times the
#: largest value of the default. Smaller failures stay under it (a wrap over a 6 mm ball: 5.0).
FIELD_RESIDUAL_WARN = 10.0


def field_residual(chi, local_ppm, mask, voxel_size, b0_dir, noise_sd_ppm, pad_mm=12.0):
    """How much of the field a map leaves unexplained, in units of the field noise.

    The RMS over ``mask`` of ``(D chi - f) / sd``: the dipole field of ``chi`` (on the solvers'
    padded grid) minus the local field, divided by the field's noise SD from the echo fit. A map
    that explains the field up to its noise reads about 1 (the discrepancy principle, Morozov VA,
    Soviet Math Dokl 1966;7:414-417); regularisation and model error raise it a little, a field
    that no susceptibility inside the mask can produce (an unwrapping error, background left in)
    raises it far above (:data:`FIELD_RESIDUAL_WARN`).

    Parameters
    ----------
    chi : ndarray
        Susceptibility (ppm), as the inversion returned it (zero outside ``mask``).
    local_ppm : ndarray
        The local field (ppm) that was inverted.
    mask : ndarray of bool
        The mask it was inverted in.
    voxel_size : sequence of float
        Voxel size (mm).
    b0_dir : sequence of float
        Unit B0 direction in voxel axes.
    noise_sd_ppm : ndarray or float
        Noise SD of the field (ppm; the echo fit's ``noise_std_hz`` converted); voxels with a
        non-positive or non-finite SD are left out.
    pad_mm : float
        Zero padding (mm) around the mask's box, as in the solvers.

    Returns
    -------
    float or None
        The RMS ratio; ``None`` when no voxel of ``mask`` has a usable noise SD.
    """
    mask = np.asarray(mask, bool)
    sd = np.broadcast_to(np.asarray(noise_sd_ppm, dtype=np.float32), mask.shape)
    ok = mask & (np.nan_to_num(sd, nan=0.0, posinf=0.0) > 0)
    if not ok.any():
        return None
    r = field_misfit(chi, local_ppm, mask, voxel_size, b0_dir, pad_mm)
    return float(np.sqrt(np.mean((r[ok] / sd[ok]).astype(np.float64) ** 2)))


def field_misfit(chi, local_ppm, mask, voxel_size, b0_dir, pad_mm=12.0):
    """``D chi - f`` inside ``mask`` (ppm, zero outside): the dipole field of ``chi``, computed on
    the solvers' padded grid, minus the local field. :func:`field_residual` summarises it.

    Parameters are those of :func:`field_residual` (without the noise SD).

    Returns
    -------
    ndarray of float32
        The misfit, on the grid of ``mask``.
    """
    p = _Problem(local_ppm, mask, voxel_size, b0_dir, None, pad_mm, np.float32, None)
    r = p.conv_d(p.grid.embed(np.asarray(chi, np.float32) * p.mask_full, np.float32)) - p.f
    return p.grid.extract(r * p.m)


def residual_flag(value: float | None, method: str) -> dict | None:
    """A ``QualityFlags`` record when :func:`field_residual` is above :data:`FIELD_RESIDUAL_WARN`.

    Parameters
    ----------
    value : float or None
        The residual ratio (``None``: not assessed, no flag).
    method : str
        The inversion method, named in the message.

    Returns
    -------
    dict or None
        ``{"step": "dipole_inversion", "severity": "warning", "message": ...}`` or ``None``.
    """
    if value is None or not value > FIELD_RESIDUAL_WARN:
        return None
    return {
        "step": "dipole_inversion",
        "severity": "warning",
        "message": (f"{method}: the map leaves {value:.1f} times the field noise unexplained "
                    f"(RMS of D chi - f over the noise SD; above {FIELD_RESIDUAL_WARN:g}, where "
                    f"validated runs read up to 6): the local field is not the field of a "
                    f"susceptibility inside the mask. Check the phase unwrapping (wraps left in "
                    f"the field map) and the background removal before using these values."),
    }


class _Problem:
    """Cropped/padded grid, field, mask, weights and kernel shared by the solvers."""

    def __init__(self, local_ppm, mask, voxel_size, b0_dir, weights, pad_mm, dtype, workers):
        field, mask, vox, b = normalise_inputs(local_ppm, mask, voxel_size, b0_dir)
        self.mask_full = mask
        self.vox = vox
        self.dtype = np.dtype(dtype)
        self.w = _workers(workers)
        self.grid = CropGrid(mask, [int(math.ceil(pad_mm / v)) for v in vox])
        self.shape = self.grid.shape
        self.m = self.grid.embed(mask, self.dtype)
        # on the grid only (the same values as np.where(mask, np.nan_to_num(field), 0.0)
        # embedded, without two full-size temporaries)
        f = self.grid.embed(field, field.dtype)
        np.nan_to_num(f, copy=False)
        self.f = np.where(self.m > 0, f, 0.0).astype(self.dtype, copy=False)
        wt = normalise_weights(weights, mask)
        self.weighted = wt is not None
        self.w2 = self.m.copy() if wt is None else self.grid.embed(wt, self.dtype) ** 2 * self.m
        self.d = kernels.dipole_kernel(self.shape, vox, b, rfft=True, dtype=self.dtype)

    def fft(self, x):
        return rfft(x, self.w)

    def ifft(self, xk, overwrite=False):
        return irfft(xk, self.shape, self.w, overwrite=overwrite)

    def conv_d(self, x):
        """The dipole field of ``x``: ``ifft(D fft(x))`` (the spectrum is scratch)."""
        return convolve(x, self.d, self.shape, self.w)

    def out(self, chi):
        chi = chi * self.m
        return self.grid.extract(chi, dtype=self.dtype)


def tkd(local_ppm, mask, voxel_size, b0_dir=(0.0, 0.0, 1.0), weights=None, magnitude=None,
        threshold=0.19, pad_mm=12.0, dtype=np.float32, workers=None):
    """Truncated k-space division (TKD).

    ``chi = F^-1[ F(f) / D_t ]`` with ``D_t = D`` where ``|D| > threshold`` and
    ``sign(D) * threshold`` elsewhere (Shmueli et al. 2009). The default threshold 0.19 is the
    value used by several toolboxes (e.g. STI Suite/SEPIA examples); TKD underestimates
    susceptibility (more so for larger thresholds) and ignores ``weights`` and ``magnitude``.

    Parameters
    ----------
    local_ppm : ndarray
        Local field (ppm), used inside ``mask``.
    mask : ndarray of bool
        The (eroded) mask; ``chi`` is zero outside it.
    voxel_size : sequence of float
        Voxel size (mm).
    b0_dir : sequence of float
        Unit B0 direction in voxel axes.
    weights, magnitude : ignored
        Accepted for the common signature.
    threshold : float
        Truncation level of ``|D|``.
    pad_mm : float
        Zero padding (mm) around the mask's bounding box.
    dtype : numpy dtype
        Working precision.
    workers : int, optional
        FFT threads (default: :func:`qsmprep.qsm.kernels.fft_workers`).

    Returns
    -------
    ndarray
        Susceptibility (ppm, ``dtype``), zero outside ``mask``.

    References
    ----------
    Shmueli K, de Zwart JA, van Gelderen P, Li TQ, Dodd SJ, Duyn JH. Magnetic susceptibility
    mapping of brain tissue in vivo using MRI phase data. Magn Reson Med 2009;62:1510-1522.
    """
    p = _Problem(local_ppm, mask, voxel_size, b0_dir, None, pad_mm, dtype, workers)
    d = p.d
    inv = np.zeros_like(d)
    big = np.abs(d) > threshold
    inv[big] = 1.0 / d[big]
    small = ~big
    inv[small] = np.sign(d[small]) / threshold
    return p.out(p.ifft(p.fft(p.f) * inv))


def tikhonov(local_ppm, mask, voxel_size, b0_dir=(0.0, 0.0, 1.0), weights=None, magnitude=None,
             lam=1e-3, pad_mm=12.0, dtype=np.float32, workers=None):
    """Closed-form L2-gradient (Tikhonov) regularised inversion.

    ``chi = F^-1[ D F(f) / (D^2 + lam |G|^2) ]``, the minimiser of
    ``||D chi - f||^2 + lam ||grad chi||^2`` with ``grad`` in 1/mm (so ``lam`` is in mm^2 and
    keeps its meaning across voxel sizes). One FFT pair; ``weights`` and ``magnitude`` cannot
    enter a closed form and are ignored (use ``cg`` for a weighted L2 solution).

    Parameters
    ----------
    local_ppm : ndarray
        Local field (ppm), used inside ``mask``.
    mask : ndarray of bool
        The (eroded) mask; ``chi`` is zero outside it.
    voxel_size : sequence of float
        Voxel size (mm).
    b0_dir : sequence of float
        Unit B0 direction in voxel axes.
    weights, magnitude : ignored
        Accepted for the common signature.
    lam : float
        L2-gradient weight (mm^2).
    pad_mm : float
        Zero padding (mm) around the mask's bounding box.
    dtype : numpy dtype
        Working precision.
    workers : int, optional
        FFT threads (default: :func:`qsmprep.qsm.kernels.fft_workers`).

    Returns
    -------
    ndarray
        Susceptibility (ppm, ``dtype``), zero outside ``mask``.

    References
    ----------
    Bilgic B, Fan AP, Polimeni JR, Cauley SF, Bianciardi M, Adalsteinsson E, Wald LL, Setsompop K.
    Fast quantitative susceptibility mapping with L1-regularization and automatic parameter
    selection. Magn Reson Med 2014;72:1444-1459.
    Kressler B, de Rochefort L, Liu T, Spincemaille P, Jiang Q, Wang Y. Nonlinear regularization
    for per voxel estimation of magnetic susceptibility distributions from MRI field maps.
    IEEE Trans Med Imaging 2010;29:273-281.
    """
    p = _Problem(local_ppm, mask, voxel_size, b0_dir, None, pad_mm, dtype, workers)
    d = p.d
    g2 = grad_symbol_sq(p.shape, p.vox).astype(p.dtype)
    den = d * d + np.asarray(lam, p.dtype) * g2
    den[0, 0, 0] = 1.0  # D(0) = G(0) = 0: the mean is not determined, keep it at zero
    return p.out(p.ifft(p.fft(p.f) * (d / den)))


def cg(local_ppm, mask, voxel_size, b0_dir=(0.0, 0.0, 1.0), weights=None, magnitude=None,
       lam=1e-3, tol=1e-3, max_iter=100, pad_mm=12.0, dtype=np.float32, workers=None, info=None):
    """Iterative weighted L2 inversion by conjugate gradients on the normal equations.

    Minimises ``||W (D M x - f)||^2 + lam ||grad (M x)||^2`` over ``x`` supported in the mask
    ``M`` (the local field has its sources inside the mask), by CG on
    ``(M D W^2 D M + lam M G^T G M) x = M D W^2 f``. ``W`` are the data ``weights``; ``lam`` (mm^2)
    is a small L2-gradient penalty and early stopping (``tol``, ``max_iter``) regularises further.
    This is the plain weighted-CG variant named in the issue (not iLSQR's streaking-artifact
    estimation of Li et al. 2015). Cost: two real FFT pairs per iteration.

    Parameters
    ----------
    local_ppm : ndarray
        Local field (ppm), used inside ``mask``.
    mask : ndarray of bool
        The (eroded) mask; ``chi`` is zero outside it.
    voxel_size : sequence of float
        Voxel size (mm).
    b0_dir : sequence of float
        Unit B0 direction in voxel axes.
    weights : ndarray, optional
        Data reliability (>= 0; normalised to mean 1 in the mask).
    magnitude : ndarray, optional
        Echo-combined magnitude (morphological prior).
    lam : float
        L2-gradient weight (mm^2).
    tol : float
        Relative residual tolerance.
    max_iter : int
        Maximum CG iterations.
    pad_mm : float
        Zero padding (mm) around the mask's bounding box.
    dtype : numpy dtype
        Working precision.
    workers : int, optional
        FFT threads (default: :func:`qsmprep.qsm.kernels.fft_workers`).
    info : dict, optional
        Filled with the convergence record (``method``, ``iterations``, ``max_iter``, ``tol``,
        ``final_change``, ``converged``).

    Returns
    -------
    ndarray
        Susceptibility (ppm, ``dtype``), zero outside ``mask``.

    References
    ----------
    Kressler B, et al. IEEE Trans Med Imaging 2010;29:273-281 (weighted L2 QSM by CG).
    Li W, Wang N, Yu F, Han H, Cao W, Romero R, Tantiwongkosi B, Duong TQ, Liu C. A method for
    estimating and removing streaking artifacts in quantitative susceptibility mapping.
    NeuroImage 2015;108:111-122 (iLSQR, of which this is the weighted least-squares core).
    """
    p = _Problem(local_ppm, mask, voxel_size, b0_dir, weights, pad_mm, dtype, workers)
    d, m, w2 = p.d, p.m, p.w2
    gbuf = np.empty((3,) + p.shape, p.dtype)
    tmp = np.empty(p.shape, p.dtype)
    lam = p.dtype.type(lam)

    def apply_n(x, res):
        np.multiply(x, m, out=tmp)
        y = p.conv_d(tmp)
        y *= w2
        res[...] = p.conv_d(y)
        if lam:
            grad(tmp, p.vox, gbuf)
            grad_adj(gbuf, p.vox, tmp)
            np.multiply(tmp, lam, out=tmp)
            res += tmp
        res *= m

    rhs = p.conv_d(w2 * p.f) * m
    x, n_it, rel = _cg(apply_n, rhs, tol=tol, max_iter=max_iter)
    # CG stops early on a non-positive curvature too; only the cap without tolerance is a miss
    _record(info, "cg", n_it, max_iter, tol, rel, rel <= tol or n_it < max_iter)
    return p.out(x)


def magnitude_edge_weights(magnitude, mask, voxel_size, edge_fraction=0.3):
    """MEDI gradient mask: 0 on the largest magnitude-gradient components (edges), 1 elsewhere.

    Edges are not regularised. ``edge_fraction=0.3`` reproduces MEDI's default (``percentage =
    0.9`` counted over the three gradient components per voxel).

    Parameters
    ----------
    magnitude : ndarray
        3-D magnitude.
    mask : ndarray of bool
        The components inside it are ranked.
    voxel_size : sequence of float
        Voxel size (mm).
    edge_fraction : float
        Fraction of the gradient components in the mask marked as edges.

    Returns
    -------
    ndarray
        Weights of shape ``(3,) + mask.shape``.
    """
    mag = np.asarray(magnitude, dtype=np.float32)
    if mag.ndim == 4:
        mag = np.sqrt((mag.astype(np.float64) ** 2).sum(-1)).astype(np.float32)
    mask = np.asarray(mask, bool)
    bounds = mask_bounds(mask)
    if bounds is not None and all(lo >= 1 and hi + 2 < n for lo, hi, n in
                                  zip(bounds[0], bounds[1], mask.shape)):
        # the same weights from the mask's box + 1 voxel: the magnitude is 0 outside the
        # mask, so every gradient component outside that box is 0 (weight 1), and the box
        # does not reach the image border, so the periodic wrap-around meets zeros either way
        box = tuple(slice(lo - 1, hi + 2) for lo, hi in zip(*bounds))
        out = np.ones((3,) + mask.shape, np.float32)
        out[(slice(None),) + box] = magnitude_edge_weights(mag[box], mask[box], voxel_size,
                                                           edge_fraction)
        return out
    mag = np.where(mask, mag, 0).astype(np.float32)
    scale = np.percentile(mag[mask], 99) or 1.0
    mag /= scale
    g = np.empty((3,) + mag.shape, np.float32)
    grad(mag, voxel_size, g)
    g = np.abs(g)
    inside = np.broadcast_to(mask, g.shape)
    # gradients that straddle the mask boundary are not tissue edges
    thr = np.quantile(g[inside], 1.0 - edge_fraction)
    wg = (g <= thr).astype(np.float32)
    return wg


def _tv_admm(p: _Problem, alpha, mu1, mu2, n_iter, tol, tv_weights=None, name="tv_admm", info=None,
             data_fidelity="l2", l1_threshold=1e-3):
    """Linear FANSI ADMM for ``1/2 ||W (D chi - f)||^2 + alpha || wG . grad chi ||_1`` (isotropic).

    ``data_fidelity="l1"``: the data term is ``lam ||W (D chi - f)||_1`` instead
    (``lam = l1_threshold``, ppm), whose v-step is a soft threshold of the residual at
    ``lam W / mu2`` (:func:`qsmprep.qsm._admmkernel.data_update_l1`).
    """
    if data_fidelity not in ("l2", "l1"):
        raise ValueError(f"{name}: data_fidelity must be 'l2' or 'l1', got {data_fidelity!r}.")
    if data_fidelity == "l1" and not float(l1_threshold) > 0:
        raise ValueError(f"{name}: l1_threshold must be > 0 ppm, got {l1_threshold!r}.")
    dt = p.dtype.type
    shape, d, vox = p.shape, p.d, p.vox
    g2 = grad_symbol_sq(shape, vox).astype(p.dtype)
    den = mu1 * g2 + mu2 * d * d
    den[0, 0, 0] = 1.0
    inv_den = (1.0 / den).astype(p.dtype)
    inv_den[0, 0, 0] = 0.0
    w2f = p.w2 * p.f
    inv_w = (1.0 / (p.w2 + mu2)).astype(p.dtype)
    chi = np.zeros(shape, p.dtype)
    v = p.f.copy()
    t = np.zeros(shape, p.dtype)
    z = np.zeros((3,) + shape, p.dtype)
    s = np.zeros((3,) + shape, p.dtype)
    g = np.empty((3,) + shape, p.dtype)
    tmp = np.empty(shape, p.dtype)
    nrm = np.empty(shape, p.dtype)
    tau = dt(alpha / mu1)
    thr = tau if tv_weights is None else (tau * tv_weights).astype(p.dtype)
    from . import _admmkernel as fused  # numba: imported when a solve runs

    fs, fz, ft, fv = (fused.flat(a) for a in (s, z, t, v))
    fw2f, finv_w = fused.flat(w2f), fused.flat(inv_w)
    if data_fidelity == "l1":
        lam = float(l1_threshold)
        # per-voxel threshold lam * W / mu2 (W = sqrt(w2): 0 outside the mask, where v = D chi)
        fthr_v = fused.flat((np.sqrt(p.w2) * dt(lam / mu2)).astype(p.dtype))
        ff = fused.flat(p.f)
    fthr = None if tv_weights is None else fused.flat(thr)
    # float32 (the default): the element-wise steps around the FFTs run as compiled passes
    # (the same float operations per element as the numpy steps kept below for other types)
    one_pass = p.dtype == np.float32 and len(shape) == 3
    scale = np.array([1.0 / float(x) for x in vox], dtype=p.dtype)  # numpy's float32(1 / d)
    iso = len(set(float(x) for x in vox)) == 1
    iso_scale = dt(1.0 / float(vox[0])) if iso else dt(0.0)
    fd, finv_den = fused.flat(d), fused.flat(inv_den)
    change, converged, it = float("inf"), False, -1
    for it in range(n_iter):
        # chi update (closed form in k-space)
        if one_pass:  # tmp = mu1 G^T (z - s)
            fused.adjoint_difference(z, s, scale, iso_scale, dt(mu1), tmp)
        else:
            np.subtract(z, s, out=g)
            grad_adj(g, vox, tmp)
            tmp *= dt(mu1)
        rk = p.fft(tmp)
        np.subtract(v, t, out=tmp)
        vk = p.fft(tmp)
        if one_pass:  # rk = (rk + vk d mu2) inv_den
            fused.chi_step_spectrum(fused.flat(rk), fused.flat(vk), fd, dt(mu2), finv_den)
        else:
            vk *= d
            vk *= dt(mu2)
            rk += vk
            rk *= inv_den
        prev, chi = chi, p.ifft(rk)  # the inverse FFT's new array: no copies
        rk *= d
        dchi = p.ifft(rk, overwrite=True)  # rk is not read again in this iteration
        # z update: soft threshold of u = grad chi + s; dual: s_new = u - z
        if one_pass and tv_weights is not None and thr.shape == s.shape:
            # MEDI's weighted shrinkage with grad chi computed on the fly (no g written)
            fused.grad_shrink_update(chi, scale, s, thr, z)
        elif tv_weights is None:  # isotropic TV
            grad(chi, vox, g)
            s += g
            np.einsum("i...,i...->...", s, s, out=nrm)
            np.sqrt(nrm, out=nrm)
            np.maximum(nrm, dt(1e-12), out=nrm)
            np.divide(thr, nrm, out=nrm)
            np.subtract(dt(1), nrm, out=nrm)
            np.maximum(nrm, 0, out=nrm)
            np.multiply(s, nrm, out=z)
            s -= z
        else:  # per-component weights (MEDI gradient mask): anisotropic shrinkage, fused:
            # s += g; z = copysign(max(|s| - thr, 0), s); s -= z
            grad(chi, vox, g)
            fused.shrink_update(fs, fused.flat(g), fthr, fz)
        # v update (elementwise weighted data fit) and its dual, fused:
        # v = ((dchi + t) mu2 + w2f) inv_w; t += dchi - v
        if data_fidelity == "l1":
            fused.data_update_l1(fused.flat(dchi), ft, ff, fthr_v, fv)
        else:
            fused.data_update(fused.flat(dchi), ft, fw2f, finv_w, dt(mu2), fv)
        prev -= chi
        change = np.linalg.norm(prev) / max(np.linalg.norm(chi), 1e-30)
        LOGGER.debug("%s it %d: change %.3g", name, it, change)
        if it > 0 and change < tol:
            converged = True
            break
    _record(info, name, it + 1, n_iter, tol, change, converged, max(tol, ADMM_WARN_CHANGE))
    return chi


def tv_admm(local_ppm, mask, voxel_size, b0_dir=(0.0, 0.0, 1.0), weights=None, magnitude=None,
            alpha=3e-4, mu1=None, mu2=1.0, n_iter=50, tol=1e-3, pad_mm=12.0, dtype=np.float32,
            workers=None, info=None, data_fidelity="l2", l1_threshold=1e-3):
    """Total-variation inversion with a weighted linear data term by ADMM (linear FANSI).

    Minimises ``1/2 ||W (D chi - f)||^2 + alpha ||grad chi||_1`` (isotropic TV, ``grad`` in 1/mm)
    with the FANSI splitting ``z = grad chi``, ``v = D chi``: the chi-step is a closed-form
    k-space division by ``mu1 |G|^2 + mu2 D^2``, the z-step an isotropic soft threshold
    (``alpha / mu1``), the v-step an element-wise weighted average of the measured field and
    ``D chi`` (so data weights, including zeros, enter exactly). Cost per iteration: two real FFT
    pairs plus element-wise work; buffers are preallocated.

    Parameters
    ----------
    local_ppm : ndarray
        Local field (ppm), used inside ``mask``.
    mask : ndarray of bool
        The (eroded) mask; ``chi`` is zero outside it.
    voxel_size : sequence of float
        Voxel size (mm).
    b0_dir : sequence of float
        Unit B0 direction in voxel axes.
    weights : ndarray, optional
        Data reliability (>= 0; normalised to mean 1 in the mask).
    magnitude : ndarray, optional
        Echo-combined magnitude (morphological prior).
    alpha : float
        TV weight (ppm mm; default 3e-4, chosen for a low bias of structure means on analytic
        phantoms with noise).
    mu1 : float
        Gradient-consistency penalty (default ``100 * alpha`` as in FANSI).
    mu2 : float
        Data-consistency penalty (default 1, FANSI's default).
    n_iter, tol : int, float
        Maximum iterations (default 50; the accuracy and time against more iterations are
        measured in docs/algorithms.md) and relative chi-update stopping tolerance (default
        1e-3).
    pad_mm : float
        Zero padding (mm) around the mask's bounding box.
    dtype : numpy dtype
        Working precision.
    workers : int, optional
        FFT threads (default: :func:`qsmprep.qsm.kernels.fft_workers`).
    info : dict, optional
        Filled with the convergence record (``method``, ``iterations``, ``max_iter``, ``tol``,
        ``final_change``, ``converged``).
    data_fidelity : {"l2", "l1"}
        Norm of the data term (default ``"l2"``). ``"l1"`` minimises
        ``l1_threshold * ||W (D chi - f)||_1`` instead of the squared norm (L1-QSM, Milovic et al.
        2022): a voxel whose field the dipole model cannot explain (haemorrhage, calcification,
        an unwrapping error, residual background) then pulls on chi with a bounded force instead
        of one that grows with its residual, so it no longer streaks across the map. Its
        v-step is a soft threshold of the residual at ``l1_threshold * W / mu2``. Not the
        default: on heads with consistent phase it moves deep-gray-matter means by up to a few
        ppb either way (docs/validation.md, "L1 data fidelity").
    l1_threshold : float
        Scale (ppm) of the L1 data term relative to the TV term (default 1e-3 ppm, the best of
        3e-4, 1e-3, 3e-3, 1e-2 and 3e-2 ppm on 1 mm heads at 3 T, docs/validation.md; used only
        with ``data_fidelity="l1"``). Larger
        values enforce the data more (less regularised, noisier), smaller ones regularise more
        and bias small, strong structures towards their surroundings.

    Returns
    -------
    ndarray
        Susceptibility (ppm, ``dtype``), zero outside ``mask``.

    References
    ----------
    Bilgic B, Fan AP, Polimeni JR, et al. Fast quantitative susceptibility mapping with
    L1-regularization and automatic parameter selection. Magn Reson Med 2014;72:1444-1459.
    Milovic C, Bilgic B, Zhao B, Acosta-Cabronero J, Tejos C. Fast nonlinear susceptibility
    inversion with variational regularization. Magn Reson Med 2018;80:814-821 (FANSI).
    Milovic C, Lambert M, Langkammer C, Bredies K, Irarrazaval P, Tejos C. Streaking artifact
    suppression of quantitative susceptibility mapping reconstructions via L1-norm data fidelity
    optimization (L1-QSM). Magn Reson Med 2022;87:457-473 (``data_fidelity="l1"``).
    """
    p = _Problem(local_ppm, mask, voxel_size, b0_dir, weights, pad_mm, dtype, workers)
    mu1 = 100.0 * alpha if mu1 is None else mu1
    return p.out(_tv_admm(p, alpha, mu1, mu2, n_iter, tol, name="tv_admm", info=info,
                          data_fidelity=data_fidelity, l1_threshold=l1_threshold))


def medi(local_ppm, mask, voxel_size, b0_dir=(0.0, 0.0, 1.0), weights=None, magnitude=None,
         alpha=3e-4, edge_fraction=0.3, mu1=None, mu2=1.0, n_iter=50, tol=1e-3, pad_mm=12.0,
         dtype=np.float32, workers=None, info=None, data_fidelity="l2", l1_threshold=1e-3):
    """Morphology-enabled dipole inversion (MEDI-like), linear data term, solved by ADMM.

    Minimises ``1/2 ||W (D chi - f)||^2 + alpha ||M_G . grad chi||_1`` where ``M_G`` is MEDI's
    binary gradient mask from the magnitude image (:func:`magnitude_edge_weights`: gradient
    components at magnitude edges are not penalised, so edges shared by magnitude and
    susceptibility are preserved) and ``W`` the data weights (MEDI uses the inverse noise SD of
    the field; pass the echo-fit reliability). Differences from the MEDI toolbox, stated: the data
    term is the linear ``||W (D chi - f)||`` instead of the nonlinear complex exponential
    (equivalent for the small local fields of brain tissue), the TV is anisotropic (the gradient
    mask acts per component), and the solver is ADMM (as in FANSI) rather than Gauss-Newton
    with CG. Without ``magnitude`` it warns and falls back to uniform weights (anisotropic TV).

    Parameters
    ----------
    local_ppm : ndarray
        Local field (ppm), used inside ``mask``.
    mask : ndarray of bool
        The (eroded) mask; ``chi`` is zero outside it.
    voxel_size : sequence of float
        Voxel size (mm).
    b0_dir : sequence of float
        Unit B0 direction in voxel axes.
    weights : ndarray, optional
        Data reliability (>= 0; normalised to mean 1 in the mask).
    magnitude : ndarray, optional
        Echo-combined magnitude (morphological prior).
    alpha : float
        TV weight (ppm mm).
    edge_fraction : float
        Fraction of gradient components treated as edges (:func:`magnitude_edge_weights`).
    mu1, mu2 : float, optional
        ADMM penalties (default ``mu1 = 100 * alpha``, ``mu2 = 1``, as in FANSI).
    n_iter, tol : int, float
        Maximum iterations and relative chi-update stopping tolerance.
    pad_mm : float
        Zero padding (mm) around the mask's bounding box.
    dtype : numpy dtype
        Working precision.
    workers : int, optional
        FFT threads (default: :func:`qsmprep.qsm.kernels.fft_workers`).
    info : dict, optional
        Filled with the convergence record (``method``, ``iterations``, ``max_iter``, ``tol``,
        ``final_change``, ``converged``).
    data_fidelity, l1_threshold : str, float
        Norm of the data term (``"l2"``, default, or ``"l1"``: L1-QSM) and the scale (ppm) of
        the L1 term, as for :func:`tv_admm`.

    Returns
    -------
    ndarray
        Susceptibility (ppm, ``dtype``), zero outside ``mask``.

    References
    ----------
    Liu T, Liu J, de Rochefort L, Spincemaille P, Khalidov I, Ledoux JR, Wang Y. Morphology
    enabled dipole inversion (MEDI) from a single-angle acquisition: comparison with COSMOS in
    human brain imaging. Magn Reson Med 2011;66:777-783.
    Liu J, Liu T, de Rochefort L, et al. Morphology enabled dipole inversion for quantitative
    susceptibility mapping using structural consistency between the magnitude image and the
    susceptibility map. NeuroImage 2012;59:2560-2568.
    de Rochefort L, Liu T, Kressler B, et al. Quantitative susceptibility map reconstruction
    from MR phase data using Bayesian regularization. Magn Reson Med 2010;63:194-206.
    Milovic C, Lambert M, Langkammer C, Bredies K, Irarrazaval P, Tejos C. Streaking artifact
    suppression of quantitative susceptibility mapping reconstructions via L1-norm data fidelity
    optimization (L1-QSM). Magn Reson Med 2022;87:457-473 (``data_fidelity="l1"``).
    """
    p = _Problem(local_ppm, mask, voxel_size, b0_dir, weights, pad_mm, dtype, workers)
    if magnitude is None:
        warnings.warn("medi: no magnitude given; using uniform gradient weights.", stacklevel=2)
        wg = np.ones((3,) + p.shape, p.dtype)
    else:
        mag = np.asarray(magnitude)
        if mag.shape[:3] != p.mask_full.shape:
            raise ValueError(f"magnitude shape {mag.shape} does not match mask {p.mask_full.shape}.")
        wg_full = magnitude_edge_weights(mag, p.mask_full, p.vox, edge_fraction)
        wg = np.stack([p.grid.embed(c, p.dtype) for c in wg_full])
        # outside the mask (zero-filled padding) keep regularising
        wg[:, p.m == 0] = 1.0
    mu1 = 100.0 * alpha if mu1 is None else mu1
    return p.out(_tv_admm(p, alpha, mu1, mu2, n_iter, tol, tv_weights=wg, name="medi", info=info,
                          data_fidelity=data_fidelity, l1_threshold=l1_threshold))


def rts(local_ppm, mask, voxel_size, b0_dir=(0.0, 0.0, 1.0), weights=None, magnitude=None,
        delta=0.15, mu=1e5, rho=10.0, n_iter=20, tol=1e-2, ls_iter=30, tau=0.7, gamma=5.0,
        step1="masked_cg", pad_mm=12.0, dtype=np.float32, workers=None, info=None):
    """Rapid two-step dipole inversion (RTS).

    Step 1: ``ls_iter`` (default 30) conjugate-gradient iterations of the
    weighted least-squares problem ``min ||W (D M x - f)||^2`` with ``x`` in the mask: accurate on
    the well-conditioned k-space region ``|D| > delta``. Step 2: total variation fills the
    ill-conditioned cone, ``min ||grad chi||_1 + mu/2 ||M_wc (F chi - F x_1)||^2`` by ADMM with a
    closed-form k-space chi-step (one real FFT pair per iteration), started from ``x_1``, with
    QSM.jl's adaptive penalty (``rho *= gamma`` whenever the primal residual falls by less than
    ``tau``). Defaults follow Kames et al. and QSM.jl (``delta=0.15, mu=1e5, rho=10, n_iter=20,
    tol=1e-2, tau=0.7, gamma=5``).

    Parameters
    ----------
    local_ppm : ndarray
        Local field (ppm), used inside ``mask``.
    mask : ndarray of bool
        The (eroded) mask; ``chi`` is zero outside it.
    voxel_size : sequence of float
        Voxel size (mm).
    b0_dir : sequence of float
        Unit B0 direction in voxel axes.
    weights : ndarray, optional
        Data reliability (>= 0; normalised to mean 1 in the mask).
    magnitude : ndarray, optional
        Echo-combined magnitude (morphological prior).
    delta : float
        ``|D|`` above which k-space is well conditioned (step 1).
    mu : float
        Data-consistency weight of step 2.
    rho : float
        Initial ADMM penalty of step 2.
    n_iter, tol : int, float
        Maximum step-2 iterations and relative stopping tolerance.
    ls_iter : int
        CG iterations of step 1.
    tau, gamma : float
        Adaptive penalty: ``rho *= gamma`` when the primal residual falls by less than ``tau``.
    step1 : str
        Step-1 solver: ``"masked_cg"`` (CG with ``x`` in the mask) or ``"kspace"``.
    pad_mm : float
        Zero padding (mm) around the mask's bounding box.
    dtype : numpy dtype
        Working precision.
    workers : int, optional
        FFT threads (default: :func:`qsmprep.qsm.kernels.fft_workers`).
    info : dict, optional
        Filled with the convergence record (``method``, ``iterations``, ``max_iter``, ``tol``,
        ``final_change``, ``converged``).

    Returns
    -------
    ndarray
        Susceptibility (ppm, ``dtype``), zero outside ``mask``.

    References
    ----------
    Kames C, Wiggermann V, Rauscher A. Rapid two-step dipole inversion for susceptibility mapping
    with sparsity priors. NeuroImage 2018;167:276-283.
    """
    p = _Problem(local_ppm, mask, voxel_size, b0_dir, weights, pad_mm, dtype, workers)
    dt = p.dtype.type
    d, m, w2 = p.d, p.m, p.w2
    tmp = np.empty(p.shape, p.dtype)

    def apply_n(x, res):
        np.multiply(x, m, out=tmp)
        y = p.conv_d(tmp)
        y *= w2
        res[...] = p.conv_d(y)
        res *= m

    if step1 == "kspace":
        # QSM.jl: LSMR on the diagonal k-space system D X = F f, then restricted to the mask
        from scipy.sparse.linalg import LinearOperator, lsmr

        fk = p.fft(p.f).astype(np.complex128)
        dflat = d.ravel().astype(fk.dtype)
        op = LinearOperator((dflat.size, dflat.size), matvec=lambda v: dflat * v.ravel(),
                            rmatvec=lambda v: dflat * v.ravel(), dtype=fk.dtype)
        xk = lsmr(op, fk.ravel(), atol=0, btol=0, maxiter=ls_iter)[0].reshape(fk.shape)
        x1 = p.ifft(xk.astype(fk.dtype)) * m
    elif step1 == "masked_cg":
        rhs = p.conv_d(w2 * p.f) * m
        x1, _, _ = _cg(apply_n, rhs, tol=1e-6, max_iter=ls_iter)
    else:
        raise ValueError(f"rts: unknown step1 {step1!r} (use 'kspace' or 'masked_cg').")
    wc = (np.abs(d) > delta).astype(p.dtype)
    g2 = grad_symbol_sq(p.shape, p.vox).astype(p.dtype)
    a = p.fft(x1)
    a *= wc
    a *= dt(mu)
    inv_den = np.empty_like(g2)

    def set_rho(r):
        den = dt(mu) * wc + dt(r) * g2
        inv_den[...] = 0
        np.divide(1.0, den, out=inv_den, where=den > 0)

    set_rho(rho)
    chi = x1.astype(p.dtype, copy=True)
    z = np.empty((3,) + p.shape, p.dtype)
    u = np.zeros((3,) + p.shape, p.dtype)
    g = np.empty((3,) + p.shape, p.dtype)
    nrm = np.empty(p.shape, p.dtype)
    prev = np.empty(p.shape, p.dtype)
    res_prev = np.inf
    change, converged, it = float("inf"), False, -1
    for it in range(n_iter):
        # z update (isotropic shrinkage at 1/rho) and scaled dual, from the current chi
        grad(chi, p.vox, g)
        u += g
        np.einsum("i...,i...->...", u, u, out=nrm)
        np.sqrt(nrm, out=nrm)
        np.maximum(nrm, dt(1e-12), out=nrm)
        np.divide(dt(1.0 / rho), nrm, out=nrm)
        np.subtract(dt(1), nrm, out=nrm)
        np.maximum(nrm, 0, out=nrm)
        np.multiply(u, nrm, out=z)
        u -= z
        # primal residual ||grad chi - z|| for the adaptive penalty
        np.subtract(g, z, out=g)
        res = float(np.sqrt(np.dot(g.ravel(), g.ravel())))
        # chi update: closed form in k-space
        np.subtract(z, u, out=g)
        grad_adj(g, p.vox, tmp)
        tmp *= dt(rho)
        rk = p.fft(tmp)
        rk += a
        rk *= inv_den
        prev[...] = chi
        chi[...] = p.ifft(rk)
        prev -= chi
        change = np.linalg.norm(prev) / max(np.linalg.norm(chi), 1e-30)
        LOGGER.debug("rts it %d: change %.3g, primal residual %.3g, rho %.3g", it, change, res, rho)
        if change < tol:
            converged = True
            break
        if res > tau * res_prev:  # slow primal convergence: raise rho (scaled dual shrinks)
            rho *= gamma
            u *= dt(1.0 / gamma)
            set_rho(rho)
        res_prev = res
    _record(info, "rts", it + 1, n_iter, tol, change, converged)
    return p.out(chi)


#: name -> function of every ``inversion`` record of :mod:`qsmprep.qsm.methods` (one record
#: there registers a new method)
METHODS = _registry.MethodTable("inversion")
DEFAULT = _registry.default("inversion")
