"""Training a second-stage model: :func:`trainer` (its :class:`tokdyn.train.Trainer`, for
``train.train_many`` over seeds x settings), :func:`inputs` (the data, checked) and :func:`train`
(one model, jitted)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks
from tokdyn import train as train_layer
from tokdyn.models.sequence.config import Config, Hparams
from tokdyn.models.sequence.network import init, loss_fn

CURVES = ("loss", "grad_norm", "vb", "ce")


@functools.lru_cache(maxsize=64)
def trainer(cfg: Config) -> train_layer.Trainer:
    """The model's :class:`tokdyn.train.Trainer` (data: the ``(N, *sample_shape)`` integers;
    hyper-parameters: :class:`Hparams`): step t's key ``fold_in(run key, t)`` splits into the
    minibatch's (``batch_size`` rows of the data drawn with replacement) and the loss's. The same
    object for the same ``cfg``."""

    def batch(key, data, step):
        k_batch = jax.random.split(key)[0]
        return data[jax.random.randint(k_batch, (cfg.batch_size,), 0, data.shape[0])]

    def loss(params, x0, key, hp):
        return loss_fn(jax.random.split(key)[1], params, cfg, hp, x0)

    return train_layer.Trainer(cfg.train, init=lambda key, hp: init(key, cfg), loss=loss, batch=batch, name=cfg.model)


def _check_data(cfg: Config, data):
    want = cfg.sample_shape
    if tuple(np.shape(data)[1:]) != want or np.ndim(data) != len(want) + 1 or np.shape(data)[0] < 1:
        raise ValueError(
            f"data must have shape (N, {', '.join(map(str, want))}) for model {cfg.model!r} "
            f"(length={cfg.length}" + (f", cells={cfg.cells}" if cfg.on_grids else "") + f"), got {np.shape(data)}"
        )
    if _checks.dtype_of(data).kind not in "iu":
        raise TypeError(
            f"data must hold integer {'colours' if cfg.on_grids else 'token ids'}, got dtype {_checks.dtype_of(data)}"
        )
    if _checks.on_host(data):
        lo, hi = int(np.min(data)), int(np.max(data))
        if lo < 0 or hi >= cfg.classes:
            what = f"colours={cfg.colours}" if cfg.on_grids else f"vocab_size={cfg.vocab_size}"
            raise ValueError(f"data values must lie in [0, {what}), got range [{lo}, {hi}]")


def inputs(cfg: Config, data):
    """The training data, checked against ``cfg`` (shape, integer dtype, range), as int32."""
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a tokdyn.models.sequence.Config, got {type(cfg).__name__}")
    cfg.validate()
    _check_data(cfg, data)
    return jnp.asarray(data, jnp.int32)


def _check_train(key, cfg, hparams, data):
    _checks.prng_key("key", key)
    data = inputs(cfg, data)
    hparams = Hparams() if hparams is None else hparams
    hparams.validate()
    return dict(hparams=jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), hparams), data=data)


@_checks.checked_jit(_check_train, static_argnames=("cfg",))
def train(key, cfg: Config, hparams: Hparams | None, data):
    """Train one model: :func:`tokdyn.train.make_train` of :func:`trainer`, jitted with ``cfg``
    static.

    Args:
      key: PRNG key of the run.
      cfg: the model's :class:`Config` (static).
      hparams: :class:`Hparams` (traced), or ``None`` for the defaults.
      data: ``(N, *sample_shape)`` integers in ``[0, cfg.classes)`` (:func:`inputs`).

    Returns:
      ``(state, curves)`` of :func:`tokdyn.train.make_train`.
    """
    return train_layer.make_train(trainer(cfg))(key, hparams, data)
