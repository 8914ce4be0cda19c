"""Linear mixed-effects model per structure: ``chi ~ group * time + covariates + (1 | subject)``.

Fitted by restricted maximum likelihood (REML; Patterson HD, Thompson R, 1971, Biometrika
58:545-554; Harville DA, 1977, J Am Stat Assoc 72:320-338) with :func:`reml_random_intercept`:
for a random intercept the covariance of a participant's observations is
``sigma_e^2 (I + lambda J)``, whose inverse and determinant are closed-form, so the REML
criterion profiled over ``sigma_e^2`` is a function of the single ratio ``lambda`` (as in lme4,
Bates D et al., 2015, J Stat Softw 67(1)) and is computed with vectorised per-participant sums.
It gives the same estimates as statsmodels ``MixedLM(reml=True)`` (Lindstrom MJ, Bates DM, 1988,
J Am Stat Assoc 83:1014-1022; checked in ``tests/stats/test_stats.py``), whose per-participant Python
loop took most of the group level's time at 1,000 participants.
Unlike the mixed ANOVA, every available observation enters: a participant with a missing
follow-up still informs the baseline group difference and the subject variance.

Coding: treatment (dummy) coding with the reference group (controls) and the first session as
reference, so ``group[MS]`` is the MS - HC difference at the first session, ``time[ses-x]`` the
change in the reference group and ``group[MS]:time[ses-x]`` the difference in change.
Numeric covariates are mean-centred (the intercept is then the reference cell at the cohort's
mean covariate value); categorical covariates are dummy coded.  Two marginal contrasts are added
per structure from the same fit (linear combinations of the fixed effects):
``group[G] (marginal)`` - the group difference averaged with equal weight over sessions - and
``time[T] (marginal)`` - the change from the first session averaged with equal weight over
groups; these are the quantities the ANOVA's main effects test.

Level names never enter the model formula: groups, sessions and categorical covariate levels
are recoded to safe codes (``g0``, ``t1``, ``c2``...) and mapped back in the term names, so any
label text (``HC(a)``, quotes, ``<``, spaces) works.

Small-sample inference
----------------------
statsmodels reports Wald z tests, which are anti-conservative with the 6-40 participants of a
typical QSM study.  Tests and 95% CIs here use the t distribution with the *between-within*
denominator degrees of freedom (Schluchter MD, Elashoff JT, 1990, Small-sample adjustments to
tests with unbalanced repeated measures assuming several covariance structures, J Stat Comput
Simul 37:69-87; SAS/STAT PROC MIXED ``DDFM=BETWITHIN``).  The fixed-effect columns are split
into *between-subject* columns (constant within every participant: intercept, group, baseline
covariates) and *within-subject* columns (time, group x time).  Then

* between-subject terms: ``df = n_subjects - rank(X_between)``,
* within-subject terms: ``df = n_observations - n_subjects - (rank(X) - rank(X_between))``,
* a contrast mixing both kinds takes the smallest df of the columns it uses.

For complete balanced data these are exactly the denominator df of the mixed ANOVA's F tests
(the tests then coincide); with missing follow-ups they are an approximation whose calibration
is measured by ``benchmarks/group_calibration.py`` (coverage of the 95% CIs and false-positive
rate at alpha = 0.05, printed in ``docs/usage.md``).  Satterthwaite or Kenward-Roger df, which
need derivatives of the REML covariance of the estimates, are not in statsmodels; the
between-within rule is their classical, closed-form alternative for a random-intercept model.

Fit quality
-----------
A fit is *not OK* (column ``fit_ok`` false, reason in ``fit_warning``, listed in
``warnings.tsv`` and the report, never highlighted) when the subject variance is below
:data:`qsmprep.stats.rules.SINGULAR_RATIO` of the total variance (singular fit: the random
intercept collapsed to 0, on the boundary), when the residual variance collapsed to 0 (the
other boundary: the optimiser stopped at its upper limit, not at a minimum), when the
fixed-effects design is rank deficient (an effect not estimable, e.g. a covariate identical to
the group) or when a standard error is not finite.
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import patsy
from scipy import optimize as _opt
from scipy import stats as _sps

from .cohort import group_order
from .multiple import add_fdr
from .rules import MIN_DF, MIN_PER_SAMPLE, SINGULAR_RATIO

LMM_COLUMNS = [
    "structure",
    "term",
    "term_type",
    "estimate",
    "se",
    "t",
    "df",
    "p",
    "ci_low",
    "ci_high",
    "n_observations",
    "n_subjects",
    "n_subjects_incomplete",
    "subject_sd_ppb",
    "residual_sd_ppb",
    "converged",
    "fit_ok",
    "fit_warning",
]

#: upper limit of log(lambda) searched (subject / residual variance ratio up to e^25)
_LOG_LAMBDA_MAX = 25.0


def reml_random_intercept(y, X, subjects):
    """REML fit of ``y = X beta + u_subject + e`` with ``u ~ N(0, var_u)``, ``e ~ N(0, var_e)``.

    Parameters
    ----------
    y : ndarray, shape (n,)
        Response.
    X : ndarray, shape (n, p)
        Fixed-effects design (full column rank expected; rank deficiency is reported).
    subjects : array-like, shape (n,)
        Participant of every observation.

    Returns
    -------
    dict
        ``beta`` (p,), ``cov_beta`` (p, p), ``var_u``, ``var_e``, ``lambda`` (var_u / var_e),
        ``reml_crit`` (-2 restricted log-likelihood up to a constant) and ``problems`` (list of
        str: boundary solutions, rank deficiency).

    Notes
    -----
    With ``V_i = var_e (I + lambda J)`` for participant ``i`` (``n_i`` observations),
    ``V_i^-1 = (I - w_i J) / var_e`` with ``w_i = lambda / (1 + n_i lambda)`` and
    ``log|V_i| = n_i log var_e + log(1 + n_i lambda)``.  Hence ``X' V^-1 X`` etc. need only the
    per-participant sums of the columns of ``X`` and of ``y``.  Profiling ``var_e`` out of the
    REML criterion (``var_e = RSS / (n - p)``) leaves

    ``-2 l_R(lambda) = (n - p) log RSS(lambda) + sum_i log(1 + n_i lambda) + log|X' V~^-1 X|``

    minimised over ``log lambda`` by bounded Brent search, with ``lambda = 0`` (no subject
    variance) compared explicitly.

    References
    ----------
    Patterson HD, Thompson R (1971). Recovery of inter-block information when block sizes are
    unequal. Biometrika 58:545-554.
    Harville DA (1977). Maximum likelihood approaches to variance component estimation and to
    related problems. J Am Stat Assoc 72:320-338.
    Bates D, Maechler M, Bolker B, Walker S (2015). Fitting linear mixed-effects models using
    lme4. J Stat Softw 67(1):1-48.
    """
    y = np.asarray(y, float)
    X = np.asarray(X, float)
    codes, _ = pd.factorize(pd.Series(np.asarray(subjects)))
    n, p = X.shape
    m = codes.max() + 1
    n_i = np.bincount(codes, minlength=m).astype(float)
    sx = np.zeros((m, p))
    np.add.at(sx, codes, X)
    sy = np.bincount(codes, weights=y, minlength=m)
    xtx, xty, yty = X.T @ X, X.T @ y, float(y @ y)
    problems = []
    rank = np.linalg.matrix_rank(X)
    if rank < p:
        problems.append(f"fixed-effects design rank deficient ({rank} of {p} columns estimable)")

    def solve(lam):
        w = lam / (1.0 + n_i * lam)
        a = xtx - (sx * w[:, None]).T @ sx
        b = xty - (sx * w[:, None]).T @ sy
        beta = np.linalg.lstsq(a, b, rcond=None)[0]
        r_sum = sy - sx @ beta
        r = y - X @ beta
        rss = float(r @ r - np.sum(w * r_sum**2))
        return beta, a, max(rss, 1e-300)

    dof = n - rank

    def crit(loglam):
        lam = 0.0 if loglam is None else float(np.exp(loglam))
        _, a, rss = solve(lam)
        sign, logdet = np.linalg.slogdet(a)
        if sign <= 0:
            logdet = np.inf if rank == p else np.sum(np.log(np.clip(np.linalg.eigvalsh(a), 1e-300, None)))
        return dof * np.log(rss) + float(np.sum(np.log1p(n_i * lam))) + logdet

    res = _opt.minimize_scalar(crit, bounds=(-25.0, _LOG_LAMBDA_MAX), method="bounded",
                               options={"xatol": 1e-10})
    best_log, best = float(res.x), float(res.fun)
    c0 = crit(None)
    lam = 0.0 if c0 <= best else float(np.exp(best_log))
    if lam > 0 and best_log > _LOG_LAMBDA_MAX - 1e-3:
        problems.append("residual variance estimated at 0 (boundary: the optimiser stopped at its limit)")
    beta, a, rss = solve(lam)
    if rss <= 1e-12 * max(float(np.sum((y - y.mean()) ** 2)), 1e-300):
        problems.append("residual variance 0: the values are fitted exactly (identical or copied values? "
                        "check the ROI tables)")
    var_e = rss / max(dof, 1)
    var_u = lam * var_e
    try:
        cov = var_e * np.linalg.inv(a)
    except np.linalg.LinAlgError:
        cov = np.full((p, p), np.nan)
    return {"beta": beta, "cov_beta": cov, "var_u": var_u, "var_e": var_e, "lambda": lam,
            "reml_crit": min(c0, best), "problems": problems}


def between_within_df(exog, subjects):
    """Between-within denominator degrees of freedom of every fixed-effect column.

    Parameters
    ----------
    exog : ndarray, shape (n_observations, n_columns)
        Fixed-effects design matrix.
    subjects : array-like, shape (n_observations,)
        Participant of every row.

    Returns
    -------
    df : ndarray, shape (n_columns,)
        ``n_subjects - rank(X_between)`` for columns constant within every participant,
        ``n_observations - n_subjects - (rank(X) - rank(X_between))`` for the others.
    between : ndarray of bool, shape (n_columns,)
        Which columns are between-subject columns.

    References
    ----------
    Schluchter MD, Elashoff JT (1990). Small-sample adjustments to tests with unbalanced
    repeated measures assuming several covariance structures. J Stat Comput Simul 37:69-87.

    Examples
    --------
    >>> X = np.array([[1, 0, 0], [1, 0, 1], [1, 1, 0], [1, 1, 1], [1, 1, 0], [1, 1, 1]], float)
    >>> df, between = between_within_df(X, ["a", "a", "b", "b", "c", "c"])
    >>> df.tolist(), between.tolist()
    ([1.0, 1.0, 2.0], [True, True, False])
    """
    exog = np.asarray(exog, float)
    codes, uniq = pd.factorize(pd.Series(np.asarray(subjects)))
    n_obs, n_sub = exog.shape[0], len(uniq)
    frame = pd.DataFrame(exog)
    grouped = frame.groupby(codes)
    spread = (grouped.max() - grouped.min()).to_numpy()
    between = np.all(np.abs(spread) <= 1e-12 * (1.0 + np.abs(exog).max()), axis=0)
    first = grouped.first().to_numpy()
    rank_b = np.linalg.matrix_rank(first[:, between]) if between.any() else 0
    rank_x = np.linalg.matrix_rank(exog)
    df_b = float(n_sub - rank_b)
    df_w = float(n_obs - n_sub - (rank_x - rank_b))
    return np.where(between, df_b, df_w), between


def _t_inference(estimate, se, df, confidence):
    if not (np.isfinite(se) and se > 0):
        return np.nan, np.nan, np.nan, np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        t = estimate / se
        p = 2.0 * _sps.t.sf(np.abs(t), df) if df > 0 else np.nan
        q = _sps.t.ppf(0.5 + confidence / 2.0, df) if df > 0 else np.nan
    return t, p, estimate - q * se, estimate + q * se


def _levels(codes):
    """Level codes as a pandas Categorical whose categories are the sorted codes.

    patsy would sniff exactly these levels (``sorted`` set) from plain text, value by value;
    from a Categorical it reads the categories and codes at once, so the design matrix is the
    same and is built without a Python loop over every observation.
    """
    return pd.Categorical(codes, categories=sorted(set(codes)))


def fit_lmm_one(sub, structure="", groups=None, sessions=None, covariates=(), confidence=0.95):
    """Fit the model to one structure's rows.

    Parameters
    ----------
    sub : DataFrame
        Rows of one structure (``participant_id, session_id, group, chi_ppb`` + covariates).
    structure : str
        Name used in the rows and notes.
    groups, sessions : list of str, optional
        Level orders; the first of each is the reference.
    covariates : sequence of str
        Covariate columns (numeric ones are mean-centred).
    confidence : float
        Level of the confidence intervals.

    Returns
    -------
    rows : list of dict
        One per fixed effect and marginal contrast (keys of :data:`LMM_COLUMNS`).
    notes : list of str
        Why the model was skipped or restricted, and any fit problem.
    """
    notes = []
    groups = groups or group_order(sub["group"])
    sessions = sessions or sorted(sub["session_id"].unique())
    covariates = list(covariates)
    data = sub[sub["session_id"].isin(sessions) & sub["group"].isin(groups)].dropna(subset=["chi_ppb"])
    if covariates:
        n0 = data["participant_id"].nunique()
        data = data.dropna(subset=covariates)
        lost = n0 - data["participant_id"].nunique()
        if lost:
            notes.append(f"{structure}: {lost} participant(s) with missing covariate values left out of the LMM")
    per_group = data.groupby("group")["participant_id"].nunique()
    small = [g for g in groups if 0 < per_group.get(g, 0) < MIN_PER_SAMPLE]
    if small:
        notes.append(
            f"{structure}: LMM: group(s) {', '.join(small)} left out (fewer than {MIN_PER_SAMPLE} "
            "participants with a value; minimum-n rule)"
        )
        data = data[~data["group"].isin(small)]
        if data.empty:
            notes.append(f"{structure}: LMM skipped: no group has {MIN_PER_SAMPLE} or more participants")
            return [], notes
    groups = [g for g in groups if (data["group"] == g).any()]
    sessions = [s for s in sessions if (data["session_id"] == s).any()]
    n_subj = data["participant_id"].nunique()
    counts = data.groupby("participant_id")["session_id"].nunique()
    n_incomplete = int((counts < len(sessions)).sum())
    if len(sessions) < 2:
        notes.append(f"{structure}: LMM skipped: one session only (a random subject intercept is not identifiable)")
        return [], notes
    if n_subj < MIN_PER_SAMPLE or int((counts >= 2).sum()) < MIN_PER_SAMPLE:
        notes.append(
            f"{structure}: LMM skipped: too few participants ({n_subj}, of which {int((counts >= 2).sum())} "
            f"with two or more sessions; minimum {MIN_PER_SAMPLE})"
        )
        return [], notes

    # safe codes for every level: label text never enters the formula
    gcode = {g: f"g{i}" for i, g in enumerate(groups)}
    tcode = {s: f"t{i}" for i, s in enumerate(sessions)}
    back = {("grp", v): k for k, v in gcode.items()} | {("tm", v): k for k, v in tcode.items()}
    df = pd.DataFrame(
        {
            "y": data["chi_ppb"].to_numpy(float),
            "grp": _levels(data["group"].astype(str).map(gcode).to_numpy()),
            "tm": _levels(data["session_id"].astype(str).map(tcode).to_numpy()),
            "subject": data["participant_id"].to_numpy(),
        }
    )
    rhs = []
    if len(groups) >= 2:
        rhs.append("C(grp, Treatment('g0'))")
    rhs.append("C(tm, Treatment('t0'))")
    formula = "y ~ " + " * ".join(rhs)
    cov_names = {}
    for i, cov in enumerate(covariates):
        name = f"cov{i}"
        values = data[cov]
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all() and values.nunique() > 2:
            df[name] = (numeric - numeric.mean()).to_numpy(float)
            formula += f" + {name}"
        else:
            levels = sorted(values.astype(str).unique())
            ccode = {lv: f"c{j}" for j, lv in enumerate(levels)}
            back |= {(name, v): k for k, v in ccode.items()}
            df[name] = _levels(values.astype(str).map(ccode).to_numpy())
            formula += f" + C({name}, Treatment('c0'))"
        cov_names[name] = cov
    if len(groups) < 2:
        notes.append(f"{structure}: single group: the LMM has no group or group x time terms")

    y_df, X_df = patsy.dmatrices(formula, df, return_type="dataframe", NA_action="raise")
    fit = reml_random_intercept(y_df.to_numpy().ravel(), X_df.to_numpy(), df["subject"].to_numpy())
    problems = list(fit["problems"])
    var_u, scale = float(fit["var_u"]), float(fit["var_e"])
    if not np.isfinite(var_u) or var_u / max(var_u + scale, 1e-300) < SINGULAR_RATIO:
        problems.insert(0, "singular fit: subject variance estimated at 0 (boundary)")

    def clean(term):
        parts = []
        for piece in term.split(":"):
            if piece.startswith("C(") and "[T." in piece:
                var = piece[2:].split(",")[0]
                code = piece.split("[T.", 1)[1][:-1]
                label = back.get((var, code), code)
                kind = {"grp": "group", "tm": "time"}.get(var, cov_names.get(var, var))
                parts.append(f"{kind}[{label}]")
            else:
                parts.append(cov_names.get(piece, piece))
        return ":".join(parts)

    fe_names = list(X_df.columns)
    exog = X_df.to_numpy()
    col_df, _ = between_within_df(exog, df["subject"].to_numpy())
    fe = np.asarray(fit["beta"], float)
    cov_fe = np.asarray(fit["cov_beta"], float)
    if not np.all(np.isfinite(np.diag(cov_fe))) or np.any(np.diag(cov_fe) <= 0):
        problems.append("standard errors not finite or zero (covariance of the estimates not positive definite)")
    fit_ok = not problems
    for msg in problems:
        notes.append(f"{structure}: LMM fit problem: {msg}; its tests are not highlighted")
    if np.min(col_df) < MIN_DF:
        notes.append(
            f"{structure}: LMM: terms with fewer than {MIN_DF} denominator degrees of freedom are not "
            "tested (too many covariates for the number of participants; minimum-n rule)"
        )
    common = {
        "structure": structure,
        "n_observations": len(df),
        "n_subjects": n_subj,
        "n_subjects_incomplete": n_incomplete,
        "subject_sd_ppb": float(np.sqrt(max(var_u, 0.0))),
        "residual_sd_ppb": float(np.sqrt(scale)),
        "converged": not any("boundary: the optimiser" in pr for pr in problems),
        "fit_ok": fit_ok,
        "fit_warning": "; ".join(problems) if problems else np.nan,
    }
    rows = []

    def add(weights, term, term_type):
        used = np.flatnonzero(weights)
        dfv = float(np.min(col_df[used]))
        est = float(weights @ fe)
        se = float(np.sqrt(max(weights @ cov_fe @ weights, 0.0)))
        if dfv < MIN_DF:
            t = p = lo = hi = np.nan
        else:
            t, p, lo, hi = _t_inference(est, se, dfv, confidence)
        rows.append(common | {"term": term, "term_type": term_type, "estimate": est, "se": se, "t": t,
                              "df": dfv, "p": p, "ci_low": lo, "ci_high": hi})

    k = len(fe_names)
    cleaned = [clean(n) for n in fe_names]
    idx = {n: i for i, n in enumerate(cleaned)}
    for i, name in enumerate(cleaned):
        w = np.zeros(k)
        w[i] = 1.0
        add(w, name, "fixed_effect")

    def contrast(weights, term):
        w = np.zeros(k)
        for n, v in weights.items():
            w[idx[n]] = v
        add(w, term, "marginal_contrast")

    if len(groups) >= 2:
        for g in groups[1:]:
            w = {f"group[{g}]": 1.0}
            for t in sessions[1:]:
                inter = f"group[{g}]:time[{t}]"
                if inter in idx:
                    w[inter] = 1.0 / len(sessions)
            contrast(w, f"group[{g}] (marginal)")
        for t in sessions[1:]:
            w = {f"time[{t}]": 1.0}
            for g in groups[1:]:
                inter = f"group[{g}]:time[{t}]"
                if inter in idx:
                    w[inter] = 1.0 / len(groups)
            contrast(w, f"time[{t}] (marginal)")
    return rows, notes


def fit_lmm(table, groups=None, sessions=None, covariates=(), alpha=0.05, confidence=0.95):
    """Fit :func:`fit_lmm_one` per structure; BH-FDR across structures per term.

    The intercept is not corrected; rows of fits that are not OK (``fit_ok`` false) keep their
    p-values (and count in the FDR family) but are never ``significant_fdr``.

    Parameters
    ----------
    table : pandas.DataFrame
        Analysis table (:func:`qsmprep.stats.cohort.analysis_table`), with the covariates.
    groups, sessions : list of str, optional
        Level orders; the first of each is the reference of the treatment coding.
    covariates : sequence of str
        Covariate columns (numeric ones mean-centred).
    alpha : float
        FDR level.
    confidence : float
        Coverage of the intervals.

    Returns
    -------
    pandas.DataFrame
        :data:`LMM_COLUMNS` + ``p_fdr``, ``significant_fdr``.
    list of str
        Notes (skips, fit problems).

    References
    ----------
    Lindstrom MJ, Bates DM. Newton-Raphson and EM algorithms for linear mixed-effects models for
    repeated-measures data. J Am Stat Assoc 1988;83:1014-1022.
    Schluchter MD, Elashoff JT. Small-sample adjustments to tests with unbalanced repeated
    measures assuming several covariance structures. J Stat Comput Simul 1990;37:69-87.
    """
    groups = groups or group_order(table["group"])
    sessions = sessions or table.attrs.get("session_order") or sorted(table["session_id"].unique())
    structures = table.attrs.get("structures") or list(dict.fromkeys(table["structure"]))
    rows, notes = [], []
    for struct in structures:
        r, n = fit_lmm_one(table[table["structure"] == struct], struct, groups, sessions, covariates, confidence)
        rows += r
        notes += n
    df = pd.DataFrame(rows, columns=LMM_COLUMNS)
    df = add_fdr(df, ["term", "term_type"], alpha=alpha)
    icpt = df["term"] == "Intercept"
    df.loc[icpt, "p_fdr"] = np.nan
    df.loc[icpt, "significant_fdr"] = False
    # a fit that is singular or did not converge is reported, never highlighted
    df.loc[~df["fit_ok"].astype(bool), "significant_fdr"] = False
    return df, notes
