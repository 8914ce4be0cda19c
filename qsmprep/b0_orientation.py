"""The head's orientation to B0 in the atlas frame, and its change between sessions (plain numpy).

Why it matters: susceptibility is measured from a field that depends on the angle between B0
and the anatomy. The reconstruction takes that angle into account (the dipole kernel is built
along each session's own B0, :func:`qsmprep.qsm.kernels.b0_direction_from_affine`), but not
perfectly: on the independent simulator (``benchmarks/independent_tilt.py``, noise-free heads
imaged axially and with B0 tilted against the anatomy) the default chain's substantia nigra and
red nucleus read lower when the head is tilted, because PDF's reliability weights turn with B0
(``docs/validation.md``, "Where the tilt effect comes from"). Measured (ppb, tilted minus axial,
PDF on the perfect total field, SN and RN): 1.1-1.9 at 2 degrees, 1.8-4.0 at 8, 0.8-2.8 at
15; the full noise-free chain, largest over all labels: 1.6 at 2 degrees, 2.6 at 4, 5.0 at 8
(SN and RN), the thalamus within 0.8 at 2-8 degrees. A head that sits differently in the coil at follow-up therefore
gives these structures a change that is not in the tissue.

qsmprep cannot remove that bias, so it measures the head's orientation to B0 in every session
and flags what may carry it:

* B0 in a session is the scanner z axis in the GRE's world frame (as everywhere in qsmprep);
* the session's GRE points are carried into the atlas frame through the session's own transform
  chain (the one its labels came through), and :func:`rigid_fit` finds the rotation that best
  maps them (least squares, Kabsch), averaging out any non-linear part of the chain;
* that rotation takes B0 into the atlas frame (:func:`b0_in_frame`): a unit vector in the atlas
  template's RAS axes, and its tilt from the atlas's inferior-superior axis;
* between two sessions of a subject, the angle between their B0 vectors
  (:func:`angle_between_deg`) is the change of the head's orientation to B0. Through two atlas
  registrations it is approximate (up to 1.4 degrees off on the independent heads), so the
  change table measures it directly instead: the follow-up GRE magnitude registered rigidly to
  the baseline one, the same fit on the point pairs
  (:func:`qsmprep.registration.b0_angle_between_sessions`; within 0.01 degrees there). Above
  :data:`ANGLE_WARN_DEG` the change table flags :data:`SENSITIVE_STRUCTURES`; the group level
  warns from the tables' vectors (:func:`orientation_warning`).

Kabsch W. A solution for the best rotation to relate two sets of vectors. Acta Cryst A
1976;32:922-923.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

#: B0 in the scanner (GRE world) frame: the z axis, as in :mod:`qsmprep.qsm.kernels`
B0_WORLD = (0.0, 0.0, 1.0)
#: between-session angle (degrees) above which :data:`SENSITIVE_STRUCTURES` are flagged: the
#: largest angle measured (2, 4, 8 degrees) at which the orientation bias stayed below the 2 ppb
#: change target
#: (full noise-free chain, largest over 12 labels: 1.5 / 1.6 ppb at 2 degrees, 2.6 / 1.8 at 4,
#: 3.2 / 5.0 at 8, seeds 1 / 2; docs/validation.md)
ANGLE_WARN_DEG = 2.0
#: structures (``structure`` column of the label table) whose mean moves with the head's
#: orientation to B0 by more than 2 ppb on the independent simulator at 8 degrees
SENSITIVE_STRUCTURES = ("substantia_nigra", "red_nucleus")
#: at most this many GRE brain voxels are carried into the atlas frame (an even subsample)
MAX_POINTS = 4000


def mask_points(mask: np.ndarray, affine: np.ndarray, max_points: int = MAX_POINTS) -> np.ndarray:
    """World (RAS, mm) coordinates of an even subsample of a mask's voxels.

    Parameters
    ----------
    mask : ndarray, 3-D
        Non-zero voxels are sampled.
    affine : ndarray, shape (4, 4)
        Voxel -> world (RAS) affine of the mask.
    max_points : int, default :data:`MAX_POINTS`
        Upper bound on the points returned (every k-th voxel in scan order).

    Returns
    -------
    ndarray, shape (N, 3)

    Raises
    ------
    ValueError
        If the mask has fewer than 4 voxels (no rotation can be fitted).
    """
    ijk = np.argwhere(np.asarray(mask) > 0)
    if len(ijk) < 4:
        raise ValueError(f"the mask has {len(ijk)} voxel(s); at least 4 are needed")
    step = max(1, int(np.ceil(len(ijk) / max_points)))
    ijk = ijk[::step].astype(float)
    aff = np.asarray(affine, float)
    return ijk @ aff[:3, :3].T + aff[:3, 3]


def rigid_fit(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares rotation and translation with ``dst ~ R @ src + t`` (Kabsch 1976).

    Parameters
    ----------
    src, dst : ndarray, shape (N, 3)
        Corresponding points (N >= 3, not all on one line).

    Returns
    -------
    rotation : ndarray, shape (3, 3)
        A proper rotation (determinant +1).
    translation : ndarray, shape (3,)
    rms : float
        Root-mean-square residual (the points' units): the part of the mapping that is not
        rigid (scaling, warps) or an error.

    Raises
    ------
    ValueError
        If the shapes differ or there are fewer than 3 points.

    Examples
    --------
    >>> r = np.array([[0., -1, 0], [1, 0, 0], [0, 0, 1]])
    >>> p = np.array([[0., 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 3]])
    >>> rot, t, rms = rigid_fit(p, p @ r.T + 5)
    >>> np.allclose(rot, r), np.allclose(t, 5), rms < 1e-9
    (True, True, True)
    """
    src = np.asarray(src, float)
    dst = np.asarray(dst, float)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or len(src) < 3:
        raise ValueError(f"need two (N>=3, 3) point arrays of one shape, got {src.shape} and "
                         f"{dst.shape}")
    cs, cd = src.mean(0), dst.mean(0)
    h = (src - cs).T @ (dst - cd)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    rot = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    t = cd - rot @ cs
    rms = float(np.sqrt(((src @ rot.T + t - dst) ** 2).sum(1).mean()))
    return rot, t, rms


def b0_in_frame(rotation: np.ndarray, b0_world: Iterable[float] = B0_WORLD) -> np.ndarray:
    """B0's unit vector after the rotation that carries the session's world into a frame.

    Parameters
    ----------
    rotation : ndarray, shape (3, 3)
        From :func:`rigid_fit` (session world points -> frame points, both RAS).
    b0_world : sequence of float, default :data:`B0_WORLD`
        B0 in the session's world (RAS) frame.

    Returns
    -------
    ndarray, shape (3,)
        Unit vector in the frame's RAS axes.
    """
    v = np.asarray(rotation, float) @ np.asarray(list(b0_world), float)
    return v / np.linalg.norm(v)


def angle_between_deg(u: Iterable[float], v: Iterable[float]) -> float:
    """Angle (degrees, 0-180) between two vectors.

    Parameters
    ----------
    u, v : sequence of float
        Non-zero 3-vectors.

    Returns
    -------
    float
        NaN when either vector has a non-finite component or zero length.

    Examples
    --------
    >>> round(angle_between_deg([0, 0, 1], [0, np.sin(np.pi / 36), np.cos(np.pi / 36)]), 6)
    5.0
    """
    u = np.asarray(list(u), float)
    v = np.asarray(list(v), float)
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    if not (np.all(np.isfinite(u)) and np.all(np.isfinite(v))) or nu == 0 or nv == 0:
        return float("nan")
    # atan2 of |u x v| and u.v: accurate at small angles (arccos is not)
    return float(np.degrees(np.arctan2(np.linalg.norm(np.cross(u, v)), float(u @ v))))


def tilt_deg(b0_frame: Iterable[float]) -> float:
    """Angle (degrees) between B0 and the frame's inferior-superior (z) axis.

    Parameters
    ----------
    b0_frame : sequence of float
        B0 in the frame's RAS axes (:func:`b0_in_frame`).

    Returns
    -------
    float
    """
    return angle_between_deg(b0_frame, (0.0, 0.0, 1.0))


def session_orientation(gre_points: np.ndarray, frame_points: np.ndarray,
                        b0_world: Iterable[float] = B0_WORLD) -> dict:
    """B0 of one session in a common frame, from its points mapped into that frame.

    Parameters
    ----------
    gre_points : ndarray, shape (N, 3)
        Points in the session's GRE world (RAS, mm), e.g. :func:`mask_points` of its brain mask.
    frame_points : ndarray, shape (N, 3)
        The same points carried into the frame (RAS, mm) by the session's transform chain.
    b0_world : sequence of float, default :data:`B0_WORLD`
        B0 in the session's world frame.

    Returns
    -------
    dict
        ``B0Direction`` (unit vector, frame RAS), ``TiltDeg`` (:func:`tilt_deg`),
        ``FitResidualMm`` (RMS of the rigid fit, :func:`rigid_fit`) and ``Points`` (N).
    """
    rot, _, rms = rigid_fit(gre_points, frame_points)
    b0 = b0_in_frame(rot, b0_world)
    return {"B0Direction": [float(x) for x in b0], "TiltDeg": tilt_deg(b0),
            "FitResidualMm": rms, "Points": int(len(gre_points))}


def flag_rows(structures: Iterable[str], angle_deg: float, threshold_deg: float = ANGLE_WARN_DEG,
              sensitive: Iterable[str] = SENSITIVE_STRUCTURES) -> np.ndarray:
    """Which rows of a change table carry a possible orientation bias.

    Parameters
    ----------
    structures : sequence of str
        The ``structure`` of each row.
    angle_deg : float
        Angle between the two sessions' B0 directions (NaN: unknown, nothing flagged).
    threshold_deg : float, default :data:`ANGLE_WARN_DEG`
    sensitive : sequence of str, default :data:`SENSITIVE_STRUCTURES`

    Returns
    -------
    ndarray of int (0/1)
        1 where the structure is sensitive and ``angle_deg > threshold_deg``.
    """
    structures = [str(s) for s in structures]
    if not np.isfinite(angle_deg) or angle_deg <= threshold_deg:
        return np.zeros(len(structures), dtype=int)
    sens = set(sensitive)
    return np.array([int(s in sens) for s in structures], dtype=int)


def largest_session_angles(long, b0_columns=("b0_x", "b0_y", "b0_z"), measured=None):
    """Per participant, the largest angle between two of its sessions' B0 directions.

    Parameters
    ----------
    long : pandas.DataFrame
        Rows of ROI tables with ``participant_id``, ``session_id`` and the B0 columns (the
        group level's long table; one B0 per session, repeated on its rows).
    b0_columns : sequence of str
        The B0 vector's columns (:data:`qsmprep.roi.B0_COLUMNS`).
    measured : pandas.DataFrame, optional
        Angles measured directly (``participant_id``, ``session_a``, ``session_b``,
        ``b0_angle_deg``; the change tables'): each replaces the estimate of its session pair
        from the vectors, and counts for a participant whose tables have no vectors.

    Returns
    -------
    pandas.DataFrame
        ``participant_id``, ``session_a``, ``session_b``, ``b0_angle_deg``, ``source``
        (``"measured"`` or ``"atlas frame"``): one row per participant with at least one
        session pair (the pair with the largest angle), sorted by participant. Empty when
        there are neither vectors nor measured angles.
    """
    import pandas as pd

    cols = ["participant_id", "session_a", "session_b", "b0_angle_deg", "source"]
    pairs = {}  # participant -> {(session_a, session_b): (angle, source)}
    need = ["participant_id", "session_id", *b0_columns]
    if set(need) <= set(long.columns):
        per = long[need].drop_duplicates(["participant_id", "session_id"])
        for pid, grp in per.groupby("participant_id", sort=True):
            vecs = grp[list(b0_columns)].apply(pd.to_numeric, errors="coerce").to_numpy(float)
            ses = grp["session_id"].astype(str).tolist()
            ok = [i for i in range(len(ses)) if np.all(np.isfinite(vecs[i]))]
            for a in range(len(ok)):
                for b in range(a + 1, len(ok)):
                    key = tuple(sorted((ses[ok[a]], ses[ok[b]])))
                    pairs.setdefault(pid, {})[key] = (
                        angle_between_deg(vecs[ok[a]], vecs[ok[b]]), "atlas frame")
    if measured is not None:
        for r in measured.itertuples():
            key = tuple(sorted((str(r.session_a), str(r.session_b))))
            pairs.setdefault(r.participant_id, {})[key] = (float(r.b0_angle_deg), "measured")
    rows = []
    for pid in sorted(pairs):
        (sa, sb), (ang, src) = max(pairs[pid].items(), key=lambda kv: kv[1][0])
        rows.append({"participant_id": pid, "session_a": sa, "session_b": sb,
                     "b0_angle_deg": ang, "source": src})
    return pd.DataFrame(rows, columns=cols)


def orientation_warning(long, structures, threshold_deg: float = ANGLE_WARN_DEG,
                        sensitive: Iterable[str] = SENSITIVE_STRUCTURES,
                        measured=None) -> str | None:
    """The group level's warning about sessions whose head orientation to B0 differs.

    Parameters
    ----------
    long : pandas.DataFrame
        The group level's long table (:func:`largest_session_angles`).
    structures : sequence of str
        Structures analysed.
    threshold_deg : float, default :data:`ANGLE_WARN_DEG`
    sensitive : sequence of str, default :data:`SENSITIVE_STRUCTURES`
    measured : pandas.DataFrame, optional
        The change tables' measured angles (:func:`largest_session_angles`).

    Returns
    -------
    str or None
        One sentence naming the participants above the threshold (largest angle and its
        sessions) and the sensitive structures analysed; None when no analysed structure is
        sensitive or no participant is above the threshold.
    """
    hit = [s for s in structures if s in set(sensitive)]
    if not hit:
        return None
    ang = largest_session_angles(long, measured=measured)
    over = ang[ang["b0_angle_deg"] > threshold_deg]
    if over.empty:
        return None
    who = ", ".join(f"{r.participant_id} {r.b0_angle_deg:.1f} deg ({r.session_a} vs {r.session_b}"
                    + ("" if r.source == "measured" else ", atlas-frame estimate") + ")"
                    for r in over.itertuples())
    return (f"{len(over)} of {len(ang)} participant(s) have sessions whose head orientation to "
            f"B0 differs by more than {threshold_deg:g} degrees (measured by the change tables; "
            f"pairs they do not cover estimated from the ROI tables' b0_* columns, within about "
            f"1 degree): {who}. Their {', '.join(hit)} "
            "values may differ between those sessions by an orientation bias of a few ppb that "
            "is not in the tissue (time effects and changes in these structures; "
            "docs/validation.md, 'Where the tilt effect comes from'; the angle per session is in "
            "the b0_* columns of dgm_long.tsv)")
