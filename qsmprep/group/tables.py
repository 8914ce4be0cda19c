"""Output tables of the group level: column dictionaries (JSON sidecars) and the TSV writer.

Every table under ``OUTPUT_DIR/group/`` is written by :func:`write_table` with a JSON data
dictionary (``Description``, ``Units``, ``Levels``) of each of its columns.  The dictionaries
of the statistics tables (``descriptives``, ``anova``, ``ttests``, ``lmm``) live with their
analysis in :data:`qsmprep.group.analyses.ANALYSES`; the shared column entries and the tables
that are not statistics (``dgm_long``, ``dgm_analysis``, ``exclusions``, ``warnings``) live here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .measures import MEASURES

__all__ = ["KEY_COLUMNS", "P", "P_FDR", "SIDECARS", "SIGNIFICANT", "analysis_sidecar", "dgm_long_sidecar",
           "write_table"]

#: key columns shared by the group tables
KEY_COLUMNS = {
    "participant_id": {"Description": "Participant label (BIDS sub-<label>)"},
    "session_id": {"Description": "Session label (BIDS ses-<label>)"},
    "structure": {"Description": "Deep gray matter structure (bilateral mean unless suffixed _left/_right)"},
    "group": {"Description": "Group (value of the group column of participants.tsv)"},
}
#: uncorrected p-value column
P = {"Description": "Two-sided p-value, uncorrected"}
#: FDR-adjusted p-value column
P_FDR = {"Description": "Benjamini-Hochberg FDR-adjusted p-value across structures within the test family"}
#: significance flag column
SIGNIFICANT = {"Description": "p_fdr below the FDR level (fdr_alpha in the report)",
               "Levels": {"True": "significant", "False": "not significant"}}

#: data dictionaries of the tables that are not statistics
SIDECARS = {
    "dgm_analysis": {
        **KEY_COLUMNS,
        "time_index": {"Description": "Position of the session in the session order (0 = first/baseline)"},
        "hemisphere": {"Description": "bilateral (equal-weight mean of left and right label means), left or right"},
        "chi_ppb": {"Description": "Mean magnetic susceptibility of the structure relative to the reference region of the Chimap sidecar", "Units": "ppb"},
        "n_voxels": {"Description": "Number of voxels in the label(s) used"},
    },
    "warnings": {
        "category": {"Description": "data (missing input), exclusion (participant/session left out on purpose), analysis (a test skipped or restricted) or fit (a mixed-model fit problem)"},
        "message": {"Description": "What is missing or skipped, and why"},
    },
    "exclusions": {
        "participant_id": {"Description": "Participant label (BIDS sub-<label>)"},
        "session_id": {"Description": "Session label (BIDS ses-<label>); n/a: every session of the participant"},
        "source": {"Description": "Why the row is here", "Levels": {"exclusion_file": "listed in the --exclude-file TSV", "qc_flagged": "qc_flagged = 1 in the session's ROI table (registration quality below threshold)", "participant_label": "not selected by --participant-label"}},
        "reason": {"Description": "Reason given in the exclusion file, or the qc_reasons of the ROI table"},
        "excluded": {"Description": "true: left out of every analysis; false: listed only (e.g. flagged but kept with --keep-flagged, or an exclusion-file row that matched no ROI table)"},
    },
}


def dgm_long_sidecar(columns, participants_sidecar=None):
    """Data dictionary of ``dgm_long.tsv``.

    Parameters
    ----------
    columns : iterable of str
        Columns of the long table.
    participants_sidecar : dict, optional
        ``participants.json``; its descriptions are reused for the participants.tsv columns.

    Returns
    -------
    dict
        ``column -> {"Description": ..., ["Units": ...]}`` for every column, in order.  The
        R2* (``r2star_*``), B0-orientation (``b0_*``) and registration QC (``qc_*``) columns
        carried over from the ROI tables are described by their participant-level owners
        (:func:`qsmprep.roi.roi_sidecar`, :func:`qsmprep.roi.b0_dictionary`,
        :func:`qsmprep.registration_qc.column_dictionary`).
    """
    from ..registration_qc import column_dictionary
    from ..roi import R2STAR_COLUMNS, b0_dictionary, roi_sidecar

    columns = list(columns)
    carried = {c: e for c, e in roi_sidecar(r2star=True).items() if c in R2STAR_COLUMNS}
    carried.update(b0_dictionary())
    carried.update(column_dictionary(c[len("qc_"):] for c in columns
                                     if c.startswith("qc_") and c not in ("qc_flagged", "qc_reasons")))
    roi = {
        "index": {"Description": "Label value in the atlas label image"},
        "name": {"Description": "Label name"},
        "structure": {"Description": "Anatomical structure (both hemispheres share it)"},
        "hemisphere": {"Description": "Hemisphere"},
        "mean_ppb": {"Description": "Mean magnetic susceptibility in the label", "Units": "ppb"},
        "median_ppb": {"Description": "Median magnetic susceptibility in the label", "Units": "ppb"},
        "sd_ppb": {"Description": "Within-label standard deviation of susceptibility", "Units": "ppb"},
        "n_voxels": {"Description": "Number of voxels of the label inside the QSM mask"},
        "volume_mm3": {"Description": "Label volume inside the QSM mask", "Units": "mm^3"},
    }
    out = {}
    for col in columns:
        if col in KEY_COLUMNS:
            out[col] = KEY_COLUMNS[col]
        elif col in roi:
            out[col] = roi[col]
        elif col in carried:
            out[col] = carried[col]
        elif participants_sidecar and col in participants_sidecar:
            out[col] = participants_sidecar[col]
        else:
            out[col] = {"Description": f"Column {col!r} of participants.tsv"}
    return out


def analysis_sidecar(measure="chi", covariates=(), participants_sidecar=None):
    """Data dictionary of ``dgm_analysis.tsv`` (the value analysed per participant x session).

    Parameters
    ----------
    measure : str
        ``--measure``; for any other than ``chi`` the value column is described as that
        measure's ROI-table column in its unit.
    covariates : sequence of str
        Covariate columns carried into the table.
    participants_sidecar : dict, optional
        ``participants.json``; its description of each covariate is reused.

    Returns
    -------
    dict
        Column dictionary to pass to :func:`write_table` (before its ``_ppb`` renaming).
    """
    side = dict(SIDECARS["dgm_analysis"])
    if measure != "chi":
        m = MEASURES[measure]
        side["chi_ppb"] = {"Description": f"Mean {m.name} of the structure ({m.column} of the ROI tables)",
                           "Units": m.unit}
    for cov in covariates:
        side[cov] = (participants_sidecar or {}).get(cov, {"Description": f"Column {cov!r} of participants.tsv"})
    return side


def _format_floats(col):
    """Text of a float column as ``to_csv(float_format="%.6g", na_rep="n/a")`` writes it.

    The same ``%`` formatting on Python floats, without pandas' per-value formatter objects
    (a third of the group level's writing time at 1,000 participants).
    """
    text = ["n/a" if v != v else "%.6g" % v for v in col.to_numpy().tolist()]
    return pd.Series(text, index=col.index, dtype=object)


def write_table(df, path, sidecar, measure="chi"):
    """Write ``df`` as a BIDS TSV plus its JSON data dictionary (same stem, ``.json``).

    Missing values are written ``n/a``, booleans ``true``/``false``, floats with 6 significant
    digits.  For ``measure != 'chi'`` the ``_ppb`` columns are renamed to the measure's suffix
    (``chi_ppb`` to ``<measure><suffix>``) and their ``Units`` and description replaced.

    Parameters
    ----------
    df : pandas.DataFrame
        Table to write (not modified).
    path : str or Path
        Destination ``.tsv``.
    sidecar : dict
        ``column -> dictionary entry``; a column without an entry is described by its name.
    measure : str
        Key of :data:`qsmprep.group.measures.MEASURES`.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    df = df.copy()
    _, unit, suffix, name = MEASURES[measure]
    side_in = dict(sidecar)
    if measure != "chi":
        renamed = {}
        for col in df.columns:
            entry = dict(side_in.get(col, {"Description": col}))
            if entry.get("Units") == "ppb":
                entry["Units"] = unit
                entry["Description"] = entry["Description"].replace("magnetic susceptibility", name).replace("susceptibility", name)
            new = col[: -len("_ppb")] + suffix if col.endswith("_ppb") else col
            if col == "chi_ppb":
                new = f"{measure}{suffix}"
            renamed[col] = new
            side_in[new] = entry
        df = df.rename(columns=renamed)
    for col in df.columns:
        if df[col].dtype == bool:
            df[col] = df[col].map({True: "true", False: "false"})
        elif isinstance(df[col].dtype, np.dtype) and df[col].dtype.kind == "f":
            df[col] = _format_floats(df[col])
    df.to_csv(path, sep="\t", index=False, na_rep="n/a", float_format="%.6g")
    side = {c: side_in.get(c, {"Description": c}) for c in df.columns}
    path.with_suffix(".json").write_text(json.dumps(side, indent=2) + "\n")
    return path
