"""Compiled loop of :func:`qsmprep.qsm.phase.wrap_to_pi` (imported lazily: numba is heavy)."""

from __future__ import annotations

from numba import njit


def _jit(fn):
    try:
        return njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # no writable cache locator
        return njit(nogil=True)(fn)


@_jit
def wrap_shifted(y, b, p, out):  # pragma: no cover - numba
    """``out = np.mod(y, b) - p`` for ``-b <= y < 2 b``, bit for bit, in ``y``'s precision.

    With ``b > 0``, numpy's float remainder is ``y`` on ``[0, b)``, ``y + b`` (rounded the same
    way) on ``[-b, 0)`` (``+0`` at ``y = -b``) and the exact ``y - b`` on ``[b, 2b)``. Other
    values (and NaN) are left as ``y - p`` and counted; the caller redoes them with ``np.mod``.

    Parameters
    ----------
    y, out : ndarray
        1-D arrays of one floating type.
    b, p : float
        ``2 pi`` and ``pi`` in that type.

    Returns
    -------
    int
        Number of values outside ``[-b, 2b)`` (or NaN).
    """
    n_rest = 0
    bb = b + b
    for i in range(y.size):
        v = y[i]
        if v >= 0 and v < b:
            out[i] = v - p
        elif v < 0 and v >= -b:
            out[i] = (v + b) - p
        elif v >= b and v < bb:
            out[i] = (v - b) - p
        else:
            out[i] = v - p
            n_rest += 1
    return n_rest
