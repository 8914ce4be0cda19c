"""Follow-up t-tests and standardised effect sizes with confidence intervals.

* Within each group: paired t-test of each later session against the first session
  (``scipy.stats.ttest_rel``), participants with both values only; effect size Cohen's
  ``d_z = mean(diff) / sd(diff)``.
* At each session: Welch's unequal-variance t-test between each non-reference group and the
  reference group (``scipy.stats.ttest_ind(equal_var=False)``); effect size Cohen's ``d`` with
  the pooled SD, ``d = (mean_2 - mean_1) / sqrt(((n_1-1) s_1^2 + (n_2-1) s_2^2) / (n_1+n_2-2))``.

A test runs only with at least :data:`qsmprep.stats.rules.MIN_PER_SAMPLE` complete pairs
(paired) or participants per group (Welch); otherwise it is skipped with a note.

Differences are always *later minus first session* and *group minus reference group*, in ppb,
with the 95% CI of the raw difference from the same t-test (Welch-Satterthwaite df for the
between-group test).

Confidence intervals of d and d_z are exact under normality: they invert the noncentral t
distribution of the t statistic (Steiger JH, Fouladi RT, 1997, Noncentrality interval estimation
and the evaluation of statistical models, in: What if there were no significance tests?,
pp. 221-257; Cumming G, Finch S, 2001, Educ Psychol Meas 61:532-574).  For ``d_z``,
``t = d_z sqrt(n)`` has ``n - 1`` df; for the pooled-SD ``d``, ``t = d / sqrt(1/n_1 + 1/n_2)``
has ``n_1 + n_2 - 2`` df.  The noncentrality parameters whose CDF at the observed t equals
0.975 and 0.025 are found with Brent's method and scaled back to d.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, stats

from .cohort import group_order
from .multiple import add_fdr
from .rules import MIN_PER_SAMPLE

TTEST_COLUMNS = [
    "structure",
    "test",
    "group",
    "contrast",
    "session_id",
    "session_id_2",
    "group_2",
    "n_1",
    "n_2",
    "mean_1_ppb",
    "mean_2_ppb",
    "difference_ppb",
    "difference_ci_low_ppb",
    "difference_ci_high_ppb",
    "t",
    "df",
    "p",
    "effect_size_type",
    "effect_size",
    "effect_size_ci_low",
    "effect_size_ci_high",
]


def noncentral_t_ci(t, df, confidence=0.95):
    """Exact confidence interval of the noncentrality parameter of a t statistic.

    The bounds are the noncentrality parameters at which the observed ``t`` is the
    ``1 - alpha/2`` and ``alpha/2`` quantile of the noncentral t distribution (roots of
    ``scipy.stats.nct.cdf`` found with Brent's method).

    Parameters
    ----------
    t : float
        Observed t statistic.
    df : float
        Degrees of freedom.
    confidence : float
        Coverage of the interval.

    Returns
    -------
    tuple of float
        ``(low, high)``; NaN when ``t`` or ``df`` is not finite or ``df <= 0``.

    References
    ----------
    Steiger JH, Fouladi RT. Noncentrality interval estimation and the evaluation of statistical
    models. In: Harlow LL, et al., eds. What if there were no significance tests? Erlbaum;
    1997:221-257.
    """
    if not (np.isfinite(t) and np.isfinite(df) and df > 0):
        return (np.nan, np.nan)
    alpha = 1.0 - confidence
    targets = (1.0 - alpha / 2.0, alpha / 2.0)  # lower bound: cdf = 0.975; upper: cdf = 0.025
    bounds = []
    for target in targets:

        def f(ncp, target=target):
            return stats.nct.cdf(t, df, ncp) - target

        # the cdf decreases with ncp; bracket the root around t
        width = 2.0 + abs(t)
        lo, hi = t - width, t + width
        while f(lo) < 0:
            lo -= width
        while f(hi) > 0:
            hi += width
        bounds.append(optimize.brentq(f, lo, hi, xtol=1e-10))
    return tuple(bounds)


def cohen_dz(diff, confidence=0.95):
    """Cohen's d_z of paired differences with its exact noncentral-t interval.

    Parameters
    ----------
    diff : array_like
        Paired differences (later minus first), without NaN.
    confidence : float
        Coverage of the interval.

    Returns
    -------
    tuple of float
        ``(d_z, low, high)``, ``d_z = mean(diff) / sd(diff)`` (ddof=1); NaN for fewer than two
        differences or a zero SD.

    References
    ----------
    Steiger and Fouladi (1997), see :func:`noncentral_t_ci`.
    """
    diff = np.asarray(diff, float)
    n = diff.size
    if n < 2:
        return (np.nan, np.nan, np.nan)
    sd = diff.std(ddof=1)
    if sd == 0:
        return (np.nan, np.nan, np.nan)
    dz = diff.mean() / sd
    lo, hi = noncentral_t_ci(dz * np.sqrt(n), n - 1, confidence)
    return (dz, lo / np.sqrt(n), hi / np.sqrt(n))


def cohen_d_pooled(x1, x2, confidence=0.95):
    """Cohen's d of ``x2 - x1`` with the pooled SD, with its exact noncentral-t interval.

    Parameters
    ----------
    x1, x2 : array_like
        The two samples (reference first), without NaN.
    confidence : float
        Coverage of the interval.

    Returns
    -------
    tuple of float
        ``(d, low, high)``; NaN when a sample has fewer than two values or the pooled SD is 0.

    References
    ----------
    Steiger and Fouladi (1997), see :func:`noncentral_t_ci`.
    """
    x1, x2 = np.asarray(x1, float), np.asarray(x2, float)
    n1, n2 = x1.size, x2.size
    if n1 < 2 or n2 < 2:
        return (np.nan, np.nan, np.nan)
    sp = np.sqrt(((n1 - 1) * x1.var(ddof=1) + (n2 - 1) * x2.var(ddof=1)) / (n1 + n2 - 2))
    if sp == 0:
        return (np.nan, np.nan, np.nan)
    d = (x2.mean() - x1.mean()) / sp
    scale = np.sqrt(1.0 / n1 + 1.0 / n2)
    lo, hi = noncentral_t_ci(d / scale, n1 + n2 - 2, confidence)
    return (d, lo * scale, hi * scale)


def paired_test(first, later, confidence=0.95):
    """Paired t-test of ``later - first`` with Cohen's d_z.

    Parameters
    ----------
    first, later : array_like
        Aligned values of the same participants (pairs with a NaN removed beforehand).
    confidence : float
        Coverage of the difference and effect-size intervals.

    Returns
    -------
    dict
        One ``ttests.tsv`` row without its key columns: ``n_1, n_2, mean_1_ppb, mean_2_ppb,
        difference_ppb, difference_ci_low_ppb, difference_ci_high_ppb, t, df, p,
        effect_size_type ("cohen_dz"), effect_size, effect_size_ci_low, effect_size_ci_high``.
    """
    first, later = np.asarray(first, float), np.asarray(later, float)
    res = stats.ttest_rel(later, first)
    ci = res.confidence_interval(confidence)
    dz, lo, hi = cohen_dz(later - first, confidence)
    return {
        "n_1": first.size,
        "n_2": later.size,
        "mean_1_ppb": first.mean(),
        "mean_2_ppb": later.mean(),
        "difference_ppb": (later - first).mean(),
        "difference_ci_low_ppb": ci.low,
        "difference_ci_high_ppb": ci.high,
        "t": res.statistic,
        "df": float(res.df),
        "p": res.pvalue,
        "effect_size_type": "cohen_dz",
        "effect_size": dz,
        "effect_size_ci_low": lo,
        "effect_size_ci_high": hi,
    }


def welch_test(x_ref, x_other, confidence=0.95):
    """Welch t-test of ``x_other - x_ref`` with the pooled-SD Cohen's d.

    Parameters
    ----------
    x_ref, x_other : array_like
        Reference-group and other-group values (no NaN).
    confidence : float
        Coverage of the difference and effect-size intervals.

    Returns
    -------
    dict
        The same keys as :func:`paired_test`, ``effect_size_type`` ``"cohen_d_pooled"``.

    References
    ----------
    Welch BL. The generalization of 'Student's' problem when several different population
    variances are involved. Biometrika 1947;34:28-35.
    """
    x_ref, x_other = np.asarray(x_ref, float), np.asarray(x_other, float)
    res = stats.ttest_ind(x_other, x_ref, equal_var=False)
    ci = res.confidence_interval(confidence)
    d, lo, hi = cohen_d_pooled(x_ref, x_other, confidence)
    return {
        "n_1": x_ref.size,
        "n_2": x_other.size,
        "mean_1_ppb": x_ref.mean(),
        "mean_2_ppb": x_other.mean(),
        "difference_ppb": x_other.mean() - x_ref.mean(),
        "difference_ci_low_ppb": ci.low,
        "difference_ci_high_ppb": ci.high,
        "t": res.statistic,
        "df": float(res.df),
        "p": res.pvalue,
        "effect_size_type": "cohen_d_pooled",
        "effect_size": d,
        "effect_size_ci_low": lo,
        "effect_size_ci_high": hi,
    }


def follow_up_ttests(table, groups=None, sessions=None, alpha=0.05, confidence=0.95):
    """All paired (within-group) and Welch (between-group) tests for every structure.

    Paired: each later session against the first, within each group; Welch: each group against
    the reference group, at each session.  A test runs only with at least
    :data:`~qsmprep.stats.rules.MIN_PER_SAMPLE` complete pairs / participants per sample.
    BH-FDR is applied across structures within each family, a family being one contrast
    (same ``test``, ``group``/``group_2`` and ``session_id``/``session_id_2``).

    Parameters
    ----------
    table : pandas.DataFrame
        Analysis table (:func:`qsmprep.stats.cohort.analysis_table`).
    groups, sessions : list of str, optional
        Level orders (default: control-like group first; the table's session order).
    alpha : float
        FDR level.
    confidence : float
        Coverage of the intervals.

    Returns
    -------
    pandas.DataFrame
        :data:`TTEST_COLUMNS` + ``p_fdr``, ``significant_fdr``.
    list of str
        Notes (tests skipped and why).
    """
    groups = groups or group_order(table["group"])
    sessions = sessions or table.attrs.get("session_order") or sorted(table["session_id"].unique())
    structures = table.attrs.get("structures") or list(dict.fromkeys(table["structure"]))
    rows, notes = [], []
    if len(sessions) < 2:
        notes.append("paired t-tests skipped: a single session")
    if len(groups) < 2:
        notes.append("between-group t-tests skipped: a single group")
    for struct in structures:
        sub = table[table["structure"] == struct]
        wide = sub.pivot_table(index=["participant_id", "group"], columns="session_id", values="chi_ppb", dropna=False)
        wide = wide.reindex(columns=sessions).reset_index()
        for grp in groups:
            gw = wide[wide["group"] == grp]
            for later in sessions[1:]:
                pair = gw[[sessions[0], later]].dropna()
                base = {
                    "structure": struct,
                    "test": "paired",
                    "group": grp,
                    "contrast": f"{later} - {sessions[0]}",
                    "session_id": sessions[0],
                    "session_id_2": later,
                    "group_2": grp,
                }
                if len(pair) < MIN_PER_SAMPLE:
                    if len(gw):
                        notes.append(
                            f"{struct}: paired test {grp} {later} vs {sessions[0]} skipped ({len(pair)} complete "
                            f"pair(s); minimum {MIN_PER_SAMPLE})"
                        )
                    continue
                rows.append(base | paired_test(pair[sessions[0]], pair[later], confidence))
        ref = groups[0]
        for other in groups[1:]:
            for ses in sessions:
                x_ref = wide.loc[wide["group"] == ref, ses].dropna()
                x_oth = wide.loc[wide["group"] == other, ses].dropna()
                base = {
                    "structure": struct,
                    "test": "welch",
                    "group": ref,
                    "contrast": f"{other} - {ref}",
                    "session_id": ses,
                    "session_id_2": ses,
                    "group_2": other,
                }
                if len(x_ref) < MIN_PER_SAMPLE or len(x_oth) < MIN_PER_SAMPLE:
                    notes.append(
                        f"{struct}: Welch test {other} vs {ref} at {ses} skipped (n = {len(x_oth)}, {len(x_ref)}; "
                        f"minimum {MIN_PER_SAMPLE} per group)"
                    )
                    continue
                rows.append(base | welch_test(x_ref, x_oth, confidence))
    df = pd.DataFrame(rows, columns=TTEST_COLUMNS)
    df = add_fdr(df, ["test", "group", "group_2", "session_id", "session_id_2"], alpha=alpha)
    return df, notes
