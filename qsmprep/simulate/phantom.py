"""Numerical head model in template space, built from the atlas template and labels.

Tissue classes:

* brain = template T1w > 0 (the template is brain-extracted);
* CSF / GM / WM inside the brain from the template intensity with three-class multi-Otsu
  thresholds (``skimage.filters.threshold_multiotsu``; about 54 and 75 on the ICBM 2009c
  template), so ventricles and sulci are CSF;
* DGM structures from the atlas labels (override the intensity classes);
* outside the brain, shells by Euclidean distance to the brain: extra-cerebral CSF 0-2 mm,
  skull 2-8 mm, scalp 8-13 mm, air beyond; optionally an ellipsoidal frontal air sinus inside
  the bone/scalp in front of the frontal pole, so that a strong background field exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage
from skimage.filters import threshold_multiotsu

from ..atlas import default_atlas_dir, load_atlas, resample_to_grid
from . import config as C

SHELLS_MM = {"extra_csf": 2.0, "skull": 8.0, "scalp": 13.0}
MODEL_PAD_MM = 24.0


@dataclass(frozen=True)
class HeadModel:
    """Class codes and T1w intensities on a grid in template (atlas) world coordinates."""

    codes: np.ndarray        # int16 class codes (config AIR..WM, LABEL_OFFSET + label index)
    t1w: np.ndarray          # float32 T1w intensity (template units)
    affine: np.ndarray       # model grid -> template world (mm)
    center: np.ndarray       # brain centroid, world mm
    labels: pd.DataFrame     # atlas label table
    thresholds: tuple        # CSF/GM and GM/WM intensity thresholds
    atlas_dir: str

    @property
    def voxel_mm(self) -> float:
        """Voxel size of the model grid (mm, isotropic)."""
        return float(np.linalg.norm(self.affine[:3, 0]))

    def head_bbox(self) -> tuple[np.ndarray, np.ndarray]:
        """World bounding box of the head (every non-air voxel).

        Returns
        -------
        lo, hi : ndarray, shape (3,)
            Min and max world corners (mm).
        """
        ijk = np.argwhere(self.codes != C.AIR)
        lo = self.affine[:3, :3] @ ijk.min(0) + self.affine[:3, 3]
        hi = self.affine[:3, :3] @ ijk.max(0) + self.affine[:3, 3]
        return np.minimum(lo, hi), np.maximum(lo, hi)

    def structure_of_code(self) -> dict[int, str]:
        """Name of every class code: tissue classes and atlas structures.

        Returns
        -------
        dict of int to str
            Code -> tissue class name or ``structure`` of the atlas label.
        """
        out = {code: name for code, name in C.CLASS_NAMES.items()}
        for row in self.labels.itertuples():
            out[C.LABEL_OFFSET + int(row.index)] = row.structure
        return out


def build_head_model(resolution_mm: float = 2.0, atlas_dir=None, sinus: bool = True) -> HeadModel:
    """Build (or fetch from the in-process cache) the head model at ``resolution_mm``.

    The DGM structures of the model are the rows of the atlas label table (for the default
    atlas, :data:`qsmprep.atlas.DGM_LABELS`); their tissue properties come from the
    simulation config (:data:`qsmprep.simulate.config.STRUCTURE_PROPERTIES`).

    Parameters
    ----------
    resolution_mm : float, default 2.0
        Model grid spacing.
    atlas_dir : path, optional
        Atlas folder (default: the default atlas, derived once if needed).
    sinus : bool, default True
        Add the frontal air sinus.

    Returns
    -------
    HeadModel
    """
    if atlas_dir is None:
        default = default_atlas_dir()
        if not (default / "dataset_description.json").is_file():
            load_atlas(None)  # derive it once
        atlas_dir = default
    return _build_cached(float(resolution_mm), str(Path(atlas_dir).resolve()), bool(sinus))


@lru_cache(maxsize=4)
def _build_cached(res: float, atlas_dir: str, sinus: bool) -> HeadModel:
    atlas = load_atlas(atlas_dir)
    timg = nib.load(atlas.template)
    tpl = np.asarray(timg.dataobj, dtype=np.float32)
    lab = np.rint(np.asarray(nib.load(atlas.dseg).dataobj)).astype(np.int16)
    brain_t = tpl > 0
    thr = tuple(float(t) for t in threshold_multiotsu(tpl[brain_t], classes=3))

    # model grid: template world bounding box + padding, axis-aligned (RAS), spacing res
    shape_t = np.array(tpl.shape)
    corners = np.array([[i, j, k] for i in (0, shape_t[0] - 1) for j in (0, shape_t[1] - 1)
                        for k in (0, shape_t[2] - 1)], float)
    world = corners @ timg.affine[:3, :3].T + timg.affine[:3, 3]
    lo, hi = world.min(0) - MODEL_PAD_MM, world.max(0) + MODEL_PAD_MM
    shape = tuple(int(np.ceil((h - l) / res)) + 1 for l, h in zip(lo, hi))
    aff = np.diag([res, res, res, 1.0])
    aff[:3, 3] = lo

    src = tpl
    if res > 1.0:  # anti-alias before sub-sampling
        src = ndimage.gaussian_filter(tpl, sigma=0.42 * res / np.linalg.norm(timg.affine[:3, 0]))
    t1 = resample_to_grid(src, timg.affine, shape, aff, order=1).astype(np.float32)
    brain = resample_to_grid(brain_t.astype(np.uint8), timg.affine, shape, aff, order=0) > 0
    labs = resample_to_grid(lab, timg.affine, shape, aff, order=0).astype(np.int16)
    t1[~brain] = 0.0

    codes = np.full(shape, C.AIR, np.int16)
    codes[brain & (t1 < thr[0])] = C.CSF
    codes[brain & (t1 >= thr[0]) & (t1 < thr[1])] = C.GM
    codes[brain & (t1 >= thr[1])] = C.WM
    sel = brain & (labs > 0)
    codes[sel] = C.LABEL_OFFSET + labs[sel]

    dist = ndimage.distance_transform_edt(~brain, sampling=res)
    outside = ~brain
    codes[outside & (dist <= SHELLS_MM["extra_csf"])] = C.EXTRA_CSF
    codes[outside & (dist > SHELLS_MM["extra_csf"]) & (dist <= SHELLS_MM["skull"])] = C.SKULL
    codes[outside & (dist > SHELLS_MM["skull"]) & (dist <= SHELLS_MM["scalp"])] = C.SCALP

    ijk = np.argwhere(brain)
    center = aff[:3, :3] @ ijk.mean(0) + aff[:3, 3]
    if sinus:
        _add_frontal_sinus(codes, brain, aff, res)

    for name, val in C.T1W_OUTSIDE.items():
        code = {"air": C.AIR, "sinus": C.SINUS, "skull": C.SKULL, "scalp": C.SCALP,
                "extra_csf": C.EXTRA_CSF}[name]
        t1[codes == code] = val
    for arr in (codes, t1):
        arr.setflags(write=False)
    return HeadModel(codes=codes, t1w=t1, affine=aff, center=center, labels=atlas.labels,
                     thresholds=thr, atlas_dir=atlas_dir)


def _add_frontal_sinus(codes, brain, aff, res):
    """Ellipsoid of air (radii 14 x 6 x 9 mm, LR x AP x SI) centred 7 mm in front of the
    frontal pole at mid-line, restricted to extra-cerebral tissue (never replaces brain)."""
    ii, jj, kk = np.nonzero(brain)
    x = aff[0, 0] * ii + aff[0, 3]
    y = aff[1, 1] * jj + aff[1, 3]
    z = aff[2, 2] * kk + aff[2, 3]
    sel = (np.abs(x) <= 6) & (z >= 0) & (z <= 20)
    if not sel.any():
        return
    y_front = y[sel].max()
    c = np.array([0.0, y_front + 7.0, 8.0])
    r = np.array([14.0, 6.0, 9.0])
    grid = np.ogrid[tuple(slice(0, n) for n in codes.shape)]
    d2 = sum(((aff[a, a] * grid[a] + aff[a, 3] - c[a]) / r[a]) ** 2 for a in range(3))
    codes[(d2 <= 1.0) & ~brain] = C.SINUS
