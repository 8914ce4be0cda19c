"""Fourier-domain kernels shared by every QSM step, and geometry from the image affine.

Conventions (used by every function under :mod:`qsmprep.qsm`):

* Arrays are in *voxel* order ``(i, j, k)`` exactly as stored in the NIfTI file.
* ``voxel_size`` is a length-3 sequence in mm (from the header zooms).
* ``b0_dir`` is the unit vector of the main field expressed in *voxel axes*, obtained with
  :func:`b0_direction_from_affine` -- never assumed to be ``(0, 0, 1)``.
* Susceptibility and relative field are both in ppm: the local field ``delta_B / B0 * 1e6``
  is related to the susceptibility ``chi`` (ppm) by ``field = ifft(D * fft(chi))``.
* The dipole kernel is the Lorentz-corrected continuous kernel of Salomir et al. 2003 and
  Marques & Bowtell 2005: ``D(k) = 1/3 - (k . b0)^2 / |k|^2`` with ``D(0) = 0``.

References
----------
Salomir R, de Senneville BD, Moonen CT. A fast calculation method for magnetic field
inhomogeneity due to an arbitrary distribution of bulk susceptibility. Concepts Magn Reson B
2003;19B:26-34.
Marques JP, Bowtell R. Application of a Fourier-based method for rapid calculation of field
inhomogeneity due to spatial variation of magnetic susceptibility. Concepts Magn Reson B
2005;25B:65-78.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.fft as sfft

#: Gyromagnetic ratio of the proton divided by 2 pi, in Hz/T.
GAMMA_BAR_HZ_PER_T = 42.57747892e6


def fft_workers() -> int:
    """Number of threads for :mod:`scipy.fft`.

    Returns
    -------
    int
        ``QSMPREP_FFT_WORKERS``, else ``OMP_NUM_THREADS`` (positive integers), else the number
        of CPUs.
    """
    import os

    for var in ("QSMPREP_FFT_WORKERS", "OMP_NUM_THREADS"):
        val = os.environ.get(var)
        if val and val.isdigit() and int(val) > 0:
            return int(val)
    return os.cpu_count() or 1


def b0_direction_from_affine(affine, b0_world=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Unit vector of B0 in voxel axes, from a NIfTI affine.

    The scanner's B0 points along world (scanner RAS) ``+z``. With ``affine = [[R*diag(zooms), t],
    [0, 1]]`` the voxel axes in world coordinates are the columns of ``R``; B0 in voxel axes is
    therefore ``R^T b0_world``. Oblique acquisitions give a vector that is not ``(0, 0, 1)``.
    A left-handed affine (negative determinant, e.g. an x-flip) is handled because the flip is a
    column of ``R`` with a negative sign.

    Parameters
    ----------
    affine : (4, 4) array_like
        NIfTI affine.
    b0_world : sequence of float
        Direction of B0 in world coordinates (default +z).

    Returns
    -------
    ndarray
        Unit 3-vector in voxel axes.

    Examples
    --------
    >>> b0_direction_from_affine(np.diag([2.0, 2.0, 2.0, 1.0])).tolist()
    [0.0, 0.0, 1.0]
    """
    affine = np.asarray(affine, dtype=float)
    m = affine[:3, :3]
    zooms = np.linalg.norm(m, axis=0)
    if np.any(zooms == 0):
        raise ValueError("Affine has a zero-length voxel axis; cannot derive the B0 direction.")
    rot = m / zooms
    b = rot.T @ np.asarray(b0_world, dtype=float)
    return b / np.linalg.norm(b)


#: Tolerance (mm) of voxel-size thresholds (resolution-dependent defaults): sizes taken from an
#: oblique affine's column norms carry rounding error (1.5 mm slices tilted 8 degrees give
#: 1.5000000000000002 mm; a NIfTI file's float32 sform errs by ~1e-7 mm), which must not flip a
#: choice between an axial and an oblique session of one subject.
VOXEL_SIZE_TOL_MM = 1e-3


def voxel_size_from_affine(affine) -> np.ndarray:
    """Voxel size (mm) along each array axis from the affine's column norms.

    Parameters
    ----------
    affine : (4, 4) array_like
        NIfTI affine.

    Returns
    -------
    ndarray
        The three voxel sizes (mm).
    """
    return np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)


def next_fast_shape(shape, min_pad=0) -> tuple[int, ...]:
    """Smallest FFT-friendly shape (5-smooth, even) at least ``shape + 2*min_pad`` on each axis.

    Parameters
    ----------
    shape : sequence of int
        Array shape.
    min_pad : int
        Zero padding (voxels) wanted on each side.

    Returns
    -------
    tuple of int
    """
    out = []
    for n in shape:
        m = sfft.next_fast_len(int(n) + 2 * int(min_pad), real=True)
        while m % 2:
            m = sfft.next_fast_len(m + 1, real=True)
        out.append(m)
    return tuple(out)


def pad_volume(vol: np.ndarray, shape) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Zero-pad ``vol`` (centred) to ``shape``.

    Parameters
    ----------
    vol : ndarray
        Volume.
    shape : sequence of int
        Target shape (>= ``vol.shape``).

    Returns
    -------
    padded : ndarray
    crop : tuple of slice
        ``padded[crop]`` is ``vol``.
    """
    pads, sl = [], []
    for n, m in zip(vol.shape[:3], shape):
        before = (m - n) // 2
        pads.append((before, m - n - before))
        sl.append(slice(before, before + n))
    pads += [(0, 0)] * (vol.ndim - 3)
    return np.pad(vol, pads), tuple(sl)


def kspace_grid(shape, voxel_size, rfft: bool = False, dtype=np.float32):
    """k-space coordinates (cycles/mm) broadcastable to the FFT of an array of ``shape``.

    With ``rfft=True`` the last axis has ``n // 2 + 1`` frequencies, matching :func:`scipy.fft.rfftn`.

    Parameters
    ----------
    shape : sequence of int
        Image shape.
    voxel_size : sequence of float
        Voxel size (mm).
    rfft : bool
        Half spectrum on the last axis.
    dtype : numpy dtype
        Output type.

    Returns
    -------
    list of ndarray
        One coordinate array per axis, broadcastable against each other.
    """
    ks = []
    for ax, (n, d) in enumerate(zip(shape, voxel_size)):
        if rfft and ax == len(shape) - 1:
            k = sfft.rfftfreq(n, d=d)
        else:
            k = sfft.fftfreq(n, d=d)
        s = [1] * len(shape)
        s[ax] = k.size
        ks.append(k.reshape(s).astype(dtype))
    return ks


@lru_cache(maxsize=8)
def _dipole_kernel_cached(shape, voxel_size, b0_dir, rfft, dtype_name):
    dtype = np.dtype(dtype_name)
    kx, ky, kz = kspace_grid(shape, voxel_size, rfft=rfft, dtype=np.float64)
    k2 = kx**2 + ky**2 + kz**2
    kb = kx * b0_dir[0] + ky * b0_dir[1] + kz * b0_dir[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        d = 1.0 / 3.0 - kb**2 / k2
    d[0, 0, 0] = 0.0
    d = d.astype(dtype)
    d.setflags(write=False)
    return d


def dipole_kernel(shape, voxel_size, b0_dir=(0.0, 0.0, 1.0), rfft: bool = False, dtype=np.float32):
    """Unit dipole kernel ``D(k) = 1/3 - (k.b0)^2/|k|^2`` (``D(0)=0``) on an FFT grid.

    The result is cached and read-only; copy it before modifying. ``rfft=True`` returns the
    half-spectrum matching :func:`scipy.fft.rfftn` (the kernel is real and even, so real inputs
    can use real FFTs throughout).

    Parameters
    ----------
    shape : sequence of int
        Image shape.
    voxel_size : sequence of float
        Voxel size (mm).
    b0_dir : sequence of float
        Unit B0 direction in voxel axes.
    rfft : bool
        Half spectrum on the last axis.
    dtype : numpy dtype
        Output type.

    Returns
    -------
    ndarray
        The kernel (read-only).

    References
    ----------
    Salomir R, de Senneville BD, Moonen CTW. A fast calculation method for magnetic field
    inhomogeneity due to an arbitrary distribution of bulk susceptibility. Concepts Magn Reson B
    2003;19B:26-34.
    """
    b = np.asarray(b0_dir, dtype=float)
    b = tuple(float(x) for x in b / np.linalg.norm(b))
    return _dipole_kernel_cached(
        tuple(int(s) for s in shape),
        tuple(float(v) for v in voxel_size),
        b,
        bool(rfft),
        np.dtype(dtype).name,
    )


def sphere_kernel_image(shape, voxel_size, radius_mm: float, dtype=np.float32) -> np.ndarray:
    """Normalised spherical mean value (SMV) kernel in image space, centred at index 0 (wrapped).

    Voxels whose centre lies within ``radius_mm`` of the origin (in mm, anisotropic voxels
    respected) have weight ``1/N``; the kernel sums to one.

    Parameters
    ----------
    shape : sequence of int
        Image shape.
    voxel_size : sequence of float
        Voxel size (mm).
    radius_mm : float
        Sphere radius (mm).
    dtype : numpy dtype
        Output type.

    Returns
    -------
    ndarray
    """
    grids = []
    for ax, (n, d) in enumerate(zip(shape, voxel_size)):
        idx = np.arange(n)
        idx = np.where(idx > n // 2, idx - n, idx) * d
        s = [1] * len(shape)
        s[ax] = n
        grids.append(idx.reshape(s))
    r2 = grids[0] ** 2 + grids[1] ** 2 + grids[2] ** 2
    ker = (r2 <= radius_mm**2 + 1e-9).astype(np.float64)
    ker /= ker.sum()
    return ker.astype(dtype)


def smv_kernel(shape, voxel_size, radius_mm: float, rfft: bool = True, dtype=np.float32) -> np.ndarray:
    """Fourier transform of the normalised SMV kernel (real, since the sphere is symmetric).

    ``1 - S(k)`` is the high-pass that removes harmonic (background) fields inside the eroded
    mask (SHARP/V-SHARP).

    Parameters
    ----------
    shape : sequence of int
        Image shape.
    voxel_size : sequence of float
        Voxel size (mm).
    radius_mm : float
        Sphere radius (mm).
    rfft : bool
        Half spectrum on the last axis.
    dtype : numpy dtype
        Output type.

    Returns
    -------
    ndarray

    References
    ----------
    Schweser F, et al. Quantitative imaging of intrinsic magnetic tissue properties using MRI
    signal phase. NeuroImage 2011;54:2789-2807. Li W, Wu B, Liu C. Quantitative susceptibility
    mapping of human brain reflects spatial variation in tissue composition. NeuroImage
    2011;55:1645-1656.
    """
    ker = sphere_kernel_image(shape, voxel_size, radius_mm, dtype=np.float64)
    ft = sfft.rfftn(ker) if rfft else sfft.fftn(ker)
    return np.real(ft).astype(dtype)


def laplacian_kernel(shape, voxel_size, rfft: bool = False, dtype=np.float32) -> np.ndarray:
    """Fourier symbol of the discrete 7-point Laplacian (mm^-2), ``<= 0``, zero at DC.

    Parameters
    ----------
    shape : sequence of int
        Image shape.
    voxel_size : sequence of float
        Voxel size (mm).
    rfft : bool
        Half spectrum on the last axis.
    dtype : numpy dtype
        Output type.

    Returns
    -------
    ndarray
    """
    out = None
    for ax, (n, d) in enumerate(zip(shape, voxel_size)):
        if rfft and ax == len(shape) - 1:
            k = np.arange(n // 2 + 1)
        else:
            k = np.arange(n)
        term = (2.0 * np.cos(2.0 * np.pi * k / n) - 2.0) / d**2
        s = [1] * len(shape)
        s[ax] = term.size
        term = term.reshape(s)
        out = term if out is None else out + term
    return out.astype(dtype)


def forward_field(chi: np.ndarray, voxel_size, b0_dir=(0.0, 0.0, 1.0), pad: int = 0) -> np.ndarray:
    """Relative field (ppm) produced by a susceptibility distribution ``chi`` (ppm).

    ``pad`` voxels of zero padding on each side reduce the periodic wrap-around of the FFT
    convolution (use at least half the matrix for fields outside the object to be meaningful).
    Computed with real FFTs in float64 for use as ground truth.

    Parameters
    ----------
    chi : ndarray
        Susceptibility (ppm).
    voxel_size : sequence of float
        Voxel size (mm).
    b0_dir : sequence of float
        Unit B0 direction in voxel axes.
    pad : int
        Zero padding (voxels) on each side.

    Returns
    -------
    ndarray of float64
        Field (ppm) on the grid of ``chi``.
    """
    chi = np.asarray(chi, dtype=np.float64)
    shape = next_fast_shape(chi.shape, pad)
    padded, crop = pad_volume(chi, shape)
    d = dipole_kernel(shape, voxel_size, b0_dir, rfft=True, dtype=np.float64)
    field = sfft.irfftn(d * sfft.rfftn(padded, workers=fft_workers()), s=shape, workers=fft_workers())
    return field[crop]


def ppm_to_hz(field_ppm, b0_tesla: float):
    """Convert relative field (ppm) to frequency offset (Hz) at field strength ``b0_tesla``.

    Parameters
    ----------
    field_ppm : array_like
        Relative field (ppm).
    b0_tesla : float
        Field strength (T).

    Returns
    -------
    ndarray
        Frequency offset (Hz).
    """
    return np.asarray(field_ppm) * 1e-6 * GAMMA_BAR_HZ_PER_T * b0_tesla


def hz_to_ppm(field_hz, b0_tesla: float):
    """Convert frequency offset (Hz) to relative field (ppm) at field strength ``b0_tesla``.

    Parameters
    ----------
    field_hz : array_like
        Frequency offset (Hz).
    b0_tesla : float
        Field strength (T).

    Returns
    -------
    ndarray
        Relative field (ppm).

    Examples
    --------
    >>> round(float(hz_to_ppm(127.7, 3.0)), 3)
    1.0
    """
    return np.asarray(field_hz) / (GAMMA_BAR_HZ_PER_T * b0_tesla) * 1e6
