"""Every antspyx call of qsmprep: brain extraction, registrations, templates, label propagation.

Functions take and return *file paths* (antspyx works on files and ANTs transforms are files), so
Nipype can hash and cache them. Conventions:

* ``ants.registration(fixed=F, moving=M)`` returns *forward* transforms that resample M into F;
  we save them as ``from-<M>_to-<F>_mode-image_xfm.{mat,h5}`` (fMRIPrep's naming).
* :func:`compose_and_apply` takes the list of transforms ordered from the one nearest the
  *reference* (fixed) grid to the one nearest the moving image (antsApplyTransforms order) and
  resamples once, with ``genericLabel`` interpolation for label images.
* ``resolution_mm`` resamples both images to that isotropic spacing before estimating a
  transform (transforms live in physical space, so they apply to the full-resolution images);
  ``None`` registers at native resolution.
* Determinism: ``seed`` is passed to antsRegistration (``--random-seed``) and ``num_threads``
  sets ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` for the call.

No function here downloads anything (antspynet is not used).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import nibabel as nb
import numpy as np
from scipy import ndimage

from .qsm._fftgrid import mask_bounds

LOGGER = logging.getLogger("qsmprep.registration")
DEFAULT_SEED = 20240611
TEMPLATE_SPACE = "MNI152NLin2009cAsym"
#: rigid/affine pyramid: shrink factors, smoothing (voxels), iterations per level, applied to
#: images first brought to ``RIGID_RESOLUTION_MM`` (when finer): levels at 4 and 2 mm. A third
#: level at native 1 mm cost most of the CPU time and did not move the transform measurably
#: (benchmarks/participant.py, docs/registration.md)
RIGID_RESOLUTION_MM = 2.0
RIGID_SHRINK = (2, 1)
RIGID_SMOOTH = (1, 0)
RIGID_ITERATIONS = (200, 100)
#: masked rigid registrations estimate on the masked images cropped to their mask's bounding
#: box plus this margin (mm): the background they drop is zero, the sampling rate (and so the
#: number of points inside the brain) is unchanged, and the metric, smoothing and resampling
#: stop paying for the empty field of view (docs/registration.md, ninth session)
RIGID_CROP_MARGIN_MM = 10.0
#: MI metric sampling: at most this fraction of voxels and about this many points (cost scales
#: with the number of samples, and a fixed rate would make 1 mm rigid registrations far dearer
#: than 3 mm ones for no gain)
RIGID_SAMPLING = 0.1
RIGID_MAX_SAMPLES = 200_000
#: sample count of the same-contrast T1w -> T1w rigid registrations (subject template
#: iterations, T1w -> template): 50,000 points cost ~10 CPU s less per registration at 1 mm and
#: moved the transform by 0.02 mm mean (max 0.07 mm), about what changing the random seed does
#: (0.018 / 0.058 mm);
#: the masked, cross-contrast GRE -> T1w registration keeps RIGID_MAX_SAMPLES (at 50,000 it
#: moved by 0.08-0.13 mm, more than a seed change: docs/registration.md)
RIGID_MAX_SAMPLES_T1W = 50_000
#: iterations of the within-subject template: the template after 2 iterations differs from the
#: one after 3 by 0.002 mm mean (max 0.005 mm) rigid displacement, image correlation 1.00000
#: (1 mm simulator, docs/registration.md), at 2/3 of the cost
TEMPLATE_ITERATIONS = 2
#: SyN similarity metric of the atlas registration (T1w template -> skull-stripped T1w):
#: neighbourhood cross-correlation of radius 2 voxels; it gives clearly better pallidum labels
#: than Mattes MI on the 1 mm simulator (Dice in docs/registration.md). CC is the metric of
#: ANTs' antsRegistrationSyN.sh and of Avants et al. 2008/2011 (refs in register_atlas_to_t1w)
SYN_METRIC = "CC"
SYN_CC_RADIUS = 2
SYN_MI_BINS = 32
#: margin (mm) kept around the brain when images are cropped for SyN (the displacement field
#: lives on the fixed grid, and a padded template grid has several times the voxels of the
#: brain's bounding box; timings in docs/registration.md)
CROP_MARGIN_MM = 6.0
#: margin (mm) around the template brain (placed by the affine) to which the head image is
#: cropped for the SyN of the template-based brain extraction
BEX_CROP_MARGIN_MM = 20.0
#: finest level of the atlas SyN (mm). The default schedule (40, 20, 0) at native 1 mm runs
#: its last level with 0 iterations: estimating on images brought to 2 mm (levels 4 and 2 mm,
#: 40 and 20 iterations, the same as before) removes the full-resolution pyramid and affine
#: levels without changing the optimised levels
SYN_RESOLUTION_MM = 2.0
#: atlas SyN iterations per level (coarse to fine, levels halving in resolution from the image's
#: own spacing): on 1 mm images 4 mm: 40, 2 mm: 10, 1 mm: 0. The 2 mm level costs ~10 CPU s
#: per iteration on 2 cores; 10 instead of 20 iterations halves it and moved the propagated
#: labels by less than the issue-14 tolerance (Dice and ROI means in docs/registration.md)
SYN_ITERATIONS = (40, 10, 0)
#: margin (mm) around the atlas labels, as placed in the fixed image by the SyN's coarse
#: levels, to which the fixed image of its finest level is cropped when it is restricted to
#: the labelled region
#: (``region_labels`` of :func:`register_atlas_to_t1w`)
SYN_REGION_MARGIN_MM = 20.0


def _sampling_rate(img, max_samples=None) -> float:
    n = float(np.prod(img.shape))
    cap = RIGID_MAX_SAMPLES if max_samples is None else float(max_samples)
    return float(min(RIGID_SAMPLING, max(0.01, cap / n)))


def xfm_name(src: str, dst: str, ext: str = "h5") -> str:
    """BIDS-like transform file name.

    Parameters
    ----------
    src, dst : str
        Spaces the transform maps from and to.
    ext : str, default "h5"
        Extension (``h5`` or ``mat``; a leading dot is ignored).

    Returns
    -------
    str
        ``from-<src>_to-<dst>_mode-image_xfm.<ext>``.

    Examples
    --------
    >>> xfm_name("MEGRE", "T1w", "mat")
    'from-MEGRE_to-T1w_mode-image_xfm.mat'
    """
    return f"from-{src}_to-{dst}_mode-image_xfm.{ext.lstrip('.')}"


def _ants():
    import ants  # imported lazily: heavy, and not needed to build workflows

    return ants


@contextmanager
def ants_environment(seed: int | None = DEFAULT_SEED, num_threads: int | None = 1):
    """Seed antsRegistration and pin the ITK thread count for the duration of a call.

    Parameters
    ----------
    seed : int or None, default DEFAULT_SEED
        ``--random-seed`` of antsRegistration (``None``: unseeded).
    num_threads : int, default 1
        ITK threads for the call.

    Yields
    ------
    module
        The ``ants`` module (imported lazily); settings are restored on exit.
    """
    ants = _ants()
    old_seed = ants.config._random_seed
    old_thr = os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")
    ants.config._random_seed = None if seed is None else int(seed)
    if num_threads:
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(int(num_threads))
    try:
        yield ants
    finally:
        ants.config._random_seed = old_seed
        if old_thr is None:
            os.environ.pop("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", None)
        else:
            os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = old_thr


def _read(path, pixeltype="float"):
    ants = _ants()
    img = ants.image_read(str(path), pixeltype=pixeltype)
    if img.dimension == 4:  # e.g. a 4-D magnitude: keep the first volume (echo 1)
        img = ants.slice_image(img, axis=3, idx=0)
    return img


def _at_resolution(img, resolution_mm):
    if not resolution_mm:
        return img
    ants = _ants()
    spacing = tuple(float(resolution_mm) for _ in range(img.dimension))
    if np.allclose(img.spacing, spacing):
        return img
    return ants.resample_image(img, spacing, use_voxels=False, interp_type=0)


def _coarsen(img, resolution_mm):
    """Bring ``img`` to isotropic ``resolution_mm`` when any voxel side is finer (else as is).

    Anti-aliased: Gaussian smoothing (sigma = resolution / 2 mm, physical units) before linear
    resampling, the way ANTs' pyramid smooths before shrinking.
    """
    if not resolution_mm or min(img.spacing) >= float(resolution_mm) - 1e-6:
        return img
    ants = _ants()
    sm = ants.smooth_image(img, float(resolution_mm) / 2.0, sigma_in_physical_coordinates=True)
    spacing = tuple(float(resolution_mm) for _ in range(img.dimension))
    return ants.resample_image(sm, spacing, use_voxels=False, interp_type=0)


def _estimation_schedule(native_mm, reg_iterations, resolution_mm=None):
    """Resolution (mm) and iterations for a SyN whose pyramid halves per level.

    ``reg_iterations`` describes levels at ``native * 2**(L-1-k)``; levels finer than
    :data:`SYN_RESOLUTION_MM` (or ``resolution_mm``) with 0 iterations are dropped and the
    images are coarsened to the finest level kept, which gives the same optimised levels for
    less work. A schedule with iterations on a finer level is run at native resolution.
    """
    its = [int(x) for x in reg_iterations]
    native = float(native_mm)
    if resolution_mm:  # user-requested estimation grid: legacy behaviour (schedule as given)
        return float(resolution_mm), tuple(its)
    n = len(its)
    levels = [native * 2 ** (n - 1 - k) for k in range(n)]
    keep = [k for k in range(n) if levels[k] >= SYN_RESOLUTION_MM - 1e-6]
    dropped = [k for k in range(n) if k not in keep]
    if not keep or any(its[k] for k in dropped):
        return None, tuple(its)
    return levels[keep[-1]], tuple(its[k] for k in keep)


def _normalise(img, mask=None):
    """Scale intensities so the 99th percentile inside the (optional) mask is 1."""
    arr = img.view()  # read only (img lives on)
    vals = arr[mask.view() > 0] if mask is not None else arr[arr > 0]
    if vals.size == 0:
        return img
    p99 = float(np.percentile(vals, 99))
    if not p99 > 0:
        return img
    if img.pixeltype != "float":  # new_image_like's float32 result
        return img.new_image_like(np.asarray(arr / p99, dtype=np.float32))
    # img / p99 (float32 / Python float: float32 arithmetic, as numpy's arr / p99) divided in
    # place in a clone, without the array copies of numpy() and new_image_like
    out = img.clone()
    buf = out.view()
    np.divide(buf, p99, out=buf)
    return out


def _save_like(array, reference, out_file, dtype=None):
    """Save ``array`` with the nibabel header/affine of ``reference`` (exact grid match)."""
    ref = nb.load(str(reference))
    hdr = ref.header.copy()
    arr = np.asarray(array)
    if dtype is not None:
        arr = arr.astype(dtype)
    hdr.set_data_dtype(arr.dtype)
    hdr.set_xyzt_units("mm")
    if arr.ndim == 3 and len(hdr.get_data_shape()) > 3:
        hdr.set_data_shape(arr.shape)
    img = nb.Nifti1Image(arr, ref.affine, hdr)
    img.header.set_slope_inter(1, 0)
    img.to_filename(str(out_file))
    return str(Path(out_file).resolve())


def _com_translation(fixed, moving, out_file):
    """Write a translation that maps fixed-space points onto the moving centre of mass."""
    ants = _ants()
    cf = np.asarray(ants.get_center_of_mass(fixed))
    cm = np.asarray(ants.get_center_of_mass(moving))
    tx = ants.create_ants_transform(
        transform_type="Euler3DTransform", dimension=3, center=list(cf), translation=list(cm - cf)
    )
    ants.write_transform(tx, str(out_file))
    return str(out_file)


def _affine_matrix(tx) -> np.ndarray:
    """4x4 matrix (ITK/LPS physical space) of a linear ANTs transform."""
    p = np.asarray(tx.parameters, dtype=float)
    c = np.asarray(tx.fixed_parameters, dtype=float)
    m = p[:9].reshape(3, 3)
    out = np.eye(4)
    out[:3, :3] = m
    out[:3, 3] = p[9:12] + c - m @ c
    return out


def _average_rigid(transforms):
    """Mean of rigid transforms: average the affine maps, project the matrix to a rotation.

    (Same purpose as ``ants.average_affine_transform`` without its console output and
    temporary files; for the small rotations between sessions the two agree.)
    """
    ants = _ants()
    mats = np.stack([_affine_matrix(t) for t in transforms])
    mean = mats.mean(axis=0)
    u, _, vt = np.linalg.svd(mean[:3, :3])
    rot = u @ vt
    if np.linalg.det(rot) < 0:
        u[:, -1] *= -1
        rot = u @ vt
    return ants.create_ants_transform(
        transform_type="AffineTransform", dimension=3, matrix=rot, translation=mean[:3, 3]
    )


def _write_composite(transforms, out_file, invert_first=False):
    """Write ANTs transform files (apply_transforms order: the last maps first) as one
    composite (.h5). ``invert_first``: the first file (an affine) enters inverted, as in the
    ``invtransforms`` lists of antspy (``whichtoinvert`` True for it)."""
    ants = _ants()
    txs = [ants.read_transform(str(t)) for t in transforms]
    if invert_first:
        txs[0] = txs[0].invert()
    ants.write_transform(ants.compose_ants_transforms(txs), str(out_file))
    return str(out_file)


def _as_list(transforms):
    """A transform file or a list of them, as a list of strings (antspy's transform lists)."""
    if isinstance(transforms, (list, tuple)):
        return [str(t) for t in transforms]
    return [str(transforms)]


def _crop_to_content(img, margin_mm=CROP_MARGIN_MM, mask=None):
    """Crop an ANTs image to the bounding box of its non-zero voxels plus ``margin_mm``.

    Physical coordinates are kept (origin moves with the crop), so transforms estimated on the
    cropped image apply to the full one. Images with no zero background are returned as is.
    ``mask`` (an array on the image's grid) replaces the non-zero voxels as the content.
    """
    box = _crop_box(img, margin_mm, mask)
    if box is None:
        return img
    return _ants().crop_indices(img, *box)


def _crop_box(img, margin_mm=CROP_MARGIN_MM, mask=None):
    """``(lower, upper)`` indices (upper exclusive) of :func:`_crop_to_content`'s crop, or
    ``None`` when it keeps the whole image."""
    shape = tuple(int(n) for n in img.shape)
    bounds = mask_bounds(img.view() != 0 if mask is None else mask)
    if bounds is None:
        return None
    pad = [int(np.ceil(margin_mm / s)) for s in img.spacing]
    lo = [max(0, a - p) for a, p in zip(bounds[0], pad)]
    hi = [min(n - 1, b + p) for n, b, p in zip(shape, bounds[1], pad)]
    if all(a == 0 for a in lo) and all(b == n - 1 for b, n in zip(hi, shape)):
        return None
    return lo, [b + 1 for b in hi]


def _mask_on(mask_file, image):
    """A brain mask (0/1 float image) on ``image``'s grid: read as is when it already shares the
    grid (the usual case: the mask was made from the image), else nearest-label resampled."""
    ants = _ants()
    mask = _read(mask_file)
    if not (mask.shape == image.shape
            and ants.image_physical_space_consistency(mask, image, tolerance=1e-4)):
        mask = ants.resample_image_to_target(mask, image, interp_type="genericLabel")
    # thresholded in place: ``mask`` is a fresh float image of our own, and writing into its
    # buffer (view()) spares the three copies of new_image_like (same 0/1 float32 values)
    buf = mask.view()
    np.greater(buf, 0.5, out=buf, casting="unsafe")
    return mask


def _close_fill_largest(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary closing (ball of ``radius`` voxels, outside = 0), hole filling, largest component.

    Computed on the mask's box plus ``2 * radius + 2`` voxels (the closing's dilation stays
    ``radius + 2`` voxels inside it, so neither the erosion's nor the hole filling's border sees
    a difference) and put back: the same mask as on the whole grid, computed on about a quarter
    of a 1 mm head's grid (the brain extraction node 32.3 -> 28.8 s, one re-run each).
    """
    ball = ndimage.iterate_structure(ndimage.generate_binary_structure(3, 1), radius)
    bounds = mask_bounds(mask)
    if bounds is None:
        return np.zeros(mask.shape, bool)
    m = 2 * radius + 2
    box = tuple(slice(max(0, a - m), min(n, b + m + 1))
                for a, b, n in zip(bounds[0], bounds[1], mask.shape))
    sub = ndimage.binary_closing(mask[box], structure=ball, border_value=0)
    sub = _largest_component(ndimage.binary_fill_holes(sub))
    out = np.zeros(mask.shape, bool)
    out[box] = sub
    return out


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = ndimage.sum(mask, lab, index=np.arange(1, n + 1))
    return lab == (int(np.argmax(sizes)) + 1)


def _bbox(mask: np.ndarray, margin: int = 3):
    bounds = mask_bounds(mask)
    if bounds is None:
        return tuple(slice(0, n) for n in mask.shape)
    lo = np.maximum(np.asarray(bounds[0]) - margin, 0)
    hi = np.minimum(np.asarray(bounds[1]) + margin + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _head_mask(arr: np.ndarray) -> np.ndarray:
    """Foreground of an image: above 10 % of its 99th percentile of non-zero voxels."""
    vals = arr[arr > 0]
    if vals.size == 0:
        return np.zeros(arr.shape, bool)
    return arr > 0.1 * float(np.percentile(vals, 99))


def registration_quality(name, fixed, warped, fixed_mask=None, warped_mask=None,
                         voxel_size=(1.0, 1.0, 1.0)):
    """Quality metrics of one registration, on the fixed grid (arrays in, dict out).

    ``name`` is a key of :data:`qsmprep.registration_qc.METRICS` (``"gre_to_t1w"``, ...; other
    names get ``ncc``);
    ``fixed`` and ``warped`` (the moving image resampled by the estimated transform) are arrays
    on the same grid; ``fixed_mask`` is the fixed brain mask (default: the foreground of
    ``fixed``), ``warped_mask`` the moving brain mask carried by the transform (needed for
    ``overlap``), ``voxel_size`` (mm) scales the gradients.

    Parameters
    ----------
    name : str
        Registration name.
    fixed, warped : ndarray
        Fixed image and moving image resampled onto it.
    fixed_mask, warped_mask : ndarray, optional
        Brain masks on the fixed grid.
    voxel_size : sequence of float, default (1, 1, 1)
        Voxel size in mm.

    Returns
    -------
    dict
        ``{"<name>_<metric>": value}``; see :mod:`qsmprep.registration_qc`.
    """
    from . import registration_qc as qc

    fixed = np.asarray(fixed, np.float32)
    warped = np.asarray(warped, np.float32)
    fmask = _head_mask(fixed) if fixed_mask is None else np.asarray(fixed_mask) > 0.5
    out = {}
    for metric in qc.METRICS.get(name, ("ncc",)):
        if metric == "overlap":
            out[f"{name}_overlap"] = (qc.mask_overlap(warped_mask, fmask)
                                      if warped_mask is not None else float("nan"))
            continue
        region = fmask if warped_mask is None else fmask & (np.asarray(warped_mask) > 0.5)
        box = _bbox(region)
        if metric == "ncc":
            out[f"{name}_ncc"] = qc.masked_ncc(fixed[box], warped[box], region[box])
        elif metric == "gc":
            out[f"{name}_gc"] = qc.gradient_correlation(
                fixed[box], warped[box], region[box], voxel_size=voxel_size)
    return out


def write_quality(qc_file, name, metrics):
    """Write one registration's metrics, thresholds and flag as a JSON sidecar; log flags.

    The file is the content of the transform's sidecar (``RegistrationQuality``). A metric
    below its threshold is logged at WARNING here; the per-session verdict (with subject and
    session) is logged by the ``RegistrationQC`` node.

    Parameters
    ----------
    qc_file : path
        JSON file to write.
    name : str
        Registration name (``gre_to_t1w``, ...).
    metrics : dict
        From :func:`registration_quality`.

    Returns
    -------
    str
        Absolute path of ``qc_file``.
    """
    import json

    from . import registration_qc as qc

    flagged, reasons = qc.assess(metrics)
    doc = {"RegistrationQuality": {
        "Registration": name,
        "Metrics": {k: (None if not np.isfinite(v) else round(float(v), 4))
                    for k, v in metrics.items()},
        "Thresholds": {k: qc.THRESHOLDS[k] for k in metrics if k in qc.THRESHOLDS},
        "Flagged": int(flagged),
        "Reasons": reasons,
        "MetricDescriptions": {k: qc.DESCRIPTIONS[k.rsplit("_", 1)[-1]] for k in metrics},
    }}
    for r in reasons:
        LOGGER.warning("Registration %s below its quality threshold: %s", name, r)
    Path(qc_file).write_text(json.dumps(doc, indent=2, sort_keys=True))
    return str(Path(qc_file).resolve())


# --------------------------------------------------------------------------------------------
# brain extraction


def brain_extract_t1w(
    t1w,
    template,
    template_mask=None,
    out_prefix="t1w_",
    resolution_mm=2.0,
    seed=DEFAULT_SEED,
    num_threads=1,
    return_affine=False,
):
    """Template-based brain extraction of a T1w image (offline; no deep-learning model).

    The brain-extracted atlas template is registered to the T1w head (centre-of-mass
    initialisation, affine on the whole head, then a short SyN at ``resolution_mm``, Mattes MI,
    metric restricted to the template brain plus a 6 mm margin), its brain mask
    (``template_mask``, or ``template > 0``) is carried back with ``genericLabel`` and cleaned by
    morphology (closing, hole filling, largest component). Good enough to
    skull-strip both sides of the atlas SyN, not a segmentation.

    The SyN runs on the head image cropped to the template brain as placed by the affine, plus
    :data:`BEX_CROP_MARGIN_MM`: its metric only looks at the template brain and the mask only
    needs the warp there, and a padded template grid is several times larger than the brain
    (on the 1 mm simulator the crop keeps 45 % of the 2 mm grid; whole participant run in
    docs/registration.md).

    Parameters
    ----------
    t1w : path
        T1w head image.
    template : path
        Brain-extracted template T1w (the atlas template).
    template_mask : path, optional
        Template brain mask (default ``template > 0``).
    out_prefix : str, default "t1w_"
        Prefix (folder and name start) of the outputs.
    resolution_mm : float, default 2.0
        Estimation grid.
    seed : int or None, default DEFAULT_SEED
        ``--random-seed`` of antsRegistration (``None``: unseeded).
    num_threads : int, default 1
        ITK threads for the call.
    return_affine : bool, default False
        Also return the affine (template -> T1w, ANTs ``.mat``), e.g. to start the atlas SyN
        from it (:func:`register_atlas_to_t1w`, ``initial_affine``).

    Returns
    -------
    brain_file, mask_file : str
        ``<prefix>desc-brain_T1w.nii`` (uncompressed work-folder intermediate) and
        ``<prefix>desc-brain_mask.nii.gz`` on the T1w grid.
    affine_file : str
        ``<prefix>bexaffine.mat`` (only with ``return_affine``).
    """
    with ants_environment(seed, num_threads) as ants:
        head = _read(t1w)
        tpl = _read(template)
        if template_mask is not None:
            tmask = _read(template_mask)
        else:
            tmask = ants.from_numpy(
                (tpl.view() > 0).astype("float32"), tpl.origin, tpl.spacing, tpl.direction
            )
        fixed = _normalise(_at_resolution(head, resolution_mm))
        moving = _normalise(_at_resolution(tpl, resolution_mm))
        # the metric only looks at the template brain plus a ~6 mm margin: without this the
        # template's empty background is pulled onto the scalp (measured: 24% of a synthetic
        # scalp shell inside the mask without, 1% with)
        mmask = ants.resample_image_to_target(tmask, moving, interp_type="genericLabel")
        margin = max(1, int(round(6.0 / float(min(moving.spacing)))))
        mmask = ants.iMath(mmask, "MD", margin)
        init = _com_translation(fixed, moving, f"{out_prefix}com_init.mat")
        # the affine stage of antspy's "SyN", which ignores the aff_* arguments (Mattes MI, 20 %
        # regular sampling, 2100/1200/1200/0 iterations, shrink 4/2/2/1, smoothing 3/2/1/0
        # voxels); the metric mask applies to the SyN stage only, as there
        aff = ants.registration(
            fixed, moving, type_of_transform="Affine", initial_transform=[init],
            aff_metric="mattes", aff_sampling=32, aff_random_sampling_rate=0.2,
            aff_iterations=(2100, 1200, 1200, 0), aff_shrink_factors=(4, 2, 2, 1),
            aff_smoothing_sigmas=(3, 2, 1, 0), outprefix=f"{out_prefix}bexaffine_",
        )  # (not "bex_...": antspy lists its outputs by globbing the prefix, "bex_*")
        affine_file = f"{out_prefix}bexaffine.mat"
        shutil.copyfile(aff["fwdtransforms"][-1], affine_file)
        placed = ants.apply_transforms(fixed, tmask, [affine_file], interpolator="genericLabel")
        fixed = _crop_to_content(fixed, BEX_CROP_MARGIN_MM, mask=placed.view() > 0.5)
        reg = ants.registration(
            fixed,
            moving,
            type_of_transform="SyNOnly",
            initial_transform=[affine_file],
            reg_iterations=(40, 20, 0),
            syn_metric="mattes",
            moving_mask=mmask,
            outprefix=f"{out_prefix}bex_",
        )
        # the template mask can only land inside the SyN's domain (the cropped fixed image):
        # outside it the warp is the affine alone, which places the mask at least
        # BEX_CROP_MARGIN_MM inside the domain's border, so the head's grid is resampled only
        # over the domain's box (the whole grid's values there, zero elsewhere)
        warped = _warp_in_domain(head, tmask, reg["fwdtransforms"], fixed)
    mask = warped > 0.5
    vox = np.asarray(head.spacing, dtype=float)
    radius = max(1, int(round(2.0 / vox.min())))
    mask = _close_fill_largest(mask, radius)
    data = np.asarray(nb.load(str(t1w)).dataobj, dtype=np.float32)
    if data.ndim == 4:
        data = data[..., 0]
    mask_file = _save_like(mask.astype(np.uint8), t1w, f"{out_prefix}desc-brain_mask.nii.gz")
    # uncompressed: a work-folder intermediate, read only by the atlas SyN (compressing a 1 mm
    # head cost about 2 s)
    brain_file = _save_like(data * mask, t1w, f"{out_prefix}desc-brain_T1w.nii", np.float32)
    if return_affine:
        return brain_file, mask_file, str(Path(affine_file).resolve())
    return brain_file, mask_file


# --------------------------------------------------------------------------------------------
# registrations


def register_atlas_to_t1w(
    t1w_brain,
    template_brain,
    out_dir=".",
    src=TEMPLATE_SPACE,
    dst="T1w",
    resolution_mm=None,
    type_of_transform="SyN",
    reg_iterations=SYN_ITERATIONS,
    fixed_mask=None,
    syn_metric=SYN_METRIC,
    crop=True,
    seed=DEFAULT_SEED,
    num_threads=1,
    qc_name=None,
    qc_file=None,
    initial_affine=None,
    region_labels=None,
    region_margin_mm=SYN_REGION_MARGIN_MM,
):
    """Nonlinear (SyN) registration of the skull-stripped atlas template to a skull-stripped T1w.

    antspyx ``SyN``: centre-of-mass initialisation, affine (Mattes MI), then symmetric
    normalisation (Avants BB, et al. Symmetric diffeomorphic image registration with
    cross-correlation. Med Image Anal 2008;12:26-41) at ``resolution_mm`` with the
    ``syn_metric`` similarity:

    * ``"CC"`` (default): neighbourhood cross-correlation, radius ``SYN_CC_RADIUS`` voxels; the
      metric of ANTs' ``antsRegistrationSyN.sh`` for same-contrast (T1w -> T1w) registration
      (Avants BB, et al. A reproducible evaluation of ANTs similarity metric performance in
      brain image registration. NeuroImage 2011;54:2033-2044). Local normalisation keeps
      low-contrast boundaries (pallidum / internal capsule) that a global 32-bin
      histogram blurs; see ``SYN_METRIC`` for the measured Dice.
    * ``"mattes"``: Mattes mutual information (32 bins), for different contrasts (a GRE
      magnitude as the fixed image), and faster.

    Both images are intensity-normalised. ``fixed_mask`` (optional) skull-strips the fixed image
    first (e.g. a GRE magnitude with its QSM brain mask, for sessions without a T1w). With
    ``crop`` both images are cropped to their non-zero content plus ``CROP_MARGIN_MM`` before
    estimation (the warp is then defined on the brain's bounding box; outside it the
    displacement is zero, which only affects voxels >= 6 mm outside the brain).

    Estimation grid: with the default schedule ``(40, 10, 0)`` on a 1 mm image the last level
    has no iterations, so both images are brought (anti-aliased) to ``SYN_RESOLUTION_MM``
    (2 mm) and the optimised levels (4 and 2 mm, 40 and 10 iterations) run there: the affine
    stage first (same metric, sampling and per-level smoothing in mm as antspy's ``SyN``),
    then ``SyNOnly`` from it. The transforms are physical, so they apply to full-resolution
    images. ``resolution_mm`` (when given) keeps the former behaviour on that grid.

    ``region_labels`` (the atlas label image, template space) restricts the finest optimised
    level to the labels' region: the coarser levels run as above on the whole brain (from the
    affine, written as ``coarse<src>_to_<dst>_*``), then the finest level runs on the fixed
    image cropped to the labels as the coarse warp places them plus ``region_margin_mm``,
    starting from that warp. ANTs holds a displacement field at zero on its domain's border, so
    the crop bounds only that refinement; outside the box the transform is the coarse one.
    The registration quality is then judged inside the box. antsRegistration writes no inverse
    composite when an initial transform is a displacement field, so both composites are
    assembled from the stages' files (:func:`_write_composite`).

    ``initial_affine`` (an ANTs affine, template -> fixed, e.g. the one of the template-based
    brain extraction, :func:`brain_extract_t1w` with ``return_affine``) replaces the
    centre-of-mass initialisation and the affine stage: SyN starts from it (whole participant
    run with it in docs/registration.md).

    With ``qc_file`` the correlation of the fixed image and the warped template inside the
    fixed brain (:func:`registration_quality`, ``qc_name`` defaults to ``atlas_to_<dst>``) is
    written there as JSON.

    Parameters
    ----------
    t1w_brain : path
        Skull-stripped T1w (the fixed image; a GRE magnitude for sessions without T1w).
    template_brain : path
        Skull-stripped atlas template (the moving image).
    out_dir : path, default "."
        Output folder.
    src, dst : str
        Space names of the transform files.
    resolution_mm : float, optional
        Estimation grid (default: see above).
    type_of_transform : str, default "SyN"
        antspyx transform type.
    reg_iterations : tuple of int, default :data:`SYN_ITERATIONS` = (40, 10, 0)
        SyN iterations per level.
    fixed_mask : path, optional
        Brain mask of the fixed image.
    syn_metric : {"CC", "mattes"}, default :data:`SYN_METRIC`
        SyN similarity metric.
    crop : bool, default True
        Crop both images to their content plus :data:`CROP_MARGIN_MM`.
    seed : int or None, default DEFAULT_SEED
        ``--random-seed`` of antsRegistration (``None``: unseeded).
    num_threads : int, default 1
        ITK threads for the call.
    qc_name : str, optional
        Registration name of the quality metrics (default ``atlas_to_<dst>``).
    qc_file : path, optional
        Write the registration quality JSON there.
    initial_affine : path, optional
        Affine (template -> fixed) to start SyN from, instead of the centre-of-mass
        initialisation and the affine stage.
    region_labels : path, optional
        Atlas label image (same space as ``template_brain``): run the finest optimised level
        on the labels' region only (see above). ``None``: the whole brain.
    region_margin_mm : float, default :data:`SYN_REGION_MARGIN_MM` (20)
        Margin around the placed labels.

    Returns
    -------
    fwd_h5 : str
        ``from-<src>_to-<dst>`` composite transform: resamples template-space images into the
        T1w.
    inv_h5 : str
        The reverse.
    warped_file : str
        Template resampled into the T1w (uncompressed ``.nii``: a work-folder intermediate
        for inspection; no output is made from it, so no time goes to compressing it). With
        ``qc_file`` it is computed only over the region the quality metrics judge (its box
        + 3 voxels) and is zero elsewhere.

    Raises
    ------
    ValueError
        For an unknown ``syn_metric``.
    """
    metric = str(syn_metric).lower()
    if metric not in ("cc", "mattes"):
        raise ValueError(f"syn_metric must be 'CC' or 'mattes', not {syn_metric!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with ants_environment(seed, num_threads) as ants:
        fixed_full = _read(t1w_brain)
        if fixed_mask is not None:  # skull-strip the fixed image with its mask
            fmask = ants.resample_image_to_target(
                _read(fixed_mask), fixed_full, interp_type="genericLabel"
            )
            fixed_full = fixed_full * (fmask > 0.5)
        moving_full = _read(template_brain)
        est_mm, its = (None, tuple(reg_iterations))
        if type_of_transform == "SyN":
            est_mm, its = _estimation_schedule(min(fixed_full.spacing), reg_iterations,
                                               resolution_mm)
        coarse = (not resolution_mm and est_mm is not None
                  and est_mm > min(fixed_full.spacing) + 1e-6)
        if coarse:
            fixed = _normalise(_coarsen(fixed_full, est_mm))
            moving = _normalise(_coarsen(moving_full, est_mm))
        else:
            fixed = _normalise(_at_resolution(fixed_full, resolution_mm))
            moving = _normalise(_at_resolution(moving_full, resolution_mm))
        if crop:
            fixed, moving = _crop_to_content(fixed), _crop_to_content(moving)
        prefix = str(out_dir / f"{src}_to_{dst}_")
        syn_kw = dict(
            syn_metric="CC" if metric == "cc" else "mattes",
            syn_sampling=SYN_CC_RADIUS if metric == "cc" else SYN_MI_BINS,
            write_composite_transform=True,
        )
        regional = region_labels is not None and type_of_transform == "SyN"
        # transforms SyN starts from (antspy order); the affine, then with regional also the
        # coarse levels' warp
        affine = str(initial_affine) if initial_affine and type_of_transform == "SyN" else None
        if affine is None and (coarse or regional):
            init = _com_translation(fixed, moving, str(out_dir / "com_init.mat"))
            # the affine stage of antspy's "SyN" (Mattes MI, 20 % regular sampling, levels
            # 4/2/2 mm with smoothing 3/2/1 mm) at the estimation grid, then SyN alone from it
            grid = est_mm if coarse else min(fixed.spacing)
            aff = ants.registration(
                fixed, moving, type_of_transform="Affine", initial_transform=[init],
                aff_metric="mattes", aff_sampling=32, aff_random_sampling_rate=0.2,
                aff_iterations=(2100, 1200, 1200),
                aff_shrink_factors=tuple(max(1, int(round(4.0 / grid * f)))
                                         for f in (1.0, 0.5, 0.5)),
                aff_smoothing_sigmas=tuple(round(x / grid, 3) for x in (3.0, 2.0, 1.0)),
                outprefix=prefix + "affine_",
            )
            affine = aff["fwdtransforms"][-1]
        if regional:
            # the coarse levels on the whole brain, then the finest optimised level (the costly
            # one) on the fixed image cropped to the atlas labels as the coarse warp places them
            # plus region_margin_mm: the SyN's domain is the fixed image and ANTs holds its
            # displacement at zero on the domain's border, so only the (small) refinement is
            # bounded by the crop, not the whole warp
            last = max((k for k, n in enumerate(its) if n), default=0)
            inv_chain = [affine]
            if last > 0:
                coarse_reg = ants.registration(
                    fixed, moving, type_of_transform="SyNOnly", initial_transform=[affine],
                    reg_iterations=tuple(its[:last]) + (0,) * (len(its) - last),
                    outprefix=str(out_dir / f"coarse{src}_to_{dst}_"),
                    **{**syn_kw, "write_composite_transform": False},
                )
                affine, its = coarse_reg["fwdtransforms"], tuple(its[last:])
                inv_chain = coarse_reg["invtransforms"]
            labels = _read(region_labels)
            region = labels.new_image_like((labels.view() > 0).astype("float32"))
            placed = ants.apply_transforms(fixed, region, _as_list(affine),
                                           interpolator="genericLabel")
            fixed = _crop_to_content(fixed, region_margin_mm, mask=placed.view() > 0.5)
            reg = ants.registration(
                fixed, moving, type_of_transform="SyNOnly", initial_transform=_as_list(affine),
                reg_iterations=its, outprefix=prefix,
                **{**syn_kw, "write_composite_transform": False},
            )
            # antsRegistration writes no inverse composite when an initial transform is a
            # displacement field: assemble both composites from the stages (this stage's
            # fields carry the highest index of its outputs)
            stem = re.escape(Path(prefix).name)
            own = max(int(m.group(1)) for t in (*reg["fwdtransforms"], *reg["invtransforms"])
                      if (m := re.match(stem + r"(\d+)(?:Inverse)?Warp\.nii\.gz$", Path(t).name)))
            warp, iwarp = f"{prefix}{own}Warp.nii.gz", f"{prefix}{own}InverseWarp.nii.gz"
            reg = {"fwdtransforms": _write_composite([warp] + _as_list(affine),
                                                     prefix + "Composite.h5"),
                   "invtransforms": _write_composite(_as_list(inv_chain) + [iwarp],
                                                     prefix + "InverseComposite.h5",
                                                     invert_first=True)}
        elif affine is not None:
            reg = ants.registration(
                fixed, moving, type_of_transform="SyNOnly", initial_transform=_as_list(affine),
                reg_iterations=its, outprefix=prefix, **syn_kw,
            )
        else:
            init = initial_affine or _com_translation(fixed, moving, str(out_dir / "com_init.mat"))
            reg = ants.registration(
                fixed,
                moving,
                type_of_transform=type_of_transform,
                initial_transform=[str(init)],
                reg_iterations=tuple(reg_iterations),
                outprefix=prefix,
                **syn_kw,
            )
        fwd = out_dir / xfm_name(src, dst, "h5")
        inv = out_dir / xfm_name(dst, src, "h5")
        shutil.copyfile(reg["fwdtransforms"], fwd)
        shutil.copyfile(reg["invtransforms"], inv)
        if qc_file:
            name = qc_name or f"atlas_to_{'t1w' if dst == 'T1w' else dst.lower()}"
            judged = fixed_full.view() > 0
            if regional:  # judge the warp where it is nonlinear: the SyN's (cropped) domain
                box = ants.resample_image_to_target(
                    fixed.new_image_like(np.ones(fixed.shape, "float32")), fixed_full,
                    interp_type="nearestNeighbor")
                judged &= box.view() > 0.5
            # the warped atlas template only where registration_quality reads it (the judged
            # region's box + 3 voxels; zero elsewhere in the work-folder image)
            warped = _warp_inside(fixed_full, moving_full, str(fwd), judged)
            metrics = registration_quality(name, fixed_full.view(), warped,
                                           fixed_mask=judged,
                                           voxel_size=tuple(fixed_full.spacing))
            write_quality(qc_file, name, metrics)
        else:
            warped = ants.apply_transforms(fixed_full, moving_full, [str(fwd)],
                                           interpolator="linear").numpy()
    warped_file = _save_like(
        warped, t1w_brain, out_dir / f"space-{dst}_desc-{src}_T1w.nii", np.float32
    )
    return str(fwd.resolve()), str(inv.resolve()), warped_file


def register_rigid(
    fixed,
    moving,
    out_dir=".",
    src="moving",
    dst="fixed",
    fixed_mask=None,
    moving_mask=None,
    resolution_mm=None,
    type_of_transform="Rigid",
    seed=DEFAULT_SEED,
    num_threads=1,
    qc_name=None,
    qc_file=None,
    max_samples=None,
):
    """Rigid (or affine) Mattes mutual-information registration of ``moving`` to ``fixed``.

    Works across contrasts, fields of view and resolutions: both images are multiplied by
    their brain masks when given (so the metric sees brain only) and cropped to the mask's
    bounding box plus :data:`RIGID_CROP_MARGIN_MM` (only zeros are dropped), resampled to
    ``resolution_mm``, brought to ``RIGID_RESOLUTION_MM`` (2 mm) when finer (anti-aliased),
    intensity-normalised and initialised by aligning their centres of mass; a 2-level pyramid
    (4 and 2 mm: shrink 2/1, smoothing 1/0 voxels, 200/100 iterations) then refines the
    transform (Mattes D, et al. PET-CT image registration in the chest using free-form
    deformations. IEEE Trans Med Imaging 2003;22:120-128).

    With ``qc_file`` the registration quality (:func:`registration_quality` for ``qc_name``,
    e.g. ``"gre_to_t1w"``) is computed on the fixed grid and written there as JSON
    (:func:`write_quality`).

    The GRE -> T1w registration of the workflow is this function with ``src="MEGRE"``,
    ``dst="T1w"`` and ``qc_name="gre_to_t1w"`` (the ``gre_to_t1w`` node).

    Parameters
    ----------
    fixed, moving : path
        Images (a 4-D image uses its first volume).
    out_dir : path, default "."
        Output folder.
    src, dst : str
        Space names of the transform file.
    fixed_mask, moving_mask : path, optional
        Brain masks of the two images.
    resolution_mm : float, optional
        Resample both images to this spacing first.
    type_of_transform : {"Rigid", "Affine", "Similarity"}, default "Rigid"
        antspyx transform type.
    seed : int or None, default DEFAULT_SEED
        ``--random-seed`` of antsRegistration (``None``: unseeded).
    num_threads : int, default 1
        ITK threads for the call.
    qc_name : str, optional
        Registration name of the quality metrics (default ``gre_to_t1w``).
    qc_file : path, optional
        Write the registration quality JSON there.
    max_samples : int, optional
        About how many points the MI metric samples (default :data:`RIGID_MAX_SAMPLES`; the
        same-contrast T1w registrations use :data:`RIGID_MAX_SAMPLES_T1W`).

    Returns
    -------
    xfm_mat : str
        ``from-<src>_to-<dst>`` ``.mat``: resamples the moving image into the fixed grid.
    warped_file : str
        The moving image resampled into the fixed grid (uncompressed ``.nii``: a work-folder
        intermediate for inspection; no output is made from it, so no time goes to
        compressing it).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with ants_environment(seed, num_threads) as ants:
        f_full = _read(fixed)
        m_full = _read(moving)
        f_img, m_img = f_full, m_full
        fm = mm = None
        fm_in = None  # the fixed mask as booleans, converted once
        if fixed_mask is not None:
            fm = _mask_on(fixed_mask, f_full)
            fm_in = fm.view() > 0.5
            f_img, _ = _masked_crop(f_full, fm, RIGID_CROP_MARGIN_MM, fm_in)
        if moving_mask is not None:
            # the mask cropped with the image: all of its voxels and a margin of zeros, so a
            # label interpolation of it gives what the whole mask gives (_crop_to_labels)
            m_img, mm = _masked_crop(m_full, _mask_on(moving_mask, m_full),
                                     RIGID_CROP_MARGIN_MM)
        f_img = _normalise(_coarsen(_at_resolution(f_img, resolution_mm), RIGID_RESOLUTION_MM))
        m_img = _normalise(_coarsen(_at_resolution(m_img, resolution_mm), RIGID_RESOLUTION_MM))
        init = _com_translation(f_img, m_img, str(out_dir / "com_init.mat"))
        reg = ants.registration(
            f_img,
            m_img,
            type_of_transform=type_of_transform,
            initial_transform=[init],
            aff_metric="mattes",
            aff_sampling=32,
            aff_random_sampling_rate=_sampling_rate(f_img, max_samples),
            aff_iterations=RIGID_ITERATIONS,
            aff_shrink_factors=RIGID_SHRINK,
            aff_smoothing_sigmas=RIGID_SMOOTH,
            outprefix=str(out_dir / f"{src}_to_{dst}_"),
        )
        xfm = out_dir / xfm_name(src, dst, "mat")
        shutil.copyfile(reg["fwdtransforms"][-1], xfm)
        warped = _warp_inside(f_full, m_full, str(xfm), fm_in)
        if qc_file:
            wmask = wimg = None
            if mm is not None:
                wimg = ants.apply_transforms(f_full, mm, [str(xfm)], interpolator="genericLabel")
                wmask = wimg.view()  # read only, while wimg lives
            metrics = registration_quality(
                qc_name or "gre_to_t1w", f_full.view(), warped,
                fixed_mask=fm_in, warped_mask=wmask,
                voxel_size=tuple(f_full.spacing))
            del wmask, wimg
            write_quality(qc_file, qc_name or "gre_to_t1w", metrics)
    warped_file = _save_like(
        warped, fixed, out_dir / f"space-{dst}_desc-{src}_warped.nii", np.float32
    )
    return str(xfm.resolve()), warped_file


def _masked_crop(img, mask_img, margin_mm, inside=None):
    """``_crop_to_content(img * mask_img, margin_mm, mask=mask_img > 0.5)``, cropping first,
    and the mask on the same crop.

    The same voxels (the product is element-wise), without multiplying and copying the whole
    field of view first (a 1 mm head is 4 times its brain's box). ``inside``: ``mask_img > 0.5``
    as an array, when the caller has it already. Returns ``(masked image, mask)``, both
    cropped (or both whole when the crop would keep everything).
    """
    box = _crop_box(img, margin_mm, mask_img.view() > 0.5 if inside is None else inside)
    if box is None:
        return img * mask_img, mask_img
    ants = _ants()
    mask_c = ants.crop_indices(mask_img, *box)
    return ants.crop_indices(img, *box) * mask_c, mask_c


def _warp_in_domain(reference, labels, transforms, domain, margin=2):
    """``labels`` resampled (``genericLabel``) into ``reference``'s grid as an array, computed
    only over the voxels of ``reference`` within the physical bounding box of ``domain``
    (an image) plus ``margin`` voxels, and zero elsewhere.

    For callers that know the labels cannot land outside ``domain`` (brain extraction: the
    SyN's cropped fixed image); the values inside are the whole grid's (the cropped reference
    keeps the physical coordinates of its voxels).
    """
    shape = np.asarray(reference.shape, dtype=int)
    corners = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], float)
    corners = corners * (np.asarray(domain.shape, float) - 1)
    phys = (np.asarray(domain.direction) @ (corners * np.asarray(domain.spacing)).T).T \
        + np.asarray(domain.origin)
    idx = (np.linalg.inv(np.asarray(reference.direction)) @ (phys - np.asarray(reference.origin)).T).T
    idx = idx / np.asarray(reference.spacing)
    lo = np.maximum(np.floor(idx.min(axis=0)).astype(int) - margin, 0)
    hi = np.minimum(np.ceil(idx.max(axis=0)).astype(int) + margin + 1, shape)
    if np.any(hi <= lo):
        return np.zeros(tuple(shape), np.float32)
    return _resample_in_box(reference, labels, transforms, lo, hi, "genericLabel")


def _warp_inside(fixed, moving, xfm, fixed_mask=None, margin=3):
    """``moving`` resampled (linear) into ``fixed``'s grid as an array, computed only inside the
    box of ``fixed_mask`` plus ``margin`` voxels (zero outside; the whole grid without a mask).

    :func:`registration_quality` reads the warped image only inside the box of ``fixed_mask``
    (grown by 3 voxels), so its metrics are those of the whole-grid warp.
    """
    bounds = None if fixed_mask is None else mask_bounds(fixed_mask)
    if bounds is None:
        return _resample_in_box(fixed, moving, [xfm], None, None, "linear")
    shape = tuple(int(n) for n in fixed.shape)
    lo = [max(0, a - margin) for a in bounds[0]]
    hi = [min(n, b + margin + 1) for n, b in zip(shape, bounds[1])]
    return _resample_in_box(fixed, moving, [xfm], lo, hi, "linear")


def _resample_in_box(reference, moving, transforms, lo, hi, interpolator, invert=None):
    """``moving`` resampled through ``transforms`` into ``reference``'s grid, as a float32
    array computed only over the index box ``lo:hi`` of that grid and zero elsewhere (the whole
    grid for ``lo=None``; no transforms: through the headers).

    The cropped reference keeps the physical coordinates of its voxels, so the values inside
    the box are the whole grid's; callers choose a box outside which the result is zero or
    unread (:func:`_warp_inside`, :func:`_warp_in_domain`, :func:`compose_and_apply`).
    """
    ants = _ants()
    whole = lo is None or (all(a == 0 for a in lo)
                           and all(int(b) == n for b, n in zip(hi, reference.shape)))
    ref = reference if whole else ants.crop_indices(reference, [int(a) for a in lo],
                                                    [int(b) for b in hi])
    if transforms:
        part = ants.apply_transforms(ref, moving, list(transforms), interpolator=interpolator,
                                     whichtoinvert=invert)
    else:
        part = ants.resample_image_to_target(moving, ref, interp_type=interpolator)
    if whole:
        return part.numpy()
    out = np.zeros(tuple(int(n) for n in reference.shape), np.float32)
    out[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))] = part.view()
    return out


def build_subject_template(
    t1w_list: Sequence,
    out_dir=".",
    iterations=TEMPLATE_ITERATIONS,
    resolution_mm=None,
    pad_mm=10.0,
    seed=DEFAULT_SEED,
    num_threads=1,
    return_transforms=False,
):
    """Unbiased within-subject template by iterative rigid alignment and averaging.

    Algorithm (the rigid case of ANTs' template construction, Avants et al. 2010
    NeuroImage 49:2457; FreeSurfer's longitudinal "base", Reuter et al. 2012 NeuroImage 61:1402):

    0. every image is intensity-normalised (99th percentile = 1) and translated so that its
       centre of mass sits at the mean centre of mass; the first average is taken on a grid
       spanning the first image padded by ``pad_mm`` (resampled to ``resolution_mm`` when
       given). The grid only sets sampling; no session defines the template position.
    1. each iteration rigidly registers every session to the current average (Mattes MI),
       averages the resampled images, and moves the average by the inverse of the mean of the
       rigid transforms (:func:`_average_rigid`), so the template sits at the
       average head position, not at any session's.

    The registrations are estimated at :data:`RIGID_RESOLUTION_MM`, so every average but the
    last (the initial one included) is taken from the anti-aliased, coarsened sessions on a
    coarse copy of the grid; only the last one is resampled at the template's resolution
    (with two sessions and two iterations, five fewer full-resolution resamplings).

    The session -> template transforms are those of the last iteration composed with the final
    re-centring (``T_k o M^-1``): exactly the maps the final average was made with, the way
    FreeSurfer's ``mri_robust_template`` returns its per-input transforms (Reuter et al. 2012)
    and ANTs' template construction keeps its last warps. Registering each session to the
    finished template again would estimate the same map a second time.

    ``iterations >= 2`` is enforced. We do not use ``ants.build_template``: with a rigid
    transform it initialises by unaligned averaging, always sharpens the average, prints, and
    returns no transforms; this routine is the same update rule with a centred initialisation
    (timed side by side in ``benchmarks/registration.py``).

    Parameters
    ----------
    t1w_list : sequence of path
        The sessions' T1w images (at least one).
    out_dir : path, default "."
        Output folder.
    iterations : int, default :data:`TEMPLATE_ITERATIONS` (2)
        Rigid alignment iterations (at least 2 are run). Each iteration registers every
        session (Mattes MI with :data:`RIGID_MAX_SAMPLES_T1W` points).
    resolution_mm : float, optional
        Spacing of the template grid (default: the first image's).
    pad_mm : float, default 10.0
        Padding of the template grid around the first image.
    seed : int or None, default DEFAULT_SEED
        ``--random-seed`` of antsRegistration (``None``: unseeded).
    num_threads : int, default 1
        ITK threads for the call.
    return_transforms : bool, default False
        Also return the session -> template transforms.

    Returns
    -------
    str
        ``desc-template_T1w.nii.gz`` (float32).
    list of str
        Only with ``return_transforms``: per input (same order), a rigid ``.mat``
        (``tpl_xfm_<k>.mat``) that resamples that T1w into the template grid (ITK convention:
        it maps template points to T1w points, like the ``out_transform`` of
        :func:`register_rigid` with the template as the fixed image).

    Raises
    ------
    ValueError
        For an empty ``t1w_list``.
    """
    if len(t1w_list) < 1:
        raise ValueError("build_subject_template needs at least one image")
    iterations = max(2, int(iterations))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with ants_environment(seed, num_threads) as ants:
        imgs = [_normalise(_read(p)) for p in t1w_list]
        first = imgs[0]
        spacing = (
            tuple(float(resolution_mm) for _ in range(3)) if resolution_mm else first.spacing
        )
        # padded grid around the first image (sampling only)
        pad = [int(np.ceil(pad_mm / s)) for s in first.spacing]
        grid = ants.pad_image(first, pad_width=[(p, p) for p in pad])
        if not np.allclose(grid.spacing, spacing, rtol=0, atol=1e-9):
            grid = ants.resample_image(grid, spacing, use_voxels=False, interp_type=0)
        coms = np.array([ants.get_center_of_mass(im) for im in imgs])
        mean_com = coms.mean(axis=0)
        # only the last average is needed at the template's resolution: the earlier ones are
        # registration targets, which are estimated at RIGID_RESOLUTION_MM anyway, so they are
        # averaged from the coarsened sessions on a coarse copy of the grid
        many = len(imgs) > 1
        coarse = [_coarsen(im, RIGID_RESOLUTION_MM) for im in imgs] if many else imgs
        # the grids are references (geometry) and their values only give zeros (x * 0, all
        # finite): the coarse grid is resampled without _coarsen's smoothing (same geometry)
        grid_c = (ants.resample_image(grid, (RIGID_RESOLUTION_MM,) * 3, use_voxels=False,
                                      interp_type=0)
                  if many and min(grid.spacing) < RIGID_RESOLUTION_MM - 1e-6 else grid)
        # the averages are summed as arrays (the same float32 operations as ANTs' image
        # arithmetic, which converts both images to arrays and back on every operator)
        avg_sum = grid_c.view() * 0
        final = []  # 4x4 maps template point -> session point (ITK/LPS)
        for k, im in enumerate(coarse):
            tx = ants.create_ants_transform(
                transform_type="Euler3DTransform",
                dimension=3,
                center=list(mean_com),
                translation=list(coms[k] - mean_com),
            )
            fn = str(out_dir / f"init_{k:03d}.mat")
            ants.write_transform(tx, fn)
            shift = np.eye(4)  # pure translation (centre irrelevant)
            shift[:3, 3] = coms[k] - mean_com
            final.append(shift)
            moved = ants.apply_transforms(grid_c, im, [fn])
            avg_sum = avg_sum + moved.view() / len(imgs)
        avg = grid_c.new_image_like(avg_sum)
        if many:
            for it in range(iterations):
                last = it == iterations - 1
                ref = grid if last else grid_c
                xfms, new_sum = [], ref.view() * 0
                avg_c = avg  # the previous (coarse) average
                for k, im in enumerate(imgs):
                    prefix = str(out_dir / f"iter{it}_img{k:03d}_")
                    im_c = coarse[k]
                    init = _com_translation(avg_c, im_c, prefix + "com.mat")
                    reg = ants.registration(
                        avg_c,
                        im_c,
                        type_of_transform="Rigid",
                        initial_transform=[init],
                        aff_metric="mattes",
                        aff_random_sampling_rate=_sampling_rate(avg_c, RIGID_MAX_SAMPLES_T1W),
                        aff_iterations=RIGID_ITERATIONS,
                        aff_shrink_factors=RIGID_SHRINK,
                        aff_smoothing_sigmas=RIGID_SMOOTH,
                        outprefix=prefix,
                    )
                    if len(reg["fwdtransforms"]) != 1:  # the initial transform is collapsed in
                        raise RuntimeError(
                            f"expected one rigid transform, got {reg['fwdtransforms']}")
                    xfms.append(ants.read_transform(reg["fwdtransforms"][-1]))
                    # the last average at the template's own (full) resolution
                    moved = ants.apply_transforms(
                        ref, im if last else im_c, reg["fwdtransforms"], interpolator="linear")
                    new_sum = new_sum + moved.view() / len(imgs)
                new = ref.new_image_like(new_sum)
                afn = str(out_dir / f"iter{it}_mean.mat")
                mean_tx = _average_rigid(xfms)
                ants.write_transform(mean_tx, afn)
                avg = ants.apply_transforms(new, new, [afn], whichtoinvert=[True])
                # avg(x) = new(M^-1 x) = mean_k im_k(T_k(M^-1 x))
                m_inv = np.linalg.inv(_affine_matrix(mean_tx))
                final = [_affine_matrix(t) @ m_inv for t in xfms]
        out = out_dir / "desc-template_T1w.nii.gz"
        ants.image_write(avg.astype("float32"), str(out))
        xfm_files = []
        for k, mat in enumerate(final):
            fn = out_dir / f"tpl_xfm_{k:03d}.mat"
            ants.write_transform(ants.create_ants_transform(
                transform_type="AffineTransform", dimension=3, matrix=mat[:3, :3],
                translation=mat[:3, 3]), str(fn))
            xfm_files.append(str(fn.resolve()))
    if return_transforms:
        return str(out.resolve()), xfm_files
    return str(out.resolve())


def template_session_transform(
    template,
    t1w,
    xfm,
    out_dir=".",
    src="T1w",
    dst="individual",
    qc_name="t1w_to_template",
    qc_file=None,
    num_threads=1,
):
    """Publish one session's T1w -> template transform from :func:`build_subject_template`.

    Copies ``xfm`` (``return_transforms=True`` output) under its BIDS-style name, resamples
    the T1w into the template grid (linear) and, with ``qc_file``, writes the registration
    quality (:func:`registration_quality` for ``qc_name``, template as the fixed image, as
    :func:`register_rigid` would for a registration to the template). No registration runs.

    Parameters
    ----------
    template : path
        The subject template (fixed grid).
    t1w : path
        The session's T1w.
    xfm : path
        Its transform from the template construction (template point -> T1w point).
    out_dir : path, default "."
        Output folder.
    src, dst : str
        Space names of the transform file.
    qc_name : str, default "t1w_to_template"
        Registration name of the quality metrics.
    qc_file : path, optional
        Write the registration quality JSON there.
    num_threads : int, default 1
        ITK threads for the resampling.

    Returns
    -------
    xfm_mat : str
        ``from-<src>_to-<dst>`` ``.mat``.
    warped_file : str
        The T1w resampled into the template grid (uncompressed ``.nii``: a work-folder
        intermediate for inspection; no output is made from it, so no time goes to
        compressing it).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_xfm = out_dir / xfm_name(src, dst, "mat")
    shutil.copyfile(str(xfm), out_xfm)
    with ants_environment(None, num_threads) as ants:
        f_full = _read(template)
        warped = ants.apply_transforms(f_full, _read(t1w), [str(out_xfm)], interpolator="linear")
        if qc_file:
            metrics = registration_quality(qc_name, f_full.view(), warped.view(),
                                           voxel_size=tuple(f_full.spacing))
            write_quality(qc_file, qc_name, metrics)
    warped_file = _save_like(
        warped.view(), template, out_dir / f"space-{dst}_desc-{src}_warped.nii", np.float32
    )
    return str(out_xfm.resolve()), warped_file


#: voxels kept around the labels by :func:`_crop_to_labels` (>= the interpolators' support)
LABEL_CROP_MARGIN = 4


def _crop_to_labels(img, margin=LABEL_CROP_MARGIN):
    """Crop a label image to its non-zero bounding box plus ``margin`` voxels.

    Physical coordinates are kept. For label interpolators the output is unchanged: a point
    whose neighbourhood holds no label is 0 inside the crop and outside the image alike, and
    every labelled neighbourhood lies inside the crop. The resampling is faster because
    points that land outside the (small) crop skip the per-label interpolation; the DGM
    atlas's crop is 3.6 % of its grid.
    """
    arr = img.view()  # read only (img lives on)
    bounds = mask_bounds(arr != 0)
    if bounds is None:
        return img
    lo = np.maximum(np.asarray(bounds[0]) - margin, 0)
    hi = np.minimum(np.asarray(bounds[1]) + margin + 1, arr.shape)
    if np.all(lo == 0) and np.all(hi == arr.shape):
        return img
    return _ants().crop_indices(img, [int(x) for x in lo], [int(x) for x in hi])


def compose_and_apply(
    labels,
    reference,
    transforms: Sequence,
    invert: Sequence[bool] | None = None,
    out_file="labels.nii.gz",
    mask=None,
    interpolator="genericLabel",
):
    """Resample ``labels`` into ``reference`` through a chain of transforms, in one step.

    ``transforms`` are ordered as for antsApplyTransforms: first the transform nearest the
    reference grid, last the one nearest the labels; ``invert[i]`` inverts the i-th (allowed
    for linear ``.mat`` transforms; use the inverse ``.h5`` for a SyN). With ``mask`` (a binary
    image on the reference grid) labels outside it are set to 0. The output has the exact
    header/affine of ``reference`` (int16 for label interpolators). With a label interpolator
    ``labels`` is first cropped to its labels (:func:`_crop_to_labels`; same output, about
    2-3x faster for the DGM atlas).

    Parameters
    ----------
    labels : path
        Image to resample (labels or, with another ``interpolator``, intensities).
    reference : path
        Image whose grid the output takes.
    transforms : sequence of path
        Transform chain (empty: resample through the headers only).
    invert : sequence of bool, optional
        One flag per transform.
    out_file : path, default "labels.nii.gz"
        Output file.
    mask : path, optional
        Binary image on the reference grid.
    interpolator : str, default "genericLabel"
        antsApplyTransforms interpolator.

    Returns
    -------
    str
        Path of ``out_file``.

    Raises
    ------
    ValueError
        One ``invert`` flag per transform is needed; ``mask`` must be on the reference grid.
    """
    transforms = [str(t) for t in transforms]
    invert = [bool(x) for x in (invert or [False] * len(transforms))]
    if len(invert) != len(transforms):
        raise ValueError("invert must have one flag per transform")
    ref = _read(reference)
    mov = _read(labels)
    is_label = interpolator in ("genericLabel", "nearestNeighbor", "multiLabel")
    if is_label:
        mov = _crop_to_labels(mov)
    m = box = None
    if mask is not None:
        m = np.asarray(nb.load(str(mask)).dataobj)
        if m.ndim == 4:
            m = m[..., 0]
        if m.shape != tuple(ref.shape):
            raise ValueError(f"mask shape {m.shape} != reference shape {tuple(ref.shape)}")
        # everything outside the mask is set to 0: resample only over the mask's box (the
        # cropped reference keeps its voxels' physical coordinates, so the values inside are
        # the whole grid's)
        bounds = mask_bounds(m > 0)
        if bounds is not None:
            box = (list(bounds[0]), [b + 1 for b in bounds[1]])
    arr = _resample_in_box(ref, mov, transforms, *(box or (None, None)), interpolator,
                           invert=invert)
    if is_label:
        arr = np.rint(arr).astype(np.int16)
    if m is not None:
        arr = np.where(m > 0, arr, 0).astype(arr.dtype)
    return _save_like(arr, reference, out_file, np.int16 if is_label else np.float32)


def map_points(points_ras: np.ndarray, transforms: Sequence, invert: Sequence[bool] | None = None
               ) -> np.ndarray:
    """Carry world points through a transform chain, as :func:`compose_and_apply` carries voxels.

    ``transforms`` and ``invert`` are those that resample an image *into* the grid the points
    lie on (antsApplyTransforms order); the points land where that resampling reads the moving
    image, i.e. in the moving image's space. (ANTs maps points the opposite way to images: the
    forward transforms of a registration take fixed-space points to moving space.)

    Parameters
    ----------
    points_ras : ndarray, shape (N, 3)
        World points (NIfTI RAS, mm) in the reference space of the chain.
    transforms : sequence of path
        Transform chain (empty: the points are returned unchanged).
    invert : sequence of bool, optional
        One flag per transform (linear transforms only).

    Returns
    -------
    ndarray, shape (N, 3)
        The points in the moving space (RAS, mm).

    Raises
    ------
    ValueError
        One ``invert`` flag per transform is needed.
    """
    import pandas as pd

    transforms = [str(t) for t in transforms]
    invert = [bool(x) for x in (invert or [False] * len(transforms))]
    if len(invert) != len(transforms):
        raise ValueError("invert must have one flag per transform")
    pts = np.asarray(points_ras, float).copy()
    if not transforms:
        return pts
    lps = pts * [-1.0, -1.0, 1.0]  # ITK physical space is LPS
    df = pd.DataFrame(lps, columns=["x", "y", "z"])
    out = _ants().apply_transforms_to_points(3, df, transforms, whichtoinvert=invert)
    return out[["x", "y", "z"]].to_numpy(float) * [-1.0, -1.0, 1.0]


def _mask_file_points(mask):
    """World (RAS) points of a mask file's voxels (:func:`qsmprep.b0_orientation.mask_points`)."""
    from .b0_orientation import mask_points

    img = nb.load(str(mask))
    arr = np.asarray(img.dataobj)
    if arr.ndim == 4:
        arr = arr[..., 0]
    return mask_points(arr > 0, img.affine)


def b0_orientation(mask, transforms: Sequence, invert: Sequence[bool] | None = None,
                   out_file="b0_orientation.json") -> str:
    """A session's B0 direction in the frame its transform chain leads to (JSON file).

    Points of ``mask`` (the GRE brain mask) are carried through the chain that brings the atlas
    labels into the GRE grid (:func:`map_points`, same ``transforms`` and ``invert``), and
    :func:`qsmprep.b0_orientation.session_orientation` fits the rotation and turns B0 (the
    scanner z axis) into the atlas frame.

    Parameters
    ----------
    mask : path
        Binary image on the GRE grid (its affine is the session's world frame).
    transforms, invert : sequence
        The labels' chain (:func:`compose_and_apply` order).
    out_file : path, default "b0_orientation.json"

    Returns
    -------
    str
        ``out_file``: :func:`~qsmprep.b0_orientation.session_orientation`'s keys plus
        ``Frame`` ("atlas") and ``Method``.
    """
    import json

    from . import b0_orientation as bo

    pts = _mask_file_points(mask)
    doc = bo.session_orientation(pts, map_points(pts, transforms, invert))
    doc.update(Frame="atlas", Method=(
        "B0 = scanner z axis of the GRE world frame, rotated into the atlas frame by the "
        "least-squares rigid fit (Kabsch 1976) of GRE brain-mask points to their images through "
        "this session's atlas-label transform chain"))
    with open(out_file, "w") as fh:
        json.dump(doc, fh, indent=2)
    return str(out_file)


def b0_angle_between_sessions(baseline_mag, followup_mag, baseline_mask, followup_mask,
                              out_dir=".", seed=DEFAULT_SEED, num_threads=1,
                              out_file="b0_change.json") -> str:
    """How much the head turned against B0 between two sessions (JSON file).

    A masked rigid registration of the follow-up GRE magnitude to the baseline one
    (:func:`register_rigid`, same contrast) maps the baseline brain-mask points into the
    follow-up's world frame; the rotation fitted to the pairs
    (:func:`qsmprep.b0_orientation.session_orientation`) carries the follow-up's B0 (its
    scanner z axis) into the baseline's world frame, where the baseline's B0 is the z axis.
    This avoids the atlas registrations altogether: on the independent heads the angle came
    out within 0.01 degrees of the 8-degree tilt, against 1.4 degrees off through the two
    sessions' atlas registrations (docs/registration.md).

    Parameters
    ----------
    baseline_mag, followup_mag : path
        3-D magnitude images (the sessions' registration targets).
    baseline_mask, followup_mask : path
        Their brain masks.
    out_dir : path, default "."
        Where the transform and ``out_file`` are written.
    seed, num_threads : int
        As for :func:`register_rigid`.
    out_file : str, default "b0_change.json"
        File name in ``out_dir``.

    Returns
    -------
    str
        ``out_file``: ``B0AngleDeg`` (the angle between the sessions' B0 directions in the
        head), ``FollowupB0InBaselineFrame`` (unit vector, baseline world RAS), ``Transform``
        (the rigid transform's file name) and ``Method``.
    """
    import json

    from . import b0_orientation as bo

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    xfm, _ = register_rigid(baseline_mag, followup_mag, out_dir=out_dir, src="followup",
                            dst="baseline", fixed_mask=baseline_mask, moving_mask=followup_mask,
                            seed=seed, num_threads=num_threads)
    pts = _mask_file_points(baseline_mask)
    # the transform resamples the follow-up into the baseline: it maps baseline points to
    # follow-up points; fitting follow-up -> baseline turns the follow-up's B0 into the baseline
    doc = bo.session_orientation(map_points(pts, [xfm], [False]), pts)
    result = {"B0AngleDeg": doc["TiltDeg"], "FollowupB0InBaselineFrame": doc["B0Direction"],
              "FitResidualMm": doc["FitResidualMm"], "Transform": Path(xfm).name,
              "Method": "rigid registration (Mattes MI, brain masks) of the follow-up GRE "
                        "magnitude to the baseline one; the follow-up's scanner z axis rotated "
                        "into the baseline's world frame, angle to its z axis"}
    path = out_dir / out_file
    path.write_text(json.dumps(result, indent=2))
    return str(path)
