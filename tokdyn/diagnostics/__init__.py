"""Diagnostics of latent reasoners, over any model that implements the ``apply`` protocol
(``apply(params, batch, *, latents=None, intervene=None) -> Outputs(logits, hidden, attention, latents)``,
the type :class:`tokdyn.models.protocol.ApplyFn`, every output's shape in
:class:`tokdyn.diagnostics.outputs.Outputs`, also ``tokdyn.diagnostics.Outputs``); submodules loaded on
first access. A minimal example, a model of one's own under the protocol and a diagnostic on it:
:doc:`/concepts/diagnostics`.

- :mod:`tokdyn.diagnostics.protocol`   the protocol's types and :func:`~tokdyn.diagnostics.protocol.check_apply`,
  the check (one ``jax.eval_shape`` of the model; for a diagnostic that reads ``hidden``, one probe
  intervention that ``hidden[:, 0]`` must follow) every diagnostic that takes a model runs first
- :mod:`tokdyn.diagnostics.outputs`    :class:`~tokdyn.diagnostics.outputs.Outputs`, what ``apply`` returns
  (defined beside the call's type in :mod:`tokdyn.models.protocol`, the layer the models implement it in)
- :mod:`tokdyn.diagnostics.summaries`  :func:`~tokdyn.diagnostics.summaries.summarise`: a diagnostic's result
  (:class:`~tokdyn.diagnostics.mediation.Effects`, :class:`~tokdyn.diagnostics.dmlr.Result`) as a readable table

- :mod:`tokdyn.diagnostics.mediation`  causal mediation of the latents (input -> latent, latent -> answer)
- :mod:`tokdyn.diagnostics.decomposition`  decomposition of the latent block, attention narrowness
- :mod:`tokdyn.diagnostics.dmlr`       confidence-driven latent optimisation at inference (DMLR)
- :mod:`tokdyn.diagnostics.grounding`  per-token grounding scores
- :mod:`tokdyn.diagnostics.vlm`        the analyses on a checkpoint family's model, over one kind of generation
  (the latent block the model writes, or one forced after the prompt) under the one table of interventions and
  perturbed images, and teacher-forced through its ``apply`` adapter (the one implementation the
  ``vlm-diagnostics`` study, the example and the benchmark call); its static subject in
  :mod:`tokdyn.diagnostics.subjects`
- :mod:`tokdyn.diagnostics.choices`    multiple-choice prompts and the option read from generated text, as the
  benchmarks score them
- :mod:`tokdyn.diagnostics.perception` token dynamics of a vision-language model's perception tokens (its vision
  tower's patch features as the points of :func:`tokdyn.dynamics.run`)
"""

import importlib

__all__ = [
    "protocol",
    "outputs",
    "summaries",
    "mediation",
    "decomposition",
    "dmlr",
    "grounding",
    "subjects",
    "vlm",
    "choices",
    "perception",
]


def __getattr__(name):
    if name == "Outputs":  # the protocol's output type, at home here
        return importlib.import_module("tokdyn.diagnostics.outputs").Outputs
    if name in __all__:
        return importlib.import_module(f"tokdyn.diagnostics.{name}")
    raise AttributeError(f"module 'tokdyn.diagnostics' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__) | {"Outputs"})
