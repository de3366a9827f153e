"""Token dynamics on a named point cloud at a temperature relative to its collapse threshold:
:class:`CollapseRun`."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from tokdyn import _checks, analysis, data, dynamics
from tokdyn.engine.runs._fields import check_axes


@dataclasses.dataclass(frozen=True)
class CollapseRun:
    """One run, ``fn(key, ratio, noise, momentum, repulsion_rel) -> dict``: draw the data
    (:func:`tokdyn.data.point_cloud`), start T tokens at distinct data points (Forgy), run the rule
    at tau = ratio * tau_c(data) with repulsion gamma = repulsion_rel * (tr Cov X)^(3/2), and
    report the number of token groups at the merge tolerance ``merge_rel * sqrt(tr Cov X)``,
    whether all tokens merged (collapsed) or any did (merged), convergence (tolerance
    ``tol_rel * sqrt(tr Cov X)``), steps, tau_c and the smallest token separation relative to the
    data's RMS radius. ``groups``, ``collapsed`` and ``merged`` are float32 (1.0 / 0.0 for the
    two flags): NaN, like ``min_sep_rel``, when the final tokens are not finite."""

    shape: str = "blobs2"
    n_tokens: int = 4
    n_points: int = 120
    n_steps: int = 2000
    merge_rel: float = analysis.MERGE_REL
    tol_rel: float = 1e-5

    def check_conditions(self, axes: dict) -> None:
        """Refuse, before anything is traced, a condition out of its range in ``axes`` (``{name: 1-D
        numbers}``): ``ratio > 0`` (the temperature's, :meth:`tokdyn.dynamics.Hparams.validate`),
        ``noise >= 0``, ``momentum`` in ``[0, 1)`` and ``repulsion_rel >= 0``.
        :func:`tokdyn.engine.sweep.run` calls it. ``ValueError`` naming the axis and the value."""
        check_axes(
            axes,
            {
                "ratio": lambda v: _checks.real("ratio", v, low=0.0, low_open=True),
                "noise": lambda v: _checks.real("noise", v, low=0.0),
                "momentum": lambda v: dynamics.Hparams(momentum=v).validate(),
                "repulsion_rel": lambda v: _checks.real("repulsion_rel", v, low=0.0),
            },
        )

    def __call__(self, key, ratio, noise=1.0, momentum=0.0, repulsion_rel=0.0):
        x = data.point_cloud(key, self.shape, self.n_points, noise)  # (N, D)
        tau_c = analysis.collapse_threshold(x)
        scale = jnp.sqrt(jnp.trace(analysis.covariance(x)[0]))
        t0 = dynamics.forgy(x, jax.random.uniform(jax.random.fold_in(key, 1), x.shape[:1]), None, self.n_tokens)
        hparams = dynamics.Hparams(ratio * tau_c, jnp.float32(momentum), repulsion_rel * scale**3)
        r = dynamics.run(x, t0, hparams, n_steps=jnp.int32(self.n_steps), tol=self.tol_rel * scale)
        _, groups = dynamics.token_groups(r.tokens, self.merge_rel * scale)
        sep = analysis.min_separation(r.tokens) / scale if self.n_tokens > 1 else jnp.float32(jnp.inf)
        # tokens that blew up form no groups: NaN, never a count of 1 read as a collapse
        finite = jnp.all(jnp.isfinite(r.tokens))
        known = lambda v: jnp.where(finite, jnp.asarray(v, jnp.float32), jnp.float32(jnp.nan))  # noqa: E731
        return dict(
            groups=known(groups),
            collapsed=known(groups == 1),
            merged=known(groups < self.n_tokens),
            converged=r.converged,
            steps=r.steps,
            tau_c=tau_c,
            min_sep_rel=known(sep),
        )
