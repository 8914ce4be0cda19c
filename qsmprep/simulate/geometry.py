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
    """Rotation ``Rz @ Ry @ Rx`` from angles about x, y, z.

    Parameters
    ----------
    angles_deg : sequence of float
        Angles about x, y and z (degrees).

    Returns
    -------
    ndarray, shape (3, 3)

    Examples
    --------
    >>> np.round(rotation_matrix([0, 0, 90]) @ [1, 0, 0], 6).tolist()
    [0.0, 1.0, 0.0]
    """
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
        """JSON-ready parameters (the content of ``sub-<label>_desc-truth_xfm.json``).

        Returns
        -------
        dict
            ``center_mm``, ``linear``, ``displacement_grid_affine``, ``rms_displacement_mm``.
        """
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
        """Rotation matrix ``R`` (3, 3) of :attr:`angles_deg` (:func:`rotation_matrix`)."""
        return rotation_matrix(self.angles_deg)

    def matrix(self) -> np.ndarray:
        """4x4 matrix mapping head frame ``p`` to scanner world ``w``.

        Returns
        -------
        ndarray, shape (4, 4)
        """
        r = self.rotation
        m = np.eye(4)
        m[:3, :3] = r
        m[:3, 3] = self.center + self.translation_mm - r @ self.center
        return m

    def inverse(self, w: np.ndarray) -> np.ndarray:
        """Map scanner world points to the head frame.

        Parameters
        ----------
        w : ndarray, shape (N, 3)
            Scanner world points (mm).

        Returns
        -------
        ndarray, shape (N, 3)
            Head-frame points ``p``.
        """
        return (w - self.center - self.translation_mm) @ self.rotation + self.center

    def to_dict(self) -> dict:
        """JSON-ready parameters (part of ``*_desc-truth_motion.json``).

        Returns
        -------
        dict
            ``center_mm``, ``rotation_deg_xyz``, ``translation_mm``, ``head_to_scanner``.
        """
        return {"center_mm": self.center.tolist(), "rotation_deg_xyz": self.angles_deg.tolist(),
                "translation_mm": self.translation_mm.tolist(),
                "head_to_scanner": self.matrix().tolist()}


def random_subject_warp(rng, center, bbox, rms_mm, spacing_mm, scale_sd) -> SubjectWarp:
    """Random smooth warp: Gaussian-smoothed noise on a coarse grid (sigma 1.5 cells), scaled to
    ``rms_mm`` RMS, plus per-axis scaling ``1 + N(0, scale_sd)`` (clipped at 2.5 SD).

    Parameters
    ----------
    rng : numpy.random.Generator
        Random stream.
    center : sequence of float
        Centre ``c`` of the scaling (mm).
    bbox : tuple of ndarray
        World bounding box (min, max corners) the displacement grid must cover (plus margin).
    rms_mm : float
        RMS displacement.
    spacing_mm : float
        Spacing of the displacement grid.
    scale_sd : float
        SD of the per-axis scaling (fraction).

    Returns
    -------
    SubjectWarp
    """
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
    """Uniformly random rigid head position of one session.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random stream.
    center : sequence of float
        Rotation centre (mm).
    max_deg, max_mm : float
        Largest rotation per axis (degrees) and translation per axis (mm).

    Returns
    -------
    Motion
    """
    return Motion(center=np.asarray(center, float),
                  angles_deg=rng.uniform(-max_deg, max_deg, 3),
                  translation_mm=rng.uniform(-max_mm, max_mm, 3))


def make_grid(center, half_extent_mm, voxel_mm, axes=np.eye(3), shift_mm=(0, 0, 0)):
    """Acquisition grid centred on ``center + shift`` with voxel axes ``axes`` (columns, world).

    Parameters
    ----------
    center : sequence of float
        Grid centre (world mm).
    half_extent_mm : sequence of float
        Half extent along each voxel axis.
    voxel_mm : sequence of float
        Voxel size.
    axes : ndarray, shape (3, 3), default identity
        Voxel axis directions (columns, world).
    shift_mm : sequence of float, default (0, 0, 0)
        Offset of the centre.

    Returns
    -------
    shape : tuple of int
    affine : ndarray, shape (4, 4)
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
    """Half extent of a world bounding box (about its centre) projected on grid axes.

    Parameters
    ----------
    axes : ndarray, shape (3, 3)
        Grid axis directions (columns).
    bbox : tuple of ndarray
        Min and max world corners.
    margin_mm : float
        Added to every half extent.

    Returns
    -------
    ndarray, shape (3,)
    """
    lo, hi = bbox
    half = (hi - lo) / 2.0
    proj = np.abs(np.asarray(axes, float).T) @ half
    return proj + margin_mm


def grid_world_points(shape, affine, dtype=np.float64) -> np.ndarray:
    """World coordinates of every voxel centre, C order.

    Parameters
    ----------
    shape : tuple of int
        Grid shape.
    affine : ndarray, shape (4, 4)
        Grid affine.
    dtype : numpy dtype, default float64

    Returns
    -------
    ndarray, shape (N, 3)
    """
    ijk = np.indices(shape, dtype=dtype).reshape(3, -1).T
    return ijk @ affine[:3, :3].T.astype(dtype) + affine[:3, 3].astype(dtype)


def sample_model(volume, model_affine, q, order, cval=0.0):
    """Sample a model volume at template-world points.

    Parameters
    ----------
    volume : ndarray
        Head-model volume.
    model_affine : ndarray, shape (4, 4)
        Its affine.
    q : ndarray, shape (N, 3)
        Template-world points.
    order : int
        Spline order (0 for classes and labels, 1 for intensities).
    cval : float, default 0.0
        Value outside the volume.

    Returns
    -------
    ndarray, shape (N,)
    """
    inv = np.linalg.inv(model_affine)
    ijk = q @ inv[:3, :3].T + inv[:3, 3]
    return ndimage.map_coordinates(volume, ijk.T, order=order, mode="constant", cval=cval,
                                   prefilter=False)


def template_index_coords(shape, grid_affine, motion: Motion, warp: SubjectWarp,
                          target_affine) -> np.ndarray:
    """Index coordinates ``(3, N)`` in a template-space volume (affine ``target_affine``) of
    every voxel of an acquisition grid: the chain ``w -> p -> q`` of the module docstring.

    Same result as ``warp(motion.inverse(world points))`` but the displacement is resampled with
    :func:`scipy.ndimage.affine_transform` (no coordinate arrays), which is faster.

    Parameters
    ----------
    shape : tuple of int
        Acquisition grid shape.
    grid_affine : ndarray, shape (4, 4)
        Acquisition grid affine (scanner world).
    motion : Motion
        Session head position.
    warp : SubjectWarp
        Subject anatomy transform.
    target_affine : ndarray, shape (4, 4)
        Affine of the template-space volume to sample.

    Returns
    -------
    ndarray of float32, shape (3, N)
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
    """Sample ``volume`` at index coordinates.

    Parameters
    ----------
    volume : ndarray
        Volume to sample.
    coords : ndarray, shape (3, N)
        Index coordinates (e.g. :func:`template_index_coords`).
    order : int
        Spline order.
    cval : float, default 0.0
        Value outside the volume.
    shape : tuple of int, optional
        Reshape the samples to this shape.

    Returns
    -------
    ndarray
    """
    out = ndimage.map_coordinates(volume, coords, order=order, mode="constant", cval=cval,
                                  prefilter=False)
    return out.reshape(shape) if shape is not None else out


def load_truth_transform(truth_root, subject: str, session: str):
    """Read the true transforms written by :func:`qsmprep.simulate.simulate_cohort`.

    Parameters
    ----------
    truth_root : path
        ``derivatives/qsmprep-truth`` of a simulated cohort.
    subject, session : str
        Labels without ``sub-``/``ses-``.

    Returns
    -------
    callable
        Maps scanner world points ``w`` (N, 3) of that session to template (atlas) world
        points ``q`` (N, 3); e.g. to check a registration against the truth.
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
