"""IODINE's generative model and its ELBO: the spatial-broadcast ``Decoder``, the spatial Gaussian mixture's
log-likelihood, the KL term, and ``evaluate`` (the ELBO and its gradients, the refiner's inputs)."""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from tokdyn.models import slots

from tokdyn.models.iodine.config import LOG_2PI, Config


class Decoder(nn.Module):
    """The spatial-broadcast decoder of ``cfg``: latents (B, K, D) -> ``(rgb (B, K, H, W, 3),
    logits (B, K, H, W))``, each slot's RGB means and mask logits."""

    cfg: Config

    @nn.compact
    def __call__(self, z):
        cfg = self.cfg
        out = slots.broadcast_decoder(
            z, size=cfg.size, channels=4, decoder=cfg.decoder, hidden=cfg.decoder_hidden, stride=cfg.decoder_stride
        )  # (B, K, H, W, 4)
        return out[..., :3], out[..., 3]


class Evaluation(NamedTuple):
    """The ELBO of one posterior and what the refinement network reads (:func:`evaluate`), for B
    images, K slots, H x W pixels, latents of width D.

    Attributes:
      elbo: (B,) the ELBO of each image (nats): ``log_lik - kl``.
      log_lik: (B,) ``log p(x | z)`` at the draw ``z``.
      kl: (B,) ``sum_k KL(q(z_k) || N(0, I))`` in closed form.
      rgb: (B, K, H, W, 3) each slot's decoded RGB means.
      logits: (B, K, H, W) each slot's decoded mask logits.
      masks: (B, K, H, W) the masks, ``softmax`` of the logits over slots.
      posterior: (B, K, H, W) the mask posterior ``p(m_k | x, mu)`` (each pixel's responsibilities).
      pixel_log_lik: (B, H, W) ``log p(x_i | z)`` of each pixel.
      grad_rgb: (B, K, H, W, 3) ``d log_lik / d rgb`` (held constant under differentiation).
      grad_logits: (B, K, H, W) ``d log_lik / d logits`` (held constant).
      grad_loc: (B, K, D) ``d elbo / d loc`` at the same draw (held constant; zeros when not asked).
      grad_log_scale: (B, K, D) ``d elbo / d log_scale`` (held constant; zeros when not asked).
    """

    elbo: jax.Array
    log_lik: jax.Array
    kl: jax.Array
    rgb: jax.Array
    logits: jax.Array
    masks: jax.Array
    posterior: jax.Array
    pixel_log_lik: jax.Array
    grad_rgb: jax.Array
    grad_logits: jax.Array
    grad_loc: jax.Array
    grad_log_scale: jax.Array


def mixture_log_likelihood(images, rgb, logits, pixel_scale):
    """The log-likelihood of images under the spatial mixture of the slots' Gaussians. Computed
    in log space (``log_softmax``, ``logsumexp``): no density underflows, so it stays finite for
    mask logits of any size and means far from every pixel. Traceable and differentiable in every
    argument; not jitted, no checks.

    Args:
      images: (B, H, W, 3) the images.
      rgb: (B, K, H, W, 3) each slot's Gaussian means.
      logits: (B, K, H, W) the mask logits (masks ``softmax(logits)`` over K).
      pixel_scale: the standard deviation of every channel (a scalar, > 0).

    Returns:
      ``(log_lik, pixel_log_lik, posterior)``: (B,) ``log p(x | z)``, (B, H, W) each pixel's
      log-likelihood, and (B, K, H, W) the mask posterior (each pixel's responsibilities).

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.models import iodine
      >>> image = jnp.zeros((1, 1, 1, 3))   # one black pixel; two slots, both predicting black
      >>> ll, pixel_ll, posterior = iodine.mixture_log_likelihood(image, jnp.zeros((1, 2, 1, 1, 3)), jnp.zeros((1, 2, 1, 1)), 1.0)
      >>> print(f"{float(ll[0]):.4f}", np.asarray(posterior).ravel())   # 3 log N(0; 0, 1), shared evenly
      -2.7568 [0.5 0.5]

    References:
      Greff, K., Kaufman, R. L., Kabra, R., Watters, N., Burgess, C., Zoran, D., Matthey, L.,
      Botvinick, M. and Lerchner, A. (2019). Multi-object representation learning with iterative
      variational inference. *ICML 2019*. arXiv:1903.00450.
    """
    log_masks = jax.nn.log_softmax(logits, axis=1)  # (B, K, H, W)
    r = (images[:, None] - rgb) / pixel_scale
    log_gauss = -0.5 * jnp.sum(r * r, axis=-1) - 3.0 * (jnp.log(pixel_scale) + 0.5 * LOG_2PI)  # (B, K, H, W)
    joint = log_masks + log_gauss
    pixel = jax.nn.logsumexp(joint, axis=1)  # (B, H, W)
    return jnp.sum(pixel, axis=(1, 2)), pixel, jnp.exp(joint - pixel[:, None])


def kl_divergence(loc, log_scale):
    """(B,) ``sum_k KL(N(loc_k, exp(log_scale_k)^2) || N(0, I))`` of posteriors (B, K, D), in
    closed form: ``0.5 * sum(loc^2 + scale^2 - 1 - 2 log_scale)``.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.models import iodine
      >>> loc, log_scale = jnp.array([[[1.0, 0.0]]]), jnp.zeros((1, 1, 2))   # (B, K, D)
      >>> print(np.asarray(iodine.kl_divergence(loc, log_scale)))   # 0.5 * |loc|^2 at unit scale
      [0.5]
    """
    return 0.5 * jnp.sum(loc * loc + jnp.exp(2.0 * log_scale) - 1.0 - 2.0 * log_scale, axis=(1, 2))


def decode(params, cfg: Config, z):
    """``(rgb (B, K, H, W, 3), logits (B, K, H, W))`` of latents ``z`` (B, K, D) by the decoder of
    ``params`` (:func:`~tokdyn.models.iodine.model.init`'s)."""
    return Decoder(cfg).apply({"params": params["params"]["decoder"]}, z)


def evaluate(params, cfg: Config, images, loc, log_scale, noise, *, gradients: bool = True) -> Evaluation:
    """The ELBO of posteriors at one draw ``z = loc + exp(log_scale) * noise``, and its gradients:
    those of the likelihood with respect to the decoded means and mask logits (``jax.grad``) and
    of the ELBO with respect to ``loc`` and ``log_scale`` (the likelihood's through the decoder by
    ``jax.vjp``, minus the KL's closed form). The gradients are ascent directions of the ELBO, held
    constant under differentiation (``stop_gradient``). Traceable, not jitted: no checks.

    Args:
      params: the model's parameters (:func:`~tokdyn.models.iodine.model.init`; traced).
      cfg: the model's :class:`Config` (static).
      images: (B, H, W, 3) the images.
      loc: (B, K, D) the posterior means.
      log_scale: (B, K, D) the posterior log standard deviations.
      noise: (B, K, D) standard-normal noise of the draw.
      gradients: static bool; False skips the decoder's backward pass (the grad fields are zeros).

    Returns:
      :class:`Evaluation`.
    """
    sigma = cfg.pixel_scale

    def decode_posterior(loc, log_scale):
        return decode(params, cfg, loc + jnp.exp(log_scale) * noise)

    def log_lik(rgb, logits):
        total, pixel, post = mixture_log_likelihood(images, rgb, logits, sigma)
        return jnp.sum(total), (total, pixel, post)

    kl = kl_divergence(loc, log_scale)
    if gradients:
        (rgb, logits), pull = jax.vjp(decode_posterior, loc, log_scale)
        (_, (ll, pixel, post)), (g_rgb, g_logits) = jax.value_and_grad(log_lik, argnums=(0, 1), has_aux=True)(
            rgb, logits
        )
        g_loc, g_log_scale = pull((g_rgb, g_logits))
        g_loc = g_loc - loc  # d KL / d loc = loc
        g_log_scale = g_log_scale - (jnp.exp(2.0 * log_scale) - 1.0)  # d KL / d log_scale = scale^2 - 1
        g_rgb, g_logits, g_loc, g_log_scale = jax.lax.stop_gradient((g_rgb, g_logits, g_loc, g_log_scale))
    else:
        rgb, logits = decode_posterior(loc, log_scale)
        _, (ll, pixel, post) = log_lik(rgb, logits)
        g_rgb, g_logits = jnp.zeros_like(rgb), jnp.zeros_like(logits)
        g_loc, g_log_scale = jnp.zeros_like(loc), jnp.zeros_like(log_scale)
    masks = jax.nn.softmax(logits, axis=1)
    return Evaluation(ll - kl, ll, kl, rgb, logits, masks, post, pixel, g_rgb, g_logits, g_loc, g_log_scale)
