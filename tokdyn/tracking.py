"""Token dynamics through time: tokens that follow the objects of a sequence of frames.

A sequence is ``frames`` (F, N, D) with a ``mask`` (F, N) (per-frame pixel features of a video,
the points of :func:`tokdyn.data.moving_clusters`, or anything of that shape). :func:`track` runs
an update rule (default :data:`tokdyn.dynamics.BUILTIN`) on every frame as one ``lax.scan``;
frame 0 starts from :func:`tokdyn.dynamics.init_tokens`, every later frame from a *prediction*
chosen by the traced knob ``predictor`` of :class:`Hparams` (an index into :data:`PREDICTORS`:
``reinit``, the baseline; ``carry``; ``velocity``; ``inertia``), so a sweep compares them without
recompiling. A carried prediction can be pushed apart first (``separation``, :func:`separate`).
Token ``j`` of every frame is one track; the ``reinit`` baseline gets its identities by
association (:func:`track_labels` with ``match=True``).

:func:`track` is jitted and vmappable; with ``fixed=True`` it is reverse-mode differentiable in
``frames``, ``rule_hparams`` and the float knobs, with ``fixed=False`` in forward mode only.

What each predictor does, the bounded push, empty frames, keys, the transformations and why
matching is the fair baseline: :doc:`/concepts/tracking`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks, assignment, dynamics

__all__ = [
    "PREDICTORS",
    "Hparams",
    "Track",
    "track",
    "track_labels",
    "separate",
    "frame_keys",
    "CarriedKnobs",
    "carried_rule",
]

PREDICTORS: dict[str, int] = {"reinit": 0, "carry": 1, "velocity": 2, "inertia": 3}
"""The predictors by name: the values of :attr:`Hparams.predictor` (:doc:`/concepts/tracking` says what each does)."""

REINIT, CARRY, VELOCITY, INERTIA = (PREDICTORS[k] for k in ("reinit", "carry", "velocity", "inertia"))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Hparams:
    """The temporal knobs of :func:`track`; every leaf is traced (one value per run, shape ``()``),
    so a sweep over predictors and their knobs shares one compilation.

    Attributes:
      predictor: which prediction starts each frame after the first, an index into
        :data:`PREDICTORS`: 0 reinit, 1 carry, 2 velocity, 3 inertia (an int, or a float holding a
        whole number, as a sweep's axis may give it).
      decay: inertia's share of the rule's carried state, in [0, 1] (used by ``inertia`` only): 0 =
        the rule's fresh state (= carry), 1 = the last frame's final state as it was.
      separation: the minimum distance enforced between carried tokens before each frame
        (:func:`separate`, in data units), >= 0; 0 = off. Not applied to ``reinit``.

    Host values out of range are a ``ValueError`` naming the field (:meth:`validate`); with a traced
    one out of range (a predictor that is not a whole number in [0, 3], ``decay`` outside [0, 1], a
    negative ``separation``, NaN or infinity) every frame starts at NaN tokens: labels -1, NaN scores.
    """

    predictor: Any = CARRY
    decay: Any = 1.0
    separation: Any = 0.0

    def validate(self) -> "Hparams":
        """Check the fields that are host data (``ValueError`` naming the field), and that every leaf
        is a scalar (shapes: checked for traced values too). Returns ``self``."""
        for name in ("predictor", "decay", "separation"):
            value = getattr(self, name)
            if np.shape(value) != ():
                raise ValueError(
                    f"hparams.{name} must be a scalar (one value per run), got shape {np.shape(value)}; "
                    "to batch runs, jax.vmap over Hparams with a leading axis"
                )
            if _checks.dtype_of(value).kind not in "iuf" and not isinstance(value, (int, float)):
                raise TypeError(f"hparams.{name} must be a real number, got {value!r}")
        _checks.real("predictor", self.predictor, low=0, high=len(PREDICTORS) - 1)
        _checks.whole("predictor", self.predictor, f"an index into tracking.PREDICTORS {PREDICTORS}")
        _checks.real("decay", self.decay, low=0.0, high=1.0)
        _checks.real("separation", self.separation, low=0.0)
        return self

    def in_range(self) -> jax.Array:
        """Scalar bool (traceable): every knob is finite and in its range (see the attributes)."""
        p = jnp.asarray(self.predictor)
        ok = (p >= 0) & (p <= len(PREDICTORS) - 1) & (p == jnp.round(p))
        ok = ok & (self.decay >= 0) & (self.decay <= 1) & (self.separation >= 0) & jnp.isfinite(self.separation)
        return jnp.asarray(ok)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Track:
    """Outcome of :func:`track`, one entry per frame.

    Attributes:
      tokens: (F, T, D) each frame's final tokens (NaN before the first frame with points; on an
        empty frame, the carried tokens).
      start: (F, T, D) where each frame's run started: the prediction (frame 0 and ``reinit``: the
        drawn tokens).
      labels: (F, N) int32 the nearest final token of every point (-1 on padded points).
      steps: (F,) int32 steps taken in each frame (0 on an empty frame).
      converged: (F,) bool whether each frame's run converged (True on an empty frame).
      displacement: (F, T, D) the frame's movement of every token, ``tokens[f] - tokens[f-1]``
        (tokens of the last frame with points); 0 on the first frame with points and on empty frames.
        Under ``reinit`` token ``j`` of two frames is not one object, so this is not a motion.
    """

    tokens: jax.Array
    start: jax.Array
    labels: jax.Array
    steps: jax.Array
    converged: jax.Array
    displacement: jax.Array


def frame_keys(key, frame):
    """``(init_key, rule_key)`` of frame ``frame`` (an int or traced int32) of a :func:`track` run with
    ``key``: ``fold_in(fold_in(key, frame), 0)`` draws the frame's initial tokens (frame 0, and every
    frame under ``reinit``) and ``fold_in(fold_in(key, frame), 1)`` is handed to the rule."""
    k = jax.random.fold_in(key, frame)
    return jax.random.fold_in(k, 0), jax.random.fold_in(k, 1)


def _check_separate(tokens, separation):
    _checks.finite_array("tokens", tokens, ndim=2)
    if np.shape(tokens)[0] < 1:
        raise ValueError(f"tokens must hold at least one token, got shape {np.shape(tokens)}")
    if np.shape(separation) != ():
        raise ValueError(f"separation must be a scalar, got shape {np.shape(separation)}")
    _checks.real("separation", separation, low=0.0)
    return _checks.host_arrays(tokens=tokens)


def _separate(tokens, separation):
    n, d = tokens.shape
    diff = tokens[:, None, :] - tokens[None, :, :]  # (T, T, D): t_j - t_k
    d2 = jnp.sum(diff * diff, axis=-1)  # (T, T)
    apart = d2 > 0
    dist = jnp.where(apart, jnp.sqrt(jnp.where(apart, d2, 1.0)), 0.0)  # safe at 0 (also for derivatives)
    # coincident tokens: apart along the first axis, the lower index toward -e_0
    idx = jnp.arange(n)
    order = jnp.where(idx[:, None] > idx[None, :], 1.0, -1.0).astype(tokens.dtype)  # (T, T)
    e0 = jnp.zeros((d,), tokens.dtype).at[0].set(1.0)
    unit = jnp.where(apart[..., None], diff / jnp.where(apart, dist, 1.0)[..., None], order[..., None] * e0)
    close = (dist < separation) & ~jnp.eye(n, dtype=bool)
    push = jnp.where(close, 0.5 * (separation - dist), 0.0)  # (T, T): each token takes half the shortfall
    return tokens + jnp.sum(push[..., None] * unit, axis=1)


@_checks.checked_jit(_check_separate)
def separate(tokens, separation):
    """One Jacobi pass of a minimum-separation push: every pair of tokens closer than ``separation``
    moves apart along its difference, each by half the shortfall, all pairs at once.

    Args:
      tokens: (T, D) tokens.
      separation: the minimum distance r >= 0 (data units; traced); 0 leaves the tokens as they are.

    Returns:
      (T, D): ``t_j + sum_{k: |t_j - t_k| < r} (r - |t_j - t_k|) / 2 * (t_j - t_k) / |t_j - t_k|``.
      Exactly coincident tokens are pushed along the first coordinate axis, the lower index toward
      -e_0 (a fixed, deterministic choice). After the pass, a pair that was the only close pair of
      both its tokens is exactly ``r`` apart; where several pairs are close the pushes add up (one
      pass, not a projection). Differentiable except at exactly coincident tokens.
    """
    return _separate(tokens, jnp.asarray(separation, tokens.dtype))


# ---------------------------------------------------------------------------------------------- the carried rule


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CarriedKnobs:
    """The knobs of a rule run with a carried state (:func:`carried_rule`): the rule's own
    ``hparams``, the carried ``state`` (the rule's state structure) and its ``weight`` (a scalar)."""

    hparams: Any
    state: Any
    weight: Any


def _tokens_leaf(state):
    return state if isinstance(state, jax.Array) else state.tokens


def _blend(fresh, carried, weight):
    """``fresh`` with every floating leaf but its tokens moved toward ``carried`` by ``weight``."""
    leaves, treedef = jax.tree_util.tree_flatten(fresh)
    tokens = _tokens_leaf(fresh)
    others = jax.tree_util.tree_leaves(carried)
    out = []
    for leaf, prev in zip(leaves, others):
        if leaf is tokens or not jnp.issubdtype(leaf.dtype, jnp.floating):
            out.append(leaf)
        else:
            w = jnp.asarray(weight, leaf.dtype)
            out.append(jnp.where(w != 0, leaf + w * (prev.astype(leaf.dtype) - leaf), leaf))
    return jax.tree_util.tree_unflatten(treedef, out)


@functools.lru_cache(maxsize=None)
def carried_rule(rule: dynamics.Rule, state_tree) -> dynamics.Rule:
    """``rule`` started from a carried state: a :class:`tokdyn.dynamics.Rule` whose knobs are
    :class:`CarriedKnobs` ``(hparams, state, weight)``. Its ``init`` is ``rule.init`` with every
    floating leaf of the state but the tokens moved from its fresh value toward ``state`` by
    ``weight`` (``weight = 0``: exactly ``rule.init``); its step, movement, stopping and
    temperature are ``rule``'s with ``hparams``, and it is centred when ``rule`` is
    (``tokdyn.dynamics.Rule.centred``). ``state_tree``: the treedef of ``rule``'s state.
    Cached, so equal arguments give the same rule (one compilation)."""
    default = CarriedKnobs(rule.hparams, jax.tree_util.tree_unflatten(state_tree, [0.0] * state_tree.num_leaves), 0.0)

    def init(points, tokens, hparams):
        return _blend(rule.init(points, tokens, hparams.hparams), hparams.state, hparams.weight)

    def step(state, points, hparams, step, key):
        return rule.step(state, points, hparams.hparams, step, key)

    hooks = {}
    if rule.movement is not None:
        hooks["movement"] = rule.movement
    if rule.may_stop is not None:
        hooks["may_stop"] = lambda hparams, step: rule.may_stop(hparams.hparams, step)
    if rule.temperature is not None:
        hooks["temperature"] = lambda hparams, step: rule.temperature(hparams.hparams, step)
    # centred as rule is: the blend moves only leaves that do not move with a translation (the tokens
    # are not blended), so the carried rule commutes with translations when rule does
    return dynamics.Rule(
        init, step, hparams=default, name=f"{rule.name or 'rule'}+carried", centred=rule.centred, **hooks
    )


# ---------------------------------------------------------------------------------------------- tracking


def _float(x):
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating) and jnp.finfo(x.dtype).bits >= 32:
        return x
    return x.astype(jnp.float32)


def _check_track(key, frames, hparams, rule_hparams, n_tokens, rule, mask, init, init_scale, n_steps, tol, fixed):
    _checks.prng_key("key", key)
    if _checks.dtype_of(frames) == jnp.dtype(jnp.bfloat16):
        if np.ndim(frames) != 3:
            raise ValueError(f"frames must have 3 dimensions (F, N, D), got shape {np.shape(frames)}")
    else:
        _checks.finite_array("frames", frames, ndim=3)
    n_frames, n_points, dim = np.shape(frames)
    if min(n_frames, n_points, dim) < 1:
        raise ValueError(f"frames must have shape (F, N, D) with F, N, D >= 1, got {np.shape(frames)}")
    if mask is not None:
        if np.shape(mask) != (n_frames, n_points):
            raise ValueError(
                f"mask must have shape (F, N) = {(n_frames, n_points)} (one entry per point of each "
                f"frame), got {np.shape(mask)}"
            )
        if _checks.dtype_of(mask) != np.bool_:
            raise TypeError(f"mask must be boolean, got dtype {_checks.dtype_of(mask)}")
    _checks.positive_int("n_tokens", n_tokens)
    _checks.positive_int("n_steps", n_steps)
    _checks.choice("init", init, dynamics.INIT_METHODS)
    _checks.real("init_scale", init_scale, low=0.0)
    _checks.real("tol", tol, low=0.0)
    if not isinstance(fixed, bool):
        raise TypeError(f"fixed must be a bool (static), got {fixed!r} of type {type(fixed).__name__}")
    if init in ("data", "kmeans++") and n_tokens > n_points:
        raise ValueError(f"n_tokens={n_tokens} exceeds the number of points per frame N={n_points} for init {init!r}")
    changed = {}
    if hparams is None:
        hparams = changed["hparams"] = Hparams()
    if not isinstance(hparams, Hparams):
        raise TypeError(
            f"hparams must be a tokdyn.tracking.Hparams (the temporal knobs; the rule's knobs are "
            f"rule_hparams), got {type(hparams).__name__}"
        )
    hparams.validate()
    if _checks.on_host(hparams):  # one compilation for every host value (Python ints and floats alike)
        changed["hparams"] = Hparams(
            predictor=np.int32(hparams.predictor),
            decay=np.float32(hparams.decay),
            separation=np.float32(hparams.separation),
        )
    if not isinstance(rule, dynamics.Rule):
        raise TypeError(f"rule must be a tokdyn.dynamics.Rule, got {rule!r} of type {type(rule).__name__}")
    if rule_hparams is None:
        rule_hparams = changed["rule_hparams"] = rule.hparams
    if jax.tree_util.tree_structure(rule_hparams) != jax.tree_util.tree_structure(rule.hparams):
        raise TypeError(
            f"rule_hparams must have the structure of rule.hparams ({type(rule.hparams).__name__}, the "
            f"knobs of rule {rule.name!r}), got {type(rule_hparams).__name__}: {rule_hparams!r}"
        )
    if rule.check is not None:
        rule.check(rule_hparams, key)
    return changed


def _frame_start(p, last, before, fresh, separation, started, m, ok):
    """``(start, carried, empty)`` of a frame: the tokens its run starts from (the predictor ``p``'s
    prediction from the last two frames' tokens, or ``fresh`` ones), whether they were carried, and
    whether the frame has no point (``m`` all False)."""
    moved = last + (last - before)  # constant velocity
    pred = jnp.where(p == VELOCITY, moved, last)
    pred = jnp.where(separation > 0, _separate(pred, separation), pred)
    carried = started & (p != REINIT)
    empty = ~jnp.any(m)
    start = jnp.where(carried, pred, fresh)
    start = jnp.where(empty, jnp.where(started, last, 0.0), start)  # a skipped frame: a cheap run, discarded
    start = jnp.where(ok, start, jnp.nan)
    return start, carried, empty


def _trim_labels(result: Track, n: int) -> Track:
    """``result`` with its labels cut back to the ``n`` points of the call (on the host and back by
    ``device_put``: an eager slice would compile one small program a length)."""
    return dataclasses.replace(result, labels=jax.device_put(np.asarray(result.labels)[:, :n]))


# Eager calls of the built-in rules on host frames are padded to a few point counts (masked out):
# one program a bucket. Other rules are called as they are.
_BUCKETS = _checks.Buckets(
    points=("frames",),
    mask="mask",
    axis=1,
    when=lambda a: a["rule"] is dynamics.BUILTIN or a["rule"] is dynamics.BUILTIN_ORIGIN,
    trim=_trim_labels,
)


@_checks.checked_jit(_check_track, static_argnames=("n_tokens", "rule", "init", "n_steps", "fixed"), buckets=_BUCKETS)
def track(
    key,
    frames,
    hparams=None,
    rule_hparams=None,
    *,
    n_tokens: int,
    rule: dynamics.Rule = dynamics.BUILTIN,
    mask=None,
    init: str = "data",
    init_scale=1.0,
    n_steps: int = 30,
    tol=1e-3,
    fixed: bool = False,
) -> Track:
    """Run an update rule on every frame of a sequence, each frame after the first starting from a
    prediction made from the frames before it (:doc:`/concepts/tracking`).

    Args:
      key: PRNG key (:func:`frame_keys` derives each frame's).
      frames: (F, N, D) points of every frame (padded rows: any finite values).
      hparams: the temporal knobs, :class:`Hparams` (traced). Default ``Hparams()``: carry.
      rule_hparams: the rule's knobs (traced; for the built-in rule a :class:`tokdyn.dynamics.Hparams`).
        Default ``rule.hparams``.
      n_tokens: T, the number of tokens (static).
      rule: the update rule (static), default :data:`tokdyn.dynamics.BUILTIN`.
      mask: optional (F, N) bool, False on padded points; a frame without a True entry is skipped.
      init: the :func:`tokdyn.dynamics.init_tokens` method by which frame 0 (and every frame under
        ``reinit``) draws its tokens from its own points (static).
      init_scale: that method's scale (traced).
      n_steps: the most steps per frame (static).
      tol: each frame's convergence threshold (traced).
      fixed: static; False: each frame is a :func:`tokdyn.dynamics.run` (early stop); True: a
        :func:`tokdyn.dynamics.run_fixed` (reverse-mode differentiable; ``n_steps`` steps per frame).

    Returns:
      :class:`Track`, one entry per frame. Frame ``f`` is ``dynamics.run(frames[f], start[f], ...,
      key=frame_keys(key, f)[1])`` with ``start[f]`` the prediction, so a one-frame sequence is a
      single run from ``init_tokens(frame_keys(key, 0)[0], ...)``.

    Host calls: with the built-in rules, NumPy frames are padded along the point axis to a power of
    two (from 32) with the mask, and the labels cut back, so sequences of many point counts compile
    one program a bucket (results as unpadded, up to float rounding: every ``init`` draws the same
    tokens from the padded points). JAX arrays, traced calls and other rules keep their shapes.
    """
    frames = _float(frames)
    n_frames, n_points, dim = frames.shape
    valid = jnp.ones((n_frames, n_points), bool) if mask is None else jnp.asarray(mask, bool)
    dtype = frames.dtype
    p = jnp.round(jnp.asarray(hparams.predictor)).astype(jnp.int32)
    ok = hparams.in_range()
    decay = jnp.asarray(hparams.decay, dtype)
    separation = jnp.asarray(hparams.separation, dtype)

    # the structure of the rule's state, and a carry of that structure to start from
    zeros = jnp.zeros((n_tokens, dim), dtype)
    state0 = rule.init(dynamics.Points.of(frames[0], valid[0]), zeros, rule_hparams)
    state0 = jax.tree_util.tree_map(jnp.zeros_like, state0)
    crule = carried_rule(rule, jax.tree_util.tree_structure(state0))
    runner = functools.partial(dynamics.run_fixed if fixed else dynamics.run, rule=crule, n_steps=n_steps, tol=tol)
    nan = jnp.full((n_tokens, dim), jnp.nan, dtype)

    def frame(carry, xs):
        last, before, state, started = carry  # (T, D), (T, D), the rule's state, ()
        f, x, m = xs
        init_key, rule_key = frame_keys(key, f)
        fresh = dynamics.init_tokens(init_key, n_tokens, dim, method=init, x=x, mask=m, scale=init_scale)
        fresh = fresh.astype(dtype)
        start, carried, empty = _frame_start(p, last, before, fresh, separation, started, m, ok)
        weight = jnp.where(carried & (p == INERTIA), decay, jnp.zeros((), dtype))
        r = runner(x, start, CarriedKnobs(rule_hparams, state, weight), mask=m, key=rule_key)
        tokens = jnp.where(empty, last, r.tokens)
        new = (
            tokens,
            jnp.where(empty, before, jnp.where(started, last, r.tokens)),
            jax.tree_util.tree_map(lambda old, nw: jnp.where(empty, old, nw), state, r.state),
            started | ~empty,
        )
        out = Track(
            tokens=tokens,
            start=jnp.where(empty, last, start),
            labels=jnp.where(empty, -1, r.labels),
            steps=jnp.where(empty, 0, r.steps).astype(jnp.int32),
            converged=empty | r.converged,
            displacement=jnp.where(empty | ~started, 0.0, r.tokens - last),
        )
        return new, out

    carry = dynamics.varying(
        (nan, nan, state0, jnp.zeros((), bool)), key, frames, valid, hparams, rule_hparams, tol, init_scale
    )
    _, out = jax.lax.scan(frame, carry, (jnp.arange(n_frames, dtype=jnp.int32), frames, valid))
    return out


# ---------------------------------------------------------------------------------------------- identities


def _check_track_labels(tokens, labels, match):
    if np.ndim(tokens) != 3 or min(np.shape(tokens)) < 1:
        raise ValueError(f"tokens must have shape (F, T, D) with F, T, D >= 1, got {np.shape(tokens)}")
    if _checks.dtype_of(tokens).kind != "f" and _checks.dtype_of(tokens) != jnp.dtype(jnp.bfloat16):
        raise TypeError(f"tokens must be floating point, got dtype {_checks.dtype_of(tokens)}")
    if np.ndim(labels) != 2 or np.shape(labels)[0] != np.shape(tokens)[0]:
        raise ValueError(
            f"labels must have shape (F, N) with F = {np.shape(tokens)[0]} (the frames of tokens), got "
            f"{np.shape(labels)}"
        )
    if _checks.dtype_of(labels).kind not in "iu":
        raise TypeError(f"labels must be integers (token indices, -1 for none), got dtype {_checks.dtype_of(labels)}")
    if not isinstance(match, bool) and np.shape(match) != ():
        raise ValueError(f"match must be a bool scalar, got shape {np.shape(match)}")


@_checks.checked_jit(_check_track_labels)
def track_labels(tokens, labels, match=True):
    """Stable ids of the points of a sequence: per-frame token indices mapped to tracks.

    Args:
      tokens: (F, T, D) each frame's tokens (``tokens`` of a :class:`Track`).
      labels: (F, N) int, the token index of every point (``labels`` of a :class:`Track`; -1 = none).
      match: bool, may be traced (``match=hparams.predictor == PREDICTORS["reinit"]`` in a sweep).
        False: token ``j`` is track ``j`` in every frame. True: frame 0's token ``j`` starts track
        ``j``, and each later frame's tokens are matched one to one to the last frame's, least total
        squared distance (:func:`tokdyn.assignment.linear_assignment`), taking their matches' tracks;
        a frame whose tokens or the last frame's are not all finite keeps the last frame's tracks.

    Returns:
      ``(ids, token_ids)``: (F, N) int32 the track of every point (-1 where ``labels`` is -1) and
      (F, T) int32 the track of every token in each frame (a permutation of ``0 .. T-1``).
    """
    tokens = _float(tokens)
    n_frames, n_tokens, _ = tokens.shape
    first = jnp.arange(n_tokens, dtype=jnp.int32)

    def step(prev, xs):
        ids_prev, t_prev = prev
        t = xs
        d2 = jnp.sum((t[:, None, :] - t_prev[None, :, :]) ** 2, axis=-1)  # (T, T): this frame's i, last frame's j
        col = assignment.linear_assignment(-d2)  # (T,); -1 in every row when a distance is not finite
        ids = jnp.where(jnp.all(col >= 0), ids_prev[jnp.maximum(col, 0)], ids_prev)
        ids = jnp.where(match, ids, first)
        return (ids, t), ids

    _, rest = jax.lax.scan(step, dynamics.varying((first, tokens[0]), tokens, match), tokens[1:])
    token_ids = jnp.concatenate([first[None], rest], axis=0)  # (F, T)
    labels = jnp.asarray(labels)
    ids = jnp.take_along_axis(token_ids, jnp.clip(labels, 0, n_tokens - 1).astype(jnp.int32), axis=1)
    return jnp.where(labels >= 0, ids, -1).astype(jnp.int32), token_ids
