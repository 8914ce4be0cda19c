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
    warnings.tsv       every missing session/structure/participant and every skipped analysis
    figures/*.svg      per structure: box/strip plot and spaghetti plot
    report.html        self-contained report (figures embedded)

each TSV with a JSON data dictionary (``Description``, ``Units``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import pandas as pd

from .. import __version__
from .. import stats as qstats

LOGGER = logging.getLogger("qsmprep.group")

DEFAULT_STRUCTURES = ("caudate", "putamen", "pallidum", "thalamus")
_ENTITY = re.compile(r"(?:^|_)(sub|ses|atlas)-([a-zA-Z0-9]+)")

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
        "z": {"Description": "Wald z statistic"},
        "p": _P,
        "ci_low": {"Description": "Lower 95% Wald confidence limit", "Units": "ppb"},
        "ci_high": {"Description": "Upper 95% Wald confidence limit", "Units": "ppb"},
        "n_observations": {"Description": "Observations (participant x session) in the model"},
        "n_subjects": {"Description": "Participants in the model"},
        "n_subjects_incomplete": {"Description": "Participants in the model with at least one session missing"},
        "subject_sd_ppb": {"Description": "SD of the random subject intercept", "Units": "ppb"},
        "residual_sd_ppb": {"Description": "Residual (within-subject) SD", "Units": "ppb"},
        "converged": {"Description": "Whether the REML optimiser converged"},
        "p_fdr": {"Description": "BH FDR-adjusted p across structures per term (n/a for the intercept)"},
        "significant_fdr": _SIG,
    },
    "warnings": {
        "category": {"Description": "data (missing input) or analysis (a test skipped or restricted)"},
        "message": {"Description": "What is missing or skipped, and why"},
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
        raise ValueError(
            f"ROI tables of several atlases found ({', '.join(atlases)}); select one (atlas=...)"
        )
    return found


def _read_tsv(path):
    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)


def _write_table(df, path, sidecar):
    path = Path(path)
    df = df.copy()
    for col in df.columns:
        if df[col].dtype == bool:
            df[col] = df[col].map({True: "true", False: "false"})
    df.to_csv(path, sep="\t", index=False, na_rep="n/a", float_format="%.6g")
    side = {c: sidecar.get(c, {"Description": c}) for c in df.columns}
    path.with_suffix(".json").write_text(json.dumps(side, indent=2) + "\n")
    return path


def collect_provenance(output_dir):
    """Summarise the reconstruction provenance of every ``*_Chimap.json`` under ``output_dir``:
    a dict ``step -> {description: count}`` plus ``n_files``."""
    summary = {}
    files = sorted(p for p in Path(output_dir).glob("sub-*/**/*_Chimap.json")
                   if "_space-" not in p.name)  # --output-spaces copies repeat the GRE-grid map
    for path in files:
        try:
            side = json.loads(path.read_text())
        except (OSError, ValueError):
            summary.setdefault("_unreadable", {})[str(path.name)] = 1
            continue
        for key, value in side.items():
            if isinstance(value, dict) and ("Method" in value or "method" in value):
                method = value.get("Method", value.get("method"))
                params = value.get("Parameters") or value.get("parameters") or {}
                extra = {k: v for k, v in value.items() if k not in ("Method", "method", "Parameters", "parameters") and not isinstance(v, (dict, list)) and "Volume" not in k and "Mean" not in k}
                desc = str(method)
                details = {**params, **extra} if isinstance(params, dict) else {"Parameters": params, **extra}
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
    return summary


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

    Returns
    -------
    dict name -> path of everything written (``dgm_long``, ``descriptives``, ``anova``,
    ``ttests``, ``lmm``, ``warnings``, ``report``, ``figures`` (list), ...), plus ``warnings``
    (list of str) and ``elapsed_s``.

    Raises
    ------
    FileNotFoundError when no ROI table exists; ValueError for a missing group column or
    covariate.
    """
    t0 = time.perf_counter()
    bids_dir, output_dir = Path(bids_dir), Path(output_dir)
    found = find_stats_tables(output_dir, atlas=atlas)
    if not found:
        raise FileNotFoundError(
            f"no *_desc-dgm_stats.tsv under {output_dir}/sub-*/: run the participant level first"
        )
    participants_file = bids_dir / "participants.tsv"
    data_warnings = []
    participants = None
    participants_sidecar = None
    if participants_file.exists():
        participants = pd.read_csv(participants_file, sep="\t", na_values=["n/a"], keep_default_na=False, dtype={"participant_id": str})
        side = participants_file.with_suffix(".json")
        if side.exists():
            participants_sidecar = json.loads(side.read_text())
    else:
        data_warnings.append(f"{participants_file} not found: no group information")
        participants = pd.DataFrame({"participant_id": sorted({f[0] for f in found})})
    if group_column not in participants.columns:
        raise ValueError(
            f"group column {group_column!r} not in participants.tsv (columns: {list(participants.columns)}); "
            "choose one with --group-column"
        )

    tables = [(sub, ses, _read_tsv(path)) for sub, ses, _, path in found]
    long = qstats.build_long_table(tables, participants)
    atlas_names = sorted({a for _, _, a, _ in found if a})
    # participants listed without any ROI table
    with_data = set(long["participant_id"])
    listed = participants["participant_id"].astype(str).map(lambda v: v if v.startswith("sub-") else f"sub-{v}")
    for pid in sorted(set(listed) - with_data):
        data_warnings.append(f"{pid}: listed in participants.tsv but no ROI table found (all sessions missing)")
    for pid in sorted(with_data - set(listed)):
        data_warnings.append(f"{pid}: has ROI tables but no row in participants.tsv")

    table, w = qstats.analysis_table(
        long, structures=structures, hemispheres=hemispheres, group_column=group_column,
        covariates=tuple(covariates), sessions=sessions,
    )
    data_warnings += w
    session_order = table.attrs["session_order"]
    groups = qstats.group_order(table["group"])
    structs = table.attrs["structures"]

    desc = qstats.descriptives(table, groups, session_order)
    anova, n1 = qstats.mixed_anova(table, groups, session_order, alpha=fdr_alpha)
    ttests, n2 = qstats.follow_up_ttests(table, groups, session_order, alpha=fdr_alpha)
    lmm, n3 = qstats.fit_lmm(table, groups, session_order, covariates=tuple(covariates), alpha=fdr_alpha)
    analysis_notes = list(dict.fromkeys(n1 + n2 + n3))
    if len(groups) < 2:
        analysis_notes.insert(0, f"only one group ({', '.join(groups)}): between-group analyses skipped")
    if len(session_order) < 2:
        analysis_notes.insert(0, "only one session: within-subject (time) analyses and the LMM skipped")

    group_dir = output_dir / "group"
    group_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    written["dgm_long"] = _write_table(long, group_dir / "dgm_long.tsv", dgm_long_sidecar(long.columns, participants_sidecar))
    analysis_sidecar = dict(SIDECARS["dgm_analysis"])
    for cov in covariates:
        analysis_sidecar[cov] = (participants_sidecar or {}).get(cov, {"Description": f"Column {cov!r} of participants.tsv"})
    written["dgm_analysis"] = _write_table(table, group_dir / "dgm_analysis.tsv", analysis_sidecar)
    written["descriptives"] = _write_table(desc, group_dir / "descriptives.tsv", SIDECARS["descriptives"])
    written["anova"] = _write_table(anova, group_dir / "anova.tsv", SIDECARS["anova"])
    written["ttests"] = _write_table(ttests, group_dir / "ttests.tsv", SIDECARS["ttests"])
    written["lmm"] = _write_table(lmm, group_dir / "lmm.tsv", SIDECARS["lmm"])
    warn_df = pd.DataFrame(
        [("data", m) for m in data_warnings] + [("analysis", m) for m in analysis_notes], columns=["category", "message"]
    )
    written["warnings_table"] = _write_table(warn_df, group_dir / "warnings.tsv", SIDECARS["warnings"])
    for msg in data_warnings + analysis_notes:
        LOGGER.warning(msg)

    from ..reports import group as group_report

    figs = group_report.make_figures(table, groups, session_order, structs, group_dir / "figures") if figures else []
    written["figures"] = [f["path"] for f in figs]
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
        "n_tables": len(found),
        "atlas": ", ".join(atlas_names) if atlas_names else "n/a",
        "provenance": collect_provenance(output_dir),
        "elapsed_s": elapsed,
    }
    written["report"] = group_report.write_report(
        group_dir / "report.html", table, desc, anova, ttests, lmm, data_warnings, analysis_notes, figs, context
    )
    written["warnings"] = data_warnings + analysis_notes
    written["elapsed_s"] = time.perf_counter() - t0
    return written
