"""Host-side statistics for comparing conditions: paired tests, effect sizes, corrections, bootstrap.

Everything here runs in float64 NumPy and SciPy on concrete arrays, after the JAX work is done:
p-values from a float32 ``betainc`` lose accuracy at the large degrees of freedom that sweeps over
thousands of seeds produce, and these inputs (one number per run) are small. Student t tail
probabilities come from ``scipy.special.stdtr`` (SciPy is installed with JAX); SciPy, statsmodels
and, where installed, mpmath are the tests' references.

Public functions

- :func:`paired_ttest` -- two-sided paired t-test, vectorised over all but one axis.
- :func:`cohens_d` -- paired effect size ``d_z``.
- :func:`bonferroni`, :func:`holm`, :func:`benjamini_hochberg` -- adjusted p-values over a family
  of tests of any shape (NaN entries are not part of the family); :data:`P_ADJUSTMENTS` names them.
- :func:`bootstrap_ci` -- percentile bootstrap confidence interval of the mean.
- :func:`wilson_interval` -- Wilson score interval of a rate ``k / n`` (SciPy's ``binomtest``).
- :func:`bounded_mean_interval` -- Student's t interval of a mean of values in a known range,
  made on the logit scale of that range, so it never leaves it.
- :func:`point_biserial` -- correlation of a score with a binary outcome, its p-value and a
  bootstrap interval.
- :func:`gain_retained` -- the share of a gain (full vs. baseline) a setting retains, with a
  paired bootstrap interval.

Every user-facing argument is validated before any computation: errors are ``ValueError`` or
``TypeError`` and name the argument, the offending value and what is allowed.

One concept a module, every public name re-exported here (``tokdyn.stats.inference.holm``):
:mod:`~tokdyn.stats.inference.paired`, :mod:`~tokdyn.stats.inference.corrections`,
:mod:`~tokdyn.stats.inference.intervals`, :mod:`~tokdyn.stats.inference.resampling`.
"""

from tokdyn.stats.inference.corrections import P_ADJUSTMENTS, benjamini_hochberg, bonferroni, holm
from tokdyn.stats.inference.intervals import bootstrap_ci, bounded_mean_interval, wilson_interval
from tokdyn.stats.inference.paired import TTestResult, cohens_d, paired_ttest
from tokdyn.stats.inference.resampling import (
    CorrelationResult,
    GainResult,
    bootstrap_statistic,
    gain_retained,
    point_biserial,
)

__all__ = [
    "TTestResult",
    "paired_ttest",
    "cohens_d",
    "bonferroni",
    "holm",
    "benjamini_hochberg",
    "P_ADJUSTMENTS",
    "bootstrap_ci",
    "wilson_interval",
    "bounded_mean_interval",
    "bootstrap_statistic",
    "CorrelationResult",
    "point_biserial",
    "GainResult",
    "gain_retained",
]
