"""Pre-flight pass: read every input image once, before any workflow node runs.

:func:`qsmprep.bids.collect_data` checks headers and sidecars only. Files that are truncated,
whose header announces more data than the file can hold, that are all zero, non-finite, or whose
phase is not in the units the sidecar says would otherwise be found by a node minutes later (or
never: a phase in degrees labelled ``rad`` runs to the end and gives wrong numbers). This module
reads each image once (GRE magnitude/phase or real/imaginary parts, T1w, user brain masks) and
raises a :mod:`qsmprep.errors` exception that names the file and the fix:

======================================  ====  ==============================================
problem                                 exit  check
======================================  ====  ==============================================
header announces more data than the     66    ``prod(shape) * itemsize`` vs file size (``.nii``)
file can hold (e.g. 10000^3 voxels)           or vs the deflate limit of 1032:1 (``.nii.gz``),
                                              *before* any array is allocated
truncated / corrupt file (gzip CRC,     66    the whole file is decompressed and read once
end of stream, short read)
no finite voxel / all-zero magnitude    65    per image
(or real+imag), constant phase
phase far outside [-pi, pi] with        65    range of the stored values (header scaling
``"Units": "rad"``                            chosen as the loader does)
non-finite voxels in T1w or user mask   65    per image
non-finite voxels in GRE                --    WARNING (count, file); the loader leaves them
                                              out of the brain mask (sidecar ``QualityFlags``)
empty user mask / mask not on GRE grid  65
T1w and GRE boxes do not overlap in     65    world-space bounding boxes from the affines
world space                                   (< 50 % of the GRE box covered: WARNING)
output folder belongs to another        64    :func:`check_output_dir`, before anything is
pipeline (``dataset_description.json``)       written
======================================  ====  ==============================================

Everything here is plain Python + nibabel/numpy (no nipype). The cost at 1 mm is measured by
``benchmarks/preflight.py`` (see ``docs/usage.md``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from .errors import DataError, MissingInputError, UsageError

LOGGER = logging.getLogger("qsmprep.preflight")

__all__ = [
    "DEFLATE_MAX_RATIO",
    "PHASE_RAD_TOLERANCE",
    "MIN_OVERLAP_WARN",
    "check_output_dir",
    "check_data_size",
    "gunzip",
    "read_image",
    "world_bbox",
    "bbox_overlap_fraction",
    "check_session",
    "run_preflight",
]

#: Largest possible compression ratio of a deflate stream (zlib technical details: 1032:1).
DEFLATE_MAX_RATIO = 1032
#: Values with ``|phase| > pi + PHASE_RAD_TOLERANCE`` are "far outside" ``[-pi, pi]`` (rad).
PHASE_RAD_TOLERANCE = 0.1
#: Warn when the T1w bounding box covers less than this fraction of the GRE bounding box.
MIN_OVERLAP_WARN = 0.5


# --------------------------------------------------------------------------------------------
# Output folder
# --------------------------------------------------------------------------------------------
def check_output_dir(output_dir) -> None:
    """Refuse an output folder that holds another dataset (exit 64), before anything is written.

    An existing ``OUTPUT_DIR/dataset_description.json`` must name ``qsmprep`` in
    ``GeneratedBy`` (``PipelineDescription`` for BIDS < 1.4); a raw dataset, another pipeline's
    derivatives or an unreadable description are refused, so that no file qsmprep did not write
    is overwritten. A missing description (new or empty folder) is fine.

    Parameters
    ----------
    output_dir : str or Path
        The ``OUTPUT_DIR`` of the run (need not exist).

    Raises
    ------
    UsageError
        Exit 64: the folder's ``dataset_description.json`` is unreadable or was not written by
        qsmprep; the message names the file and the pipeline it names.
    """
    out = Path(output_dir)
    desc = out / "dataset_description.json"
    if not desc.is_file():
        return
    fix = (f"qsmprep never overwrites files it did not write. Choose a new or empty output folder "
           f"(e.g. {out.parent / 'qsmprep'}), or a folder written by qsmprep.")
    try:
        meta = json.loads(desc.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"The output folder {out} has a dataset_description.json that cannot be read "
                         f"({exc}). {fix}") from exc
    gen = meta.get("GeneratedBy") if isinstance(meta, dict) else None
    if gen is None and isinstance(meta, dict) and isinstance(meta.get("PipelineDescription"), dict):
        gen = [meta["PipelineDescription"]]
    names = [str(g.get("Name", "")) for g in (gen or []) if isinstance(g, dict)]
    if any(n.strip().lower() == "qsmprep" for n in names):
        return
    what = (f"was generated by {', '.join(repr(n) for n in names)}" if names else
            f"is a {meta.get('DatasetType', 'raw') if isinstance(meta, dict) else 'foreign'} dataset "
            "with no GeneratedBy")
    raise UsageError(f"The output folder {out} belongs to another dataset: {desc} {what}. {fix}")


# --------------------------------------------------------------------------------------------
# Reading one image
# --------------------------------------------------------------------------------------------
def _load_header(path):
    import nibabel as nb

    try:
        return nb.load(str(path))
    except Exception as exc:  # noqa: BLE001 - any reader failure means unreadable input
        raise MissingInputError(
            f"Cannot read the header of {path} ({type(exc).__name__}: {exc}). The file is damaged or "
            "not NIfTI; copy or reconvert it (e.g. with dcm2niix).") from exc


def check_data_size(path, img) -> int:
    """Bytes of image data the header announces, checked against the file size.

    Done on the header and the file size only, so a header claiming 10000^3 voxels fails
    before anything is allocated. For ``.nii.gz`` the bound is the largest deflate ratio,
    :data:`DEFLATE_MAX_RATIO` (a file that small cannot decompress to that many bytes).

    Parameters
    ----------
    path : str or Path
        The NIfTI file (``.nii`` or ``.nii.gz``).
    img : nibabel image
        Its header, as loaded by nibabel (no data read).

    Returns
    -------
    int
        ``prod(shape) * itemsize`` of the header.

    Raises
    ------
    MissingInputError
        Exit 66: the file cannot hold that many bytes (uncompressed: shorter than header
        offset + data; compressed: more than the deflate ratio allows).
    """
    shape = tuple(int(s) for s in img.shape)
    dtype = np.dtype(img.get_data_dtype())
    nbytes = int(np.prod(shape, dtype=np.float64) * dtype.itemsize)
    offset = int(getattr(img.dataobj, "offset", 0) or 0)
    size = os.path.getsize(path)
    need = offset + nbytes
    what = f"{shape} voxels of {dtype} ({nbytes / 1e6:.4g} MB)"
    if str(path).endswith(".gz"):
        if need > DEFLATE_MAX_RATIO * size + 65536:
            raise MissingInputError(
                f"{path}: the header announces {what}, but a {size / 1e6:.3g} MB gzip file cannot hold "
                "that much data. The header is corrupt or the file truncated; reconvert or copy the "
                "file again.")
    elif size < need:
        raise MissingInputError(
            f"{path}: the header announces {what}, but the file holds only "
            f"{max(size - offset, 0) / 1e6:.4g} MB of image data. The file is truncated or its "
            "header is corrupt; copy or reconvert it.")
    return nbytes


def gunzip(blob: bytes) -> bytes:
    """Decompress a whole gzip file: ISA-L (``isal``, faster than zlib) when installed, else zlib."""
    try:
        from isal import igzip
    except ImportError:  # pragma: no cover - isal is an install requirement; keep working without
        import gzip as igzip
    return igzip.decompress(blob)


def read_image(path):
    """Header check, then the whole data read once.

    Parameters
    ----------
    path : str or Path
        A NIfTI file (``.nii.gz`` is decompressed into memory in one pass, then viewed without
        a copy).

    Returns
    -------
    raw : numpy.ndarray
        The stored values (the header's data type, header scaling not applied).
    slope, inter : float
        The header scaling (1 and 0 when absent or invalid), as the loaders apply it.
    img : nibabel image
        The image whose header was read.

    Raises
    ------
    MissingInputError
        Exit 66: the header announces more data than the file holds
        (:func:`check_data_size`), or the file is truncated or corrupt (gzip CRC, end of
        stream, short read).

    Notes
    -----
    ``.nii.gz`` files are read into memory and decompressed in one call (where the time goes;
    ``benchmarks/preflight.py`` measures it); ``.nii`` files are read through nibabel.
    """
    import nibabel as nb

    img = _load_header(path)
    nbytes = check_data_size(path, img)
    try:
        if str(path).endswith(".gz") and isinstance(img, nb.Nifti1Image):
            # one decompression into memory, then a zero-copy view of the voxel data
            blob = gunzip(Path(path).read_bytes())
            offset = int(img.dataobj.offset)
            if len(blob) < offset + nbytes:
                raise EOFError(f"decompressed to {len(blob)} bytes, the header needs {offset + nbytes}")
            dtype = img.header.get_data_dtype()
            count = int(np.prod(img.shape))
            raw = np.frombuffer(blob, dtype=dtype, count=count, offset=offset).reshape(img.shape, order="F")
        else:
            raw = np.asarray(img.dataobj.get_unscaled())
    except Exception as exc:  # noqa: BLE001 - EOFError, zlib.error, BadGzipFile, short reads
        raise MissingInputError(
            f"Cannot read the image data of {path} ({type(exc).__name__}: {exc}). The file is "
            "truncated or corrupt (e.g. an interrupted copy or download); copy or reconvert it.") from exc
    slope = getattr(img.dataobj, "slope", 1.0)
    inter = getattr(img.dataobj, "inter", 0.0)
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    return raw, slope, inter, img


def _read_pair(paths, workers):
    """:func:`read_image` of two files, in two threads when ``workers > 1`` (zlib/ISA-L release
    the GIL while decompressing)."""
    if workers <= 1:
        return [read_image(p) for p in paths]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(workers, len(paths))) as pool:
        futures = [pool.submit(read_image, p) for p in paths]
        return [f.result() for f in futures]


def _scaled(raw, slope, inter):
    if slope == 1.0 and inter == 0.0:
        return raw
    return raw.astype(np.float64) * slope + inter


def _finite_stats(values):
    finite = np.isfinite(values)
    n_bad = int(values.size - np.count_nonzero(finite))
    if n_bad == values.size:
        return n_bad, None, None
    v = values[finite] if n_bad else values
    return n_bad, float(v.min()), float(v.max())


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------
def world_bbox(affine, shape):
    """Axis-aligned world bounding box of a voxel grid (to the outer voxel edges).

    Parameters
    ----------
    affine : (4, 4) array
        Voxel -> world (mm) affine.
    shape : sequence of int
        Grid shape (the first three dimensions are used).

    Returns
    -------
    lo, hi : numpy.ndarray
        Lowest and highest world coordinates (mm) along x, y, z.

    Example
    -------
    >>> import numpy as np
    >>> lo, hi = world_bbox(np.diag([2.0, 2.0, 2.0, 1.0]), (10, 10, 10))
    >>> lo.tolist(), hi.tolist()
    ([-1.0, -1.0, -1.0], [19.0, 19.0, 19.0])
    """
    shape = np.asarray(shape[:3], dtype=float)
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=float)
    vox = corners * shape - 0.5
    world = vox @ np.asarray(affine, dtype=float)[:3, :3].T + np.asarray(affine, dtype=float)[:3, 3]
    return world.min(axis=0), world.max(axis=0)


def bbox_overlap_fraction(box_a, box_b) -> float:
    """Fraction of the volume of ``box_a`` that lies inside ``box_b``.

    Parameters
    ----------
    box_a, box_b : tuple of arrays
        ``(lo, hi)`` boxes as :func:`world_bbox` returns them (``box_a``: the GRE).

    Returns
    -------
    float
        0 (disjoint or empty ``box_a``) to 1 (``box_a`` inside ``box_b``).

    Example
    -------
    >>> bbox_overlap_fraction(([0, 0, 0], [2, 2, 2]), ([1, 0, 0], [3, 2, 2]))
    0.5
    """
    lo = np.maximum(box_a[0], box_b[0])
    hi = np.minimum(box_a[1], box_b[1])
    inter = float(np.prod(np.clip(hi - lo, 0, None)))
    vol = float(np.prod(np.asarray(box_a[1]) - np.asarray(box_a[0])))
    return inter / vol if vol > 0 else 0.0


def _fmt_box(box):
    lo, hi = box
    return ", ".join(f"{a}: {lo[i]:.0f}..{hi[i]:.0f}" for i, a in enumerate("xyz")) + " mm"


# --------------------------------------------------------------------------------------------
# Phase units
# --------------------------------------------------------------------------------------------
def _phase_range_hint(lo, hi, integer_like):
    span = hi - lo
    if integer_like and lo >= -32768 and hi <= 65535 and span > 100:
        return "integer scanner phase (set \"Units\": \"arbitrary\" and qsmprep rescales it)"
    if 300 <= span <= 370 and max(abs(lo), abs(hi)) <= 370:
        return "degrees (multiply by pi/180, or set \"Units\": \"arbitrary\" to rescale the range)"
    if 5500 <= span <= 6600 and max(abs(lo), abs(hi)) <= 6600:
        return "radians x 1000 (divide by 1000)"
    return ("not radians (convert to radians, or set \"Units\": \"arbitrary\" so that the range is "
            "rescaled to [-pi, pi))")


def check_phase_units(path, values, units):
    """Check phase values against the sidecar's ``Units``.

    Parameters
    ----------
    path : str or Path
        The phase file (named in the message).
    values : numpy.ndarray
        Its values as the loader will use them (header scaling applied when the loader does).
    units : str
        The sidecar's ``Units`` (``rad``, ``arbitrary``, ...); only ``rad`` is checked.

    Raises
    ------
    DataError
        Exit 65: ``Units`` is ``rad`` but values lie far outside ``[-pi, pi]``
        (:data:`PHASE_RAD_TOLERANCE`); the message says what the range looks like (degrees,
        radians x 1000, integer scanner phase) and how to fix it.
    """
    n_bad, lo, hi = _finite_stats(values)
    if lo is None:
        return
    if hi - lo == 0:
        raise DataError(f"{path}: the phase image is constant ({lo:.4g}); it carries no field "
                        "information. Re-export the phase images.")
    if units == "rad" and max(abs(lo), abs(hi)) > np.pi + PHASE_RAD_TOLERANCE:
        from .qsm.phase import _is_integer_like

        hint = _phase_range_hint(lo, hi, _is_integer_like(np.asarray(values)))
        raise DataError(
            f"{path}: the sidecar says \"Units\": \"rad\" but the phase values span [{lo:.6g}, "
            f"{hi:.6g}], far outside [-pi, pi]. They look like {hint}. Fix the image or the "
            "\"Units\" of its sidecar.")


# --------------------------------------------------------------------------------------------
# One session
# --------------------------------------------------------------------------------------------
def check_session(data: dict, workers: int = 2) -> dict:
    """Read and check every image of one :func:`qsmprep.bids.collect_data` record.

    WARNING lines (non-finite GRE voxels, a T1w that covers little of the GRE) are logged with
    the subject/session and appended to ``data["warnings"]``, so that the participant report
    lists them.

    Parameters
    ----------
    data : dict
        One session's record from :func:`qsmprep.bids.collect_data` (``mag``, ``phase``,
        ``parts``, ``phase_units``, ``t1w``, optional ``user_mask``, ``warnings``).
    workers : int
        Threads reading the two images of an echo at the same time.

    Returns
    -------
    dict
        ``n_images``, ``bytes``, ``nonfinite`` (``{file: count}`` of GRE files with NaN/Inf),
        ``seconds``, ``warnings``.

    Raises
    ------
    MissingInputError
        Exit 66: an image is truncated, corrupt, or smaller than its header says.
    DataError
        Exit 65: no finite voxel, an all-zero magnitude, a constant phase, a phase not in the
        units its sidecar says, non-finite voxels in the T1w or a user mask, an empty user
        mask or one off the GRE grid, T1w and GRE boxes that do not overlap.
    """
    from .qsm.phase import choose_phase_values

    t0 = time.perf_counter()
    where = f"sub-{data['subject']}" + (f"_ses-{data['session']}" if data.get("session") else "")
    parts = data.get("parts") or "mag-phase"
    units = data.get("phase_units")
    warnings: list[str] = []
    nonfinite: dict[str, int] = {}
    n_images, total_bytes = 0, 0
    gre_affine = gre_shape = None

    def _note_nonfinite(path, n_bad, size):
        if n_bad:
            nonfinite[str(path)] = n_bad
            msg = (f"{where}: {path} has {n_bad} NaN/infinite voxel(s) of {size}; they are left "
                   "out of the brain mask (recorded in the Chimap sidecar's QualityFlags).")
            LOGGER.warning(msg)
            warnings.append(msg)

    for first, second in zip(data["mag"], data["phase"]):
        (raw_a, sa, ia, img_a), (raw_b, sb, ib, img_b) = _read_pair((first, second), workers)
        n_images += 2
        total_bytes += raw_a.nbytes + raw_b.nbytes
        if gre_affine is None:
            gre_affine, gre_shape = np.asarray(img_a.affine), tuple(img_a.shape[:3])
        vals_a = _scaled(raw_a, sa, ia)
        bad_a, lo_a, hi_a = _finite_stats(vals_a)
        if parts == "real-imag":
            vals_b = _scaled(raw_b, sb, ib)
            bad_b, lo_b, hi_b = _finite_stats(vals_b)
            for path, bad, lo in ((first, bad_a, lo_a), (second, bad_b, lo_b)):
                if lo is None:
                    raise DataError(f"{path}: no voxel has a finite value. Re-export the image.")
            if max(abs(lo_a), abs(hi_a), abs(lo_b), abs(hi_b)) == 0:
                raise DataError(f"{first} and {second}: real and imaginary parts are all zero, so the "
                                "magnitude is zero everywhere. Re-export these echoes.")
            _note_nonfinite(first, bad_a, vals_a.size)
            _note_nonfinite(second, bad_b, vals_b.size)
            continue
        # magnitude
        if lo_a is None:
            raise DataError(f"{first}: no voxel of the magnitude image has a finite value. "
                            "Re-export the image.")
        if hi_a <= 0:
            raise DataError(f"{first}: the magnitude image has no positive value (range [{lo_a:.4g}, "
                            f"{hi_a:.4g}]); it is empty or not a magnitude image. Re-export it.")
        _note_nonfinite(first, bad_a, vals_a.size)
        # phase: the same choice of header scaling as the loader (qsm.phase.choose_phase_values)
        if sb == 1.0 and ib == 0.0:
            values = raw_b  # no header scaling: nothing to choose
        else:
            values, _ = choose_phase_values(_scaled(raw_b, sb, ib), raw_b)
        bad_b, lo_b, _ = _finite_stats(np.asarray(values))
        if lo_b is None:
            raise DataError(f"{second}: no voxel of the phase image has a finite value. "
                            "Re-export the image.")
        check_phase_units(second, np.asarray(values), units)
        _note_nonfinite(second, bad_b, np.asarray(values).size)

    # ---- T1w ----
    t1w = data.get("t1w")
    if t1w:
        raw, s, i, img = read_image(t1w)
        n_images += 1
        total_bytes += raw.nbytes
        vals = _scaled(raw, s, i)
        n_bad, lo, hi = _finite_stats(vals)
        if lo is None or (lo == 0 and hi == 0):
            raise DataError(f"{t1w}: the T1w image is {'all NaN/Inf' if lo is None else 'all zero'}. "
                            "Re-export it, or remove it to register to the GRE magnitude instead.")
        if n_bad:
            raise DataError(f"{t1w}: {n_bad} NaN/infinite voxel(s) in the T1w image; registration "
                            "cannot use them. Replace them (e.g. with 0) or reconvert the image.")
        gbox = world_bbox(gre_affine, gre_shape)
        tbox = world_bbox(img.affine, img.shape)
        frac = bbox_overlap_fraction(gbox, tbox)
        if frac <= 0:
            raise DataError(
                f"{t1w} and the GRE images ({Path(data['mag'][0]).name}) do not overlap in world "
                f"space (T1w box {_fmt_box(tbox)}; GRE box {_fmt_box(gbox)}): one of the affines is "
                "wrong (swapped axes, shifted origin). Reconvert the DICOMs (e.g. dcm2niix) or fix "
                "the header of the wrong image.")
        if frac < MIN_OVERLAP_WARN:
            msg = (f"{where}: the T1w box covers only {100 * frac:.0f}% of the GRE box ({t1w}); check "
                   "both affines (registration may fail or be wrong).")
            LOGGER.warning(msg)
            warnings.append(msg)

    # ---- user mask ----
    user_mask = data.get("user_mask")
    if user_mask:
        raw, s, i, img = read_image(user_mask)
        n_images += 1
        total_bytes += raw.nbytes
        vals = _scaled(raw, s, i)
        n_bad, lo, hi = _finite_stats(vals)
        if n_bad:
            raise DataError(f"--brain-masks: {user_mask} has {n_bad} NaN/infinite voxel(s). Write "
                            "the mask as 0/1 integers.")
        if not np.any(vals > 0):
            raise DataError(f"--brain-masks: {user_mask} is empty (no voxel > 0). Give the brain "
                            "mask of this session or drop --brain-masks.")
        if gre_affine is not None and not np.allclose(img.affine, gre_affine, atol=1e-3, rtol=1e-4):
            raise DataError(f"--brain-masks: {user_mask} is not on the GRE grid (its affine differs "
                            f"from {data['mag'][0]}). Resample the mask onto the GRE grid.")

    seconds = time.perf_counter() - t0
    data.setdefault("warnings", []).extend(warnings)
    LOGGER.info("%s: pre-flight read %d images (%.0f MB) in %.1f s", where, n_images,
                total_bytes / 1e6, seconds)
    return {"n_images": n_images, "bytes": total_bytes, "nonfinite": nonfinite,
            "seconds": seconds, "warnings": warnings}


def run_preflight(selection: dict, workers: int = 2) -> dict:
    """:func:`check_session` for every session of the run.

    The first error stops the run, before any workflow node has run and before anything is
    written to the output folder.

    Parameters
    ----------
    selection : dict
        ``{subject: [collect_data() record per session]}``.
    workers : int
        Passed to :func:`check_session`.

    Returns
    -------
    dict
        ``{(subject, session): summary}`` (see :func:`check_session`).

    Raises
    ------
    MissingInputError, DataError
        The first failing check (exit 66 / 65).
    """
    out = {}
    for sub, sessions in selection.items():
        for d in sessions:
            out[(sub, d.get("session"))] = check_session(d, workers=workers)
    return out
