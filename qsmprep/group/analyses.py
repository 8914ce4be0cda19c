"""The statistics the group level runs per structure, as one registry.

Each :class:`Analysis` record says everything the group level needs to know about one
statistic: the function of :mod:`qsmprep.stats` that computes it, the name of its table
(``group/<name>.tsv`` and the key in :func:`qsmprep.group.run.run_group`'s result), the data
dictionary of its columns, how the report shows it (table, caption) and what the methods
paragraph says about it.  :func:`run_group <qsmprep.group.run.run_group>` runs
:data:`ANALYSES` in order, writes one table each and hands every result to the report, so
adding a statistic is one function in :mod:`qsmprep.stats` plus one record here.

Example (not registered): a per-structure Kruskal-Wallis test would be::

    def _kruskal(table, design):
        return my_stats.kruskal(table, design.groups, design.sessions, alpha=design.alpha)

    Analysis(name="kruskal", title="Kruskal-Wallis tests", run=_kruskal,
             sidecar={**KEY_COLUMNS, "h": {"Description": "H statistic"}, "p": P, "p_fdr": P_FDR,
                      "significant_fdr": SIGNIFICANT},
             columns=("structure", "session_id", "h", "p", "p_fdr"))
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field

import markupsafe
import numpy as np

from .. import stats as qstats
from .report import df_html, fmt_num, fmt_p, session_label
from .tables import KEY_COLUMNS, P, P_FDR, SIGNIFICANT

__all__ = ["ANALYSES", "Analysis", "Design", "run_analyses"]


@dataclass(frozen=True)
class Design:
    """What every analysis is run on, besides the analysis table.

    Attributes
    ----------
    groups : list of str
        Group levels, reference group first (:func:`qsmprep.stats.group_order`).
    sessions : list of str
        Sessions (``ses-<label>``) in time order, baseline first.
    covariates : tuple of str
        ``participants.tsv`` columns entering the linear mixed model.
    alpha : float
        FDR level of the Benjamini-Hochberg correction.
    unit : str
        Unit of the value analysed (``ppb``, ``1/s``), for the report.
    """

    groups: list
    sessions: list
    covariates: tuple = ()
    alpha: float = 0.05
    unit: str = "ppb"


def _no_text(df, design):
    return []


@dataclass(frozen=True)
class Analysis:
    """One statistic of the group level (one table, one report section).

    Attributes
    ----------
    name : str
        Table name: ``group/<name>.tsv`` + ``.json`` and the key of the written path.
    title : str
        Heading of its table in the report (``<title> (<name>.tsv)``).
    run : callable
        ``run(table, design) -> (DataFrame, notes)``: the analysis table of
        :func:`qsmprep.stats.analysis_table` and a :class:`Design` in, the result table and a
        list of plain-text notes (skipped tests, fit problems) out.
    sidecar : dict
        Data dictionary of the result's columns (``_ppb`` columns are renamed with the measure).
    columns : tuple of str
        Columns shown in the report table (default: every column).
    formats : dict
        ``column -> formatter`` (value -> HTML text) for the report table.
    rename : callable
        ``rename(design) -> {column: heading}`` of the report table.
    highlight : str or None
        Boolean column whose true rows are highlighted in the report.
    prepare : callable
        ``prepare(df, design) -> DataFrame`` adding display columns before rendering.
    caption : callable or None
        ``caption(design) -> Markup`` under the report table (labels escaped).
    methods : callable
        ``methods(df, design) -> list of str``: HTML clauses for the methods paragraph
        (what was run, with references), empty when nothing was run.
    """

    name: str
    title: str
    run: Callable
    sidecar: dict
    columns: tuple = ()
    formats: dict = field(default_factory=dict)
    rename: Callable = lambda design: {}
    highlight: str | None = None
    prepare: Callable = lambda df, design: df
    caption: Callable | None = None
    methods: Callable = _no_text

    def render(self, df, design):
        """The report table of ``df`` (the result of :attr:`run`).

        Parameters
        ----------
        df : pandas.DataFrame
            Result table of this analysis.
        design : Design
            Groups, sessions and unit of the run.

        Returns
        -------
        markupsafe.Markup
            ``<table class='data'>`` with every label escaped.
        """
        shown = self.prepare(df, design)
        columns = list(self.columns) if self.columns else list(shown.columns)
        return df_html(shown, columns, self.formats, rename=self.rename(design), highlight=self.highlight)


def run_analyses(table, design, analyses=None):
    """Run every registered analysis on the analysis table.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`qsmprep.stats.analysis_table`.
    design : Design
        Groups, sessions, covariates, FDR level.
    analyses : sequence of Analysis, optional
        Default :data:`ANALYSES`.

    Returns
    -------
    results : dict
        ``name -> DataFrame`` in registry order.
    notes : list of str
        Every note of every analysis, duplicates removed, in order.
    """
    results, notes = {}, []
    for analysis in analyses or ANALYSES:
        df, n = analysis.run(table, design)
        results[analysis.name] = df
        notes += list(n)
    return results, list(dict.fromkeys(notes))


# --------------------------------------------------------------------------------------------
# formatters shared by the records
def _f1(x):
    return fmt_num(x, 1)


def _f2(x):
    return fmt_num(x, 2)


def _f0(x):
    return fmt_num(x, 0)


def _ses(s):
    return html.escape(session_label(s))


# --------------------------------------------------------------------------------------------
# descriptives
def _run_descriptives(table, design):
    return qstats.descriptives(table, design.groups, design.sessions), []


DESCRIPTIVES = Analysis(
    name="descriptives",
    title="Descriptive statistics",
    run=_run_descriptives,
    sidecar={
        **KEY_COLUMNS,
        "n": {"Description": "Number of participants with a value"},
        "n_missing": {"Description": "Participants of the group without a value at this session"},
        "mean_ppb": {"Description": "Mean of chi_ppb over participants", "Units": "ppb"},
        "sd_ppb": {"Description": "Between-participant standard deviation (ddof=1)", "Units": "ppb"},
        "sem_ppb": {"Description": "Standard error of the mean", "Units": "ppb"},
        "median_ppb": {"Description": "Median over participants", "Units": "ppb"},
        "min_ppb": {"Description": "Minimum over participants", "Units": "ppb"},
        "max_ppb": {"Description": "Maximum over participants", "Units": "ppb"},
    },
    columns=("structure", "group", "session_id", "n", "n_missing", "mean_ppb", "sd_ppb", "sem_ppb", "median_ppb"),
    formats={"mean_ppb": _f1, "sd_ppb": _f1, "sem_ppb": _f1, "median_ppb": _f1, "session_id": _ses},
    rename=lambda d: {f"{c}_ppb": f"{c} ({d.unit})" for c in ("mean", "sd", "sem", "median")},
)


# --------------------------------------------------------------------------------------------
# mixed ANOVA
def _run_anova(table, design):
    return qstats.mixed_anova(table, design.groups, design.sessions, alpha=design.alpha)


def _anova_methods(anova, design):
    out = []
    tset = set(anova["test"]) if len(anova) else set()
    if "mixed_anova" in tset:
        out.append("a mixed factorial ANOVA with group as between-subject and session as within-subject "
                   "factor (pingouin <code>mixed_anova</code> [2]; complete cases; partial &eta;<sup>2</sup>"
                   + ("; Greenhouse-Geisser correction for more than two sessions" if len(design.sessions) > 2 else "")
                   + ")")
    if "rm_anova" in tset:
        out.append("a one-way repeated-measures ANOVA of session (pingouin <code>rm_anova</code> [2])")
    if "oneway_anova" in tset:
        out.append("a one-way between-subject ANOVA of group (pingouin <code>anova</code> [2])")
    return out


class _AnovaAnalysis(Analysis):
    """The ANOVA table hides ``p_gg_corr`` when no row has it (two sessions: sphericity holds)."""

    def render(self, df, design):
        cols = list(self.columns)
        if df["p_gg_corr"].isna().all():
            cols.remove("p_gg_corr")
        return df_html(df, cols, self.formats, rename=self.rename(design), highlight=self.highlight)


ANOVA = _AnovaAnalysis(
    name="anova",
    title="Mixed ANOVA",
    run=_run_anova,
    sidecar={
        **KEY_COLUMNS,
        "source": {"Description": "Effect", "Levels": {"group": "between-subject group main effect", "time": "within-subject session main effect", "group_x_time": "group by time interaction"}},
        "test": {"Description": "mixed_anova (pingouin.mixed_anova), rm_anova (single group) or oneway_anova (single session)"},
        "f": {"Description": "F statistic"},
        "df1": {"Description": "Numerator degrees of freedom"},
        "df2": {"Description": "Denominator degrees of freedom"},
        "p": P,
        "p_gg_corr": {"Description": "Greenhouse-Geisser corrected p (more than two sessions only); used for FDR when present"},
        "eps": {"Description": "Greenhouse-Geisser epsilon of the within-subject effects"},
        "partial_eta_sq": {"Description": "Partial eta squared, SS_effect / (SS_effect + SS_error)"},
        "n_subjects": {"Description": "Participants in the ANOVA (complete cases)"},
        "n_excluded": {"Description": "Participants left out because a session value is missing"},
        "p_fdr": P_FDR,
        "significant_fdr": SIGNIFICANT,
    },
    columns=("structure", "source", "test", "f", "df1", "df2", "p", "p_gg_corr", "partial_eta_sq", "n_subjects",
             "n_excluded", "p_fdr"),
    formats={"f": _f2, "df1": _f0, "df2": _f0, "p": fmt_p, "p_gg_corr": fmt_p, "p_fdr": fmt_p,
             "partial_eta_sq": lambda x: fmt_num(x, 3)},
    rename=lambda d: {"partial_eta_sq": "partial η²", "p_gg_corr": "p (GG)"},
    highlight="significant_fdr",
    caption=lambda d: markupsafe.Markup("Highlighted rows: significant after FDR correction."),
    methods=_anova_methods,
)


# --------------------------------------------------------------------------------------------
# follow-up t-tests
def _run_ttests(table, design):
    return qstats.follow_up_ttests(table, design.groups, design.sessions, alpha=design.alpha)


def _ttests_prepare(ttests, design):
    tt = ttests.copy()
    if len(tt):
        tt["difference"] = [f"{d:+.1f} [{lo:.1f}, {hi:.1f}]" for d, lo, hi in zip(tt["difference_ppb"], tt["difference_ci_low_ppb"], tt["difference_ci_high_ppb"])]
        tt["effect"] = [f"{e:+.2f} [{lo:.2f}, {hi:.2f}]" for e, lo, hi in zip(tt["effect_size"], tt["effect_size_ci_low"], tt["effect_size_ci_high"])]
        tt["where"] = [g if t == "paired" else session_label(s) for t, g, s in zip(tt["test"], tt["group"], tt["session_id"])]
        tt["contrast"] = tt["contrast"].str.replace("ses-", "", regex=False)
    else:
        for c in ("difference", "effect", "where"):
            tt[c] = []
    return tt


def _ttests_methods(ttests, design):
    out = []
    if len(ttests) and (ttests["test"] == "paired").any():
        out.append(f"paired t-tests of each later session against {html.escape(session_label(design.sessions[0]))} "
                   "within each group (SciPy <code>ttest_rel</code> [4]) with Cohen's d<sub>z</sub>")
    if len(ttests) and (ttests["test"] == "welch").any():
        out.append(f"Welch t-tests [8] between each group and {html.escape(design.groups[0])} at each session "
                   "(SciPy <code>ttest_ind</code>) with Cohen's d using the pooled SD")
    return out


TTESTS = Analysis(
    name="ttests",
    title="Follow-up t-tests",
    run=_run_ttests,
    sidecar={
        **KEY_COLUMNS,
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
        "p": P,
        "effect_size_type": {"Description": "cohen_dz (mean / SD of paired differences) or cohen_d_pooled (difference / pooled SD)"},
        "effect_size": {"Description": "Standardised effect size (unitless)"},
        "effect_size_ci_low": {"Description": "Lower 95% limit of the effect size, exact noncentral-t interval (Steiger and Fouladi 1997)"},
        "effect_size_ci_high": {"Description": "Upper 95% limit of the effect size, exact noncentral-t interval"},
        "p_fdr": P_FDR,
        "significant_fdr": SIGNIFICANT,
    },
    columns=("structure", "test", "where", "contrast", "n_1", "n_2", "difference", "t", "df", "p", "p_fdr",
             "effect_size_type", "effect"),
    formats={"t": _f2, "df": _f1, "p": fmt_p, "p_fdr": fmt_p},
    rename=lambda d: {"difference": f"difference {d.unit} [95% CI]", "effect": "d [95% CI]",
                      "where": "group / session", "effect_size_type": "effect size"},
    highlight="significant_fdr",
    prepare=_ttests_prepare,
    caption=lambda d: markupsafe.Markup(
        "Differences are later minus first session (paired) or group minus {g} (Welch), in {u} with the\n"
        "95% CI of the t-test. Effect sizes: Cohen's d<sub>z</sub> (paired) and pooled-SD Cohen's d (Welch) with "
        "exact noncentral-t 95% CIs.").format(g=d.groups[0], u=d.unit),
    methods=_ttests_methods,
)


# --------------------------------------------------------------------------------------------
# linear mixed model
def _run_lmm(table, design):
    return qstats.fit_lmm(table, design.groups, design.sessions, covariates=tuple(design.covariates),
                          alpha=design.alpha)


def _lmm_prepare(lmm, design):
    lm = lmm.copy()
    if len(lm):
        lm["term"] = lm["term"].str.replace("ses-", "", regex=False)
        lm["estimate_ci"] = [f"{e:+.2f} [{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) else f"{e:+.2f} [not tested]"
                             for e, lo, hi in zip(lm["estimate"], lm["ci_low"], lm["ci_high"])]
        lm["fit"] = ["ok" if ok else "PROBLEM" for ok in lm["fit_ok"]]
    else:
        lm["estimate_ci"] = []
        lm["fit"] = []
    return lm


def _lmm_methods(lmm, design):
    if not len(lmm):
        return []
    cov = design.covariates
    return ["a linear mixed-effects model <code>chi ~ group * time"
            + (" + " + " + ".join(html.escape(c) for c in cov) if cov else "")
            + " + (1 | participant)</code> fitted by REML [7] (closed-form profiled REML of the random-intercept model, validated against statsmodels <code>MixedLM</code> [3]; "
            "treatment coding with the first group and session as references) that also uses "
            "participants with missing sessions; its fixed effects and the marginal group and time "
            "contrasts (linear combinations of the fixed effects) were tested with t statistics on "
            "between-within denominator degrees of freedom [9] (for complete balanced data these equal "
            "the ANOVA's); fits that did not converge or were singular (subject variance at 0) are "
            "reported but never counted as significant"]


LMM = Analysis(
    name="lmm",
    title="Linear mixed model",
    run=_run_lmm,
    sidecar={
        **KEY_COLUMNS,
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
        "significant_fdr": SIGNIFICANT,
    },
    columns=("structure", "term", "estimate_ci", "se", "t", "df", "p", "p_fdr", "n_observations", "n_subjects",
             "n_subjects_incomplete", "subject_sd_ppb", "residual_sd_ppb", "fit"),
    formats={"se": _f2, "t": _f2, "df": _f0, "p": fmt_p, "p_fdr": fmt_p, "subject_sd_ppb": _f1,
             "residual_sd_ppb": _f1},
    rename=lambda d: {"estimate_ci": f"estimate {d.unit} [95% CI]", "n_subjects_incomplete": "incomplete",
                      "subject_sd_ppb": "subject SD", "residual_sd_ppb": "residual SD"},
    highlight="significant_fdr",
    prepare=_lmm_prepare,
    caption=lambda d: markupsafe.Markup(
        "Estimates in {u} (per unit for numeric covariates). Treatment coding: group[X] is X &minus; {g} at\n"
        "{s}, time[T] the change from {s} in {g}; \"(marginal)\" rows average over the other factor.\n"
        "t tests and 95% CIs use between-within denominator degrees of freedom (df); \"not tested\": df below the "
        "minimum.\nfit PROBLEM: the fit did not converge or was singular (subject variance at 0); such rows are never "
        "highlighted.").format(u=d.unit, g=d.groups[0], s=session_label(d.sessions[0])),
    methods=_lmm_methods,
)

#: every statistic of the group level, in the order of the report and the methods text
ANALYSES = (DESCRIPTIVES, ANOVA, TTESTS, LMM)
