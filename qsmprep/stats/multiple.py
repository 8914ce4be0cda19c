"""Multiple-comparison correction across structures (Benjamini-Hochberg FDR)."""

from __future__ import annotations

import numpy as np
from statsmodels.stats.multitest import multipletests


def fdr_bh(pvalues, alpha=0.05):
    """Benjamini-Hochberg step-up FDR.

    Benjamini Y, Hochberg Y (1995). Controlling the false discovery rate: a practical and
    powerful approach to multiple testing. J R Stat Soc B 57:289-300.

    ``NaN`` p-values are left out of the family and stay ``NaN``.  Returns
    ``(p_fdr, reject)`` arrays of the input length (``reject`` is False where p is NaN).
    """
    p = np.asarray(pvalues, dtype=float)
    p_fdr = np.full(p.shape, np.nan)
    reject = np.zeros(p.shape, dtype=bool)
    ok = np.isfinite(p)
    if ok.any():
        rej, padj, _, _ = multipletests(p[ok], alpha=alpha, method="fdr_bh")
        p_fdr[ok] = padj
        reject[ok] = rej
    return p_fdr, reject


def add_fdr(df, family, p_column="p", alpha=0.05, out_column="p_fdr"):
    """Add ``p_fdr`` (and ``significant_fdr``) to ``df``, correcting within each family.

    ``family`` is a list of columns whose values define a family (e.g. ``["source"]`` for the
    ANOVA: the group effect is corrected across structures, separately from the time effect).
    """
    df = df.copy()
    df[out_column] = np.nan
    df["significant_fdr"] = False
    if df.empty:
        return df
    for _, idx in df.groupby(list(family), sort=False, dropna=False).groups.items():
        p_fdr, reject = fdr_bh(df.loc[idx, p_column].to_numpy(float), alpha=alpha)
        df.loc[idx, out_column] = p_fdr
        df.loc[idx, "significant_fdr"] = reject
    df["significant_fdr"] = df["significant_fdr"].astype(bool)
    return df


__all__ = ["fdr_bh", "add_fdr"]
