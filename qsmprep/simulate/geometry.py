"""Subject warps, session motion and acquisition grids of the simulator.

Coordinate chain (all in mm). A scanner world point ``w`` of session ``s`` maps to the subject's
head frame ``p`` through the inverse of the session's rigid head position, and ``p`` maps to the
template (atlas) world ``q`` through the subject's anatomy transform::

    p = c + R_s^T (w - c - t_s)                 (rigid motion; c = template brain centroid)
    q = c + L (p - c) + u(p)                    (per-axis scaling L + smooth displacement u)

``u`` is stored on a coarse regular grid (``warp_spacing_mm``) and evaluated by trilinear
interpolation, so the transform written to disk is exact. Images are sampled from the head model
at ``q`` (nearest neighbour for classes/labels, trilinear for intensities).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


def rotation_matrix(angles_deg) -> np.ndarray:
    """Rotation ``Rz @ Ry @ Rx`` from angles about x, y, z (degrees)."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, float))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class SubjectWarp:
    """Anatomy transform of one subject: ``q = c + L (p - c) + u(p)``."""

    center: np.ndarray          # (3,)
    linear: np.ndarray          # (3, 3)
    disp: np.ndarray            # (nx, ny, nz, 3) displacement (mm) on a coarse grid
    disp_affine: np.ndarray     # coarse grid index -> p (mm)

    def __call__(self, p: np.ndarray) -> np.ndarray:
        """Map head-frame points ``p`` (N, 3) to template world ``q`` (N, 3)."""
        q = (p - self.center) @ self.linear.T + self.center
        inv = np.linalg.inv(self.disp_affine)
        ijk = p @ inv[:3, :3].T + inv[:3, 3]
        for a in range(3):
            q[:, a] += ndimage.map_coordinates(self.disp[..., a], ijk.T, order=1, mode="nearest")
        return q

    def to_dict(self) -> dict:
        return {"center_mm": self.center.tolist(), "linear": self.linear.tolist(),
                "displacement_grid_affine": self.disp_affine.tolist(),
                "rms_displacement_mm": float(np.sqrt((self.disp**2).sum(-1).mean()))}


@dataclass
class Motion:
    """Rigid head position of one session: ``w = c + R (p - c) + t``."""

    center: np.ndarray
    angles_deg: np.ndarray
    translation_mm: np.ndarray

    @property
    def rotation(self) -> np.ndarray:
        return rotation_matrix(self.angles_deg)

    def matrix(self) -> np.ndarray:
        """4x4 matrix mapping head frame ``p`` to scanner world ``w``."""
        r = self.rotation
        m = np.eye(4)
        m[:3, :3] = r
        m[:3, 3] = self.center + self.translation_mm - r @ self.center
        return m

    def inverse(self, w: np.ndarray) -> np.ndarray:
        """Scanner world ``w`` (N, 3) -> head frame ``p``."""
        return (w - self.center - self.translation_mm) @ self.rotation + self.center

    def to_dict(self) -> dict:
        return {"center_mm": self.center.tolist(), "rotation_deg_xyz": self.angles_deg.tolist(),
                "translation_mm": self.translation_mm.tolist(),
                "head_to_scanner": self.matrix().tolist()}


def random_subject_warp(rng, center, bbox, rms_mm, spacing_mm, scale_sd) -> SubjectWarp:
    """Random smooth warp: Gaussian-smoothed noise on a coarse grid (sigma 1.5 cells), scaled to
    ``rms_mm`` RMS, plus per-axis scaling ``1 + N(0, scale_sd)`` (clipped at 2.5 SD)."""
    lo, hi = bbox[0] - 2 * spacing_mm, bbox[1] + 2 * spacing_mm
    shape = tuple(int(np.ceil((h - l) / spacing_mm)) + 1 for l, h in zip(lo, hi))
    disp = rng.standard_normal(shape + (3,))
    for a in range(3):
        disp[..., a] = ndimage.gaussian_filter(disp[..., a], 1.5, mode="nearest")
    disp *= rms_mm / np.sqrt((disp**2).sum(-1).mean())
    aff = np.diag([spacing_mm] * 3 + [1.0])
    aff[:3, 3] = lo
    scales = 1.0 + np.clip(rng.standard_normal(3) * scale_sd, -2.5 * scale_sd, 2.5 * scale_sd)
    return SubjectWarp(center=np.asarray(center, float), linear=np.diag(1.0 / scales),
                       disp=disp.astype(np.float32), disp_affine=aff)


def random_motion(rng, center, max_deg, max_mm) -> Motion:
    return Motion(center=np.asarray(center, float),
                  angles_deg=rng.uniform(-max_deg, max_deg, 3),
                  translation_mm=rng.uniform(-max_mm, max_mm, 3))


def make_grid(center, half_extent_mm, voxel_mm, axes=np.eye(3), shift_mm=(0, 0, 0)):
    """Acquisition grid centred on ``center + shift`` with voxel axes ``axes`` (columns, world).

    ``half_extent_mm`` is measured along each voxel axis. Returns ``(shape, affine)``.
    """
    voxel_mm = np.asarray(voxel_mm, float)
    shape = tuple(int(2 * np.ceil(h / v)) for h, v in zip(half_extent_mm, voxel_mm))
    m = np.asarray(axes, float) * voxel_mm
    aff = np.eye(4)
    aff[:3, :3] = m
    c = np.asarray(center, float) + np.asarray(shift_mm, float)
    aff[:3, 3] = c - m @ ((np.array(shape) - 1) / 2.0)
    return shape, aff


def half_extent_along(axes, bbox, margin_mm) -> np.ndarray:
    """Half extent of a world bounding box (about its centre) projected on grid axes."""
    lo, hi = bbox
    half = (hi - lo) / 2.0
    proj = np.abs(np.asarray(axes, float).T) @ half
    return proj + margin_mm


def grid_world_points(shape, affine, dtype=np.float64) -> np.ndarray:
    """World coordinates (N, 3) of every voxel centre, C order."""
    ijk = np.indices(shape, dtype=dtype).reshape(3, -1).T
    return ijk @ affine[:3, :3].T.astype(dtype) + affine[:3, 3].astype(dtype)


def sample_model(volume, model_affine, q, order, cval=0.0):
    """Sample a model volume at template-world points ``q`` (N, 3)."""
    inv = np.linalg.inv(model_affine)
    ijk = q @ inv[:3, :3].T + inv[:3, 3]
    return ndimage.map_coordinates(volume, ijk.T, order=order, mode="constant", cval=cval,
                                   prefilter=False)


def template_index_coords(shape, grid_affine, motion: Motion, warp: SubjectWarp,
                          target_affine) -> np.ndarray:
    """Index coordinates ``(3, N)`` in a template-space volume (affine ``target_affine``) of
    every voxel of an acquisition grid: the chain ``w -> p -> q`` of the module docstring.

    Same result as ``warp(motion.inverse(world points))`` but the displacement is resampled with
    :func:`scipy.ndimage.affine_transform` (no coordinate arrays), which is several times faster.
    """
    p_of_ijk = np.linalg.inv(motion.matrix()) @ np.asarray(grid_affine, float)
    lin = np.eye(4)
    lin[:3, :3] = warp.linear
    lin[:3, 3] = warp.center - warp.linear @ warp.center
    tinv = np.linalg.inv(np.asarray(target_affine, float))
    m = tinv @ lin @ p_of_ijk
    d = np.linalg.inv(warp.disp_affine) @ p_of_ijk
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    coords = m[:3, :3].astype(np.float32) @ ijk
    del ijk
    coords += m[:3, 3:4].astype(np.float32)
    for a in range(3):
        u = ndimage.affine_transform(warp.disp[..., a], d[:3, :3], offset=d[:3, 3],
                                     output_shape=tuple(shape), order=1, mode="nearest",
                                     prefilter=False).reshape(-1)
        for b in range(3):
            if tinv[b, a] != 0:
                coords[b] += np.float32(tinv[b, a]) * u
    return coords


def sample_at(volume, coords, order, cval=0.0, shape=None):
    """Sample ``volume`` at index coordinates ``(3, N)``; reshape to ``shape`` if given."""
    out = ndimage.map_coordinates(volume, coords, order=order, mode="constant", cval=cval,
                                  prefilter=False)
    return out.reshape(shape) if shape is not None else out


def load_truth_transform(truth_root, subject: str, session: str):
    """Read the true transforms written by :func:`qsmprep.simulate.simulate_cohort`.

    Returns a function mapping scanner world points ``w`` (N, 3) of that session to template
    (atlas) world points ``q`` (N, 3); e.g. to check a registration against the truth.
    ``subject``/``session`` are labels without ``sub-``/``ses-``.
    """
    import json
    from pathlib import Path

    import nibabel as nib

    sdir = Path(truth_root) / f"sub-{subject}"
    meta = json.loads((sdir / f"sub-{subject}_desc-truth_xfm.json").read_text())
    img = nib.load(sdir / f"sub-{subject}_desc-truthwarp_xfm.nii.gz")
    warp = SubjectWarp(center=np.array(meta["center_mm"]), linear=np.array(meta["linear"]),
                       disp=np.asarray(img.dataobj, dtype=np.float32), disp_affine=img.affine)
    mot = json.loads((sdir / f"ses-{session}" / "anat"
                      / f"sub-{subject}_ses-{session}_desc-truth_motion.json").read_text())
    motion = Motion(center=np.array(mot["center_mm"]), angles_deg=np.array(mot["rotation_deg_xyz"]),
                    translation_mm=np.array(mot["translation_mm"]))

    def world_to_template(w):
        return warp(motion.inverse(np.atleast_2d(np.asarray(w, float))))

    return world_to_template
