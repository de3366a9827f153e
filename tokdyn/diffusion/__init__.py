"""Diffusion processes, continuous (DDPM / DDIM) and discrete (D3PM), as pure kernels.

Time runs over ``t = 1..T``; ``betas`` (T,) holds beta_1..beta_T and ``alpha_bar`` (T+1,)
holds ``alpha_bar_t = prod_{s<=t} (1 - beta_s)`` with ``alpha_bar_0 = 1``.

* Schedules (:func:`betas`): ``linear``, ``cosine`` (improved DDPM's), ``cosine_d3pm`` and
  ``absorbing``.
* Continuous (:class:`Gaussian`): :func:`q_sample`, :func:`posterior_mean_var`, :func:`ddpm_step`,
  the ancestral :func:`sample` and the deterministic :func:`ddim_sample`.
* Discrete (:class:`Discrete`, D3PM, uniform or absorbing kernel, applied in O(S) without S x S
  matrices): :func:`marginal`, :func:`step_likelihood`, :func:`posterior_logits`,
  :func:`hybrid_loss`, :func:`q_sample_discrete`, :func:`sample_discrete`.

Every function works on one example (any array shape of cells) with a scalar ``t``: ``vmap``
over a batch. Processes are pytrees (their schedules traced), so a sweep over schedules does not
recompile. Host values are checked before tracing; a traced ``t`` (or class, or state) out of
range gives NaN in float outputs and -1 in integer ones (:ref:`diffusion-checks`).

The schedules, kernels and posteriors in detail: :ref:`diffusion-kernels`.

One concept a module, every public name re-exported here (``tokdyn.diffusion.q_sample``):
:mod:`~tokdyn.diffusion.schedules`, :mod:`~tokdyn.diffusion.continuous` (DDPM / DDIM),
:mod:`~tokdyn.diffusion.d3pm` (D3PM).
"""

from tokdyn.diffusion.continuous import (
    Gaussian,
    ddim_sample,
    ddim_times,
    ddpm_step,
    gaussian,
    posterior_mean_var,
    predict_x0,
    q_sample,
    sample,
)
from tokdyn.diffusion.d3pm import (
    KERNELS,
    Discrete,
    cumulative_matrix,
    discrete,
    hybrid_loss,
    marginal,
    n_states,
    nll_bound,
    posterior_logits,
    prior_kl,
    published_cumulative_matrix,
    q_sample_discrete,
    sample_discrete,
    stationary,
    step_likelihood,
    transition_matrix,
)
from tokdyn.diffusion.schedules import SCHEDULES, betas

__all__ = [
    "Discrete",
    "Gaussian",
    "KERNELS",
    "SCHEDULES",
    "betas",
    "cumulative_matrix",
    "ddim_sample",
    "ddim_times",
    "ddpm_step",
    "discrete",
    "gaussian",
    "hybrid_loss",
    "marginal",
    "n_states",
    "nll_bound",
    "posterior_logits",
    "posterior_mean_var",
    "predict_x0",
    "prior_kl",
    "published_cumulative_matrix",
    "q_sample",
    "q_sample_discrete",
    "sample",
    "sample_discrete",
    "stationary",
    "step_likelihood",
    "transition_matrix",
]
