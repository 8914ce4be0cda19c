"""Multi-echo combination: total field (Hz), phase offset and a reliability map.

Model (docs/architecture.md): ``phase_e = phi0 + 2 pi f TE_e`` with ``f`` in Hz. Both methods
return ``dict(field_hz, offset_rad, reliability, noise_std_hz, ...)``; ``reliability`` is in
``[0, 1]`` (1 = reliable) and is meant as a data weight for the inversion.

``nonlinear`` (default)
    Nonlinear complex fit of field and phase offset (Liu T, Wisnieff C, Lou M, Chen W, Spincemaille
    P, Wang Y. Nonlinear formulation of the magnetic field to source relationship for robust
    quantitative susceptibility mapping. Magn Reson Med 2013;69:467-476; MEDI toolbox
    ``Fit_ppm_complex``), then spatial unwrapping of the (echo-spacing aliased) field.
``linear``
    Offset removal (MCPC-3D-S, Eckstein K, et al. Magn Reson Med 2018;79:2996-3006), spatial
    unwrapping of the echo-difference phase, temporal unwrapping of every echo, and a
    magnitude-weighted least-squares fit of unwrapped phase against TE *with* an intercept.

The default follows the 2024 consensus (doi:10.1002/mrm.30006): combine echoes by a fit before
background removal, and use an exact (non-Laplacian) unwrapper (``romeo``) for quantification.

Noise model: complex Gaussian noise of standard deviation ``sigma`` per channel gives a phase
standard deviation ``sigma / m_e`` in echo ``e``, so the inverse-variance weight of echo ``e`` in
the fit of phase against TE is ``m_e^2`` (this is also what the complex residual
``sum |S_e - m_e exp(i(phi0 + 2 pi f TE_e))|^2`` weights by). The often quoted ``m^2 TE^2`` is the
corresponding weight when averaging per-echo field estimates ``phase_e / TE_e`` without an
intercept. ``sigma`` is estimated per voxel from the fit residual (``n_echo >= 3``, smoothed over
a few voxels) or, for 1-2 echoes, globally from the background magnitude outside the mask.
``noise_std_hz`` is the resulting standard deviation of the fitted field; ``reliability =
min(1, median(noise_std_hz in mask) / noise_std_hz)``.

Single echo: ``field = unwrapped phase / (2 pi TE)`` with the phase offset assumed to be 0.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from . import methods as _registry
from . import unwrap as _unwrap
from .phase import wrap_to_pi

TWO_PI = 2.0 * np.pi


def _get_unwrapper(unwrapping):
    if callable(unwrapping):
        return unwrapping
    try:
        return _unwrap.METHODS[unwrapping]
    except KeyError as exc:
        raise ValueError(
            f"Unknown unwrapping method {unwrapping!r}; choose from {sorted(_unwrap.METHODS)}"
        ) from exc


def _prepare(phase4d, mag4d, tes, mask):
    phase4d = np.asarray(phase4d)
    mag4d = np.asarray(mag4d)
    if phase4d.ndim == 3:
        phase4d = phase4d[..., None]
    if mag4d.ndim == 3:
        mag4d = mag4d[..., None]
    tes = np.atleast_1d(np.asarray(tes, dtype=np.float64))
    if phase4d.shape != mag4d.shape:
        raise ValueError(f"phase {phase4d.shape} and magnitude {mag4d.shape} shapes differ")
    if phase4d.shape[-1] != tes.size:
        raise ValueError(f"{phase4d.shape[-1]} echoes but {tes.size} echo times")
    if np.any(np.diff(tes) <= 0) or tes[0] <= 0:
        raise ValueError(f"Echo times must be positive and ascending (s): {tes}")
    mask = np.ones(phase4d.shape[:3], bool) if mask is None else np.asarray(mask, bool)
    return phase4d, mag4d, tes, mask


def _background_sigma(mag1, mask) -> float:
    """Noise sigma from the magnitude outside the (dilated) mask: Rayleigh median = sigma*sqrt(2 ln 2)."""
    outside = ~ndi.binary_dilation(mask, iterations=3)
    vals = mag1[outside]
    vals = vals[vals > 0]
    if vals.size < 100:
        vals = mag1[mask]
        return float(np.percentile(vals, 5)) * 0.05 if vals.size else 1.0
    return float(np.median(vals)) / np.sqrt(2.0 * np.log(2.0))


def _smooth_in_mask(values, mask, sigma_vox=1.5):
    num = ndi.gaussian_filter(np.where(mask, values, 0.0), sigma_vox)
    den = ndi.gaussian_filter(mask.astype(np.float64), sigma_vox)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mask, num / np.maximum(den, 1e-6), 0.0)


def _noise_and_reliability(w, t, resid, mask, mag1, shape, noise_sigma=None):
    """Field noise (Hz) of a weighted LS line fit and the 0..1 reliability map.

    w: (n, e) weights m^2, t: (e,), resid: (n, e) wrapped phase residuals or None.
    """
    n_e = t.size
    sw = w.sum(axis=1)
    tbar = (w * t).sum(axis=1) / np.maximum(sw, 1e-30)
    stt = (w * (t[None, :] - tbar[:, None]) ** 2).sum(axis=1) if n_e > 1 else (w * t**2).sum(axis=1)
    if resid is not None and n_e >= 3:
        s2 = (w * resid**2).sum(axis=1) / (n_e - 2)
        s2_map = np.zeros(shape)
        s2_map[mask] = s2
        s2 = _smooth_in_mask(s2_map, mask)[mask]
    else:
        sig = _background_sigma(mag1, mask) if noise_sigma is None else float(noise_sigma)
        s2 = np.full(sw.shape, sig**2)
    noise = np.sqrt(s2 / np.maximum(stt, 1e-30)) / TWO_PI
    noise_map = np.zeros(shape, np.float32)
    noise_map[mask] = noise
    rel = np.zeros(shape, np.float32)
    if noise.size:
        med = np.median(noise)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(noise > 0, np.minimum(1.0, med / noise), 1.0)
        rel[mask] = r
    return noise_map, rel


def _wls_line(psi, w, t):
    """Weighted LS fit psi = c + s t per row; returns slope s, intercept c."""
    sw = w.sum(axis=1)
    st = (w * t).sum(axis=1)
    stt = (w * t * t).sum(axis=1)
    sy = (w * psi).sum(axis=1)
    sty = (w * t * psi).sum(axis=1)
    det = sw * stt - st * st
    ok = det > 1e-30 * np.maximum(sw * stt, 1e-300)
    det = np.where(ok, det, 1.0)
    s = np.where(ok, (sw * sty - st * sy) / det, sty / np.maximum(stt, 1e-30))
    c = np.where(ok, (stt * sy - st * sty) / det, 0.0)
    return s, c


def _cropped(func, phase4d, mag4d, tes, mask, voxel_size, margin: int = 2, **kw):
    """Run ``func`` (with ``crop=False``) on the mask's bounding box and paste the results back."""
    if not mask.any():
        sl = tuple(slice(0, n) for n in mask.shape)
    else:
        sl = []
        for ax in range(3):
            other = tuple(a for a in range(3) if a != ax)
            idx = np.flatnonzero(mask.any(axis=other))
            sl.append(slice(max(int(idx[0]) - margin, 0), min(int(idx[-1]) + margin + 1, mask.shape[ax])))
        sl = tuple(sl)
    if tes.size <= 2 and kw.get("noise_sigma") is None:
        kw["noise_sigma"] = _background_sigma(mag4d[..., 0], mask)  # needs the full FOV
    res = func(phase4d[sl], mag4d[sl], tes, mask[sl], voxel_size, crop=False, **kw)
    sub_shape = mask[sl].shape
    out = {}
    for key, val in res.items():
        if isinstance(val, np.ndarray) and val.shape[:3] == sub_shape:
            full = np.zeros(mask.shape + val.shape[3:], dtype=val.dtype)
            full[sl] = val
            out[key] = full
        else:
            out[key] = val
    return out


def _single_echo(phase4d, mag4d, tes, mask, voxel_size, unwrapping, noise_sigma=None, **uw_opts):
    unw = _get_unwrapper(unwrapping)
    u = unw(phase4d[..., 0], voxel_size, mask=mask, mag=mag4d[..., 0], **uw_opts)
    field = np.zeros(mask.shape, np.float32)
    field[mask] = u[mask] / (TWO_PI * tes[0])
    w = (mag4d[..., 0][mask].astype(np.float64) ** 2)[:, None]
    noise, rel = _noise_and_reliability(w, tes, None, mask, mag4d[..., 0], mask.shape, noise_sigma)
    return {
        "field_hz": field,
        "offset_rad": np.zeros(mask.shape, np.float32),
        "reliability": rel,
        "noise_std_hz": noise,
        "method": "single-echo",
        "unwrapping": getattr(unw, "__name__", str(unw)),
    }


def mcpc3ds_offset(phase4d, mag4d, tes, mask, voxel_size, unwrapping="romeo", sigma_mm=4.0,
                   **uw_opts):
    """Phase offset by MCPC-3D-S.

    ``phi0 = phi_1 - TE_1 / (TE_2 - TE_1) * unwrap(phi_2 - phi_1)``, smoothed as a complex
    magnitude-weighted image (Gaussian, ``sigma_mm``) because the offset is spatially smooth.

    Parameters
    ----------
    phase4d, mag4d : ndarray
        ``(x, y, z, echo)`` wrapped phase (radians) and magnitude.
    tes : sequence of float
        Echo times (s).
    mask : ndarray of bool
        Brain mask; outputs are 0 outside it.
    voxel_size : sequence of float
        Voxel size (mm).
    unwrapping : str or callable
        An ``unwrapping`` method of :mod:`qsmprep.qsm.methods` (or an unwrapping function).
    sigma_mm : float
        Gaussian sigma (mm) of the offset smoothing.
    **uw_opts
        Options of the unwrapper.

    Returns
    -------
    offset : ndarray
        Wrapped phase offset (radians), 0 outside ``mask``.
    diff_unwrapped : ndarray
        The unwrapped echo-difference phase.

    References
    ----------
    Eckstein K, et al. Computationally efficient combination of multi-channel phase data from
    multi-echo acquisitions (ASPIRE). Magn Reson Med 2018;79:2996-3006.
    """
    unw = _get_unwrapper(unwrapping)
    dte = tes[1] - tes[0]
    z21 = mag4d[..., 0] * mag4d[..., 1] * np.exp(1j * (phase4d[..., 1] - phase4d[..., 0]))
    d = np.angle(z21).astype(np.float32)
    d_u = unw(d, voxel_size, mask=mask, mag=mag4d[..., 0], **uw_opts).astype(np.float64)
    off = phase4d[..., 0] - d_u * (tes[0] / dte)
    z = np.where(mask, mag4d[..., 0] * np.exp(1j * off), 0.0)
    sig = [sigma_mm / float(v) for v in voxel_size]
    zs = ndi.gaussian_filter(z.real, sig) + 1j * ndi.gaussian_filter(z.imag, sig)
    off_s = np.where(mask, np.angle(zs), 0.0)
    return off_s, d_u


def fit_linear(phase4d, mag4d, tes, mask, voxel_size, unwrapping="romeo", offset_sigma_mm=4.0,
               crop: bool = True, noise_sigma=None, **uw_opts):
    """Magnitude-weighted linear fit of unwrapped phase against TE, with intercept.

    Steps: (1) phase offset by MCPC-3D-S (:func:`mcpc3ds_offset`, which spatially unwraps the
    echo-difference phase with ``unwrapping``); (2) temporal unwrapping: offset-corrected echoes are
    unwrapped one after the other, each to the ``2 pi`` multiple nearest to the prediction of the
    field fitted to the echoes before it (starting from the echo-difference field; ROMEO's temporal
    unwrapping made robust to noise in early echoes); (3) weighted least squares
    ``psi_e = c + 2 pi f TE_e`` with weights ``m_e^2`` (inverse phase variance; see module notes);
    the intercept ``c`` absorbs what the smoothed offset missed. ``offset_rad = wrap(phi0 + c)``.

    Parameters
    ----------
    phase4d, mag4d : ndarray
        ``(x, y, z, echo)`` wrapped phase (radians) and magnitude.
    tes : sequence of float
        Echo times (s).
    mask : ndarray of bool
        Brain mask; outputs are 0 outside it.
    voxel_size : sequence of float
        Voxel size (mm).
    unwrapping : str or callable
        An ``unwrapping`` method of :mod:`qsmprep.qsm.methods` (or an unwrapping function).
    offset_sigma_mm : float
        Gaussian sigma (mm) of the MCPC-3D-S offset smoothing.
    crop : bool
        Work on the bounding box of the mask (identical result for the exact unwrappers).
    noise_sigma : float, optional
        Noise standard deviation of the magnitude (default: estimated, see the module docstring).
    **uw_opts
        Options of the unwrapper.

    Returns
    -------
    dict
        ``field_hz``, ``offset_rad``, ``reliability`` (0..1), ``noise_std_hz``,
        ``unwrapped_phase`` (4-D, offset removed), ``method``, ``unwrapping``.

    References
    ----------
    Eckstein K, et al. Magn Reson Med 2018;79:2996-3006 (MCPC-3D-S). Dymerska B, et al. Magn Reson
    Med 2021;85:2294-2308 (ROMEO, temporal unwrapping). Robinson SD, et al. NMR Biomed
    2017;30:e3601 (multi-echo combination review).
    """
    phase4d, mag4d, tes, mask = _prepare(phase4d, mag4d, tes, mask)
    if crop:
        return _cropped(fit_linear, phase4d, mag4d, tes, mask, voxel_size, unwrapping=unwrapping,
                        offset_sigma_mm=offset_sigma_mm, noise_sigma=noise_sigma, **uw_opts)
    if tes.size == 1:
        return _single_echo(phase4d, mag4d, tes, mask, voxel_size, unwrapping, noise_sigma, **uw_opts)
    shape = mask.shape
    off, d_u = mcpc3ds_offset(phase4d, mag4d, tes, mask, voxel_size, unwrapping,
                              sigma_mm=offset_sigma_mm, **uw_opts)
    dte = tes[1] - tes[0]
    psi = wrap_to_pi(phase4d[mask].astype(np.float64) - off[mask][:, None])
    w = mag4d[mask].astype(np.float64) ** 2
    n_e = tes.size
    slope = d_u[mask] / dte  # rad/s
    psi_u = np.empty_like(psi)
    for e in range(n_e):
        pred = slope * tes[e]
        psi_u[:, e] = psi[:, e] + TWO_PI * np.round((pred - psi[:, e]) / TWO_PI)
        if e >= 1:
            ww = w[:, : e + 1]
            tt = tes[: e + 1]
            slope = (ww * tt * psi_u[:, : e + 1]).sum(axis=1) / np.maximum((ww * tt * tt).sum(axis=1), 1e-30)
            # keep the first estimate where the weights vanish
            slope = np.where(np.isfinite(slope), slope, d_u[mask] / dte)
    s, c = _wls_line(psi_u, w, tes)
    resid = psi_u - (c[:, None] + s[:, None] * tes[None, :])
    noise, rel = _noise_and_reliability(w, tes, resid, mask, mag4d[..., 0], shape, noise_sigma)
    field = np.zeros(shape, np.float32)
    field[mask] = s / TWO_PI
    offset = np.zeros(shape, np.float32)
    offset[mask] = wrap_to_pi(off[mask] + c)
    unwrapped = np.zeros(phase4d.shape, np.float32)
    unwrapped[mask] = psi_u
    return {
        "field_hz": field,
        "offset_rad": offset,
        "reliability": rel,
        "noise_std_hz": noise,
        "unwrapped_phase": unwrapped,
        "method": "linear",
        "unwrapping": unwrapping if isinstance(unwrapping, str) else getattr(unwrapping, "__name__", ""),
    }


def _initial_estimate(phi, mg, tes):
    """Start of the nonlinear fit (numpy reference of :func:`_initial_estimate_fast`).

    ``omega = angle(sum_e S_e+1 conj(S_e)) / dTE`` (only the first pair for non-uniform echo
    spacing) and ``phi0 = angle(sum_e S_e exp(-i omega TE_e))`` with ``S = m exp(i phi)``.

    Parameters
    ----------
    phi, mg : ndarray
        ``(n_voxels, n_echo)`` wrapped phase (rad) and magnitude, ``n_echo >= 2``.
    tes : ndarray
        ``(n_echo,)`` echo times (s).

    Returns
    -------
    omega, phi0 : ndarray
        ``(n_voxels,)`` angular frequency (rad/s) and phase offset (rad).
    """
    s = mg * np.exp(1j * phi)
    dte = tes[1] - tes[0]
    # initial estimate from consecutive-echo Hermitian products (uniform-spacing assumption)
    hp = s[:, 1:] * np.conj(s[:, :-1])
    if _uniform_spacing(tes):
        omega = np.angle(hp.sum(axis=1)) / dte
    else:
        omega = np.angle(hp[:, 0]) / dte
    phi0 = np.angle((s * np.exp(-1j * omega[:, None] * tes[None, :])).sum(axis=1))
    return omega, phi0


def _uniform_spacing(tes):
    dt = np.diff(tes)
    return bool(np.allclose(dt, dt[0], rtol=1e-3))


@_unwrap._jit
def _initial_estimate_kernel(phi, mg, t, n_pairs, omega, phi0):  # pragma: no cover - numba
    """numba body of :func:`_initial_estimate_fast` (fills ``omega`` and ``phi0``)."""
    n, n_e = phi.shape
    dte = t[1] - t[0]
    re = np.empty(n_e)
    im = np.empty(n_e)
    for i in range(n):
        # complex products written out as numpy evaluates them (signed zeros included: they
        # decide angle() of a voxel without signal)
        for e in range(n_e):
            c = np.cos(phi[i, e])
            sn = np.sin(phi[i, e])
            re[e] = mg[i, e] * c - 0.0 * sn
            im[e] = mg[i, e] * sn + 0.0 * c
        if n_pairs == 1:  # S_2 conj(S_1), no summation
            hr = re[1] * re[0] - im[1] * (-im[0])
            hi = re[1] * (-im[0]) + im[1] * re[0]
        else:  # numpy's sum starts from +0
            hr = 0.0
            hi = 0.0
            for e in range(n_pairs):  # S_e+1 conj(S_e)
                hr += re[e + 1] * re[e] - im[e + 1] * (-im[e])
                hi += re[e + 1] * (-im[e]) + im[e + 1] * re[e]
        om = np.arctan2(hi, hr) / dte
        sr = 0.0
        si = 0.0
        for e in range(n_e):  # S_e exp(-i om t_e)
            c = np.cos(om * t[e])
            sn = np.sin(om * t[e])
            sr += re[e] * c + im[e] * sn
            si += im[e] * c - re[e] * sn
        omega[i] = om
        phi0[i] = np.arctan2(si, sr)


def _initial_estimate_fast(phi, mg, tes):
    """Compiled :func:`_initial_estimate` (one pass, no complex temporaries); same parameters
    and returns."""
    phi = np.ascontiguousarray(phi, dtype=np.float64)
    mg = np.ascontiguousarray(mg, dtype=np.float64)
    tes = np.ascontiguousarray(tes, dtype=np.float64)
    n_pairs = tes.size - 1 if _uniform_spacing(tes) else 1
    omega = np.empty(phi.shape[0])
    phi0 = np.empty(phi.shape[0])
    _initial_estimate_kernel(phi, mg, tes, n_pairs, omega, phi0)
    return omega, phi0


def _gauss_newton(phi, w, t, omega, phi0, n_iter, tol=1e-6):
    """Vectorised Gauss-Newton for min sum_e w_e |exp(i phi_e) - exp(i(phi0 + omega t_e))|^2.

    With theta_e = phi0 + omega t_e, the normal equations reduce to a 2x2 weighted LS problem on
    ``sin(phi_e - theta_e)`` (Liu et al. 2013). Each voxel stops after the iteration whose
    updates of ``phi0`` and ``omega * TE_last`` are both below ``tol`` (rad); the loop ends when
    every voxel has stopped or after ``n_iter`` iterations (a voxel with a NaN update never
    stops). Before, every voxel iterated until the last one converged: on a 1 mm head 99.9 % of
    the voxels stop within 3 iterations, and a single slow voxel kept all of them iterating to
    the cap. Freezing them changed that head's field in one voxel, by 6e-8 ppm
    (docs/registration.md, "thirteenth session").
    """
    sw = w.sum(axis=1)
    st = (w * t).sum(axis=1)
    stt = (w * t * t).sum(axis=1)
    det = sw * stt - st * st
    det = np.where(np.abs(det) > 0, det, 1.0)
    omega = np.array(omega, dtype=np.float64, copy=True)
    phi0 = np.array(phi0, dtype=np.float64, copy=True)
    active = np.arange(phi.shape[0])
    n_done = 0
    for _ in range(int(n_iter)):
        if active.size == 0:
            break
        p0, om, ww = phi0[active], omega[active], w[active]
        r = np.sin(phi[active] - (p0[:, None] + om[:, None] * t[None, :]))
        b0 = (ww * r).sum(axis=1)
        b1 = (ww * t * r).sum(axis=1)
        d_phi0 = (stt[active] * b0 - st[active] * b1) / det[active]
        d_om = (sw[active] * b1 - st[active] * b0) / det[active]
        phi0[active] = p0 + d_phi0
        omega[active] = om + d_om
        n_done += 1
        active = active[~((np.abs(d_om * t[-1]) < tol) & (np.abs(d_phi0) < tol))]
    return omega, phi0, n_done


@_unwrap._jit
def _gauss_newton_kernel(phi, w, t, omega, phi0, n_iter, tol):  # pragma: no cover - numba
    """numba body of :func:`_gauss_newton_fast` (updates ``omega``/``phi0`` in place)."""
    n, n_e = phi.shape
    sw = np.empty(n)
    st = np.empty(n)
    stt = np.empty(n)
    det = np.empty(n)
    for i in range(n):
        a = 0.0
        b = 0.0
        c = 0.0
        for e in range(n_e):
            a += w[i, e]
            b += w[i, e] * t[e]
            c += w[i, e] * t[e] * t[e]
        sw[i] = a
        st[i] = b
        stt[i] = c
        d = a * c - b * b
        det[i] = d if abs(d) > 0 else 1.0
    t_last = t[n_e - 1]
    active = np.arange(n)  # voxels still iterating, compacted after each pass
    n_active = n
    n_done = 0
    for _ in range(n_iter):
        if n_active == 0:
            break
        k = 0
        for j in range(n_active):
            i = active[j]
            b0 = 0.0
            b1 = 0.0
            p0 = phi0[i]
            om = omega[i]
            for e in range(n_e):
                r = np.sin(phi[i, e] - (p0 + om * t[e]))
                b0 += w[i, e] * r
                b1 += w[i, e] * t[e] * r
            d_phi0 = (stt[i] * b0 - st[i] * b1) / det[i]
            d_om = (sw[i] * b1 - st[i] * b0) / det[i]
            phi0[i] = p0 + d_phi0
            omega[i] = om + d_om
            if not (abs(d_om * t_last) < tol and abs(d_phi0) < tol):  # NaN: keeps iterating
                active[k] = i
                k += 1
        n_active = k
        n_done += 1
    return n_done


def _gauss_newton_fast(phi, w, t, omega, phi0, n_iter, tol=1e-6):
    """Compiled :func:`_gauss_newton` (same iterations and per-voxel stopping rule, one pass
    over the voxels still iterating per iteration, without temporaries).

    Parameters
    ----------
    phi, w : ndarray
        ``(n_voxels, n_echo)`` wrapped phase (rad) and weights ``m^2``.
    t : ndarray
        ``(n_echo,)`` echo times (s).
    omega, phi0 : ndarray
        ``(n_voxels,)`` starting angular frequency (rad/s) and phase offset (rad); not modified.
    n_iter : int
        Maximum iterations.
    tol : float
        A voxel stops after the iteration whose updates of ``phi0`` and ``omega * TE_last`` are
        below ``tol`` (rad); the loop ends when all have stopped.

    Returns
    -------
    omega, phi0 : ndarray
        The fitted values.
    n_done : int
        Iterations run.
    """
    phi = np.ascontiguousarray(phi, dtype=np.float64)
    w = np.ascontiguousarray(w, dtype=np.float64)
    t = np.ascontiguousarray(t, dtype=np.float64)
    omega = np.array(omega, dtype=np.float64, copy=True)
    phi0 = np.array(phi0, dtype=np.float64, copy=True)
    n_done = _gauss_newton_kernel(phi, w, t, omega, phi0, int(n_iter), float(tol))
    return omega, phi0, int(n_done)


def fit_nonlinear(phase4d, mag4d, tes, mask, voxel_size, unwrapping="romeo", n_iter: int = 30,
                  crop: bool = True, noise_sigma=None, **uw_opts):
    """Nonlinear complex fit of field and phase offset, then spatial unwrapping of the field.

    Minimises ``sum_e m_e^2 |exp(i phi_e) - exp(i (phi0 + 2 pi f TE_e))|^2`` per voxel by
    Gauss-Newton (at most ``n_iter`` iterations; each voxel stops once its updates are below
    1e-6 rad, :func:`_gauss_newton`). The start is
    ``2 pi f = angle(sum_e S_e+1 conj(S_e)) / dTE`` and ``phi0 = angle(sum_e S_e exp(-i 2 pi f TE_e))``.
    The fitted field is only determined modulo ``1 / dTE`` (dTE = first echo spacing): the
    aliased ``wrap(2 pi f dTE)`` is spatially unwrapped with ``unwrapping``, ``phi0`` is shifted
    consistently (``phi0 -= 2 pi (f_unwrapped - f) TE_1``) and Gauss-Newton is run again to refine
    both (exact for uniform echo spacing; a refinement for non-uniform spacing).

    Parameters
    ----------
    phase4d, mag4d : ndarray
        ``(x, y, z, echo)`` wrapped phase (radians) and magnitude.
    tes : sequence of float
        Echo times (s).
    mask : ndarray of bool
        Brain mask; outputs are 0 outside it.
    voxel_size : sequence of float
        Voxel size (mm).
    unwrapping : str or callable
        An ``unwrapping`` method of :mod:`qsmprep.qsm.methods` (or an unwrapping function).
    n_iter : int
        Maximum Gauss-Newton iterations.
    crop : bool
        Work on the bounding box of the mask (identical result for the exact unwrappers).
    noise_sigma : float, optional
        Noise standard deviation of the magnitude (default: estimated, see the module docstring).
    **uw_opts
        Options of the unwrapper.

    Returns
    -------
    dict
        ``field_hz``, ``offset_rad``, ``reliability`` (0..1), ``noise_std_hz``, ``n_iter``,
        ``method``, ``unwrapping``.

    References
    ----------
    Liu T, Wisnieff C, Lou M, et al. Nonlinear formulation of the magnetic field to source
    relationship for robust quantitative susceptibility mapping. Magn Reson Med 2013;69:467-476
    (MEDI toolbox ``Fit_ppm_complex``).
    """
    phase4d, mag4d, tes, mask = _prepare(phase4d, mag4d, tes, mask)
    if crop:
        return _cropped(fit_nonlinear, phase4d, mag4d, tes, mask, voxel_size, unwrapping=unwrapping,
                        n_iter=n_iter, noise_sigma=noise_sigma, **uw_opts)
    if tes.size == 1:
        return _single_echo(phase4d, mag4d, tes, mask, voxel_size, unwrapping, noise_sigma, **uw_opts)
    shape = mask.shape
    unw = _get_unwrapper(unwrapping)
    phi = phase4d[mask].astype(np.float64)
    mg = mag4d[mask].astype(np.float64)
    w = mg**2
    dte = tes[1] - tes[0]
    omega, phi0 = _initial_estimate_fast(phi, mg, tes)
    omega, phi0, n_done = _gauss_newton_fast(phi, w, tes, omega, phi0, n_iter)
    # spatial unwrapping of the aliased field
    aliased = np.zeros(shape, np.float32)
    aliased[mask] = wrap_to_pi(omega * dte)
    u = unw(aliased, voxel_size, mask=mask, mag=mag4d[..., 0], **uw_opts).astype(np.float64)
    # keep the fitted value, shifted by the integer number of periods found by the unwrapper
    k = np.round((u[mask] - omega * dte) / TWO_PI)
    omega_new = omega + TWO_PI * k / dte
    phi0 = phi0 - (omega_new - omega) * tes[0]
    omega, phi0, n2 = _gauss_newton_fast(phi, w, tes, omega_new, phi0, n_iter)
    resid = wrap_to_pi(phi - (phi0[:, None] + omega[:, None] * tes[None, :]))
    noise, rel = _noise_and_reliability(w, tes, resid, mask, mag4d[..., 0], shape, noise_sigma)
    field = np.zeros(shape, np.float32)
    field[mask] = omega / TWO_PI
    offset = np.zeros(shape, np.float32)
    offset[mask] = wrap_to_pi(phi0)
    return {
        "field_hz": field,
        "offset_rad": offset,
        "reliability": rel,
        "noise_std_hz": noise,
        "n_iter": int(n_done + n2),
        "method": "nonlinear",
        "unwrapping": unwrapping if isinstance(unwrapping, str) else getattr(unw, "__name__", ""),
    }


def fit_single_echo(phase4d, mag4d, tes, mask, voxel_size, unwrapping="romeo", crop: bool = True,
                    noise_sigma=None, **uw_opts):
    """Single echo: ``field = unwrap(phase) / (2 pi TE)``, offset assumed 0 (uses echo 1 only).

    Parameters
    ----------
    phase4d, mag4d : ndarray
        ``(x, y, z, echo)`` wrapped phase (radians) and magnitude.
    tes : sequence of float
        Echo times (s).
    mask : ndarray of bool
        Brain mask; outputs are 0 outside it.
    voxel_size : sequence of float
        Voxel size (mm).
    unwrapping : str or callable
        An ``unwrapping`` method of :mod:`qsmprep.qsm.methods` (or an unwrapping function).
    crop : bool
        Work on the bounding box of the mask (identical result for the exact unwrappers).
    noise_sigma : float, optional
        Noise standard deviation of the magnitude (default: estimated, see the module docstring).
    **uw_opts
        Options of the unwrapper.

    Returns
    -------
    dict
        ``field_hz``, ``offset_rad`` (0), ``reliability`` (0..1), ``noise_std_hz``, ``method``,
        ``unwrapping``.
    """
    phase4d, mag4d, tes, mask = _prepare(phase4d, mag4d, tes, mask)
    if crop:
        return _cropped(fit_single_echo, phase4d, mag4d, tes, mask, voxel_size,
                        unwrapping=unwrapping, noise_sigma=noise_sigma, **uw_opts)
    return _single_echo(phase4d[..., :1], mag4d[..., :1], tes[:1], mask, voxel_size, unwrapping,
                        noise_sigma, **uw_opts)


#: name -> function of every ``combination`` record of :mod:`qsmprep.qsm.methods` (one record
#: there registers a new method)
METHODS = _registry.MethodTable("combination")
DEFAULT = _registry.default("combination")
