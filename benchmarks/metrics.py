"""Image-quality and ROI-accuracy metrics for QSM against a known truth.

All metrics take susceptibility maps in ppm on the same grid and a boolean evaluation mask;
voxels outside the mask are ignored. Reference both maps the same way *before* calling these
(see :func:`reference_mean`), because a QSM map's mean is not determined by the field.

* :func:`nrmse` -- ``100 * ||x - t|| / ||t||`` over the mask (percent), as in the 2016 and 2019
  QSM reconstruction challenges (Langkammer C, et al. MRM 2018;79:1661; Marques JP, et al. MRM
  2021;86:526).
* :func:`hfen` -- high-frequency error norm (Ravishankar S, Bresler Y. IEEE TMI 2011;30:1028):
  the NRMSE of the Laplacian-of-Gaussian filtered maps, LoG sigma 1.5 voxels (the 15x15 LoG of
  the original paper; ``scipy.ndimage.gaussian_laplace`` truncates at 4 sigma), in percent.
* :func:`xsim` -- XSIM (Milovic C, et al. MRM 2018;80:814 (FANSI) and the QSM challenge 2.0):
  SSIM computed on the susceptibility values themselves, not rescaled to [0, 1], with the
  dynamic range ``L = 1 ppm`` and constants ``K1 = 0.01``, ``K2 = 0.001`` (the usual SSIM
  ``K2 = 0.03`` with ``L`` = the image range makes the contrast term insensitive for maps whose
  values span ~0.2 ppm). Implemented with ``skimage.metrics.structural_similarity``
  (Gaussian window, sigma 1.5 voxels as in Wang et al. IEEE TIP 2004), averaged over the mask.
  :func:`ssim` is the plain scikit-image SSIM (``data_range`` = truth range in the mask).
* :func:`dgm_errors` -- per-structure mean (recovered - true) in ppb, from
  :func:`qsmprep.roi.roi_statistics` of both maps with the same labels and mask.
* :func:`linearity` -- least-squares slope and intercept (ppb) of recovered vs true structure
  means.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _masked(x, mask):
    return np.asarray(x, dtype=np.float64)[np.asarray(mask, dtype=bool)]


def reference_mean(chi, mask):
    """Subtract the mean over ``mask`` and zero the outside (whole-brain-mean referencing)."""
    mask = np.asarray(mask, dtype=bool)
    chi = np.asarray(chi, dtype=np.float64)
    return np.where(mask, chi - chi[mask].mean(), 0.0)


def nrmse(est, truth, mask):
    """Normalised root-mean-square error in percent: ``100 ||est - truth|| / ||truth||``."""
    e, t = _masked(est, mask), _masked(truth, mask)
    den = np.linalg.norm(t)
    if den == 0:
        raise ValueError("truth is zero inside the mask; NRMSE is undefined")
    return float(100.0 * np.linalg.norm(e - t) / den)


def hfen(est, truth, mask, sigma=1.5):
    """High-frequency error norm (percent): NRMSE of LoG-filtered maps (sigma in voxels).

    Both maps are zeroed outside ``mask`` before filtering (as the challenge code does) and the
    norm is taken inside ``mask``.
    """
    mask = np.asarray(mask, dtype=bool)
    le = ndimage.gaussian_laplace(np.where(mask, est, 0.0).astype(np.float64), sigma)
    lt = ndimage.gaussian_laplace(np.where(mask, truth, 0.0).astype(np.float64), sigma)
    return nrmse(le, lt, mask)


def _ssim_map(est, truth, data_range, K1, K2, sigma):
    from skimage.metrics import structural_similarity

    _, smap = structural_similarity(
        np.asarray(truth, dtype=np.float64), np.asarray(est, dtype=np.float64),
        data_range=data_range, K1=K1, K2=K2, gaussian_weights=True, sigma=sigma,
        use_sample_covariance=False, full=True,
    )
    return smap


def xsim(est, truth, mask, L=1.0, K1=0.01, K2=0.001, sigma=1.5):
    """XSIM: SSIM on ppm values with ``L = 1`` ppm, ``K1 = 0.01``, ``K2 = 0.001`` (see module doc).

    Returns the mean of the SSIM map over ``mask`` (1 = identical).
    """
    mask = np.asarray(mask, dtype=bool)
    smap = _ssim_map(np.where(mask, est, 0.0), np.where(mask, truth, 0.0), L, K1, K2, sigma)
    return float(smap[mask].mean())


def ssim(est, truth, mask, sigma=1.5):
    """Standard SSIM (K1 = 0.01, K2 = 0.03), ``data_range`` = range of the truth in the mask."""
    mask = np.asarray(mask, dtype=bool)
    t = _masked(truth, mask)
    rng = float(t.max() - t.min()) or 1.0
    smap = _ssim_map(np.where(mask, est, 0.0), np.where(mask, truth, 0.0), rng, 0.01, 0.03, sigma)
    return float(smap[mask].mean())


def structure_means(chi_ppm, labels, label_table, voxel_size, mask):
    """Mean susceptibility (ppb) per ``structure`` (both hemispheres pooled, voxel-weighted)."""
    from qsmprep.roi import roi_statistics

    df = roi_statistics(chi_ppm, labels, label_table, voxel_size, mask=mask)
    df = df[df["n_voxels"] > 0].copy()
    df["sum"] = df["mean_ppb"].astype(float) * df["n_voxels"]
    g = df.groupby("structure")[["sum", "n_voxels"]].sum()
    return (g["sum"] / g["n_voxels"]).to_dict()


def dgm_errors(est, truth, labels, label_table, voxel_size, mask):
    """Per-structure error of the mean, recovered minus true, in ppb (same voxels for both).

    Returns ``(errors, true_means, est_means)`` dicts keyed by structure.
    """
    tm = structure_means(truth, labels, label_table, voxel_size, mask)
    em = structure_means(est, labels, label_table, voxel_size, mask)
    errs = {k: em[k] - tm[k] for k in tm if k in em}
    return errs, tm, em


def linearity(true_vals, est_vals):
    """Least-squares line ``est = slope * true + intercept``; returns ``(slope, intercept)``."""
    x = np.asarray(true_vals, dtype=np.float64)
    y = np.asarray(est_vals, dtype=np.float64)
    if x.size < 2 or np.ptp(x) == 0:
        raise ValueError("linearity needs at least two distinct true values")
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)
