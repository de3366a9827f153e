"""IODINE's inference: the ``Refiner`` (a CNN and an LSTM), ``init``, ``infer`` (the refinement iterations),
``apply``, the loss weighted over iterations (``loss_fn``) and ``collapse``."""

from __future__ import annotations

import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks, dynamics
from tokdyn.models import slots

from tokdyn.models.iodine.config import Config
from tokdyn.models.iodine.elbo import Decoder, Evaluation, evaluate


class Refiner(nn.Module):
    """The refinement network: ``(carry, images, evaluation, loc, log_scale) -> (carry, update)``,
    the update (B, K, 2D) of each slot's ``(loc, log_scale)`` from its inputs (the module
    docstring lists them) and its LSTM state ``carry`` (``(c, h)``, each (B * K, refine_hidden))."""

    cfg: Config

    @nn.compact
    def __call__(self, carry, images, ev: Evaluation, loc, log_scale):
        cfg = self.cfg
        B, K, H, W = ev.masks.shape
        pixel_norm = functools.partial(nn.LayerNorm, reduction_axes=(-3, -2, -1), feature_axes=-1)
        grads = jnp.concatenate(
            [
                pixel_norm(name="norm_grad_rgb")(ev.grad_rgb),
                pixel_norm(name="norm_grad_logits")(ev.grad_logits[..., None]),
                pixel_norm(name="norm_log_lik")(
                    jnp.broadcast_to(ev.pixel_log_lik[:, None, ..., None], (B, K, H, W, 1))
                ),
            ],
            axis=-1,
        )
        x = jnp.concatenate(
            [
                jnp.broadcast_to(images[:, None], (B, K, H, W, 3)),
                ev.rgb,
                ev.masks[..., None],
                ev.posterior[..., None],
                grads,
                jnp.broadcast_to(slots.position_grid(H, W), (B, K, H, W, 4)),
            ],
            axis=-1,
        )  # (B, K, H, W, 17)
        h = x.reshape(B * K, H, W, x.shape[-1])
        for i, c in enumerate(cfg.refine_channels):
            h = nn.elu(nn.Conv(c, (3, 3), strides=(2, 2), padding="SAME", name=f"conv{i}")(h))
        h = nn.elu(nn.Dense(cfg.refine_hidden, name="dense")(h.reshape(B * K, -1)))
        vectors = jnp.concatenate(
            [
                loc,
                log_scale,
                nn.LayerNorm(name="norm_grad_loc")(ev.grad_loc),
                nn.LayerNorm(name="norm_grad_log_scale")(ev.grad_log_scale),
            ],
            axis=-1,
        )
        h = jnp.concatenate([h, vectors.reshape(B * K, -1)], axis=-1)
        carry, h = nn.LSTMCell(cfg.refine_hidden, name="lstm")(carry, h)
        return carry, nn.Dense(2 * cfg.latent_size, name="out")(h).reshape(B, K, 2 * cfg.latent_size)


class Outputs(NamedTuple):
    """What :func:`apply` returns for a batch of B images (K slots, H x W pixels, latents of width
    D, R iterations).

    Attributes:
      recon: (B, H, W, 3) the reconstruction of the last evaluation: ``sum_k m_k mu_k``.
      rgb: (B, K, H, W, 3) each slot's means at the last evaluation.
      masks: (B, K, H, W) each slot's mask at the last evaluation (summing to 1 over slots).
      loc: (B, K, D) the final posterior means.
      log_scale: (B, K, D) the final posterior log standard deviations.
      elbo: (B, R + 1) the ELBO of each image at each posterior ``lambda^(0..R)`` (nats).
      kl: (B, R + 1) the KL part of it.
      labels: (B, H, W) int32 predicted segmentation: the argmax of ``masks`` over slots.
    """

    recon: jax.Array
    rgb: jax.Array
    masks: jax.Array
    loc: jax.Array
    log_scale: jax.Array
    elbo: jax.Array
    kl: jax.Array
    labels: jax.Array


def posterior_noise(key, cfg: Config, batch: int):
    """(batch, R + 1, K, D) standard-normal noise: the posterior's draw at each evaluation.

    Examples:
      >>> import jax
      >>> from tokdyn.models import iodine
      >>> iodine.posterior_noise(jax.random.key(0), iodine.Config(iterations=4, slots=5, latent_size=16), 2).shape
      (2, 5, 5, 16)
    """
    return jax.random.normal(key, (batch, cfg.iterations + 1, cfg.slots, cfg.latent_size))


def init(key, cfg: Config) -> dict:
    """Parameters (flax's layout, ``{"params": {"decoder", "refiner", "loc", "log_scale"}}``): the
    decoder's and the refinement network's by their initialisers, and the initial posterior
    ``lambda^(0)`` shared by every slot, starting at the prior (``loc = 0``, ``log_scale = 0``)."""
    k_dec, k_ref = jax.random.split(key)
    K, D = cfg.slots, cfg.latent_size
    z, images = jnp.zeros((1, K, D)), jnp.zeros((1, cfg.size, cfg.size, 3))
    dec = Decoder(cfg).init(k_dec, z)["params"]
    ev = evaluate({"params": {"decoder": dec}}, cfg, images, z, z, z)
    ref = Refiner(cfg).init(k_ref, lstm_carry(cfg, 1), images, ev, z, z)["params"]
    return {"params": {"decoder": dec, "refiner": ref, "loc": jnp.zeros((D,)), "log_scale": jnp.zeros((D,))}}


def lstm_carry(cfg: Config, batch: int):
    """The refinement LSTM's initial state ``(c, h)``: zeros, each (batch * K, refine_hidden).

    Examples:
      >>> from tokdyn.models import iodine
      >>> c, h = iodine.lstm_carry(iodine.Config(slots=5, refine_hidden=64), 2)
      >>> c.shape, h.shape   # (batch * K, refine_hidden)
      ((10, 64), (10, 64))
    """
    zeros = jnp.zeros((batch * cfg.slots, cfg.refine_hidden))
    return zeros, zeros


def infer(params, cfg: Config, images, noise) -> tuple[Outputs, list]:
    """The R refinements from the learned initial posterior: what :func:`apply` and
    :func:`loss_fn` run. Traceable, not jitted: no checks.

    Args:
      params: the model's parameters (traced).
      cfg: the model's :class:`Config` (static; R = ``cfg.iterations``).
      images: (B, H, W, 3) the images.
      noise: (B, R + 1, K, D) the posterior's draws (:func:`posterior_noise`).

    Returns:
      ``(outputs, evaluations)``: the :class:`Outputs` and a list of the R + 1
      :class:`Evaluation` at each posterior (the last without gradients).
    """
    B, K, D = images.shape[0], cfg.slots, cfg.latent_size
    p = params["params"]
    loc = jnp.broadcast_to(p["loc"], (B, K, D))
    log_scale = jnp.broadcast_to(p["log_scale"], (B, K, D))
    carry = lstm_carry(cfg, B)
    refiner = Refiner(cfg)
    evaluations = []
    for t in range(cfg.iterations + 1):
        last = t == cfg.iterations
        ev = evaluate(params, cfg, images, loc, log_scale, noise[:, t], gradients=not last)
        evaluations.append(ev)
        if not last:
            carry, update = refiner.apply({"params": p["refiner"]}, carry, images, ev, loc, log_scale)
            loc, log_scale = loc + update[..., :D], log_scale + update[..., D:]
    ev = evaluations[-1]
    recon = jnp.sum(ev.masks[..., None] * ev.rgb, axis=1)
    labels = jnp.argmax(ev.masks, axis=1).astype(jnp.int32)
    elbo = jnp.stack([e.elbo for e in evaluations], axis=1)
    kl = jnp.stack([e.kl for e in evaluations], axis=1)
    return Outputs(recon, ev.rgb, ev.masks, loc, log_scale, elbo, kl, labels), evaluations


def check_apply(key, params, cfg, images):
    """The checks of :func:`apply`'s arguments (and :func:`~tokdyn.models.iodine.training.segment`'s),
    before anything is traced: a PRNG key, an IODINE ``Config`` that validates, images of the
    configured size. Returns ``dict(images=...)``, nested lists made an array."""
    _checks.prng_key("key", key)
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a tokdyn.models.iodine.Config, got {type(cfg).__name__}")
    cfg.validate()
    if not hasattr(images, "shape"):  # nested lists: as an array, checked like one
        images = np.asarray(images)
    slots.check_images("images", images, cfg.size)
    return dict(images=images)


@_checks.checked_jit(check_apply, static_argnames=("cfg",))
def apply(key, params, cfg: Config, images) -> Outputs:
    """Infer the slots of a batch of images: R refinements from the learned initial posterior
    (:func:`infer`). Jitted and differentiable (the gradient inputs are constants under
    differentiation).

    Args:
      key: PRNG key of the posterior's noise (:func:`posterior_noise`).
      params: the model's parameters (:func:`init`; traced).
      cfg: the model's :class:`Config` (static).
      images: (B, size, size, 3) in [0, 1].

    Returns:
      :class:`Outputs`.
    """
    return infer(params, cfg, images, posterior_noise(key, cfg, images.shape[0]))[0]


def iteration_weights(cfg: Config):
    """(R + 1,) the loss's weights ``t / T`` of the negative ELBO at the posteriors ``t = 1, ..., T``
    (``T = R + 1``).

    Examples:
      >>> import numpy as np
      >>> from tokdyn.models import iodine
      >>> print(np.asarray(iodine.iteration_weights(iodine.Config(iterations=3))))
      [0.25 0.5  0.75 1.  ]

    References:
      Greff, K., Kaufman, R. L., Kabra, R., Watters, N., Burgess, C., Zoran, D., Matthey, L.,
      Botvinick, M. and Lerchner, A. (2019). Multi-object representation learning with iterative
      variational inference. *ICML 2019*. arXiv:1903.00450.
    """
    T = cfg.iterations + 1
    return jnp.arange(1, T + 1, dtype=jnp.float32) / T


def loss_fn(key, params, cfg: Config, images):
    """The training loss of a batch: not jitted, no checks (it runs inside the training step).

    Args:
      key: PRNG key of the posterior's draws.
      params: the model's parameters (traced; differentiated).
      cfg: the model's :class:`Config` (static).
      images: (B, size, size, 3) in [0, 1].

    Returns:
      ``(loss, outputs)``: the scalar ``mean_b sum_t (t / T) (-ELBO_t)`` (nats;
      :func:`iteration_weights`) and the :class:`Outputs`.
    """
    out = infer(params, cfg, images, posterior_noise(key, cfg, images.shape[0]))[0]
    return jnp.mean(jnp.sum(-out.elbo * iteration_weights(cfg), axis=1)), out


def collapse(latents, labels, merge_tol=dynamics.DEFAULT_MERGE_TOL):
    """``(duplicates, unused)`` of one image's final posterior means (K, D) and segmentation labels
    (values in [0, K)): :func:`tokdyn.models.slots.collapse` (slots merged at ``merge_tol`` by
    :func:`tokdyn.dynamics.token_groups`, and slots owning no pixel). vmap over images.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from tokdyn.models import iodine
      >>> latents = jnp.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])   # slots 0 and 1 coincide
      >>> duplicates, unused = iodine.collapse(latents, jnp.array([0, 0, 1, 1]))   # slot 2 owns no pixel
      >>> int(duplicates), int(unused)
      (1, 1)
    """
    return slots.collapse(latents, labels, merge_tol)


# ---------------------------------------------------------------------------------------------- training
