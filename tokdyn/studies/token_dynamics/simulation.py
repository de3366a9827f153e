"""Every run of the token-dynamics study: :func:`simulate`, one engine sweep per update-rule task."""

from __future__ import annotations

import jax
import numpy as np

from tokdyn.engine import sweep
from tokdyn.studies.token_dynamics.config import Config


def simulate(
    cfg: Config, *, rules=None, chunk_size=None, batch_size="auto", devices=None, progress=False
) -> dict[str, np.ndarray]:
    """Run every run of the study: a :func:`tokdyn.engine.sweep.run` of each of :meth:`Config.tasks`.

    One task for the built-in methods (:meth:`Config.task`) and one per rule of ``rules``, each over
    :meth:`Config.grid` with common random numbers (the data and initial tokens of a seed are
    shared by every method and condition, and drawn once per seed and task). The execution
    options do not change any result.

    Args:
      cfg: the study's :class:`Config`.
      rules: optional ``{name: tokdyn.dynamics.Rule}`` that ``cfg.methods`` may name.
      chunk_size: runs per chunk, as in :func:`tokdyn.engine.sweep.run` (None: its default).
      batch_size: runs vmapped together on a device (``None``: all, ``1``: one by one,
        ``"auto"``: the backend's default; :func:`tokdyn.engine.execute.map_runs`).
      devices: the devices the runs are split over (None: the local devices).
      progress: a progress bar (:class:`tokdyn.io.Progress`).

    Returns:
      The run table: ``method``, ``n_clusters``, ``noise``, ``seed``, then one column per metric,
      ordered by method, K, noise, then seed.
    """
    cfg.validate(rules)
    parts, fields = [], None
    for task, idx in cfg.tasks(rules):
        res = sweep.run(
            task,
            cfg.grid(len(idx)),
            key=jax.random.key(cfg.root_seed),
            common_random_numbers=True,
            chunk_size=chunk_size,
            batch_size=batch_size,
            devices=devices,
            progress=progress,
            part=(0, 1),
        )
        fields = fields or res.fields
        part = {k: res[k] for k in ("n_clusters", "noise", "seed", *fields)}
        part["method"] = np.asarray(idx)[res["method"]]
        parts.append(part)
    res = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.lexsort((res["seed"], res["noise"], res["n_clusters"], res["method"]))
    table = dict(
        method=np.asarray(cfg.methods)[res["method"][order]],
        n_clusters=res["n_clusters"][order].astype(np.int32),
        noise=res["noise"][order].astype(np.float32),
        seed=res["seed"][order].astype(np.int32),
    )
    table.update({f: res[f][order] for f in fields})
    return table
