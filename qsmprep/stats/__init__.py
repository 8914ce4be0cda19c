"""Group-level statistics on the cohort's DGM susceptibility tables.

Pure functions: pandas DataFrames in, DataFrames out; no nipype, no file I/O.

* :mod:`.cohort` - long table (``dgm_long.tsv``) and the per-structure analysis table
* :mod:`.descriptives` - mean +/- SD per structure x group x session
* :mod:`.anova` - mixed ANOVA (group x time), pingouin
* :mod:`.ttests` - paired and Welch t-tests, Cohen's d_z / d with noncentral-t CIs
* :mod:`.lmm` - linear mixed model ``chi ~ group * time + covariates + (1 | subject)``
* :mod:`.multiple` - Benjamini-Hochberg FDR across structures per test family
* :mod:`.rules` - minimum-n rules and fit-quality thresholds
"""

from .anova import mixed_anova, mixed_anova_one
from .cohort import (
    DEFAULT_STRUCTURES,
    analysis_table,
    build_long_table,
    group_order,
    order_sessions,
    session_sort_key,
    stack_long_table,
)
from .descriptives import descriptives
from .lmm import between_within_df, fit_lmm, fit_lmm_one, reml_random_intercept
from .multiple import add_fdr, fdr_bh
from .rules import MIN_DF, MIN_PER_SAMPLE, SINGULAR_RATIO
from .ttests import cohen_d_pooled, cohen_dz, follow_up_ttests, noncentral_t_ci, paired_test, welch_test

__all__ = [
    "DEFAULT_STRUCTURES",
    "MIN_DF",
    "MIN_PER_SAMPLE",
    "SINGULAR_RATIO",
    "between_within_df",
    "add_fdr",
    "analysis_table",
    "build_long_table",
    "cohen_d_pooled",
    "cohen_dz",
    "descriptives",
    "fdr_bh",
    "fit_lmm",
    "fit_lmm_one",
    "follow_up_ttests",
    "group_order",
    "mixed_anova",
    "mixed_anova_one",
    "noncentral_t_ci",
    "order_sessions",
    "paired_test",
    "reml_random_intercept",
    "session_sort_key",
    "stack_long_table",
    "welch_test",
]
