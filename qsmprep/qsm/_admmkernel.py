"""Fused element-wise steps of the ADMM loop of :func:`qsmprep.qsm.inversion._tv_admm` and of
the conjugate-gradient loop of :func:`qsmprep.qsm._fftgrid.cg`.

Each kernel does, in one pass over flat (contiguous) arrays, what the numpy version does in
four to six passes, with the same float operations in the same order (no fast-math, so no
fused multiply-add): the results are bit for bit those of the numpy code, which
``tests/qsm/test_inversion.py`` checks. Imported lazily (numba is heavy).
"""

from __future__ import annotations

import math

import numpy as np

from ._wrapkernel import _jit  # numba's njit, cached on disk where it can be


@_jit
def shrink_update(s, g, thr, z):  # pragma: no cover - numba
    """MEDI's anisotropic soft threshold and dual step, in place.

    numpy equivalent (all arrays of one float type, same size)::

        s += g
        z[...] = np.copysign(np.maximum(np.abs(s) - thr, 0), s)
        s -= z
    """
    for i in range(s.size):
        u = s[i] + g[i]
        a = abs(u) - thr[i]  # in the arrays' type
        if not (a >= 0 or a != a):  # np.maximum(a, 0): a if a >= 0 or NaN, else +0
            a = 0.0
        # copysign is exact in any precision: the float64 result holds a value of s's type
        z[i] = math.copysign(a, u)
        s[i] = u - z[i]


@_jit
def data_update(dchi, t, w2f, inv_w, mu2, v):  # pragma: no cover - numba
    """The v-step (weighted data fit) and its dual, in place.

    numpy equivalent (``mu2`` a scalar of the arrays' type)::

        tmp = (dchi + t) * mu2 + w2f
        v[...] = tmp * inv_w
        t += dchi
        t -= v
    """
    for i in range(t.size):
        tmp = (dchi[i] + t[i]) * mu2
        tmp = tmp + w2f[i]
        v[i] = tmp * inv_w[i]
        tt = t[i] + dchi[i]
        t[i] = tt - v[i]


@_jit
def data_update_l1(dchi, t, f, thr, v):  # pragma: no cover - numba
    """The v-step of an L1 data term (the proximal map of ``|W (v - f)|_1``) and its dual, in place.

    numpy equivalent (all arrays of one float type, same size)::

        u = dchi + t
        r = u - f
        v[...] = f + np.copysign(np.maximum(np.abs(r) - thr, 0), r)
        t[...] = u - v
    """
    for i in range(t.size):
        u = dchi[i] + t[i]
        r = u - f[i]
        a = abs(r) - thr[i]
        if not (a >= 0 or a != a):  # np.maximum(a, 0)
            a = 0.0
        v[i] = f[i] + math.copysign(a, r)
        t[i] = u - v[i]


@_jit
def cg_step(x, r, p, ap, alpha):  # pragma: no cover - numba
    """The iterate and residual updates of conjugate gradients, in place.

    numpy equivalent (``alpha`` a scalar of the arrays' type)::

        x += alpha * p
        r -= alpha * ap
    """
    for i in range(x.size):
        x[i] = x[i] + alpha * p[i]
        r[i] = r[i] - alpha * ap[i]


@_jit
def cg_direction(p, r, beta):  # pragma: no cover - numba
    """The new search direction, in place: ``p *= beta; p += r``."""
    for i in range(p.size):
        p[i] = p[i] * beta + r[i]


def flat(a: np.ndarray) -> np.ndarray:
    """A 1-D view of a C-contiguous array (raises instead of copying)."""
    if not a.flags.c_contiguous:
        raise ValueError("fused ADMM steps need C-contiguous arrays")
    return a.reshape(-1)
