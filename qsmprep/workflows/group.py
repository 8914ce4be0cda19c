"""Group level: from the participant-level ROI tables to the cohort statistics and report.

``run_group`` is a plain function (nothing at this level benefits from a Nipype graph): it reads
every ``sub-*/[ses-*/]anat/*_desc-dgm_stats.tsv`` under the output directory and
``participants.tsv`` from the BIDS directory, runs the statistics of :mod:`qsmprep.stats` and
writes ``OUTPUT_DIR/group/``::

    dgm_long.tsv       every label of every session + participants.tsv columns (contract table)
    dgm_analysis.tsv   the value analysed per participant x session x structure (chi_ppb)
    descriptives.tsv   mean +/- SD per structure x group x session
    anova.tsv          mixed ANOVA (group x time) per structure, BH-FDR across structures
    ttests.tsv         paired (within group) and Welch (between groups) t-tests, Cohen's d + CI
    lmm.tsv            linear mixed model chi ~ group * time + covariates + (1 | subject)
    warnings.tsv       every missing session/structure/participant, every skipped analysis and
                       every mixed-model fit problem
    exclusions.tsv     every participant/session left out (exclusion file, QC flag), with reason
    figures/*.svg      per structure: box/strip plot and spaghetti plot
    report.html        self-contained report (figures embedded)

each TSV with a JSON data dictionary (``Description``, ``Units``).  ``--measure r2star`` analyses
the ``r2star_mean`` column (1/s) of the same tables and writes the same files to
``OUTPUT_DIR/group/r2star/`` (columns ending ``_ppb`` are then named ``_per_s``).

Input errors are :class:`~qsmprep.errors.QSMPrepError` subclasses with one-line messages:
no ROI table (66), ``participants.tsv`` missing (66), unknown ``--group-column``,
``--covariates`` or ``--structures`` (64), a bad exclusion file (64/66), a
``--participant-label`` that matches no ROI table (18), ``--measure r2star`` without R2* columns
(66).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from .. import stats as qstats
from ..errors import MissingInputError, NoMatchingData, UsageError

LOGGER = logging.getLogger("qsmprep.group")

DEFAULT_STRUCTURES = ("caudate", "putamen", "pallidum", "thalamus")
_ENTITY = re.compile(r"(?:^|_)(sub|ses|atlas)-([a-zA-Z0-9]+)")

#: ``--measure`` -> (ROI-table column, unit, column suffix of the output tables, name in text)
MEASURES = {
    "chi": ("mean_ppb", "ppb", "_ppb", "susceptibility"),
    "r2star": ("r2star_mean", "1/s", "_per_s", "R2*"),
}

# --------------------------------------------------------------------------------------------
# JSON data dictionaries
_KEY_COLS = {
    "participant_id": {"Description": "Participant label (BIDS sub-<label>)"},
    "session_id": {"Description": "Session label (BIDS ses-<label>)"},
    "structure": {"Description": "Deep gray matter structure (bilateral mean unless suffixed _left/_right)"},
    "group": {"Description": "Group (value of the group column of participants.tsv)"},
}
_P = {"Description": "Two-sided p-value, uncorrected"}
_PFDR = {"Description": "Benjamini-Hochberg FDR-adjusted p-value across structures within the test family"}
_SIG = {"Description": "p_fdr below the FDR level (fdr_alpha in the report)", "Levels": {"True": "significant", "False": "not significant"}}

SIDECARS = {
    "dgm_analysis": {
        **_KEY_COLS,
        "time_index": {"Description": "Position of the session in the session order (0 = first/baseline)"},
        "hemisphere": {"Description": "bilateral (equal-weight mean of left and right label means), left or right"},
        "chi_ppb": {"Description": "Mean magnetic susceptibility of the structure relative to the reference region of the Chimap sidecar", "Units": "ppb"},
        "n_voxels": {"Description": "Number of voxels in the label(s) used"},
    },
    "descriptives": {
        **_KEY_COLS,
        "n": {"Description": "Number of participants with a value"},
        "n_missing": {"Description": "Participants of the group without a value at this session"},
        "mean_ppb": {"Description": "Mean of chi_ppb over participants", "Units": "ppb"},
        "sd_ppb": {"Description": "Between-participant standard deviation (ddof=1)", "Units": "ppb"},
        "sem_ppb": {"Description": "Standard error of the mean", "Units": "ppb"},
        "median_ppb": {"Description": "Median over participants", "Units": "ppb"},
        "min_ppb": {"Description": "Minimum over participants", "Units": "ppb"},
        "max_ppb": {"Description": "Maximum over participants", "Units": "ppb"},
    },
    "anova": {
        **_KEY_COLS,
        "source": {"Description": "Effect", "Levels": {"group": "between-subject group main effect", "time": "within-subject session main effect", "group_x_time": "group by time interaction"}},
        "test": {"Description": "mixed_anova (pingouin.mixed_anova), rm_anova (single group) or oneway_anova (single session)"},
        "f": {"Description": "F statistic"},
        "df1": {"Description": "Numerator degrees of freedom"},
        "df2": {"Description": "Denominator degrees of freedom"},
        "p": _P,
        "p_gg_corr": {"Description": "Greenhouse-Geisser corrected p (more than two sessions only); used for FDR when present"},
        "eps": {"Description": "Greenhouse-Geisser epsilon of the within-subject effects"},
        "partial_eta_sq": {"Description": "Partial eta squared, SS_effect / (SS_effect + SS_error)"},
        "n_subjects": {"Description": "Participants in the ANOVA (complete cases)"},
        "n_excluded": {"Description": "Participants left out because a session value is missing"},
        "p_fdr": _PFDR,
        "significant_fdr": _SIG,
    },
    "ttests": {
        **_KEY_COLS,
        "test": {"Description": "paired (scipy.stats.ttest_rel, within group) or welch (scipy.stats.ttest_ind, equal_var=False, between groups)"},
        "group": {"Description": "Group of sample 1 (the reference group for Welch tests)"},
        "contrast": {"Description": "Difference tested: sample 2 minus sample 1"},
        "session_id": {"Description": "Session of sample 1"},
        "session_id_2": {"Description": "Session of sample 2"},
        "group_2": {"Description": "Group of sample 2"},
        "n_1": {"Description": "Size of sample 1"},
        "n_2": {"Description": "Size of sample 2"},
        "mean_1_ppb": {"Description": "Mean of sample 1", "Units": "ppb"},
        "mean_2_ppb": {"Description": "Mean of sample 2", "Units": "ppb"},
        "difference_ppb": {"Description": "Mean difference, sample 2 minus sample 1 (paired: mean of differences)", "Units": "ppb"},
        "difference_ci_low_ppb": {"Description": "Lower 95% confidence limit of the difference (from the same t-test)", "Units": "ppb"},
        "difference_ci_high_ppb": {"Description": "Upper 95% confidence limit of the difference", "Units": "ppb"},
        "t": {"Description": "t statistic"},
        "df": {"Description": "Degrees of freedom (Welch-Satterthwaite for welch)"},
        "p": _P,
        "effect_size_type": {"Description": "cohen_dz (mean / SD of paired differences) or cohen_d_pooled (difference / pooled SD)"},
        "effect_size": {"Description": "Standardised effect size (unitless)"},
        "effect_size_ci_low": {"Description": "Lower 95% limit of the effect size, exact noncentral-t interval (Steiger and Fouladi 1997)"},
        "effect_size_ci_high": {"Description": "Upper 95% limit of the effect size, exact noncentral-t interval"},
        "p_fdr": _PFDR,
        "significant_fdr": _SIG,
    },
    "lmm": {
        **_KEY_COLS,
        "term": {"Description": "Fixed-effect term (treatment coding: reference group and first session) or marginal contrast"},
        "term_type": {"Description": "fixed_effect, or marginal_contrast (group difference averaged over sessions; change averaged over groups)"},
        "estimate": {"Description": "Estimate (ppb; for a numeric covariate ppb per covariate unit)", "Units": "ppb"},
        "se": {"Description": "Standard error of the estimate", "Units": "ppb"},
        "t": {"Description": "t statistic (estimate / se)"},
        "df": {"Description": "Denominator degrees of freedom, between-within approximation (Schluchter and Elashoff 1990; SAS DDFM=BETWITHIN); tests with df below the minimum are not run (n/a)"},
        "p": {"Description": "Two-sided p-value from the t distribution with df degrees of freedom, uncorrected"},
        "ci_low": {"Description": "Lower 95% confidence limit (t distribution, df)", "Units": "ppb"},
        "ci_high": {"Description": "Upper 95% confidence limit (t distribution, df)", "Units": "ppb"},
        "n_observations": {"Description": "Observations (participant x session) in the model"},
        "n_subjects": {"Description": "Participants in the model"},
        "n_subjects_incomplete": {"Description": "Participants in the model with at least one session missing"},
        "subject_sd_ppb": {"Description": "SD of the random subject intercept", "Units": "ppb"},
        "residual_sd_ppb": {"Description": "Residual (within-subject) SD", "Units": "ppb"},
        "converged": {"Description": "Whether the REML optimiser converged"},
        "fit_ok": {"Description": "false when the fit converged badly: optimiser not converged, singular/boundary fit (subject variance ~0), Hessian not positive definite or non-finite standard errors; such rows are never significant_fdr"},
        "fit_warning": {"Description": "Why fit_ok is false (n/a when it is true)"},
        "p_fdr": {"Description": "BH FDR-adjusted p across structures per term (n/a for the intercept)"},
        "significant_fdr": _SIG,
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
    """Data dictionary of ``dgm_long.tsv`` (participants.tsv descriptions reused if present)."""
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
        if col in _KEY_COLS:
            out[col] = _KEY_COLS[col]
        elif col in roi:
            out[col] = roi[col]
        elif participants_sidecar and col in participants_sidecar:
            out[col] = participants_sidecar[col]
        else:
            out[col] = {"Description": f"Column {col!r} of participants.tsv"}
    return out


# --------------------------------------------------------------------------------------------
def parse_entities(path):
    """``{'sub': ..., 'ses': ..., 'atlas': ...}`` from a BIDS file name."""
    return {k: v for k, v in _ENTITY.findall(Path(path).name)}


def find_stats_tables(output_dir, atlas=None):
    """Every ``*_desc-dgm_stats.tsv`` of the participant level; returns a list of
    ``(participant_id, session_id, atlas, path)``.  ``atlas`` selects one atlas when the
    output holds several (an error otherwise, so that labels of different atlases never mix)."""
    output_dir = Path(output_dir)
    found = []
    for path in sorted(output_dir.glob("sub-*/**/anat/*_desc-dgm_stats.tsv")):
        if "group" in path.relative_to(output_dir).parts[:1]:
            continue
        ent = parse_entities(path)
        if "sub" not in ent:
            continue
        found.append((f"sub-{ent['sub']}", f"ses-{ent['ses']}" if "ses" in ent else "n/a", ent.get("atlas"), path))
    atlases = sorted({a for _, _, a, _ in found if a})
    if atlas is not None:
        found = [f for f in found if f[2] == atlas]
    elif len(atlases) > 1:
        raise UsageError(
            f"ROI tables of several atlases found under {output_dir} ({', '.join(atlases)}); the group "
            "level analyses one atlas at a time: move the other atlas' tables out of the output folder"
        )
    return found


def _read_tsv(path):
    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)


def read_stats_tables(paths):
    """Read many ROI tables at once; returns one DataFrame per path (same order).

    Files sharing a header are concatenated and parsed by a single ``pandas.read_csv`` call
    (parsing 2,000 small files one by one took seconds), then split again.  Same result as
    reading each file with ``n/a`` as the missing value.
    """
    texts = [Path(p).read_text(encoding="utf-8") for p in paths]
    by_header = {}
    for i, text in enumerate(texts):
        lines = text.splitlines()
        if not lines:
            continue
        by_header.setdefault(lines[0], []).append((i, lines[1:]))
    out = [None] * len(texts)
    for header, items in by_header.items():
        body = "".join(f"{i}\t{line}\n" for i, lines in items for line in lines if line.strip())
        frame = pd.read_csv(io.StringIO(f"_file\t{header}\n{body}"), sep="\t", na_values=["n/a"],
                            keep_default_na=False)
        cols = [c for c in frame.columns if c != "_file"]
        # rows of one file are contiguous: slice instead of a groupby
        ids = frame["_file"].to_numpy()
        frame = frame[cols]
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        stops = np.r_[starts[1:], len(ids)]
        for a, b in zip(starts, stops):
            out[int(ids[a])] = frame.iloc[a:b].reset_index(drop=True)
        for i, _ in items:
            if out[i] is None:  # header only
                out[i] = pd.DataFrame(columns=cols)
    return [o if o is not None else pd.DataFrame() for o in out]


def _write_table(df, path, sidecar, measure="chi"):
    """Write ``df`` as TSV + JSON data dictionary; for ``measure != 'chi'`` the ``_ppb``
    columns are renamed to the measure's suffix and their ``Units`` replaced."""
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
    df.to_csv(path, sep="\t", index=False, na_rep="n/a", float_format="%.6g")
    side = {c: side_in.get(c, {"Description": c}) for c in df.columns}
    path.with_suffix(".json").write_text(json.dumps(side, indent=2) + "\n")
    return path


def _step_setting(value):
    """``(method, settings dict)`` of one provenance entry of a Chimap sidecar, or None.

    The participant level writes ``{"Method": ..., "Parameters": {...}, <measured values>}`` for
    most steps and ``{"reference": <region>, "value_ppm": ..., "n_voxels": ...}`` for
    referencing (:func:`qsmprep.qsm.reference.reference_mean`).  Only the method, its parameters
    and text-valued settings describe *how* a map was made; numbers measured on the session
    (mask volume, reference value, voxel counts) differ between sessions by nature and are left
    out, otherwise every cohort would look like one with mixed settings.
    """
    if not isinstance(value, dict):
        return None
    method = None
    for key in ("Method", "method", "reference", "Reference"):
        if key in value and isinstance(value[key], str):
            method = value[key]
            break
    if method is None:
        return None
    params = value.get("Parameters") or value.get("parameters") or {}
    if not isinstance(params, dict):
        params = {"Parameters": params}
    extra = {
        k: v
        for k, v in value.items()
        if k not in ("Method", "method", "reference", "Reference", "Parameters", "parameters") and isinstance(v, str)
    }
    return method, {**params, **extra}


def collect_provenance(output_dir, subjects=None, sessions=None):
    """Summarise the reconstruction provenance of every ``*_Chimap.json`` under ``output_dir``.

    Parameters
    ----------
    output_dir : path
        qsmprep output folder.
    subjects : set of str, optional
        ``sub-<label>`` to include (default: every subject).
    sessions : set of (str, str), optional
        ``(sub-<label>, ses-<label>)`` pairs to include (default: every session); sessions
        left out of the analysis (exclusions, QC flags) are then not summarised.

    Returns
    -------
    dict
        ``step -> {description: count}`` for every step with a method (``DipoleInversion``,
        ``Reference``, ...), ``MagneticFieldStrength`` and ``EchoTime``; ``n_files``; and
        ``QualityFlags``: a list of ``{participant_id, session_id, step, severity, message}``
        from the sidecars' ``QualityFlags`` lists.
    """
    summary = {}
    flags = []
    files = sorted(p for p in Path(output_dir).glob("sub-*/**/*_Chimap.json")
                   if "_space-" not in p.name)  # --output-spaces copies repeat the GRE-grid map
    if subjects is not None:
        files = [f for f in files if parse_entities(f).get("sub") and f"sub-{parse_entities(f)['sub']}" in subjects]
    if sessions is not None:
        def key(f):
            ent = parse_entities(f)
            return (f"sub-{ent.get('sub')}", f"ses-{ent['ses']}" if "ses" in ent else "n/a")
        files = [f for f in files if key(f) in sessions]
    for path in files:
        try:
            side = json.loads(path.read_text())
        except (OSError, ValueError):
            summary.setdefault("_unreadable", {})[str(path.name)] = 1
            continue
        ent = parse_entities(path)
        for flag in side.get("QualityFlags") or []:
            if isinstance(flag, dict):
                flags.append({
                    "participant_id": f"sub-{ent.get('sub', '?')}",
                    "session_id": f"ses-{ent['ses']}" if "ses" in ent else "n/a",
                    "step": str(flag.get("step", "")),
                    "severity": str(flag.get("severity", "")),
                    "message": str(flag.get("message", "")),
                })
        for key, value in side.items():
            setting = _step_setting(value)
            if setting is not None:
                method, details = setting
                desc = str(method)
                if details:
                    desc += " (" + ", ".join(f"{k}={v}" for k, v in details.items()) + ")"
                summary.setdefault(key, {}).setdefault(desc, 0)
                summary[key][desc] += 1
            elif key in ("MagneticFieldStrength",):
                summary.setdefault(key, {}).setdefault(f"{value} T", 0)
                summary[key][f"{value} T"] += 1
            elif key == "EchoTime" and isinstance(value, list):
                desc = f"{len(value)} echoes, TE = " + ", ".join(f"{1000 * float(t):.3g}" for t in value) + " ms"
                summary.setdefault(key, {}).setdefault(desc, 0)
                summary[key][desc] += 1
    summary["n_files"] = len(files)
    summary["QualityFlags"] = flags
    return summary


def read_exclusions(path):
    """Read an exclusion file (``--exclude-file``).

    A TSV with columns ``participant_id`` (with or without ``sub-``), optional ``session_id``
    (with or without ``ses-``; empty or ``n/a``: every session) and ``reason`` (free text).

    Returns
    -------
    DataFrame
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


def _session_flag(table):
    """``(flagged, reasons)`` of one ROI table from its ``qc_flagged``/``qc_reasons`` columns
    (contract 2: a missing column means not flagged)."""
    if "qc_flagged" not in table.columns:
        return False, ""
    flagged = bool((pd.to_numeric(table["qc_flagged"], errors="coerce") == 1).any())
    reasons = ""
    if flagged and "qc_reasons" in table.columns:
        vals = [str(v) for v in table["qc_reasons"].dropna().unique() if str(v) not in ("", "n/a")]
        reasons = "; ".join(vals)
    return flagged, reasons or ("qc_flagged = 1" if flagged else "")


def participant_reports(output_dir, participant_ids, report_dir):
    """Relative links from ``report_dir`` to each participant's ``sub-<label>.html``.

    Returns a list of ``{participant_id, href}`` (``href`` None when the report is missing).
    """
    out = []
    output_dir, report_dir = Path(output_dir), Path(report_dir)
    for pid in participant_ids:
        page = output_dir / f"{pid}.html"
        href = Path(os.path.relpath(page, report_dir)).as_posix() if page.exists() else None
        out.append({"participant_id": pid, "href": href})
    return out


# --------------------------------------------------------------------------------------------
def run_group(
    bids_dir,
    output_dir,
    group_column="group",
    covariates=(),
    structures=DEFAULT_STRUCTURES,
    hemispheres=False,
    sessions=None,
    fdr_alpha=0.05,
    atlas=None,
    figures=True,
    participant_label=None,
    exclude_file=None,
    keep_flagged=False,
    measure="chi",
):
    """Run the group-level analysis and write ``OUTPUT_DIR/group/``.

    Parameters
    ----------
    bids_dir : path of the BIDS dataset (``participants.tsv`` is read from it)
    output_dir : the qsmprep output directory of the participant level
    group_column : column of ``participants.tsv`` defining the between-subject factor
    covariates : columns of ``participants.tsv`` added to the linear mixed model
    structures : structures to analyse (``structure`` column of the ROI tables)
    hemispheres : analyse left and right separately instead of their mean
    sessions : session labels (with or without ``ses-``) in time order; default all sessions
        found, baseline-like labels first (see :func:`qsmprep.stats.cohort.session_sort_key`)
    fdr_alpha : FDR level of the Benjamini-Hochberg correction
    atlas : atlas name when the outputs hold ROI tables of several atlases
    figures : write figures and embed them in the report
    participant_label : labels (with or without ``sub-``) to analyse; default all (fMRIPrep's
        meaning of ``--participant-label`` at the group level)
    exclude_file : TSV of participants/sessions to leave out (:func:`read_exclusions`)
    keep_flagged : keep sessions whose ROI table has ``qc_flagged == 1`` (default: leave out)
    measure : ``chi`` (``mean_ppb``, ppb) or ``r2star`` (``r2star_mean``, 1/s; written to
        ``group/r2star/``)

    Returns
    -------
    dict name -> path of everything written (``dgm_long``, ``descriptives``, ``anova``,
    ``ttests``, ``lmm``, ``warnings``, ``exclusions``, ``report``, ``figures`` (list), ...),
    plus ``warnings`` (list of str) and ``elapsed_s``.

    Raises
    ------
    MissingInputError (66) when no ROI table or no ``participants.tsv`` exists;
    UsageError (64) for an unknown group column, covariate or structure;
    NoMatchingData (18) when ``participant_label`` selects nothing.
    """
    t0 = time.perf_counter()
    bids_dir, output_dir = Path(bids_dir), Path(output_dir)
    if measure not in MEASURES:
        raise UsageError(f"--measure {measure!r} is not one of {', '.join(MEASURES)}.")
    value_column, unit, _, measure_name = MEASURES[measure]
    found = find_stats_tables(output_dir, atlas=atlas)
    # contract 4: only subjects whose publication finished (qsmprep.publish)
    from ..publish import completed_subjects

    complete = completed_subjects(output_dir)
    incomplete = sorted({f[0] for f in found if f[0][len("sub-"):] not in complete})
    found = [f for f in found if f[0][len("sub-"):] in complete]
    if not found:
        raise MissingInputError(
            f"no participant outputs (*_desc-dgm_stats.tsv) of a completed subject under {output_dir}/sub-*/: "
            "run the participant level first (qsmprep BIDS_DIR OUTPUT_DIR participant)"
            + (f" (incomplete, rerun them: {', '.join(incomplete)})" if incomplete else "")
        )
    participants_file = bids_dir / "participants.tsv"
    if not participants_file.is_file():
        raise MissingInputError(
            f"{participants_file} not found: the group level reads the groups (--group-column) from it; "
            "add it (participant_id plus a group column)"
        )
    participants = pd.read_csv(participants_file, sep="\t", na_values=["n/a"], keep_default_na=False,
                               dtype={"participant_id": str})
    participants_sidecar = None
    side = participants_file.with_suffix(".json")
    if side.exists():
        try:
            participants_sidecar = json.loads(side.read_text())
        except ValueError:
            participants_sidecar = None
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

    exclusion_rows = []
    data_warnings = [f"{pid}: participant level not completed (no completion marker in logs/completed/): "
                     "left out; rerun its participant level" for pid in incomplete]
    for pid in incomplete:
        LOGGER.warning("%s: participant level not completed: left out of the group analysis", pid)
    # --participant-label: restrict the analysis to these participants (fMRIPrep's meaning)
    if participant_label:
        wanted = {lab if str(lab).startswith("sub-") else f"sub-{lab}" for lab in participant_label}
        have = {f[0] for f in found}
        absent = sorted(wanted - have)
        if absent:
            raise NoMatchingData(
                f"--participant-label {' '.join(a.removeprefix('sub-') for a in absent)}: no ROI table "
                f"(*_desc-dgm_stats.tsv) under {output_dir} for {', '.join(absent)}"
            )
        found = [f for f in found if f[0] in wanted]

    # exclusion file
    exclusions = read_exclusions(exclude_file) if exclude_file else None
    if exclusions is not None:
        keys = {(sub, ses) for sub, ses, _, _ in found}
        subs = {sub for sub, _, _, _ in found}
        drop = set()
        for row in exclusions.itertuples():
            if row.session_id == "n/a":
                hit = {k for k in keys if k[0] == row.participant_id}
            else:
                hit = {k for k in keys if k == (row.participant_id, row.session_id)}
            drop |= hit
            exclusion_rows.append({"participant_id": row.participant_id, "session_id": row.session_id,
                                   "source": "exclusion_file", "reason": row.reason, "excluded": bool(hit)})
            if not hit:
                what = row.participant_id if row.session_id == "n/a" else f"{row.participant_id} {row.session_id}"
                data_warnings.append(f"exclusion file: {what} matches no ROI table (nothing excluded)"
                                     + ("" if row.participant_id in subs else "; check the label"))
        found = [f for f in found if (f[0], f[1]) not in drop]

    # read the ROI tables; leave out QC-flagged sessions unless asked to keep them (contract 2)
    tables = []
    n_flagged = 0
    for (sub, ses, _, path), tab in zip(found, read_stats_tables([f[3] for f in found])):
        flagged, reasons = _session_flag(tab)
        if flagged:
            n_flagged += 1
            exclusion_rows.append({"participant_id": sub, "session_id": ses, "source": "qc_flagged",
                                   "reason": reasons, "excluded": not keep_flagged})
            if not keep_flagged:
                continue
        tables.append((sub, ses, tab))
    if n_flagged:
        data_warnings.append(
            f"{n_flagged} session(s) flagged by registration QC (qc_flagged = 1) "
            + ("kept in the analysis (--keep-flagged)" if keep_flagged else "left out (use --keep-flagged to keep them)")
        )
    if not tables:
        raise NoMatchingData(
            f"every ROI table under {output_dir} was excluded (exclusion file / QC flags); nothing to analyse"
        )
    if measure != "chi" and not any(value_column in t.columns for _, _, t in tables):
        raise MissingInputError(
            f"--measure {measure}: the ROI tables under {output_dir} have no {value_column} column; rerun the "
            "participant level with a qsmprep version that writes R2* (or use --measure chi)"
        )

    long = qstats.build_long_table(tables, participants)
    available = sorted(set(long["structure"]))
    req = [str(s).lower() for s in structures]
    unknown = [s for s in req if s not in set(long["structure"]) and not (
        hemispheres and s.rsplit("_", 1)[0] in set(long["structure"]))]
    if unknown:
        raise UsageError(
            f"--structures {' '.join(unknown)}: not in the ROI tables (available: {', '.join(available)})"
        )
    atlas_names = sorted({a for _, _, a, _ in found if a})
    # participants listed without any ROI table
    with_data = set(long["participant_id"])
    listed = participants["participant_id"].astype(str).map(lambda v: v if v.startswith("sub-") else f"sub-{v}")
    selected = set(listed) if not participant_label else set(listed) & {f[0] for f in found}
    excluded_subs = {r["participant_id"] for r in exclusion_rows if r["excluded"]}
    for pid in sorted(selected - with_data - excluded_subs):
        data_warnings.append(f"{pid}: listed in participants.tsv but no ROI table found (all sessions missing)")
    for pid in sorted(with_data - set(listed)):
        data_warnings.append(f"{pid}: has ROI tables but no row in participants.tsv")

    table, w = qstats.analysis_table(
        long, structures=structures, hemispheres=hemispheres, group_column=group_column,
        covariates=tuple(covariates), sessions=sessions, value=value_column,
    )
    data_warnings += w
    session_order = table.attrs["session_order"]
    groups = qstats.group_order(table["group"])
    structs = table.attrs["structures"]

    desc = qstats.descriptives(table, groups, session_order)
    anova, n1 = qstats.mixed_anova(table, groups, session_order, alpha=fdr_alpha)
    ttests, n2 = qstats.follow_up_ttests(table, groups, session_order, alpha=fdr_alpha)
    lmm, n3 = qstats.fit_lmm(table, groups, session_order, covariates=tuple(covariates), alpha=fdr_alpha)
    notes = list(dict.fromkeys(n1 + n2 + n3))
    fit_notes = [n for n in notes if "LMM fit problem" in n]
    analysis_notes = [n for n in notes if n not in fit_notes]
    if len(groups) < 2:
        analysis_notes.insert(0, f"only one group ({', '.join(groups)}): between-group analyses skipped")
    if len(session_order) < 2:
        analysis_notes.insert(0, "only one session: within-subject (time) analyses and the LMM skipped")

    group_dir = output_dir / "group" if measure == "chi" else output_dir / "group" / measure
    group_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    written["dgm_long"] = _write_table(long, group_dir / "dgm_long.tsv", dgm_long_sidecar(long.columns, participants_sidecar))
    analysis_sidecar = dict(SIDECARS["dgm_analysis"])
    if measure != "chi":
        analysis_sidecar["chi_ppb"] = {"Description": f"Mean {measure_name} of the structure ({value_column} of the ROI tables)", "Units": unit}
    for cov in covariates:
        analysis_sidecar[cov] = (participants_sidecar or {}).get(cov, {"Description": f"Column {cov!r} of participants.tsv"})
    written["dgm_analysis"] = _write_table(table, group_dir / "dgm_analysis.tsv", analysis_sidecar, measure)
    written["descriptives"] = _write_table(desc, group_dir / "descriptives.tsv", SIDECARS["descriptives"], measure)
    written["anova"] = _write_table(anova, group_dir / "anova.tsv", SIDECARS["anova"], measure)
    written["ttests"] = _write_table(ttests, group_dir / "ttests.tsv", SIDECARS["ttests"], measure)
    lmm_side = dict(SIDECARS["lmm"])
    if measure != "chi":
        for col in ("estimate", "se", "ci_low", "ci_high"):
            lmm_side[col] = {**lmm_side[col], "Units": unit}
    written["lmm"] = _write_table(lmm, group_dir / "lmm.tsv", lmm_side, measure)
    excl_df = pd.DataFrame(exclusion_rows, columns=list(SIDECARS["exclusions"]))
    written["exclusions"] = _write_table(excl_df, group_dir / "exclusions.tsv", SIDECARS["exclusions"])
    excl_msgs = [
        f"{r['participant_id']}{'' if r['session_id'] == 'n/a' else ' ' + r['session_id']} "
        f"{'excluded' if r['excluded'] else 'listed, not excluded'} ({r['source']}): {r['reason']}"
        for r in exclusion_rows
    ]
    warn_df = pd.DataFrame(
        [("data", m) for m in data_warnings] + [("exclusion", m) for m in excl_msgs]
        + [("analysis", m) for m in analysis_notes] + [("fit", m) for m in fit_notes],
        columns=["category", "message"],
    )
    written["warnings_table"] = _write_table(warn_df, group_dir / "warnings.tsv", SIDECARS["warnings"])
    for msg in data_warnings + excl_msgs + analysis_notes + fit_notes:
        LOGGER.warning(msg)

    from ..reports import group as group_report

    figs = (group_report.make_figures(table, groups, session_order, structs, group_dir / "figures",
                                      ylabel=f"{measure_name} ({unit})") if figures else [])
    written["figures"] = [f["path"] for f in figs]
    subjects = sorted(set(table["participant_id"]))
    analysed = {(_sub, _ses) for _sub, _ses, _ in tables if _sub in set(subjects)}
    provenance = collect_provenance(output_dir, set(subjects), analysed)
    elapsed = time.perf_counter() - t0
    context = {
        "version": __version__,
        "bids_dir": bids_dir.name,
        "group_column": group_column,
        "covariates": list(covariates),
        "structures": structs,
        "hemispheres": hemispheres,
        "sessions": session_order,
        "groups": groups,
        "fdr_alpha": fdr_alpha,
        "n_tables": len(tables),
        "atlas": ", ".join(atlas_names) if atlas_names else "n/a",
        "provenance": provenance,
        "elapsed_s": elapsed,
        "measure": measure,
        "measure_name": measure_name,
        "unit": unit,
        "participant_reports": participant_reports(output_dir, subjects, group_dir),
        "exclusions": exclusion_rows,
        "keep_flagged": keep_flagged,
        "participant_label": sorted(participant_label) if participant_label else [],
        "fit_notes": fit_notes,
    }
    written["report"] = group_report.write_report(
        group_dir / "report.html", table, desc, anova, ttests, lmm, data_warnings + excl_msgs, analysis_notes,
        figs, context,
    )
    written["warnings"] = data_warnings + excl_msgs + analysis_notes + fit_notes
    written["elapsed_s"] = time.perf_counter() - t0
    return written
