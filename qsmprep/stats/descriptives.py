"""Descriptive statistics per structure x group x session (pandas in, pandas out)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .cohort import group_order


def descriptives(table, groups=None, sessions=None):
    """Mean, SD (ddof=1), SEM, median, min, max and n of ``chi_ppb``.

    Parameters
    ----------
    table : DataFrame from :func:`qsmprep.stats.cohort.analysis_table`.
    groups, sessions : level orders (default: control-like group first, ``attrs`` session order).

    Returns
    -------
    DataFrame with columns ``structure, group, session_id, n, n_missing, mean_ppb, sd_ppb,
    sem_ppb, median_ppb, min_ppb, max_ppb`` (one row per structure x group x session, including
    cells where every value is missing, with ``n = 0``).
    """
    groups = groups or group_order(table["group"])
    sessions = sessions or table.attrs.get("session_order") or sorted(table["session_id"].unique())
    structures = table.attrs.get("structures") or list(dict.fromkeys(table["structure"]))
    rows = []
    for struct in structures:
        for grp in groups:
            for ses in sessions:
                cell = table[(table["structure"] == struct) & (table["group"] == grp) & (table["session_id"] == ses)]
                vals = cell["chi_ppb"].dropna().to_numpy(float)
                n = vals.size
                rows.append(
                    {
                        "structure": struct,
                        "group": grp,
                        "session_id": ses,
                        "n": n,
                        "n_missing": int(cell["chi_ppb"].isna().sum()),
                        "mean_ppb": vals.mean() if n else np.nan,
                        "sd_ppb": vals.std(ddof=1) if n > 1 else np.nan,
                        "sem_ppb": vals.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan,
                        "median_ppb": np.median(vals) if n else np.nan,
                        "min_ppb": vals.min() if n else np.nan,
                        "max_ppb": vals.max() if n else np.nan,
                    }
                )
    return pd.DataFrame(rows)
