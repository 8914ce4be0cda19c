"""Multiple-comparison correction across structures (Benjamini-Hochberg FDR)."""

from __future__ import annotations

import numpy as np
from statsmodels.stats.multitest import multipletests


def fdr_bh(pvalues, alpha=0.05):
    """Benjamini-Hochberg step-up FDR adjustment.

    ``NaN`` p-values are left out of the family and stay ``NaN``.

    Parameters
    ----------
    pvalues : array_like
        P-values of one family.
    alpha : float
        FDR level.

    Returns
    -------
    p_fdr : numpy.ndarray
        Adjusted p-values, input length.
    reject : numpy.ndarray of bool
        ``p_fdr`` below ``alpha`` (False where p is NaN).

    References
    ----------
    Benjamini Y, Hochberg Y. Controlling the false discovery rate: a practical and powerful
    approach to multiple testing. J R Stat Soc B 1995;57:289-300.

    Examples
    --------
    >>> p_fdr, reject = fdr_bh([0.01, 0.04, float("nan")])
    >>> p_fdr.round(3).tolist(), reject.tolist()
    ([0.02, 0.04, nan], [True, True, False])
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
    """Add ``p_fdr`` and ``significant_fdr`` to a table, correcting within each family.

    Parameters
    ----------
    df : pandas.DataFrame
        Test results, one row per test.
    family : list of str
        Columns whose values define a family (e.g. ``["source"]`` for the ANOVA: the group
        effect is corrected across structures, separately from the time effect).
    p_column : str
        Column with the p-values to correct.
    alpha : float
        FDR level.
    out_column : str
        Name of the adjusted p-value column.

    Returns
    -------
    pandas.DataFrame
        A copy with ``out_column`` and the boolean ``significant_fdr``.
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
