"""Training the autoencoder through :mod:`tokdyn.train`: :func:`trainer` for
:func:`tokdyn.train.train_many`, :func:`models` (keys and hyper-parameters of every seed x
setting), :func:`stamp`, :func:`default_strategy`."""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Optional

import jax
import jax.numpy as jnp

from tokdyn import io, train
from tokdyn.models.slots.config import Config, Hparams
from tokdyn.models.slots.model import (
    check_images,
    init,
    loss_fn,
)


def seed_keys(cfg: Config):
    """(seeds,) keys ``fold_in(key(root_seed), s)``, one per seed."""
    root = jax.random.key(cfg.root_seed)
    return jnp.stack([jax.random.fold_in(root, s) for s in range(cfg.seeds)])


def models(cfg: Config, hparams: Optional[Hparams] = None):
    """``(keys, hparams)`` of every seed x setting for :func:`tokdyn.train.train_many`: ``hparams``
    (default :class:`Hparams`) with scalar or (H,) fields gives M = H x ``cfg.seeds`` models, model
    ``h * seeds + s`` setting h with seed s (:func:`tokdyn.train.grid`: the settings share their
    seeds' initial parameters, batches and slot noise)."""
    hparams = Hparams.checked(hparams)  # before any key is made: bad input compiles nothing
    return train.grid(seed_keys(cfg), hparams)


def stamp(cfg: Config) -> str:
    """What a checkpoint of ``cfg``'s models is keyed on (the ``stamp`` of
    :func:`tokdyn.train.train_many`): the configuration as JSON."""
    return json.dumps(io.jsonable(dataclasses.asdict(cfg)), sort_keys=True)


def run_keys(key):
    """``(key of the initial parameters, run key)`` of a seed's key: ``(fold_in(key, 2**31 - 1), key)``."""
    return jax.random.fold_in(key, 2**31 - 1), key


def draw_batch(key, pool, batch_size: int):
    """A step's images: ``batch_size`` drawn with replacement from ``pool`` (N, H, W, 3) with the
    first key of ``split(key)`` (the second draws the step's slot noise, :func:`trainer`)."""
    k_batch, _ = jax.random.split(key)
    return pool[jax.random.randint(k_batch, (batch_size,), 0, pool.shape[0])]


def default_strategy(backend: str) -> str:
    """The :func:`tokdyn.train.train_many` strategy for these models on ``backend``: ``"loop"``
    (one compiled call per model and step) on a CPU, ``"scan"`` (the models vmapped, a call's steps
    in one program) elsewhere.

    Never ``"scan"`` on a CPU: XLA:CPU runs the weight gradient of a convolution inside a ``while``
    loop (``lax.scan``, ``lax.map``, ``fori_loop``) tens of times slower than outside one
    (jax-ml/jax#12868; measured here: a 5 x 5, 32-channel conv's weight gradient on a 32 x 32 x 32
    batch takes 0.12 s alone and 3.2 s per iteration in a ``scan``), which costs far more than one
    dispatch per step. And the loop over models is the fastest there (measured by a benchmark script
    since folded into ``benchmarks/suite.py --sections training --models slot --strategy ...``, 4 models
    of the scenes study on our 2-core CPU: loop 6.1 model-steps/s, vmapped 5.0, mapped one by one with
    ``lax.map`` 1.9; the vmapped convolutions are grouped convolutions with
    per-model kernels). On a GPU that slowdown is not there: 1,024 of the scenes study's models
    trained at 5,231 model-steps/s under ``"scan"`` on an H200 (commit ca6932f; 75.8% of the bound
    set by the bytes XLA's cost analysis counts) against 5,126 under ``"step"`` (commit f7091be,
    the same model), compiling in 42 s against 53 s: the GPU ledger, ``benchmarks/runs/gpu-ledger.csv``.

    Examples:
      >>> from tokdyn.models import slots
      >>> slots.default_strategy("cpu"), slots.default_strategy("gpu")
      ('loop', 'scan')
    """
    return "loop" if backend == "cpu" else "scan"


def trainer(cfg: Config) -> train.Trainer:
    """``cfg``'s training, a :class:`tokdyn.train.Trainer` (the same object for equal
    configurations, so its compilation is reused). Train with :func:`tokdyn.train.train_many`::

        keys, hp = slots.models(cfg, slots.Hparams(learning_rate=4e-4))
        execution = train.Execution(slots.default_strategy(jax.default_backend()), vectorised_init=False)
        result = train.train_many(slots.trainer(cfg), pool, keys, hp, execution=execution,
                                  checkpointing=train.Checkpointing("slots.npz", slots.stamp(cfg)))

    ``pool``: (N, size, size, 3) images in [0, 1]. A seed's key gives the initial parameters'
    key and the run key (:func:`run_keys`); step t's key ``fold_in(run key, t)`` is split into the
    key of its batch (:func:`draw_batch`) and that of its slot noise; the loss is :func:`loss_fn`.
    The optimiser (:mod:`tokdyn.train.optim`) of ``cfg.train``: gradients clipped to ``clip_norm``,
    then Adam with a linear warm-up over ``warmup`` steps and (by default) a cosine decay to 5% of
    the peak at ``steps``.
    Logs: ``loss`` and ``grad_norm``. Pass ``vectorised_init=False``: on XLA:CPU (jaxlib 0.10.2)
    ``jit(vmap)`` of the scenes study's model initialisation never finished (the process waited
    with no CPU use; tiny models do finish), and one call per model costs a few seconds once."""
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a tokdyn.models.slots.Config, got {type(cfg).__name__}")
    cfg.validate()
    return _trainer(dataclasses.replace(cfg, encoder_channels=tuple(int(c) for c in cfg.encoder_channels)))


@functools.lru_cache(maxsize=32)
def _trainer(cfg: Config) -> train.Trainer:
    def batch(key, pool, step):
        check_images("the training pool", pool, cfg.size)  # shapes and dtype, while tracing
        return draw_batch(key, pool, cfg.batch_size)

    def loss(params, images, key, hparams):
        value, _ = loss_fn(jax.random.split(key)[1], params, cfg, images)
        return value, {}

    return train.Trainer(
        cfg.train,
        init=lambda key, hparams: init(key, cfg),
        loss=loss,
        batch=batch,
        keys=run_keys,
        name="slot attention (implicit)" if cfg.implicit else "slot attention",
    )
