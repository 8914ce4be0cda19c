"""R2* and T2* from the multi-echo GRE magnitude (plain numpy, no I/O).

``METHODS`` entries share the signature ``f(mag4d, tes, mask) -> r2star`` (1/s, float32, zero
outside ``mask``); :func:`r2star_t2star` returns both maps (T2* in s).

* ``loglinear`` (default): weighted least-squares fit of ``log m_e = log S0 - R2* TE_e`` with
  weights ``m_e^2`` (the inverse variance of ``log m`` for Gaussian noise on ``m``), vectorised
  over voxels (its noise bias is measured by ``benchmarks/r2star.py``).
* ``arlo``: auto-regression on linear operations (Pei M et al. MRM 2015;73:843-850): with
  equally spaced echoes, Simpson's integral ``s_i`` of the decay over two echo spacings and the
  difference ``d_i = m_i - m_{i+2}`` satisfy ``d_i = R2* s_i`` for a mono-exponential decay, and
  R2* is their least-squares ratio; needs >= 3 equally spaced echoes.

``loglinear`` can first correct the magnitude for macroscopic dephasing by the field gradient
across each voxel (``field_correction="sinc"``, :func:`dephasing_factor`; needs the total field
map, which :func:`qsmprep.qsm.pipeline.run_r2star` passes on when it has one).

Both are exact for a noise-free mono-exponential decay (tested). Values are clipped to
``[0, r2star_max]`` (default 500 1/s: beyond it, with TE1 of a few ms, the signal is gone before
the first echo and the fit is meaningless); T2* is ``1 / R2*`` (0 where R2* is 0).

References
----------
Pei M, Nguyen TD, Thimmappa ND, et al. Algorithm for fast monoexponential fitting based on
Auto-Regression on Linear Operations (ARLO) of data. Magn Reson Med 2015;73:843-850.
Fernandez-Seara MA, Wehrli FW. Postprocessing technique to correct for background gradients in
image-based R2* measurements. Magn Reson Med 2000;44:358-366.
Yablonskiy DA, Sukstanskii AL, Luo J, Wang X. Voxel spread function method for correction of
magnetic field inhomogeneity effects in quantitative gradient-echo-based MRI. Magn Reson Med
2013;70:1283-1292.
Peters AM, Brookes MJ, Hoogenraad FG, et al. T2* measurements in human brain at 1.5, 3 and 7 T.
Magn Reson Imaging 2007;25:748-753 (typical R2* of brain tissue at 3 T).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from . import methods as _registry

R2STAR_MAX = 500.0
#: ``field_correction`` choices of :func:`r2star_loglinear`
FIELD_CORRECTIONS = ("none", "sinc")


def _inputs(mag4d, tes, mask, min_echoes=2):
    mag4d = np.asarray(mag4d)
    tes = np.asarray(tes, dtype=np.float64)
    if mag4d.ndim != 4 or mag4d.shape[-1] < min_echoes:
        raise ValueError(f"R2* needs 4-D magnitude with at least {min_echoes} echoes, got shape "
                         f"{mag4d.shape}.")
    if tes.shape != (mag4d.shape[-1],):
        raise ValueError(f"{mag4d.shape[-1]} echoes but {tes.size} echo times.")
    mask = np.asarray(mask, bool)
    if mask.shape != mag4d.shape[:3]:
        raise ValueError(f"mask shape {mask.shape} does not match magnitude {mag4d.shape[:3]}.")
    return mag4d, tes, mask


def _finish(values, mask, r2star_max):
    out = np.zeros(mask.shape, np.float32)
    out[mask] = np.clip(np.nan_to_num(values, nan=0.0, posinf=r2star_max), 0.0, r2star_max)
    return out


def field_gradients(field_hz, mask, voxel_size, smooth_mm=0.0):
    """Gradient of a field map along the three voxel axes, from voxels inside ``mask`` only.

    Central differences where both neighbours along an axis are in ``mask``, one-sided ones
    where only one is, zero where neither is (so the zero field outside the brain never enters).

    Parameters
    ----------
    field_hz : ndarray
        3-D field map (Hz).
    mask : ndarray of bool
        Voxels where the field is defined.
    voxel_size : sequence of float
        Voxel size (mm) along the three array axes.
    smooth_mm : float
        Sigma (mm) of a Gaussian applied to the field inside ``mask`` (normalised convolution)
        before differencing; 0 for none.

    Returns
    -------
    ndarray of float64
        ``(x, y, z, 3)``: the gradient (Hz/mm) along each array axis, zero outside ``mask``.

    Examples
    --------
    >>> import numpy as np
    >>> f = np.broadcast_to(np.arange(5.0) * 3.0, (5, 5)).T[:, :, None] * np.ones((1, 1, 4))
    >>> g = field_gradients(f, np.ones(f.shape, bool), (1.5, 1.0, 1.0))
    >>> [float(v) for v in g[2, 2, 2]]
    [2.0, 0.0, 0.0]
    """
    mask = np.asarray(mask, bool)
    f = np.asarray(field_hz, dtype=np.float64) * mask
    if smooth_mm and smooth_mm > 0:
        sig = [smooth_mm / float(v) for v in voxel_size]
        num = ndimage.gaussian_filter(f, sig, mode="nearest")
        den = ndimage.gaussian_filter(mask.astype(np.float64), sig, mode="nearest")
        f = np.where(mask, num / np.maximum(den, 1e-6), 0.0)
    out = np.zeros(mask.shape + (3,), np.float64)
    for ax in range(3):
        n = mask.shape[ax]
        fwd = np.zeros(mask.shape)
        ok_f = np.zeros(mask.shape, bool)
        lo, hi = [slice(None)] * 3, [slice(None)] * 3
        lo[ax], hi[ax] = slice(0, n - 1), slice(1, n)
        lo, hi = tuple(lo), tuple(hi)
        fwd[lo] = f[hi] - f[lo]
        ok_f[lo] = mask[hi] & mask[lo]
        bwd = np.zeros(mask.shape)
        ok_b = np.zeros(mask.shape, bool)
        bwd[hi] = f[hi] - f[lo]
        ok_b[hi] = mask[hi] & mask[lo]
        cnt = ok_f.astype(int) + ok_b
        tot = np.where(ok_f, fwd, 0.0) + np.where(ok_b, bwd, 0.0)
        out[..., ax] = np.where(cnt > 0, tot / np.maximum(cnt, 1), 0.0) / float(voxel_size[ax])
    return out


def dephasing_factor(field_hz, tes, mask, voxel_size, smooth_mm=0.0):
    """Signal attenuation by the macroscopic field gradient across each voxel, per echo.

    A field that varies linearly across a voxel of width ``d_k`` (box profile) along each voxel
    axis ``k`` with gradient ``G_k`` (Hz/mm) spreads the phase of its spins at echo time ``TE``
    over ``2 pi G_k d_k TE`` and multiplies the voxel's magnitude by
    ``F(TE) = prod_k |sinc(G_k d_k TE)|``, ``sinc(x) = sin(pi x) / (pi x)``
    (:func:`numpy.sinc`). Dividing each echo's magnitude by ``F`` leaves the tissue decay
    (Fernandez-Seara & Wehrli 2000; the voxel spread function of Yablonskiy et al. 2013 is the
    general form for a non-box voxel profile and a non-linear field).

    Parameters
    ----------
    field_hz : ndarray
        3-D total field (Hz), e.g. ``field_ppm * 1e-6 * gamma_bar * B0``.
    tes : sequence of float
        Echo times (s).
    mask : ndarray of bool
        Voxels where the field is defined (gradients use these only, see
        :func:`field_gradients`).
    voxel_size : sequence of float
        Voxel size (mm) along the array axes.
    smooth_mm : float
        Gaussian sigma (mm) applied to the field before differencing (0: none).

    Returns
    -------
    ndarray of float64
        ``(x, y, z, echo)`` factor in ``[0, 1]``; 1 outside ``mask``.

    References
    ----------
    Fernandez-Seara MA, Wehrli FW. Postprocessing technique to correct for background gradients
    in image-based R2* measurements. Magn Reson Med 2000;44:358-366.
    Yablonskiy DA, Sukstanskii AL, Luo J, Wang X. Voxel spread function method for correction of
    magnetic field inhomogeneity effects in quantitative gradient-echo-based MRI. Magn Reson Med
    2013;70:1283-1292.
    Dahnke H, Schaeffter T. Limits of detection of SPIO at 3.0 T using T2* relaxometry. Magn Reson
    Med 2005;53:1202-1206.

    Examples
    --------
    >>> import numpy as np
    >>> f = np.arange(6.0)[None, None, :] * np.ones((3, 3, 1)) * 10.0   # 10 Hz per voxel along z
    >>> F = dephasing_factor(f, [0.01, 0.05], np.ones(f.shape, bool), (1.0, 1.0, 1.0))
    >>> [round(float(v), 3) for v in F[1, 1, 2]]   # sinc(0.1), sinc(0.5)
    [0.984, 0.637]
    """
    mask = np.asarray(mask, bool)
    out = np.ones(mask.shape + (np.size(tes),), np.float64)
    out[mask] = _factor_in_mask(field_hz, tes, mask, voxel_size, smooth_mm)
    return out


def _factor_in_mask(field_hz, tes, mask, voxel_size, smooth_mm):
    """:func:`dephasing_factor` at the voxels of ``mask`` only, ``(n_voxels, n_echoes)``."""
    tes = np.asarray(tes, dtype=np.float64)
    g = field_gradients(field_hz, mask, voxel_size, smooth_mm)[mask]
    g *= np.asarray(voxel_size, float)                 # (n, 3): Hz across one voxel
    fac = np.ones((g.shape[0], tes.size))
    for k in range(3):
        fac *= np.abs(np.sinc(g[:, k, None] * tes[None, :]))
    return fac


def _wls_slope(m, w, tes):
    sw = w.sum(1)
    st = (w * tes).sum(1)
    stt = (w * tes**2).sum(1)
    y = np.log(m)
    sy = (w * y).sum(1)
    sty = (w * tes * y).sum(1)
    det = sw * stt - st**2
    ok = det > 1e-12 * np.maximum(sw * stt, 1e-300)
    return np.where(ok, (sw * sty - st * sy) / np.where(ok, det, 1.0), 0.0)


def r2star_loglinear(mag4d, tes, mask, r2star_max=R2STAR_MAX, field_correction="none",
                     correction_floor=0.3, correction_smooth_mm=0.0, field_hz=None,
                     voxel_size=None):
    """R2* by magnitude^2-weighted log-linear least squares (see the module docstring).

    Parameters
    ----------
    mag4d : ndarray
        4-D magnitude ``(x, y, z, echo)``, at least 2 echoes.
    tes : sequence of float
        Echo times (s).
    mask : ndarray of bool
        Voxels to fit.
    r2star_max : float
        Values are clipped to ``[0, r2star_max]`` (1/s).
    field_correction : {"none", "sinc"}
        ``"sinc"``: divide each echo's magnitude by :func:`dephasing_factor` (the attenuation by
        the field gradient across the voxel) before the fit, and leave out (zero weight) echoes
        whose factor is below ``correction_floor``; a voxel left with fewer than 2 echoes keeps
        its uncorrected fit. Needs ``field_hz`` and ``voxel_size``.
    correction_floor : float
        Echoes with a factor below this are left out (there the linear-gradient model fails and
        the division amplifies noise).
    correction_smooth_mm : float
        Gaussian sigma (mm) applied to the field before its gradient (0: none).
    field_hz : ndarray, optional
        3-D total field (Hz) on the magnitude's grid (``field_correction="sinc"`` only).
    voxel_size : sequence of float, optional
        Voxel size (mm) (``field_correction="sinc"`` only).

    Returns
    -------
    ndarray of float32
        R2* (1/s), zero outside ``mask``.

    Raises
    ------
    ValueError
        For an unknown ``field_correction``, or ``"sinc"`` without ``field_hz``/``voxel_size``.

    Examples
    --------
    >>> import numpy as np
    >>> tes = np.array([0.005, 0.010, 0.015])
    >>> mag = np.exp(-20.0 * tes)[None, None, None, :]
    >>> float(r2star_loglinear(mag, tes, np.ones((1, 1, 1), bool))[0, 0, 0])  # doctest: +ELLIPSIS
    20.0...
    """
    mag4d, tes, mask = _inputs(mag4d, tes, mask)
    if field_correction not in FIELD_CORRECTIONS:
        raise ValueError(f"Unknown field_correction {field_correction!r}; choose one of "
                         f"{list(FIELD_CORRECTIONS)}.")
    m = np.maximum(mag4d[mask].astype(np.float64), 1e-12)
    w = m**2
    slope = _wls_slope(m, w, tes)
    if field_correction == "sinc":
        if field_hz is None or voxel_size is None:
            raise ValueError("field_correction='sinc' needs the total field (field_hz) and the "
                             "voxel size.")
        field_hz = np.asarray(field_hz)
        if field_hz.shape != mask.shape:
            raise ValueError(f"field shape {field_hz.shape} does not match the magnitude "
                             f"{mask.shape}.")
        fac = _factor_in_mask(field_hz, tes, mask, voxel_size, correction_smooth_mm)
        keep = fac >= correction_floor
        wc = np.where(keep, w, 0.0)
        corr = _wls_slope(m / np.maximum(fac, 1e-12), wc, tes)
        slope = np.where(keep.sum(1) >= 2, corr, slope)
    return _finish(-slope, mask, r2star_max)


def r2star_arlo(mag4d, tes, mask, r2star_max=R2STAR_MAX, spacing_rtol=1e-3):
    """R2* by ARLO (auto-regression on linear operations); needs >= 3 equally spaced echoes.

    Parameters
    ----------
    mag4d : ndarray
        4-D magnitude ``(x, y, z, echo)``, at least 3 echoes.
    tes : sequence of float
        Echo times (s), equally spaced.
    mask : ndarray of bool
        Voxels to fit.
    r2star_max : float
        Values are clipped to ``[0, r2star_max]`` (1/s).
    spacing_rtol : float
        Relative tolerance of the echo-spacing equality check.

    Returns
    -------
    ndarray of float32
        R2* (1/s), zero outside ``mask``.

    Raises
    ------
    ValueError
        When the echoes are not equally spaced.

    References
    ----------
    Pei M, Nguyen TD, Thimmappa ND, et al. Algorithm for fast monoexponential fitting based on
    Auto-Regression on Linear Operations (ARLO) of data. Magn Reson Med 2015;73:843-850.
    """
    mag4d, tes, mask = _inputs(mag4d, tes, mask, min_echoes=3)
    dte = np.diff(tes)
    if not np.allclose(dte, dte[0], rtol=spacing_rtol, atol=0):
        raise ValueError(f"ARLO needs equally spaced echoes; spacings are {dte.tolist()} s "
                         "(use the 'loglinear' fit).")
    m = mag4d[mask].astype(np.float64)
    s = dte[0] / 3.0 * (m[:, :-2] + 4.0 * m[:, 1:-1] + m[:, 2:])
    d = m[:, :-2] - m[:, 2:]
    num = (s * d).sum(1)
    den = (s * s).sum(1)
    r2 = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return _finish(r2, mask, r2star_max)


#: name -> function of every ``relaxometry`` record of :mod:`qsmprep.qsm.methods` (one record
#: there registers a new method)
METHODS = _registry.MethodTable("relaxometry")
DEFAULT = _registry.default("relaxometry")


def r2star_t2star(mag4d, tes, mask, method=DEFAULT, **opts):
    """R2* and T2* maps with the named method.

    Parameters
    ----------
    mag4d : ndarray
        4-D magnitude ``(x, y, z, echo)``.
    tes : sequence of float
        Echo times (s).
    mask : ndarray of bool
        Voxels to fit.
    method : str
        A ``relaxometry`` method of :mod:`qsmprep.qsm.methods`.
    **opts
        Options of the method.

    Returns
    -------
    r2star : ndarray of float32
        R2* (1/s), zero outside ``mask``.
    t2star : ndarray of float32
        T2* = 1/R2* (s), zero where R2* is 0.

    Raises
    ------
    ValueError
        For an unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown R2* method {method!r}; choose one of {sorted(METHODS)}.")
    r2 = METHODS[method](mag4d, tes, mask, **opts)
    t2 = np.zeros_like(r2)
    np.divide(1.0, r2, out=t2, where=r2 > 0)
    return r2, t2.astype(np.float32)
