"""Token dynamics through time on moving clusters, scored per frame and across frames: :class:`TrackRun`."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from tokdyn import _checks, data, dynamics, metrics, tracking
from tokdyn.engine.runs._fields import CallSignature, check_axes, host_hparams, moved_into, rule_knob_checks


_TRACK_CONDITIONS = ("predictor", "decay", "separation", "speed", "spread")


@moved_into("hparams", tracking.Hparams, "tracking")
@dataclasses.dataclass(frozen=True)
class TrackRun:
    """One run of token dynamics through time on moving clusters, as a sweepable ``fn(key, **condition)``.

    Calling it, ``run(key, predictor=..., decay=..., separation=..., speed=..., spread=...,
    temperature=..., ...)``, draws a sequence of moving clusters from ``key``
    (:func:`tokdyn.data.moving_clusters`: ``n_frames`` frames of ``n_clusters`` Gaussian clusters
    moving at constant velocity, two crossing each other and one leaving the view), tracks it with
    :func:`tokdyn.tracking.track` (the rule's key: ``fold_in(key, TRACK_STREAM)``) and returns:

    * ``ari``: (F,) float32 each frame's ARI against the true clusters (NaN on a frame without
      valid points);
    * ``mean_ari``: the mean of ``ari`` over the frames with points;
    * ``identity``: the ARI of the whole sequence, every valid point of every frame one item, with
      the token index as the id in every frame (:func:`tokdyn.tracking.track_labels` without
      matching): 1 when each token follows one cluster through every frame (and clusters are not
      split), lower when tokens swap clusters or drift between them;
    * ``identity_matched``: the same with ids chained by one-to-one matching of consecutive frames'
      tokens (``track_labels(..., match=True)``): the fair score of the ``reinit`` baseline
      (tracking by detection and association); for carried tokens it shows what matching would add;
    * ``steps``: (F,) int32 steps per frame; ``total_steps``: int32 their sum;
    * ``converged``: float32 the share of frames whose run converged.

    A run whose tokens are not all finite in some frame (a condition traced out of its range) reports
    NaN for every score. Conditions (each a float32 or int32 scalar, traced): ``predictor`` (an index
    of :data:`tokdyn.tracking.PREDICTORS`), ``decay`` and ``separation`` (:class:`tokdyn.tracking.Hparams`),
    ``speed`` and ``spread`` (the data), and the rule's knobs (:attr:`knobs`; defaults ``rule.hparams``).
    ``draw``: the key's :meth:`draw` (the sweep engine shares one per seed under common random numbers).

    Attributes:
      n_frames: frames F.
      n_clusters: clusters K.
      points_per_cluster: points per cluster and frame.
      n_tokens: tokens T.
      view: half-width of the field of view.
      init: how frame 0 (and every frame under ``reinit``) draws its tokens, a method of
        :func:`tokdyn.dynamics.init_tokens` (default ``kmeans++``: spread over the clusters).
      n_steps: the most steps per frame.
      tol: each frame's convergence threshold.
      fixed: run every frame for exactly ``n_steps`` masked steps (:func:`tokdyn.dynamics.run_fixed`).
      hparams: the defaults of the conditions ``predictor``, ``decay`` and ``separation``, a
        :class:`tokdyn.tracking.Hparams` of Python numbers (default ``Hparams()``: carry, decay 1,
        no separation), e.g. ``TrackRun(hparams=tracking.Hparams(predictor=tracking.REINIT))``.
      speed, spread: the defaults of those conditions.
      rule: the update rule (default the built-in :data:`tokdyn.dynamics.BUILTIN`).
    """

    n_frames: int = 12
    n_clusters: int = 4
    points_per_cluster: int = 50
    n_tokens: int = 4
    view: float = 10.0
    init: str = "kmeans++"
    n_steps: int = 30
    tol: float = 1e-3
    fixed: bool = False
    hparams: tracking.Hparams = tracking.Hparams()
    speed: float = 1.0
    spread: float = 0.5
    rule: dynamics.Rule = dynamics.BUILTIN

    TRACK_STREAM = 0x7FFFFFFD  # the tracking key is fold_in(key, TRACK_STREAM); the data use key itself
    __signature__ = CallSignature()

    def __post_init__(self):
        if not isinstance(self.rule, dynamics.Rule):
            raise TypeError(
                f"rule must be a tokdyn.dynamics.Rule, got {self.rule!r} of type {type(self.rule).__name__}"
            )
        for name in ("n_frames", "n_clusters", "points_per_cluster", "n_tokens", "n_steps"):
            _checks.positive_int(name, getattr(self, name))
        _checks.choice("init", self.init, dynamics.INIT_METHODS)
        _checks.real("view", self.view, low=0.0, low_open=True)
        _checks.real("tol", self.tol, low=0.0)
        if not isinstance(self.fixed, bool):
            raise TypeError(f"fixed must be a bool, got {self.fixed!r}")
        if self.init in ("data", "kmeans++") and self.n_tokens > self.n_clusters * self.points_per_cluster:
            raise ValueError(
                f"n_tokens={self.n_tokens} exceeds the points of a frame "
                f"({self.n_clusters} x {self.points_per_cluster}) for init {self.init!r}"
            )
        object.__setattr__(
            self,
            "hparams",
            host_hparams("hparams", self.hparams, tracking.Hparams, "tokdyn.tracking", "run(key, predictor=...)"),
        )
        _checks.real("speed", self.speed, low=0.0)
        _checks.real("spread", self.spread, low=0.0)
        clash = [n for n in self.knobs if n in (*_TRACK_CONDITIONS, "draw", "key")]
        if clash:
            raise ValueError(
                f"rule {self.rule.name!r} has knobs named {clash}, which are TrackRun's own conditions "
                f"{list(_TRACK_CONDITIONS)}: rename them"
            )

    @property
    def knobs(self) -> tuple:
        """The names of the rule's knobs (conditions of this run; defaults ``rule.hparams``)."""
        return dynamics.FIELDS if self.rule == dynamics.BUILTIN else self.rule.knobs

    @property
    def conditions(self) -> tuple:
        """Every condition this run takes (the axes a sweep of it may have)."""
        return _TRACK_CONDITIONS + self.knobs

    def check_conditions(self, axes: dict) -> None:
        """Refuse, before anything is traced, a condition out of its range in ``axes`` (``{name: 1-D
        numbers}``): ``predictor``, ``decay`` and ``separation`` by
        :meth:`tokdyn.tracking.Hparams.validate`, ``speed`` and ``spread >= 0``, and the rule's knobs
        (as :meth:`tokdyn.engine.runs.ClusterRun.check_conditions`). :func:`tokdyn.engine.sweep.run`
        calls it. ``ValueError`` naming the axis and the value."""
        checks = rule_knob_checks(self.rule, self.knobs)
        for name in ("predictor", "decay", "separation"):
            checks[name] = lambda v, name=name: dataclasses.replace(self.hparams, **{name: v}).validate()
        for name in ("speed", "spread"):
            checks[name] = lambda v, name=name: _checks.real(name, v, low=0.0)
        check_axes(axes, checks)

    def draw(self, key) -> data.MovingDraw:
        """The random part of a run's sequence (:func:`tokdyn.data.moving_draw`), which depends on the
        key alone: under common random numbers every condition of a seed shares it."""
        return data.moving_draw(
            key, n_frames=self.n_frames, n_clusters=self.n_clusters, points_per_cluster=self.points_per_cluster
        )

    def __call__(
        self, key, *, predictor=None, decay=None, separation=None, speed=None, spread=None, draw=None, **knobs
    ):
        unknown = [k for k in knobs if k not in self.knobs]
        if unknown:
            raise TypeError(f"TrackRun got unknown conditions {unknown}: it takes {list(self.conditions)}")
        f32 = jnp.float32
        pick = lambda value, default: f32(default) if value is None else f32(value)  # noqa: E731
        own = self.hparams
        hp = tracking.Hparams(
            predictor=jnp.int32(own.predictor) if predictor is None else predictor,
            decay=pick(decay, own.decay),
            separation=pick(separation, own.separation),
        )
        names = self.knobs
        base = jax.tree_util.tree_leaves(self.rule.hparams)
        leaves = [f32(b) if knobs.get(n) is None else f32(knobs[n]) for n, b in zip(names, base)]
        rule_hp = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(self.rule.hparams), leaves)
        seq = data.moving_from_draw(
            self.draw(key) if draw is None else draw,
            speed=pick(speed, self.speed),
            spread=pick(spread, self.spread),
            view=f32(self.view),
        )
        r = tracking.track(
            jax.random.fold_in(key, self.TRACK_STREAM),
            seq.x,
            hp,
            rule_hp,
            n_tokens=self.n_tokens,
            rule=self.rule,
            mask=seq.mask,
            init=self.init,
            n_steps=self.n_steps,
            tol=f32(self.tol),
            fixed=self.fixed,
        )
        return self._scores(seq, r)

    def _scores(self, seq: data.MovingClusters, r: tracking.Track) -> dict:
        """A call's results: each frame's labels scored against the true clusters, and the tracks'."""
        f32 = jnp.float32
        kw = dict(n_true=self.n_clusters, n_pred=self.n_tokens)
        truth = jnp.where(seq.mask, seq.labels, 0)
        pred = jnp.where(seq.mask, r.labels, 0)  # -1 stays on valid points without a finite distance
        has_points = jnp.any(seq.mask, axis=1)  # (F,)
        ari = jax.vmap(lambda t, p, m: metrics.ari(t, p, m, **kw))(truth, pred, seq.mask)  # (F,)
        ari = jnp.where(has_points, ari, jnp.nan)
        mean_ari = jnp.sum(jnp.where(has_points, ari, 0.0)) / jnp.maximum(jnp.sum(has_points), 1)
        raw, _ = tracking.track_labels(r.tokens, r.labels, False)
        matched, _ = tracking.track_labels(r.tokens, r.labels, True)
        flat = lambda a: jnp.where(seq.mask, a, 0).reshape(-1)  # noqa: E731
        identity = metrics.ari(flat(truth), flat(raw), seq.mask.reshape(-1), **kw)
        identity_matched = metrics.ari(flat(truth), flat(matched), seq.mask.reshape(-1), **kw)
        finite = jnp.all(jnp.isfinite(r.tokens) | ~has_points[:, None, None])
        nan = f32(jnp.nan)
        known = lambda v: jnp.where(finite, v, nan)  # noqa: E731
        return dict(
            ari=known(ari),
            mean_ari=known(mean_ari),
            identity=known(identity),
            identity_matched=known(identity_matched),
            steps=r.steps,
            total_steps=jnp.sum(r.steps),
            converged=jnp.mean(r.converged.astype(f32)),
        )
