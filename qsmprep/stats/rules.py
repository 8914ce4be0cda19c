"""Minimum-n rules and fit-quality thresholds of the group statistics (one place, documented).

Below these limits a test is not run (no p-value, nothing highlighted) and the reason is written
to ``warnings.tsv`` and the report.  They are deliberately simple and are stated in
``docs/usage.md`` (group level, "Minimum sample sizes").

* :data:`MIN_PER_SAMPLE` - a paired t-test needs this many complete pairs in the group; a Welch
  test this many participants in each group at the session; the mixed ANOVA keeps a group only
  when it has this many complete participants; the linear mixed model needs this many
  participants with a value in each group it models.  With 3 per sample a t-test has at least
  2 degrees of freedom; with 2 (``n = 2``, one degree of freedom) a paired t-test reported
  ``d = 54`` in a 4-subject example, which is noise, not an effect.
* :data:`MIN_DF` - every linear-mixed-model term needs at least this many denominator degrees
  of freedom (between-within approximation, :mod:`qsmprep.stats.lmm`); with covariates on a few
  participants the between-subject degrees of freedom run out first.
* :data:`SINGULAR_RATIO` - a mixed-model fit whose subject variance is below this fraction of
  the total variance is *singular* (on the boundary of the parameter space): reported, never
  highlighted.
"""

from __future__ import annotations

#: minimum participants (or complete pairs) per sample for any test
MIN_PER_SAMPLE = 3
#: minimum denominator degrees of freedom of a linear-mixed-model term
MIN_DF = 2
#: subject variance / (subject + residual variance) below this is a singular (boundary) fit
SINGULAR_RATIO = 1e-4

__all__ = ["MIN_PER_SAMPLE", "MIN_DF", "SINGULAR_RATIO"]
