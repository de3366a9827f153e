"""Host-side statistics (float64 NumPy / SciPy), their summaries and figures.

- :mod:`tokdyn.stats.inference`  paired t-tests, effect sizes, Holm / Bonferroni / BH corrections,
  bootstrap intervals, point-biserial r, gain retained; its public names are available here
  (``tokdyn.stats.paired_ttest``)
- :mod:`tokdyn.stats.summary`    per-condition statistics of a sweep, marginal tables, Pareto fronts,
  bootstrap intervals
- :mod:`tokdyn.stats.figures`    figures (matplotlib's object API)
- :mod:`tokdyn.stats.text`       metrics of sampled token sequences against a reference corpus

``summary``, ``figures`` and ``text`` are loaded on first access (``figures`` imports matplotlib,
``summary`` the sweep engine).
"""

import importlib

from tokdyn.stats import inference  # noqa: F401
from tokdyn.stats.inference import (
    P_ADJUSTMENTS,
    CorrelationResult,
    GainResult,
    TTestResult,  # noqa: F401
    benjamini_hochberg,
    bonferroni,
    bootstrap_ci,
    bootstrap_statistic,
    bounded_mean_interval,
    cohens_d,
    gain_retained,
    holm,
    paired_ttest,
    point_biserial,
    wilson_interval,
)

_SUBMODULES = ["summary", "figures", "text"]
__all__ = [
    "inference",
    *_SUBMODULES,
    "TTestResult",
    "paired_ttest",
    "cohens_d",
    "bonferroni",
    "holm",
    "benjamini_hochberg",
    "P_ADJUSTMENTS",
    "bootstrap_ci",
    "bootstrap_statistic",
    "wilson_interval",
    "bounded_mean_interval",
    "CorrelationResult",
    "point_biserial",
    "GainResult",
    "gain_retained",
]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"tokdyn.stats.{name}")
    raise AttributeError(f"module 'tokdyn.stats' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
