"""Assemble the cohort table that every group-level statistic works on.

Pure functions (pandas in, pandas out, no file I/O).  The participant-level outputs are one ROI
table per session (``*_desc-dgm_stats.tsv``, columns ``index, name, structure, hemisphere,
mean_ppb, median_ppb, sd_ppb, n_voxels, volume_mm3``); the group level stacks them into a
long table (one row per participant x session x label) and then reduces each
participant x session x structure to the single value that is analysed, ``chi_ppb``.

Hemisphere handling
-------------------
By default the left and right labels of a structure are averaged with **equal weight**
(``chi_ppb = (mean_left + mean_right) / 2``), the convention of most longitudinal QSM papers
(bilateral mean of the two hemispheric ROI means).  Equal weighting keeps the value independent of
how many voxels of each hemisphere survived masking and erosion, which differ between sessions
for reasons unrelated to tissue.  If one hemisphere is missing (``n/a``: no voxel inside the
QSM mask) the bilateral value is ``n/a`` and a warning says so: averaging a single hemisphere
into a "bilateral" value would silently change what the number means.  With
``hemispheres=True`` left and right are analysed as separate structures (``caudate_left``, ...).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ..roi import COLUMNS as _ROI_COLUMNS  # pure module, no nipype

ROI_COLUMNS = tuple(_ROI_COLUMNS)
#: Structures the group level analyses by default (``--structures``): the only definition
#: (:mod:`qsmprep.group` re-exports it); each is a ``structure`` of the default atlas label table
#: (:data:`qsmprep.atlas.DGM_LABELS`), which ``tests/group/test_run.py`` checks.
DEFAULT_STRUCTURES = ("caudate", "putamen", "pallidum", "thalamus")
KEYS = ("participant_id", "session_id")
#: columns without which a ROI table cannot enter the long table
REQUIRED_ROI_COLUMNS = ("structure", "hemisphere", "mean_ppb")
#: optional per-label columns carried into the long table when present: registration QC
#: (``qc_*``, contract 2), R2* (``r2star_*``, contract 3) and the B0 direction (``b0_*``,
#: :mod:`qsmprep.b0_orientation`)
_EXTRA_COLUMN = re.compile(r"^(qc_|r2star_|b0_)")

#: session labels recognised as "first" or "later" time points when no order is given
_EARLY_WORDS = ("baseline", "base", "bl", "screening", "pre", "initial", "first", "t0")
_LATE_WORDS = ("followup", "follow", "fu", "post", "last", "final")


def _add_prefix(value, prefix):
    value = str(value)
    if value == "n/a":
        return value
    return value if value.startswith(prefix) else f"{prefix}{value}"


def session_sort_key(session_id):
    """Sort key for session labels.

    Baseline-like words first (``baseline``, ``pre``, ``screening``, ...), follow-up-like words
    last (``followup``, ``post``, ...), numbers in natural order (``ses-2`` before ``ses-10``);
    otherwise alphabetical.

    Parameters
    ----------
    session_id : str
        Label with or without ``ses-``.

    Returns
    -------
    tuple
        Comparable key.

    Examples
    --------
    >>> sorted(["ses-10", "ses-post", "ses-2", "ses-baseline"], key=session_sort_key)
    ['ses-baseline', 'ses-2', 'ses-10', 'ses-post']
    """
    label = str(session_id).removeprefix("ses-").lower()
    compact = re.sub(r"[^a-z0-9]", "", label)
    rank = 1
    if any(compact.startswith(w) for w in _EARLY_WORDS):
        rank = 0
    elif any(compact.startswith(w) for w in _LATE_WORDS):
        rank = 2
    parts = tuple(
        (0, int(tok), "") if tok.isdigit() else (1, 0, tok) for tok in re.findall(r"\d+|\D+", label)
    )
    return (rank, parts)


def order_sessions(session_ids, sessions=None):
    """The session order used for the ``time`` factor.

    Parameters
    ----------
    session_ids : iterable of str
        Sessions found (NaN ignored).
    sessions : sequence of str, optional
        Labels with or without ``ses-`` that fix the order and select sessions.

    Returns
    -------
    list of str
        ``sessions`` with the ``ses-`` prefix when given, else the sessions found sorted with
        :func:`session_sort_key`.
    """
    if isinstance(session_ids, (pd.Series, pd.Index, np.ndarray)):
        session_ids = pd.unique(session_ids)  # the same set, without a Python loop over every row
    found = sorted({str(s) for s in session_ids if pd.notna(s)}, key=session_sort_key)
    if sessions is None or len(sessions) == 0:
        return found
    return [_add_prefix(s, "ses-") for s in sessions]


def build_long_table(session_tables, participants=None):
    """Stack per-session ROI tables into the long cohort table (``dgm_long.tsv``).

    Parameters
    ----------
    session_tables : iterable of (participant_id, session_id, DataFrame)
        One ROI table per session, with the columns of :data:`ROI_COLUMNS`.
    participants : DataFrame or None
        ``participants.tsv`` (must have ``participant_id``).

    Returns
    -------
    DataFrame with ``participant_id``, ``session_id``, every column of ``participants.tsv``,
    then :data:`ROI_COLUMNS`, then any ``r2star_*`` and ``qc_*`` columns of the ROI tables.
    Participants without a ``participants.tsv`` row get ``NaN`` in the participant columns.
    """
    pids, sess, frames = [], [], []
    for participant_id, session_id, table in session_tables:
        missing = [c for c in REQUIRED_ROI_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(
                f"ROI table of {participant_id} {session_id} lacks column(s) {missing}; expected "
                f"the columns {list(ROI_COLUMNS)}"
            )
        pids.append(_add_prefix(participant_id, "sub-"))
        sess.append(_add_prefix(session_id, "ses-"))
        frames.append(table)
    if not frames:
        raise ValueError("no ROI statistics tables were given")
    # one concatenation, keys added by repetition (no per-table copies: 2,000 tables are common)
    lengths = [len(t) for t in frames]
    return stack_long_table(pd.concat(frames, ignore_index=True), pids, sess, lengths, participants)


def stack_long_table(long, participant_ids, session_ids, lengths, participants=None):
    """The long table from the ROI tables' rows already stacked (:func:`build_long_table`'s work).

    Parameters
    ----------
    long : pandas.DataFrame
        The rows of every session's ROI table, session after session (``pd.concat`` of the
        tables, ``ignore_index=True``).
    participant_ids, session_ids : sequence of str
        Participant and session of each table, with or without ``sub-``/``ses-``.
    lengths : sequence of int
        Rows of each table.
    participants : DataFrame or None
        ``participants.tsv``.

    Returns
    -------
    DataFrame
        As :func:`build_long_table`.
    """
    pids = [_add_prefix(p, "sub-") for p in participant_ids]
    sess = [_add_prefix(s, "ses-") for s in session_ids]
    extra_cols = [c for c in long.columns if c not in ROI_COLUMNS and _EXTRA_COLUMN.match(str(c))]
    for col in ROI_COLUMNS:
        if col not in long.columns:
            long[col] = np.nan
    long = long[list(ROI_COLUMNS) + extra_cols]
    long.insert(0, "session_id", np.repeat(np.asarray(sess, dtype=object), lengths))
    long.insert(0, "participant_id", np.repeat(np.asarray(pids, dtype=object), lengths))
    for col in ("mean_ppb", "median_ppb", "sd_ppb", "n_voxels", "volume_mm3"):
        long[col] = pd.to_numeric(long[col], errors="coerce")
    for col in extra_cols:
        if col.startswith(("r2star_", "b0_")) or col == "qc_flagged":
            long[col] = pd.to_numeric(long[col], errors="coerce")
    long["structure"] = long["structure"].astype(str).str.lower()
    long["hemisphere"] = long["hemisphere"].astype(str).str.lower()
    if participants is not None:
        ptab = participants.copy()
        ptab["participant_id"] = ptab["participant_id"].map(lambda v: _add_prefix(v, "sub-"))
        ptab = ptab.drop_duplicates("participant_id")
        extra = [c for c in ptab.columns if c != "participant_id" and c not in long.columns]
        long = long.merge(ptab[["participant_id"] + extra], on="participant_id", how="left")
        long = long[list(KEYS) + extra + list(ROI_COLUMNS) + extra_cols]
    rank = {s: i for i, s in enumerate(sorted(set(long["session_id"].unique()), key=session_sort_key))}
    long = long.sort_values(
        ["participant_id", "session_id", "index"],
        key=lambda s: s.map(rank) if s.name == "session_id" else s,
        kind="stable",
    ).reset_index(drop=True)
    return long


def analysis_table(
    long,
    structures=DEFAULT_STRUCTURES,
    hemispheres=False,
    group_column="group",
    covariates=(),
    sessions=None,
    value="mean_ppb",
):
    """Reduce the long table to one ``chi_ppb`` per participant x session x structure.

    Left and right labels are averaged with equal weight unless ``hemispheres`` (see the module
    docstring); the grid participant x session x structure is completed so that a missing
    value is visible as NaN.

    Parameters
    ----------
    long : pandas.DataFrame
        Long table (:func:`build_long_table`) with the ``participants.tsv`` columns.
    structures : sequence of str
        Structures to keep (case-insensitive), default :data:`DEFAULT_STRUCTURES`.
    hemispheres : bool
        Analyse left and right as separate structures (``caudate_left``, ...).
    group_column : str
        ``participants.tsv`` column with the group.
    covariates : sequence of str
        ``participants.tsv`` columns carried into the table.
    sessions : sequence of str, optional
        Sessions in time order (with or without ``ses-``); default every session found, in
        :func:`session_sort_key` order.
    value : str
        Column of the long table analysed (``mean_ppb``; ``r2star_mean`` for ``--measure
        r2star``); the result column keeps the name ``chi_ppb`` for every measure (the writer
        renames it together with the units).

    Returns
    -------
    table : pandas.DataFrame
        ``participant_id, session_id, time_index, group``, the covariates, ``structure,
        hemisphere, chi_ppb, n_voxels``; ``attrs["session_order"]`` and
        ``attrs["structures"]`` hold the orders used.  Rows with missing ``chi_ppb`` are kept
        (NaN) so that the caller can count them.
    warnings : list of str
        Every participant, session or structure that is missing or unusable, in plain words;
        nothing is dropped without an entry here.

    Raises
    ------
    ValueError
        ``group_column`` or a covariate is not a column of ``long``.
    """
    warnings = []
    if group_column not in long.columns:
        raise ValueError(
            f"group column {group_column!r} not found in participants.tsv "
            f"(columns: {[c for c in long.columns if c not in ROI_COLUMNS]})"
        )
    missing_cov = [c for c in covariates if c not in long.columns]
    if missing_cov:
        raise ValueError(f"covariate(s) {missing_cov} not found in participants.tsv")

    session_order = order_sessions(long["session_id"], sessions)
    sessions_found = set(long["session_id"].unique())
    unknown = sorted(sessions_found - set(session_order))
    if unknown:
        warnings.append(
            f"session(s) {', '.join(unknown)} found but not requested: excluded from the analysis"
        )
    absent = [s for s in session_order if s not in sessions_found]
    if absent:
        warnings.append(f"requested session(s) {', '.join(absent)} were not found in any participant")
    data = long[long["session_id"].isin(session_order)].copy()

    no_group = sorted(data.loc[data[group_column].isna(), "participant_id"].unique())
    if no_group:
        warnings.append(
            f"{len(no_group)} participant(s) without a value in column {group_column!r} of "
            f"participants.tsv (excluded from the group analysis): {', '.join(no_group)}"
        )
    data = data[data[group_column].notna()]

    structures = [str(s).lower() for s in structures]
    present = set(data["structure"].unique())
    for s in structures:
        if s not in present:
            warnings.append(f"structure {s!r} is not in any ROI table (available: {sorted(present)})")
    data = data[data["structure"].isin(structures)]
    if value not in data.columns:
        data = data.assign(**{value: np.nan})

    # one row per participant x session x structure x hemisphere
    per_hemi = (
        data.groupby(["participant_id", "session_id", "structure", "hemisphere"], sort=False)
        .agg(chi_ppb=(value, "mean"), n_voxels=("n_voxels", "sum"), n_rows=(value, "size"))
        .reset_index()
    )
    dup = per_hemi[per_hemi["n_rows"] > 1]
    for row in dup.itertuples():
        warnings.append(
            f"{row.participant_id} {row.session_id}: {row.n_rows} labels for {row.structure} "
            f"{row.hemisphere}; their means were averaged"
        )
    for row in per_hemi[per_hemi["chi_ppb"].isna()].itertuples():
        warnings.append(
            f"{row.participant_id} {row.session_id}: {row.structure} {row.hemisphere} has no "
            "value (n/a: no voxel of the label inside the QSM mask)"
        )

    if hemispheres:
        per_hemi["structure"] = np.where(
            per_hemi["hemisphere"].isin(["left", "right"]),
            per_hemi["structure"] + "_" + per_hemi["hemisphere"],
            per_hemi["structure"],
        )
        reduced = per_hemi[["participant_id", "session_id", "structure", "hemisphere", "chi_ppb", "n_voxels"]]
        wanted = [
            f"{s}_{h}" for s in structures for h in ("left", "right") if f"{s}_{h}" in set(reduced["structure"])
        ] + [s for s in structures if s in set(reduced["structure"])]
        have = reduced.groupby(["participant_id", "session_id"])["structure"].agg(set)
        for (pid, ses), names in have.items():
            lacking = [w for w in wanted if w not in names]
            if lacking:
                warnings.append(f"{pid} {ses}: label(s) {', '.join(lacking)} missing from the ROI table")
    else:
        # vectorised: one column per hemisphere, equal-weight mean of left and right
        keys = ["participant_id", "session_id", "structure"]
        lr = per_hemi[per_hemi["hemisphere"].isin(["left", "right"])]
        other = per_hemi[~per_hemi["hemisphere"].isin(["left", "right"])]
        wide = lr.set_index(keys + ["hemisphere"])[["chi_ppb", "n_voxels"]].unstack("hemisphere")
        parts = []
        if len(wide):
            chi_l = wide[("chi_ppb", "left")] if ("chi_ppb", "left") in wide.columns else pd.Series(np.nan, wide.index)
            chi_r = wide[("chi_ppb", "right")] if ("chi_ppb", "right") in wide.columns else pd.Series(np.nan, wide.index)
            has_l = lr.assign(_h=lr["hemisphere"] == "left").groupby(keys, sort=False)["_h"].any().reindex(wide.index)
            has_r = lr.assign(_h=lr["hemisphere"] == "right").groupby(keys, sort=False)["_h"].any().reindex(wide.index)
            nv = wide["n_voxels"].sum(axis=1, min_count=1) if "n_voxels" in wide.columns.get_level_values(0) else np.nan
            bil = pd.DataFrame({"chi_ppb": (chi_l + chi_r) / 2.0, "n_voxels": nv}, index=wide.index)
            bil.loc[~(has_l & has_r), "chi_ppb"] = np.nan
            for (pid, ses, struct) in bil.index[~has_l.to_numpy(bool) | ~has_r.to_numpy(bool)]:
                gone = "left" if not has_l[(pid, ses, struct)] else "right"
                warnings.append(
                    f"{pid} {ses}: {struct} {gone} label missing from the ROI table; bilateral value set to n/a"
                )
            one_nan = has_l & has_r & (chi_l.isna() ^ chi_r.isna())
            for (pid, ses, struct) in bil.index[one_nan.to_numpy(bool)]:
                warnings.append(
                    f"{pid} {ses}: {struct} bilateral value set to n/a because one hemisphere is missing"
                )
            parts.append(bil.reset_index())
        if len(other):
            done = set(map(tuple, lr[keys].drop_duplicates().to_numpy())) if len(lr) else set()
            oth = other.groupby(keys, sort=False).agg(
                chi_ppb=("chi_ppb", lambda v: v.mean(skipna=False)), n_voxels=("n_voxels", "sum")).reset_index()
            oth = oth[[tuple(k) not in done for k in oth[keys].to_numpy()]]
            parts.append(oth)
        reduced = (pd.concat(parts, ignore_index=True) if parts
                   else pd.DataFrame(columns=keys + ["chi_ppb", "n_voxels"]))
        reduced["hemisphere"] = "bilateral"
        reduced = reduced[["participant_id", "session_id", "structure", "hemisphere", "chi_ppb", "n_voxels"]]
        reduced_structures = set(reduced["structure"].unique())
        wanted = [s for s in structures if s in reduced_structures]

    # complete grid so that a missing session or structure is visible as NaN
    subjects = sorted(data["participant_id"].unique())
    grid = pd.MultiIndex.from_product(
        [subjects, session_order, wanted], names=["participant_id", "session_id", "structure"]
    ).to_frame(index=False)
    table = grid.merge(reduced, on=["participant_id", "session_id", "structure"], how="left")
    # (participant, session) and (participant, session, structure) present, as sets of tuples
    # (a groupby(...).agg(set) per participant cost 0.1 s at 1,000 participants)
    pid_arr, ses_arr = data["participant_id"].to_numpy(object), data["session_id"].to_numpy(object)
    pairs = set(zip(pid_arr, ses_arr))
    for pid in subjects:
        miss = [s for s in session_order if (pid, s) not in pairs]
        if miss:
            warnings.append(f"{pid}: no ROI table for session(s) {', '.join(miss)}")
    triples = set(zip(pid_arr, ses_arr, data["structure"].to_numpy(object)))
    for pid, ses in sorted(pairs):  # the order of groupby(["participant_id", "session_id"])
        miss = [s for s in structures if (pid, ses, s) not in triples and s in present]
        if miss:
            warnings.append(f"{pid} {ses}: structure(s) {', '.join(miss)} missing from the ROI table")

    ptab = long.drop_duplicates("participant_id").set_index("participant_id")
    table["group"] = table["participant_id"].map(ptab[group_column]).astype(str)
    for cov in covariates:
        table[cov] = table["participant_id"].map(ptab[cov])
    table["time_index"] = table["session_id"].map({s: i for i, s in enumerate(session_order)})
    table["hemisphere"] = table["hemisphere"].fillna(
        table["structure"].str.extract(r"_(left|right)$")[0].fillna("bilateral" if not hemispheres else "n/a")
    )
    cols = ["participant_id", "session_id", "time_index", "group"] + list(covariates)
    cols += ["structure", "hemisphere", "chi_ppb", "n_voxels"]
    table = table[cols]
    table.attrs["session_order"] = session_order
    table.attrs["structures"] = wanted
    return table, warnings


def group_order(groups, reference=None):
    """Order of the group levels (the first is the reference of every contrast).

    Parameters
    ----------
    groups : iterable
        Group values (converted to text).
    reference : str, optional
        Level to put first when present.

    Returns
    -------
    list of str
        ``reference``, else a control-like label (``HC``, ``control``, ``CTRL``, ``healthy``,
        ...), else the alphabetically first level; then the other levels alphabetically.

    Examples
    --------
    >>> group_order(["MS", "HC", "CIS"])
    ['HC', 'CIS', 'MS']
    """
    levels = sorted({str(g) for g in groups})
    if reference is not None and str(reference) in levels:
        first = str(reference)
    else:
        first = next(
            (g for g in levels if g.lower() in ("hc", "control", "controls", "ctrl", "healthy", "nc", "cn")),
            levels[0] if levels else None,
        )
    return [first] + [g for g in levels if g != first] if first is not None else []
