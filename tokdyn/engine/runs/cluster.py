"""Token dynamics on Gaussian clusters, scored against the true clusters: :class:`ClusterRun`, the
published token-dynamics study's run, and the rules it knows by name (:data:`PACKAGE_RULES`)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks, data, dynamics, metrics, refinement
from tokdyn.dynamics import pallas
from tokdyn.engine.runs._fields import CallSignature, check_axes, host_hparams, moved_into, rule_knob_checks, whole_in
from tokdyn.engine.runs.structure import RunStructure


KERNELS = ("auto", "xla", "pallas", "fused")  # ClusterRun.kernel ("fused": the former name of "pallas")


_OWN_CONDITIONS = ("noise", "n_clusters", "method", "draw", "key")
BUILTIN_RULES = (dynamics.BUILTIN, dynamics.BUILTIN_ORIGIN)
"""The built-in rule in its two forms (:data:`tokdyn.dynamics.MASS_ANCHORS`): the rules whose knobs
are :class:`tokdyn.dynamics.Hparams`, whose defaults are a :class:`ClusterRun`'s ``hparams``."""
PACKAGE_RULES = {"refinement": refinement.REFINEMENT}
"""The package's update rules beyond the built-in rule's settings (:data:`tokdyn.dynamics.METHODS`),
by the method name the token-dynamics study (``--methods``) and sweep (``--method``) know them by
without a rule module, each run at its ``hparams``: ``"refinement"``,
:data:`tokdyn.refinement.REFINEMENT`."""


@moved_into("hparams", dynamics.Hparams, "dynamics")
@dataclasses.dataclass(frozen=True)
class ClusterRun(RunStructure):
    """One run of token dynamics on Gaussian clusters, as a sweepable ``fn(key, **condition)``.

    Calling it, ``run(key, temperature=..., momentum=..., ..., noise=..., n_clusters=...,
    method=...)``, draws the data from ``key`` (cluster k depends only on (key, k), see
    :func:`tokdyn.data.gaussian_clusters`), starts the tokens by ``init`` (Forgy reuses the data's
    random bits), runs the dynamics and returns a dict of scalars: ari, nmi, sse (float32), steps
    (int32), converged (bool), collapsed (float32: 1.0 or 0.0). The conditions (each a float32
    scalar, traced) are the rule's knobs (:attr:`knobs`), ``noise``, ``n_clusters`` and ``method``
    (an index into ``methods``; an explicit condition overrides the method's value). ``draw``: the
    key's :meth:`draw`, when the caller has it already (the sweep engine shares one per seed); the
    result is the same either way.

    A run whose final tokens are not all finite reports NaN for ari, nmi, sse and collapsed (its
    steps and converged are kept): a condition traced out of its range (a knob, see
    :class:`tokdyn.dynamics.Hparams`; a cluster count outside ``[1, max_clusters]``), which a host
    value never is (refused before tracing), or dynamics that overflow. Summaries must treat NaN as
    "no result" (:meth:`~tokdyn.engine.sweep.SweepResult.nan_counts`).

    Attributes:
      max_clusters: the padded cluster count M (``n_clusters`` conditions lie in ``[1, M]``).
      hparams: the defaults of the built-in rule's knobs (a :class:`tokdyn.dynamics.Hparams` of
        Python numbers, checked by :meth:`~tokdyn.dynamics.Hparams.validate`; default
        ``Hparams()``): ``ClusterRun(hparams=dynamics.Hparams(temperature=0.5))`` runs at
        temperature 0.5 wherever no condition and no method says otherwise. With another rule it
        must keep its default (that rule's defaults are ``rule.hparams``).
      noise: the default cluster standard deviation.
      n_clusters: the default cluster count K.
      methods: rows of the rule's knob values in :attr:`knobs` order (for the built-in rule
        :meth:`tokdyn.dynamics.Hparams.row`; shorter rows take the defaults for the rest).
      rule: the update rule (a :class:`tokdyn.dynamics.Rule`; default the built-in
        :data:`tokdyn.dynamics.BUILTIN`). Its knobs are the conditions: for the built-in rule (or
        :data:`~tokdyn.dynamics.BUILTIN_ORIGIN`) the fields of :class:`tokdyn.dynamics.Hparams`, for
        any other the field names of its ``hparams``. Its key is ``fold_in(key, LANGEVIN_STREAM)``;
        a call of the built-in rule in which no value can make ``langevin`` positive
        (:meth:`deterministic`) hands it no key (the same results: a ``langevin`` of 0 adds no
        kick). A user's rule sees the same data and initial tokens as the built-in rule for the
        same key, so runs of the two under common random numbers are paired.
      kernel: the program that runs the rule (a backend it has, :meth:`tokdyn.dynamics.Rule.backend`),
        never its numbers beyond float32 rounding: ``"xla"`` (:func:`tokdyn.dynamics.run`, every
        rule), ``"pallas"`` (:func:`tokdyn.dynamics.pallas.run`, one kernel per run: the built-in
        rules' backend; ``"fused"`` is its former name) or ``"auto"`` (the default: the Pallas
        kernel where the rule has it and it is the faster form, a GPU, see :attr:`backend`;
        :func:`tokdyn.dynamics.run` elsewhere).

    The structure fields (``n_tokens``, ``dim``, ...) are :class:`RunStructure`'s.
    """

    max_clusters: int = 5
    hparams: dynamics.Hparams = dynamics.Hparams()
    noise: float = 0.6
    n_clusters: int = 4
    methods: tuple = ()
    rule: dynamics.Rule = dynamics.BUILTIN
    kernel: str = "auto"

    RULE = dynamics.FIELDS  # the built-in rule's knobs, in the column order of a ``methods`` row
    AXES = dynamics.FIELDS + ("noise", "n_clusters", "method")  # the conditions with the built-in rule
    LANGEVIN_STREAM = 0x7FFFFFFE  # the rule's key is fold_in(key, LANGEVIN_STREAM)
    INIT_STREAM = 0x7FFFFFFF  # the key of a normal / data_mean initialisation
    __signature__ = CallSignature()

    def __post_init__(self):
        if not isinstance(self.rule, dynamics.Rule):
            hint = " (wrap your functions as tokdyn.dynamics.Rule(init=..., step=...))" if callable(self.rule) else ""
            raise TypeError(
                f"rule must be a tokdyn.dynamics.Rule, got {self.rule!r} of type {type(self.rule).__name__}{hint}"
            )
        if all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1
            for v in (self.max_clusters, self.n_tokens, self.dim, self.points_per_cluster)
        ):
            self.check_size(self.max_clusters)  # before any compile (other fields: validate_structure)
        names = self.knobs  # TypeError if the rule's hparams do not name its knobs
        clash = [n for n in names if n in _OWN_CONDITIONS]
        if clash:
            raise ValueError(
                f"rule {self.rule.name!r} has knobs named {clash}, which are ClusterRun's own "
                f"conditions {list(_OWN_CONDITIONS)}: rename them"
            )
        object.__setattr__(
            self,
            "hparams",
            host_hparams("hparams", self.hparams, dynamics.Hparams, "tokdyn.dynamics", "run(key, temperature=...)"),
        )
        if self.rule not in BUILTIN_RULES:
            changed = [f for f in dynamics.FIELDS if getattr(self.hparams, f) != getattr(dynamics.Hparams(), f)]
            if changed:
                raise ValueError(
                    f"hparams sets {changed}, knobs of the built-in rule; rule {self.rule.name!r} has the "
                    f"knobs {list(names)}, whose defaults are its hparams (dataclasses.replace(rule, "
                    f"hparams=...))"
                )
        object.__setattr__(self, "methods", self._checked_methods(names))
        self._check_kernel()

    def _checked_methods(self, names: tuple) -> tuple:
        """``methods`` as a tuple of tuples, each row at most one number per knob of ``names``."""
        if not isinstance(self.methods, (tuple, list)):
            raise TypeError(
                f"methods must be a tuple of rows of the rule's knob values (numbers in the order "
                f"{list(names)}), got {self.methods!r}"
            )
        rows = []
        for row in self.methods:
            if (
                not isinstance(row, (tuple, list))
                or len(row) > len(names)
                or not all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in row)
            ):
                raise TypeError(
                    f"methods must be a tuple of rows of the rule's knob values: at most {len(names)} "
                    f"numbers in the order {list(names)} (an update rule of your own is passed as "
                    f"rule=, its settings as rows), got the row {row!r}"
                )
            rows.append(tuple(row))
        return tuple(rows)

    def _check_kernel(self) -> None:
        """Refuse a ``kernel`` that is unknown, or the Pallas kernel for a rule or size it cannot run."""
        _checks.choice("kernel", self.kernel, KERNELS)
        if self.kernel in ("pallas", "fused") and "pallas" not in self.rule.backend_names:
            raise ValueError(
                f"kernel={self.kernel!r}: the Pallas kernel runs the built-in rule only (the rules whose "
                f"backends include 'pallas'), got rule {self.rule.name!r} with backends "
                f"{list(self.rule.backend_names)}: use kernel='xla' or 'auto'"
            )
        if (
            self.kernel in ("pallas", "fused")
            and isinstance(self.n_tokens, int)
            and isinstance(self.dim, int)
            and self.n_tokens * self.dim > pallas.MAX_TOKEN_COORDS
        ):
            raise ValueError(
                f"kernel={self.kernel!r} keeps n_tokens * dim = {self.n_tokens * self.dim} token coordinates in "
                f"registers, at most {pallas.MAX_TOKEN_COORDS}: use kernel='xla' or 'auto'"
            )

    @property
    def backend(self) -> str:
        """The backend of the rule a call runs: ``"pallas"`` (:func:`tokdyn.dynamics.pallas.run`) for
        ``kernel="pallas"`` (or ``"fused"``), or ``"auto"`` with a rule that has that backend, a size
        the kernel holds and a JAX backend where it is the faster form
        (:func:`tokdyn.dynamics.pallas.preferred`: GPUs), decided when the run is traced; ``"xla"``
        (:func:`tokdyn.dynamics.run`) otherwise."""
        if self.kernel != "auto":
            return "pallas" if self.kernel in ("pallas", "fused") else "xla"
        fits = (
            "pallas" in self.rule.backend_names
            and pallas.preferred()
            and self.n_tokens * self.dim <= pallas.MAX_TOKEN_COORDS
            and self.max_clusters * self.points_per_cluster <= pallas.MAX_POINTS
        )
        return "pallas" if fits else "xla"

    @property
    def uses_fused(self) -> bool:
        """Whether a call runs the Pallas kernel: ``backend == "pallas"`` (the former name)."""
        return self.backend == "pallas"

    @property
    def knobs(self) -> tuple:
        """The names of the rule's knobs: this run's rule conditions, the columns of a ``methods`` row."""
        return dynamics.FIELDS if self.rule == dynamics.BUILTIN else self.rule.knobs

    @property
    def conditions(self) -> tuple:
        """Every condition this run takes (the axes a sweep of it may have)."""
        return self.knobs + ("noise", "n_clusters", "method")

    def check_conditions(self, axes: dict) -> None:
        """Refuse, before anything is traced, a condition out of its range in ``axes`` (``{name: 1-D
        numbers}``, a :class:`~tokdyn.engine.sweep.Grid`'s): the rule's knobs (the built-in rule's by
        :meth:`tokdyn.dynamics.Hparams.validate`, another rule's by its ``check``), ``noise >= 0``,
        ``n_clusters`` a whole number in ``[1, max_clusters]`` and ``method`` an index of a
        ``methods`` row. :func:`tokdyn.engine.sweep.run` calls it, so a sweep never runs a host value
        that a traced one would turn into NaN rows. ``ValueError`` naming the axis and the value."""
        checks = rule_knob_checks(self.rule, self.knobs)
        checks["noise"] = lambda v: _checks.real("noise", v, low=0.0)
        checks["n_clusters"] = whole_in("n_clusters", 1, self.max_clusters, "clusters, at most max_clusters")
        checks["method"] = whole_in("method", 0, len(self.methods) - 1, "an index of a methods row")
        if not self.methods and "method" in axes:
            raise ValueError("axis 'method' indexes the rows of ClusterRun.methods, which has none: give methods")
        check_axes(axes, checks)

    def defaults(self) -> tuple:
        """The default value of each knob, in :attr:`knobs` order: ``hparams`` for the built-in rule,
        ``rule.hparams`` for any other."""
        if self.rule in BUILTIN_RULES:
            return self.hparams.row()
        return tuple(jax.tree_util.tree_leaves(self.rule.hparams))

    def deterministic(self, conditions=()) -> bool:
        """Whether it is known before tracing that a call given the conditions named ``conditions``
        draws no random numbers in its rule: the built-in rule, ``langevin`` not among them, and a
        ``langevin`` of 0 (or below: no kick) in ``hparams`` and in every ``methods`` row. Such a
        call hands the rule no key (its results are those with the key: a ``langevin`` of 0 adds no
        kick), so the Langevin draws of every step, which a traced ``langevin`` makes otherwise
        (under ``vmap`` the untaken branch of the kick is computed too), are not made at all. Any
        other rule may use its key in any way: False."""
        if self.rule not in BUILTIN_RULES or "langevin" in conditions:
            return False
        i = dynamics.FIELDS.index("langevin")
        default = self.hparams.langevin
        return default <= 0 and all((row[i] if len(row) > i else default) <= 0 for row in self.methods)

    def __repr__(self) -> str:  # the dataclass's repr, with ``rule`` only when it is not the built-in one
        fields = [f.name for f in dataclasses.fields(self) if f.name != "rule" or self.rule != dynamics.BUILTIN]
        return f"{type(self).__qualname__}({', '.join(f'{n}={getattr(self, n)!r}' for n in fields)})"

    def draw(self, key) -> data.ClusterDraw:
        """The random part of a run's data (:func:`tokdyn.data.cluster_draw`): it depends on the
        key alone, so under common random numbers every condition of a seed shares it. The sweep
        engine calls it once per seed and passes it to each run as ``draw=``."""
        return data.cluster_draw(
            key,
            max_clusters=self.max_clusters,
            points_per_cluster=self.points_per_cluster,
            dim=self.dim,
            centers=self.centers,
        )

    def __call__(self, key, *, noise=None, n_clusters=None, method=None, draw=None, **knobs):
        names = self.knobs
        unknown = [k for k in knobs if k not in names]
        if unknown:
            raise TypeError(
                f"ClusterRun got unknown conditions {unknown}: it takes its rule's knobs {list(names)} "
                f"and noise, n_clusters, method"
            )
        f32 = jnp.float32
        hparams = self._hparams(method, knobs)
        noise = f32(self.noise if noise is None else noise)
        n_clusters = jnp.int32(self.n_clusters if n_clusters is None else n_clusters)
        c = data.clusters_from_draw(
            self.draw(key) if draw is None else draw, n_clusters, noise=noise, center_box=f32(self.center_box)
        )
        t0 = self._initial_tokens(key, c)
        given = [k for k, v in knobs.items() if v is not None]
        rule_key = None if self.deterministic(given) else jax.random.fold_in(key, self.LANGEVIN_STREAM)
        if self.backend == "pallas":
            r = self.rule.backend("pallas")(
                c.x, t0, hparams, mask=c.mask, n_steps=self.n_steps, tol=f32(self.tol), key=rule_key
            )
        else:
            r = dynamics.run(
                c.x,
                t0,
                hparams,
                rule=self.rule,
                mask=c.mask,
                n_steps=jnp.int32(self.n_steps),
                tol=f32(self.tol),
                key=rule_key,
            )
        return self._scores(c, r, n_clusters)

    def _hparams(self, method, knobs: dict):
        """The rule's knobs of one call: the defaults, then the ``method`` row, then the conditions."""
        f32 = jnp.float32
        base = self.defaults()
        if method is not None:
            table = [tuple(row) + base[len(row) :] for row in self.methods]  # short rows: defaults after
            base = tuple(jnp.asarray(table, f32)[method])  # a row of the method table
        leaves = [f32(b) if knobs.get(f) is None else f32(knobs[f]) for f, b in zip(self.knobs, base)]
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(self.rule.hparams), leaves)

    def _initial_tokens(self, key, c: data.Clusters):
        """The tokens a run starts from, by ``init``."""
        if self.init == "data":  # reuse the data's random bits: one threefry call per run
            return dynamics.forgy(c.x, c.init_noise, c.mask, self.n_tokens)
        return dynamics.init_tokens(
            jax.random.fold_in(key, self.INIT_STREAM),
            self.n_tokens,
            self.dim,
            method=self.init,
            x=c.x,
            mask=c.mask,
            scale=self.init_scale,
        )

    def _scores(self, c: data.Clusters, r: dynamics.Result, n_clusters) -> dict:
        """A call's results: the run's labels scored against the true clusters."""
        labels_true = jnp.where(c.mask, c.labels, 0)
        labels_pred = jnp.where(c.mask, r.labels, 0)  # -1 stays on valid points without a finite distance
        kw = dict(n_true=self.max_clusters, n_pred=self.n_tokens)
        # a run whose tokens are not finite (a traced knob or cluster count out of range, a blow-up)
        # has no score: NaN for every metric, never 0.0 or a 'collapsed' verdict (one (T, D) test per run)
        finite = jnp.all(jnp.isfinite(r.tokens))
        nan = jnp.float32(jnp.nan)
        collapsed = metrics.collapsed(labels_pred, self.n_tokens, n_clusters, c.mask)
        return dict(
            ari=jnp.where(finite, metrics.ari(labels_true, labels_pred, c.mask, **kw), nan),
            nmi=jnp.where(finite, metrics.nmi(labels_true, labels_pred, c.mask, **kw), nan),
            sse=jnp.where(finite, metrics.sse(c.x, labels_pred, r.tokens, c.mask), nan),
            steps=r.steps,
            converged=r.converged,
            collapsed=jnp.where(finite, collapsed.astype(jnp.float32), nan),
        )
