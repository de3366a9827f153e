"""Adjusted p-values over a family of tests of any shape (NaN entries are not part of the family):
:func:`bonferroni`, :func:`holm`, :func:`benjamini_hochberg`, named in :data:`P_ADJUSTMENTS`."""

from __future__ import annotations

import numpy as np

from tokdyn.stats.inference._common import (
    describe,
    real_array,
    scalar_or_array,
)


def _pvalue_family(p):
    """Validated float64 copy of ``p``, the flat values that form the family and their positions."""
    arr = real_array("p", p)
    flat = arr.ravel()
    present = ~np.isnan(flat)
    outside = present & ~((flat >= 0.0) & (flat <= 1.0))
    if outside.any():
        shown = flat[outside][0].item()
        raise ValueError(
            f"p must hold p-values in [0, 1] (NaN entries are ignored), got {describe(arr)} "
            f"with {int(outside.sum())} value(s) outside, e.g. {shown!r}"
        )
    return arr, flat[present], present


def _restore(arr: np.ndarray, present: np.ndarray, adjusted: np.ndarray):
    out = np.full(arr.size, np.nan)
    out[present] = adjusted
    return scalar_or_array(out.reshape(arr.shape))


def bonferroni(p):
    """Bonferroni-adjusted p-values: ``min(1, m * p_i)``, with ``m`` the number of non-NaN entries.

    ``p`` may have any shape; the family is all of its non-NaN entries and the result has the same
    shape, with NaN left in place. Controls the family-wise error rate under any dependence.

    Examples:
        >>> from tokdyn import stats
        >>> print(stats.bonferroni([0.01, 0.04, 0.03, float("nan")]).round(3))
        [0.03 0.12 0.09  nan]
    """
    arr, family, present = _pvalue_family(p)
    return _restore(arr, present, np.minimum(family * family.size, 1.0))


def holm(p):
    """Holm step-down adjusted p-values over all non-NaN entries of ``p`` (any shape).

    With the ``m`` p-values sorted ascending, ``p_(1) <= ... <= p_(m)``::

        adj_(i) = min(1, max_{j <= i} (m - j + 1) * p_(j))

    and each value is put back at its original position (NaN entries stay NaN and are not
    counted in ``m``). Controls the family-wise error rate like Bonferroni, never less powerful.
    Equals ``statsmodels.stats.multitest.multipletests(p, method="holm")[1]``.

    Examples:
        >>> from tokdyn import stats
        >>> print(stats.holm([0.01, 0.04, 0.03]).round(3))
        [0.03 0.06 0.06]

    References:
        Holm, S. (1979). A simple sequentially rejective multiple test procedure. *Scandinavian
        Journal of Statistics* 6(2), 65-70.
    """
    arr, family, present = _pvalue_family(p)
    m = family.size
    order = np.argsort(family, kind="stable")
    stepped = np.maximum.accumulate(family[order] * (m - np.arange(m)))
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return _restore(arr, present, adjusted)


def benjamini_hochberg(p):
    """Benjamini-Hochberg step-up adjusted p-values (false discovery rate) over ``p`` (any shape).

    With the ``m`` non-NaN p-values sorted ascending, ``p_(1) <= ... <= p_(m)``::

        adj_(i) = min(1, min_{j >= i} p_(j) * m / j)

    put back at their original positions (NaN entries stay NaN, not counted in ``m``). Controls
    the FDR for independent or positively dependent tests. Equals
    ``statsmodels.stats.multitest.multipletests(p, method="fdr_bh")[1]``.

    Examples:
        >>> from tokdyn import stats
        >>> print(stats.benjamini_hochberg([0.01, 0.04, 0.03]).round(3))
        [0.03 0.04 0.04]

    References:
        Benjamini, Y. and Hochberg, Y. (1995). Controlling the false discovery rate: a practical
        and powerful approach to multiple testing. *Journal of the Royal Statistical Society,
        Series B* 57(1), 289-300.
    """
    arr, family, present = _pvalue_family(p)
    m = family.size
    order = np.argsort(family, kind="stable")
    scaled = family[order] / (np.arange(1, m + 1) / m)
    stepped = np.minimum.accumulate(scaled[::-1])[::-1]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return _restore(arr, present, adjusted)


#: Named p-value adjustments (keys follow statsmodels' ``multipletests`` method names).
P_ADJUSTMENTS = {"bonferroni": bonferroni, "holm": holm, "fdr_bh": benjamini_hochberg}
