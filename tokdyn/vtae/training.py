"""Training: a pure ``train(key, cfg, hparams, weights, embeddings) -> TrainResult``, a
``lax.scan`` over logging intervals of a ``lax.scan`` over steps, Adam from optax.

``cfg`` (:class:`~tokdyn.vtae.model.Config`) is static; ``hparams``
(:class:`~tokdyn.vtae.model.Hparams`), the key, the token weights and the embeddings are traced,
so :func:`train_many` vmaps one compiled function over seeds and hyper-parameters (thousands of
small models per call). The optimiser (:func:`optimizer`) is ``optax.adam`` with the traced
learning rate ``hparams.lr`` injected into its state, wrapped in ``optax.apply_if_finite``: a step
whose loss or gradients are not finite is skipped per model (parameters, optimiser state and VQ
EMA state keep their last finite values) and the first such step is recorded in
``TrainResult.nan_step`` (-1 when none); :func:`nan_report` lists them.

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
NEVER_GIVE_UP = int(np.iinfo(np.int32).max)  # apply_if_finite skips every non-finite step, however many


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


def loss_fn(key, params, cfg: Config, hp: Hparams, tokens, tau, embeddings):
    """Scalar training loss and a dict of its parts for a batch ``tokens`` (B,)."""
    k_enc, k_sens = jax.random.split(key)
    enc = model.encode(k_enc, params, cfg, tokens, tau=tau, embeddings=embeddings)
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
        kl = losses.sensitivity_kl(k_sens, decode, enc.x, hp.sens_noise)
        total = total + hp.w_sensitivity * losses.sensitivity_penalty(kl, hp.sens_min)
    if "batch_entropy" in cfg.losses:
        total = total + hp.w_batch_entropy * losses.batch_entropy(logits)
    if "semantic" in cfg.losses:
        x = enc.x if cfg.mode != "categorical" else jax.nn.softmax(enc.z, -1)
        total = total + hp.w_semantic * losses.semantic_alignment(x, embeddings[tokens])
    acc = jnp.mean(jnp.argmax(logits, -1) == tokens)
    return total, dict(ce=jnp.mean(ce), accuracy=acc, z=enc.z, codes=enc.codes)


def optimizer(hp: Hparams) -> optax.GradientTransformation:
    """Adam (optax defaults) at the traced learning rate ``hp.lr`` (held in the optimiser state),
    skipping every step whose gradients are not finite."""
    adam = optax.inject_hyperparams(optax.adam, static_args=("b1", "b2", "eps", "eps_root"))(learning_rate=hp.lr)
    return optax.apply_if_finite(adam, max_consecutive_errors=NEVER_GIVE_UP)


def init_state(key, cfg: Config, hp: Hparams):
    """``(carry, run_key)``: the training state ``(params, opt_state, vq_state, nan_step)`` before
    the first step and the key every step folds its index into."""
    k_init, k_run = jax.random.split(key)
    params = model.init(k_init, cfg)
    opt_state = optimizer(hp).init(params)
    vq_state = (jnp.ones((cfg.colours,)), params["encoder"]["codebook"]) if cfg.vq_ema else ()
    return (params, opt_state, vq_state, jnp.int32(-1)), k_run


def train_step(run_key, cfg: Config, hp: Hparams, weights, embeddings, carry, t):
    """One optimiser step ``t`` of :func:`train`: ``(carry, t) -> (carry, logs)`` (logs: the
    per-step values of :data:`CURVES`); ``run_key`` and ``carry`` come from :func:`init_state`.
    ``train`` scans exactly this function; calling it step by step from Python gives the same model."""
    params, opt_state, vq_state, nan_step = carry
    logw = jnp.log(jnp.maximum(weights, 0.0))  # (V,) -inf where weight 0
    ids = jnp.arange(cfg.vocab_size)
    k = jax.random.fold_in(run_key, t)
    k_batch, k_loss, k_dead = jax.random.split(k, 3)
    n_active = active_vocab(t, cfg)
    lw = logw if cfg.sampling == "occurrence" else jnp.zeros_like(logw)
    lw = jnp.where(ids < n_active, lw, -jnp.inf)
    tokens = jax.random.categorical(k_batch, lw, shape=(cfg.batch_size,))  # (B,)
    tau = encoders.temperature(t, cfg.steps, hp.tau_start, hp.tau_end)
    (loss, aux), grads = jax.value_and_grad(loss_fn, argnums=1, has_aux=True)(k_loss, params, cfg, hp, tokens, tau,
                                                                               embeddings)
    gn_enc, gn_dec = optax.tree.norm(grads["encoder"]), optax.tree.norm(grads["decoder"])
    # apply_if_finite looks at the gradients; a non-finite loss (or a norm that overflows) skips the step too
    finite = jnp.isfinite(loss) & jnp.isfinite(gn_enc) & jnp.isfinite(gn_dec)
    checked = jax.tree_util.tree_map(lambda g: jnp.where(finite, g, jnp.nan), grads)
    updates, opt_state = optimizer(hp).update(checked, opt_state, params)
    ok = opt_state.last_finite
    new_params = optax.apply_updates(params, updates)  # zero updates on a skipped step
    if cfg.vq_ema:
        z = aux["z"].reshape(-1, cfg.code_dim)
        codes = aux["codes"].reshape(-1)
        cnt, s = vq_state
        thr = hp.dead_threshold * jnp.mean(cnt) if cfg.dead_code_reset else 0.0
        cb, cnt, s = encoders.vq_ema_update(params["encoder"]["codebook"], cnt, s, z, codes, hp.ema_decay,
                                            key=k_dead if cfg.dead_code_reset else None, dead_threshold=thr)
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)
        new_params["encoder"]["codebook"] = keep(cb, params["encoder"]["codebook"])
        vq_state = keep((cnt, s), vq_state)
    carry = (new_params, opt_state, vq_state, jnp.where((nan_step < 0) & ~ok, t, nan_step))
    logs = dict(loss=loss, ce=aux["ce"], accuracy=aux["accuracy"], grad_norm_encoder=gn_enc,
                grad_norm_decoder=gn_dec, tau=tau, active_vocab=n_active.astype(jnp.float32))
    return carry, logs


def _check_inputs(cfg, hparams, weights, embeddings):
    """Check the model inputs; ``(hparams as float32, weights (V,) (uniform if None), embeddings or None)``."""
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a tokdyn.vtae.Config, got {type(cfg).__name__}")
    cfg.validate()
    hparams = Hparams() if hparams is None else hparams
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
        if _checks.on_host(weights) and (np.any(np.asarray(weights) < 0) or np.sum(weights) <= 0):
            raise ValueError("weights must be non-negative with a positive sum")
        weights = jnp.asarray(weights, jnp.float32)
    if cfg.encoder_input == "embedding" or "semantic" in cfg.losses:
        if embeddings is None:
            raise ValueError("embeddings (V, embed_dim) are required with encoder_input='embedding' or 'semantic'")
        _checks.finite_array("embeddings", embeddings, ndim=2)
        if tuple(np.shape(embeddings)) != (V, cfg.embed_dim):
            raise ValueError(f"embeddings must have shape ({V}, {cfg.embed_dim}), got {tuple(np.shape(embeddings))}")
        embeddings = jnp.asarray(embeddings, jnp.float32)
    else:
        embeddings = None
    return hparams.astype(), weights, embeddings


def _check_train(key, cfg, hparams, weights, embeddings):
    _checks.prng_key("key", key)
    hparams, weights, embeddings = _check_inputs(cfg, hparams, weights, embeddings)
    return dict(hparams=hparams, weights=weights, embeddings=embeddings)


@_checks.checked_jit(_check_train, static_argnames=("cfg",))
def train(key, cfg: Config, hparams: Hparams | None = None, weights=None, embeddings=None) -> TrainResult:
    """Train one model (jitted on ``cfg``; callable inside a user's jit/vmap). ``hparams``:
    :class:`Hparams` (defaults if None); ``weights`` (V,): the token distribution used with
    ``cfg.sampling="occurrence"`` (uniform if None); ``embeddings`` (V, E): semantic embeddings for
    ``encoder_input="embedding"`` and the ``semantic`` loss."""
    carry, run_key = init_state(key, cfg, hparams)
    step = functools.partial(train_step, run_key, cfg, hparams, weights, embeddings)

    def interval(carry, i):
        ts = i * cfg.log_every + jnp.arange(cfg.log_every)
        carry, logs = jax.lax.scan(step, carry, ts)
        return carry, jax.tree_util.tree_map(lambda v: jnp.nanmean(v), logs)

    carry, curves = jax.lax.scan(interval, carry, jnp.arange(cfg.n_logs))
    params, _, vq_state, nan_step = carry
    log_steps = (jnp.arange(cfg.n_logs, dtype=jnp.int32) + 1) * cfg.log_every - 1
    return TrainResult(params=params, vq_state=vq_state, curves=curves, nan_step=nan_step, log_steps=log_steps)


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
    hp, w, e = _check_inputs(cfg, hparams, weights, embeddings)
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
        return train(key, cfg, hp, weights, embeddings)
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
