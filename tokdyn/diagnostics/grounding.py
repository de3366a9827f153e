"""Visual grounding of generated tokens, for any model with the ``apply`` protocol.

The grounding score of generated token t (after DMLR, arXiv 2512.12623) is

    S_t = log p(x_t | x_<t, I, q) - log p(x_t | x_<t, I~, q)

with I the image and I~ a perturbed one (a model's own: pixels noised, blanked), both scored on the same
generated tokens (teacher-forced). A token is image-dependent when ``S_t > threshold``.

- :func:`token_logprobs`: log-probabilities (B, n) of given tokens at the positions that predict
  them, under one forward pass (asking for the logits alone, :func:`tokdyn.diagnostics.protocol.apply_selected`,
  so a model that takes ``select=`` computes no attention map).
- :func:`scores`: S (B, n) for a batch and its perturbed copy.

The relation of a sequence's grounding or confidence to its correctness is a point-biserial
correlation with a bootstrap interval (:func:`tokdyn.stats.point_biserial`).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks
from tokdyn.diagnostics import protocol


def token_logprobs(apply_fn: Callable, params, batch, *, positions, tokens) -> jax.Array:
    """Log-probabilities of given tokens under one forward pass: token i is read at the logits of
    ``positions[i]``, the position whose output predicts it.

    Args:
      apply_fn: the model's ``apply`` (the protocol of :mod:`tokdyn.diagnostics.protocol`).
      params: the model's weights.
      batch: a batch of B instances.
      positions: (n,) sequence positions, host ints.
      tokens: (B, n) integer token ids in [0, V).

    Returns:
      (B, n) log-probabilities.

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.diagnostics import grounding
      >>> from tokdyn.models.protocol import Outputs
      >>> def apply(params, batch, *, latents=None, intervene=None):   # token 1 likelier the more ink
      ...     b = batch["image"].shape[0]
      ...     ink = batch["image"].reshape(b, -1).sum(1).astype(jnp.float32)
      ...     logits = jnp.zeros((b, 3, 2)).at[:, :, 1].set(params * ink[:, None])   # (B, T, V) = (2, 3, 2)
      ...     zeros = jnp.zeros
      ...     return Outputs(logits, zeros((b, 2, 3, 4)), zeros((b, 1, 1, 3, 3)), zeros((b, 0, 4)))
      >>> batch = {"image": jnp.array([[[1, 0], [0, 0]], [[0, 0], [0, 0]]])}   # the second is blank
      >>> lp = grounding.token_logprobs(apply, 1.0, batch, positions=[1, 2], tokens=np.ones((2, 2), int))
      >>> print(np.asarray(lp).round(3))   # log sigmoid(1), then log 1/2
      [[-0.313 -0.313]
       [-0.693 -0.693]]
    """
    positions = np.asarray(positions, int)
    if jnp.shape(tokens)[-1:] != positions.shape:
        raise ValueError(f"tokens must have one column per position ({positions.size}), got shape {jnp.shape(tokens)}")
    nothing = protocol.Select()  # the logits alone: a model that takes select= computes no attention map
    dims = protocol.check_apply(
        apply_fn,
        params,
        batch,
        positions={"positions": positions},
        arrays={"tokens": (tokens, ("B", positions.size))},
        select=nothing,
    )
    if _checks.on_host(tokens):
        _checks.real("tokens", np.asarray(tokens), low=0, high=dims.vocab - 1)
    lp = jax.nn.log_softmax(protocol.apply_selected(apply_fn, params, batch, nothing).logits[:, positions])  # (B, n, V)
    return jnp.take_along_axis(lp, jnp.asarray(tokens)[..., None], -1)[..., 0]


def scores(apply_fn: Callable, params, batch, perturbed, *, positions, tokens) -> jax.Array:
    """Grounding scores ``S = log p(tokens | x_<t, I, q) - log p(tokens | x_<t, I~, q)``: teacher-forced
    log-probabilities of ``tokens`` with the true image minus with the perturbed one.

    Args:
      apply_fn: the model's ``apply`` (the protocol of :mod:`tokdyn.diagnostics.protocol`).
      params: the model's weights.
      batch: a batch of B instances.
      perturbed: ``batch`` with perturbed images (e.g. :func:`tokdyn.diagnostics.vlm.perturb_pixels`), of its shapes.
      positions: (n,) host ints, the positions predicting the tokens.
      tokens: (B, n) integer ids of the generated tokens scored.

    Returns:
      (B, n) scores; a token is image-dependent when its score exceeds a chosen threshold.

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.diagnostics import grounding
      >>> from tokdyn.models.protocol import Outputs
      >>> def apply(params, batch, *, latents=None, intervene=None):   # token 1 likelier the more ink
      ...     b = batch["image"].shape[0]
      ...     ink = batch["image"].reshape(b, -1).sum(1).astype(jnp.float32)
      ...     logits = jnp.zeros((b, 3, 2)).at[:, :, 1].set(params * ink[:, None])   # (B, T, V) = (2, 3, 2)
      ...     zeros = jnp.zeros
      ...     return Outputs(logits, zeros((b, 2, 3, 4)), zeros((b, 1, 1, 3, 3)), zeros((b, 0, 4)))
      >>> batch = {"image": jnp.array([[[1, 0], [0, 0]], [[0, 0], [0, 0]]])}   # the second is blank
      >>> blank = {"image": jnp.zeros_like(batch["image"])}
      >>> s = grounding.scores(apply, 1.0, batch, blank, positions=[1, 2], tokens=np.ones((2, 2), int))
      >>> print(np.asarray(s).round(3))   # only the instance with ink loses by the blanking
      [[0.38 0.38]
       [0.   0.  ]]
    """
    protocol.check_apply(apply_fn, params, batch, batches={"perturbed": perturbed})
    return token_logprobs(apply_fn, params, batch, positions=positions, tokens=tokens) - token_logprobs(
        apply_fn, params, perturbed, positions=positions, tokens=tokens
    )
