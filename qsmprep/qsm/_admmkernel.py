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


@_jit
def adjoint_difference(z, s, scale, iso_scale, mu1, out):  # pragma: no cover - numba
    """``out = mu1 * G^T (z - s)`` in one pass (the chi-step's right-hand side of the ADMM).

    numpy equivalent (:func:`qsmprep.qsm._fftgrid.grad_adj` on ``g = z - s``, then ``*= mu1``;
    ``z``, ``s`` of shape ``(3,) + out.shape``, all float32; per-axis ``scale[a] = 1 / d_a``
    in float32; ``iso_scale`` 0 for anisotropic voxels, else ``1 / d`` (1 for 1 mm voxels,
    where numpy skips the scaling: multiplying by 1 is exact)::

        g = z - s
        out = 0; for each axis a: out[i] += g_a[i - e_a] (periodic); out -= g_a   (isotropic)
                                  out[i] += g_a[i - e_a] * scale[a]; out -= g_a * scale[a]
        out *= iso_scale (isotropic); out *= mu1

    The same float operations in the same order per element, so the result is numpy's bit
    for bit (``tests/qsm/test_inversion.py``).
    """
    nx, ny, nz = out.shape
    zero = np.float32(0.0)
    for i in range(nx):
        ip = i - 1 if i > 0 else nx - 1
        for j in range(ny):
            jp = j - 1 if j > 0 else ny - 1
            for k in range(nz):
                kp = k - 1 if k > 0 else nz - 1
                g0p = z[0, ip, j, k] - s[0, ip, j, k]
                g0 = z[0, i, j, k] - s[0, i, j, k]
                g1p = z[1, i, jp, k] - s[1, i, jp, k]
                g1 = z[1, i, j, k] - s[1, i, j, k]
                g2p = z[2, i, j, kp] - s[2, i, j, kp]
                g2 = z[2, i, j, k] - s[2, i, j, k]
                t = zero
                if iso_scale != 0:
                    t = t + g0p
                    t = t - g0
                    t = t + g1p
                    t = t - g1
                    t = t + g2p
                    t = t - g2
                    if iso_scale != 1:
                        t = t * iso_scale
                else:
                    t = t + g0p * scale[0]
                    t = t - g0 * scale[0]
                    t = t + g1p * scale[1]
                    t = t - g1 * scale[1]
                    t = t + g2p * scale[2]
                    t = t - g2 * scale[2]
                out[i, j, k] = t * mu1


@_jit
def grad_shrink_update(x, scale, s, thr, z):  # pragma: no cover - numba
    """The z- and s-steps of MEDI's ADMM with the gradient of ``x`` computed on the fly.

    numpy equivalent (``x`` 3-D; ``s``, ``thr``, ``z`` of shape ``(3,) + x.shape``; float32;
    ``scale[a] = 1 / d_a`` in float32)::

        g = grad(x)    # (x[i + e_a] - x[i]) * scale[a], periodic (_fftgrid.grad)
        s += g; z = copysign(max(|s| - thr, 0), s); s -= z        (shrink_update)

    without writing ``g``.
    """
    nx, ny, nz = x.shape
    for i in range(nx):
        i1 = i + 1 if i < nx - 1 else 0
        for j in range(ny):
            j1 = j + 1 if j < ny - 1 else 0
            for k in range(nz):
                k1 = k + 1 if k < nz - 1 else 0
                xc = x[i, j, k]
                for a in range(3):
                    if a == 0:
                        g = (x[i1, j, k] - xc) * scale[0]
                    elif a == 1:
                        g = (x[i, j1, k] - xc) * scale[1]
                    else:
                        g = (x[i, j, k1] - xc) * scale[2]
                    u = s[a, i, j, k] + g
                    m = abs(u) - thr[a, i, j, k]
                    if not (m >= 0 or m != m):
                        m = 0.0
                    z[a, i, j, k] = math.copysign(m, u)
                    s[a, i, j, k] = u - z[a, i, j, k]


@_jit
def chi_step_spectrum(rk, vk, d, mu2, inv_den):  # pragma: no cover - numba
    """``rk = (rk + vk * d * mu2) * inv_den`` in place, on complex64 spectra.

    numpy equivalent (``d``, ``inv_den`` float32 arrays and ``mu2`` a float32 scalar, each
    taken as a complex number with zero imaginary part, as numpy casts them)::

        vk *= d; vk *= mu2; rk += vk; rk *= inv_den

    The complex products are written out as numpy evaluates them (``(a + ib)(c + i0) =
    (ac - b0) + i(a0 + bc)``), so zeros keep their signs; ``vk`` is left unchanged (it is not
    read again).
    """
    zero = np.float32(0.0)
    for n in range(rk.size):
        a = vk[n].real
        b = vk[n].imag
        c = d[n]
        r1 = a * c - b * zero
        i1 = a * zero + b * c
        r2 = r1 * mu2 - i1 * zero
        i2 = r1 * zero + i1 * mu2
        r3 = rk[n].real + r2
        i3 = rk[n].imag + i2
        q = inv_den[n]
        rk[n] = complex(r3 * q - i3 * zero, r3 * zero + i3 * q)
