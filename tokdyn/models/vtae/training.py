"""Training of the visual-token autoencoders on :mod:`tokdyn.train`: :func:`trainer` gives the
model's :class:`tokdyn.train.Trainer` (the same object per ``cfg``, so its compilation is reused),
:func:`inputs` the checked shared data ``(weights, embeddings)``; train seeds x settings with::

    keys, hp = train.grid(jax.random.split(key, seeds), Hparams(learning_rate=1e-2))
    result = train.train_many(training.trainer(cfg), training.inputs(cfg, weights), keys, hp)

and one model with :func:`train` (jitted on ``cfg``). A step whose loss or gradient is not finite
is skipped per model. The loss terms are those named in ``cfg.losses``; the curves are
:data:`CURVES`.

Each step's keys, the loss minimised and the optimiser's defaults: :ref:`vtae-training`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tokdyn import _checks
from tokdyn import train as train_layer
from tokdyn.models.vtae import encoders, losses, model
from tokdyn.models.vtae.model import Config, Hparams

CURVES = ("loss", "grad_norm", "ce", "accuracy", "tau", "active_vocab", "grad_norm_encoder", "grad_norm_decoder")


def active_vocab(step, cfg: Config):
    """Number of types in play at ``step`` (V without curriculum).

    Examples:
      >>> from tokdyn.models.vtae import model, training
      >>> cfg = model.Config(vocab_size=10, curriculum=True, curriculum_start=2, curriculum_fraction=0.5)
      >>> [int(training.active_vocab(s, cfg)) for s in (0, 125, 250, 400)]   # 2 to 10 over 250 of 500 steps
      [2, 6, 10, 10]
    """
    V = cfg.vocab_size
    if not cfg.curriculum:
        return jnp.int32(V)
    start = min(cfg.curriculum_start, V)
    ramp = max(1, int(round(cfg.curriculum_fraction * cfg.train.steps)))  # steps to reach V
    k = start + ((V - start) * jnp.minimum(jnp.asarray(step, jnp.int32), ramp)) // ramp  # exact integer ramp
    return jnp.clip(k, start, V).astype(jnp.int32)


def loss_fn(key, params, cfg: Config, hp: Hparams, tokens, tau, embeddings):
    """The training loss of a batch (the module docstring's sum): not jitted, no checks (it runs
    inside the training step).

    Args:
      key: PRNG key, split into the encoder's noise and the sensitivity loss's noise.
      params: the model's parameters (traced; differentiated).
      cfg: the model's :class:`Config` (static: the mode and the extra losses).
      hp: :class:`Hparams` (traced: the loss weights and knobs).
      tokens: (B,) int token ids.
      tau: the Gumbel-softmax temperature at this step (traced).
      embeddings: (V, E) the semantic embeddings, or None when the model does not use them.

    Returns:
      ``(loss, parts)``: the scalar loss and a dict with the scalars ``ce`` and ``accuracy`` and
      the encoder's ``z`` (B, P, K) pre-activations and ``codes`` (its cells' codes).
    """
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


def draw_tokens(key, cfg: Config, weights, step):
    """A training step's tokens, among the :func:`active_vocab` types of lowest id. Traceable,
    not jitted.

    Args:
      key: PRNG key of the draw.
      cfg: the model's :class:`Config` (static: ``sampling``, ``batch_size``, the curriculum).
      weights: (V,) the token weights (used with ``sampling="occurrence"``; weight 0 is never drawn).
      step: the step index (int or traced int32).

    Returns:
      (B,) int token ids, B = ``cfg.batch_size``: uniform over the types in play, or by
      ``weights`` with ``sampling="occurrence"``.

    Examples:
      >>> import jax
      >>> import numpy as np
      >>> from tokdyn.models.vtae import model, training
      >>> cfg = model.Config(vocab_size=10, batch_size=6, curriculum=True, curriculum_start=2)
      >>> tokens = training.draw_tokens(jax.random.key(0), cfg, np.full(10, 0.1, np.float32), 0)
      >>> tokens.shape, bool((tokens < 2).all())   # only the types in play at step 0
      ((6,), True)
    """
    logw = jnp.log(jnp.maximum(weights, 0.0))  # (V,) -inf where weight 0
    lw = logw if cfg.sampling == "occurrence" else jnp.zeros_like(logw)
    lw = jnp.where(jnp.arange(cfg.vocab_size) < active_vocab(step, cfg), lw, -jnp.inf)
    return jax.random.categorical(key, lw, shape=(cfg.batch_size,))


@functools.lru_cache(maxsize=64)
def trainer(cfg: Config) -> train_layer.Trainer:
    """The model's :class:`tokdyn.train.Trainer` (data: :func:`inputs`; hyper-parameters:
    :class:`Hparams`; extra state: the VQ EMA ``(ema_count (C,), ema_sum (C, D))`` with
    ``vq_ema``, else ``()``). The same object for the same ``cfg``."""

    def batch(key, data, step):
        weights, embeddings = data
        k_batch = jax.random.split(key, 3)[0]
        return draw_tokens(k_batch, cfg, weights, step), step, embeddings

    def loss(params, batch, key, hp):
        tokens, step, embeddings = batch
        k_loss = jax.random.split(key, 3)[1]
        tau = encoders.temperature(step, cfg.train.steps, hp.tau_start, hp.tau_end)
        total, aux = loss_fn(k_loss, params, cfg, hp, tokens, tau, embeddings)
        return total, dict(aux, tau=tau, active_vocab=active_vocab(step, cfg).astype(jnp.float32))

    def init_extra(params, hp):
        return jnp.ones((cfg.colours,)), params["encoder"]["codebook"]

    def update_extra(old, params, extra, aux, key, hp, ok):
        cnt, s = extra
        thr = hp.dead_threshold * jnp.mean(cnt) if cfg.dead_code_reset else 0.0
        k_dead = jax.random.split(key, 3)[2] if cfg.dead_code_reset else None
        cb, cnt, s = encoders.vq_ema_update(
            old["encoder"]["codebook"],
            cnt,
            s,
            aux["z"].reshape(-1, cfg.code_dim),
            aux["codes"].reshape(-1),
            hp.ema_decay,
            key=k_dead,
            dead_threshold=thr,
        )
        keep = lambda new, prev: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, prev)
        params = {**params, "encoder": {**params["encoder"], "codebook": keep(cb, old["encoder"]["codebook"])}}
        return params, keep((cnt, s), extra)

    def grad_logs(grads):
        return dict(
            grad_norm_encoder=optax.tree.norm(grads["encoder"]), grad_norm_decoder=optax.tree.norm(grads["decoder"])
        )

    return train_layer.Trainer(
        cfg.train,
        init=lambda key, hp: model.init(key, cfg),
        loss=loss,
        batch=batch,
        init_extra=init_extra if cfg.vq_ema else None,
        update_extra=update_extra if cfg.vq_ema else None,
        grad_logs=grad_logs,
        name="vtae",
    )


def inputs(cfg: Config, weights=None, embeddings=None) -> tuple:
    """The shared training data ``(weights (V,), embeddings (V, E) or None)``, checked: ``weights``
    the token distribution of ``sampling="occurrence"`` (uniform if None, float32), ``embeddings``
    the semantic embeddings of ``encoder_input="embedding"`` and the ``semantic`` loss (None when
    the model does not use them).

    Examples:
      >>> import numpy as np
      >>> from tokdyn.models.vtae import model, training
      >>> weights, embeddings = training.inputs(model.Config(vocab_size=4))
      >>> print(np.asarray(weights), embeddings)   # uniform weights; no embeddings needed
      [0.25 0.25 0.25 0.25] None
    """
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a tokdyn.models.vtae.Config, got {type(cfg).__name__}")
    cfg.validate()
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
    return weights, embeddings


def _check_train(key, cfg, hparams, weights, embeddings):
    _checks.prng_key("key", key)
    weights, embeddings = inputs(cfg, weights, embeddings)
    hparams = Hparams() if hparams is None else hparams
    if not isinstance(hparams, Hparams):
        raise TypeError(f"hparams must be a tokdyn.models.vtae.Hparams, got {type(hparams).__name__}")
    hparams.validate()
    return dict(hparams=hparams.astype(), weights=weights, embeddings=embeddings)


@_checks.checked_jit(_check_train, static_argnames=("cfg",))
def train(key, cfg: Config, hparams: Hparams | None = None, weights=None, embeddings=None):
    """Train one model: :func:`tokdyn.train.make_train` of :func:`trainer`, jitted with ``cfg``
    static; callable inside a user's jit/vmap.

    Args:
      key: PRNG key of the run.
      cfg: the model's :class:`Config` (static).
      hparams: :class:`Hparams` (traced), or None for the defaults.
      weights: optional (V,) token weights (:func:`inputs`; uniform if None).
      embeddings: optional (V, E) semantic embeddings (:func:`inputs`).

    Returns:
      ``(state, curves)`` of :func:`tokdyn.train.make_train`.
    """
    return train_layer.make_train(trainer(cfg))(key, hparams, (weights, embeddings))
