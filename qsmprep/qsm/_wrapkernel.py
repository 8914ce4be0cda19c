"""Compiled loops of :func:`qsmprep.qsm.phase.wrap_to_pi` and of the phase rescaling of
:func:`qsmprep.qsm.phase.detect_and_rescale_phase` (imported lazily: numba is heavy)."""

from __future__ import annotations

import math

from numba import njit


def _jit(fn):
    try:
        return njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # no writable cache locator
        return njit(nogil=True)(fn)


@_jit
def wrap_one(y, b, p):  # pragma: no cover - numba
    """``np.mod(y, b) - p`` of one value for ``-b <= y < 2 b``, bit for bit, in ``y``'s type.

    With ``b > 0``, numpy's float remainder is ``y`` on ``[0, b)``, ``y + b`` (rounded the same
    way) on ``[-b, 0)`` (``+0`` at ``y = -b``) and the exact ``y - b`` on ``[b, 2b)``.

    Returns
    -------
    (float, bool)
        The wrapped value, and False (value ``y - p``, not meaningful) for other ``y`` and NaN.
    """
    if y >= 0 and y < b:
        return y - p, True
    if y < 0 and y >= -b:
        return (y + b) - p, True
    if y >= b and y < b + b:
        return (y - b) - p, True
    return y - p, False


@_jit
def wrap_add(x, b, p, out):  # pragma: no cover - numba
    """``out = np.mod(x + p, b) - p`` for ``-b <= x + p < 2 b``, bit for bit, in ``x``'s precision.

    ``y = x + p`` is rounded in ``x``'s type, as numpy's ``x + np.pi`` is for a float32 or
    float64 array, then wrapped by :func:`wrap_one`. Other values (and NaN) are left as
    ``y - p`` and counted; the caller redoes them with ``np.mod``. One pass, no temporary.

    Parameters
    ----------
    x, out : ndarray
        1-D arrays of one floating type.
    b, p : float
        ``2 pi`` and ``pi`` in that type.

    Returns
    -------
    int
        Number of values with ``x + p`` outside ``[-b, 2b)`` (or NaN).
    """
    n_rest = 0
    for i in range(x.size):
        r, ok = wrap_one(x[i] + p, b, p)
        out[i] = r
        if not ok:
            n_rest += 1
    return n_rest


@_jit
def rescale_wrap(values, scale, offset, apply_scale, b, p, out):  # pragma: no cover - numba
    """Phase rescaling and wrapping in one pass, float64 arithmetic, float32 result.

    numpy equivalent (``values`` any real type, ``out`` float32)::

        v = values.astype(np.float64); v[~np.isfinite(v)] = 0
        if apply_scale: v *= scale; v += offset
        out[:] = (np.mod(v + p, b) - p).astype(np.float32); out[~np.isfinite(values)] = 0

    bit for bit for ``-b <= v + p < 2 b`` (see :func:`wrap_one`); other values are counted
    (their ``out`` is not meaningful) and the caller redoes the whole array with numpy.

    Parameters
    ----------
    values : ndarray
        1-D stored phase values.
    scale, offset : float
        ``phase = wrap(values * scale + offset)`` (float64).
    apply_scale : bool
        False for values already in radians (wrapped only).
    b, p : float
        ``2 pi`` and ``pi`` as float64.
    out : ndarray of float32
        1-D output, same length as ``values``.

    Returns
    -------
    int
        Number of finite values whose ``v + p`` fell outside ``[-b, 2b)``.
    """
    n_rest = 0
    for i in range(values.size):
        v = float(values[i])
        if not math.isfinite(v):
            out[i] = 0.0
            continue
        if apply_scale:
            v = v * scale
            v = v + offset
        r, ok = wrap_one(v + p, b, p)
        out[i] = r
        if not ok:
            n_rest += 1
    return n_rest
