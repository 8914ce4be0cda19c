"""Linear mixed-effects model per structure: ``chi ~ group * time + covariates + (1 | subject)``.

Fitted with statsmodels ``MixedLM`` (REML; Lindstrom MJ, Bates DM, 1988, J Am Stat Assoc
83:1014-1022; Seabold S, Perktold J, 2010, statsmodels, Proc 9th Python in Science Conf).
Unlike the mixed ANOVA, every available observation enters: a participant with a missing
follow-up still informs the baseline group difference and the subject variance.

Coding: treatment (dummy) coding with the reference group (controls) and the first session as
reference, so ``group[MS]`` is the MS - HC difference at the first session, ``time[ses-x]`` the
change in the reference group and ``group[MS]:time[ses-x]`` the difference in change.
Numeric covariates are mean-centred (the intercept is then the reference cell at the cohort's
mean covariate value); categorical covariates are dummy coded.  Two marginal contrasts are added
per structure from the same fit (Wald tests of linear combinations of the fixed effects):
``group[G] (marginal)`` - the group difference averaged with equal weight over sessions - and
``time[T] (marginal)`` - the change from the first session averaged with equal weight over
groups; these are the quantities the ANOVA's main effects test.
"""

from __future__ import annotations

import re
import warnings as _warnings

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf

from .cohort import group_order
from .multiple import add_fdr

LMM_COLUMNS = [
    "structure",
    "term",
    "term_type",
    "estimate",
    "se",
    "z",
    "p",
    "ci_low",
    "ci_high",
    "n_observations",
    "n_subjects",
    "n_subjects_incomplete",
    "subject_sd_ppb",
    "residual_sd_ppb",
    "converged",
]


def _q(level):
    return repr(str(level))


def fit_lmm_one(sub, structure="", groups=None, sessions=None, covariates=(), confidence=0.95):
    """Fit the model to one structure's rows; returns ``(rows, notes)``."""
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
    groups = [g for g in groups if (data["group"] == g).any()]
    sessions = [s for s in sessions if (data["session_id"] == s).any()]
    n_subj = data["participant_id"].nunique()
    counts = data.groupby("participant_id")["session_id"].nunique()
    n_incomplete = int((counts < len(sessions)).sum())
    if len(sessions) < 2:
        notes.append(f"{structure}: LMM skipped: one session only (a random subject intercept is not identifiable)")
        return [], notes
    if n_subj < 3 or len(data) <= n_subj:
        notes.append(f"{structure}: LMM skipped: too few observations ({len(data)} from {n_subj} participants)")
        return [], notes

    df = pd.DataFrame(
        {
            "y": data["chi_ppb"].to_numpy(float),
            "grp": data["group"].astype(str).to_numpy(),
            "tm": data["session_id"].astype(str).to_numpy(),
            "subject": data["participant_id"].to_numpy(),
        }
    )
    rhs = []
    if len(groups) >= 2:
        rhs.append(f"C(grp, Treatment({_q(groups[0])}))")
    rhs.append(f"C(tm, Treatment({_q(sessions[0])}))")
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
            df[name] = values.astype(str).to_numpy()
            formula += f" + C({name})"
        cov_names[name] = cov
    if len(groups) < 2:
        notes.append(f"{structure}: single group: the LMM has no group or group x time terms")

    model = smf.mixedlm(formula, df, groups=df["subject"])
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        res = model.fit(reml=True)
        if not res.converged:
            res = model.fit(reml=True, method=["powell", "lbfgs"])
    for w in caught:
        msg = str(w.message).splitlines()[0]
        if "converg" in msg.lower() or "boundary" in msg.lower() or "singular" in msg.lower():
            notes.append(f"{structure}: LMM: {msg}")
    if not res.converged:
        notes.append(f"{structure}: LMM did not converge; estimates are shown but unreliable")

    def clean(name):
        name = re.sub(r"C\(grp, Treatment\([^)]*\)\)\[T\.(.*?)\]", r"group[\1]", name)
        name = re.sub(r"C\(tm, Treatment\([^)]*\)\)\[T\.(.*?)\]", r"time[\1]", name)
        name = re.sub(r"C\((cov\d+)\)\[T\.(.*?)\]", lambda m: f"{cov_names[m.group(1)]}[{m.group(2)}]", name)
        return cov_names.get(name, name)

    fe_names = list(res.fe_params.index)
    ci = res.conf_int(alpha=1 - confidence)
    subj_sd = float(np.sqrt(max(res.cov_re.iloc[0, 0], 0.0)))
    resid_sd = float(np.sqrt(res.scale))
    common = {
        "structure": structure,
        "n_observations": len(df),
        "n_subjects": n_subj,
        "n_subjects_incomplete": n_incomplete,
        "subject_sd_ppb": subj_sd,
        "residual_sd_ppb": resid_sd,
        "converged": bool(res.converged),
    }
    rows = []
    for name in fe_names:
        rows.append(
            common
            | {
                "term": clean(name),
                "term_type": "fixed_effect",
                "estimate": res.fe_params[name],
                "se": res.bse_fe[name],
                "z": res.tvalues[name],
                "p": res.pvalues[name],
                "ci_low": ci.loc[name, 0],
                "ci_high": ci.loc[name, 1],
            }
        )

    # marginal contrasts (equal-weight averages over the other factor's levels)
    k = len(fe_names)
    cleaned = [clean(n) for n in fe_names]
    idx = {n: i for i, n in enumerate(cleaned)}

    def contrast(weights, term):
        r = np.zeros(k)
        for n, w in weights.items():
            r[idx[n]] = w
        tt = res.t_test(r[None, :])
        ci_c = np.asarray(tt.conf_int(alpha=1 - confidence)).ravel()
        rows.append(
            common
            | {
                "term": term,
                "term_type": "marginal_contrast",
                "estimate": float(np.ravel(tt.effect)[0]),
                "se": float(np.ravel(tt.sd)[0]),
                "z": float(np.ravel(tt.tvalue)[0]),
                "p": float(np.ravel(tt.pvalue)[0]),
                "ci_low": ci_c[0],
                "ci_high": ci_c[1],
            }
        )

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
    """Fit :func:`fit_lmm_one` per structure; BH-FDR across structures per term (the
    intercept is not corrected).  Returns ``(DataFrame with LMM_COLUMNS + p_fdr,
    significant_fdr; notes)``."""
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
    return df, notes
