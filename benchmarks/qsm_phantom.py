"""Analytic ellipsoid head phantom for the QSM inversion benchmarks (no simulator needed).

A brain ellipsoid with a cortical shell, white matter, ventricles and deep-gray-matter
ellipsoids of known susceptibility (ppm), a magnitude image whose edges coincide with the
structures, and the noise-free local field from :func:`qsmprep.qsm.kernels.forward_field`.
"""

from __future__ import annotations

import numpy as np

from qsmprep.qsm import kernels

# name: (centre mm, semi-axes mm, chi ppm); later entries overwrite earlier ones
STRUCTURES = {
    "caudate_l": ((-14, 14, 8), (5, 12, 8), 0.06),
    "caudate_r": ((14, 14, 8), (5, 12, 8), 0.06),
    "putamen_l": ((-26, 2, 0), (5, 14, 9), 0.05),
    "putamen_r": ((26, 2, 0), (5, 14, 9), 0.05),
    "pallidum_l": ((-19, 0, -2), (3.5, 8, 5), 0.18),
    "pallidum_r": ((19, 0, -2), (3.5, 8, 5), 0.18),
    "thalamus_l": ((-9, -16, 4), (7, 12, 8), 0.04),
    "thalamus_r": ((9, -16, 4), (7, 12, 8), 0.04),
    "sn_l": ((-10, -14, -16), (4, 7, 3), 0.15),
    "sn_r": ((10, -14, -16), (4, 7, 3), 0.15),
    "rn_l": ((-5, -18, -10), (3, 3, 3), 0.12),
    "rn_r": ((5, -18, -10), (3, 3, 3), 0.12),
}


def _coords(shape, vox):
    return np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * d for n, d in zip(shape, vox)],
                       indexing="ij")


def ellipsoid(shape, vox, centre, semi):
    g = _coords(shape, vox)
    return sum(((gi - c) / s) ** 2 for gi, c, s in zip(g, centre, semi)) <= 1.0


def make_phantom(vox=(1.0, 1.0, 1.0), fov_mm=(192.0, 224.0, 176.0), b0=(0.0, 0.0, 1.0)):
    """Return dict(chi, field, mask, magnitude, labels{name: bool array}, voxel_size, b0)."""
    vox = tuple(float(v) for v in vox)
    shape = tuple(int(round(f / v)) for f, v in zip(fov_mm, vox))
    brain = ellipsoid(shape, vox, (0, 0, 0), (66, 82, 62))
    wm = ellipsoid(shape, vox, (0, 0, 0), (58, 74, 54))
    chi = np.where(brain, 0.02, 0.0)  # cortical gray matter shell
    chi[wm] = -0.03
    mag = np.where(brain, 0.75, 0.0)
    mag[wm] = 0.9
    vent = ellipsoid(shape, vox, (-8, 18, 16), (4, 18, 6)) | ellipsoid(shape, vox, (8, 18, 16), (4, 18, 6))
    chi[vent] = 0.0
    mag[vent] = 0.6
    labels = {}
    for name, (c, s, x) in STRUCTURES.items():
        lab = ellipsoid(shape, vox, c, s)
        chi[lab] = x
        mag[lab] = 0.85 - 1.5 * x
        labels[name] = lab
    chi *= brain
    field = kernels.forward_field(chi, vox, b0, pad=16)
    return dict(chi=chi, field=field, mask=brain, magnitude=mag, labels=labels, voxel_size=vox,
                b0=np.asarray(b0, float) / np.linalg.norm(b0))


def structure_means_ppb(chi, mask, labels, ref="mask"):
    """Structure means (ppb) after whole-brain-mean referencing."""
    chi = np.asarray(chi, np.float64)
    off = chi[mask].mean() if ref == "mask" else 0.0
    return {k: 1000.0 * (chi[v & mask].mean() - off) for k, v in labels.items()}
