"""Background field removal: total field (ppm) -> local field (ppm) and the mask it is valid in.

Every method has the signature::

    f(total_ppm, mask, voxel_size, b0_dir, weights=None, **opts) -> (local_ppm, eroded_mask)

``total_ppm`` is the total relative field (ppm) inside ``mask`` (values outside the mask are
ignored), ``voxel_size`` in mm, ``b0_dir`` the unit B0 vector in voxel axes, ``weights`` an
optional reliability map (>= 0, larger = more reliable; only used by methods with a data term).
The returned local field is zero outside ``eroded_mask``; downstream steps (inversion, ROI
statistics) must use ``eroded_mask``.

All methods crop to the mask's bounding box plus a margin, zero-pad to an FFT-friendly shape and
work in float32 with real FFTs (:mod:`scipy.fft` with ``workers``).

Methods (``METHODS``): ``auto`` (default: ``pdf`` at voxels up to
:data:`AUTO_PDF_MAX_VOXEL_MM`, ``vsharp`` above; :func:`auto_method`), ``vsharp``, ``pdf``,
``resharp``, ``lbv`` (no FFT: a sparse Laplace solve on the mask).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from . import kernels
from . import methods as _registry
from ._fftgrid import (
    CropGrid,
    cg,
    convolve,
    irfft,
    normalise_inputs,
    normalise_weights,
    rfft,
    workers as _workers,
)

__all__ = ["vsharp", "pdf", "resharp", "lbv", "auto", "auto_method", "default_radii",
           "AUTO_PDF_MAX_VOXEL_MM", "METHODS", "DEFAULT"]

#: ``auto`` background removal uses PDF when every voxel dimension is at most this (mm) and
#: V-SHARP above (see :func:`auto_method` for the measurements behind the value)
AUTO_PDF_MAX_VOXEL_MM = 2.5


def default_radii(voxel_size, r_max_mm: float = 12.0) -> list[float]:
    """V-SHARP radii (mm), from ``r_max_mm`` down to two voxels in steps of one voxel.

    One voxel is the largest voxel dimension. Radii below two voxels make ``1 - S(k)`` vanish over
    most of k-space and only add noise.

    Parameters
    ----------
    voxel_size : sequence of float
        Voxel size (mm).
    r_max_mm : float
        Largest radius (mm).

    Returns
    -------
    list of float
        Radii from large to small.

    Examples
    --------
    >>> default_radii((3.0, 3.0, 3.0))
    [12.0, 9.0, 6.0]
    """
    step = float(max(voxel_size))
    r_min = 2.0 * step
    if r_min >= r_max_mm:
        return [r_min]
    radii = [float(r) for r in np.arange(r_max_mm, r_min + 1e-6, -step)]
    if abs(radii[-1] - r_min) > 1e-6:
        radii.append(r_min)
    return radii


def _eroded(mask_k, smv_k, shape, w, tol=1e-3):
    """Voxels whose whole sphere lies inside the mask (SMV of the mask == 1)."""
    return irfft(mask_k * smv_k, shape, w) > 1.0 - tol


def polynomial_residual(field, mask, order, weights=None, voxel_size=(1.0, 1.0, 1.0)):
    """Least-squares 3-D polynomial (total degree ``order``) of ``field`` over ``mask``.

    Background removal leaves a smooth residual (e.g. V-SHARP's deconvolution with its largest
    radius near steep air-tissue fields); subtracting a low-order polynomial fitted inside the
    final mask removes it, as SEPIA's optional 4th-order "refine" step does.

    Parameters
    ----------
    field : ndarray
        Field (ppm).
    mask : ndarray of bool
        Voxels of the fit.
    order : int
        Total degree of the polynomial.
    weights : ndarray, optional
        Fit weights (>= 0, e.g. the echo-fit reliability).
    voxel_size : sequence of float
        Voxel size (mm).

    Returns
    -------
    ndarray
        The fitted polynomial, zero outside ``mask``.

    References
    ----------
    Chan KS, Marques JP. SEPIA - Susceptibility mapping pipeline tool for phase images.
    NeuroImage 2021;227:117611.
    """
    mask = np.asarray(mask, bool)
    idx = np.nonzero(mask)
    coords = [(i - i.mean()) * float(v) / 50.0 for i, v in zip(idx, voxel_size)]  # ~unit scale
    terms = [np.ones(idx[0].size)]
    for deg in range(1, int(order) + 1):
        for a in range(deg + 1):
            for b in range(deg + 1 - a):
                c = deg - a - b
                terms.append(coords[0] ** a * coords[1] ** b * coords[2] ** c)
    a_mat = np.stack(terms, axis=1)
    y = np.asarray(field, np.float64)[idx]
    w = np.ones_like(y) if weights is None else np.sqrt(np.clip(np.asarray(weights, np.float64)[idx], 0, None))
    coef, *_ = np.linalg.lstsq(a_mat * w[:, None], y * w, rcond=None)
    out = np.zeros(mask.shape, np.float32)
    out[idx] = a_mat @ coef
    return out


def vsharp(total_ppm, mask, voxel_size, b0_dir=(0.0, 0.0, 1.0), weights=None, radii_mm=None,
           threshold=0.02, refine_order=0, workers=None):
    """Variable-radius sophisticated harmonic artifact reduction (V-SHARP).

    Each voxel takes the SMV high-pass ``f - S_r * f`` of the largest radius ``r`` whose sphere
    still fits inside the mask; the result is deconvolved with ``1 - S_R`` of the LARGEST radius
    ``R`` (truncated where ``|1 - S_R(k)| < threshold``: truncated SVD, Schweser et al. 2011).
    Deconvolving with the smallest radius would divide by an almost vanishing ``1 - S`` over most
    of k-space. The returned mask is the input mask eroded by the smallest radius.

    Parameters
    ----------
    total_ppm : ndarray
        Total field (ppm), used inside ``mask``.
    mask : ndarray of bool
        Brain mask.
    voxel_size : sequence of float
        Voxel size (mm).
    b0_dir : sequence of float
        Unit B0 direction in voxel axes.
    weights : ndarray, optional
        Fit weights of the ``refine_order`` polynomial (e.g. the echo-fit reliability).
    radii_mm : sequence of float, optional
        Sphere radii in mm (any order; used from large to small). Default :func:`default_radii`
        (12 mm down to two voxels).
    threshold : float
        Truncation of the deconvolution (default 0.02). A larger value discards low spatial
        frequencies of the local field near the brain surface and biases shallow structures
        (substantia nigra); the measurements behind the default are in docs/algorithms.md.
    refine_order : int
        Subtract a weighted least-squares polynomial of this total degree fitted to the local
        field inside the eroded mask (:func:`polynomial_residual`; 0 = off).
    workers : int, optional
        FFT threads (default: :func:`qsmprep.qsm.kernels.fft_workers`).

    Returns
    -------
    local_ppm : ndarray of float32
        Local field (ppm), zero outside ``eroded``.
    eroded : ndarray of bool
        The input mask eroded by the smallest radius.

    References
    ----------
    Li W, Wu B, Liu C. Quantitative susceptibility mapping of human brain reflects spatial
    variation in tissue composition. NeuroImage 2011;55:1645-1656.
    Schweser F, Deistung A, Lehr BW, Reichenbach JR. Quantitative imaging of intrinsic magnetic
    tissue properties using MRI signal phase. NeuroImage 2011;54:2789-2807.
    Wu B, Li W, Guidon A, Liu C. Whole brain susceptibility mapping using compressed sensing.
    Magn Reson Med 2012;67:137-147.
    """
    total, mask, vox, _ = normalise_inputs(total_ppm, mask, voxel_size, b0_dir)
    radii = sorted(default_radii(vox) if radii_mm is None else [float(r) for r in radii_mm],
                   reverse=True)
    if radii[-1] < 2 * max(vox) - 1e-6:
        warnings.warn(
            f"V-SHARP radius {radii[-1]} mm is below two voxels ({2 * max(vox)} mm): it adds noise "
            "and erodes little.", stacklevel=2)
    w = _workers(workers)
    margin = [int(math.ceil(radii[0] / v)) + 2 for v in vox]
    grid = CropGrid(mask, margin)
    shape = grid.shape
    f = grid.embed(np.where(mask, total, 0.0))
    m = grid.embed(mask)
    fk = rfft(f, w)
    mk = rfft(m, w)
    hp = np.zeros(shape, np.float32)
    filled = np.zeros(shape, bool)
    s_big = None
    er = None
    for r in radii:
        sk = kernels.smv_kernel(shape, vox, r, rfft=True, dtype=np.float32)
        if s_big is None:
            s_big = sk
        er = _eroded(mk, sk, shape, w)
        sel = er & ~filled
        if sel.any():
            smooth = irfft(fk * sk, shape, w)
            hp[sel] = f[sel] - smooth[sel]
            filled |= sel
    if not filled.any():
        raise ValueError(f"V-SHARP: the mask is too small for the smallest radius {radii[-1]} mm.")
    c = 1.0 - s_big
    inv = np.zeros_like(c)
    keep = np.abs(c) >= threshold
    inv[keep] = 1.0 / c[keep]
    local = convolve(hp, inv, shape, w)
    local *= filled
    eroded = grid.extract(filled, dtype=bool)
    local = grid.extract(local)
    if refine_order:
        local = local - polynomial_residual(local, eroded, refine_order, weights=None if weights is None
                                            else np.where(eroded, weights, 0), voxel_size=vox)
    return local, eroded


def pdf(total_ppm, mask, voxel_size, b0_dir=(0.0, 0.0, 1.0), weights=None, tol=1e-4,
        max_iter=100, pad_mm=20.0, erode_mm=0.0, weighted=True, workers=None, dtype=np.float32):
    """Projection onto dipole fields (PDF).

    Finds the susceptibility ``x`` OUTSIDE the mask (in the cropped grid padded by ``pad_mm``)
    whose dipole field best fits the total field inside the mask in the weighted least-squares
    sense, ``min_x || W M (f - D (1-M) x) ||^2``, solved by conjugate gradients on the normal
    equations with an FFT-based operator (real FFTs, float32). The background field
    ``D (1-M) x`` is subtracted. PDF itself needs no erosion, but its local field is least
    accurate next to the mask boundary (the fitted outside sources sit right there), so
    ``erode_mm`` can remove a shell of that depth from the returned mask after the solve (the
    same idea as LBV's ``peel`` and V-SHARP's erosion); the solve itself always uses the whole
    mask, so the local field inside is unchanged.

    Parameters
    ----------
    total_ppm : ndarray
        Total field (ppm), used inside ``mask``.
    mask : ndarray of bool
        Brain mask.
    voxel_size : sequence of float
        Voxel size (mm).
    b0_dir : sequence of float
        Unit B0 direction in voxel axes.
    weights : ndarray, optional
        Data weights (e.g. the echo-fit reliability); normalised to mean 1 in the mask.
    tol : float
        Relative residual of the normal equations at which CG stops (default 1e-4; a smaller
        value is more accurate at the cost of more iterations, see docs/algorithms_inversion.md).
    max_iter : int
        Maximum CG iterations (default 100). CG is stopped early on purpose, as in the reference
        implementation (MEDI toolbox ``PDF.m``: at most 30 iterations): run on, the outside
        sources also fit the harmonic part of the brain's own field near the mask boundary.
        100 iterations reach the converged accuracy on the analytic phantom of the unit tests
        (50 do not) and gave the deep-gray-matter accuracy of 300 on both simulators at
        1-1.5 mm (within 0.5 ppb; slightly better at 3 mm) at a third of the cost
        (docs/validation.md, "Background field removal by voxel size").
    pad_mm : float
        Zero padding around the mask's bounding box (mm) where outside sources may sit and which
        keeps the FFT's periodic wrap-around away from the mask (default 20 mm).
    erode_mm : float
        Depth (mm) of the shell removed from the returned mask after the solve (Euclidean
        distance to the outside of the mask; default 0 = the whole mask).
    weighted : bool
        Use ``weights`` in the fit (default ``True``, as in Liu et al. 2011); ``False`` fits
        every voxel of the mask equally. The weights (the echo fit's reliability) change with
        the direction of B0 in the head where the field varies inside voxels, and the weighted
        fit then absorbs a direction-dependent share of small paramagnetic nuclei next to such
        voxels: on the independent heads the substantia nigra and red nucleus read up to 5 ppb
        lower with B0 tilted by 8 degrees (noise-free); unweighted, a third to a half less,
        but up to 12 ppb high on untilted acquisitions (docs/validation.md, "Where the tilt
        effect comes from"). Weighted stays the default.
    dtype : numpy dtype
        Working precision (float32 default; float64 for comparisons).
    workers : int, optional
        FFT threads (default: :func:`qsmprep.qsm.kernels.fft_workers`).

    Returns
    -------
    local_ppm : ndarray of float32
        Local field (ppm), zero outside ``eroded``.
    eroded : ndarray of bool
        The input mask, eroded by ``erode_mm``.

    References
    ----------
    Liu T, Khalidov I, de Rochefort L, Spincemaille P, Liu J, Tsiouris AJ, Wang Y. A novel
    background field removal method for MRI using projection onto dipole fields (PDF).
    NMR Biomed 2011;24:1129-1136.
    """
    total, mask, vox, b = normalise_inputs(total_ppm, mask, voxel_size, b0_dir)
    w = _workers(workers)
    grid = CropGrid(mask, [int(math.ceil(pad_mm / v)) for v in vox])
    shape = grid.shape
    m = grid.embed(mask, dtype)
    out = 1.0 - m
    f = grid.embed(np.where(mask, total, 0.0), dtype)
    wt = normalise_weights(weights if weighted else None, mask)
    w2 = m if wt is None else grid.embed(wt, dtype) ** 2 * m
    d = kernels.dipole_kernel(shape, vox, b, rfft=True, dtype=dtype)

    def field_of(x):
        return convolve(x, d, shape, w)

    def apply_n(p, res):
        y = field_of(out * p)
        y *= w2
        np.multiply(field_of(y), out, out=res)

    rhs = field_of(w2 * f) * out
    x, n_it, rel = cg(apply_n, rhs, tol=tol, max_iter=max_iter)
    bg = field_of(out * x)
    local = (f - bg) * m
    local = grid.extract(local)
    if erode_mm and erode_mm > 0:
        from .masking import erode_mm as _erode

        kept = _erode(mask, vox, float(erode_mm))
        if not kept.any():
            raise ValueError(f"PDF: no voxel of the mask is deeper than erode_mm={erode_mm} mm.")
        return local * kept, kept
    return local, mask.copy()


def resharp(total_ppm, mask, voxel_size, b0_dir=(0.0, 0.0, 1.0), weights=None, radius_mm=None,
            lam=1e-3, tol=1e-4, max_iter=200, workers=None):
    """Regularisation-enabled SHARP (RESHARP).

    Solves ``min_x || M_r (C x - C f) ||^2 + lam ||x||^2`` with ``C = 1 - S_r`` (SMV high-pass)
    and ``M_r`` the mask eroded by ``radius_mm``, by conjugate gradients on the normal equations
    ``(C M_r C + lam) x = C M_r C f`` (real FFTs, float32). Tikhonov regularisation replaces
    SHARP's truncated deconvolution. Returns the local field in the eroded mask.

    Parameters
    ----------
    total_ppm : ndarray
        Total field (ppm), used inside ``mask``.
    mask : ndarray of bool
        Brain mask.
    voxel_size : sequence of float
        Voxel size (mm).
    b0_dir : sequence of float
        Unit B0 direction in voxel axes.
    weights : ignored
        Accepted for the common signature.
    radius_mm : float, optional
        SMV radius (default max(6 mm, two voxels)).
    lam : float
        Tikhonov weight (default 1e-3, chosen on an analytic phantom; relative to ``C`` whose
        maximum is about 1).
    tol : float
        Relative residual at which CG stops.
    max_iter : int
        Maximum CG iterations.
    workers : int, optional
        FFT threads (default: :func:`qsmprep.qsm.kernels.fft_workers`).

    Returns
    -------
    local_ppm : ndarray of float32
        Local field (ppm), zero outside ``eroded``.
    eroded : ndarray of bool
        The mask eroded by ``radius_mm``.

    References
    ----------
    Sun H, Wilman AH. Background field removal using spherical mean value filtering and
    Tikhonov regularization. Magn Reson Med 2014;71:1151-1157.
    """
    total, mask, vox, _ = normalise_inputs(total_ppm, mask, voxel_size, b0_dir)
    r = max(6.0, 2.0 * max(vox)) if radius_mm is None else float(radius_mm)
    w = _workers(workers)
    grid = CropGrid(mask, [int(math.ceil(r / v)) + 2 for v in vox])
    shape = grid.shape
    f = grid.embed(np.where(mask, total, 0.0))
    m = grid.embed(mask)
    sk = kernels.smv_kernel(shape, vox, r, rfft=True, dtype=np.float32)
    er = _eroded(rfft(m, w), sk, shape, w)
    if not er.any():
        raise ValueError(f"RESHARP: the mask is too small for radius {r} mm.")
    c = (1.0 - sk).astype(np.float32)
    erf = er.astype(np.float32)

    def conv_c(x):
        return convolve(x, c, shape, w)

    def apply_n(p, res):
        y = conv_c(p)
        y *= erf
        res[...] = conv_c(y)
        res += np.float32(lam) * p

    rhs = conv_c(conv_c(f) * erf)
    x, _, _ = cg(apply_n, rhs, tol=tol, max_iter=max_iter)
    x *= erf
    return grid.extract(x), grid.extract(er, dtype=bool)


def _laplace_system(inner, bnd_vals, vox):
    """Sparse SPD system ``A u = r`` of the 7-point negative Laplacian on the voxels ``inner``
    (unknowns) with Dirichlet values ``bnd_vals`` at their neighbours outside ``inner``."""
    import scipy.sparse as sp

    n = int(inner.sum())
    index = np.full(inner.shape, -1, dtype=np.int64)
    index[inner] = np.arange(n)
    coef = [1.0 / (v * v) for v in vox]
    diag = np.full(n, 2.0 * sum(coef))
    rhs = np.zeros(n)
    rows, cols, vals = [], [], []
    for ax in range(3):
        for step in (1, -1):
            # neighbour of every voxel along ``ax`` (the mask is padded, so no wrap-around)
            nb_index = np.roll(index, -step, axis=ax)
            nb_vals = np.roll(bnd_vals, -step, axis=ax)
            nb = nb_index[inner]
            own = index[inner]
            unknown = nb >= 0
            rows.append(own[unknown])
            cols.append(nb[unknown])
            vals.append(np.full(int(unknown.sum()), -coef[ax]))
            rhs[~unknown] += coef[ax] * nb_vals[inner][~unknown]
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(diag)
    a = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(n, n))
    return a, rhs, index


def lbv(total_ppm, mask, voxel_size, b0_dir=(0.0, 0.0, 1.0), weights=None, tol=1e-6,
        max_iter=5000, peel=2, levels=4):
    """Laplacian boundary value (LBV) background field removal.

    The background field is harmonic inside the brain; LBV takes it to be the solution of
    Laplace's equation ``lap b = 0`` inside the mask with the total field on the mask boundary
    as Dirichlet condition (the boundary is the mask voxels with a 6-neighbour outside the mask),
    and returns ``local = total - b``. The 7-point Laplacian (anisotropic voxel sizes) restricted
    to the mask is solved by conjugate gradients (:func:`scipy.sparse.linalg.cg`, float64) from
    an initial guess that is the same problem solved on a 2x coarser grid, recursively
    (``levels`` grids; a nested-iteration form of the multigrid of the original paper): the
    smooth background is what a coarse grid gets right, so CG only has to fix the fine detail.

    The local field is not harmonic-free near the boundary: LBV assumes that the local field
    vanishes at the boundary, which is least true where it is taken. ``peel`` layers of voxels
    next to the boundary are therefore removed from the returned mask (as the MEDI toolbox and
    SEPIA do); peeling does not change the solution inside. The error LBV leaves is the harmonic
    continuation of the local field (and of any phase error) on the mask boundary into the
    interior: a smooth field, largest where the boundary field is strong or unreliable, so LBV
    needs a mask whose boundary voxels have reliable phase. ``weights`` are accepted for the
    common signature and ignored (LBV has no data term).

    Parameters
    ----------
    tol : float
        Relative residual ``||r|| / ||rhs||`` at which CG stops on the finest grid (default 1e-6;
        the background is ~100x the local field, so the solve must be tight).
    max_iter : int
        Maximum CG iterations per grid (default 5000).
    peel : int
        Layers of voxels (6-connected erosion steps) removed from the mask after the solve,
        besides the boundary layer itself (default 2).
    levels : int
        Number of grids of the nested iteration (default 4; 1 = plain CG from zero).

    Returns
    -------
    local_ppm : ndarray (float32)
        Local field, zero outside the returned mask.
    eroded_mask : ndarray (bool)
        The mask without its boundary layer and ``peel`` more layers.

    Raises
    ------
    ValueError
        If the mask has no interior voxel left after the boundary layer and ``peel``.

    References
    ----------
    Zhou D, Liu T, Spincemaille P, Wang Y. Background field removal by solving the Laplacian
    boundary value problem. NMR Biomed 2014;27:312-319.

    Examples
    --------
    A linear field is harmonic, so LBV removes it exactly:

    >>> import numpy as np
    >>> g = np.mgrid[:20, :20, :20].astype(float)
    >>> mask = ((g - 9.5) ** 2).sum(0) < 64
    >>> local, er = lbv(0.01 * g[0] - 0.02 * g[2], mask, (1, 1, 1), tol=1e-10)
    >>> bool(np.abs(local[er]).max() < 1e-6)
    True
    """
    from scipy import ndimage

    total, mask, vox, _ = normalise_inputs(total_ppm, mask, voxel_size, b0_dir)
    grid = CropGrid(mask, 2)
    # CropGrid pads to an FFT-friendly shape; LBV only needs the 1-voxel zero frame it gives
    m = grid.embed(mask, dtype=bool)
    f = grid.embed(np.where(mask, total, 0.0), dtype=np.float64)
    bg = _lbv_solve(f, m, vox, tol, int(max_iter), max(1, int(levels)))
    inner = ndimage.binary_erosion(m, _CROSS, iterations=1 + max(0, int(peel)))
    if not inner.any():
        raise ValueError(f"LBV: the mask has no voxel left after peeling {peel} layers.")
    local = np.where(inner, f - bg, 0.0).astype(np.float32)
    return grid.extract(local), grid.extract(inner, dtype=bool)


_CROSS = np.zeros((3, 3, 3), bool)
_CROSS[1, 1, :] = _CROSS[1, :, 1] = _CROSS[:, 1, 1] = True


def _lbv_solve(f, m, vox, tol, max_iter, levels):
    """Harmonic extension of the boundary values of ``f`` into ``m`` (zero outside ``m``)."""
    from scipy import ndimage
    from scipy.sparse.linalg import cg as sparse_cg

    inner = ndimage.binary_erosion(m, _CROSS)
    b = np.where(m, f, 0.0)
    if not inner.any():
        return b
    bnd = np.where(m & ~inner, f, 0.0)
    a, rhs, index = _laplace_system(inner, bnd, vox)
    x0 = None
    if levels > 1 and min(m.shape) >= 12:
        # coarse grid: 2x2x2 blocks; a coarse voxel is in the mask if all its fine voxels are,
        # its value the block mean; the coarse solution, upsampled, is the initial guess
        sh = tuple(s - s % 2 for s in m.shape)
        mc = m[:sh[0], :sh[1], :sh[2]].reshape(sh[0] // 2, 2, sh[1] // 2, 2, sh[2] // 2, 2)
        fc = f[:sh[0], :sh[1], :sh[2]].reshape(mc.shape)
        mc = mc.all(axis=(1, 3, 5))
        if ndimage.binary_erosion(mc, _CROSS).sum() > 8:
            fc = fc.mean(axis=(1, 3, 5))
            # coarse boundary values where the coarse mask ends inside the fine mask: block mean
            bc = _lbv_solve(fc, mc, tuple(2 * v for v in vox), tol, max_iter, levels - 1)
            up = ndimage.zoom(np.where(mc, bc, 0.0), 2, order=1, grid_mode=True, mode="nearest")
            wt = ndimage.zoom(mc.astype(float), 2, order=1, grid_mode=True, mode="nearest")
            guess = np.zeros(m.shape)
            guess[:sh[0], :sh[1], :sh[2]] = np.where(wt > 0.5, up / np.maximum(wt, 1e-6), 0.0)
            guess = np.where(guess != 0, guess, f)
            x0 = guess[inner]
    u, info = sparse_cg(a, rhs, x0=x0, rtol=tol, atol=0.0, maxiter=max_iter)
    if info > 0:
        warnings.warn(f"LBV: conjugate gradients did not reach tol={tol} in {max_iter} "
                      "iterations.", stacklevel=3)
    b[inner] = u
    return b


def auto_method(voxel_size) -> str:
    """The method ``auto`` runs for this voxel size: ``"pdf"`` or ``"vsharp"``.

    PDF when every voxel dimension is at most :data:`AUTO_PDF_MAX_VOXEL_MM` (within
    :data:`qsmprep.qsm.kernels.VOXEL_SIZE_TOL_MM`, so that an oblique affine's rounding does not
    flip the choice), V-SHARP for coarser voxels. Measured (docs/validation.md, "Background
    field removal by voxel size"): on heads imaged by an independent forward model (qsm-forward,
    skull, sinuses, ear canals) V-SHARP leaves a low-order residual background of 23-38 ppb in
    the deep gray matter at 1 x 1 x 1.5 mm and 1.5 x 1.5 x 2.25 mm, PDF 3-9 ppb; on qsmprep's
    own head PDF is worse: at 1 mm its reported pallidum and putamen are 6-11 ppb low (worst
    table error 11.4 against 6.5 ppb through the whole pipeline), at 3 mm 4x worse (13-15
    against 3.4 ppb), where its outside sources also absorb part of the nuclei's own field.
    The default follows the smaller worst case over both simulators. No data lie between 2.25 and
    3 mm; the threshold sits between them. The 2024 consensus lists both methods among the
    recommended background-removal families.

    Parameters
    ----------
    voxel_size : sequence of float
        Voxel size (mm).

    Returns
    -------
    str
        A ``bf_removal`` method name.

    Examples
    --------
    >>> auto_method((1.0, 1.0, 1.5)), auto_method((3.0, 3.0, 3.0))
    ('pdf', 'vsharp')
    """
    vs = [float(v) for v in voxel_size]
    return "pdf" if max(vs) <= AUTO_PDF_MAX_VOXEL_MM + kernels.VOXEL_SIZE_TOL_MM else "vsharp"


def auto(total_ppm, mask, voxel_size, b0_dir=(0.0, 0.0, 1.0), weights=None, **opts):
    """Background removal by the method :func:`auto_method` picks for ``voxel_size``.

    ``opts`` go to that method (an option it does not take raises ``TypeError``: name the
    method explicitly to tune it). :func:`qsmprep.qsm.pipeline.run_background_removal` records
    the method that ran in the provenance.

    Parameters
    ----------
    total_ppm, mask, voxel_size, b0_dir, weights
        As for every method (module docstring).
    **opts
        Options of the chosen method.

    Returns
    -------
    local_ppm : ndarray of float32
    eroded : ndarray of bool

    References
    ----------
    Liu T et al. NMR Biomed 2011;24:1129-1136 (PDF). Li W, Wu B, Liu C. NeuroImage
    2011;55:1645-1656 (V-SHARP).
    """
    name = auto_method(voxel_size)
    func = pdf if name == "pdf" else vsharp
    return func(total_ppm, mask, voxel_size, b0_dir, weights=weights, **opts)


#: name -> function of every ``bf_removal`` record of :mod:`qsmprep.qsm.methods` (one record
#: there registers a new method)
METHODS = _registry.MethodTable("bf_removal")
DEFAULT = _registry.default("bf_removal")
