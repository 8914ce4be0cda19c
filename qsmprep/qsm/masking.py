"""Brain masks for QSM from magnitude and phase quality.

A mask that keeps the scalp next to air ruins every later step (strong air-tissue fields that no
background removal can model). The default therefore builds the mask in two passes, as QSMxT does
(Stewart AW, et al. QSMxT: Robust masking and artifact reduction for quantitative susceptibility
mapping. Magn Reson Med 2022;87:1289-1300, doi:10.1002/mrm.29048): a magnitude mask whose
thin scalp bridges are cut morphologically, then pruning by a ROMEO phase-quality map and
explicit removal of the outer shell. This follows the 2024 consensus (QSM Consensus Organization
Committee, Magn Reson Med 2024;91:1834-1862, doi:10.1002/mrm.30006: "mask from magnitude plus
phase quality").

:data:`METHODS` entries share the signature ``f(mag, phase, tes, voxel_size, **opts) -> bool``
(``phase``/``tes`` are ignored by ``magnitude``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from . import methods as _registry
from ._fftgrid import mask_bounds
from .unwrap import _jit


def combine_magnitude(mag, combine: str = "rss") -> np.ndarray:
    """Echo-combined magnitude: root-sum-of-squares or first echo.

    Parameters
    ----------
    mag : ndarray
        3-D magnitude (returned as float32) or 4-D ``(x, y, z, echo)``.
    combine : {"rss", "first"}
        Root-sum-of-squares over echoes, or the first echo.

    Returns
    -------
    ndarray of float32
        3-D magnitude.

    Raises
    ------
    ValueError
        For another ``combine``.

    Examples
    --------
    >>> float(combine_magnitude(np.full((1, 1, 1, 2), 3.0))[0, 0, 0])  # doctest: +ELLIPSIS
    4.24...
    """
    mag = np.asarray(mag, dtype=np.float32)
    if mag.ndim == 3:
        return mag
    if combine == "rss":
        # echo by echo into one 3-D sum: the same float32 additions in the same order as
        # np.sum(mag**2, axis=-1) for fewer than 8 echoes (numpy sums longer axes pairwise),
        # without a 4-D temporary (first-touch page faults of a fresh 4-D array cost more
        # than the arithmetic)
        acc = np.square(mag[..., 0])
        for e in range(1, mag.shape[-1]):
            acc += np.square(mag[..., e])
        return np.sqrt(acc, out=acc)
    if combine == "first":
        return mag[..., 0]
    raise ValueError(f"Unknown magnitude combination {combine!r}")


def _finite_float64(values) -> np.ndarray:
    """The finite values as a flat float64 array, in C order.

    Converted in one pass (an F-ordered image is not first converted and then copied again by
    ``ravel``), and gathered only when some value is not finite (a second whole copy, 0.5 s
    for a 1 mm field of view on the benchmark machine).
    """
    v = np.asarray(values, dtype=np.float64, order="C").ravel()
    finite = np.isfinite(v)
    return v if finite.all() else v[finite]


def otsu_threshold(values, nbins: int = 256) -> float:
    """Otsu's threshold of the finite values, via scikit-image.

    Parameters
    ----------
    values : array_like
        Intensities (NaN/Inf ignored).
    nbins : int
        Histogram bins.

    Returns
    -------
    float
        The threshold (the constant value for constant input, 0 for no finite value).

    References
    ----------
    Otsu N. A threshold selection method from gray-level histograms. IEEE Trans Syst Man Cybern
    1979;9:62-66.
    """
    from skimage.filters import threshold_otsu

    values = _finite_float64(values)
    if values.size == 0 or values.min() == values.max():
        return float(values.min()) if values.size else 0.0
    return float(threshold_otsu(values, nbins=nbins))


def background_threshold(values, no_background_ratio: float = 0.4, fallback=None):
    """Otsu threshold that notices when there is no background class.

    On a head with air around it Otsu separates noise from tissue. On a cropped or skull-stripped
    image (no air), Otsu splits *tissue* into two classes. When the mean of the lower class is
    more than ``no_background_ratio`` times the mean of the upper class the lower class is taken
    to be tissue and ``fallback`` is returned (default: a quarter of the median), which keeps every
    voxel with tissue-like signal.

    Parameters
    ----------
    values : array_like
        Intensities (NaN/Inf ignored).
    no_background_ratio : float
        Lower-class mean / upper-class mean above which there is no background class.
    fallback : float, optional
        Threshold returned without a background class (default: a quarter of the median).

    Returns
    -------
    threshold : float
    has_background : bool
    """
    v = _finite_float64(values)
    t = otsu_threshold(v)
    lo, hi = v[v <= t], v[v > t]
    if lo.size == 0 or hi.size == 0:
        return t, False
    if lo.mean() > no_background_ratio * hi.mean():
        return (0.25 * float(np.median(v)) if fallback is None else float(fallback)), False
    return t, True


def largest_component(mask, connectivity: int = 1) -> np.ndarray:
    """Largest connected component.

    Parameters
    ----------
    mask : array_like of bool
        3-D mask.
    connectivity : int
        1 (6-connectivity), 2 (18) or 3 (26).

    Returns
    -------
    ndarray of bool
        The largest component (an empty mask stays empty).
    """
    mask = np.asarray(mask, bool)
    bounds = mask_bounds(mask)
    if bounds is None:
        return mask.copy()
    # labelled on the mask's bounding box: every component lies inside it, and the raster order
    # of its voxels (which numbers the components, and so breaks ties of size) is the whole
    # image's, so the result is the whole image's, on a fraction of its voxels
    box = tuple(slice(a, b + 1) for a, b in zip(bounds[0], bounds[1]))
    labels, n = ndi.label(mask[box], structure=ndi.generate_binary_structure(3, connectivity))
    out = np.zeros(mask.shape, bool)
    if n == 1:
        out[box] = labels == 1
        return out
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    out[box] = labels == int(np.argmax(counts))
    return out


_INF_SQ = 1 << 40  # "no background voxel on this line" in the squared-distance passes


@_jit
def _sq_edt_line(f, n, out, v, zn, zd):  # pragma: no cover - numba
    """Exact 1-D squared distance transform of ``f[:n]`` (lower envelope of parabolas,
    Felzenszwalb & Huttenlocher 2012) in integers: the envelope breakpoints ``zn / zd`` are
    compared by cross-multiplication, so no rounding can pick a wrong parabola."""
    k = 0
    v[0] = 0
    for q in range(1, n):
        fq = f[q] + q * q
        while True:
            p = v[k]
            num = fq - (f[p] + p * p)
            den = 2 * (q - p)
            if k == 0 or num * zd[k] > zn[k] * den:
                break
            k -= 1
        k += 1
        v[k] = q
        zn[k] = num
        zd[k] = den
    last = k
    k = 0
    for q in range(n):
        while k < last and zn[k + 1] < q * zd[k + 1]:
            k += 1
        p = v[k]
        val = (q - p) * (q - p) + f[p]
        out[q] = val if val < _INF_SQ else _INF_SQ


@_jit
def _sq_edt_kernel(fg):  # pragma: no cover - numba
    """Squared Euclidean distance (in voxels) of every voxel to the nearest ``False`` voxel."""
    nx, ny, nz = fg.shape
    d = np.empty((nx, ny, nz), np.int64)
    for i in range(nx):
        for j in range(ny):
            for k in range(nz):
                d[i, j, k] = _INF_SQ if fg[i, j, k] else 0
    nmax = max(nx, max(ny, nz))
    f = np.empty(nmax, np.int64)
    out = np.empty(nmax, np.int64)
    v = np.empty(nmax, np.int64)
    zn = np.empty(nmax + 1, np.int64)
    zd = np.empty(nmax + 1, np.int64)
    for i in range(nx):
        for j in range(ny):
            for k in range(nz):
                f[k] = d[i, j, k]
            _sq_edt_line(f, nz, out, v, zn, zd)
            for k in range(nz):
                d[i, j, k] = out[k]
    for i in range(nx):
        for k in range(nz):
            for j in range(ny):
                f[j] = d[i, j, k]
            _sq_edt_line(f, ny, out, v, zn, zd)
            for j in range(ny):
                d[i, j, k] = out[j]
    for j in range(ny):
        for k in range(nz):
            for i in range(nx):
                f[i] = d[i, j, k]
            _sq_edt_line(f, nx, out, v, zn, zd)
            for i in range(nx):
                d[i, j, k] = out[i]
    return d


def _exact_grid(shape, vs) -> bool:
    """Isotropic voxels whose size has at most 11 significant bits (1, 0.5, 0.9375 mm, ...) on a
    grid under 2048 voxels per axis: every ``(k v)^2`` sum is then exact in float64, so
    ``sqrt(v^2 d2)`` is bit for bit what :func:`scipy.ndimage.distance_transform_edt` returns."""
    v = vs[0]
    return (all(x == v for x in vs) and v > 0 and float(np.float16(v)) == v
            and max(shape) < 2048 and len(shape) == 3)


def _edt(mask, voxel_size):
    """Euclidean distance (mm) of every voxel of ``mask`` to the nearest voxel outside it.

    Equal, bit for bit, to ``scipy.ndimage.distance_transform_edt(mask, sampling=voxel_size)``;
    on isotropic grids of exactly representable voxel size (see :func:`_exact_grid`) it is
    computed by a compiled exact squared-distance transform (``_sq_edt_kernel``) that is several
    times faster; a line, plane or volume without any voxel outside the mask gets a huge value.
    """
    vs = tuple(float(v) for v in voxel_size)
    mask = np.asarray(mask, bool)
    if not _exact_grid(mask.shape, vs) or mask.all():
        return ndi.distance_transform_edt(mask, sampling=vs)
    d2 = _sq_edt_kernel(np.ascontiguousarray(mask))
    return np.sqrt(d2 * (vs[0] * vs[0]))


def _bbox(mask, margin):
    """Slices of the bounding box of ``mask`` grown by ``margin`` voxels per axis (clipped)."""
    bounds = mask_bounds(mask)
    if bounds is None:
        raise ValueError("_bbox: the mask is empty.")
    return tuple(slice(max(a - int(m), 0), min(b + int(m) + 1, n))
                 for a, b, m, n in zip(bounds[0], bounds[1], margin, mask.shape))


def erode_mm(mask, voxel_size, radius_mm: float) -> np.ndarray:
    """Erosion by a ball of ``radius_mm`` (Euclidean distance transform, anisotropic voxels).

    Voxels outside the array count as background. Computed on the mask's bounding box only.

    Parameters
    ----------
    mask : array_like of bool
        3-D mask.
    voxel_size : sequence of float
        Voxel size (mm).
    radius_mm : float
        Ball radius (mm); <= 0 returns a copy.

    Returns
    -------
    ndarray of bool
    """
    mask = np.asarray(mask, bool)
    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    sl = _bbox(mask, (0, 0, 0))
    padded = np.pad(mask[sl], 1)
    out = np.zeros_like(mask)
    out[sl] = (_edt(padded, voxel_size) > radius_mm)[1:-1, 1:-1, 1:-1]
    return out


def dilate_mm(mask, voxel_size, radius_mm: float) -> np.ndarray:
    """Dilation by a ball of ``radius_mm`` (computed on the bounding box grown by the radius).

    Parameters
    ----------
    mask : array_like of bool
        3-D mask.
    voxel_size : sequence of float
        Voxel size (mm).
    radius_mm : float
        Ball radius (mm); <= 0 returns a copy.

    Returns
    -------
    ndarray of bool
    """
    mask = np.asarray(mask, bool)
    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    margin = [int(math.ceil(radius_mm / float(v))) + 1 for v in voxel_size]
    sl = _bbox(mask, margin)
    out = np.zeros_like(mask)
    out[sl] = _edt(~mask[sl], voxel_size) <= radius_mm
    return out


def close_mm(mask, voxel_size, radius_mm: float) -> np.ndarray:
    """Morphological closing by a ball of ``radius_mm`` (padded so the FOV edge does not erode).

    Parameters
    ----------
    mask : array_like of bool
        3-D mask.
    voxel_size : sequence of float
        Voxel size (mm).
    radius_mm : float
        Ball radius (mm); <= 0 returns a copy.

    Returns
    -------
    ndarray of bool
    """
    mask = np.asarray(mask, bool)
    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    pad = [int(math.ceil(radius_mm / float(v))) + 1 for v in voxel_size]
    sl = _bbox(mask, (0, 0, 0))
    padded = np.pad(mask[sl], [(p, p) for p in pad])
    closed = erode_mm(dilate_mm(padded, voxel_size, radius_mm), voxel_size, radius_mm)
    out = np.zeros_like(mask)
    out[sl] = closed[tuple(slice(p, p + n) for p, n in zip(pad, mask[sl].shape))]
    return out


def fill_holes(mask) -> np.ndarray:
    """3-D hole filling (:func:`scipy.ndimage.binary_fill_holes`).

    Parameters
    ----------
    mask : array_like of bool
        3-D mask.

    Returns
    -------
    ndarray of bool
    """
    mask = np.asarray(mask, bool)
    bounds = mask_bounds(mask)
    if bounds is None:
        return mask.copy()
    # filled on the mask's bounding box: the background outside the box is connected to the
    # image's border (from any voxel outside the box, walking away from it along an axis where
    # it lies outside reaches the border), and so is every background voxel on the box's own
    # border, which binary_fill_holes takes as its seeds: a background voxel of the box is a
    # hole in the box exactly when it is one in the whole image
    box = tuple(slice(a, b + 1) for a, b in zip(bounds[0], bounds[1]))
    out = np.zeros(mask.shape, bool)
    out[box] = ndi.binary_fill_holes(mask[box])
    return out


def mask_magnitude(
    mag,
    voxel_size,
    threshold: float | None = None,
    threshold_factor: float = 1.0,
    combine: str = "rss",
    smooth_mm: float = 1.0,
    erode_radius_mm: float = 4.0,
    close_radius_mm: float = 2.0,
    fill: bool = True,
) -> np.ndarray:
    """Magnitude brain mask robust to scalp bridges.

    1. Echo-combined magnitude (root-sum-of-squares by default), lightly Gaussian-smoothed
       (``smooth_mm`` FWHM-free sigma in mm) to suppress noise.
    2. Threshold: ``threshold`` (absolute) or Otsu's threshold (Otsu 1979) of the whole image times
       ``threshold_factor`` -- separates tissue from air/bone but keeps the scalp. When the image
       has no dark background (a crop inside the head), a low threshold is used instead
       (:func:`background_threshold`).
    3. Erosion by ``erode_radius_mm`` (ball) cuts bridges thinner than ``2 * erode_radius_mm`` between brain and
       scalp (where the skull is thin or bright); the largest connected component is the brain.
    4. Geodesic dilation back (``erode_radius_mm`` plus one voxel), restricted to the threshold mask, so
       the brain regains its border but cannot spread through the cut bridges.
    5. Closing by ``close_radius_mm`` and 3-D hole filling (dark veins, iron-rich nuclei and
       signal voids inside the brain belong to the mask).

    Parameters
    ----------
    mag : ndarray
        ``(x, y, z)`` or ``(x, y, z, echo)`` magnitude.
    voxel_size : sequence of float
        Voxel size (mm).
    threshold : float, optional
        Absolute threshold (default: Otsu, see step 2).
    threshold_factor : float
        Factor applied to the automatic threshold.
    combine : {"rss", "first"}
        Echo combination (:func:`combine_magnitude`).
    smooth_mm : float
        Gaussian sigma (mm) of the smoothing before thresholding (0 = none).
    erode_radius_mm : float
        Radius of the bridge-cutting erosion (mm).
    close_radius_mm : float
        Radius of the closing (mm).
    fill : bool
        Fill 3-D holes.

    Returns
    -------
    ndarray of bool
        The mask ``(x, y, z)``.
    """
    vs = tuple(float(v) for v in voxel_size)
    m = combine_magnitude(mag, combine)
    if smooth_mm and smooth_mm > 0:
        m = ndi.gaussian_filter(m, sigma=[smooth_mm / v for v in vs])
    if threshold is not None:
        t = float(threshold)
    else:
        t, _ = background_threshold(m)
        t *= threshold_factor
    fg = m > t
    if not fg.any():
        return fg
    core = largest_component(erode_mm(fg, vs, erode_radius_mm)) if erode_radius_mm > 0 else largest_component(fg)
    if not core.any():  # erosion removed everything: fall back to the largest thresholded part
        core = largest_component(fg)
    else:
        n_iter = int(math.ceil(erode_radius_mm / min(vs))) + 1
        core = ndi.binary_dilation(core, ndi.generate_binary_structure(3, 1), iterations=n_iter,
                                   mask=fg)
    out = close_mm(core, vs, close_radius_mm)
    if fill:
        out = fill_holes(out)
    return largest_component(out)


def romeo_voxel_quality(mag, phase, tes=None, mask=None) -> np.ndarray:
    """ROMEO voxel quality map in ``[0, 1]`` (1 = reliable).

    The mean weight of the (up to six) edges touching each voxel, with ROMEO's edge weights
    (:func:`qsmprep.qsm.unwrap.romeo_edge_weights`: phase coherence of echo 1, phase-gradient
    coherence between echoes 1 and 2, magnitude coherence and magnitude). Noise, fast phase
    variation at air-tissue boundaries and partial-volume edges score low.

    Parameters
    ----------
    mag, phase : ndarray
        3-D or 4-D magnitude and phase (radians); the first two echoes are used.
    tes : sequence of float, optional
        Echo times (s), for the echo-1/echo-2 phase-gradient coherence.
    mask : ndarray of bool, optional
        Voxels to evaluate (default: all).

    Returns
    -------
    ndarray
        Quality in ``[0, 1]``.

    References
    ----------
    Dymerska B, Eckstein K, et al. Phase unwrapping with a rapid opensource minimum spanning tree
    algorithm (ROMEO). Magn Reson Med 2021;85:2294-2308, doi:10.1002/mrm.28563.
    """
    from .unwrap import romeo_edge_weights

    phase = np.asarray(phase, dtype=np.float32)
    mag = np.asarray(mag, dtype=np.float32)
    p1 = phase[..., 0] if phase.ndim == 4 else phase
    m1 = mag[..., 0] if mag.ndim == 4 else mag
    p2 = te_ratio = None
    if phase.ndim == 4 and phase.shape[-1] > 1 and tes is not None:
        p2 = phase[..., 1]
        te_ratio = float(tes[0]) / float(tes[1])
    full = np.ones(p1.shape, bool) if mask is None else np.asarray(mask, bool)
    w = romeo_edge_weights(p1, full, m1, p2, te_ratio, nbins=255).astype(np.float32) / 255.0
    total = w.sum(axis=0)
    count = (w > 0).sum(axis=0).astype(np.float32)
    for axis in range(3):
        dst = [slice(None)] * 3
        src = [slice(None)] * 3
        dst[axis] = slice(1, None)
        src[axis] = slice(0, -1)
        total[tuple(dst)] += w[axis][tuple(src)]
        count[tuple(dst)] += (w[axis][tuple(src)] > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(count > 0, total / count, 0.0)
    return q.astype(np.float32)


def mask_phase_quality(
    mag,
    phase,
    tes,
    voxel_size,
    base_mask=None,
    quality_threshold: float | None = None,
    shell_mm: float = 2.0,
    fill: bool = True,
    return_quality: bool = False,
    **magnitude_opts,
):
    """Two-pass magnitude + phase-quality mask (QSMxT-style, Stewart et al. MRM 2022).

    1. ``base_mask`` or :func:`mask_magnitude` (``magnitude_opts`` are passed on).
    2. ROMEO voxel quality (:func:`romeo_voxel_quality`) from echo-1 phase, echo-2 phase-gradient
       coherence and magnitude. The threshold is ``quality_threshold`` or Otsu's threshold of the
       quality over the whole field of view (noise vs tissue), at least 0.3 (0.3 when the field of
       view has no noise background, see :func:`background_threshold`).
    3. ``base_mask & quality >= threshold`` -> largest component -> hole filling (interior voxels
       with poor quality, e.g. veins, are kept; only unreliable voxels connected to the outside
       are dropped) -> closing.
    4. Explicit outer-shell removal: voxels within ``shell_mm`` of the mask surface (Euclidean
       distance <= ``shell_mm``) are removed (one voxel layer at 2 mm, two at 1 mm by default).

    Parameters
    ----------
    mag, phase : ndarray
        4-D ``(x, y, z, echo)`` magnitude and phase (radians).
    tes : sequence of float
        Echo times (s).
    voxel_size : sequence of float
        Voxel size (mm).
    base_mask : ndarray of bool, optional
        First-pass mask (default: :func:`mask_magnitude` with ``magnitude_opts``).
    quality_threshold : float, optional
        Phase-quality threshold (default: Otsu, at least 0.3).
    shell_mm : float
        Width of the removed outer shell (mm; 0 = none).
    fill : bool
        Fill 3-D holes.
    return_quality : bool
        Also return the quality map.
    **magnitude_opts
        Options of :func:`mask_magnitude`.

    Returns
    -------
    mask : ndarray of bool
    quality : ndarray
        The ROMEO voxel quality, only when ``return_quality``.

    References
    ----------
    Stewart AW, et al. QSMxT: Robust masking and artifact reduction for quantitative
    susceptibility mapping. Magn Reson Med 2022;87:1289-1300, doi:10.1002/mrm.29048.
    """
    vs = tuple(float(v) for v in voxel_size)
    if base_mask is None:
        base_mask = mask_magnitude(mag, vs, **magnitude_opts)
    base_mask = np.asarray(base_mask, bool)
    q = romeo_voxel_quality(mag, phase, tes)
    if quality_threshold is None:
        quality_threshold = max(0.3, background_threshold(q, fallback=0.3)[0])
    m = base_mask & (q >= quality_threshold)
    m = largest_component(m)
    if fill:
        m = fill_holes(m)
    m = close_mm(m, vs, 2.0 * max(vs)) & base_mask
    if fill:
        m = fill_holes(m)
    if shell_mm and shell_mm > 0:
        m = erode_mm(m, vs, shell_mm)
    m = largest_component(m)
    if return_quality:
        return m, q
    return m


def mask_coverage(mask, voxel_size) -> dict:
    """Mask size: number of voxels, volume and fraction of the field of view.

    Parameters
    ----------
    mask : array_like of bool
        3-D mask.
    voxel_size : sequence of float
        Voxel size (mm).

    Returns
    -------
    dict
        ``n_voxels``, ``volume_ml`` and ``fraction_of_fov``.
    """
    mask = np.asarray(mask, bool)
    n = int(np.count_nonzero(mask))
    vox_ml = float(np.prod([float(v) for v in voxel_size])) / 1000.0
    return {"n_voxels": n, "volume_ml": n * vox_ml, "fraction_of_fov": n / max(mask.size, 1)}


def nonfinite_voxels(*volumes) -> np.ndarray:
    """Voxels (3-D bool) where any echo of any of ``volumes`` is NaN or infinite.

    Such voxels carry no usable signal: they are removed from the brain mask (see
    :func:`drop_voxels`) rather than replaced by a finite number (``np.nan_to_num`` turns +Inf into
    the largest float32, which the inversion spreads into a dipole-shaped artefact around the
    voxel).

    Parameters
    ----------
    *volumes : ndarray
        3-D ``(x, y, z)`` or 4-D ``(x, y, z, echo)`` arrays on the same grid.

    Returns
    -------
    ndarray of bool
        3-D mask of the non-finite voxels.

    Raises
    ------
    ValueError
        Without any volume.
    """
    bad = None
    for vol in volumes:
        v = np.asarray(vol)
        b = ~np.isfinite(v)
        if b.ndim == 4:
            b = b.any(axis=-1)
        bad = b if bad is None else (bad | b)
    if bad is None:
        raise ValueError("nonfinite_voxels needs at least one volume")
    return bad


def drop_voxels(mask, exclude):
    """``mask`` without the voxels of ``exclude``.

    Parameters
    ----------
    mask, exclude : array_like of bool
        Masks of the same shape.

    Returns
    -------
    mask : ndarray of bool
    n_removed : int
        Voxels of ``mask`` that were in ``exclude``.

    Raises
    ------
    ValueError
        When the shapes differ.
    """
    mask = np.asarray(mask, dtype=bool)
    exclude = np.asarray(exclude, dtype=bool)
    if exclude.shape != mask.shape:
        raise ValueError(f"exclusion mask shape {exclude.shape} differs from the mask {mask.shape}")
    n_removed = int(np.count_nonzero(mask & exclude))
    return mask & ~exclude, n_removed


def magnitude_method(mag, phase=None, tes=None, voxel_size=(1.0, 1.0, 1.0), **opts):
    """The ``magnitude`` masking method: :func:`mask_magnitude` in the step's calling convention.

    Parameters
    ----------
    mag : ndarray
        Magnitude, 3-D or 4-D ``(x, y, z, echo)``.
    phase, tes : ignored
        Accepted for the common signature ``f(mag, phase, tes, voxel_size, **opts)``.
    voxel_size : sequence of float
        Voxel size (mm).
    **opts
        Options of :func:`mask_magnitude` (listed with their defaults in the ``magnitude``
        record of :mod:`qsmprep.qsm.methods`).

    Returns
    -------
    ndarray of bool
        The brain mask.
    """
    return mask_magnitude(mag, voxel_size, **opts)


def phase_quality_method(mag, phase, tes, voxel_size, **opts):
    """The ``phase-quality`` masking method: :func:`mask_phase_quality` in the step's convention.

    Parameters
    ----------
    mag, phase : ndarray
        Magnitude and phase (radians), 4-D ``(x, y, z, echo)``.
    tes : sequence of float
        Echo times (s).
    voxel_size : sequence of float
        Voxel size (mm).
    **opts
        Options of :func:`mask_phase_quality` and, passed on, of :func:`mask_magnitude`
        (listed with their defaults in the ``phase-quality`` record of :mod:`qsmprep.qsm.methods`).

    Returns
    -------
    ndarray of bool
        The brain mask.

    References
    ----------
    Stewart AW, et al. QSMxT: Robust masking and artifact reduction for quantitative
    susceptibility mapping. Magn Reson Med 2022;87:1289-1300, doi:10.1002/mrm.29048.
    """
    return mask_phase_quality(mag, phase, tes, voxel_size, **opts)


#: name -> function of every ``masking`` record of :mod:`qsmprep.qsm.methods` (one record
#: there registers a new method)
METHODS = _registry.MethodTable("masking")
DEFAULT = _registry.default("masking")

__all__ = [
    "METHODS",
    "DEFAULT",
    "magnitude_method",
    "phase_quality_method",
    "mask_magnitude",
    "mask_phase_quality",
    "mask_coverage",
    "romeo_voxel_quality",
    "combine_magnitude",
    "otsu_threshold",
    "largest_component",
    "erode_mm",
    "dilate_mm",
    "close_mm",
    "fill_holes",
    "nonfinite_voxels",
    "drop_voxels",
]
