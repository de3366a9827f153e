"""What a model's ``apply`` returns under the diagnostics' protocol: :class:`Outputs` (``logits``,
``hidden``, ``attention``, ``latents``), every field's shape documented. The protocol itself (the
call, its keywords, its checks) is :mod:`tokdyn.diagnostics.protocol`; the library's own reasoner,
:class:`tokdyn.models.latent.model.Model`, returns this type, and
``tokdyn.models.latent.model.Outputs`` is the same object.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

__all__ = ["Outputs"]


class Outputs(NamedTuple):
    """What a reasoner's ``apply`` returns (:class:`tokdyn.models.latent.model.ApplyFn`), for B instances
    of T positions, V tokens, width D, n_layers blocks of H heads and L latents;
    :func:`tokdyn.diagnostics.protocol.check_apply` checks every shape below before a diagnostic runs.

    Attributes:
      logits: (B, T, V) float, the next-token logits at every position (those at the answer
        position predict the answer).
      hidden: (B, n_layers + 1, T, D) float, the residual stream: ``hidden[:, 0]`` the input
        embeddings as the blocks read them (after latent feedback and ``intervene``), ``hidden[:, i]``
        the output of block i (n_layers >= 1).
      attention: (B, n_layers, H, T, T) float, the attention weights of every block and head, query
        by key (each row sums to 1 over the keys it may see).
      latents: (B, L, D) float, the latents the model fed back (its last-layer states after the final
        LayerNorm, before the feedback projection), or the ``latents`` it was given; (B, 0, D) for a
        model without a latent block or with fixed latent slots (pause).
    """

    logits: jax.Array  # (B, T, V)
    hidden: jax.Array  # (B, n_layers + 1, T, D) residual stream: embeddings, then after each block
    attention: jax.Array  # (B, n_layers, H, T, T) attention weights
    latents: jax.Array  # (B, L, D) fed-back last-layer hidden states (after the final LayerNorm)
