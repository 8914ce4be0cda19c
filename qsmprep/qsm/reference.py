"""Susceptibility referencing: QSM is relative, every value must be stated against a reference.

:data:`METHODS` entries share the signature ``f(chi, mask, ref_mask=None) -> (chi_referenced,
info)``; ``info`` holds ``reference`` (name), ``value_ppm`` (what was subtracted) and
``n_voxels`` (voxels that defined it). Outside ``mask`` the output is 0.

References: QSM Consensus Organization Committee. Recommended implementation of quantitative
susceptibility mapping for clinical research in the brain: a consensus of the ISMRM electro-
magnetic tissue properties study group. Magn Reson Med 2024;91:1834-1862, doi:10.1002/mrm.30006
(report values against a stated reference; whole brain or CSF are common choices).
Straub S, et al. Suitable reference tissues for quantitative susceptibility mapping of the
brain. Magn Reson Med 2017;78:204-214 (CSF of the lateral ventricles as reference).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from . import methods as _registry
from .relaxometry import r2star_loglinear  # noqa: F401  (the R2* fit lives in relaxometry)


def _finish(chi, mask, value, name, n):
    chi = np.asarray(chi, dtype=np.float32)
    mask = np.asarray(mask, bool)
    out = np.where(mask, chi - np.float32(value), np.float32(0.0)).astype(np.float32)
    return out, {"reference": name, "value_ppm": float(value), "n_voxels": int(n)}


def reference_mean(chi, mask, ref_mask=None):
    """Subtract the mean susceptibility over the whole mask (QSMxT's default).

    Parameters
    ----------
    chi : ndarray
        Susceptibility (ppm), not referenced.
    mask : ndarray of bool
        Support of ``chi``; the reference region.
    ref_mask : ignored
        Accepted for the common signature.

    Returns
    -------
    chi : ndarray of float32
        ``chi`` minus the mean, zero outside ``mask``.
    info : dict
        ``reference`` (``"whole_brain_mean"``), ``value_ppm`` (the mean) and ``n_voxels``.

    Raises
    ------
    ValueError
        When ``mask`` is empty.
    """
    mask = np.asarray(mask, bool)
    vals = np.asarray(chi)[mask]
    if vals.size == 0:
        raise ValueError("Empty mask: cannot compute a whole-brain mean reference.")
    return _finish(chi, mask, float(np.mean(vals, dtype=np.float64)), "whole_brain_mean", vals.size)


def reference_csf(chi, mask, ref_mask):
    """Subtract the mean susceptibility over a CSF mask (e.g. lateral ventricles).

    Parameters
    ----------
    chi : ndarray
        Susceptibility (ppm), not referenced.
    mask : ndarray of bool
        Support of ``chi``; only reference voxels inside it count.
    ref_mask : ndarray of bool
        The CSF region on the same grid (a supplied mask, or :func:`csf_mask_from_r2star`,
        which :func:`qsmprep.qsm.pipeline.run_referencing` calls when none is given).

    Returns
    -------
    chi : ndarray of float32
        ``chi`` minus the CSF mean, zero outside ``mask``.
    info : dict
        ``reference`` (``"csf"``), ``value_ppm`` and ``n_voxels``.

    Raises
    ------
    ValueError
        When ``ref_mask`` is missing or has no voxel inside ``mask``.

    References
    ----------
    Straub S, et al. Suitable reference tissues for quantitative susceptibility mapping of the
    brain. Magn Reson Med 2017;78:204-214.
    """
    if ref_mask is None:
        raise ValueError("CSF referencing needs a reference (CSF) mask.")
    mask = np.asarray(mask, bool)
    sel = mask & np.asarray(ref_mask, bool)
    n = int(np.count_nonzero(sel))
    if n == 0:
        raise ValueError("The CSF reference mask has no voxel inside the brain mask.")
    return _finish(chi, mask, float(np.mean(np.asarray(chi)[sel], dtype=np.float64)), "csf", n)


def reference_none(chi, mask, ref_mask=None):
    """No referencing (values relative to whatever the inversion produced; masked only).

    Parameters
    ----------
    chi : ndarray
        Susceptibility (ppm).
    mask : ndarray of bool
        Support of ``chi``.
    ref_mask : ignored
        Accepted for the common signature.

    Returns
    -------
    chi : ndarray of float32
        ``chi`` zero outside ``mask``.
    info : dict
        ``reference`` (``"none"``), ``value_ppm`` (0) and ``n_voxels`` (0).
    """
    return _finish(chi, mask, 0.0, "none", 0)


def csf_mask_from_r2star(
    mag4d,
    tes,
    mask,
    voxel_size=(1.0, 1.0, 1.0),
    r2star_max: float = 8.0,
    min_depth_mm: float = 10.0,
    min_volume_ml: float = 0.5,
    magnitude_percentile: float = 50.0,
):
    """CSF mask from low R2* and bright early magnitude, away from the brain surface.

    CSF has R2* of a few 1/s at 3 T (white matter ~20, grey matter ~15, iron-rich nuclei > 30) and
    a bright first-echo magnitude. Voxels with ``R2* < r2star_max``, first-echo magnitude above
    the ``magnitude_percentile`` of the mask and deeper than ``min_depth_mm`` inside the mask
    (which favours the lateral ventricles over sulcal CSF and veins next to the skull) are kept;
    connected parts smaller than ``min_volume_ml`` are dropped. May be empty (then use another
    reference).

    Parameters
    ----------
    mag4d : ndarray
        4-D magnitude (at least 2 echoes).
    tes : sequence of float
        Echo times (s).
    mask : ndarray of bool
        Brain mask.
    voxel_size : sequence of float
        Voxel size (mm).
    r2star_max : float
        Largest R2* (1/s) of a CSF voxel.
    min_depth_mm : float
        Smallest distance (mm) from the mask surface.
    min_volume_ml : float
        Smallest connected part kept (mL).
    magnitude_percentile : float
        First-echo magnitude percentile (within the mask) a voxel must exceed.

    Returns
    -------
    ndarray of bool
        The CSF mask (possibly empty).

    References
    ----------
    Straub S, et al. Suitable reference tissues for quantitative susceptibility mapping of the
    brain. Magn Reson Med 2017;78:204-214.
    """
    mask = np.asarray(mask, bool)
    vs = tuple(float(v) for v in voxel_size)
    r2s = r2star_loglinear(mag4d, tes, mask)
    m1 = np.asarray(mag4d)[..., 0]
    bright = m1 > np.percentile(m1[mask], magnitude_percentile) if mask.any() else mask
    depth = ndi.distance_transform_edt(np.pad(mask, 1), sampling=vs)[1:-1, 1:-1, 1:-1]
    cand = mask & (r2s > 0) & (r2s < r2star_max) & bright & (depth > min_depth_mm)
    if not cand.any():
        return cand
    labels, n = ndi.label(cand)
    counts = np.bincount(labels.ravel())
    vox_ml = float(np.prod(vs)) / 1000.0
    keep = np.flatnonzero(counts * vox_ml >= min_volume_ml)
    keep = keep[keep > 0]
    return np.isin(labels, keep)


#: name -> function of every ``reference`` record of :mod:`qsmprep.qsm.methods` (one record
#: there registers a new method)
METHODS = _registry.MethodTable("reference")
DEFAULT = _registry.default("reference")
