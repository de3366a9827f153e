"""Diagnostics of latent reasoners, over any model that implements the ``apply`` protocol
(``apply(params, batch, *, latents=None, intervene=None) -> Outputs(logits, hidden, attention, latents)``,
the type :class:`tokdyn.models.latent.model.ApplyFn`, every output's shape in
:class:`tokdyn.models.latent.model.Outputs`); submodules loaded on first access.

- :mod:`tokdyn.diagnostics.protocol`   the protocol's types and :func:`~tokdyn.diagnostics.protocol.check_apply`,
  the check (one ``jax.eval_shape`` of the model; for a diagnostic that reads ``hidden``, one probe
  intervention that ``hidden[:, 0]`` must follow) every diagnostic that takes a model runs first

- :mod:`tokdyn.diagnostics.mediation`  causal mediation of the latents, decomposition of the latent
  block, attention narrowness
- :mod:`tokdyn.diagnostics.dmlr`       confidence-driven latent optimisation at inference (DMLR)
- :mod:`tokdyn.diagnostics.perturb`    image perturbations
- :mod:`tokdyn.diagnostics.grounding`  per-token grounding scores
- :mod:`tokdyn.diagnostics.perception` token dynamics of a vision-language model's perception tokens (its vision
  tower's patch features as the points of :func:`tokdyn.dynamics.run`)
"""

import importlib

__all__ = ["protocol", "mediation", "dmlr", "perturb", "grounding", "perception"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"tokdyn.diagnostics.{name}")
    raise AttributeError(f"module 'tokdyn.diagnostics' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
