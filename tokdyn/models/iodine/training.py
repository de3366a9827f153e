"""IODINE's training and scoring: the models over seeds and settings (``models``, ``seed_keys``), ``trainer``
for :mod:`tokdyn.train`, ``stamp``, ``default_strategy``, ``params_of`` and ``segment``."""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Optional

import jax
import jax.numpy as jnp

from tokdyn import _checks, io, train
from tokdyn.models import slots

from tokdyn.models.iodine.config import Config, Hparams
from tokdyn.models.iodine.model import posterior_noise, init, infer, check_apply, loss_fn


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
    per model and step) on a CPU, ``"scan"`` (the models vmapped, a call's steps in one program)
    elsewhere, for the reasons of :func:`tokdyn.models.slots.default_strategy` (the refinement
    network's convolutions; its GPU rate under ``"scan"`` is a row of the GPU ledger still to measure).

    Examples:
      >>> from tokdyn.models import iodine
      >>> iodine.default_strategy("cpu"), iodine.default_strategy("gpu")
      ('loop', 'scan')
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
    images = check_apply(key, params, cfg, images)["images"]
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
