"""Group level: from the participant-level ROI tables to the cohort statistics and report.

``run_group`` is a plain function (nothing at this level benefits from a Nipype graph): it reads
every ``sub-*/[ses-*/]anat/*_desc-dgm_stats.tsv`` under the output directory and
``participants.tsv`` from the BIDS directory, runs every statistic of
:data:`qsmprep.group.analyses.ANALYSES` (numbers from :mod:`qsmprep.stats`) and writes
``OUTPUT_DIR/group/``::

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
(66), a ROI table without the columns the analysis needs (65).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd

from .. import __version__
from .. import stats as qstats
from ..derivatives.readers import collect_provenance, participant_reports, read_change_angles
from . import report
from .analyses import ANALYSES, Design, run_analyses
from ..b0_orientation import orientation_warning
from .inputs import check_structures, collect_inputs, coverage_warnings
from .measures import DEFAULT_STRUCTURES, get_measure
from .tables import SIDECARS, analysis_sidecar, dgm_long_sidecar, write_table

__all__ = ["run_group"]

LOGGER = logging.getLogger("qsmprep.group")


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

    Inputs are selected by :func:`qsmprep.group.inputs.collect_inputs`, every statistic of
    :data:`qsmprep.group.analyses.ANALYSES` is run and written as one table, then the figures
    and the report.  Nothing is written before every input check has passed.

    Parameters
    ----------
    bids_dir : str or Path
        BIDS dataset (``participants.tsv`` is read from it).
    output_dir : str or Path
        qsmprep output folder of the participant level.
    group_column : str
        Column of ``participants.tsv`` defining the between-subject factor.
    covariates : sequence of str
        Columns of ``participants.tsv`` added to the linear mixed model.
    structures : sequence of str
        Structures to analyse (``structure`` column of the ROI tables).
    hemispheres : bool
        Analyse left and right separately instead of their mean.
    sessions : sequence of str, optional
        Session labels (with or without ``ses-``) in time order; default all sessions found,
        baseline-like labels first (:func:`qsmprep.stats.cohort.session_sort_key`).
    fdr_alpha : float
        FDR level of the Benjamini-Hochberg correction.
    atlas : str, optional
        Atlas name when the outputs hold ROI tables of several atlases.
    figures : bool
        Write figures and embed them in the report.
    participant_label : sequence of str, optional
        Labels (with or without ``sub-``) to analyse; default all (fMRIPrep's meaning of
        ``--participant-label`` at the group level).
    exclude_file : str or Path, optional
        TSV of participants/sessions to leave out (:func:`qsmprep.group.inputs.read_exclusions`).
    keep_flagged : bool
        Keep sessions whose ROI table has ``qc_flagged == 1`` (default: leave them out).
    measure : str
        ``chi`` (``mean_ppb``, ppb) or ``r2star`` (``r2star_mean``, 1/s; written to
        ``group/r2star/``).

    Returns
    -------
    dict
        Name -> path of everything written (``dgm_long``, ``dgm_analysis``, one entry per
        analysis (``descriptives``, ``anova``, ``ttests``, ``lmm``), ``exclusions``,
        ``warnings_table``, ``report``, ``figures`` (list)), plus ``warnings`` (list of str)
        and ``elapsed_s``.

    Raises
    ------
    MissingInputError
        No ROI table of a completed subject, no ``participants.tsv``, a missing exclusion file,
        or ``--measure r2star`` on tables without R2* (exit code 66).
    UsageError
        Unknown measure, group column, covariate or structure; a bad exclusion file;
        tables of several atlases without ``atlas`` (64).
    NoMatchingData
        ``participant_label`` selects nothing, or every session is excluded (18).
    DataError
        A ROI table lacks a column the analysis needs (65).
    """
    t0 = time.perf_counter()
    bids_dir, output_dir = Path(bids_dir), Path(output_dir)
    measure_name, unit = get_measure(measure).name, get_measure(measure).unit
    inputs = collect_inputs(bids_dir, output_dir, group_column=group_column, covariates=covariates, atlas=atlas,
                            participant_label=participant_label, exclude_file=exclude_file,
                            keep_flagged=keep_flagged, measure=measure)
    exclusion_rows, data_warnings = inputs.exclusion_rows, inputs.data_warnings

    long = inputs.long_table()  # = qstats.build_long_table(inputs.tables, inputs.participants)
    check_structures(long, structures, hemispheres)
    atlas_names = sorted({a for _, _, a, _ in inputs.found if a})
    data_warnings += coverage_warnings(long, inputs.participants, inputs.found, exclusion_rows, participant_label)

    table, w = qstats.analysis_table(
        long, structures=structures, hemispheres=hemispheres, group_column=group_column,
        covariates=tuple(covariates), sessions=sessions, value=get_measure(measure).column,
    )
    data_warnings += w
    # the head's turn against B0 between sessions: measured (change tables) where there is one,
    # else estimated from the ROI tables' b0_* columns; only pairs of sessions analysed
    analysed = long[long["participant_id"].isin(set(table["participant_id"]))]
    kept = set(zip(analysed["participant_id"], analysed["session_id"]))
    measured = read_change_angles(output_dir, sorted(set(analysed["participant_id"])),
                                  atlas=atlas_names[0] if len(atlas_names) == 1 else None)
    measured = measured[[(p, a) in kept and (p, b) in kept for p, a, b in
                         zip(measured["participant_id"], measured["session_a"],
                             measured["session_b"])]]
    orient = orientation_warning(analysed, table.attrs["structures"], measured=measured)
    if orient:
        data_warnings.append(orient)
    session_order = table.attrs["session_order"]
    groups = qstats.group_order(table["group"])
    structs = table.attrs["structures"]

    design = Design(groups=groups, sessions=session_order, covariates=tuple(covariates), alpha=fdr_alpha, unit=unit)
    results, notes = run_analyses(table, design, ANALYSES)
    fit_notes = [n for n in notes if "LMM fit problem" in n]
    analysis_notes = [n for n in notes if n not in fit_notes]
    if len(groups) < 2:
        analysis_notes.insert(0, f"only one group ({', '.join(groups)}): between-group analyses skipped")
    if len(session_order) < 2:
        analysis_notes.insert(0, "only one session: within-subject (time) analyses and the LMM skipped")

    group_dir = output_dir / "group" if measure == "chi" else output_dir / "group" / measure
    group_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    written["dgm_long"] = write_table(long, group_dir / "dgm_long.tsv",
                                      dgm_long_sidecar(long.columns, inputs.participants_sidecar))
    written["dgm_analysis"] = write_table(table, group_dir / "dgm_analysis.tsv",
                                          analysis_sidecar(measure, covariates, inputs.participants_sidecar), measure)
    for analysis in ANALYSES:
        written[analysis.name] = write_table(results[analysis.name], group_dir / f"{analysis.name}.tsv",
                                             analysis.sidecar, measure)
    excl_df = pd.DataFrame(exclusion_rows, columns=list(SIDECARS["exclusions"]))
    written["exclusions"] = write_table(excl_df, group_dir / "exclusions.tsv", SIDECARS["exclusions"])
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
    written["warnings_table"] = write_table(warn_df, group_dir / "warnings.tsv", SIDECARS["warnings"])
    for msg in data_warnings + excl_msgs + analysis_notes + fit_notes:
        LOGGER.warning(msg)

    figs = (report.make_figures(table, groups, session_order, structs, group_dir / "figures",
                                ylabel=f"{measure_name} ({unit})") if figures else [])
    written["figures"] = [f["path"] for f in figs]
    subjects = sorted(set(table["participant_id"]))
    subject_set = set(subjects)
    analysed = {(_sub, _ses) for _sub, _ses in inputs.sessions if _sub in subject_set}
    provenance = collect_provenance(output_dir, subject_set, analysed)
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
        "n_tables": len(inputs.sessions),
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
    written["report"] = report.write_report(
        group_dir / "report.html", table, results, ANALYSES, design, data_warnings + excl_msgs, analysis_notes,
        figs, context,
    )
    written["warnings"] = data_warnings + excl_msgs + analysis_notes + fit_notes
    written["elapsed_s"] = time.perf_counter() - t0
    return written
