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
import shutil
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import nibabel as nb
import numpy as np
from scipy import ndimage

LOGGER = logging.getLogger("qsmprep.registration")
DEFAULT_SEED = 20240611
TEMPLATE_SPACE = "MNI152NLin2009cAsym"
#: rigid/affine pyramid: shrink factors, smoothing (voxels), iterations per level
RIGID_SHRINK = (4, 2, 1)
RIGID_SMOOTH = (2, 1, 0)
RIGID_ITERATIONS = (200, 100, 50)
#: MI metric sampling: at most this fraction of voxels and about this many points (cost scales
#: with the number of samples; a rate of 0.25 took 3.7x longer than 0.05 for a 3 mm head, and a
#: fixed rate makes 1 mm rigid registrations ~30x dearer than 3 mm ones for no gain)
RIGID_SAMPLING = 0.1
RIGID_MAX_SAMPLES = 200_000
#: SyN similarity metric of the atlas registration (T1w template -> skull-stripped T1w):
#: neighbourhood cross-correlation of radius 2 voxels. Measured on the 1 mm simulator (one
#: subject, two sessions, same SyN schedule): pallidum Dice 0.72-0.74 (left) and 0.87 (right)
#: with Mattes MI (32 bins), 0.93-0.95 and 0.95-0.97 with CC; CC is the metric of ANTs'
#: antsRegistrationSyN.sh and of Avants et al. 2008/2011 (refs in register_atlas_to_t1w)
SYN_METRIC = "CC"
SYN_CC_RADIUS = 2
SYN_MI_BINS = 32
#: margin (mm) kept around the brain when images are cropped for SyN (the displacement field
#: lives on the fixed grid; a 250x288x260 padded template grid has 4x the voxels of the
#: brain's bounding box; cropping took CC SyN at 1 mm from 273 s to 82 s, Dice unchanged)
CROP_MARGIN_MM = 6.0


def _sampling_rate(img) -> float:
    n = float(np.prod(img.shape))
    return float(min(RIGID_SAMPLING, max(0.01, RIGID_MAX_SAMPLES / n)))


def xfm_name(src: str, dst: str, ext: str = "h5") -> str:
    """BIDS-like transform file name: ``from-<src>_to-<dst>_mode-image_xfm.<ext>``."""
    return f"from-{src}_to-{dst}_mode-image_xfm.{ext.lstrip('.')}"


def _ants():
    import ants  # imported lazily: heavy, and not needed to build workflows

    return ants


@contextmanager
def ants_environment(seed: int | None = DEFAULT_SEED, num_threads: int | None = 1):
    """Seed antsRegistration and pin the ITK thread count for the duration of a call."""
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


def _normalise(img, mask=None):
    """Scale intensities so the 99th percentile inside the (optional) mask is 1."""
    arr = img.numpy()
    vals = arr[mask.numpy() > 0] if mask is not None else arr[arr > 0]
    if vals.size == 0:
        return img
    p99 = float(np.percentile(vals, 99))
    return img / p99 if p99 > 0 else img


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


def _crop_to_content(img, margin_mm=CROP_MARGIN_MM):
    """Crop an ANTs image to the bounding box of its non-zero voxels plus ``margin_mm``.

    Physical coordinates are kept (origin moves with the crop), so transforms estimated on the
    cropped image apply to the full one. Images with no zero background are returned as is.
    """
    ants = _ants()
    arr = img.numpy()
    nz = np.argwhere(arr != 0)
    if nz.size == 0:
        return img
    pad = [int(np.ceil(margin_mm / s)) for s in img.spacing]
    lo = [max(0, int(a) - p) for a, p in zip(nz.min(0), pad)]
    hi = [min(n - 1, int(b) + p) for n, b, p in zip(arr.shape, nz.max(0), pad)]
    if all(a == 0 for a in lo) and all(b == n - 1 for b, n in zip(hi, arr.shape)):
        return img
    box = np.zeros(arr.shape, dtype="float32")
    box[tuple(slice(a, b + 1) for a, b in zip(lo, hi))] = 1.0
    return ants.crop_image(img, img.new_image_like(box), 1)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = ndimage.sum(mask, lab, index=np.arange(1, n + 1))
    return lab == (int(np.argmax(sizes)) + 1)


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
):
    """Template-based brain extraction of a T1w image (offline; no deep-learning model).

    The brain-extracted atlas template is registered to the T1w head (centre-of-mass
    initialisation, affine, then a short SyN at ``resolution_mm``, Mattes MI, metric restricted
    to the template brain plus a 6 mm margin), its brain mask
    (``template_mask``, or ``template > 0``) is carried back with ``genericLabel`` and cleaned by
    morphology (closing, hole filling, largest component). Good enough to
    skull-strip both sides of the atlas SyN, not a segmentation.

    Returns ``(brain_file, mask_file)``.
    """
    with ants_environment(seed, num_threads) as ants:
        head = _read(t1w)
        tpl = _read(template)
        if template_mask is not None:
            tmask = _read(template_mask)
        else:
            tmask = ants.from_numpy(
                (tpl.numpy() > 0).astype("float32"), tpl.origin, tpl.spacing, tpl.direction
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
        reg = ants.registration(
            fixed,
            moving,
            type_of_transform="SyN",
            initial_transform=[init],
            reg_iterations=(40, 20, 0),
            aff_metric="mattes",
            syn_metric="mattes",
            moving_mask=mmask,
            outprefix=f"{out_prefix}bex_",
        )
        warped_mask = ants.apply_transforms(
            head, tmask, reg["fwdtransforms"], interpolator="genericLabel"
        )
    mask = warped_mask.numpy() > 0.5
    vox = np.asarray(head.spacing, dtype=float)
    radius = max(1, int(round(2.0 / vox.min())))
    ball = ndimage.iterate_structure(ndimage.generate_binary_structure(3, 1), radius)
    mask = ndimage.binary_closing(mask, structure=ball, border_value=0)
    mask = ndimage.binary_fill_holes(mask)
    mask = _largest_component(mask)
    data = np.asarray(nb.load(str(t1w)).dataobj, dtype=np.float32)
    if data.ndim == 4:
        data = data[..., 0]
    mask_file = _save_like(mask.astype(np.uint8), t1w, f"{out_prefix}desc-brain_mask.nii.gz")
    brain_file = _save_like(data * mask, t1w, f"{out_prefix}desc-brain_T1w.nii.gz", np.float32)
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
    reg_iterations=(40, 20, 0),
    fixed_mask=None,
    syn_metric=SYN_METRIC,
    crop=True,
    seed=DEFAULT_SEED,
    num_threads=1,
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
      low-contrast boundaries (pallidum / internal capsule, ~6% of the WM intensity) that a
      global 32-bin histogram blurs; see ``SYN_METRIC`` for the measured Dice.
    * ``"mattes"``: Mattes mutual information (32 bins), for different contrasts (a GRE
      magnitude as the fixed image) and about 2.5x faster.

    Both images are intensity-normalised. ``fixed_mask`` (optional) skull-strips the fixed image
    first (e.g. a GRE magnitude with its QSM brain mask, for sessions without a T1w). With
    ``crop`` both images are cropped to their non-zero content plus ``CROP_MARGIN_MM`` before
    estimation (the warp is then defined on the brain's bounding box; outside it the
    displacement is zero, which only affects voxels >= 6 mm outside the brain).

    Returns ``(fwd_h5, inv_h5, warped_file)``: ``fwd_h5`` (``from-<src>_to-<dst>``) resamples
    template-space images into the T1w, ``inv_h5`` the reverse.
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
        fixed = _normalise(_at_resolution(fixed_full, resolution_mm))
        moving = _normalise(_at_resolution(_read(template_brain), resolution_mm))
        if crop:
            fixed, moving = _crop_to_content(fixed), _crop_to_content(moving)
        init = _com_translation(fixed, moving, str(out_dir / "com_init.mat"))
        reg = ants.registration(
            fixed,
            moving,
            type_of_transform=type_of_transform,
            initial_transform=[init],
            reg_iterations=tuple(reg_iterations),
            syn_metric="CC" if metric == "cc" else "mattes",
            syn_sampling=SYN_CC_RADIUS if metric == "cc" else SYN_MI_BINS,
            write_composite_transform=True,
            outprefix=str(out_dir / f"{src}_to_{dst}_"),
        )
        fwd = out_dir / xfm_name(src, dst, "h5")
        inv = out_dir / xfm_name(dst, src, "h5")
        shutil.copyfile(reg["fwdtransforms"], fwd)
        shutil.copyfile(reg["invtransforms"], inv)
        warped = ants.apply_transforms(
            fixed_full, _read(template_brain), [str(fwd)], interpolator="linear"
        )
    warped_file = _save_like(
        warped.numpy(), t1w_brain, out_dir / f"space-{dst}_desc-{src}_T1w.nii.gz", np.float32
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
):
    """Rigid (or affine) Mattes mutual-information registration of ``moving`` to ``fixed``.

    Works across contrasts, fields of view and resolutions: both images are multiplied by
    their brain masks when given (so the metric sees brain only), resampled to
    ``resolution_mm``, intensity-normalised and initialised by aligning their centres of mass;
    a 3-level pyramid (shrink 4/2/1, smoothing 2/1/0 voxels, 200/100/50 iterations) then
    refines the transform.

    Returns ``(xfm_mat, warped_file)``; the ``.mat`` (``from-<src>_to-<dst>``) resamples the
    moving image into the fixed grid.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with ants_environment(seed, num_threads) as ants:
        f_full = _read(fixed)
        m_full = _read(moving)
        f_img, m_img = f_full, m_full
        if fixed_mask is not None:
            fm = ants.resample_image_to_target(_read(fixed_mask), f_full, interp_type="genericLabel")
            f_img = f_full * (fm > 0.5)
        if moving_mask is not None:
            mm = ants.resample_image_to_target(
                _read(moving_mask), m_full, interp_type="genericLabel"
            )
            m_img = m_full * (mm > 0.5)
        f_img = _normalise(_at_resolution(f_img, resolution_mm))
        m_img = _normalise(_at_resolution(m_img, resolution_mm))
        init = _com_translation(f_img, m_img, str(out_dir / "com_init.mat"))
        reg = ants.registration(
            f_img,
            m_img,
            type_of_transform=type_of_transform,
            initial_transform=[init],
            aff_metric="mattes",
            aff_sampling=32,
            aff_random_sampling_rate=_sampling_rate(f_img),
            aff_iterations=RIGID_ITERATIONS,
            aff_shrink_factors=RIGID_SHRINK,
            aff_smoothing_sigmas=RIGID_SMOOTH,
            outprefix=str(out_dir / f"{src}_to_{dst}_"),
        )
        xfm = out_dir / xfm_name(src, dst, "mat")
        shutil.copyfile(reg["fwdtransforms"][-1], xfm)
        warped = ants.apply_transforms(f_full, m_full, [str(xfm)], interpolator="linear")
    warped_file = _save_like(
        warped.numpy(), fixed, out_dir / f"space-{dst}_desc-{src}_warped.nii.gz", np.float32
    )
    return str(xfm.resolve()), warped_file


def register_gre_to_t1w(
    mag,
    t1w,
    t1w_mask=None,
    gre_mask=None,
    out_dir=".",
    resolution_mm=None,
    seed=DEFAULT_SEED,
    num_threads=1,
):
    """Rigid GRE magnitude -> T1w registration (Mattes MI), see :func:`register_rigid`.

    ``mag`` is a 3-D magnitude (echo 1 or RSS; a 4-D file uses its first volume). Returns
    ``(from-MEGRE_to-T1w .mat, magnitude resampled into the T1w)``.
    """
    return register_rigid(
        t1w,
        mag,
        out_dir=out_dir,
        src="MEGRE",
        dst="T1w",
        fixed_mask=t1w_mask,
        moving_mask=gre_mask,
        resolution_mm=resolution_mm,
        type_of_transform="Rigid",
        seed=seed,
        num_threads=num_threads,
    )


def build_subject_template(
    t1w_list: Sequence,
    out_dir=".",
    iterations=3,
    resolution_mm=None,
    pad_mm=10.0,
    seed=DEFAULT_SEED,
    num_threads=1,
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

    ``iterations >= 2`` is enforced. We do not use ``ants.build_template``: with a rigid
    transform it initialises by unaligned averaging, always sharpens the average, prints, and
    returns no transforms; this routine is the same update rule with a centred initialisation
    (timed side by side in ``benchmarks/registration.py``).

    Returns the template file (float32 NIfTI).
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
        grid = ants.resample_image(grid, spacing, use_voxels=False, interp_type=0)
        coms = np.array([ants.get_center_of_mass(im) for im in imgs])
        mean_com = coms.mean(axis=0)
        avg = grid * 0
        for k, im in enumerate(imgs):
            tx = ants.create_ants_transform(
                transform_type="Euler3DTransform",
                dimension=3,
                center=list(mean_com),
                translation=list(coms[k] - mean_com),
            )
            fn = str(out_dir / f"init_{k:03d}.mat")
            ants.write_transform(tx, fn)
            avg = avg + ants.apply_transforms(grid, im, [fn]) / len(imgs)
        if len(imgs) > 1:
            for it in range(iterations):
                xfms, new = [], grid * 0
                for k, im in enumerate(imgs):
                    prefix = str(out_dir / f"iter{it}_img{k:03d}_")
                    init = _com_translation(avg, im, prefix + "com.mat")
                    reg = ants.registration(
                        avg,
                        im,
                        type_of_transform="Rigid",
                        initial_transform=[init],
                        aff_metric="mattes",
                        aff_random_sampling_rate=_sampling_rate(avg),
                        aff_iterations=RIGID_ITERATIONS,
                        aff_shrink_factors=RIGID_SHRINK,
                        aff_smoothing_sigmas=RIGID_SMOOTH,
                        outprefix=prefix,
                    )
                    xfms.append(ants.read_transform(reg["fwdtransforms"][-1]))
                    new = new + reg["warpedmovout"] / len(imgs)
                afn = str(out_dir / f"iter{it}_mean.mat")
                ants.write_transform(_average_rigid(xfms), afn)
                avg = ants.apply_transforms(new, new, [afn], whichtoinvert=[True])
    out = out_dir / "desc-template_T1w.nii.gz"
    ants.image_write(avg.astype("float32"), str(out))
    return str(out.resolve())


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
    header/affine of ``reference`` (int16 for label interpolators).
    """
    transforms = [str(t) for t in transforms]
    invert = [bool(x) for x in (invert or [False] * len(transforms))]
    if len(invert) != len(transforms):
        raise ValueError("invert must have one flag per transform")
    ants = _ants()
    ref = _read(reference)
    mov = _read(labels)
    if transforms:
        out = ants.apply_transforms(
            ref, mov, transforms, interpolator=interpolator, whichtoinvert=invert
        )
    else:
        out = ants.resample_image_to_target(mov, ref, interp_type=interpolator)
    arr = out.numpy()
    is_label = interpolator in ("genericLabel", "nearestNeighbor", "multiLabel")
    if is_label:
        arr = np.rint(arr).astype(np.int16)
    if mask is not None:
        m = np.asarray(nb.load(str(mask)).dataobj)
        if m.ndim == 4:
            m = m[..., 0]
        if m.shape != arr.shape:
            raise ValueError(f"mask shape {m.shape} != reference shape {arr.shape}")
        arr = np.where(m > 0, arr, 0).astype(arr.dtype)
    return _save_like(arr, reference, out_file, np.int16 if is_label else np.float32)
