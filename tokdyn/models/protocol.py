"""The ``apply`` protocol's types, which a model implements and every diagnostic reads:
:class:`ApplyFn` (the call) and :class:`Outputs` (what it returns, every field's shape).

They live in the models' layer because a model implements them; :mod:`tokdyn.diagnostics.protocol` (the
checks, :func:`~tokdyn.diagnostics.protocol.check_apply`) and the diagnostics above it read them. The
checkpoint families' adapter (:func:`tokdyn.models.vlm.adapter.make_apply`, bound per family) implements it,
and so can a model of one's own (:doc:`/concepts/diagnostics`). This module imports nothing of tokdyn's.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Protocol

import jax

__all__ = ["ApplyFn", "Outputs"]


class Outputs(NamedTuple):
    """What a reasoner's ``apply`` returns (:class:`ApplyFn`), for B instances
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


class ApplyFn(Protocol):
    """The protocol every latent-reasoner diagnostic (:mod:`tokdyn.diagnostics`) uses; any JAX model
    implements it with a function (or a bound method) of this signature::

        apply(params, batch, *, latents=None, intervene=None) -> Outputs

    Args:
      params: the model's weights (any pytree).
      batch: any pytree of arrays whose leaves share a leading axis of B instances.
      latents: (B, L, D) replaces the latents the model would feed back (one pass, no feedback
        loop); the returned ``Outputs.latents`` are these.
      intervene: a function ``(B, T, D) -> (B, T, D)`` applied to the input embeddings of every
        pass (after latent feedback is written), so its edits show in ``hidden[:, 0]``.

    Two optional keywords, needed only by the diagnostics that use them (:ref:`apply-protocol`):
    ``drop`` (B, T) bool removes positions from attention (:func:`tokdyn.diagnostics.mediation.decompose`),
    ``inject`` (B, P) bool inserts copies of chosen image patches (:mod:`tokdyn.diagnostics.dmlr`).

    Returns:
      :class:`Outputs` (or any object with its four fields and their shapes).
    """

    def __call__(
        self,
        params: Any,
        batch: Any,
        *,
        latents: Optional[jax.Array] = None,
        intervene: Optional[Callable[[jax.Array], jax.Array]] = None,
    ) -> Outputs: ...
