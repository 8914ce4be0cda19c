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

Both are exact for a noise-free mono-exponential decay (tested). Values are clipped to
``[0, r2star_max]`` (default 500 1/s: beyond it, with TE1 of a few ms, the signal is gone before
the first echo and the fit is meaningless); T2* is ``1 / R2*`` (0 where R2* is 0).

References
----------
Pei M, Nguyen TD, Thimmappa ND, et al. Algorithm for fast monoexponential fitting based on
Auto-Regression on Linear Operations (ARLO) of data. Magn Reson Med 2015;73:843-850.
Peters AM, Brookes MJ, Hoogenraad FG, et al. T2* measurements in human brain at 1.5, 3 and 7 T.
Magn Reson Imaging 2007;25:748-753 (typical R2* of brain tissue at 3 T).
"""

from __future__ import annotations

import numpy as np

from . import methods as _registry

R2STAR_MAX = 500.0


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


def r2star_loglinear(mag4d, tes, mask, r2star_max=R2STAR_MAX):
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

    Returns
    -------
    ndarray of float32
        R2* (1/s), zero outside ``mask``.

    Examples
    --------
    >>> import numpy as np
    >>> tes = np.array([0.005, 0.010, 0.015])
    >>> mag = np.exp(-20.0 * tes)[None, None, None, :]
    >>> float(r2star_loglinear(mag, tes, np.ones((1, 1, 1), bool))[0, 0, 0])  # doctest: +ELLIPSIS
    20.0...
    """
    mag4d, tes, mask = _inputs(mag4d, tes, mask)
    m = np.maximum(mag4d[mask].astype(np.float64), 1e-12)
    y = np.log(m)
    w = m**2
    sw = w.sum(1)
    st = (w * tes).sum(1)
    stt = (w * tes**2).sum(1)
    sy = (w * y).sum(1)
    sty = (w * tes * y).sum(1)
    det = sw * stt - st**2
    ok = det > 0
    slope = np.where(ok, (sw * sty - st * sy) / np.where(ok, det, 1.0), 0.0)
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
