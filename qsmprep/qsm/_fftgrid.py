"""Private helpers shared by :mod:`qsmprep.qsm.background` and :mod:`qsmprep.qsm.inversion`.

* :class:`CropGrid` crops a volume to the bounding box of the mask plus a margin and zero-pads it
  to an FFT-friendly, even shape (``kernels.next_fast_shape``). Every FFT-based solver works on
  that smaller grid: at 1 mm the brain's bounding box is much smaller than the acquisition matrix,
  so each FFT is cheaper, and the margin keeps the periodic wrap-around of the FFT convolution
  away from the mask.
* Real FFT wrappers (``scipy.fft.rfftn``/``irfftn`` with ``workers``), float32/complex64.
* Forward-difference gradient / its adjoint with periodic boundaries (matching the k-space symbol
  ``exp(2 pi i k / n) - 1``), written into preallocated buffers.
* A conjugate-gradient solver for symmetric positive (semi)definite operators on float32 arrays.

No nipype, no I/O.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from . import kernels


def as_float32(a) -> np.ndarray:
    """C-contiguous float32 copy (or view, if already so) of an array.

    Parameters
    ----------
    a : array_like
        Any numeric array.

    Returns
    -------
    numpy.ndarray
        ``a`` as a C-contiguous ``float32`` array; no copy when ``a`` already is one.
    """
    return np.ascontiguousarray(a, dtype=np.float32)


def normalise_inputs(field, mask, voxel_size, b0_dir):
    """Check and normalise the common inputs of the background-removal and inversion solvers.

    Parameters
    ----------
    field : array_like
        3-D field map (the callers pass the total or local field in ppm; the unit is not used
        here).
    mask : array_like
        Mask of the same shape; converted to ``bool``.
    voxel_size : array_like
        Voxel size (mm); the first three values are used.
    b0_dir : array_like
        Direction of the main field (3 values, any non-zero length).

    Returns
    -------
    field : numpy.ndarray
        ``field`` as an array (dtype unchanged).
    mask : numpy.ndarray of bool
        The mask.
    vox : tuple of float
        The three voxel sizes (mm).
    b0_dir : tuple of float
        The unit vector along ``b0_dir``.

    Raises
    ------
    ValueError
        If ``field`` is not 3-D, the shapes of ``field`` and ``mask`` differ, the mask is empty,
        ``voxel_size`` is not three positive numbers or ``b0_dir`` is not a finite non-zero
        3-vector.
    """
    field = np.asarray(field)
    mask = np.asarray(mask).astype(bool)
    if field.ndim != 3:
        raise ValueError(f"Expected a 3-D field, got shape {field.shape}.")
    if field.shape != mask.shape:
        raise ValueError(f"Field shape {field.shape} and mask shape {mask.shape} differ.")
    if not mask.any():
        raise ValueError("The mask is empty.")
    vox = tuple(float(v) for v in np.asarray(voxel_size, dtype=float).ravel()[:3])
    if len(vox) != 3 or min(vox) <= 0:
        raise ValueError(f"voxel_size must be three positive numbers (mm), got {voxel_size!r}.")
    b = np.asarray(b0_dir, dtype=float).ravel()
    if b.size != 3 or not np.isfinite(b).all() or np.linalg.norm(b) == 0:
        raise ValueError(f"b0_dir must be a non-zero 3-vector, got {b0_dir!r}.")
    b = tuple(float(x) for x in b / np.linalg.norm(b))
    return field, mask, vox, b


def normalise_weights(weights, mask) -> np.ndarray | None:
    """Data weights >= 0, scaled to mean 1 inside the mask.

    The scaling makes regularisation weights keep their meaning whatever the scale of the
    reliability map.

    Parameters
    ----------
    weights : array_like or None
        Data weights (e.g. a reliability map), any non-negative scale; negative values are
        clipped to 0, non-finite values and voxels outside ``mask`` set to 0.
    mask : numpy.ndarray of bool
        The mask, of the same shape as ``weights``.

    Returns
    -------
    numpy.ndarray or None
        float32 weights with mean 1 inside ``mask`` and 0 outside; ``None`` if ``weights`` is
        ``None``.

    Raises
    ------
    ValueError
        If the shapes of ``weights`` and ``mask`` differ, or the weights are zero everywhere
        inside the mask.
    """
    if weights is None:
        return None
    if np.shape(weights) != np.shape(mask):
        raise ValueError(f"weights shape {np.shape(weights)} differs from mask shape "
                         f"{np.shape(mask)}.")
    mask = np.asarray(mask, bool)
    bounds = mask_bounds(mask)
    # on the mask's bounding box: outside it every weight is 0 anyway, and the mask's values
    # come in the same order, so the mean (and every weight) is the same as on the whole grid
    box = (tuple(slice(None) for _ in mask.shape) if bounds is None
           else tuple(slice(lo, hi + 1) for lo, hi in zip(*bounds)))
    w = np.asarray(np.asarray(weights)[box], dtype=np.float64)
    mb = mask[box]
    w = np.where(np.isfinite(w) & mb, np.clip(w, 0, None), 0.0)
    mean = w[mb].mean()
    if mean <= 0:
        raise ValueError("weights are zero everywhere inside the mask.")
    out = np.zeros(mask.shape, np.float32)
    out[box] = (w / mean).astype(np.float32)
    return out


def workers(n=None) -> int:
    """Number of :mod:`scipy.fft` worker threads.

    Parameters
    ----------
    n : int or None
        Requested number; ``None`` or 0 means the default.

    Returns
    -------
    int
        ``n``, or :func:`qsmprep.qsm.kernels.fft_workers` when ``n`` is not given.
    """
    return int(n) if n else kernels.fft_workers()


def mask_bounds(mask):
    """First and last index of the true voxels along each axis, or ``None`` when there are none.

    The bounds of ``np.argwhere(mask).min(0)`` / ``.max(0)`` from one ``any`` projection per
    axis: 0.005 against 0.44 s for a 1 mm brain mask, 0.02 against 5 s for a 1 mm head's
    non-zero voxels (the bounding boxes of the FFT grids, the masking steps and the
    registration crops all come from here).

    Parameters
    ----------
    mask : array_like
        Boolean (or truthy) array of any dimension.

    Returns
    -------
    tuple of two lists of int, or None
        ``(lo, hi)`` with ``hi`` inclusive.

    Examples
    --------
    >>> m = np.zeros((4, 5), bool); m[1, 2] = m[2, 4] = True
    >>> mask_bounds(m)
    ([1, 2], [2, 4])
    """
    mask = np.asarray(mask)
    lo, hi = [], []
    for ax in range(mask.ndim):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))
        if idx.size == 0:
            return None
        lo.append(int(idx[0]))
        hi.append(int(idx[-1]))
    return lo, hi


class CropGrid:
    """Crop to the mask's bounding box plus ``margin`` voxels per side, pad to a fast shape."""

    def __init__(self, mask: np.ndarray, margin) -> None:
        mask = np.asarray(mask, dtype=bool)
        self.full_shape = mask.shape
        margin = np.broadcast_to(np.asarray(margin, dtype=int), (3,))
        bounds = mask_bounds(mask)
        if bounds is None:
            raise ValueError("CropGrid: the mask is empty.")
        lo = np.array(bounds[0])
        hi = np.array(bounds[1]) + 1
        size = hi - lo + 2 * margin
        self.shape = kernels.next_fast_shape(tuple(int(s) for s in size))
        self.start = lo - margin - (np.array(self.shape) - size) // 2
        src, dst = [], []
        for st, m, n in zip(self.start, self.shape, self.full_shape):
            a, b = max(st, 0), min(st + m, n)
            src.append(slice(int(a), int(b)))
            dst.append(slice(int(a - st), int(b - st)))
        self._src, self._dst = tuple(src), tuple(dst)

    def embed(self, vol, dtype=np.float32) -> np.ndarray:
        """Copy a full-size volume into a new array on the cropped, padded grid.

        Parameters
        ----------
        vol : array_like
            Volume of shape :attr:`full_shape`.
        dtype : numpy dtype
            Type of the result.

        Returns
        -------
        numpy.ndarray
            Array of shape :attr:`shape`; zero where the grid lies outside the full volume.
        """
        out = np.zeros(self.shape, dtype=dtype)
        out[self._dst] = np.asarray(vol)[self._src]
        return out

    def extract(self, vol, dtype=np.float32) -> np.ndarray:
        """Copy a volume on the cropped grid back into a new full-size array.

        The inverse of :meth:`embed` inside the cropped region.

        Parameters
        ----------
        vol : numpy.ndarray
            Volume of shape :attr:`shape`.
        dtype : numpy dtype
            Type of the result.

        Returns
        -------
        numpy.ndarray
            Array of shape :attr:`full_shape`; zero outside the cropped region.
        """
        out = np.zeros(self.full_shape, dtype=dtype)
        out[self._src] = vol[self._dst]
        return out


def rfft(x, w):
    """Real N-D FFT over all axes (``scipy.fft.rfftn``).

    Parameters
    ----------
    x : numpy.ndarray
        Real array (float32 gives complex64).
    w : int
        Number of worker threads.

    Returns
    -------
    numpy.ndarray
        Complex half spectrum: the last axis has ``n // 2 + 1`` entries.
    """
    return sfft.rfftn(x, workers=w)


def irfft(X, shape, w, overwrite=False):
    """Inverse of :func:`rfft` (``scipy.fft.irfftn``).

    Parameters
    ----------
    X : numpy.ndarray
        Complex half spectrum, as returned by :func:`rfft`.
    shape : tuple of int
        Shape of the real result (needed to know whether the last axis was odd).
    w : int
        Number of worker threads.
    overwrite : bool
        ``X`` is scratch (the caller never reads it again): the complex transforms over the
        leading axes then run in place in ``X`` and only the last axis' complex-to-real
        transform allocates. ``scipy.fft.irfftn`` allocates a complex temporary of ``X``'s size
        for them on every call (36 MB for a padded 1 mm head); avoiding it (and the product's
        own array, in :func:`convolve`) saved 6-13 % of a convolution (``benchmarks/fft_convolve.py``,
        two runs on a shared machine). The same
        transforms in the same order; the result differs from ``irfftn``'s by float rounding.

    Returns
    -------
    numpy.ndarray
        Real array of shape ``shape``.
    """
    if overwrite and len(shape) > 1 and X.flags.c_contiguous:
        lead = tuple(range(len(shape) - 1))
        X = sfft.ifftn(X, axes=lead, workers=w, overwrite_x=True)
        return sfft.irfft(X, n=shape[-1], axis=-1, workers=w, overwrite_x=True)
    return sfft.irfftn(X, s=shape, workers=w)


def convolve(x, kernel_k, shape, w):
    """Circular convolution ``irfft(rfft(x) * kernel_k)`` with the spectrum as scratch.

    Parameters
    ----------
    x : numpy.ndarray
        Real array of shape ``shape``.
    kernel_k : numpy.ndarray
        Kernel half spectrum (broadcastable to ``rfft(x)``), e.g. the dipole kernel.
    shape : tuple of int
        Shape of ``x`` and of the result.
    w : int
        Number of worker threads.

    Returns
    -------
    numpy.ndarray
        Real array of shape ``shape`` (the dtype ``irfft(rfft(x) * kernel_k)`` has).
    """
    X = rfft(x, w)
    same_type = np.result_type(X, kernel_k) == X.dtype
    if same_type and np.broadcast_shapes(X.shape, np.shape(kernel_k)) == X.shape:
        X *= kernel_k
    else:
        X = X * kernel_k
    return irfft(X, shape, w, overwrite=True)


def grad(x: np.ndarray, voxel_size, out: np.ndarray) -> np.ndarray:
    """Forward differences with periodic boundaries, in 1/mm, written into ``out``.

    ``(G x)_a[i] = (x[i + e_a] - x[i]) / d_a``, the last index wrapping to the first.

    Parameters
    ----------
    x : numpy.ndarray
        3-D array.
    voxel_size : sequence of float
        Voxel size ``d_a`` per axis (mm).
    out : numpy.ndarray
        Preallocated buffer of shape ``(3,) + x.shape``; overwritten.

    Returns
    -------
    numpy.ndarray
        ``out``, holding the three components of the gradient (unit of ``x`` per mm).
    """
    for ax in range(3):
        o = np.moveaxis(out[ax], ax, 0)
        xa = np.moveaxis(x, ax, 0)
        np.subtract(xa[1:], xa[:-1], out=o[:-1])
        np.subtract(xa[:1], xa[-1:], out=o[-1:])
        o *= 1.0 / voxel_size[ax]
    return out


def grad_adj(g: np.ndarray, voxel_size, out: np.ndarray) -> np.ndarray:
    """Adjoint of :func:`grad` (minus the backward-difference divergence) into ``out``.

    ``(G^T g)_i = sum_a (g_a[i-1] - g_a[i]) / d_a``; computed without temporaries for isotropic
    voxels (the common case), with one temporary per axis otherwise.

    Parameters
    ----------
    g : numpy.ndarray
        Vector field of shape ``(3,) + out.shape`` (e.g. from :func:`grad`).
    voxel_size : sequence of float
        Voxel size ``d_a`` per axis (mm).
    out : numpy.ndarray
        Preallocated 3-D buffer; overwritten.

    Returns
    -------
    numpy.ndarray
        ``out``, holding ``G^T g`` (unit of ``g`` per mm).
    """
    iso = len(set(float(v) for v in voxel_size)) == 1
    out[...] = 0
    for ax in range(3):
        o = np.moveaxis(out, ax, 0)
        ga = np.moveaxis(g[ax], ax, 0)
        if iso:
            np.add(o[1:], ga[:-1], out=o[1:])
            np.add(o[:1], ga[-1:], out=o[:1])
            np.subtract(o, ga, out=o)
        else:
            s = 1.0 / voxel_size[ax]
            o[1:] += ga[:-1] * s
            o[:1] += ga[-1:] * s
            o -= ga * s
    if iso and float(voxel_size[0]) != 1.0:
        out *= out.dtype.type(1.0 / float(voxel_size[0]))
    return out


def grad_symbol_sq(shape, voxel_size, rfft_half=True) -> np.ndarray:
    """Fourier symbol of ``G^T G`` for :func:`grad`, in mm^-2.

    ``|G(k)|^2 = sum_a (2 - 2 cos(2 pi k_a / n_a)) / d_a^2``, i.e. minus the symbol of the
    7-point Laplacian (:func:`qsmprep.qsm.kernels.laplacian_kernel`); ``>= 0``, zero at DC.

    Parameters
    ----------
    shape : sequence of int
        Grid shape.
    voxel_size : sequence of float
        Voxel size ``d_a`` per axis (mm).
    rfft_half : bool
        Return the half spectrum on the last axis (``n // 2 + 1`` entries), matching
        :func:`rfft`.

    Returns
    -------
    numpy.ndarray
        float32 array of the symbol.
    """
    return -kernels.laplacian_kernel(shape, voxel_size, rfft=rfft_half, dtype=np.float32)


def dot(a, b) -> float:
    """Inner product of two arrays of the same size, over all their elements.

    Parameters
    ----------
    a, b : numpy.ndarray
        Real arrays with the same number of elements.

    Returns
    -------
    float
        ``sum(a * b)`` as a Python float.
    """
    return float(np.dot(a.ravel(), b.ravel()))


def cg(apply_a, b: np.ndarray, x0=None, tol=1e-3, max_iter=100, callback=None):
    """Conjugate gradients for a symmetric positive semidefinite operator.

    ``apply_a(p, out)`` writes ``A p`` into ``out``. Stops when ``||r|| <= tol * ||b||``, after
    ``max_iter`` iterations, or when ``p^T A p <= 0``. Buffers are allocated once.

    Parameters
    ----------
    apply_a : callable
        ``apply_a(p, out)``: writes ``A p`` into the preallocated array ``out`` (same shape and
        dtype as ``b``).
    b : numpy.ndarray
        Right-hand side (float32 in the solvers); its dtype is that of the iterates.
    x0 : numpy.ndarray or None
        Initial guess (copied, not modified); ``None`` starts from zero.
    tol : float
        Tolerance on the residual norm relative to ``||b||``.
    max_iter : int
        Maximum number of iterations.
    callback : callable or None
        ``callback(iteration, rel_residual)``, called after each iteration.

    Returns
    -------
    x : numpy.ndarray
        The solution, same shape and dtype as ``b`` (zero if ``b`` is zero).
    n_iter : int
        Number of iterations run.
    rel_residual : float
        ``||b - A x|| / ||b||`` as tracked by the recurrence (0.0 if ``b`` is zero).
    """
    from . import _admmkernel as fused  # numba: imported when a solve runs

    # C-contiguous buffers (the fused updates run over flat views)
    x = (np.zeros(b.shape, b.dtype) if x0 is None
         else np.array(x0, dtype=b.dtype, order="C", copy=True))
    ap = np.empty(b.shape, b.dtype)
    if x0 is None:
        r = np.array(b, order="C", copy=True)
    else:
        apply_a(x, ap)
        r = np.subtract(b, ap, out=np.empty(b.shape, b.dtype))
    p = r.copy()
    fx, fr, fp, fap = (fused.flat(a) for a in (x, r, p, ap))
    bnorm = np.sqrt(dot(b, b))
    if bnorm == 0:
        return x, 0, 0.0
    rr = dot(r, r)
    it = 0
    rel = np.sqrt(rr) / bnorm
    while it < max_iter and rel > tol:
        apply_a(p, ap)
        pap = dot(p, ap)
        if pap <= 0:
            break
        alpha = rr / pap
        # x += alpha p; r -= alpha ap; p = (rr_new / rr) p + r: fused, same float operations
        fused.cg_step(fx, fr, fp, fap, b.dtype.type(alpha))
        rr_new = dot(r, r)
        fused.cg_direction(fp, fr, b.dtype.type(rr_new / rr))
        rr = rr_new
        it += 1
        rel = np.sqrt(rr) / bnorm
        if callback is not None:
            callback(it, rel)
    return x, it, float(rel)
