"""Per-label susceptibility statistics (pure numpy/pandas: no nipype, no file I/O).

The ROI table contract (``docs/architecture.md``), owned by this module: columns
:data:`COLUMNS` (``index, name, structure, hemisphere, mean_ppb, median_ppb, sd_ppb, n_voxels,
volume_mm3``), data dictionary :func:`roi_sidecar`; one row per atlas label; a label with no
usable voxel has ``NaN`` statistics (written as ``n/a`` in TSV files) and ``n_voxels = 0``.

Voxel selection, in this order:

1. optional per-label erosion by ``erode_vox`` voxels (6-connected): a voxel is kept only if
   every voxel within ``erode_vox`` steps carries the same label. This removes the outer
   shell of each structure, where partial volume with neighbouring tissue (e.g. the internal
   capsule next to the pallidum, CSF next to the caudate) biases the mean;
2. restriction to the (final, eroded) QSM mask;
3. optional exclusion of voxels whose multi-echo reliability (0..1, 1 = reliable) is below
   ``min_reliability``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from .qsm.kernels import VOXEL_SIZE_TOL_MM

#: Columns that identify a label (copied from the label table), first in every ROI table.
KEY_COLUMNS = ["index", "name", "structure", "hemisphere"]
#: Statistic columns of a ROI table (numeric; ``n_voxels`` is an integer).
STATISTIC_COLUMNS = ["mean_ppb", "median_ppb", "sd_ppb", "n_voxels", "volume_mm3"]
#: The ROI table contract: the columns of every ``*_stats.tsv``, in order.
COLUMNS = KEY_COLUMNS + STATISTIC_COLUMNS
#: Columns of the longitudinal change table (:func:`longitudinal_change`).
CHANGE_COLUMNS = KEY_COLUMNS + [
    "baseline_session",
    "followup_session",
    "baseline_mean_ppb",
    "followup_mean_ppb",
    "change_mean_ppb",
    "baseline_median_ppb",
    "followup_median_ppb",
    "change_median_ppb",
    "baseline_n_voxels",
    "followup_n_voxels",
]
#: R2* columns (1/s) appended after :data:`COLUMNS` when an R2* map is given (contract 3)
R2STAR_COLUMNS = ["r2star_mean", "r2star_median", "r2star_sd"]
#: the session's B0 direction in the atlas frame (:mod:`qsmprep.b0_orientation`), appended to a
#: ROI table when it is known (the same value on every row)
B0_COLUMNS = ["b0_x", "b0_y", "b0_z", "b0_tilt_deg"]
#: appended to the change table when the angle between its sessions is known (measured, or
#: from both ROI tables' :data:`B0_COLUMNS`)
CHANGE_B0_COLUMNS = ["b0_angle_deg", "orientation_flagged"]
PPM_TO_PPB = 1000.0
#: ``erode_vox="auto"`` erodes by one voxel when every voxel dimension is at most this (mm)
AUTO_EROSION_MAX_VOXEL_MM = 1.5


def auto_erosion(voxel_size: Sequence[float]) -> int:
    """Erosion (voxels) used for ``--roi-erosion auto``.

    Partial volume at a label boundary spans about one voxel whatever the resolution, and a
    label misplaced by a fraction of a voxel changes which boundary voxels it holds; for a
    structure far above its surroundings (the pallidum) a small change of that share between
    sessions is a change of the mean of a few ppb. Eroding one voxel removes that shell. At
    coarse voxels one voxel is most of a small structure (the red nucleus), so no erosion is
    applied above :data:`AUTO_EROSION_MAX_VOXEL_MM`. The measured effect on planted changes is
    in ``docs/registration.md`` (``benchmarks/registration.py``).

    Parameters
    ----------
    voxel_size : sequence of float
        Voxel size in mm.

    Returns
    -------
    int
        1 when every voxel dimension is at most :data:`AUTO_EROSION_MAX_VOXEL_MM`, else 0.

    Examples
    --------
    >>> auto_erosion((1.0, 1.0, 1.0)), auto_erosion((1.0, 1.0, 3.0))
    (1, 0)
    >>> auto_erosion((1.0, 1.0, 1.5000000000000002))  # 1.5 mm slices of an oblique affine
    1
    """
    vs = [float(v) for v in voxel_size]
    return 1 if vs and max(vs) <= AUTO_EROSION_MAX_VOXEL_MM + VOXEL_SIZE_TOL_MM else 0


def resolve_erosion(erode_vox, voxel_size: Sequence[float]) -> int:
    """The erosion (voxels) to apply, from the ``--roi-erosion`` value.

    Parameters
    ----------
    erode_vox : {"auto"} or int
        ``"auto"`` (see :func:`auto_erosion`) or a number of voxels >= 0.
    voxel_size : sequence of float
        Voxel size in mm (used for ``"auto"`` only).

    Returns
    -------
    int
        Number of voxels.

    Raises
    ------
    ValueError
        For a string other than ``"auto"`` or a negative number.
    """
    if isinstance(erode_vox, str):
        if erode_vox != "auto":
            raise ValueError(f"erode_vox must be 'auto' or an integer >= 0, got {erode_vox!r}")
        return auto_erosion(voxel_size)
    n = int(erode_vox)
    if n < 0:
        raise ValueError(f"erode_vox must be >= 0, got {n}")
    return n


def erode_labels(labels: np.ndarray, n_vox: int) -> np.ndarray:
    """Erode every label of an integer label image by ``n_vox`` voxels (6-connectivity).

    A voxel keeps its label when all voxels of its 6-neighbourhood carry the same label,
    repeated ``n_vox`` times; labels therefore shrink away from the background *and* from each
    other. Image borders are treated as a continuation of the edge voxel (``mode='nearest'``).

    Parameters
    ----------
    labels : ndarray of int
        Label image (0 = background).
    n_vox : int
        Number of erosion steps (>= 0).

    Returns
    -------
    ndarray
        Label image of the same shape and dtype.

    Raises
    ------
    ValueError
        If ``n_vox < 0``.
    """
    labels = np.asarray(labels)
    if n_vox < 0:
        raise ValueError(f"erode_vox must be >= 0, got {n_vox}")
    out = labels.copy()
    footprint = ndimage.generate_binary_structure(labels.ndim, 1)
    for _ in range(int(n_vox)):
        lo = ndimage.minimum_filter(out, footprint=footprint, mode="nearest")
        hi = ndimage.maximum_filter(out, footprint=footprint, mode="nearest")
        out = np.where(lo == hi, out, 0).astype(labels.dtype, copy=False)
    return out


def select_voxels(
    labels: np.ndarray,
    mask: np.ndarray | None = None,
    erode_vox: int = 0,
    reliability: np.ndarray | None = None,
    min_reliability: float | None = None,
) -> np.ndarray:
    """The label image actually used for statistics (0 = not used); see the module docstring.

    Parameters
    ----------
    labels : ndarray
        Label image (integer values; a float image holding integers is accepted).
    mask : ndarray of bool, optional
        QSM mask on the same grid; labels outside it are dropped.
    erode_vox : int, default 0
        Per-label erosion (voxels), applied first (:func:`erode_labels`).
    reliability : ndarray, optional
        Multi-echo reliability map (0..1) on the same grid.
    min_reliability : float, optional
        Voxels with ``reliability < min_reliability`` are dropped (needs ``reliability``).

    Returns
    -------
    ndarray of int
        Selected labels.

    Raises
    ------
    ValueError
        Non-integer labels, shape mismatches, or ``min_reliability`` without ``reliability``.
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        rounded = np.rint(labels)
        if not np.allclose(rounded, labels):
            raise ValueError("labels must hold integer values")
        labels = rounded.astype(np.int32)
    sel = erode_labels(labels, erode_vox) if erode_vox else labels.copy()
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != labels.shape:
            raise ValueError(f"mask shape {mask.shape} != labels shape {labels.shape}")
        sel[~mask] = 0
    if min_reliability is not None:
        if reliability is None:
            raise ValueError("min_reliability given but no reliability map")
        reliability = np.asarray(reliability, dtype=float)
        if reliability.shape != labels.shape:
            raise ValueError(
                f"reliability shape {reliability.shape} != labels shape {labels.shape}"
            )
        sel[~(reliability >= float(min_reliability))] = 0
    return sel


def _label_box(labels, *others):
    """Slices of the labels' bounding box plus one voxel (clipped to the image), or None.

    None (use the whole image) when there is no label or another given map has another
    shape (the shape checks then report it as before). One voxel of margin keeps
    :func:`erode_labels` exact on the crop: a background voxel stays background whatever
    its neighbours, so only label voxels' 6-neighbourhoods matter, and those lie inside the box
    (at the image border the crop's border is the image's, with the same ``nearest`` rule).
    """
    from .qsm._fftgrid import mask_bounds

    labels = np.asarray(labels)
    if labels.ndim != 3 or any(o is not None and np.shape(o) != labels.shape for o in others):
        return None
    bounds = mask_bounds(labels != 0)
    if bounds is None:
        return None
    return tuple(slice(max(lo - 1, 0), min(hi + 2, n))
                 for lo, hi, n in zip(bounds[0], bounds[1], labels.shape))


def roi_statistics(
    chi_ppm: np.ndarray,
    labels: np.ndarray,
    label_table: pd.DataFrame,
    voxel_size: Sequence[float],
    mask: np.ndarray | None = None,
    erode_vox: int = 0,
    reliability: np.ndarray | None = None,
    min_reliability: float | None = None,
    r2star: np.ndarray | None = None,
) -> pd.DataFrame:
    """Susceptibility statistics per atlas label, in ppb.

    Parameters
    ----------
    chi_ppm : ndarray of float, shape (X, Y, Z)
        Susceptibility in ppm (already referenced).
    labels : ndarray of int, shape (X, Y, Z)
        Label image on the same grid.
    label_table : pandas.DataFrame
        At least ``index`` and ``name``; ``structure`` and ``hemisphere`` are copied when
        present (else ``n/a``).
    voxel_size : sequence of float
        Voxel size in mm (3 values), used for ``volume_mm3``.
    mask : ndarray of bool, optional
        QSM mask; labels outside it are ignored.
    erode_vox : int, default 0
        Erode each label by this many voxels before anything else (0 = off).
    reliability : ndarray, optional
        Multi-echo reliability map (0..1).
    min_reliability : float, optional
        Exclude voxels with ``reliability < min_reliability``.
    r2star : ndarray, optional
        R2* map (1/s) on the same grid; adds :data:`R2STAR_COLUMNS` (mean, median, sample SD
        over the same voxels as the susceptibility statistics).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS` (+ :data:`R2STAR_COLUMNS` with ``r2star``), one row per row of
        ``label_table`` (same order). ``sd_ppb`` is the sample standard deviation (``ddof=1``;
        NaN for a single voxel). Non-finite susceptibility values are not counted.

    Raises
    ------
    ValueError
        When the maps are not on one grid (see also :func:`select_voxels`).

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"index": [1], "name": ["Left_Caudate"]})
    >>> lab = np.array([[[1, 1, 0]]])
    >>> chi = np.array([[[0.01, 0.03, 0.5]]])
    >>> t = roi_statistics(chi, lab, table, (1, 1, 1))
    >>> round(float(t.loc[0, "mean_ppb"]), 6), int(t.loc[0, "n_voxels"])
    (20.0, 2)
    """
    chi_ppm = np.asarray(chi_ppm, dtype=float)
    if chi_ppm.shape != np.shape(labels):
        raise ValueError(f"chi shape {chi_ppm.shape} != labels shape {np.shape(labels)}")
    box = _label_box(labels, mask, reliability, r2star)
    if box is not None:  # the same voxels in the same order: identical statistics, less work
        labels, chi_ppm = np.asarray(labels)[box], chi_ppm[box]
        mask, reliability, r2star = (None if a is None else np.asarray(a)[box]
                                     for a in (mask, reliability, r2star))
    sel = select_voxels(labels, mask, erode_vox, reliability, min_reliability)
    sel[~np.isfinite(chi_ppm)] = 0
    if r2star is not None:
        r2star = np.asarray(r2star, dtype=float)
        if r2star.shape != chi_ppm.shape:
            raise ValueError(f"r2star shape {r2star.shape} != chi shape {chi_ppm.shape}")
    voxel_volume = float(np.prod(np.asarray(voxel_size, dtype=float)[:3]))

    order = np.argsort(sel, axis=None, kind="stable")
    flat_lab = sel.ravel()[order]
    flat_chi = chi_ppm.ravel()[order]
    flat_r2 = None if r2star is None else r2star.ravel()[order]
    rows = []
    for rec in label_table.to_dict("records"):
        idx = int(rec["index"])
        lo = np.searchsorted(flat_lab, idx, side="left")
        hi = np.searchsorted(flat_lab, idx, side="right")
        vals = flat_chi[lo:hi] * PPM_TO_PPB if idx != 0 else flat_chi[:0]
        n = int(vals.size)
        extra = {}
        if flat_r2 is not None:
            r2 = flat_r2[lo:hi] if idx != 0 else flat_r2[:0]
            r2 = r2[np.isfinite(r2)]
            extra = {"r2star_mean": float(np.mean(r2)) if r2.size else np.nan,
                     "r2star_median": float(np.median(r2)) if r2.size else np.nan,
                     "r2star_sd": float(np.std(r2, ddof=1)) if r2.size > 1 else np.nan}
        rows.append(
            {
                "index": idx,
                "name": rec.get("name", "n/a"),
                "structure": rec.get("structure", "n/a"),
                "hemisphere": rec.get("hemisphere", "n/a"),
                "mean_ppb": float(np.mean(vals)) if n else np.nan,
                "median_ppb": float(np.median(vals)) if n else np.nan,
                "sd_ppb": float(np.std(vals, ddof=1)) if n > 1 else np.nan,
                "n_voxels": n,
                "volume_mm3": n * voxel_volume,
                **extra,
            }
        )
    df = pd.DataFrame(rows, columns=COLUMNS + (R2STAR_COLUMNS if r2star is not None else []))
    df["index"] = df["index"].astype(int)
    df["n_voxels"] = df["n_voxels"].astype(int)
    return df


def add_qc_columns(df: pd.DataFrame, metrics: Mapping, flagged: int,
                   reasons: Sequence[str] = ()) -> pd.DataFrame:
    """Append the session's registration quality columns (contract of the stats table).

    Parameters
    ----------
    df : pandas.DataFrame
        A :func:`roi_statistics` table.
    metrics : mapping
        Metric name -> value (``None`` when not computable), from
        :func:`qsmprep.registration_qc.session_verdict`.
    flagged : int or bool
        Whether the session failed a quality threshold.
    reasons : sequence of str, optional
        Why it was flagged.

    Returns
    -------
    pandas.DataFrame
        A copy with ``qc_<metric>`` (float, NaN when not computable) for every entry of
        ``metrics``, ``qc_flagged`` (0/1) and ``qc_reasons`` (``"; "``-joined text, NaN when
        none), the same value on every row.
    """
    out = df.copy()
    for name, value in metrics.items():
        out[f"qc_{name}"] = float("nan") if value is None else float(value)
    out["qc_flagged"] = int(bool(flagged))
    out["qc_reasons"] = "; ".join(reasons) if reasons else np.nan
    return out


def add_b0_columns(df: pd.DataFrame, orientation: Mapping) -> pd.DataFrame:
    """Append the session's B0 direction in the atlas frame (:data:`B0_COLUMNS`).

    Parameters
    ----------
    df : pandas.DataFrame
        A :func:`roi_statistics` table.
    orientation : mapping
        :func:`qsmprep.b0_orientation.session_orientation` (``B0Direction``, ``TiltDeg``).

    Returns
    -------
    pandas.DataFrame
        A copy with ``b0_x``, ``b0_y``, ``b0_z`` (unit vector, atlas RAS axes) and
        ``b0_tilt_deg``, the same value on every row.
    """
    out = df.copy()
    for col, value in zip(B0_COLUMNS[:3], orientation["B0Direction"]):
        out[col] = float(value)
    out["b0_tilt_deg"] = float(orientation["TiltDeg"])
    return out


def session_b0(df: pd.DataFrame) -> np.ndarray | None:
    """The B0 vector of a ROI table (:data:`B0_COLUMNS`), or None when it has none.

    Parameters
    ----------
    df : pandas.DataFrame
        A ROI table.

    Returns
    -------
    ndarray, shape (3,), or None
        None when a column is missing, a value is not finite, or the rows disagree.
    """
    if not set(B0_COLUMNS[:3]) <= set(df.columns) or df.empty:
        return None
    vals = df[B0_COLUMNS[:3]].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    if not np.all(np.isfinite(vals)) or not np.allclose(vals, vals[0]):
        return None
    return vals[0]


def longitudinal_change(
    stats_by_session: Mapping[str, pd.DataFrame], baseline: str, followup: str,
    b0_angle_deg: float | None = None,
) -> pd.DataFrame:
    """Follow-up minus baseline per label (ppb), from two :func:`roi_statistics` tables.

    Labels are matched on ``index``; a label missing or empty in either session gives NaN.
    When both tables carry :data:`B0_COLUMNS`, :data:`CHANGE_B0_COLUMNS` are appended:
    ``b0_angle_deg``, the angle between the sessions' B0 directions in the atlas frame (how
    much the head's orientation to B0 changed), and ``orientation_flagged`` (0/1), 1 on the
    rows of :data:`qsmprep.b0_orientation.SENSITIVE_STRUCTURES` when that angle is above
    :data:`qsmprep.b0_orientation.ANGLE_WARN_DEG` (their change may carry an orientation bias;
    :func:`qsmprep.b0_orientation.flag_rows`). ``b0_angle_deg``, when given (the participant
    level measures it by registering the two sessions' GRE magnitudes to each other,
    :func:`qsmprep.registration.b0_angle_between_sessions`), is used instead of the tables'
    vectors, and the columns are appended even when the tables have none.

    Parameters
    ----------
    stats_by_session : mapping of str to pandas.DataFrame
        Session label -> ROI table.
    baseline, followup : str
        Session labels to compare.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`CHANGE_COLUMNS`.

    b0_angle_deg : float, optional
        The angle between the sessions' B0 directions (degrees).

    Raises
    ------
    KeyError
        If either session is not in ``stats_by_session``.
    """
    for ses in (baseline, followup):
        if ses not in stats_by_session:
            raise KeyError(f"session {ses!r} not in {sorted(stats_by_session)}")
    keys = KEY_COLUMNS
    base = stats_by_session[baseline]
    foll = stats_by_session[followup]
    cols = ["index", "mean_ppb", "median_ppb", "n_voxels"]
    merged = base[keys + cols[1:]].merge(
        foll[cols], on="index", how="outer", suffixes=("_b", "_f"), sort=False
    )
    out = pd.DataFrame(
        {
            "index": merged["index"].astype(int),
            "name": merged["name"],
            "structure": merged["structure"],
            "hemisphere": merged["hemisphere"],
            "baseline_session": baseline,
            "followup_session": followup,
            "baseline_mean_ppb": merged["mean_ppb_b"],
            "followup_mean_ppb": merged["mean_ppb_f"],
            "change_mean_ppb": merged["mean_ppb_f"] - merged["mean_ppb_b"],
            "baseline_median_ppb": merged["median_ppb_b"],
            "followup_median_ppb": merged["median_ppb_f"],
            "change_median_ppb": merged["median_ppb_f"] - merged["median_ppb_b"],
            "baseline_n_voxels": merged["n_voxels_b"].fillna(0).astype(int),
            "followup_n_voxels": merged["n_voxels_f"].fillna(0).astype(int),
        },
        columns=CHANGE_COLUMNS,
    )
    from .b0_orientation import angle_between_deg, flag_rows

    angle = b0_angle_deg
    if angle is None:
        b_base, b_foll = session_b0(base), session_b0(foll)
        if b_base is not None and b_foll is not None:
            angle = angle_between_deg(b_base, b_foll)
    if angle is not None:
        angle = float(angle)
        out["b0_angle_deg"] = angle
        out["orientation_flagged"] = flag_rows(out["structure"].fillna(""), angle)
    return out.reset_index(drop=True)


def b0_dictionary() -> dict:
    """Column dictionary of :data:`B0_COLUMNS` (shared by the ROI and group tables)."""
    comp = ("Component {} of the session's B0 direction (unit vector) in the atlas template's "
            "RAS axes: the scanner z axis carried through this session's registrations into "
            "the atlas frame (rigid least-squares fit; qsmprep.b0_orientation). Approximate, "
            "within about 1 degree: the change table measures the change between sessions "
            "directly")
    return {
        "b0_x": {"Description": comp.format("x (left to right)")},
        "b0_y": {"Description": comp.format("y (posterior to anterior)")},
        "b0_z": {"Description": comp.format("z (inferior to superior)")},
        "b0_tilt_deg": {"Description": "Angle between B0 and the atlas's inferior-superior axis: "
                        "how far the head was pitched or rolled in the scanner", "Units": "deg"},
    }


def change_b0_dictionary() -> dict:
    """Column dictionary of :data:`CHANGE_B0_COLUMNS`."""
    from .b0_orientation import ANGLE_WARN_DEG, SENSITIVE_STRUCTURES

    return {
        "b0_angle_deg": {
            "Description": "Angle between the baseline and follow-up B0 directions in the head: "
                           "how much the head's orientation to B0 changed between the sessions. "
                           "Measured by a rigid registration of the follow-up GRE magnitude to "
                           "the baseline one (qsmprep.registration.b0_angle_between_sessions); "
                           "from the b0_* columns of the sessions' ROI tables where that was "
                           "not run", "Units": "deg"},
        "orientation_flagged": {
            "Description": f"1 when b0_angle_deg > {ANGLE_WARN_DEG:g} and the structure is one "
                           f"of {', '.join(SENSITIVE_STRUCTURES)}: on the independent simulator "
                           "their mean moved by 1-5 ppb with the head's orientation to B0 "
                           "(docs/validation.md), so part of this change may not be in the "
                           "tissue",
            "Levels": {"0": "not flagged", "1": "change may carry an orientation bias"}},
    }


def roi_sidecar(
    reference: str | Mapping | None = None,
    atlas_name: str = "DGM",
    erode_vox: int = 0,
    min_reliability: float | None = None,
    masked: bool = True,
    change: bool = False,
    erosion_mode: str | None = None,
    r2star: bool = False,
    b0: bool = False,
) -> dict:
    """JSON data dictionary for a ROI statistics table (``*_stats.tsv``).

    Parameters
    ----------
    reference : str or mapping, optional
        The susceptibility reference region (a name, or the info dict returned by
        :mod:`qsmprep.qsm.reference`); ``n/a`` when not given.
    atlas_name : str, default "DGM"
        The ``atlas-<Name>`` of the label image.
    erode_vox : int, default 0
        Erosion used (voxels).
    min_reliability : float, optional
        Reliability threshold used.
    masked : bool, default True
        Whether the statistics were restricted to the QSM mask.
    change : bool, default False
        Describe a :func:`longitudinal_change` table (:data:`CHANGE_COLUMNS`) instead.
    erosion_mode : str, optional
        How ``erode_vox`` was chosen (``"auto"``; default ``"fixed"``).
    r2star : bool, default False
        Describe the R2* columns (:data:`R2STAR_COLUMNS`, 1/s).
    b0 : bool, default False
        Describe the B0-orientation columns (:data:`B0_COLUMNS`, or with ``change``
        :data:`CHANGE_B0_COLUMNS`).

    Returns
    -------
    dict
        One entry per column, then ``SusceptibilityReference``, ``Atlas``, ``VoxelSelection``,
        ``ErodeVoxels``, ``ErosionMode``, ``MinReliability`` and ``MissingValues``.
    """
    common = {
        "index": {"Description": f"Label value in the atlas-{atlas_name} label image"},
        "name": {"Description": "Label name"},
        "structure": {"Description": "Anatomical structure (both hemispheres share it)"},
        "hemisphere": {"Description": "Hemisphere", "Levels": {"left": "left", "right": "right"}},
    }
    if change:
        cols = {
            **common,
            "baseline_session": {"Description": "Session used as baseline"},
            "followup_session": {"Description": "Session used as follow-up"},
            "baseline_mean_ppb": {"Description": "Mean susceptibility at baseline", "Units": "ppb"},
            "followup_mean_ppb": {"Description": "Mean susceptibility at follow-up", "Units": "ppb"},
            "change_mean_ppb": {
                "Description": "Follow-up minus baseline mean susceptibility",
                "Units": "ppb",
            },
            "baseline_median_ppb": {"Description": "Median at baseline", "Units": "ppb"},
            "followup_median_ppb": {"Description": "Median at follow-up", "Units": "ppb"},
            "change_median_ppb": {"Description": "Follow-up minus baseline median", "Units": "ppb"},
            "baseline_n_voxels": {"Description": "Voxels used at baseline"},
            "followup_n_voxels": {"Description": "Voxels used at follow-up"},
        }
        if b0:
            cols.update(change_b0_dictionary())
    else:
        cols = {
            **common,
            "mean_ppb": {"Description": "Mean magnetic susceptibility in the label", "Units": "ppb"},
            "median_ppb": {"Description": "Median magnetic susceptibility", "Units": "ppb"},
            "sd_ppb": {
                "Description": "Sample standard deviation (ddof=1) of susceptibility",
                "Units": "ppb",
            },
            "n_voxels": {"Description": "Number of voxels used (n/a statistics when 0)"},
            "volume_mm3": {"Description": "n_voxels times the voxel volume", "Units": "mm^3"},
        }
        if r2star:
            cols.update({
                "r2star_mean": {"Description": "Mean R2* (multi-echo magnitude fit) over the "
                                "same voxels as mean_ppb", "Units": "1/s"},
                "r2star_median": {"Description": "Median R2*", "Units": "1/s"},
                "r2star_sd": {"Description": "Sample standard deviation (ddof=1) of R2*",
                              "Units": "1/s"},
            })
        if b0:
            cols.update(b0_dictionary())
    selection = []
    if erode_vox:
        selection.append(f"each label eroded by {erode_vox} voxel(s) (6-connectivity)")
    if masked:
        selection.append("restricted to the final QSM mask")
    if min_reliability is not None:
        selection.append(f"voxels with multi-echo reliability < {min_reliability} excluded")
    return {
        **cols,
        "SusceptibilityReference": reference if reference is not None else "n/a",
        "Atlas": atlas_name,
        "VoxelSelection": selection,
        "ErodeVoxels": int(erode_vox),
        "ErosionMode": erosion_mode or "fixed",
        "MinReliability": min_reliability if min_reliability is not None else "n/a",
        "MissingValues": "n/a",
    }
