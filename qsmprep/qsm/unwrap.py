"""Spatial and temporal phase unwrapping.

Methods (registered in :data:`METHODS`, signature
``f(wrapped, voxel_size, mask=None, mag=None, **opts) -> unwrapped``):

``romeo``
    Quality-guided region growing (ROMEO; Dymerska B, Eckstein K, et al. Phase unwrapping with a
    rapid opensource minimum spanning tree algorithm (ROMEO). Magn Reson Med 2021;85:2294-2308,
    doi:10.1002/mrm.28563). Exact: the result is congruent to the input modulo ``2 pi`` in every
    voxel. Compiled with numba.
``laplacian``
    DCT Laplacian unwrapping (Schofield MA, Zhu Y. Fast phase unwrapping algorithm for
    interferometric applications. Opt Lett 2003;28:1194-1196). Not exact: returns a smooth phase
    whose Laplacian equals that of the true phase, i.e. the true phase up to a harmonic function
    (and a constant); it is not congruent to the data modulo ``2 pi``.
``skimage``
    :func:`skimage.restoration.unwrap_phase` (Herraez MA, et al. Appl Opt 2002;41:7437 and
    Abdul-Rahman HS, et al. Appl Opt 2007;46:6623): reliability-sorted path following, exact,
    compiled C.

Voxels outside ``mask`` are set to 0 in every method's output.

4-D input ``(x, y, z, echo)``: with ``tes`` given, ``romeo`` unwraps the first echo spatially and
later echoes temporally (:func:`temporal_unwrap`), as ROMEO does; otherwise every echo is unwrapped
independently.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft
from numba import njit

from . import methods as _registry
from .kernels import fft_workers
from ._wrapkernel import wrap_one
from .phase import wrap_to_pi

TWO_PI = 2.0 * np.pi


# --------------------------------------------------------------------------------------------
# ROMEO-like edge weights
# --------------------------------------------------------------------------------------------
def _pair(a, axis):
    """Views of ``a`` at voxel ``v`` and at ``v + e_axis`` (all interior edges along ``axis``)."""
    sl0 = [slice(None)] * 3
    sl1 = [slice(None)] * 3
    sl0[axis] = slice(0, -1)
    sl1[axis] = slice(1, None)
    return a[tuple(sl0)], a[tuple(sl1)]


def romeo_edge_weights(
    wrapped,
    mask=None,
    mag=None,
    phase2=None,
    te_ratio=None,
    nbins: int = 255,
):
    """Quantised edge weights for the three axes, ROMEO-style (Dymerska et al. 2021).

    The weight of the edge between voxels ``i`` and ``j = i + e_axis`` is the product of

    * phase coherence ``1 - |wrap(phi_i - phi_j)| / pi``,
    * phase-gradient coherence (when a second echo ``phase2`` with ``te_ratio = TE1/TE2`` is
      given) ``max(0, 1 - |wrap(phi_i - phi_j) - wrap(phi2_i - phi2_j) * te_ratio|)``,
    * magnitude coherence ``(min(m_i, m_j) / max(m_i, m_j))^2``,
    * magnitude weight ``0.5 + 0.5 * min(1, min(m_i, m_j) / (0.5 * m_max))`` (``m_max`` = 99.9th
      percentile of the magnitude inside the mask),

    quantised to ``1..nbins`` (``0`` marks an edge leaving the mask or the volume).

    Parameters
    ----------
    wrapped : ndarray
        3-D wrapped phase (radians).
    mask : ndarray of bool, optional
        Voxels to connect (default: all).
    mag : ndarray, optional
        3-D magnitude (default: magnitude terms are 1).
    phase2 : ndarray, optional
        Second-echo wrapped phase, for the phase-gradient coherence.
    te_ratio : float, optional
        ``TE1 / TE2``, with ``phase2``.
    nbins : int
        Number of quantisation levels (<= 255).

    Returns
    -------
    ndarray of uint8
        ``(3, nx, ny, nz)``; ``weights[a, i]`` belongs to edge ``(i, i + e_a)``.

    References
    ----------
    Dymerska B, Eckstein K, Bachrata B, et al. Phase unwrapping with a rapid opensource minimum
    spanning tree algorithm (ROMEO). Magn Reson Med 2021;85:2294-2308. doi:10.1002/mrm.28563
    """
    phi = np.asarray(wrapped, dtype=np.float32)
    shape = phi.shape
    if mask is None:
        mask = np.ones(shape, bool)
    mask = np.asarray(mask, bool)
    if mag is not None:
        mag = np.asarray(mag, dtype=np.float32)
        mvals = mag[mask]
        m_max = float(np.percentile(mvals, 99.9)) if mvals.size else 1.0
        m_max = m_max if m_max > 0 else 1.0
    p2 = None if phase2 is None else np.asarray(phase2, dtype=np.float32)
    if 1 <= nbins <= 255 and phi.size >= 4096:
        out = _edge_weights_compiled(phi, mask, mag, p2, te_ratio,
                                     m_max if mag is not None else 1.0, nbins)
        if out is not None:
            return out
    return _edge_weights_numpy(phi, mask, mag, p2, te_ratio,
                               m_max if mag is not None else 1.0, nbins)


def _edge_weights_numpy(phi, mask, mag, p2, te_ratio, m_max, nbins):
    """The numpy steps of :func:`romeo_edge_weights` (the compiled pass must equal them)."""
    shape = phi.shape
    out = np.zeros((3,) + shape, dtype=np.uint8)
    for axis in range(3):
        a0, a1 = _pair(phi, axis)
        d = wrap_to_pi(a1 - a0)
        w = 1.0 - np.abs(d) / np.float32(np.pi)
        if p2 is not None and te_ratio is not None:
            b0, b1 = _pair(p2, axis)
            d2 = wrap_to_pi(b1 - b0)
            w *= np.clip(1.0 - np.abs(d - d2 * np.float32(te_ratio)), 0.0, 1.0)
        if mag is not None:
            m0, m1 = _pair(mag, axis)
            mn = np.minimum(m0, m1)
            mx = np.maximum(m0, m1)
            with np.errstate(divide="ignore", invalid="ignore"):
                coh = np.where(mx > 0, mn / mx, 0.0).astype(np.float32)
            w *= coh * coh
            w *= 0.5 + 0.5 * np.minimum(1.0, mn / np.float32(0.5 * m_max))
        k0, k1 = _pair(mask, axis)
        valid = k0 & k1
        q = (1 + np.floor(np.clip(w, 0.0, 1.0) * (nbins - 1))).astype(np.uint8)
        q[~valid] = 0
        sl = [slice(None)] * 3
        sl[axis] = slice(0, -1)
        out[(axis,) + tuple(sl)] = q
    return out


def _edge_weights_compiled(phi, mask, mag, p2, te_ratio, m_max, nbins):
    """:func:`_edge_weights_numpy` in one compiled pass without temporaries, or None.

    The kernel runs on C-ordered arrays; Fortran-ordered inputs (as nibabel returns them) are
    passed transposed, so no input is copied, and the weights are transposed back. None (the
    numpy steps then run) when an edge's weight is not a finite number in the kernel or a
    phase difference falls outside the range the kernel wraps exactly.
    """
    fortran = phi.flags.f_contiguous and not phi.flags.c_contiguous
    order = "F" if fortran else "C"
    arrays = [np.asarray(a, order=order) for a in
              (phi, phi if p2 is None else p2, phi if mag is None else mag)]
    msk = np.asarray(mask, dtype=bool, order=order)
    if fortran:
        arrays = [a.T for a in arrays]
        msk = msk.T
    out = np.zeros((3,) + arrays[0].shape, dtype=np.uint8)
    f32 = np.float32
    tr = f32(te_ratio) if (p2 is not None and te_ratio is not None) else f32(0.0)
    n_bad = _edge_weights_kernel(
        arrays[0], arrays[1], arrays[2], msk, p2 is not None and te_ratio is not None,
        mag is not None, tr, f32(0.5 * m_max), f32(nbins - 1), f32(np.pi), f32(2.0 * np.pi), out)
    if n_bad:
        return None
    if fortran:  # kernel axis t of the transposed arrays is axis 2 - t of the input
        out = np.ascontiguousarray(out[::-1].transpose(0, 3, 2, 1))
    return out


def _jit(fn):
    """numba ``njit`` with on-disk caching when a cache directory is writable (else in-memory)."""
    try:
        return njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # no writable cache locator (read-only install and home)
        return njit(nogil=True)(fn)


@_jit
def _grow_region(wrapped, weights, strides, mask, order, nbins):
    """Bucket-queue region growing over the highest-weight edges (numba).

    wrapped: float64 (N,), weights: uint8 (3, N), strides: int64 (3,), mask: bool (N,),
    order: int64 seed candidates (best first). Returns unwrapped float64 (N,), 0 outside mask.
    """
    n = wrapped.size
    out = np.zeros(n, np.float64)
    visited = np.zeros(n, np.bool_)
    # capacity: every valid undirected edge is pushed at most once
    cap = 0
    for a in range(3):
        for v in range(n):
            if weights[a, v] > 0:
                cap += 1
    cap += 1
    head = np.full(nbins + 1, -1, np.int64)
    nxt = np.empty(cap, np.int32)
    item = np.empty(cap, np.int32)  # target voxel * 8 + direction (n * 8 < 2**31 checked)
    used = 0
    twopi = 2.0 * np.pi
    n_seeds = 0
    for oi in range(order.size):
        s = order[oi]
        if visited[s] or not mask[s]:
            continue
        n_seeds += 1
        visited[s] = True
        out[s] = wrapped[s]
        top = 0
        # push edges of the seed
        v = s
        while True:
            for a in range(3):
                st = strides[a]
                # forward neighbour v + st, edge weight at v
                w = weights[a, v]
                if w > 0:
                    u = v + st
                    if not visited[u]:
                        nxt[used] = head[w]
                        item[used] = u * 8 + 2 * a
                        head[w] = used
                        used += 1
                        if w > top:
                            top = w
                # backward neighbour v - st, edge weight at v - st
                u = v - st
                if u >= 0:
                    w = weights[a, u]
                    if w > 0 and not visited[u]:
                        nxt[used] = head[w]
                        item[used] = u * 8 + 2 * a + 1
                        head[w] = used
                        used += 1
                        if w > top:
                            top = w
            # pop the best edge whose target is unvisited
            found = False
            while top > 0:
                slot = head[top]
                if slot < 0:
                    top -= 1
                    continue
                head[top] = nxt[slot]
                code = item[slot]
                u = code // 8
                if visited[u]:
                    continue
                d = code % 8
                a = d // 2
                if d % 2 == 0:
                    src = u - strides[a]
                else:
                    src = u + strides[a]
                ref = out[src]
                val = wrapped[u]
                val += twopi * np.floor((ref - val) / twopi + 0.5)
                out[u] = val
                visited[u] = True
                v = u
                found = True
                break
            if not found:
                break
    return out, n_seeds


def unwrap_romeo(
    wrapped,
    voxel_size=None,
    mask=None,
    mag=None,
    phase2=None,
    te_ratio=None,
    tes=None,
    nbins: int = 255,
    correct_global: bool = True,
    return_info: bool = False,
):
    """Exact quality-guided region-growing unwrapping (ROMEO-like, numba-compiled).

    Edge weights come from :func:`romeo_edge_weights` (phase coherence, optional phase-gradient
    coherence with a second echo, magnitude coherence and magnitude). Starting from the voxel with
    the highest summed edge quality, voxels are added through the best available edge (bucket
    priority queue, i.e. a maximum spanning tree grown by Prim's algorithm); each new voxel takes
    the ``2 pi`` multiple that brings it closest to its already unwrapped neighbour. Disconnected
    parts of the mask get their own seeds. The result is congruent to ``wrapped`` modulo ``2 pi``.

    Parameters
    ----------
    wrapped : ndarray
        ``(x, y, z)`` or ``(x, y, z, echo)`` wrapped phase (radians).
    voxel_size : ignored
        Kept for the common signature (the weights are voxel-based).
    mask : ndarray of bool, optional
        Voxels outside are not unwrapped and are returned as 0.
    mag : ndarray, optional
        Magnitude (same 3-D shape, or 4-D for 4-D input).
    phase2, te_ratio : ndarray, float, optional
        Second-echo phase and ``TE1/TE2`` for the phase-gradient coherence.
    tes : sequence of float, optional
        Echo times (s) for 4-D input: echo 1 is unwrapped spatially (with echo 2 for the
        gradient coherence), later echoes temporally with :func:`temporal_unwrap`.
    nbins : int
        Quantisation levels of the edge weights.
    correct_global : bool
        Subtract the ``2 pi`` multiple nearest to the median inside the mask, so the result is
        centred near 0 (the global ``2 pi n`` is otherwise arbitrary).
    return_info : bool
        Also return ``{"n_seeds", "n_voxels"}`` (3-D input).

    Returns
    -------
    unwrapped : ndarray of float32
        Same shape as ``wrapped``, congruent to it modulo ``2 pi`` inside ``mask``.
    info : dict
        Only when ``return_info``.

    References
    ----------
    Dymerska B, Eckstein K, Bachrata B, et al. Phase unwrapping with a rapid opensource minimum
    spanning tree algorithm (ROMEO). Magn Reson Med 2021;85:2294-2308. doi:10.1002/mrm.28563
    """
    wrapped = np.asarray(wrapped)
    if wrapped.ndim == 4:
        return _unwrap_4d(unwrap_romeo, wrapped, voxel_size, mask, mag, tes, nbins=nbins,
                          correct_global=correct_global)
    if wrapped.ndim != 3:
        raise ValueError("unwrap_romeo expects a 3-D or 4-D array")
    shape = wrapped.shape
    m = np.ones(shape, bool) if mask is None else np.asarray(mask, bool)
    if m.shape != shape:
        raise ValueError(f"mask shape {m.shape} != phase shape {shape}")
    phi = wrap_to_pi(np.asarray(wrapped, dtype=np.float64))
    weights = romeo_edge_weights(phi, m, mag, phase2, te_ratio, nbins=nbins)
    # seed order: voxels by summed incident edge weight (best first)
    score = weights.astype(np.float32).sum(axis=0)
    for axis in range(3):
        sl_dst = [slice(None)] * 3
        sl_src = [slice(None)] * 3
        sl_dst[axis] = slice(1, None)
        sl_src[axis] = slice(0, -1)
        score[tuple(sl_dst)] += weights[axis][tuple(sl_src)]
    idx = np.flatnonzero(m)
    order = idx[np.argsort(-score.ravel()[idx], kind="stable")].astype(np.int64)
    if phi.size * 8 >= 2**31:
        raise ValueError("Volume too large for the int32 edge queue (more than 268M voxels).")
    strides = np.array([shape[1] * shape[2], shape[2], 1], dtype=np.int64)
    flat_w = weights.reshape(3, -1)
    out, n_seeds = _grow_region(phi.ravel(), flat_w, strides, m.ravel(), order, nbins)
    out = out.reshape(shape)
    if correct_global and idx.size:
        k = np.round(np.median(out[m]) / TWO_PI)
        out[m] -= TWO_PI * k
    out = out.astype(np.float32)
    if return_info:
        return out, {"n_seeds": int(n_seeds), "n_voxels": int(idx.size)}
    return out


# --------------------------------------------------------------------------------------------
# Laplacian (Schofield & Zhu 2003)
# --------------------------------------------------------------------------------------------
def _neumann_laplacian_eigenvalues(shape, voxel_size, dtype=np.float32):
    """Eigenvalues (mm^-2) of the 7-point Laplacian with Neumann boundaries on the DCT-II basis."""
    out = None
    for ax, (n, d) in enumerate(zip(shape, voxel_size)):
        term = (2.0 * np.cos(np.pi * np.arange(n) / n) - 2.0) / float(d) ** 2
        s = [1] * len(shape)
        s[ax] = n
        term = term.reshape(s)
        out = term if out is None else out + term
    return out.astype(dtype)


def unwrap_laplacian(wrapped, voxel_size, mask=None, mag=None, mask_laplacian: bool = False,
                     tes=None):
    """Laplacian phase unwrapping (Schofield and Zhu).

    ``lap(phi) = cos(phi) lap(sin(phi)) - sin(phi) lap(cos(phi))`` is computed with the discrete
    7-point Laplacian and inverted with the same operator. Both use Neumann (mirror) boundaries,
    diagonalised by the type-II DCT (Ghiglia DC, Romero LA. J Opt Soc Am A 1994;11:107-117), which
    avoids the artificial jump a periodic FFT creates at the field-of-view edge; the DC term is 0.

    The result is smooth but **not exact**: it is not congruent to the data modulo ``2 pi``, it
    is wrong where neighbouring phase differences approach ``pi`` (the identity uses
    ``sin(delta)`` for ``delta``) and, with ``mask_laplacian=True`` (Laplacian zeroed outside the
    mask, so noise there cannot leak in), it equals the true phase only up to a harmonic function
    inside the mask -- background field removal removes harmonic fields, echo-to-echo
    consistency does not forgive them. A global constant is chosen so that the result agrees
    with the data in the circular mean over the mask; voxels outside the mask are set to 0.

    Parameters
    ----------
    wrapped : ndarray
        ``(x, y, z)`` or ``(x, y, z, echo)`` wrapped phase (radians); 4-D: each echo
        independently.
    voxel_size : sequence of float
        Voxel size (mm).
    mask : ndarray of bool, optional
        Output is 0 outside it.
    mag : ignored
        Kept for the common signature.
    mask_laplacian : bool
        Zero the Laplacian outside ``mask``.
    tes : ignored
        Kept for the common signature.

    Returns
    -------
    ndarray of float32
        Smooth phase (radians), not congruent to ``wrapped``.

    References
    ----------
    Schofield MA, Zhu Y. Fast phase unwrapping algorithm for interferometric applications.
    Opt Lett 2003;28:1194-1196.
    """
    wrapped = np.asarray(wrapped)
    if wrapped.ndim == 4:
        return _unwrap_4d(unwrap_laplacian, wrapped, voxel_size, mask, mag, None,
                          mask_laplacian=mask_laplacian)
    shape = wrapped.shape
    m = np.ones(shape, bool) if mask is None else np.asarray(mask, bool)
    lam = _neumann_laplacian_eigenvalues(shape, voxel_size)
    w = fft_workers()

    def L(x):
        return sfft.idctn(sfft.dctn(x, type=2, norm="ortho", workers=w) * lam, type=2,
                          norm="ortho", workers=w)

    phi = np.asarray(wrapped, dtype=np.float32)
    s, c = np.sin(phi), np.cos(phi)
    lap_phi = c * L(s) - s * L(c)
    del s, c
    if mask_laplacian:
        lap_phi[~m] = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(lam != 0, 1.0 / lam, 0.0).astype(np.float32)
    out = sfft.idctn(sfft.dctn(lap_phi, type=2, norm="ortho", workers=w) * inv, type=2,
                     norm="ortho", workers=w).astype(np.float32)
    if m.any():
        z = np.exp(1j * (np.asarray(wrapped, np.float64)[m] - out[m]))
        out += np.float32(np.angle(z.sum()))
    out[~m] = 0.0
    return out


# --------------------------------------------------------------------------------------------
# scikit-image
# --------------------------------------------------------------------------------------------
def unwrap_skimage(wrapped, voxel_size=None, mask=None, mag=None, tes=None, seed: int = 0):
    """Reliability-sorting path-following unwrapping from scikit-image (exact).

    :func:`skimage.restoration.unwrap_phase`; masked voxels are excluded through a masked array.
    4-D input: every echo independently (or echo 1 spatially + temporal unwrapping when ``tes``
    is given).

    Parameters
    ----------
    wrapped : ndarray
        ``(x, y, z)`` or ``(x, y, z, echo)`` wrapped phase (radians).
    voxel_size : ignored
        Kept for the common signature.
    mask : ndarray of bool, optional
        Output is 0 outside it.
    mag : ignored
        Kept for the common signature.
    tes : sequence of float, optional
        Echo times (s) for temporal unwrapping of 4-D input.
    seed : int
        Random seed of scikit-image's algorithm.

    Returns
    -------
    ndarray of float32
        Unwrapped phase (radians), congruent to ``wrapped`` modulo ``2 pi`` inside ``mask``.

    References
    ----------
    Herraez MA, Burton DR, Lalor MJ, Gdeisat MA. Fast two-dimensional phase-unwrapping algorithm
    based on sorting by reliability following a noncontinuous path. Appl Opt 2002;41:7437-7444.
    Abdul-Rahman HS, et al. Fast and robust three-dimensional best path phase unwrapping
    algorithm. Appl Opt 2007;46:6623-6635.
    """
    from skimage.restoration import unwrap_phase

    wrapped = np.asarray(wrapped)
    if wrapped.ndim == 4:
        return _unwrap_4d(unwrap_skimage, wrapped, voxel_size, mask, mag, tes, seed=seed)
    phi = wrap_to_pi(np.asarray(wrapped, dtype=np.float64))
    m = np.ones(phi.shape, bool) if mask is None else np.asarray(mask, bool)
    arr = np.ma.masked_array(phi, mask=~m)
    res = unwrap_phase(arr, wrap_around=False, rng=seed)
    out = np.asarray(np.ma.filled(res, 0.0), dtype=np.float64)
    out[~m] = 0.0
    if m.any():
        k = np.round(np.median(out[m]) / TWO_PI)
        out[m] -= TWO_PI * k
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Temporal unwrapping
# --------------------------------------------------------------------------------------------
def temporal_unwrap(phases_4d, tes, reference_unwrapped_echo, ref_index: int = 0, offset=None,
                    mask=None):
    """Unwrap every echo from a spatially unwrapped reference echo by TE scaling.

    ROMEO's temporal unwrapping (Dymerska et al. 2021): with ``phi_e = phi0 + 2 pi f TE_e`` the
    expected phase of echo ``e`` is ``phi0 + (phi_ref - phi0) * TE_e / TE_ref``; each echo takes
    the ``2 pi`` multiple nearest to that expectation. ``offset`` is the phase offset ``phi0``
    (default 0, i.e. the offset is assumed removed beforehand, e.g. by MCPC-3D-S; a large
    uncorrected offset makes later echoes unwrap wrongly).

    Parameters
    ----------
    phases_4d : ndarray
        ``(x, y, z, echo)`` wrapped phase (radians).
    tes : sequence of float
        Echo times (s).
    reference_unwrapped_echo : ndarray
        The spatially unwrapped reference echo (3-D).
    ref_index : int
        Index of the reference echo.
    offset : ndarray or float, optional
        Phase offset ``phi0`` (default 0).
    mask : ndarray of bool, optional
        Output is 0 outside it.

    Returns
    -------
    ndarray of float32
        4-D unwrapped phase; the reference echo is returned unchanged.

    References
    ----------
    Dymerska B, Eckstein K, Bachrata B, et al. Phase unwrapping with a rapid opensource minimum
    spanning tree algorithm (ROMEO). Magn Reson Med 2021;85:2294-2308. doi:10.1002/mrm.28563
    """
    phases_4d = np.asarray(phases_4d)
    tes = np.asarray(tes, dtype=np.float64)
    ref = np.asarray(reference_unwrapped_echo, dtype=np.float64)
    off = 0.0 if offset is None else np.asarray(offset, dtype=np.float64)
    out = np.empty(phases_4d.shape, np.float32)
    for e in range(phases_4d.shape[-1]):
        if e == ref_index:
            out[..., e] = ref
            continue
        expected = off + (ref - off) * (tes[e] / tes[ref_index])
        ph = phases_4d[..., e].astype(np.float64)
        out[..., e] = ph + TWO_PI * np.round((expected - ph) / TWO_PI)
    if mask is not None:
        out[~np.asarray(mask, bool)] = 0.0
    return out


def _unwrap_4d(func, wrapped, voxel_size, mask, mag, tes, **kw):
    n_e = wrapped.shape[-1]
    mag_e = (lambda e: None) if mag is None else (
        (lambda e: mag[..., e]) if np.ndim(mag) == 4 else (lambda e: mag)
    )
    if tes is not None and func is not unwrap_laplacian:
        tes = np.asarray(tes, float)
        extra = {}
        if func is unwrap_romeo and n_e > 1:
            extra = {"phase2": wrapped[..., 1], "te_ratio": tes[0] / tes[1]}
        first = func(wrapped[..., 0], voxel_size, mask=mask, mag=mag_e(0), **extra, **kw)
        return temporal_unwrap(wrapped, tes, first, 0, mask=mask)
    out = np.empty(wrapped.shape, np.float32)
    for e in range(n_e):
        out[..., e] = func(wrapped[..., e], voxel_size, mask=mask, mag=mag_e(e), **kw)
    return out


#: name -> function of every ``unwrapping`` record of :mod:`qsmprep.qsm.methods` (one record
#: there registers a new method)
METHODS = _registry.MethodTable("unwrapping")
DEFAULT = _registry.default("unwrapping")


@_jit
def _edge_weights_kernel(phi, p2, mag, mask, use_p2, use_mag, te_ratio, half_mmax, nb1, pi,
                         two_pi, out):  # pragma: no cover - numba
    """Quantised ROMEO edge weights of :func:`romeo_edge_weights`, float32 step for step.

    Every constant is a float32 argument, so each operation rounds to float32 as numpy's
    float32 array arithmetic does (the same operations in the same order, no fused
    multiply-add). Returns the number of valid edges whose weight could not be computed the
    same way (NaN, or a phase difference outside the exactly wrapped range).
    """
    nx, ny, nz = phi.shape
    one = pi / pi
    zero = pi - pi
    half = one / (one + one)
    n_bad = 0
    for i in range(nx):
        for j in range(ny):
            for k in range(nz):
                if not mask[i, j, k]:
                    continue
                for axis in range(3):
                    i1, j1, k1 = i, j, k
                    if axis == 0:
                        if i + 1 >= nx:
                            continue
                        i1 = i + 1
                    elif axis == 1:
                        if j + 1 >= ny:
                            continue
                        j1 = j + 1
                    else:
                        if k + 1 >= nz:
                            continue
                        k1 = k + 1
                    if not mask[i1, j1, k1]:
                        continue
                    d, ok = wrap_one((phi[i1, j1, k1] - phi[i, j, k]) + pi, two_pi, pi)
                    w = one - abs(d) / pi
                    if use_p2:
                        d2, ok2 = wrap_one((p2[i1, j1, k1] - p2[i, j, k]) + pi, two_pi, pi)
                        ok = ok and ok2
                        c = one - abs(d - d2 * te_ratio)
                        c = min(max(c, zero), one) if c == c else c
                        w *= c
                    if use_mag:
                        a = mag[i, j, k]
                        b = mag[i1, j1, k1]
                        if a != a or b != b:
                            n_bad += 1
                            continue
                        mn = min(a, b)
                        mx = max(a, b)
                        coh = mn / mx if mx > 0 else zero
                        w *= coh * coh
                        r = mn / half_mmax
                        w *= half + half * (r if r < one else one)
                    if not ok or w != w:
                        n_bad += 1
                        continue
                    w = min(max(w, zero), one)
                    out[axis, i, j, k] = np.uint8(one + np.floor(w * nb1))
    return n_bad
