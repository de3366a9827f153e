"""One run of an experiment as a sweepable function ``fn(key, **condition) -> dict of scalars``.

These are what the sweep engine (:func:`tokdyn.engine.sweep.run`) maps over a grid of conditions x
seeds, and what the studies, the ``tokdyn sweep`` command and the benchmarks share:

- :class:`ClusterRun`: token dynamics on Gaussian clusters, scored against the true clusters
  (ARI, NMI, SSE, steps, convergence, collapse): the published token-dynamics study's run.
- :class:`CollapseRun`: token dynamics on a named point cloud at a temperature given relative to
  the collapse threshold of its own data (token groups, collapse, convergence).
- :class:`TrackRun`: token dynamics through time (:mod:`tokdyn.tracking`) on a sequence of moving
  clusters, scored per frame (ARI) and across frames (identity consistency), with the predictor a
  condition.

Each is a frozen dataclass: its fields are static structure (hashable, so equal instances share
one compilation) and the defaults of every condition that is not a sweep axis; every condition
passed at call time is traced, so a sweep over any of them compiles once. :class:`ClusterRun`
runs any update rule (``rule=``, a :class:`tokdyn.dynamics.Rule`, the built-in one by default),
whose knobs are then its conditions.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks, analysis, data, dynamics, metrics, refinement, tracking
from tokdyn.dynamics import pallas


KERNELS = ("auto", "xla", "pallas", "fused")  # ClusterRun.kernel ("fused": the former name of "pallas")


@dataclasses.dataclass(frozen=True)
class RunStructure:
    """The static structure of one :class:`ClusterRun` (shapes, initialisation, stopping rule),
    shared with the study and sweep configurations built on it.

    Attributes:
      n_tokens: tokens T.
      dim: data dimension D.
      points_per_cluster: points per cluster.
      centers: centre layout, uniform | normal.
      center_box: half-width (uniform) or scale (normal) of the centre distribution.
      init: token initialisation, data (Forgy) | normal | data_mean.
      init_scale: scale of the normal and data_mean initialisations.
      n_steps: the most steps a run takes.
      tol: convergence threshold on the largest coordinate change per step.
    """

    n_tokens: int = 4
    dim: int = 4
    points_per_cluster: int = 100
    centers: str = "uniform"
    center_box: float = 10.0
    init: str = "data"
    init_scale: float = 1.0
    n_steps: int = 30
    tol: float = 1e-3

    def validate_structure(self, min_clusters: int, max_clusters: int | None = None) -> None:
        """Check the structure fields; ``min_clusters``: the smallest cluster count it will see,
        ``max_clusters``: the largest (the padded size of the data; default ``min_clusters``).
        Sizes that no run could hold (:meth:`check_size`) are refused here, before any compile."""
        _checks.positive_int("n_tokens", self.n_tokens)
        _checks.positive_int("dim", self.dim)
        _checks.positive_int("points_per_cluster", self.points_per_cluster)
        _checks.positive_int("n_steps", self.n_steps)
        _checks.real("tol", self.tol, low=0.0)
        _checks.real("center_box", self.center_box, low=0.0)
        _checks.real("init_scale", self.init_scale, low=0.0)
        _checks.choice("centers", self.centers, data.CENTER_LAYOUTS)
        _checks.choice("init", self.init, dynamics.INIT_METHODS)
        if self.init == "data" and self.n_tokens > min_clusters * self.points_per_cluster:
            raise ValueError(
                f"n_tokens={self.n_tokens} exceeds the smallest dataset "
                f"({min_clusters} x {self.points_per_cluster} points) for init 'data'"
            )
        self.check_size(max(min_clusters, max_clusters or min_clusters))

    def check_size(self, max_clusters: int) -> None:
        """Refuse sizes that one run cannot hold, with a ``ValueError`` naming the option to reduce
        (``points_per_cluster``, ``dim`` or ``n_tokens``: the one furthest above its default), its
        value and the largest value that fits with the others as given. With ``N = max_clusters *
        points_per_cluster`` points, ``D = dim``, ``T = n_tokens``:

        * every per-run array must fit XLA's 32-bit element indexing: ``N (D + 1)`` (the points
          with their column of ones, and the random bits they come from), ``T N`` (distances and
          assignments), ``T^2 D`` (the pairwise token differences of the repulsion) at most
          ``2**31 - 1`` elements (:data:`MAX_ELEMENTS`);
        * the working set of one run, estimated as ``4 bytes x (6 N (D + 1) + 6 T N + 2 T^2 (D + 1))``,
          at most :data:`MAX_RUN_BYTES` (1 GiB): a sweep holds many runs at once.

        Pure arithmetic on the structure fields: nothing is traced or compiled."""
        sizes = dict(n_tokens=self.n_tokens, dim=self.dim, points_per_cluster=self.points_per_cluster)
        problem = _size_problem(max_clusters, **sizes)
        if problem is None:
            return
        defaults = {f.name: f.default for f in dataclasses.fields(RunStructure) if f.name in sizes}
        name = max(sizes, key=lambda k: sizes[k] / defaults[k])  # the option furthest above its default
        lo, hi = 0, sizes[name]  # the largest value of that option that fits: lo (0 if none does)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if _size_problem(max_clusters, **{**sizes, name: mid}) is None:
                lo = mid
            else:
                hi = mid - 1
        fit = (
            f"with the other sizes as given, {name} <= {lo} fits"
            if lo >= 1
            else f"no value of {name} fits with the other sizes as given; reduce them too"
        )
        raise ValueError(
            f"{name}={sizes[name]} is too large: one run of {max_clusters} x {self.points_per_cluster} "
            f"points in dim={self.dim} with n_tokens={self.n_tokens} {problem}; {fit}"
        )

    def structure(self) -> dict:
        """The structure fields, floats as Python floats (a stable repr: the compilation key)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(RunStructure)}
        return {k: float(v) if k in ("center_box", "init_scale", "tol") else v for k, v in out.items()}


MAX_ELEMENTS = 2**31 - 1  # XLA's 32-bit element indexing: the most elements of one array
MAX_RUN_BYTES = 2**30  # the most working memory of one run (RunStructure.check_size)


def _size_problem(max_clusters: int, *, n_tokens: int, dim: int, points_per_cluster: int) -> str | None:
    """What is wrong with one run of these sizes (a phrase for a message), or None when it fits."""
    n, d, t = max_clusters * points_per_cluster, dim, n_tokens
    for what, elements in (
        ("points x (dim + 1)", n * (d + 1)),
        ("n_tokens x points", t * n),
        ("n_tokens^2 x dim (repulsion)", t * t * d),
    ):
        if elements > MAX_ELEMENTS:
            return (
                f"needs an array of {what} = {elements:,} elements, above XLA's 32-bit indexing limit "
                f"of 2**31 - 1 = {MAX_ELEMENTS:,}"
            )
    nbytes = 4 * (6 * n * (d + 1) + 6 * t * n + 2 * t * t * (d + 1))
    if nbytes > MAX_RUN_BYTES:
        return f"needs about {nbytes / 2**30:.3g} GiB of working memory, above the limit of 1 GiB per run"
    return None


_OWN_CONDITIONS = ("noise", "n_clusters", "method", "draw", "key")
BUILTIN_RULES = (dynamics.BUILTIN, dynamics.BUILTIN_ORIGIN)
"""The built-in rule in its two forms (:data:`tokdyn.dynamics.MASS_ANCHORS`): the rules whose knobs
are :class:`tokdyn.dynamics.Hparams`, whose defaults are a :class:`ClusterRun`'s ``hparams``."""
PACKAGE_RULES = {"refinement": refinement.REFINEMENT}
"""The package's update rules beyond the built-in rule's settings (:data:`tokdyn.dynamics.METHODS`),
by the method name the token-dynamics study (``--methods``) and sweep (``--method``) know them by
without a rule module, each run at its ``hparams``: ``"refinement"``,
:data:`tokdyn.refinement.REFINEMENT`."""


def _host_hparams(name: str, value, kind: type, where: str, traced: str):
    """``value``, a ``kind`` (a knobs dataclass) of host numbers (NumPy scalars as Python numbers),
    checked by its ``validate()``: a run's field is static (hashed with the run), its traced values
    are conditions. ``TypeError`` / ``ValueError`` naming the field."""
    if not isinstance(value, kind):
        raise TypeError(
            f"{name} must be a {where}.{kind.__name__} (the defaults of the knobs), got {value!r} of type "
            f"{type(value).__name__}"
        )
    leaves = {}
    for f in dataclasses.fields(value):
        v = getattr(value, f.name)
        if isinstance(v, np.generic) and np.ndim(v) == 0:
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(
                f"{name}.{f.name} must be a Python number (a run's fields are static, its defaults), got "
                f"{v!r} of type {type(v).__name__}: pass traced values as conditions, {traced}"
            )
        leaves[f.name] = v
    return kind(**leaves).validate()


def _moved_into(field: str, kind: type, where: str):
    """A class decorator for a run that holds the knobs ``kind`` as its field ``field``: building it
    with the knobs as fields of their own (``ClusterRun(temperature=0.5)``), or reading them there
    (``run.temperature``), is a ``TypeError`` / ``AttributeError`` that shows the way."""
    names = tuple(f.name for f in dataclasses.fields(kind))
    example = f"{where}.{kind.__name__}"

    def decorate(cls):
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            moved = [k for k in kwargs if k in names]
            if moved:
                given = ", ".join(f"{k}={kwargs[k]!r}" for k in moved)
                raise TypeError(
                    f"{cls.__name__} has no field {moved[0]!r}: the defaults of the knobs of {example} are "
                    f"its field {field}: write {cls.__name__}({field}={example}({given}))"
                )
            init(self, *args, **kwargs)

        def __getattr__(self, name):
            if name in names:
                raise AttributeError(
                    f"{cls.__name__} has no attribute {name!r}: the default of that knob is run.{field}.{name}"
                )
            raise AttributeError(f"{cls.__name__!r} object has no attribute {name!r}")

        cls.__init__ = __init__
        cls.__getattr__ = __getattr__
        return cls

    return decorate


class _CallSignature:
    """``inspect.signature`` of a :class:`ClusterRun` (or :class:`TrackRun`) instance: the key, then
    its conditions (its rule's knobs and the data conditions) and ``draw`` as keyword arguments, so
    that the sweep engine checks a grid's axes against the knobs of the rule it runs (the class
    itself keeps its ordinary signature)."""

    def __get__(self, obj, cls=None):
        if obj is None:
            raise AttributeError("__signature__")
        P = inspect.Parameter
        return inspect.Signature(
            [P("key", P.POSITIONAL_OR_KEYWORD)]
            + [P(n, P.KEYWORD_ONLY, default=None) for n in (*obj.conditions, "draw")]
        )


@_moved_into("hparams", dynamics.Hparams, "dynamics")
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
    __signature__ = _CallSignature()

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
            _host_hparams("hparams", self.hparams, dynamics.Hparams, "tokdyn.dynamics", "run(key, temperature=...)"),
        )
        if self.rule not in BUILTIN_RULES:
            changed = [f for f in dynamics.FIELDS if getattr(self.hparams, f) != getattr(dynamics.Hparams(), f)]
            if changed:
                raise ValueError(
                    f"hparams sets {changed}, knobs of the built-in rule; rule {self.rule.name!r} has the "
                    f"knobs {list(names)}, whose defaults are its hparams (dataclasses.replace(rule, "
                    f"hparams=...))"
                )
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
        object.__setattr__(self, "methods", tuple(rows))
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
        base = self.defaults()
        if method is not None:
            table = [tuple(row) + base[len(row) :] for row in self.methods]  # short rows: defaults after
            base = tuple(jnp.asarray(table, f32)[method])  # a row of the method table
        leaves = [f32(b) if knobs.get(f) is None else f32(knobs[f]) for f, b in zip(names, base)]
        hparams = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(self.rule.hparams), leaves)
        noise = f32(self.noise if noise is None else noise)
        n_clusters = jnp.int32(self.n_clusters if n_clusters is None else n_clusters)
        c = data.clusters_from_draw(
            self.draw(key) if draw is None else draw, n_clusters, noise=noise, center_box=f32(self.center_box)
        )
        if self.init == "data":  # reuse the data's random bits: one threefry call per run
            t0 = dynamics.forgy(c.x, c.init_noise, c.mask, self.n_tokens)
        else:
            t0 = dynamics.init_tokens(
                jax.random.fold_in(key, self.INIT_STREAM),
                self.n_tokens,
                self.dim,
                method=self.init,
                x=c.x,
                mask=c.mask,
                scale=self.init_scale,
            )
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


@dataclasses.dataclass(frozen=True)
class CollapseRun:
    """One run, ``fn(key, ratio, noise, momentum, repulsion_rel) -> dict``: draw the data
    (:func:`tokdyn.data.point_cloud`), start T tokens at distinct data points (Forgy), run the rule
    at tau = ratio * tau_c(data) with repulsion gamma = repulsion_rel * (tr Cov X)^(3/2), and
    report the number of token groups at the merge tolerance ``merge_rel * sqrt(tr Cov X)``,
    whether all tokens merged (collapsed) or any did (merged), convergence (tolerance
    ``tol_rel * sqrt(tr Cov X)``), steps, tau_c and the smallest token separation relative to the
    data's RMS radius. ``groups``, ``collapsed`` and ``merged`` are float32 (1.0 / 0.0 for the
    two flags): NaN, like ``min_sep_rel``, when the final tokens are not finite."""

    shape: str = "blobs2"
    n_tokens: int = 4
    n_points: int = 120
    n_steps: int = 2000
    merge_rel: float = analysis.MERGE_REL
    tol_rel: float = 1e-5

    def __call__(self, key, ratio, noise=1.0, momentum=0.0, repulsion_rel=0.0):
        x = data.point_cloud(key, self.shape, self.n_points, noise)  # (N, D)
        tau_c = analysis.collapse_threshold(x)
        scale = jnp.sqrt(jnp.trace(analysis.covariance(x)[0]))
        t0 = dynamics.forgy(x, jax.random.uniform(jax.random.fold_in(key, 1), x.shape[:1]), None, self.n_tokens)
        hparams = dynamics.Hparams(ratio * tau_c, jnp.float32(momentum), repulsion_rel * scale**3)
        r = dynamics.run(x, t0, hparams, n_steps=jnp.int32(self.n_steps), tol=self.tol_rel * scale)
        _, groups = dynamics.token_groups(r.tokens, self.merge_rel * scale)
        sep = analysis.min_separation(r.tokens) / scale if self.n_tokens > 1 else jnp.float32(jnp.inf)
        # tokens that blew up form no groups: NaN, never a count of 1 read as a collapse
        finite = jnp.all(jnp.isfinite(r.tokens))
        known = lambda v: jnp.where(finite, jnp.asarray(v, jnp.float32), jnp.float32(jnp.nan))  # noqa: E731
        return dict(
            groups=known(groups),
            collapsed=known(groups == 1),
            merged=known(groups < self.n_tokens),
            converged=r.converged,
            steps=r.steps,
            tau_c=tau_c,
            min_sep_rel=known(sep),
        )


_TRACK_CONDITIONS = ("predictor", "decay", "separation", "speed", "spread")


@_moved_into("hparams", tracking.Hparams, "tracking")
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
    __signature__ = _CallSignature()

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
            _host_hparams("hparams", self.hparams, tracking.Hparams, "tokdyn.tracking", "run(key, predictor=...)"),
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
