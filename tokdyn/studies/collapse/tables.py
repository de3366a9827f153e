"""The phase diagrams as tables: a sweep's cells as a (rows, ratios) array (:func:`phase_table`),
every diagram's cells as the rows of ``phase.csv`` (:func:`phase_rows`)."""

from __future__ import annotations

import numpy as np


def phase_table(r, row_axis, rows, ratios, field) -> np.ndarray:
    """The mean of ``field`` over the runs ``r`` of each cell: ``(len(rows), len(ratios))``, a row
    per value of the column ``row_axis`` in ``rows``, a column per ratio of ``ratios``."""
    return np.array(
        [
            [r[field][(r[row_axis] == np.float32(a)) & (r["ratio"] == q)].astype(float).mean() for q in ratios]
            for a in rows
        ]
    )  # (rows, ratios)


def phase_rows(ratios, phase, mom, rep, cfg):
    """Flat per-cell table of every phase diagram (:func:`~tokdyn.studies.collapse.phase_parts`'s sweeps).

    Args:
      ratios: (R,) the values of tau / tau_c swept.
      phase: T -> the noise x ratio sweep with T tokens (a dict of equal-length columns:
        ``noise``, ``ratio``, ``seed`` and the run's outputs ``collapsed``, ``merged``, ``groups``,
        ``converged``, ``steps``, ``min_sep_rel``).
      mom: the momentum x ratio sweep (T = 4), the same columns with ``momentum`` for ``noise``.
      rep: the repulsion x ratio sweep (T = 4), with ``repulsion_rel`` (gamma over
        (tr Cov X)^(3/2)).
      cfg: the study's :class:`~tokdyn.studies.collapse.Config` (the axis values swept).

    Returns:
      One dict per diagram, axis value and ratio: ``diagram``, ``axis``, ``value``, ``t_over_k``,
      ``ratio``, the mean rates ``collapsed``, ``merged``, ``converged``, the mean ``groups`` and
      ``steps``, and the median ``min_sep_rel``.
    """
    out = []
    for name, r, axis, values, tk in [(f"noise_T{t}", phase[t], "noise", cfg.phase_noise, t / 3) for t in phase] + [
        ("momentum", mom, "momentum", cfg.momentum, 4 / 3),
        ("repulsion", rep, "repulsion_rel", cfg.repulsion_rel, 4 / 3),
    ]:
        for a in values:
            for q in ratios:
                sel = (r[axis] == np.float32(a)) & (r["ratio"] == q)
                out.append(
                    dict(
                        diagram=name,
                        axis=axis,
                        value=float(a),
                        t_over_k=tk,
                        ratio=float(q),
                        collapsed=r["collapsed"][sel].mean(),
                        merged=r["merged"][sel].mean(),
                        groups=r["groups"][sel].mean(),
                        converged=r["converged"][sel].mean(),
                        steps=r["steps"][sel].mean(),
                        min_sep_rel=np.median(r["min_sep_rel"][sel]),
                    )
                )
    return out
