"""Mixed factorial ANOVA (group between-subjects x time within-subjects) per structure.

The sums of squares come from pingouin (Vallat R, 2018, Pingouin: statistics in Python,
J Open Source Softw 3(31):1026), ``pingouin.mixed_anova``; with a single group the design
reduces to a one-way repeated-measures ANOVA (``pingouin.rm_anova``) and with a single session
to a one-way between-subjects ANOVA (``pingouin.anova``).  The ANOVA needs complete cases:
participants without a value at every session are excluded from it (and counted in
``n_excluded``); the linear mixed model (:mod:`qsmprep.stats.lmm`) keeps them.  A group enters
the ANOVA only with at least :data:`qsmprep.stats.rules.MIN_PER_SAMPLE` complete participants.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pingouin as pg

from .cohort import group_order
from .multiple import add_fdr
from .rules import MIN_PER_SAMPLE

ANOVA_COLUMNS = [
    "structure",
    "source",
    "test",
    "f",
    "df1",
    "df2",
    "p",
    "p_gg_corr",
    "eps",
    "partial_eta_sq",
    "n_subjects",
    "n_excluded",
]

_SOURCE_NAMES = {"group": "group", "time": "time", "Interaction": "group_x_time"}


def _complete_cases(sub, n_sessions):
    ok = sub.dropna(subset=["chi_ppb"])
    counts = ok.groupby("participant_id")["session_id"].nunique()
    keep = counts[counts == n_sessions].index
    return ok[ok["participant_id"].isin(keep)], int(sub["participant_id"].nunique() - len(keep))


def _row(struct, source, test, f, df1, df2, p, np2, n, excl, p_gg=np.nan, eps=np.nan):
    return {
        "structure": struct,
        "source": source,
        "test": test,
        "f": float(f),
        "df1": float(df1),
        "df2": float(df2),
        "p": float(p),
        "p_gg_corr": float(p_gg) if p_gg is not None else np.nan,
        "eps": float(eps) if eps is not None else np.nan,
        "partial_eta_sq": float(np2),
        "n_subjects": int(n),
        "n_excluded": int(excl),
    }


def mixed_anova_one(sub, structure="", groups=None, sessions=None):
    """ANOVA of one structure: mixed (group x time), or the fallback the data allow.

    Complete cases only (participants with a value at every session); groups with fewer than
    :data:`~qsmprep.stats.rules.MIN_PER_SAMPLE` complete participants are left out.  Two groups
    and two sessions: ``pingouin.mixed_anova``; one group: ``pingouin.rm_anova`` of time; one
    session: one-way ``pingouin.anova`` of group; otherwise nothing.

    Parameters
    ----------
    sub : pandas.DataFrame
        ``participant_id, session_id, group, chi_ppb`` of one structure.
    structure : str
        Name used in the rows and notes.
    groups, sessions : list of str, optional
        Level orders (default: control-like group first; sorted sessions).

    Returns
    -------
    list of dict
        Rows of :data:`ANOVA_COLUMNS` (one per effect).
    list of str
        Notes (participants or groups left out, fallbacks, skips).

    References
    ----------
    Vallat R. Pingouin: statistics in Python. J Open Source Softw 2018;3(31):1026.
    """
    notes = []
    groups = groups or group_order(sub["group"])
    sessions = sessions or sorted(sub["session_id"].unique())
    sub = sub[sub["session_id"].isin(sessions) & sub["group"].isin(groups)]
    data, excluded = _complete_cases(sub, len(sessions))
    if excluded:
        notes.append(
            f"{structure}: {excluded} participant(s) without a value at every session excluded "
            "from the ANOVA (complete cases only; the LMM keeps them)"
        )
    n_per_group = data.groupby("group")["participant_id"].nunique().reindex(groups, fill_value=0)
    groups_ok = [g for g in groups if n_per_group[g] >= MIN_PER_SAMPLE]
    small = [f"{g} (n = {n_per_group[g]})" for g in groups if 0 < n_per_group[g] < MIN_PER_SAMPLE]
    if small:
        notes.append(
            f"{structure}: ANOVA: group(s) {', '.join(small)} left out: fewer than {MIN_PER_SAMPLE} "
            "complete participants (minimum-n rule)"
        )
    data = data[data["group"].isin(groups_ok)].rename(columns={"session_id": "time"})
    n = data["participant_id"].nunique()
    rows = []
    if len(groups_ok) >= 2 and len(sessions) >= 2:
        res = pg.mixed_anova(
            data=data, dv="chi_ppb", within="time", between="group", subject="participant_id", correction=True
        )
        for r in res.to_dict("records"):
            rows.append(
                _row(
                    structure,
                    _SOURCE_NAMES.get(r["Source"], r["Source"]),
                    "mixed_anova",
                    r["F"],
                    r["DF1"],
                    r["DF2"],
                    r["p_unc"],
                    r["np2"],
                    n,
                    excluded,
                    r.get("p_GG_corr", np.nan),
                    r.get("eps", np.nan),
                )
            )
    elif len(sessions) >= 2 and len(groups_ok) == 1:
        notes.append(
            f"{structure}: only one group with >= {MIN_PER_SAMPLE} complete participants ({groups_ok[0]}): group and "
            "group x time effects not estimable; repeated-measures ANOVA of time only"
        )
        res = pg.rm_anova(
            data=data, dv="chi_ppb", within="time", subject="participant_id", detailed=True,
            correction=True, effsize="np2",
        )
        r = res.iloc[0]
        rows.append(
            _row(
                structure, "time", "rm_anova", r["F"], r["DF"], res.iloc[1]["DF"], r["p_unc"], r["np2"], n, excluded,
                r.get("p_GG_corr", np.nan), r.get("eps", np.nan),
            )
        )
    elif len(sessions) == 1 and len(groups_ok) >= 2:
        notes.append(f"{structure}: a single session: time and group x time effects not estimable; one-way ANOVA of group")
        res = pg.anova(data=data, dv="chi_ppb", between="group", detailed=True)
        r = res.iloc[0]
        rows.append(_row(structure, "group", "oneway_anova", r["F"], r["DF"], res.iloc[1]["DF"], r["p_unc"], r["np2"], n, excluded))
    else:
        notes.append(f"{structure}: ANOVA skipped (needs two groups or two sessions with >= {MIN_PER_SAMPLE} complete participants per group)")
    return rows, notes


def mixed_anova(table, groups=None, sessions=None, alpha=0.05):
    """Run :func:`mixed_anova_one` for every structure and add BH-FDR across structures.

    A family is one effect (source) over the structures, e.g. the group x time interaction;
    the Greenhouse-Geisser corrected p enters the correction when it exists (more than two
    sessions).

    Parameters
    ----------
    table : pandas.DataFrame
        Analysis table (:func:`qsmprep.stats.cohort.analysis_table`).
    groups, sessions : list of str, optional
        Level orders (default: control-like group first; the table's session order).
    alpha : float
        FDR level.

    Returns
    -------
    pandas.DataFrame
        :data:`ANOVA_COLUMNS` + ``p_fdr``, ``significant_fdr``.
    list of str
        Notes of every structure.
    """
    groups = groups or group_order(table["group"])
    sessions = sessions or table.attrs.get("session_order") or sorted(table["session_id"].unique())
    structures = table.attrs.get("structures") or list(dict.fromkeys(table["structure"]))
    rows, notes = [], []
    for struct in structures:
        r, n = mixed_anova_one(table[table["structure"] == struct], struct, groups, sessions)
        rows += r
        notes += n
    df = pd.DataFrame(rows, columns=ANOVA_COLUMNS)
    # the GG-corrected p is the one to read when it exists (> 2 sessions)
    df["p_used"] = df["p_gg_corr"].where(df["p_gg_corr"].notna(), df["p"])
    df = add_fdr(df, ["source"], p_column="p_used", alpha=alpha)
    return df.drop(columns="p_used"), notes
