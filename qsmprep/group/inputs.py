"""Inputs of the group level: which sessions are analysed, with which participant data.

In the order :func:`collect_inputs` applies them:

1. the ROI tables of the participant level (:func:`qsmprep.derivatives.readers.find_stats_tables`)
   of **completed** subjects only (:func:`qsmprep.publish.completed_subjects`, contract 4);
2. ``participants.tsv`` (and ``participants.json``) joined on ``participant_id``
   (:func:`read_participants`), with the group column and covariates checked;
3. ``--participant-label`` (:func:`select_participants`);
4. ``--exclude-file`` (:func:`read_exclusions`, :func:`apply_exclusions`);
5. registration QC flags of the ROI tables (:func:`session_flag`), left out unless
   ``--keep-flagged`` (contract 2).

Every participant or session left out is recorded as an exclusion row or a warning; input
errors are :class:`~qsmprep.errors.QSMPrepError` subclasses with one-line messages.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..derivatives.readers import find_stats_tables, read_stats_tables
from ..errors import DataError, MissingInputError, NoMatchingData, UsageError
from ..stats.cohort import REQUIRED_ROI_COLUMNS, stack_long_table
from .measures import get_measure

LOGGER = logging.getLogger("qsmprep.group")

__all__ = [
    "GroupInputs",
    "apply_exclusions",
    "check_structures",
    "collect_inputs",
    "completed_tables",
    "coverage_warnings",
    "read_exclusions",
    "read_participants",
    "select_participants",
    "session_flag",
]


@dataclass
class GroupInputs:
    """Everything the statistics need from the participant outputs and the BIDS dataset.

    Attributes
    ----------
    found : list of tuple
        ``(participant_id, session_id, atlas, path)`` of the ROI tables selected (before the
        QC-flag filter: a flagged session kept out is still here).
    sessions : list of tuple
        ``(participant_id, session_id)`` of the sessions analysed.
    participants : pandas.DataFrame
        ``participants.tsv``.
    participants_sidecar : dict or None
        ``participants.json`` when present and valid.
    exclusion_rows : list of dict
        Rows of ``exclusions.tsv`` (``participant_id, session_id, source, reason, excluded``).
    data_warnings : list of str
        Missing or unusable input, in plain words.
    read : qsmprep.derivatives.readers.StatsTables
        Every ROI table of ``found``, parsed.
    keep : list of int
        Positions in ``found`` (and ``read``) of the sessions analysed.
    """

    found: list
    sessions: list
    participants: pd.DataFrame
    participants_sidecar: dict | None = None
    exclusion_rows: list = field(default_factory=list)
    data_warnings: list = field(default_factory=list)
    read: object = None
    keep: list = field(default_factory=list)

    @property
    def tables(self):
        """``(participant_id, session_id, DataFrame)`` of the sessions analysed (built on access)."""
        return [(sub, ses, self.read[k]) for (sub, ses), k in zip(self.sessions, self.keep)]

    def long_table(self):
        """The long table of the sessions analysed (:func:`qsmprep.stats.build_long_table`).

        Equal to ``build_long_table(self.tables, self.participants)``, without building one
        DataFrame per session and concatenating them (the tables' rows are stacked from the
        parsed frames, :meth:`~qsmprep.derivatives.readers.StatsTables.stack`).

        Returns
        -------
        pandas.DataFrame
        """
        return stack_long_table(self.read.stack(self.keep), [sub for sub, _ in self.sessions],
                                [ses for _, ses in self.sessions], [self.read.n_rows(k) for k in self.keep],
                                self.participants)


def completed_tables(output_dir, atlas=None):
    """ROI tables of the subjects whose participant level completed.

    Parameters
    ----------
    output_dir : Path
        qsmprep output folder.
    atlas : str, optional
        Atlas to select (see :func:`~qsmprep.derivatives.readers.find_stats_tables`).

    Returns
    -------
    found : list of tuple
        ``(participant_id, session_id, atlas, path)`` of completed subjects.
    incomplete : list of str
        ``sub-<label>`` with ROI tables but no valid completion marker.

    Raises
    ------
    MissingInputError
        No ROI table of a completed subject (exit code 66).
    """
    from ..publish import completed_subjects

    found = find_stats_tables(output_dir, atlas=atlas)
    complete = completed_subjects(output_dir)
    incomplete = sorted({f[0] for f in found if f[0][len("sub-"):] not in complete})
    found = [f for f in found if f[0][len("sub-"):] in complete]
    if not found:
        raise MissingInputError(
            f"no participant outputs (*_desc-dgm_stats.tsv) of a completed subject under {output_dir}/sub-*/: "
            "run the participant level first (qsmprep BIDS_DIR OUTPUT_DIR participant)"
            + (f" (incomplete, rerun them: {', '.join(incomplete)})" if incomplete else "")
        )
    return found, incomplete


def read_participants(bids_dir, group_column="group", covariates=()):
    """Read ``participants.tsv`` (and its ``participants.json``) and check the columns asked for.

    Parameters
    ----------
    bids_dir : Path
        BIDS dataset.
    group_column : str
        Column holding the group (``--group-column``).
    covariates : sequence of str
        Columns entering the mixed model (``--covariates``).

    Returns
    -------
    participants : pandas.DataFrame
        The table, ``participant_id`` as text, ``n/a`` as missing.
    sidecar : dict or None
        ``participants.json``, None when absent or not valid JSON.

    Raises
    ------
    MissingInputError
        ``participants.tsv`` does not exist (exit code 66).
    UsageError
        No ``participant_id`` column, or the group column or a covariate is not a column
        (exit code 64).
    """
    participants_file = Path(bids_dir) / "participants.tsv"
    if not participants_file.is_file():
        raise MissingInputError(
            f"{participants_file} not found: the group level reads the groups (--group-column) from it; "
            "add it (participant_id plus a group column)"
        )
    participants = pd.read_csv(participants_file, sep="\t", na_values=["n/a"], keep_default_na=False,
                               dtype={"participant_id": str})
    sidecar = None
    side = participants_file.with_suffix(".json")
    if side.exists():
        try:
            sidecar = json.loads(side.read_text())
        except ValueError:
            sidecar = None
    columns = [c for c in participants.columns if c != "participant_id"]
    if "participant_id" not in participants.columns:
        raise UsageError(f"{participants_file} has no participant_id column (BIDS requires it).")
    if group_column not in participants.columns:
        raise UsageError(
            f"--group-column {group_column!r} is not a column of {participants_file} (columns: "
            f"{', '.join(columns) or 'none'})"
        )
    missing_cov = [c for c in covariates if c not in participants.columns]
    if missing_cov:
        raise UsageError(
            f"--covariates {' '.join(missing_cov)}: not column(s) of {participants_file} (columns: "
            f"{', '.join(columns) or 'none'})"
        )
    return participants, sidecar


def select_participants(found, participant_label, output_dir):
    """Keep the ROI tables of the participants given with ``--participant-label``.

    Parameters
    ----------
    found : list of tuple
        ``(participant_id, session_id, atlas, path)``.
    participant_label : sequence of str or None
        Labels with or without ``sub-``; None or empty keeps everything.
    output_dir : Path
        For the error message.

    Returns
    -------
    list of tuple
        The selected entries of ``found``.

    Raises
    ------
    NoMatchingData
        A label has no ROI table (exit code 18).
    """
    if not participant_label:
        return found
    wanted = {lab if str(lab).startswith("sub-") else f"sub-{lab}" for lab in participant_label}
    have = {f[0] for f in found}
    absent = sorted(wanted - have)
    if absent:
        raise NoMatchingData(
            f"--participant-label {' '.join(a.removeprefix('sub-') for a in absent)}: no ROI table "
            f"(*_desc-dgm_stats.tsv) under {output_dir} for {', '.join(absent)}"
        )
    return [f for f in found if f[0] in wanted]


def read_exclusions(path):
    """Read an exclusion file (``--exclude-file``).

    A TSV with columns ``participant_id`` (with or without ``sub-``), optional ``session_id``
    (with or without ``ses-``; empty or ``n/a``: every session) and ``reason`` (free text).

    Parameters
    ----------
    path : str or Path
        The TSV file.

    Returns
    -------
    pandas.DataFrame
        ``participant_id, session_id, reason`` with BIDS prefixes; ``session_id`` is ``n/a``
        for whole participants.

    Raises
    ------
    MissingInputError
        The file does not exist or cannot be read (66).
    UsageError
        The file has no ``participant_id`` or no ``reason`` column, or an empty participant
        (64).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"--exclude-file {path} does not exist; give a TSV with columns participant_id, "
                                "session_id (optional) and reason.")
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise MissingInputError(f"--exclude-file {path} cannot be read as a TSV: {exc}") from exc
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in ("participant_id", "reason") if c not in df.columns]
    if missing:
        raise UsageError(f"--exclude-file {path} lacks column(s) {', '.join(missing)} (found: "
                         f"{', '.join(df.columns) or 'none'}); it needs participant_id, optional session_id, reason.")
    if "session_id" not in df.columns:
        df["session_id"] = ""
    df = df[["participant_id", "session_id", "reason"]].apply(lambda c: c.str.strip())
    if (df["participant_id"].isin(["", "n/a"])).any():
        row = int(df.index[df["participant_id"].isin(["", "n/a"])][0]) + 2
        raise UsageError(f"--exclude-file {path}, line {row}: participant_id is empty.")
    df["participant_id"] = df["participant_id"].map(lambda v: v if v.startswith("sub-") else f"sub-{v}")
    df["session_id"] = df["session_id"].map(
        lambda v: "n/a" if v in ("", "n/a") else (v if v.startswith("ses-") else f"ses-{v}"))
    df["reason"] = df["reason"].replace("", "n/a")
    return df.reset_index(drop=True)


def apply_exclusions(found, exclusions):
    """Leave out the participants/sessions of an exclusion table.

    Parameters
    ----------
    found : list of tuple
        ``(participant_id, session_id, atlas, path)``.
    exclusions : pandas.DataFrame
        Output of :func:`read_exclusions`.

    Returns
    -------
    found : list of tuple
        Entries not excluded.
    rows : list of dict
        One ``exclusions.tsv`` row per exclusion-file row (``excluded`` false when it matched
        no ROI table).
    warnings : list of str
        One per exclusion-file row that matched nothing.
    """
    rows, warnings = [], []
    keys = {(sub, ses) for sub, ses, _, _ in found}
    subs = {sub for sub, _, _, _ in found}
    drop = set()
    for row in exclusions.itertuples():
        if row.session_id == "n/a":
            hit = {k for k in keys if k[0] == row.participant_id}
        else:
            hit = {k for k in keys if k == (row.participant_id, row.session_id)}
        drop |= hit
        rows.append({"participant_id": row.participant_id, "session_id": row.session_id,
                     "source": "exclusion_file", "reason": row.reason, "excluded": bool(hit)})
        if not hit:
            what = row.participant_id if row.session_id == "n/a" else f"{row.participant_id} {row.session_id}"
            warnings.append(f"exclusion file: {what} matches no ROI table (nothing excluded)"
                            + ("" if row.participant_id in subs else "; check the label"))
    return [f for f in found if (f[0], f[1]) not in drop], rows, warnings


def session_flag(table):
    """Registration QC verdict of one ROI table (contract 2).

    Parameters
    ----------
    table : pandas.DataFrame
        One session's ROI table.

    Returns
    -------
    flagged : bool
        True when any row has ``qc_flagged == 1``; a table without the column is not flagged.
    reasons : str
        The distinct ``qc_reasons`` joined with ``"; "`` (``"qc_flagged = 1"`` when flagged
        without reasons; empty when not flagged).
    """
    if "qc_flagged" not in table.columns:
        return False, ""
    flagged = bool((pd.to_numeric(table["qc_flagged"], errors="coerce") == 1).any())
    reasons = ""
    if flagged and "qc_reasons" in table.columns:
        vals = [str(v) for v in table["qc_reasons"].dropna().unique() if str(v) not in ("", "n/a")]
        reasons = "; ".join(vals)
    return flagged, reasons or ("qc_flagged = 1" if flagged else "")


def collect_inputs(bids_dir, output_dir, group_column="group", covariates=(), atlas=None,
                   participant_label=None, exclude_file=None, keep_flagged=False, measure="chi"):
    """Find, select and read everything the group level analyses; nothing is written.

    Parameters
    ----------
    bids_dir, output_dir : Path
        BIDS dataset (``participants.tsv``) and qsmprep output folder (ROI tables).
    group_column, covariates : see :func:`read_participants`.
    atlas : str, optional
        See :func:`~qsmprep.derivatives.readers.find_stats_tables`.
    participant_label : sequence of str, optional
        See :func:`select_participants`.
    exclude_file : str or Path, optional
        See :func:`read_exclusions`.
    keep_flagged : bool
        Keep sessions flagged by registration QC (default: leave them out).
    measure : str
        ``--measure``; its ROI-table column must exist in at least one table.

    Returns
    -------
    GroupInputs

    Raises
    ------
    MissingInputError
        No ROI table of a completed subject, no ``participants.tsv``, an unreadable exclusion
        file, or no table with the measure's column (66).
    UsageError
        Bad group column, covariate or exclusion file (64).
    NoMatchingData
        A ``--participant-label`` without ROI table, or every session excluded (18).
    DataError
        A ROI table lacks a column the analysis needs (65).
    """
    value_column = get_measure(measure).column
    found, incomplete = completed_tables(output_dir, atlas)
    participants, participants_sidecar = read_participants(bids_dir, group_column, covariates)

    exclusion_rows = []
    data_warnings = [f"{pid}: participant level not completed (no completion marker in logs/completed/): "
                     "left out; rerun its participant level" for pid in incomplete]
    for pid in incomplete:
        LOGGER.warning("%s: participant level not completed: left out of the group analysis", pid)
    found = select_participants(found, participant_label, output_dir)
    if exclude_file:
        found, rows, warnings = apply_exclusions(found, read_exclusions(exclude_file))
        exclusion_rows += rows
        data_warnings += warnings

    # read the ROI tables; leave out QC-flagged sessions unless asked to keep them (contract 2)
    read = read_stats_tables([f[3] for f in found])
    # the flag column of every table at once; session_flag gives the reasons of the flagged ones
    flags = read.any_row("qc_flagged", lambda col: pd.to_numeric(col, errors="coerce") == 1)
    keep = []
    n_flagged = 0
    for k, (sub, ses, _, path) in enumerate(found):
        columns = read.columns(k)
        lacking = [c for c in REQUIRED_ROI_COLUMNS if c not in columns]
        if lacking:
            raise DataError(f"{path} is not a qsmprep ROI table (no column(s) {', '.join(lacking)}): rerun the "
                            f"participant level of {sub} or remove the file")
        if flags[k]:
            flagged, reasons = session_flag(read[k])
            n_flagged += 1
            exclusion_rows.append({"participant_id": sub, "session_id": ses, "source": "qc_flagged",
                                   "reason": reasons, "excluded": not keep_flagged})
            if not keep_flagged:
                continue
        keep.append(k)
    if n_flagged:
        data_warnings.append(
            f"{n_flagged} session(s) flagged by registration QC (qc_flagged = 1) "
            + ("kept in the analysis (--keep-flagged)" if keep_flagged else "left out (use --keep-flagged to keep them)")
        )
    if not keep:
        raise NoMatchingData(
            f"every ROI table under {output_dir} was excluded (exclusion file / QC flags); nothing to analyse"
        )
    if measure != "chi" and not any(value_column in read.columns(k) for k in keep):
        raise MissingInputError(
            f"--measure {measure}: the ROI tables under {output_dir} have no {value_column} column; rerun the "
            "participant level with a qsmprep version that writes R2* (or use --measure chi)"
        )
    return GroupInputs(found, [(found[k][0], found[k][1]) for k in keep], participants, participants_sidecar,
                       exclusion_rows, data_warnings, read=read, keep=keep)


def check_structures(long, structures, hemispheres=False):
    """Check that every requested structure is in the ROI tables.

    Parameters
    ----------
    long : pandas.DataFrame
        Long table (:func:`qsmprep.stats.build_long_table`).
    structures : sequence of str
        ``--structures`` (case-insensitive); with ``hemispheres`` also ``<structure>_left`` /
        ``_right``.
    hemispheres : bool
        Left and right analysed separately.

    Raises
    ------
    UsageError
        A structure is in no ROI table (exit code 64); the message lists those available.
    """
    present = set(long["structure"].unique())
    available = sorted(present)
    req = [str(s).lower() for s in structures]
    unknown = [s for s in req if s not in present and not (hemispheres and s.rsplit("_", 1)[0] in present)]
    if unknown:
        raise UsageError(
            f"--structures {' '.join(unknown)}: not in the ROI tables (available: {', '.join(available)})"
        )


def coverage_warnings(long, participants, found, exclusion_rows, participant_label=None):
    """Participants of ``participants.tsv`` without ROI tables, and the reverse.

    Parameters
    ----------
    long : pandas.DataFrame
        Long table of the sessions analysed.
    participants : pandas.DataFrame
        ``participants.tsv``.
    found : list of tuple
        ``(participant_id, session_id, atlas, path)`` selected.
    exclusion_rows : list of dict
        Exclusions (an excluded participant is not reported as missing).
    participant_label : sequence of str, optional
        With a selection only the selected participants can be missing.

    Returns
    -------
    list of str
        One warning per participant listed without any ROI table, and per participant with
        ROI tables but no ``participants.tsv`` row.
    """
    out = []
    with_data = set(long["participant_id"].unique())
    listed = participants["participant_id"].astype(str).map(lambda v: v if v.startswith("sub-") else f"sub-{v}")
    selected = set(listed) if not participant_label else set(listed) & {f[0] for f in found}
    excluded_subs = {r["participant_id"] for r in exclusion_rows if r["excluded"]}
    for pid in sorted(selected - with_data - excluded_subs):
        out.append(f"{pid}: listed in participants.tsv but no ROI table found (all sessions missing)")
    for pid in sorted(with_data - set(listed)):
        out.append(f"{pid}: has ROI tables but no row in participants.tsv")
    return out
