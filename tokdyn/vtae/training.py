"""Training: a pure ``train(key, cfg, hparams, weights, embeddings) -> TrainResult``, a
``lax.scan`` over logging intervals of a ``lax.scan`` over steps, Adam from optax.

``cfg`` (:class:`~tokdyn.vtae.model.Config`) is static; ``hparams``
(:class:`~tokdyn.vtae.model.Hparams`), the key, the token weights and the embeddings are traced,
so :func:`train_many` vmaps one compiled function over seeds and hyper-parameters (thousands of
small models per call). Losses that turn non-finite are detected per model: the update of that
step is skipped (the parameters keep their last finite values) and the first such step is
recorded in ``TrainResult.nan_step`` (-1 when none); :func:`nan_report` lists them.

The loss minimised at each step (batch of ``batch_size`` tokens, all terms batch means)::

    CE + w_sensitivity * max(0, sens_min - KL(p(x) || p(x + noise)))
       + w_batch_entropy * (mean entropy - entropy of mean prediction)
       + w_semantic * |cos-sim(grids) - cos-sim(embeddings)|^2
       + w_commit * commitment + w_codebook * codebook loss      (vq)
       + score-function surrogate (CE_i - baseline_i) * log p(grid_i)   (categorical)

where the extra terms appear only when named in ``cfg.losses``. The score-function baseline is
the leave-one-out mean CE of the batch.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tokdyn import _checks, execute
from tokdyn.vtae import encoders, losses, model
from tokdyn.vtae.model import Config, Hparams

CURVES = ("loss", "ce", "accuracy", "grad_norm_encoder", "grad_norm_decoder", "tau", "active_vocab")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainResult:
    """Attributes:
      params: the trained parameters.
      vq_state: ``(ema_count (C,), ema_sum (C, D))`` for EMA VQ, else empty tuple.
      curves: dict name -> (n_logs,) means over each logging interval (see :data:`CURVES`).
      nan_step: () int32 first step whose loss (or gradient) was not finite, -1 if none.
      log_steps: (n_logs,) int32 last step of each interval.
    """

    params: dict
    vq_state: tuple
    curves: dict
    nan_step: jax.Array
    log_steps: jax.Array


def active_vocab(step, cfg: Config):
    """Number of types in play at ``step`` (V without curriculum)."""
    V = cfg.vocab_size
    if not cfg.curriculum:
        return jnp.int32(V)
    start = min(cfg.curriculum_start, V)
    ramp = max(1, int(round(cfg.curriculum_fraction * cfg.steps)))  # steps to reach V
    k = start + ((V - start) * jnp.minimum(jnp.asarray(step, jnp.int32), ramp)) // ramp  # exact integer ramp
    return jnp.clip(k, start, V).astype(jnp.int32)


def _global_norm(tree):
    return jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree_util.tree_leaves(tree)))


def loss_fn(params, cfg: Config, hp: Hparams, key, tokens, tau, embeddings):
    """Scalar training loss and a dict of its parts for a batch ``tokens`` (B,)."""
    k_enc, k_sens = jax.random.split(key)
    enc = model.encode(params, cfg, tokens, key=k_enc, tau=tau, embeddings=embeddings)
    decode = functools.partial(model.decode, params, cfg)
    logits = decode(enc.x)  # (B, V)
    ce = losses.cross_entropy(logits, tokens)  # (B,)
    total = jnp.mean(ce)
    if cfg.mode == "categorical":
        B = tokens.shape[0]
        base = (jnp.sum(ce) - ce) / max(B - 1, 1)  # leave-one-out baseline
        total = total + jnp.mean(jax.lax.stop_gradient(ce - base) * enc.logp)
    if cfg.mode == "vq":
        total = total + hp.w_commit * enc.commit + (0.0 if cfg.vq_ema else hp.w_codebook * enc.codebook)
    if "sensitivity" in cfg.losses:
        kl = losses.sensitivity_kl(decode, enc.x, k_sens, hp.sens_noise)
        total = total + hp.w_sensitivity * losses.sensitivity_penalty(kl, hp.sens_min)
    if "batch_entropy" in cfg.losses:
        total = total + hp.w_batch_entropy * losses.batch_entropy(logits)
    if "semantic" in cfg.losses:
        x = enc.x if cfg.mode != "categorical" else jax.nn.softmax(enc.z, -1)
        total = total + hp.w_semantic * losses.semantic_alignment(x, embeddings[tokens])
    acc = jnp.mean(jnp.argmax(logits, -1) == tokens)
    return total, dict(ce=jnp.mean(ce), accuracy=acc, z=enc.z, codes=enc.codes)


def init_state(key, cfg: Config):
    """``(carry, k_run)``: the training state ``(params, opt_state, vq_state, nan_step)`` before the
    first step and the key every step folds its index into."""
    k_init, k_run = jax.random.split(key)
    params = model.init(k_init, cfg)
    opt_state = _OPT.init(params)
    vq_state = (jnp.ones((cfg.colours,)), params["encoder"]["codebook"]) if cfg.vq_ema else ()
    return (params, opt_state, vq_state, jnp.int32(-1)), k_run


_OPT = optax.scale_by_adam()


def train_step(cfg: Config, hp: Hparams, k_run, weights, embeddings, carry, t):
    """One optimiser step ``t`` of :func:`train`: ``(carry, t) -> (carry, logs)`` (logs: the
    per-step values of :data:`CURVES`). ``train`` scans exactly this function; calling it step by
    step from Python gives the same model."""
    params, opt_state, vq_state, nan_step = carry
    logw = jnp.log(jnp.maximum(weights, 0.0))  # (V,) -inf where weight 0
    ids = jnp.arange(cfg.vocab_size)
    k = jax.random.fold_in(k_run, t)
    k_batch, k_loss, k_dead = jax.random.split(k, 3)
    n_active = active_vocab(t, cfg)
    lw = logw if cfg.sampling == "occurrence" else jnp.zeros_like(logw)
    lw = jnp.where(ids < n_active, lw, -jnp.inf)
    tokens = jax.random.categorical(k_batch, lw, shape=(cfg.batch_size,))  # (B,)
    tau = encoders.temperature(t, cfg.steps, hp.tau_start, hp.tau_end)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, cfg, hp, k_loss, tokens, tau, embeddings)
    updates, new_opt = _OPT.update(grads, opt_state, params)
    new_params = jax.tree_util.tree_map(lambda p, u: p - hp.lr * u, params, updates)
    new_vq = vq_state
    if cfg.vq_ema:
        z = aux["z"].reshape(-1, cfg.code_dim)
        codes = aux["codes"].reshape(-1)
        cnt, s = vq_state
        thr = hp.dead_threshold * jnp.mean(cnt) if cfg.dead_code_reset else 0.0
        cb, cnt, s = encoders.vq_ema_update(params["encoder"]["codebook"], cnt, s, z, codes, hp.ema_decay,
                                            key=k_dead if cfg.dead_code_reset else None, dead_threshold=thr)
        new_params["encoder"]["codebook"] = cb
        new_vq = (cnt, s)
    gn_enc, gn_dec = _global_norm(grads["encoder"]), _global_norm(grads["decoder"])
    ok = jnp.isfinite(loss) & jnp.isfinite(gn_enc) & jnp.isfinite(gn_dec)
    keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)
    carry = (keep(new_params, params), keep(new_opt, opt_state), keep(new_vq, vq_state),
             jnp.where((nan_step < 0) & ~ok, t, nan_step))
    logs = dict(loss=loss, ce=aux["ce"], accuracy=aux["accuracy"], grad_norm_encoder=gn_enc,
                grad_norm_decoder=gn_dec, tau=tau, active_vocab=n_active.astype(jnp.float32))
    return carry, logs


def _train(key, cfg: Config, hp: Hparams, weights, embeddings):
    carry, k_run = init_state(key, cfg)
    step = functools.partial(train_step, cfg, hp, k_run, weights, embeddings)

    def interval(carry, i):
        ts = i * cfg.log_every + jnp.arange(cfg.log_every)
        carry, logs = jax.lax.scan(step, carry, ts)
        return carry, jax.tree_util.tree_map(lambda v: jnp.nanmean(v), logs)

    carry, curves = jax.lax.scan(interval, carry, jnp.arange(cfg.n_logs))
    params, _, vq_state, nan_step = carry
    log_steps = (jnp.arange(cfg.n_logs, dtype=jnp.int32) + 1) * cfg.log_every - 1
    return TrainResult(params=params, vq_state=vq_state, curves=curves, nan_step=nan_step, log_steps=log_steps)


_train_jit = jax.jit(_train, static_argnums=1)


def _prepare(cfg: Config, hparams, weights, embeddings):
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a tokdyn.vtae.Config, got {type(cfg).__name__}")
    cfg.validate()
    if not isinstance(hparams, Hparams):
        raise TypeError(f"hparams must be a tokdyn.vtae.Hparams, got {type(hparams).__name__}")
    hparams.validate()
    V = cfg.vocab_size
    if weights is None:
        weights = jnp.full((V,), 1.0 / V, jnp.float32)
    else:
        _checks.finite_array("weights", weights, ndim=1)
        if np.shape(weights)[0] != V:
            raise ValueError(f"weights must have shape ({V},) (vocab_size), got {np.shape(weights)}")
        if _checks.is_concrete(weights) and (np.any(np.asarray(weights) < 0) or np.sum(weights) <= 0):
            raise ValueError("weights must be non-negative with a positive sum")
        weights = jnp.asarray(weights, jnp.float32)
    need_emb = cfg.encoder_input == "embedding" or "semantic" in cfg.losses
    if need_emb:
        if embeddings is None:
            raise ValueError("embeddings (V, embed_dim) are required with encoder_input='embedding' or 'semantic'")
        _checks.finite_array("embeddings", embeddings, ndim=2)
        if tuple(np.shape(embeddings)) != (V, cfg.embed_dim):
            raise ValueError(f"embeddings must have shape ({V}, {cfg.embed_dim}), got {tuple(np.shape(embeddings))}")
        embeddings = jnp.asarray(embeddings, jnp.float32)
    else:
        embeddings = None
    return hparams.astype(), weights, embeddings


def train(key, cfg: Config, hparams: Hparams | None = None, weights=None, embeddings=None) -> TrainResult:
    """Train one model. ``weights`` (V,): the token distribution used with
    ``cfg.sampling="occurrence"`` (uniform if None); ``embeddings`` (V, E): semantic embeddings for
    ``encoder_input="embedding"`` and the ``semantic`` loss. Jitted on ``cfg``."""
    hp, w, e = _prepare(cfg, Hparams() if hparams is None else hparams, weights, embeddings)
    return _train_jit(key, cfg, hp, w, e)


def train_many(keys, cfg: Config, hparams: Hparams, weights=None, embeddings=None, *, batch_size=None,
               devices=None) -> TrainResult:
    """Train M models in one compiled call: ``keys`` (M,) and every leaf of ``hparams`` of shape
    (M,) (see :meth:`Hparams.broadcast`); the result's leaves gain a leading (M,) axis. Model i
    equals ``train(keys[i], cfg, hparams[i], ...)``.

    ``batch_size``: None vmaps all of a device's models at once; an int runs ``lax.map`` over
    chunks of that many vmapped models (bounds memory). ``devices``: the devices the model axis
    is split over with ``shard_map`` (default: every local device of the default backend; on a
    CPU that is one device unless ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` is set,
    as the ``tokdyn`` command does). M need not divide evenly: the last device's share is padded
    with copies of the last model and the copies are dropped."""
    keys = jnp.asarray(keys)
    M = keys.shape[0]
    leaves = jax.tree_util.tree_leaves(hparams)
    if any(jnp.shape(v) != (M,) for v in leaves):
        raise ValueError(f"every hparams leaf must have shape ({M},) (one value per key), got "
                         f"{[tuple(jnp.shape(v)) for v in leaves]}; use Hparams.broadcast")
    if batch_size is not None:
        _checks.positive_int("batch_size", batch_size)
    devices = tuple(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must name at least one device, got an empty sequence")
    hp, w, e = _prepare(cfg, hparams, weights, embeddings)
    pad = (-M) % len(devices)
    if pad:
        keys, hp = jax.tree_util.tree_map(lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, 0)]), (keys, hp))
    fn, sharding = many_fn(cfg, batch_size, devices)
    out = fn((w, e), jax.device_put((keys, hp), sharding))
    return jax.tree_util.tree_map(lambda a: a[:M], out) if pad else out


@functools.lru_cache(maxsize=32)
def _per_model(cfg: Config):
    """The per-model function for :func:`tokdyn.execute.sharded_map` (one object per config)."""
    def fn(shared, args):
        (weights, embeddings), (key, hp) = shared, args
        return _train(key, cfg, hp, weights, embeddings)
    return fn


def many_fn(cfg: Config, batch_size=None, devices: tuple | None = None):
    """``(fn, sharding)``: the jitted ``fn((weights, embeddings), (keys, hparams)) -> TrainResult``
    that :func:`train_many` calls (M divisible by ``len(devices)``, inputs placed with
    ``sharding``), built by :func:`tokdyn.execute.sharded_map`. Exposed so benchmarks can lower
    and compile it apart."""
    devices = tuple(jax.local_devices() if devices is None else devices)
    return execute.sharded_map(_per_model(cfg), devices, batch_size, True)


def nan_report(result: TrainResult) -> list[tuple[int, int]]:
    """``[(model index, first non-finite step), ...]`` for every model whose loss went non-finite
    (a single model is index 0)."""
    steps = np.atleast_1d(np.asarray(result.nan_step))
    return [(int(i), int(steps[i])) for i in np.flatnonzero(steps >= 0)]
