"""Standard output spaces (``--output-spaces``, with fMRIPrep's meaning).

A participant run always writes its susceptibility maps on each session's GRE grid. With
``--output-spaces MNI152NLin2009cAsym[:res-N]`` it also writes them in the atlas template space,
for voxel-wise studies: the Chimap is resampled **once**, through the composition of the
transforms the run estimated anyway to carry the atlas labels into the session (GRE -> T1w ->
within-subject template -> atlas template on the longitudinal path; GRE -> T1w -> atlas template
on the cross-sectional path; GRE -> atlas template for a session without a T1w). No image is
resampled twice and no transform is estimated for this output.

Grids: without ``res`` the atlas template's own grid (1 mm for the built-in atlas); ``res-N``
is an N mm isotropic grid over the same field of view, first voxel centre kept (for the
built-in atlas, whose template grid is TemplateFlow's ``res-1`` grid of MNI152NLin2009cAsym,
``res-1`` and ``res-2`` give exactly TemplateFlow's ``res-1`` and ``res-2`` grids).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nb
import numpy as np

from .errors import UsageError

#: Template spaces qsmprep can write (the space of its atlas; other spaces would need a
#: template -> template transform that qsmprep does not ship).
SUPPORTED_SPACES = ("MNI152NLin2009cAsym",)

#: Interpolation of the susceptibility map: Lanczos windowed sinc, as fMRIPrep resamples BOLD.
#: Measured on the integration cohort (3 mm GRE -> 2 mm template, 10 DGM labels x 2 sessions,
#: ``benchmarks/output_spaces.py``): structure means in template space differ from the GRE-grid
#: ROI means by 2.5-3.6 ppb on average (max 0.33 within-label SD), against 8.9-10.6 ppb (max
#: 0.72 SD, always lower: extra blur into the surroundings of iron-rich nuclei) with linear
#: interpolation. The price is overshoot (ringing) next to sharp edges (mask border, veins).
CHIMAP_INTERPOLATOR = "lanczosWindowedSinc"

_RES = re.compile(r"^res-(\d+)$")


@dataclass(frozen=True)
class OutputSpace:
    """One ``--output-spaces`` entry: a template name and an optional grid resolution (mm)."""

    name: str
    resolution: int | None = None

    @property
    def entities(self) -> dict:
        """BIDS entities of an output in this space (``space``, and ``res`` if set)."""
        ents = {"space": self.name}
        if self.resolution is not None:
            ents["res"] = str(self.resolution)
        return ents

    @property
    def tag(self) -> str:
        """A node-name-safe identifier (``MNI152NLin2009cAsym_res2``)."""
        return self.name + (f"_res{self.resolution}" if self.resolution is not None else "")

    def __str__(self) -> str:
        return self.name + (f":res-{self.resolution}" if self.resolution is not None else "")


#: TemplateFlow's 1 mm MNI152NLin2009cAsym grid (``tpl-MNI152NLin2009cAsym_res-01_T1w``):
#: shape and world position (mm) of the first voxel centre; the built-in atlas template uses it.
TEMPLATEFLOW_RES1_GRID = ((193, 229, 193), (-96.0, -132.0, -78.0))
_TEMPLATEFLOW_URL = ("https://templateflow.s3.amazonaws.com/tpl-{space}/"
                     "tpl-{space}_res-{res:02d}_T1w.nii.gz")


def spatial_reference(space, template_affine, template_shape):
    """``SpatialReference`` URI of an output on :func:`template_grid` of ``space``, or ``None``.

    The TemplateFlow T1w of the same grid when the atlas template sits on TemplateFlow's 1 mm
    MNI152NLin2009cAsym grid and ``space`` asks for 1 or 2 mm (whose grids then coincide with
    TemplateFlow's ``res-1``/``res-2``); ``None`` otherwise (the space name alone identifies it).

    Parameters
    ----------
    space : OutputSpace
        The output space.
    template_affine : ndarray, shape (4, 4)
        Affine of the atlas template.
    template_shape : tuple of int
        Shape of the atlas template.

    Returns
    -------
    str or None
        The TemplateFlow URL of the matching T1w, or ``None``.
    """
    shape, origin = TEMPLATEFLOW_RES1_GRID
    aff = np.asarray(template_affine, dtype=float)
    on_tf = (space.name == "MNI152NLin2009cAsym" and tuple(template_shape[:3]) == shape
             and np.allclose(aff[:3, :3], np.eye(3)) and np.allclose(aff[:3, 3], origin))
    res = space.resolution or 1
    if not on_tf or res not in (1, 2):
        return None
    return _TEMPLATEFLOW_URL.format(space=space.name, res=res)


def parse_output_spaces(values, atlas_space="MNI152NLin2009cAsym") -> tuple:
    """Parse ``--output-spaces`` values (``NAME[:res-N]``) into :class:`OutputSpace` records.

    Raises :class:`~qsmprep.errors.UsageError` (exit 64) for a space qsmprep cannot reach
    (anything but the atlas space, which must be one of :data:`SUPPORTED_SPACES`), an unknown
    modifier, or a resolution that is not a positive whole number of millimetres. Duplicates are
    dropped, order is kept.

    Parameters
    ----------
    values : iterable of str
        The ``--output-spaces`` values.
    atlas_space : str, default "MNI152NLin2009cAsym"
        Space of the atlas in use.

    Returns
    -------
    tuple of OutputSpace

    Raises
    ------
    qsmprep.errors.UsageError
        See above.

    Examples
    --------
    >>> [str(s) for s in parse_output_spaces(["MNI152NLin2009cAsym:res-2"])]
    ['MNI152NLin2009cAsym:res-2']
    """
    out = []
    for value in values or ():
        name, *mods = str(value).split(":")
        if name not in SUPPORTED_SPACES:
            raise UsageError(
                f"--output-spaces {value!r}: qsmprep can write {', '.join(SUPPORTED_SPACES)} "
                "(the atlas space) only; use e.g. 'MNI152NLin2009cAsym' or "
                "'MNI152NLin2009cAsym:res-2'.")
        if name != atlas_space:
            raise UsageError(
                f"--output-spaces {value!r}: the atlas in use is in {atlas_space!r}; qsmprep "
                "reaches a template space only through the atlas registration. Use the "
                "built-in atlas or drop --output-spaces.")
        res = None
        for mod in mods:
            m = _RES.match(mod)
            if not m or int(m.group(1)) < 1:
                raise UsageError(
                    f"--output-spaces {value!r}: unknown modifier {mod!r}; the only modifier is "
                    "'res-N' (N mm isotropic grid, N a positive whole number).")
            res = int(m.group(1))
        space = OutputSpace(name, res)
        if space not in out:
            out.append(space)
    return tuple(out)


def template_grid(affine, shape, resolution_mm=None):
    """``(affine, shape)`` of an isotropic ``resolution_mm`` grid over a template's field of view.

    The new grid keeps the template's axis directions and the centre of its first voxel, and
    spans the template's first to last voxel centres (``floor((n - 1) * voxel / resolution) + 1``
    voxels per axis). This is TemplateFlow's convention: on the 1 mm MNI152NLin2009cAsym grid
    (193 x 229 x 193, first voxel at (-96, -132, -78) mm) ``resolution_mm=2`` gives its
    ``res-2`` grid (97 x 115 x 97). ``resolution_mm=None`` returns the template grid unchanged.

    Parameters
    ----------
    affine : ndarray, shape (4, 4)
        Template affine.
    shape : tuple of int
        Template shape.
    resolution_mm : float, optional
        Spacing of the new grid.

    Returns
    -------
    affine : ndarray, shape (4, 4)
    shape : tuple of int

    Raises
    ------
    ValueError
        For a resolution that is not positive.

    Examples
    --------
    >>> aff = np.eye(4); aff[:3, 3] = (-96.0, -132.0, -78.0)
    >>> template_grid(aff, (193, 229, 193), 2)[1]
    (97, 115, 97)
    """
    affine = np.asarray(affine, dtype=float)
    shape = tuple(int(s) for s in shape[:3])
    if resolution_mm is None:
        return affine.copy(), shape
    res = float(resolution_mm)
    if not res > 0:
        raise ValueError(f"resolution_mm must be positive, not {resolution_mm}")
    vox = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    directions = affine[:3, :3] / vox
    new_shape = tuple(int(math.floor((n - 1) * v / res + 1e-6)) + 1 for n, v in zip(shape, vox))
    new = np.eye(4)
    new[:3, :3] = directions * res
    new[:3, 3] = affine[:3, 3]
    return new, new_shape


def write_template_grid(template, out_file, resolution_mm=None) -> str:
    """Write an empty (uint8) image on :func:`template_grid` of ``template``.

    Parameters
    ----------
    template : path
        Template image.
    out_file : path
        Image to write (qform/sform code 4, MNI152).
    resolution_mm : float, optional
        Spacing (default: the template's grid).

    Returns
    -------
    str
        Absolute path of ``out_file``.
    """
    img = nb.load(str(template))
    aff, shape = template_grid(img.affine, img.shape, resolution_mm)
    ref = nb.Nifti1Image(np.zeros(shape, dtype=np.uint8), aff)
    ref.header.set_xyzt_units("mm")
    ref.set_qform(aff, code=4)  # 4 = MNI152
    ref.set_sform(aff, code=4)
    ref.to_filename(str(out_file))
    return os.path.abspath(str(out_file))


def resample_to_space(in_file, template, transforms, out_file, resolution_mm=None,
                      interpolator=CHIMAP_INTERPOLATOR, invert=None) -> str:
    """Resample a GRE-grid image into a template grid through ``transforms``, in one step.

    Parameters
    ----------
    in_file : path
        Image on the session's GRE grid (Chimap, or a mask with ``genericLabel``).
    template : path
        The atlas template image (defines the space; see :func:`template_grid`).
    transforms : sequence of path
        ANTs transforms ordered as for antsApplyTransforms, first the one nearest the template
        (e.g. ``[template->atlas inverse warp, T1w->template, GRE->T1w]``); composed and
        applied once (:func:`qsmprep.registration.compose_and_apply`).
    out_file : path
        Output image.
    resolution_mm : float, optional
        Output grid spacing (``None``: the template's grid).
    interpolator : str, default :data:`CHIMAP_INTERPOLATOR`
        ANTs interpolator (``linear`` for Chimaps, ``genericLabel`` for masks).
    invert : sequence of bool, optional
        Per-transform invert flags (linear transforms only).

    Returns
    -------
    str
        Path of the resampled image (float32, or int16 for label interpolators). The temporary
        reference grid is written next to ``out_file`` and removed.

    Raises
    ------
    ValueError
        Without any transform.
    """
    from .registration import compose_and_apply

    transforms = [str(t) for t in transforms if t]
    if not transforms:
        raise ValueError("resample_to_space needs at least one transform into the template")
    out_file = Path(out_file)
    grid = out_file.with_name(f".grid_{out_file.name}")
    write_template_grid(template, grid, resolution_mm)
    try:
        return compose_and_apply(in_file, str(grid), transforms, invert=invert,
                                 out_file=str(out_file), interpolator=interpolator)
    finally:
        grid.unlink(missing_ok=True)
