"""IODINE (Greff et al., 2019, "Multi-Object Representation Learning with Iterative Variational
Inference"): object discovery by iterative amortised variational inference.

A spatial-broadcast decoder paints each of K slots' latents into RGB means and a mask logit per
pixel (a spatial Gaussian mixture with the fixed scale ``pixel_scale``); every slot's posterior
starts from one learned value and is refined ``iterations`` times by a :class:`Refiner` (a CNN
and an LSTM) from the ELBO and its gradients (:func:`evaluate`). It has the shape of
:mod:`tokdyn.models.slots` (``Config``, ``Hparams``, :func:`init`, :func:`apply`,
:func:`loss_fn`, :func:`trainer`, :func:`models`, :func:`stamp`, :func:`default_strategy`,
:func:`segment`, :func:`collapse`), so it trains through :mod:`tokdyn.train` and a study scores
either the same way.

The generative model, the refinement inputs (and those of the paper left out, with the reasons)
and the loss: :ref:`scenes-iodine`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks, dynamics, io, train
from tokdyn.models import slots
from tokdyn.train import optim

DECODERS = slots.DECODERS
LOG_2PI = float(np.log(2.0 * np.pi))


@dataclasses.dataclass(frozen=True)
class Config:
    """Static structure of the model and its training (hashable: a static argument).

    Attributes:
      size: image side (images are size x size x 3, values in [0, 1]).
      slots: K, the number of slots.
      latent_size: D, the width of each slot's latent z.
      iterations: R, refinements of the posterior (the ELBO is evaluated R + 1 times).
      pixel_scale: sigma, the fixed standard deviation of every pixel channel in the likelihood.
      decoder: spatial-broadcast decoder, mlp | conv | cnn (:func:`tokdyn.models.slots.broadcast_decoder`).
      decoder_hidden: hidden width (mlp) or channels (conv, cnn) of the decoder.
      decoder_stride: the mlp and conv decoders paint a (size / decoder_stride)^2 grid, resized
        bilinearly to the image (1: every pixel).
      refine_channels: channels of the refinement network's convolutions (each 3 x 3 of stride 2).
      refine_hidden: width of the refinement network's dense layer and of its LSTM.
      train: the optimiser's budget and schedule (:class:`tokdyn.train.optim.Config`): by default
        4000 steps per model in compiled calls of 100 (the checkpoint interval), a linear warm-up of
        200 steps (0: none), then a cosine decay to 5% of the peak, gradients clipped to global
        norm 1.
      batch_size: images per step, drawn with replacement from the pool.
      seeds: models trained together (seed s has run key fold_in(key(root_seed), s)).
      root_seed: root PRNG seed of every model's initial parameters, batches and posterior draws.

    References:
      Greff, K., Kaufman, R. L., Kabra, R., Watters, N., Burgess, C., Zoran, D., Matthey, L.,
      Botvinick, M. and Lerchner, A. (2019). Multi-object representation learning with iterative
      variational inference. *ICML 2019*. arXiv:1903.00450.
    """

    size: int = 32
    slots: int = 5
    latent_size: int = 16
    iterations: int = 4
    pixel_scale: float = 0.1
    decoder: str = "mlp"
    decoder_hidden: int = 32
    decoder_stride: int = 1
    refine_channels: tuple = (32, 32)
    refine_hidden: int = 64
    train: optim.Config = optim.Config(
        steps=4000, steps_per_call=100, warmup=200, decay="cosine", final_fraction=0.05, clip_norm=1.0
    )
    batch_size: int = 16
    seeds: int = 4
    root_seed: int = 0

    def validate(self) -> "Config":
        """Check every field (the training's through :meth:`tokdyn.train.optim.Config.validate`); raise
        ``ValueError``/``TypeError`` naming the field. Returns ``self``."""
        for name in (
            "size",
            "slots",
            "latent_size",
            "iterations",
            "decoder_hidden",
            "decoder_stride",
            "refine_hidden",
            "batch_size",
            "seeds",
        ):
            _checks.positive_int(name, getattr(self, name))
        optim.check("train", self.train)
        _checks.positive_int("root_seed", self.root_seed, minimum=0)
        slots.check_decoder(self.size, self.decoder, self.decoder_stride)
        _checks.real("pixel_scale", self.pixel_scale, low=0.0, low_open=True)
        if not isinstance(self.refine_channels, (tuple, list)):
            raise TypeError(f"refine_channels must be a tuple of positive ints, got {self.refine_channels!r}")
        channels = tuple(self.refine_channels)
        if any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1 for c in channels):
            raise ValueError(f"refine_channels must be a tuple of positive ints, got {self.refine_channels!r}")
        return self


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Hparams(slots.Hparams):
    """Traced, sweepable hyper-parameters (a float each, or an (H,) array of settings: :func:`models`):
    those of :class:`tokdyn.models.slots.Hparams` (``learning_rate``, the peak Adam learning rate),
    checked as there, with IODINE's own default.
    """

    learning_rate: jax.Array | float = 3e-4


# ---------------------------------------------------------------------------------------------- the model


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
    ``params`` (:func:`init`'s)."""
    return Decoder(cfg).apply({"params": params["params"]["decoder"]}, z)


def evaluate(params, cfg: Config, images, loc, log_scale, noise, *, gradients: bool = True) -> Evaluation:
    """The ELBO of posteriors at one draw ``z = loc + exp(log_scale) * noise``, and its gradients:
    those of the likelihood with respect to the decoded means and mask logits (``jax.grad``) and
    of the ELBO with respect to ``loc`` and ``log_scale`` (the likelihood's through the decoder by
    ``jax.vjp``, minus the KL's closed form). The gradients are ascent directions of the ELBO, held
    constant under differentiation (``stop_gradient``). Traceable, not jitted: no checks.

    Args:
      params: the model's parameters (:func:`init`; traced).
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


def _check_apply(key, params, cfg, images):
    _checks.prng_key("key", key)
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a tokdyn.models.iodine.Config, got {type(cfg).__name__}")
    cfg.validate()
    if not hasattr(images, "shape"):  # nested lists: as an array, checked like one
        images = np.asarray(images)
    slots.check_images("images", images, cfg.size)
    return dict(images=images)


@_checks.checked_jit(_check_apply, static_argnames=("cfg",))
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


def seed_keys(cfg: Config):
    """(seeds,) keys ``fold_in(key(root_seed), s)``, one per seed (:func:`tokdyn.models.slots.seed_keys`).

    Examples:
      >>> from tokdyn.models import iodine
      >>> iodine.seed_keys(iodine.Config(seeds=3)).shape
      (3,)
    """
    return slots.seed_keys(cfg)


def models(cfg: Config, hparams: Optional[Hparams] = None):
    """``(keys, hparams)`` of every seed x setting for :func:`tokdyn.train.train_many`: ``hparams``
    (default :class:`Hparams`) with scalar or (H,) fields gives M = H x ``cfg.seeds`` models, model
    ``h * seeds + s`` setting h with seed s (:func:`tokdyn.train.grid`)."""
    hparams = Hparams.checked(hparams)  # before any key is made: bad input compiles nothing
    return train.grid(seed_keys(cfg), hparams)


def stamp(cfg: Config) -> str:
    """What a checkpoint of ``cfg``'s models is keyed on (the ``stamp`` of
    :func:`tokdyn.train.train_many`): the model's name and the configuration as JSON."""
    return json.dumps({"model": "iodine", **io.jsonable(dataclasses.asdict(cfg))}, sort_keys=True)


def default_strategy(backend: str) -> str:
    """The :func:`tokdyn.train.train_many` strategy on ``backend``: ``"loop"`` (one compiled call
    per model and step) on a CPU, ``"step"`` (the models vmapped) elsewhere, for the reasons of
    :func:`tokdyn.models.slots.default_strategy` (the refinement network's convolutions).

    Examples:
      >>> from tokdyn.models import iodine
      >>> iodine.default_strategy("cpu"), iodine.default_strategy("gpu")
      ('loop', 'step')
    """
    return slots.default_strategy(backend)


def trainer(cfg: Config) -> train.Trainer:
    """``cfg``'s training, a :class:`tokdyn.train.Trainer` (the same object for equal
    configurations, so its compilation is reused). Train with :func:`tokdyn.train.train_many`::

        keys, hp = iodine.models(cfg, iodine.Hparams(learning_rate=3e-4))
        execution = train.Execution(iodine.default_strategy(jax.default_backend()), vectorised_init=False)
        result = train.train_many(iodine.trainer(cfg), pool, keys, hp, execution=execution,
                                  checkpointing=train.Checkpointing("iodine.npz", iodine.stamp(cfg)))

    ``pool``: (N, size, size, 3) images in [0, 1]. As :func:`tokdyn.models.slots.trainer`: a seed's
    key gives the initial parameters' key and the run key (:func:`tokdyn.models.slots.run_keys`);
    step t's key ``fold_in(run key, t)`` is split into the key of its batch
    (:func:`tokdyn.models.slots.draw_batch`) and that of the posterior's draws; the loss is
    :func:`loss_fn`; the optimiser of ``cfg.train``: gradients clipped to ``clip_norm``, then Adam
    with a linear warm-up over ``warmup`` steps and (by default) a cosine decay to 5% of the peak at
    ``steps``. Logs: ``loss``,
    ``grad_norm``, and ``elbo_first`` / ``elbo_last`` (the batch's mean ELBO at the initial and
    the final posterior: their gap is what the refinements gain)."""
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a tokdyn.models.iodine.Config, got {type(cfg).__name__}")
    cfg.validate()
    return _trainer(
        dataclasses.replace(
            cfg, refine_channels=tuple(int(c) for c in cfg.refine_channels), pixel_scale=float(cfg.pixel_scale)
        )
    )


@functools.lru_cache(maxsize=32)
def _trainer(cfg: Config) -> train.Trainer:
    def batch(key, pool, step):
        slots.check_images("the training pool", pool, cfg.size)  # shapes and dtype, while tracing
        return slots.draw_batch(key, pool, cfg.batch_size)

    def loss(params, images, key, hparams):
        value, out = loss_fn(jax.random.split(key)[1], params, cfg, images)
        return value, {"elbo_first": jnp.mean(out.elbo[:, 0]), "elbo_last": jnp.mean(out.elbo[:, -1])}

    return train.Trainer(
        cfg.train, init=lambda key, hparams: init(key, cfg), loss=loss, batch=batch, keys=slots.run_keys, name="iodine"
    )


def params_of(state: train.TrainState, i: int) -> dict:
    """Model ``i``'s parameters from a stacked state (the ``state`` of a :class:`tokdyn.train.Result`)."""
    return slots.params_of(state, i)


def segment(key, params, cfg: Config, images, *, chunk: int = 256):
    """Segment images with one model, in chunks (``lax.map``) to bound memory. Checks its
    arguments, then runs a jitted map: call it on the host, not inside a user's ``jit``. Score it
    with :func:`tokdyn.metrics.fg_ari`.

    Args:
      key: PRNG key; image i's posterior draws depend only on ``fold_in(key, i)``.
      params: one model's parameters (:func:`params_of`).
      cfg: the model's :class:`Config`.
      images: (n, size, size, 3) in [0, 1].
      chunk: images per vmapped chunk, an int >= 1.

    Returns:
      ``(labels, loc)``: (n, H, W) int32 predicted segmentation and (n, K, D) final posterior means.
    """
    images = _check_apply(key, params, cfg, images)["images"]
    chunk = _checks.positive_int("chunk", chunk)
    n = images.shape[0]
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
    return _segment(params, cfg, jnp.asarray(images, jnp.float32), keys, min(chunk, n))


@functools.partial(jax.jit, static_argnames=("cfg", "chunk"))
def _segment(params, cfg, images, keys, chunk):
    def one(args):
        image, k = args
        out = infer(params, cfg, image[None], posterior_noise(k, cfg, 1))[0]
        return out.labels[0], out.loc[0]

    return jax.lax.map(one, (images, keys), batch_size=chunk)
