"""Linear probes: multinomial logistic regression from features to labels, fitted with optax.

A probe asks whether a representation (features ``x`` (N, D): latent tokens, slots, pooled
activations) linearly encodes a target (integer labels ``y`` (N,) in ``[0, C)``). :func:`fit`
trains ``softmax(z W + b)`` on the training rows (``z`` the z-scored features) by full-batch Adam,
on the objective of scikit-learn's ``LogisticRegression`` (multinomial, L2 on ``W``), so both
reach the same optimum. :func:`evaluate` fits on the rows of ``train_mask`` and scores on the
rest, ``(train accuracy, held-out accuracy)``; it is meant to be ``jax.vmap``-ped over targets,
representations and seeds with one compile for all. :func:`chance` is the baseline to read a
held-out accuracy against.

Every function is pure, jittable and vmappable, key first where it draws; host arguments are
checked before anything is traced. The objective and the edge cases (constant features, masked
rows, empty sets): :ref:`diagnostics-probes`.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tokdyn import _checks

__all__ = ["Config", "Hparams", "Probe", "Scores", "fit", "predict", "accuracy", "evaluate", "chance"]

INIT_SCALE = 0.01  # standard deviation of the initial weights


@dataclasses.dataclass(frozen=True)
class Config:
    """Static structure of a probe.

    Attributes:
      n_classes: C, the number of classes (labels in ``[0, C)``); at least 2.
      steps: full-batch Adam iterations.
      standardise: z-score each feature with the mean and standard deviation (ddof 0) of the
        training rows; otherwise the features are used as they are.
    """

    n_classes: int
    steps: int = 500
    standardise: bool = True

    def validate(self) -> "Config":
        """Check every field; raise ``ValueError``/``TypeError`` naming the field. Returns ``self``."""
        _checks.positive_int("n_classes", self.n_classes, minimum=2)
        _checks.positive_int("steps", self.steps)
        if not isinstance(self.standardise, bool):
            raise TypeError(f"standardise must be a bool, got {self.standardise!r}")
        return self


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Hparams:
    """Traced knobs (sweepable without recompiling): Adam's learning rate and the L2 penalty
    ``(weight_decay / 2) ||W||^2`` on the weights (not the bias)."""

    learning_rate: float = 0.05
    weight_decay: float = 1e-3

    def validate(self) -> "Hparams":
        """Check the knobs when they are host numbers (a positive learning rate, ``weight_decay`` >= 0); raise
        ``ValueError`` naming the knob. Returns ``self``."""
        _checks.real("learning_rate", self.learning_rate, low=0.0, low_open=True)
        _checks.real("weight_decay", self.weight_decay, low=0.0)
        return self


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Probe:
    """A fitted probe: logits ``((x - mean) / scale) @ weights + bias``; weights (D, C), bias (C,),
    mean and scale (D,) (0 and 1 without standardisation)."""

    weights: jax.Array
    bias: jax.Array
    mean: jax.Array
    scale: jax.Array


class Scores(NamedTuple):
    """Accuracy on the training rows and on the held-out rows."""

    train: jax.Array
    held_out: jax.Array


# ---------------------------------------------------------------------------------------------
# Argument validation
# ---------------------------------------------------------------------------------------------


def _check_mask(name: str, mask, n: int, *, need: str = ""):
    """An optional (n,) bool mask; a host mask must select at least one row (``need`` says which)."""
    _checks.mask_for(name, mask, n)
    if need and mask is not None and _checks.on_host(mask) and not np.any(mask):
        raise ValueError(f"{name} must select at least one {need}, got no True entry")


def _check_features(x, d=None, mask=None):
    """(N, D) real features (D = ``d`` when given), finite on the rows of ``mask`` (host data only;
    the mask itself is checked by ``_check_mask``)."""
    if np.ndim(x) != 2:
        raise ValueError(f"x must be a 2-D array (N, D), got shape {np.shape(x)}")
    dtype = _checks.dtype_of(x)
    if dtype.kind not in "biuf":
        raise TypeError(f"x must be a real-valued array, got dtype {dtype}")
    if d is not None and np.shape(x)[1] != d:
        raise ValueError(f"x must have D = {d} features (columns) to match the probe, got shape {np.shape(x)}")
    if _checks.on_host(x) and _checks.on_host(mask) and np.shape(mask) == np.shape(x)[:1]:
        rows = np.asarray(x) if mask is None else np.asarray(x)[np.asarray(mask, bool)]
        if not np.all(np.isfinite(rows)):
            n_bad = int(np.size(rows) - np.isfinite(rows).sum())
            where = "" if mask is None else " on the rows of the mask"
            raise ValueError(f"x must be finite{where}: it holds {n_bad} NaN or infinite value(s)")


def _check_labels(y, n: int, n_classes: int, mask=None):
    """(n,) integer labels, in ``[0, n_classes)`` on the rows of ``mask`` (host data only)."""
    if np.ndim(y) != 1 or np.shape(y)[0] != n:
        raise ValueError(f"y must have shape ({n},) (one label per row of x), got shape {np.shape(y)}")
    dtype = _checks.dtype_of(y)
    if dtype.kind not in "iu":
        raise TypeError(f"y must hold integer labels, got dtype {dtype}")
    if _checks.on_host(y) and _checks.on_host(mask):
        rows = np.arange(n) if mask is None else np.flatnonzero(np.asarray(mask))
        labels = np.asarray(y)[rows]
        bad = (labels < 0) | (labels >= n_classes)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            where = "" if mask is None else " where mask is True"
            raise ValueError(
                f"y must hold labels in [0, n_classes) = [0, {n_classes}){where}, got "
                f"{labels[i].item()!r} at index {rows[i]}"
            )


def _check_settings(cfg, hparams):
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a tokdyn.probes.Config, got {type(cfg).__name__}")
    if not isinstance(hparams, Hparams):
        raise TypeError(f"hparams must be a tokdyn.probes.Hparams, got {type(hparams).__name__}")
    cfg.validate()
    hparams.validate()


def _check_fit(key, x, y, cfg, hparams, mask=None):
    _checks.prng_key("key", key)
    _check_settings(cfg, hparams)
    _check_features(x, mask=mask)
    _check_mask("mask", mask, np.shape(x)[0], need="training row")
    _check_labels(y, np.shape(x)[0], cfg.n_classes, mask)
    return _checks.host_arrays(x=x, y=y, mask=mask)


def _check_probe(probe):
    if not isinstance(probe, Probe):
        raise TypeError(f"probe must be a tokdyn.probes.Probe (from fit), got {type(probe).__name__}")
    return np.shape(probe.weights)


def _check_predict(probe, x):
    _check_features(x, _check_probe(probe)[0])
    return _checks.host_arrays(x=x)


def _check_accuracy(probe, x, y, mask=None):
    d, n_classes = _check_probe(probe)
    _check_features(x, d, mask)
    _check_mask("mask", mask, np.shape(x)[0], need="scored row")
    _check_labels(y, np.shape(x)[0], n_classes, mask)
    return _checks.host_arrays(x=x, y=y, mask=mask)


def _check_evaluate(key, x, y, train_mask, cfg, hparams):
    _checks.prng_key("key", key)
    _check_settings(cfg, hparams)
    _check_features(x)
    n = np.shape(x)[0]
    _check_mask("train_mask", train_mask, n, need="training row")
    if train_mask is None:
        raise TypeError(f"train_mask must be a ({n},) bool array (True: training row, False: held out), got None")
    if _checks.on_host(train_mask) and np.all(train_mask):
        raise ValueError("train_mask must leave at least one row out to score (a False entry), got all True")
    _check_labels(y, n, cfg.n_classes)
    return _checks.host_arrays(x=x, y=y, train_mask=train_mask)


def _check_chance(y, mask=None, *, n_classes, train_mask=None):
    _checks.positive_int("n_classes", n_classes, minimum=2)
    if np.ndim(y) != 1:
        raise ValueError(f"y must be a 1-D array of integer labels, got shape {np.shape(y)}")
    n = np.shape(y)[0]
    _check_mask("mask", mask, n, need="scored row")
    _check_mask("train_mask", train_mask, n, need="training row")
    _check_labels(y, n, n_classes)
    return _checks.host_arrays(y=y, mask=mask, train_mask=train_mask)


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


def _float(x):
    x = jnp.asarray(x)
    return x.astype(jnp.result_type(x.dtype, jnp.float32))


def _weights(mask, n, dtype):
    return jnp.ones(n, dtype) if mask is None else jnp.asarray(mask).astype(dtype)


def _standardiser(x, w, standardise: bool):
    """Mean and scale (D,) of the rows with weight 1: computed from the rows minus the first such
    row, divided by their largest entry per feature (no overflow; a constant feature has exactly 0
    spread and gets scale 1)."""
    d = x.shape[1]
    if not standardise:
        return jnp.zeros(d, x.dtype), jnp.ones(d, x.dtype)
    n = jnp.maximum(jnp.sum(w), 1.0)
    first = x[jnp.argmax(w)]
    shifted = (x - first) * w[:, None]
    size = jnp.max(jnp.abs(shifted), 0)
    size = jnp.where(size > 0, size, 1.0)
    u = shifted / size
    mu = jnp.sum(u, 0) / n
    std = jnp.sqrt(jnp.sum(((u - mu) * w[:, None]) ** 2, 0) / n) * size
    return first + mu * size, jnp.where(std > 0, std, 1.0)


def _logits(probe: Probe, x):
    return ((_float(x) - probe.mean) / probe.scale) @ probe.weights + probe.bias


def _fit(key, x, y, cfg: Config, hparams: Hparams, mask) -> Probe:
    x = _float(x)
    w = _weights(mask, x.shape[0], x.dtype)
    x = jnp.where(w[:, None] > 0, x, 0.0)
    mean, scale = _standardiser(x, w, cfg.standardise)
    z = (x - mean) / scale
    onehot = jax.nn.one_hot(jnp.where(w > 0, y, 0), cfg.n_classes, dtype=x.dtype)
    n = jnp.maximum(jnp.sum(w), 1.0)

    def loss(params):
        weights, bias = params
        ce = -jnp.sum(jax.nn.log_softmax(z @ weights + bias) * onehot, -1)
        return jnp.sum(w * ce) / n + 0.5 * hparams.weight_decay * jnp.sum(weights**2)

    opt = optax.adam(hparams.learning_rate)
    params = (
        INIT_SCALE * jax.random.normal(key, (x.shape[1], cfg.n_classes), x.dtype),
        jnp.zeros(cfg.n_classes, x.dtype),
    )

    def step(carry, _):
        params, state = carry
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=cfg.steps)
    return Probe(weights=params[0], bias=params[1], mean=mean, scale=scale)


def _accuracy(probe: Probe, x, y, mask):
    hit = (jnp.argmax(_logits(probe, x), -1) == y).astype(probe.weights.dtype)
    w = _weights(mask, hit.shape[0], hit.dtype)
    n = jnp.sum(w)
    return jnp.where(n > 0, jnp.sum(w * hit) / jnp.maximum(n, 1.0), jnp.nan)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


@_checks.checked_jit(_check_fit, static_argnames=("cfg",))
def fit(key, x, y, cfg: Config, hparams: Hparams = Hparams(), mask=None) -> Probe:
    """Fit a probe from features ``x`` (N, D) to labels ``y`` (N,) on the rows of ``mask``.

    Args:
      key: PRNG key of the initial weights (vmap over keys for seeds).
      x: (N, D) real features.
      y: (N,) integer labels in ``[0, cfg.n_classes)`` (on the rows of ``mask``).
      cfg: :class:`Config` (static).
      hparams: :class:`Hparams` (traced).
      mask: optional (N,) bool, the training rows (default: all).

    Returns:
      :class:`Probe`.

    Examples:
      >>> import jax
      >>> import numpy as np
      >>> from tokdyn import probes
      >>> x = np.array([[0, 1], [1, 0], [0, 2], [2, 0], [0, 3], [3, 0]], np.float32)
      >>> y = np.array([0, 1, 0, 1, 0, 1])   # which coordinate is non-zero
      >>> probe = probes.fit(jax.random.key(0), x, y, probes.Config(n_classes=2))
      >>> probe.weights.shape, probe.bias.shape
      ((2, 2), (2,))

    References:
      Alain, G. and Bengio, Y. (2017). Understanding intermediate layers using linear classifier
      probes. *ICLR 2017 workshop*. arXiv:1610.01644.
    """
    return _fit(key, x, y, cfg, hparams, mask)


@_checks.checked_jit(_check_predict)
def predict(probe: Probe, x):
    """The probe's labels for ``x`` (N, D): (N,) int32 (ties go to the lowest class).

    Examples:
      >>> import jax
      >>> import numpy as np
      >>> from tokdyn import probes
      >>> x = np.array([[0, 1], [1, 0], [0, 2], [2, 0], [0, 3], [3, 0]], np.float32)
      >>> y = np.array([0, 1, 0, 1, 0, 1])   # which coordinate is non-zero
      >>> probe = probes.fit(jax.random.key(0), x, y, probes.Config(n_classes=2))
      >>> probes.predict(probe, x).tolist()
      [0, 1, 0, 1, 0, 1]
    """
    return jnp.argmax(_logits(probe, x), -1).astype(jnp.int32)


@_checks.checked_jit(_check_accuracy)
def accuracy(probe: Probe, x, y, mask=None):
    """The share of the rows of ``mask`` where :func:`predict` equals ``y``.

    Args:
      probe: a fitted :class:`Probe`.
      x: (N, D) real features.
      y: (N,) integer labels in ``[0, C)`` (on the rows of ``mask``).
      mask: optional (N,) bool, the scored rows (default: all).

    Returns:
      A scalar in [0, 1]; NaN when ``mask`` (a JAX array) selects no row.

    Examples:
      >>> import jax
      >>> import numpy as np
      >>> from tokdyn import probes
      >>> x = np.array([[0, 1], [1, 0], [0, 2], [2, 0], [0, 3], [3, 0]], np.float32)
      >>> y = np.array([0, 1, 0, 1, 0, 1])   # which coordinate is non-zero
      >>> probe = probes.fit(jax.random.key(0), x, y, probes.Config(n_classes=2))
      >>> print(f"{float(probes.accuracy(probe, x, y)):.2f}")
      1.00
    """
    return _accuracy(probe, x, y, mask)


@_checks.checked_jit(_check_evaluate, static_argnames=("cfg",))
def evaluate(key, x, y, train_mask, cfg: Config, hparams: Hparams = Hparams()) -> Scores:
    """Fit on the rows of ``train_mask`` and score on the rest. Made to be vmapped, e.g. over targets
    and seeds::

        jax.vmap(jax.vmap(lambda k, y: evaluate(k, x, y, train_mask, cfg), (0, None)), (None, 0))(keys, ys)

    Args:
      key: PRNG key of the initial weights.
      x: (N, D) real features.
      y: (N,) integer labels, every one in ``[0, cfg.n_classes)`` (the held-out ones are scored too).
      train_mask: (N,) bool: True for a training row, False for a held-out one.
      cfg: :class:`Config` (static).
      hparams: :class:`Hparams` (traced).

    Returns:
      :class:`Scores` ``(train, held_out)``, two accuracies.

    Examples:
      >>> import jax
      >>> import numpy as np
      >>> from tokdyn import probes
      >>> x = np.array([[0, 1], [1, 0], [0, 2], [2, 0], [0, 3], [3, 0]], np.float32)
      >>> y = np.array([0, 1, 0, 1, 0, 1])   # which coordinate is non-zero
      >>> train = np.array([1, 1, 1, 1, 0, 0], bool)   # the last pair held out
      >>> scores = probes.evaluate(jax.random.key(0), x, y, train, probes.Config(n_classes=2))
      >>> print(f"{float(scores.train):.2f} {float(scores.held_out):.2f}")
      1.00 1.00
    """
    probe = _fit(key, x, y, cfg, hparams, train_mask)
    return Scores(train=_accuracy(probe, x, y, train_mask), held_out=_accuracy(probe, x, y, ~train_mask))


@_checks.checked_jit(_check_chance, static_argnames=("n_classes",))
def chance(y, mask=None, *, n_classes: int, train_mask=None):
    """The chance accuracy on the rows of ``mask``: the share of them holding the most frequent label of
    the rows of ``train_mask`` (default: of the scored rows themselves; ties go to the lowest label).

    Without ``train_mask`` it is the majority-class rate of the scored rows, the best accuracy of any
    constant prediction and the reference for "nothing learned"; with it, the accuracy of always
    predicting the training majority label, at most the former (see :doc:`/concepts/diagnostics`).

    Args:
      y: (N,) integer labels, every one in ``[0, n_classes)``.
      mask: optional (N,) bool, the scored rows (default: all).
      n_classes: C >= 2 (static).
      train_mask: optional (N,) bool, the rows whose majority label is predicted.

    Returns:
      A scalar; NaN when ``mask`` (a JAX array) selects no row.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import probes
      >>> y = np.array([0, 1, 1, 2, 1, 0])
      >>> print(f"{float(probes.chance(y, n_classes=3)):.3f}")   # label 1 holds 3 of 6 rows
      0.500
    """
    y = jnp.asarray(y)
    w = _weights(mask, y.shape[0], jnp.float32)
    ref = w if train_mask is None else _weights(train_mask, y.shape[0], jnp.float32)
    label = jnp.argmax(jax.ops.segment_sum(ref, y, num_segments=n_classes))
    n = jnp.sum(w)
    return jnp.where(n > 0, jnp.sum(w * (y == label)) / jnp.maximum(n, 1.0), jnp.nan)
