"""Registration quality metrics and the thresholds that flag a session (plain numpy, no I/O).

Every registration of the participant level is scored on the *fixed* grid after resampling the
moving image with the estimated transform:

* same contrast (T1w -> subject template, atlas template -> subject template / T1w):
  Pearson correlation of intensities inside the fixed image's brain mask,
  :func:`masked_ncc` (the global form of the cross-correlation metric of Avants BB, et al.
  A reproducible evaluation of ANTs similarity metric performance in brain image
  registration. NeuroImage 2011;54:2033-2044);
* different contrasts (GRE magnitude -> T1w): correlation of gradient magnitudes,
  :func:`gradient_correlation` (edges of the brain, ventricles and deep grey matter coincide
  whatever the contrast polarity; Penney GP, et al. A comparison of similarity measures for use
  in 2-D-3-D medical image registration. IEEE Trans Med Imaging 1998;17:586-595), and
  the fraction of the GRE brain mask that lands inside the T1w brain mask, :func:`mask_overlap`.

:data:`THRESHOLDS` holds the lower limits below which a session is flagged (``qc_flagged = 1``
in the ROI table, a WARNING in the log). They were chosen from measurements on the simulator
(good registrations) and on deliberately broken inputs (T1w affine with axes swapped and an
80 mm shift), printed by ``benchmarks/registration_qc.py``; see ``docs/registration.md``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: metric of each registration (column ``qc_<registration>_<metric>`` of the stats table)
METRICS = {
    "gre_to_t1w": ("gc", "overlap"),
    "t1w_to_template": ("ncc",),
    "atlas_to_template": ("ncc",),
    "atlas_to_t1w": ("ncc",),
    "atlas_to_gre": ("gc",),
}

#: lower limits (a value below flags the session); see docs/registration.md for the measured
#: good / broken values they separate
THRESHOLDS = {
    "gre_to_t1w_gc": 0.30,
    "gre_to_t1w_overlap": 0.90,
    "t1w_to_template_ncc": 0.90,
    "atlas_to_template_ncc": 0.70,
    "atlas_to_t1w_ncc": 0.70,
    "atlas_to_gre_gc": 0.20,
}

DESCRIPTIONS = {
    "gc": "correlation of gradient magnitudes (Gaussian derivative, sigma 1 mm) inside the "
          "fixed brain mask, after resampling the moving image (-1..1, 1 = identical edges)",
    "overlap": "fraction of the moving (GRE) brain mask inside the fixed (T1w) brain mask "
               "after resampling (0..1)",
    "ncc": "Pearson correlation of intensities inside the fixed brain mask after resampling "
           "the moving image (-1..1)",
}


def _mask(mask, shape):
    if mask is None:
        return np.ones(shape, dtype=bool)
    mask = np.asarray(mask) > 0
    if mask.shape != tuple(shape):
        raise ValueError(f"mask shape {mask.shape} != image shape {tuple(shape)}")
    return mask


def masked_ncc(fixed: np.ndarray, moving: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pearson correlation of ``fixed`` and ``moving`` (same grid) over ``mask``.

    Parameters
    ----------
    fixed, moving : ndarray
        Images on one grid (non-finite voxels are left out).
    mask : ndarray, optional
        Region (non-zero voxels); default the whole grid.

    Returns
    -------
    float
        Correlation in -1..1; NaN when fewer than 100 voxels are in the mask or either image
        is constant there.

    Raises
    ------
    ValueError
        When the shapes differ.

    Examples
    --------
    >>> a = np.arange(1000.0).reshape(10, 10, 10)
    >>> masked_ncc(a, 2 * a + 1), masked_ncc(a, -a)
    (1.0, -1.0)
    """
    fixed, moving = np.asarray(fixed), np.asarray(moving)
    if fixed.shape != moving.shape:
        raise ValueError(f"image shapes differ: {fixed.shape} vs {moving.shape}")
    m = _mask(mask, fixed.shape) & np.isfinite(fixed) & np.isfinite(moving)
    if m.sum() < 100:
        return float("nan")
    # the masked voxels in float64 (gathered first: the same values as converting the whole
    # images, without two float64 copies of them)
    fa, fb = fixed[m].astype(float), moving[m].astype(float)
    a = fa - fa.mean()
    b = fb - fb.mean()
    den = np.sqrt(np.dot(a, a) * np.dot(b, b))
    return float(np.dot(a, b) / den) if den > 0 else float("nan")


def gradient_magnitude(img: np.ndarray, voxel_size=(1.0, 1.0, 1.0), sigma_mm=1.0) -> np.ndarray:
    """Gaussian gradient magnitude (sigma in mm, anisotropic voxels honoured).

    Parameters
    ----------
    img : ndarray
        Image.
    voxel_size : sequence of float, default (1, 1, 1)
        Voxel size in mm.
    sigma_mm : float, default 1.0
        Gaussian width in mm.

    Returns
    -------
    ndarray of float32
        Gradient magnitude, same shape.
    """
    sigma = [float(sigma_mm) / float(v) for v in voxel_size]
    return ndimage.gaussian_gradient_magnitude(np.asarray(img, np.float32), sigma=sigma)


def gradient_correlation(fixed: np.ndarray, moving: np.ndarray, mask: np.ndarray | None = None,
                         voxel_size=(1.0, 1.0, 1.0), sigma_mm=1.0) -> float:
    """Correlation of the gradient magnitudes of two images over ``mask`` (contrast-agnostic).

    The correlation (:func:`masked_ncc`) does not depend on intensity units or on the contrast
    polarity of the two images.

    Parameters
    ----------
    fixed, moving : ndarray
        Images on one grid (NaN read as 0).
    mask : ndarray, optional
        Region; default the whole grid.
    voxel_size : sequence of float, default (1, 1, 1)
        Voxel size in mm.
    sigma_mm : float, default 1.0
        Gaussian width of the derivative (mm).

    Returns
    -------
    float
        Correlation in -1..1; NaN for an (almost) empty mask.

    References
    ----------
    Penney GP, et al. A comparison of similarity measures for use in 2-D-3-D medical image
    registration. IEEE Trans Med Imaging 1998;17:586-595.
    """
    fixed, moving = np.asarray(fixed, np.float32), np.asarray(moving, np.float32)
    m = _mask(mask, fixed.shape)
    if m.sum() < 100:
        return float("nan")
    ga = gradient_magnitude(np.nan_to_num(fixed), voxel_size, sigma_mm)
    gb = gradient_magnitude(np.nan_to_num(moving), voxel_size, sigma_mm)
    return masked_ncc(ga, gb, m)


def mask_overlap(moving_mask: np.ndarray, fixed_mask: np.ndarray) -> float:
    """Fraction of ``moving_mask`` voxels inside ``fixed_mask``.

    Parameters
    ----------
    moving_mask, fixed_mask : ndarray
        Masks on one grid (non-zero = inside).

    Returns
    -------
    float
        0..1; NaN for an empty moving mask.

    Raises
    ------
    ValueError
        When the shapes differ.

    Examples
    --------
    >>> mask_overlap(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 1]))
    0.5
    """
    mm, fm = np.asarray(moving_mask) > 0, np.asarray(fixed_mask) > 0
    if mm.shape != fm.shape:
        raise ValueError(f"mask shapes differ: {mm.shape} vs {fm.shape}")
    n = int(mm.sum())
    return float(np.sum(mm & fm) / n) if n else float("nan")


def assess(metrics: dict, thresholds: dict | None = None) -> tuple[int, list[str]]:
    """Compare ``{"<registration>_<metric>": value}`` with the thresholds.

    Parameters
    ----------
    metrics : dict
        Metric name -> value (``None`` or NaN: not computable).
    thresholds : dict, optional
        Lower limits (default :data:`THRESHOLDS`). Metrics without a threshold never flag.

    Returns
    -------
    flagged : int
        1 when any value is below its threshold or is NaN (a metric that could not be
        computed, e.g. no mask overlap at all), else 0.
    reasons : list of str
        One ``"<name>=<value> < <threshold>"`` text per failed metric.

    Examples
    --------
    >>> assess({"gre_to_t1w_gc": 0.1, "gre_to_t1w_overlap": 0.99})
    (1, ['gre_to_t1w_gc=0.100 < 0.3'])
    """
    thresholds = THRESHOLDS if thresholds is None else thresholds
    reasons = []
    for name, value in metrics.items():
        if name not in thresholds:
            continue
        limit = float(thresholds[name])
        v = float(value) if value is not None else float("nan")
        if not np.isfinite(v):
            reasons.append(f"{name}=n/a (not computable; limit {limit:g})")
        elif v < limit:
            reasons.append(f"{name}={v:.3f} < {limit:g}")
    return (1 if reasons else 0), reasons


def session_verdict(docs: list) -> dict:
    """Combine the ``RegistrationQuality`` sidecars of one session's registrations.

    Parameters
    ----------
    docs : list of dict
        The JSON objects written by :func:`qsmprep.registration.write_quality`.

    Returns
    -------
    dict
        ``{"Metrics": {...}, "Flagged": 0|1, "Reasons": [...], "Thresholds": {...},
        "QualityFlags": [{"step", "severity", "message"}]}`` (the ``QualityFlags`` format of the
        Chimap sidecars).
    """
    metrics = {}
    for d in docs:
        q = d.get("RegistrationQuality", d)
        for k, v in (q.get("Metrics") or {}).items():
            metrics[k] = float("nan") if v is None else float(v)
    flagged, reasons = assess(metrics)
    flags = [{"step": "registration", "severity": "warning",
              "message": f"{r} (registration quality below the documented threshold; "
                         "check the registration figures; see docs/registration.md)"}
             for r in reasons]
    return {"Metrics": {k: (None if not np.isfinite(v) else v) for k, v in metrics.items()},
            "Flagged": int(flagged), "Reasons": reasons,
            "Thresholds": {k: THRESHOLDS[k] for k in metrics if k in THRESHOLDS},
            "QualityFlags": flags}


def column_dictionary(metric_names) -> dict:
    """JSON data-dictionary entries of the ``qc_*`` columns of the ROI statistics table.

    Parameters
    ----------
    metric_names : iterable of str
        ``<registration>_<metric>`` names (the keys of a verdict's ``Metrics``).

    Returns
    -------
    dict
        ``qc_<name>`` entries, then ``qc_flagged`` and ``qc_reasons``.
    """
    out = {}
    for name in metric_names:
        kind = name.rsplit("_", 1)[-1]
        reg = name[: -len(kind) - 1].replace("_to_", " -> ").replace("_", " ")
        limit = THRESHOLDS.get(name)
        out[f"qc_{name}"] = {
            "Description": f"Registration quality of {reg}: {DESCRIPTIONS.get(kind, kind)}"
                           + (f"; the session is flagged below {limit:g}" if limit is not None
                              else ""),
            "Units": "arbitrary",
        }
    out["qc_flagged"] = {
        "Description": "1 when any registration quality metric of this session is below its "
                       "documented threshold (docs/registration.md); the group level leaves "
                       "flagged sessions out unless --keep-flagged",
        "Levels": {"0": "not flagged", "1": "flagged"},
    }
    out["qc_reasons"] = {"Description": "Metrics below their threshold (name=value < limit), "
                                        "or n/a"}
    return out
