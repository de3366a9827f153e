r"""Token update rules and the loop that runs them.

The rule (one step :math:`s = 0, 1, \dots`, for points :math:`x_i`, tokens :math:`t_j`, velocity
:math:`v_j` starting at 0):

1. :math:`a_{ij} = \mathrm{softmax}_j(-\|x_i - t_j\|^2 / \tau_s)` (padded points get :math:`a_{ij}=0`);
   with ``sinkhorn_iters`` :math:`K_S > 0`, :math:`a` is instead the entropic optimal-transport plan
   with uniform token marginals (:func:`sinkhorn`).
2. :math:`m_j = (\sum_i a_{ij} x_i + \epsilon\, t_j) / (\sum_i a_{ij} + \epsilon)`, :math:`\epsilon =
   10^{-8}` (``EPS_MASS``): the weighted mean of the points and, with weight :math:`\epsilon`, the
   token itself, so a token with no mass stays where it is (:math:`m_j = t_j`); with ``slot_norm``
   :math:`\sigma = 1`, Slot Attention's placement of the epsilon instead: :math:`a'_{ij} = a_{ij} +
   \epsilon` (valid points), :math:`m_j = \sum_i a'_{ij} x_i / \sum_i a'_{ij}` (a token with no mass
   goes to the points' mean); values in between blend numerators and denominators linearly. Both
   are weighted means, so the rule commutes with translations: shifting the points and the initial
   tokens by a vector shifts every token of the run by it (exactly in exact arithmetic; in floating
   point to the rounding of the shifted coordinates). :data:`BUILTIN_ORIGIN` keeps the published
   form :math:`m_j = \sum_i a_{ij} x_i / (\sum_i a_{ij} + \epsilon)`, which pulls a token of
   vanishing mass toward the coordinate origin.
3. :math:`f_j = m_j - t_j + \gamma \sum_{k \ne j} (t_j - t_k) / r_{jk}^3`,
   :math:`r_{jk} = \max(\|t_j - t_k\|, r_{\min})`
4. :math:`v_j \leftarrow \beta v_j + \alpha f_j + \sqrt{2 \alpha T}\,\xi_{sj}`,
   :math:`t_j \leftarrow t_j + v_j`, with damping (step size) :math:`\alpha` and Langevin temperature
   :math:`T`; :math:`\xi_{sj} \sim \mathcal N(0, I)` drawn from ``fold_in(key, s)``.
5. :math:`\Delta = \max_{j,d} |v_{jd}|`; the run stops after the first step :math:`s` with
   :math:`\Delta < \mathrm{tol}` once the temperature schedule has reached :math:`\tau`
   (``steps = s + 1``, ``converged = True``), else after ``n_steps``.
6. Hard labels: :math:`\arg\min_j \|x_i - t_j\|^2` at the final tokens (-1 on padded points, and
   on points whose distances are not finite: a run whose tokens blew up labels no point).

The softmax of step 1 (and the Sinkhorn plan) is computed from the shifted logits
:math:`-(\|x_i - t_j\|^2 - \min_k \|x_i - t_k\|^2) / \tau_s`, exactly 0 for each point's nearest
token, so any positive temperature, however small (``1e-38``), gives finite tokens: as
:math:`\tau \to 0` the assignment tends to the hard one and the rule to Lloyd's step (with the
mass epsilon of step 2: a token that owns no point stays where it is, as in :func:`kmeans`). Knob values out of range arrive only traced (host values are refused):
see :class:`Hparams` for what each does (NaN tokens, or a documented clamp). Half-precision inputs
(float16, bfloat16) are accepted and computed in float32.

The temperature follows a geometric annealing schedule
:math:`\tau_s = \tau\, r^{\max(0,\, 1 - s/S)}` from :math:`r\tau` down to :math:`\tau` over the first
:math:`S` = ``anneal_steps`` steps (``anneal_ratio`` :math:`r \ge 1`; constant :math:`\tau` when
:math:`r = 1` or :math:`S = 0`).

Every knob is a traced leaf of :class:`Hparams`, so every method in :data:`METHODS` and every point of a
sweep over them share one compiled function. The defaults (:math:`\alpha = 1, T = 0, K_S = 0,
\sigma = 0, r = 1`) reduce the rule to the baseline bit for bit: the Sinkhorn iterations and the
Langevin kick sit behind ``lax.cond`` (skipped, not multiplied by zero), and the other knobs enter as
exact identities (:math:`1 \cdot f`, :math:`+\,0`). :math:`r_{\min} = 10^{-3}` (``MIN_DISTANCE``)
softens the Coulomb term so that coincident tokens exert no force on each other and near-coincident
ones a bounded one: repulsion can never produce ``inf`` or ``NaN``.

**A rule is a value.** The rule above is one value, :data:`BUILTIN`, of a protocol that any update
rule can implement from outside the package, and that :func:`run`, :func:`run_fixed`,
:func:`trajectory`, :class:`tokdyn.engine.runs.ClusterRun`, the sweep engine
(:func:`tokdyn.engine.sweep.run`) and the token-dynamics study take as ``rule=``::

    Rule(init, step, hparams=(), name="", *, movement=None, may_stop=None, temperature=None, check=None)

    init(points, tokens, hparams) -> state             # the state before the first step
    step(state, points, hparams, step, key) -> state   # one step: step = s (int32), key: PRNG key or None

* ``points``: :class:`Points`, the run's points as a rule sees them, built once per run outside the
  loop: ``x`` (N, D), ``mask`` (N,) bool, ``weights`` (N,) (1 valid, 0 padded: padded points must
  not count), and the products the built-in rule uses (``x_t``, ``x1``, ``total``, ``count``).
* ``state``: the (T, D) tokens themselves, or any pytree with a ``tokens`` attribute (a registered
  dataclass, a NamedTuple) holding whatever else the rule carries (the built-in rule:
  :class:`Motion`, tokens and velocity). ``step`` returns the same structure, shapes and dtypes.
  The noise of step :math:`s` should come from ``fold_in(key, step)``, as the built-in rule's does.
* ``hparams``: the rule's knobs, a pytree of numbers; every leaf is traced, so runs and sweeps over
  them share one compilation. The :class:`Rule` holds their defaults (what :func:`run` uses without
  ``hparams``), hashable: a registered frozen dataclass or a NamedTuple of Python numbers, ``()``
  for a rule without knobs; their field names (:attr:`Rule.knobs`) are the rule's conditions in
  :class:`~tokdyn.engine.runs.ClusterRun` and the axes of a sweep. The built-in rule's: :class:`Hparams`.
* Optional hooks: ``movement(old, new) -> (T, D)``, the step's movement (default: the change of the
  tokens; the built-in rule: its velocity), reported as ``Result.velocity``;
  ``may_stop(hparams, step) -> bool``, whether the run may stop after step :math:`s` (default:
  always; the built-in rule: once its annealing is over); ``temperature(hparams, step)``, recorded by
  :func:`trajectory` (default NaN); ``check(hparams, key)``, run on host data before anything is
  traced (raise ``ValueError`` naming the knob; the built-in rule: :meth:`Hparams.validate`).

The loop gives every rule the same stopping test, step count, labels and :class:`Result`: starting
from ``init``, step :math:`s` makes ``state = step(state, points, hparams, s, key)``,
:math:`\Delta = \max_{j,d} |\mathrm{movement}_{jd}|`; the run stops after the first step with
:math:`\Delta < \mathrm{tol}` and ``may_stop`` (``steps = s + 1``, ``converged = True``), else
after ``n_steps``; the labels are the nearest final tokens (-1 on padded points); ``Result.state``
is the rule's final state. A :class:`Rule` is frozen and hashable, a static argument (equal rules
share one compilation: build it once, e.g. at module level, not inside a loop); it is checked when
it is built and ``rule=`` / ``hparams`` when they are passed, before anything is traced
(``TypeError`` naming the argument). A Lloyd-like rule with a traced step size, from scratch::

    class Knobs(NamedTuple):
        step_size: float = 1.0

    def step(tokens, points, hp, s, key):                 # the state is the tokens alone
        d2 = jnp.sum((points.x[:, None] - tokens[None]) ** 2, axis=-1)                # (N, T)
        a = jax.nn.one_hot(jnp.argmin(d2, axis=1), tokens.shape[0]) * points.weights[:, None]
        sums = a.T @ points.x1                            # (T, D + 1): sums of points, counts
        means = jnp.where(sums[:, -1:] > 0, sums[:, :-1] / jnp.maximum(sums[:, -1:], 1.0), tokens)
        return tokens + hp.step_size * (means - tokens)

    LLOYD = dynamics.Rule(lambda points, tokens, hp: tokens, step, hparams=Knobs(), name="lloyd")
    dynamics.run(x, t0, Knobs(0.5), rule=LLOYD, mask=mask)        # Result: tokens, labels, steps, ...
    jax.grad(lambda k: loss(dynamics.run_fixed(x, t0, k, rule=LLOYD, n_steps=20).tokens))(Knobs(0.5))
    ClusterRun(rule=LLOYD)(key, step_size=0.5)                    # sweep.Grid(step_size=..., ...)

Everything here is a single run: ``x`` is (N, D) and ``tokens`` (T, D). The public functions
are the jitted kernels themselves: call them inside your own ``jit``/``vmap``/``scan``, or hand a
per-run function to :func:`tokdyn.engine.execute.map_runs`, which picks the execution strategy
(sequential map on CPU, wide vmap on accelerators) per backend. Arguments are checked before
anything is traced (shapes always; values when they are host data, see ``tokdyn._checks``).
The Langevin rule needs a ``key``; the noise of step :math:`s` comes from ``fold_in(key, s)``, so
it does not depend on batching.

Transformations: every public kernel is jitted and vmappable, also inside a user's
``jit``/``vmap``/``scan``/``shard_map``; :mod:`tokdyn.transformations` holds the table of which
supports ``grad`` (reverse mode) and ``jacfwd`` (forward mode), checked cell by cell by the tests
and rendered in the documentation (``docs/transformations.md``). In short: :func:`update`,
:func:`coulomb`, :func:`soft_assignment`, :func:`sinkhorn` (a static count), :func:`run_fixed`
and :func:`trajectory` (the stopping step held fixed) are differentiable in both modes in the
points, the tokens and every :class:`Hparams` knob; :func:`run` and :func:`kmeans` (a
``while_loop`` with early stop) in forward mode only, and :func:`run` in both with
``implicit=True`` (the implicit derivative at the fixed point); :func:`hard_labels` and
:func:`token_groups` have integer outputs. For a rule of one's own, the loop's transformations
hold whenever its ``init`` and ``step`` support them.

The Sinkhorn count ``sinkhorn_iters`` stays a traced knob under every transformation, bounded by
``MAX_SINKHORN_ITERS`` (100; a larger host value is refused, a larger traced one acts as 100): the
forward pass runs exactly that many rounds (a loop with a traced count, as fast as before), and its
derivatives come from the same rounds written as a ``scan`` of static length 100 whose rounds past
the count are masked (rounds in blocks of 10, each block skipped when past the count and
rematerialised in reverse mode), which reverse mode can transpose. A softmax step (``K_S = 0``)
runs no Sinkhorn round, differentiated or not. The derivative of a knob at the edge of its range
is one-sided where the rule switches there (``langevin`` at 0 draws no kick: derivative 0).

:func:`kmeans` (Lloyd's algorithm, hard assignments) is the classical baseline of the rule, from
the same initial tokens (``init_tokens(..., method="kmeans++")`` for k-means++ seeding).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

import jax
import jax.extend.core
import jax.flatten_util
import jax.interpreters.ad
import jax.interpreters.batching
import jax.interpreters.mlir
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks

EPS_MASS = 1e-8
MIN_DISTANCE = 1e-3
INIT_METHODS = ("data", "normal", "data_mean", "kmeans++")
DEFAULT_MERGE_TOL = 1e-2
MAX_SINKHORN_ITERS = 100  # the most Sinkhorn rounds per step of the rule (Hparams.sinkhorn_iters)
KNOB_EDGE_TOL = 1e-3  # how far past a closed edge of its range a traced knob still runs (Hparams.in_range)
_SINKHORN_BLOCK = 10  # rounds per block of the differentiable Sinkhorn loop (divides MAX_SINKHORN_ITERS)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Hparams:
    """Sweepable hyperparameters of the update rule; every leaf is traced (see the module docstring
    for the equations). The defaults of the fields after ``repulsion`` switch their rule off.

    Every leaf is one value per run: a scalar (shape ``()``). A knob with one value per step (e.g.
    ``temperature=jnp.linspace(4, .5, 30)``) is refused by :func:`run`, :func:`run_fixed`,
    :func:`trajectory`, :func:`update` and :func:`temperature_schedule` with a ``ValueError``
    naming the field and its shape (a check on shapes, so also for traced values). The schedule of
    the temperature is the pair ``anneal_ratio`` / ``anneal_steps``; for any other per-step values,
    scan :func:`update` yourself with a scalar Hparams per step (``step=s`` keeps the annealing and
    the Langevin noise of step ``s``), e.g.
    ``lax.scan(lambda c, st: (update(x, *c, replace(hp, temperature=st[1]), step=st[0]), None),
    (t0, v0), (jnp.arange(S), taus))``, which is differentiable in every per-step value. Stacked
    Hparams (:meth:`stack`, a leading axis) are for ``jax.vmap``, which hands each run scalars.

    Attributes:
      temperature: softmax temperature tau > 0 (the final temperature when annealing).
      momentum: heavy-ball momentum beta in [0, 1).
      repulsion: Coulomb repulsion strength gamma >= 0.
      damping: step size alpha in (0, 1]: ``t <- (1 - alpha) t + alpha m`` without momentum and
        repulsion; it scales the whole force. 1 = the undamped rule.
      langevin: Langevin temperature T >= 0: a Gaussian kick of standard deviation
        ``sqrt(2 alpha T)`` per coordinate and step (Euler-Maruyama with step size alpha: the
        baseline step is a preconditioned gradient step of size 1, see :mod:`tokdyn.analysis`).
        T > 0 needs a ``key``.
      sinkhorn_iters: Sinkhorn iterations K_S (a whole number in [0, MAX_SINKHORN_ITERS] = [0, 100],
        stored as a float so that it stacks with the other leaves): 0 = softmax assignment; K_S >= 1
        = balanced assignment (:func:`sinkhorn`). A larger host value is refused (the bound is the
        static length of the loop that differentiates the rounds, see the module docstring); a
        larger traced value, which cannot be checked, acts as MAX_SINKHORN_ITERS. For more rounds
        outside the rule, :func:`sinkhorn` takes any (static) count.
      slot_norm: sigma in [0, 1], where the 1e-8 of the weighted mean goes: 0 = on the token's
        mass, anchored at the token (``(sum_i a_ij x_i + 1e-8 t_j) / (sum_i a_ij + 1e-8)``), 1 = on
        every attention weight before normalising over points, as in Slot Attention; values in
        between blend the two linearly (numerator and denominator).
      anneal_ratio: r >= 1: the schedule starts at ``r * temperature`` (a schedule never increases).
      anneal_steps: S >= 0 (integer-valued): steps over which the temperature falls geometrically
        to ``temperature``; the run cannot stop before the schedule reaches it. 0 = no annealing.

    Valid ranges, and values out of them. Host values (Python numbers, NumPy) out of range are
    refused before anything is traced (:meth:`validate`, a ``ValueError`` naming the field). Traced
    values (inside a user's ``jit``/``vmap``, or the axes of a sweep) cannot be refused; the rule
    then answers as follows, so that a run never reports plausible numbers for an impossible knob:

    ============== ======================= ===================================================
    knob           valid range             traced value outside it
    ============== ======================= ===================================================
    temperature    (0, inf)                < 0 or NaN: NaN. 0, or below the smallest normal
                                           float (which the CPU may flush to 0): clamped to
                                           the smallest normal float, the hard-assignment
                                           limit (nearest token weight 1, others 0). Any tiny
                                           positive value is valid and stays finite.
    momentum       [0, 1)                  NaN
    repulsion      [0, inf)                NaN
    damping        (0, 1]                  NaN
    langevin       [0, inf)                NaN
    sinkhorn_iters whole, [0, 100]         < 0: NaN. > 100: acts as 100. A fraction:
                                           truncated toward 0.
    slot_norm      [0, 1]                  NaN
    anneal_ratio   [1, inf)                NaN
    anneal_steps   whole, [0, inf)         < 0: NaN. A fraction: used as it is (the schedule
                                           and the stopping test compare the step with it).
    ============== ======================= ===================================================

    Closed edges (momentum 0, repulsion 0, damping 1, langevin 0, sinkhorn_iters 0, slot_norm 0 and 1,
    anneal_ratio 1, anneal_steps 0) admit traced values up to ``KNOB_EDGE_TOL`` = 1e-3 beyond them,
    where the formulas simply continue (a repulsion of -1e-4 attracts a little; a ``langevin`` or
    ``sinkhorn_iters`` below 0 acts as 0): derivatives and finite differences at the edge, where the
    rule does not switch, stay two-sided. Further out, the table applies. Open edges (temperature
    0, momentum 1, damping 0) admit nothing beyond them.

    "NaN" means: :func:`run`, :func:`run_fixed`, :func:`trajectory` (and :func:`update`,
    :func:`temperature_schedule`) return NaN tokens (the built-in rule starts such a run at NaN
    tokens: one scalar test per run, :meth:`in_range`), hence labels ``-1`` on every valid point
    and NaN metrics (:mod:`tokdyn.metrics`, :class:`tokdyn.engine.runs.ClusterRun`); such a run
    never converges and takes ``n_steps`` steps. An infinite value is out of range for every knob.
    """

    temperature: jax.Array | float = 1.0
    momentum: jax.Array | float = 0.0
    repulsion: jax.Array | float = 0.0
    damping: jax.Array | float = 1.0
    langevin: jax.Array | float = 0.0
    sinkhorn_iters: jax.Array | float = 0.0
    slot_norm: jax.Array | float = 0.0
    anneal_ratio: jax.Array | float = 1.0
    anneal_steps: jax.Array | float = 0.0

    def validate(self) -> "Hparams":
        """Check the fields that are host data; raises ``ValueError`` naming the field. Returns ``self``."""
        _checks.real("temperature", self.temperature, low=0.0, low_open=True)
        _checks.real("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        _checks.real("repulsion", self.repulsion, low=0.0)
        _checks.real("damping", self.damping, low=0.0, high=1.0, low_open=True)
        _checks.real("langevin", self.langevin, low=0.0)
        k = self.sinkhorn_iters
        if (k > MAX_SINKHORN_ITERS if isinstance(k, (int, float))
                else _checks.on_host(k) and np.any(np.asarray(k) > MAX_SINKHORN_ITERS)):
            raise ValueError(f"sinkhorn_iters must be a whole number in [0, {MAX_SINKHORN_ITERS}] "
                             f"(dynamics.MAX_SINKHORN_ITERS: the static length of the loop that "
                             f"differentiates the Sinkhorn rounds), got {k!r}")
        _checks.real("sinkhorn_iters", k, low=0.0)
        _checks.whole("sinkhorn_iters", self.sinkhorn_iters, "0 = softmax, >= 1 = Sinkhorn iterations")
        _checks.real("slot_norm", self.slot_norm, low=0.0, high=1.0)
        if _checks.on_host(self.anneal_ratio) and np.any(np.asarray(self.anneal_ratio) < 1.0):
            raise ValueError(f"anneal_ratio must be >= 1 (the schedule runs from anneal_ratio * temperature down "
                             f"to temperature and may never increase), got {self.anneal_ratio!r}")
        _checks.real("anneal_ratio", self.anneal_ratio, low=1.0)
        _checks.real("anneal_steps", self.anneal_steps, low=0.0)
        _checks.whole("anneal_steps", self.anneal_steps, "0 = constant temperature")
        return self

    def in_range(self) -> jax.Array:
        """Scalar bool (traceable, also for traced leaves): every knob is finite and in its valid
        range (the attributes above; a traced ``temperature`` of 0 counts as in range, the
        hard-assignment limit; a closed edge admits ``KNOB_EDGE_TOL`` past it). The built-in rule starts a run whose knobs are out of range at NaN
        tokens, so that such a run reports NaN, not plausible numbers."""
        t, m, g = self.temperature, self.momentum, self.repulsion
        a, lt, k = self.damping, self.langevin, self.sinkhorn_iters
        sig, r, n = self.slot_norm, self.anneal_ratio, self.anneal_steps
        e = KNOB_EDGE_TOL  # closed edges only: the formulas continue a little past them (see the class docstring)
        ok = ((t >= 0) & (m >= -e) & (m < 1) & (g >= -e) & (a > 0) & (a <= 1 + e) & (lt >= -e) & (k >= -e)
              & (sig >= -e) & (sig <= 1 + e) & (r >= 1 - e) & (n >= -e))
        finite = [jnp.isfinite(v) for v in (t, g, lt, k, r, n)]  # the bounded ones are finite when in range
        for f in finite:
            ok = ok & f
        return jnp.asarray(ok)

    @property
    def stochastic(self) -> bool:
        """Whether the Langevin temperature is host data and positive, so a key is needed."""
        return _checks.on_host(self.langevin) and bool(np.any(np.asarray(self.langevin) > 0))

    def row(self) -> tuple:
        """The fields as a tuple of Python floats, in :data:`FIELDS` order (a row of a method
        table, see :class:`tokdyn.engine.runs.ClusterRun`)."""
        return tuple(float(getattr(self, f)) for f in FIELDS)

    @staticmethod
    def stack(items) -> "Hparams":
        """Stack a sequence of Hparams into one with a leading axis (float32 leaves), for ``vmap``."""
        return jax.tree_util.tree_map(lambda *v: jnp.stack([jnp.asarray(a, jnp.float32) for a in v]), *items)


METHODS: dict[str, Hparams] = {
    "baseline": Hparams(temperature=1.0, momentum=0.0, repulsion=0.0),
    "inertia": Hparams(temperature=1.0, momentum=0.5, repulsion=0.0),
    "repulsion": Hparams(temperature=1.0, momentum=0.0, repulsion=0.05),
    "inertia+repulsion": Hparams(temperature=1.0, momentum=0.5, repulsion=0.05),
    # deterministic annealing: tau from 100 down to 1 over 15 steps (above the collapse threshold
    # 2 lambda_max(Cov X) of the study's data, so tokens start merged and split on the way down)
    "annealing": Hparams(temperature=1.0, anneal_ratio=100.0, anneal_steps=15.0),
    "sinkhorn": Hparams(temperature=1.0, sinkhorn_iters=10.0),
    "slot-attention": Hparams(temperature=1.0, slot_norm=1.0),
    "damped": Hparams(temperature=1.0, damping=0.5),
    "langevin": Hparams(temperature=1.0, langevin=1e-3),
}
FIELDS = tuple(f.name for f in dataclasses.fields(Hparams))


def method(name: str) -> Hparams:
    """The :class:`Hparams` of a registered method; ``ValueError`` for an unknown name."""
    _checks.choice("method", name, METHODS)
    return METHODS[name]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Points:
    """The points of one run as an update rule sees them (:class:`Rule`), built once per run
    outside the loop by :meth:`Points.of`.

    Attributes:
      x: (N, D) the points (a floating dtype; padded rows hold whatever the caller put there).
      mask: (N,) bool, False on padded points (all True without a mask).
      weights: (N,) 1 on valid points, 0 on padded ones, in x's dtype: a rule must give padded
        points no weight.
      x_t: (D, N) ``x.T``.
      x1: (N, D + 1) ``[x, 1]``: ``a @ x1`` gives the weighted sums of the points of a (T, N)
        assignment ``a`` and its masses in one product.
      total: (D,) ``sum_i w_i x_i``.
      count: () ``sum_i w_i``, the number of valid points (x's dtype).
    """

    x: jax.Array
    mask: jax.Array
    weights: jax.Array
    x_t: jax.Array
    x1: jax.Array
    total: jax.Array
    count: jax.Array

    @staticmethod
    def of(x, mask=None) -> "Points":
        """The :class:`Points` of (N, D) ``x`` (cast to float32 unless floating) and an optional (N,)
        bool ``mask``. A plain traceable function (the loop calls it once per run)."""
        x = _float(x)
        w = _weights(x, mask)
        # the column of ones makes one product give a token's soft sum of points and its mass (about
        # 10% faster per step on XLA:CPU than a separate row sum, which it splits in two)
        x1 = jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=1)
        valid = jnp.ones(x.shape[:1], bool) if mask is None else jnp.asarray(mask, bool)
        return Points(x=x, mask=valid, weights=w, x_t=x.T, x1=x1, total=w @ x, count=jnp.sum(w))


_SIGNATURES = {  # the arguments of each function of a Rule, for its checks and messages
    "init": ("points", "tokens", "hparams"),
    "step": ("state", "points", "hparams", "step", "key"),
    "movement": ("old", "new"),
    "may_stop": ("hparams", "step"),
    "temperature": ("hparams", "step"),
    "check": ("hparams", "key"),
}


def _callable_name(fn) -> str:
    """A stable name of a function (no address): ``module.qualname``."""
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{getattr(fn, '__module__', None) or type(fn).__module__}.{name}"


@dataclasses.dataclass(frozen=True, repr=False)
class Rule:
    """An update rule as a value: the protocol that :func:`run`, :func:`run_fixed`, :func:`trajectory`,
    :class:`tokdyn.engine.runs.ClusterRun` and the sweeps take as ``rule=`` (see the module
    docstring, "A rule is a value"). :data:`BUILTIN` is the package's own rule.

    Attributes:
      init: ``init(points, tokens, hparams) -> state``: the state before the first step, ``points`` a
        :class:`Points`, ``tokens`` (T, D). The state is the (T, D) tokens, or a pytree with a
        ``tokens`` attribute (and whatever else the rule carries).
      step: ``step(state, points, hparams, step, key) -> state``: one step; ``step`` the int32 index
        s, ``key`` the run's PRNG key or None (noise of step s: ``fold_in(key, step)``). Returns
        a state of the same structure, shapes and dtypes.
      hparams: the defaults of the rule's knobs, a pytree of numbers whose leaves are traced when
        the rule runs; hashable (a registered frozen dataclass or a NamedTuple of Python numbers;
        ``()``: no knobs). Their field names (:attr:`knobs`) are the conditions of the rule in
        :class:`~tokdyn.engine.runs.ClusterRun` and the axes of a sweep.
      name: a name, for messages and records.
      movement: optional (keyword-only, as are the hooks after it) ``movement(old, new) -> (T, D)``:
        the step's movement, whose largest absolute coordinate is compared with ``tol``; default:
        the change of the tokens.
      may_stop: optional ``may_stop(hparams, step) -> bool``: whether the run may stop after step
        ``step``; default: always.
      temperature: optional ``temperature(hparams, step) -> scalar``, recorded per step by
        :func:`trajectory`; default: NaN.
      check: optional ``check(hparams, key)``: checks run before anything is traced; it must
        look only at shapes and host data (see ``tokdyn._checks``) and raise ``ValueError``
        naming the knob.

    Frozen and hashable (a static argument: equal rules share one compilation, so build a rule
    once, not inside a loop); every field is checked here (``TypeError`` naming it).
    """

    init: Callable
    step: Callable
    hparams: Any = ()
    name: str = ""
    movement: Callable | None = dataclasses.field(default=None, kw_only=True)
    may_stop: Callable | None = dataclasses.field(default=None, kw_only=True)
    temperature: Callable | None = dataclasses.field(default=None, kw_only=True)
    check: Callable | None = dataclasses.field(default=None, kw_only=True)

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise TypeError(f"Rule.name must be a str, got {self.name!r}")
        for field, args in _SIGNATURES.items():
            fn = getattr(self, field)
            if fn is None and field not in ("init", "step"):
                continue
            want = f"{field}({', '.join(args)})"
            if not callable(fn):
                raise TypeError(f"Rule.{field} must be a function {want}, got {fn!r} of type {type(fn).__name__}")
            try:
                sig = inspect.signature(fn)
            except (TypeError, ValueError):  # no introspectable signature: trust it
                continue
            try:
                sig.bind(*args)
            except TypeError:
                raise TypeError(f"Rule.{field} must take the arguments {want}; {_callable_name(fn)} has the "
                                f"signature {sig}") from None
        try:
            hash(self.hparams)
        except TypeError:
            raise TypeError(
                f"Rule.hparams (the defaults of the rule's knobs) must be hashable: a registered frozen dataclass "
                f"or a NamedTuple of Python numbers (not JAX arrays, dicts or lists), got {self.hparams!r}") from None
        for path, leaf in jax.tree_util.tree_flatten_with_path(self.hparams)[0]:
            if _checks.dtype_of(leaf).kind not in "biuf":
                raise TypeError(f"Rule.hparams{jax.tree_util.keystr(path)} must be a real number, got {leaf!r}")

    @property
    def knobs(self) -> tuple:
        """The names of the rule's knobs, in the leaf order of :attr:`hparams` (which must be a flat
        record: a registered dataclass or a NamedTuple of numbers); ``TypeError`` otherwise."""
        names = []
        for path, _ in jax.tree_util.tree_flatten_with_path(self.hparams)[0]:
            key = path[0] if len(path) == 1 else None
            name = getattr(key, "name", None) if isinstance(key, jax.tree_util.GetAttrKey) else None
            if name is None:
                raise TypeError(f"rule {self.name or _callable_name(self.step)!r}: its hparams must be a flat record "
                                f"of named numbers (a registered dataclass or a NamedTuple) to name its knobs, got "
                                f"{self.hparams!r}")
            names.append(name)
        return tuple(names)

    def __repr__(self) -> str:
        """Short: ``Rule(name='builtin')``, ``Rule(name='lloyd', hparams=Knobs(step_size=0.5))``; the
        knobs only when they differ from their type's defaults, the step function only without a
        name. :meth:`describe` names every function (a stamp; with a code digest for identity)."""
        parts = [f"name={self.name!r}"] if self.name else [f"step={_callable_name(self.step)}"]
        try:
            default = type(self.hparams)()
        except Exception:  # a NamedTuple without defaults, ...
            default = None
        if self.hparams != () and not (type(default) is type(self.hparams) and default == self.hparams):
            parts.append(f"hparams={self.hparams!r}")
        return f"Rule({', '.join(parts)})"

    def describe(self) -> str:
        """The full description, stable across processes (no addresses): the name, every function
        by ``module.qualname`` and the knobs' defaults (what ``repr`` showed before it was made short)."""
        parts = [f"name={self.name!r}"] if self.name else []
        parts += [f"{f}={_callable_name(getattr(self, f))}" for f in ("init", "step")]
        parts.append(f"hparams={self.hparams!r}")
        parts += [f"{f}={_callable_name(getattr(self, f))}" for f in ("movement", "may_stop", "temperature", "check")
                  if getattr(self, f) is not None]
        return f"Rule({', '.join(parts)})"


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Motion:
    """The state of the built-in rule (:data:`BUILTIN`): tokens (T, D) and velocity (T, D)."""

    tokens: jax.Array
    velocity: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class State:
    """State of one run inside the loop: the rule's state (``rule_state``), the last step's
    movement (T, D), steps taken, the last step's largest coordinate movement (``delta``),
    whether it has converged."""

    rule_state: Any
    movement: jax.Array
    step: jax.Array
    delta: jax.Array
    converged: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Result:
    """Outcome of :func:`run`.

    Attributes:
      tokens: (T, D) final tokens.
      velocity: (T, D) the last step's movement (the rule's ``movement``; the built-in rule: its
        final velocity); zeros if no step was taken.
      labels: (N,) int32 hard labels at the final tokens, -1 on padded points.
      steps: int32 number of steps applied.
      converged: bool, whether the last step moved every coordinate by less than ``tol``.
      delta: float, the largest coordinate change in the last step.
      state: the rule's final state (the built-in rule: :class:`Motion`).
    """

    tokens: jax.Array
    velocity: jax.Array
    labels: jax.Array
    steps: jax.Array
    converged: jax.Array
    delta: jax.Array
    state: Any = None


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Trajectory:
    """Outcome of :func:`trajectory`: ``tokens`` (n_steps + 1, T, D), the initial tokens first and
    the final tokens repeated after convergence; ``delta`` (n_steps,) per-step change (0 after
    convergence); ``steps``, ``converged`` and ``labels`` as in :class:`Result`; ``temperature``
    (n_steps,) the temperature of each step (``temperature[s]`` produced ``tokens[s + 1]``)."""

    tokens: jax.Array
    delta: jax.Array
    steps: jax.Array
    converged: jax.Array
    labels: jax.Array
    temperature: jax.Array


# ---------------------------------------------------------------------------------------------- checks


def _check_points(x, tokens, mask):
    _real_array("x", x, ndim=2)
    _real_array("tokens", tokens, ndim=2)
    n, d = np.shape(x)
    t, dt = np.shape(tokens)
    if t < 1:
        raise ValueError(f"tokens must hold at least one token, got shape {np.shape(tokens)}")
    if dt != d:
        raise ValueError(f"tokens and x must have the same dimension: tokens has D={dt}, x has D={d}")
    _checks.mask_for("mask", mask, n)
    return _checks.host_arrays(x=x, tokens=tokens, mask=mask)


def _check_scalar_knobs(hparams):
    """Every leaf one value per run (shape ()): shapes are known even for tracers, so always checked."""
    if not isinstance(hparams, Hparams):
        raise TypeError(f"hparams must be a tokdyn.dynamics.Hparams, got {type(hparams).__name__}")
    for name in FIELDS:
        value = getattr(hparams, name)
        if isinstance(value, (int, float)):  # the common case, without NumPy's cost per call
            continue
        shape = np.shape(value)
        if shape != ():
            raise ValueError(
                f"hparams.{name} must be a scalar (one value per run), got shape {shape}. A knob with one "
                f"value per step is not supported: for a temperature schedule use anneal_ratio and "
                f"anneal_steps; for any other per-step values call dynamics.update in your own lax.scan "
                f"with a scalar Hparams per step; to batch runs, jax.vmap over a stacked Hparams "
                f"(Hparams.stack)")


def _check_hparams(hparams, key):
    _check_scalar_knobs(hparams)
    hparams.validate()
    if key is None:
        if hparams.stochastic:
            raise ValueError(f"hparams.langevin={hparams.langevin!r} > 0 makes the dynamics stochastic: pass "
                             "key=jax.random.key(seed)")
    else:
        _checks.prng_key("key", key)


def _check_rule(rule, hparams, key) -> dict:
    """Check ``rule=`` and ``hparams`` (resolving ``None`` to the rule's defaults) before anything is
    traced: the rule's type, the structure and dtypes of its hparams, the key, then the rule's own
    ``check``. Returns ``{"hparams": ...}`` when the default was taken."""
    if not isinstance(rule, Rule):
        hint = (" wrap your functions as rule=dynamics.Rule(init=..., step=...)" if callable(rule)
                else " (dynamics.BUILTIN is the package's own rule)")
        raise TypeError(f"rule must be a tokdyn.dynamics.Rule, got {rule!r} of type {type(rule).__name__}:{hint}")
    if isinstance(hparams, Rule):
        raise TypeError(f"hparams is a Rule ({hparams!r}): pass an update rule as rule=..., and its knobs "
                        "(if not its defaults, Rule.hparams) as hparams")
    if callable(hparams):
        raise TypeError(f"hparams must be the rule's knobs (for the built-in rule a tokdyn.dynamics.Hparams), got "
                        f"{_callable_name(hparams)} of type {type(hparams).__name__}: an update rule of your own is "
                        f"a dynamics.Rule(init=..., step=...), passed as rule=")
    changed = {}
    if hparams is None:
        hparams = changed["hparams"] = rule.hparams
    want = jax.tree_util.tree_structure(rule.hparams)
    if jax.tree_util.tree_structure(hparams) != want:
        kind = type(rule.hparams)
        what = (f"of the structure of rule.hparams ({want})" if kind in (tuple, list, dict)
                else f"a {kind.__module__}.{kind.__qualname__}")
        raise TypeError(f"hparams must be {what} (the knobs of rule {rule.name or _callable_name(rule.step)!r}), "
                        f"got {type(hparams).__name__}: {hparams!r}")
    if rule is not BUILTIN:  # the built-in rule's check (Hparams.validate) names the field
        for path, leaf in jax.tree_util.tree_flatten_with_path(hparams)[0]:
            if _checks.dtype_of(leaf).kind not in "biuf":
                raise TypeError(f"hparams{jax.tree_util.keystr(path)} must be real numbers, got dtype "
                                f"{_checks.dtype_of(leaf)}")
    if key is not None:
        _checks.prng_key("key", key)
    if rule.check is not None:
        rule.check(hparams, key)
    return changed


def _check_run(x, tokens, hparams, rule, mask, n_steps, tol, key, static_steps=False, implicit=False):
    if not isinstance(implicit, bool):
        raise TypeError(f"implicit must be a bool (static), got {implicit!r} of type {type(implicit).__name__}")
    changed = _check_rule(rule, hparams, key)
    arrays = _check_points(x, tokens, mask)
    if static_steps or isinstance(n_steps, (int, float)):
        _checks.positive_int("n_steps", n_steps)
    _checks.real("n_steps", n_steps, low=1)
    _checks.real("tol", tol, low=0.0)
    return {**arrays, **changed}


def check_run(x, tokens, hparams=None, *, rule: "Rule" = None, mask=None, n_steps=30, tol=1e-3, key=None) -> dict:
    """The checks :func:`run` makes before anything is traced (the points, tokens and mask, the rule
    and its knobs, ``n_steps``, ``tol`` and ``key``), for other forms of the same run
    (:func:`tokdyn.fused.run`): raises ``ValueError``/``TypeError`` naming the argument; returns the
    arguments it normalised (host lists as arrays, ``hparams=None`` as the rule's defaults)."""
    return _check_run(x, tokens, hparams, BUILTIN if rule is None else rule, mask, n_steps, tol, key,
                      static_steps=True)


def _check_trajectory(x, tokens, hparams, rule, mask, n_steps, tol, key):
    return _check_run(x, tokens, hparams, rule, mask, n_steps, tol, key, static_steps=True)


def _check_update(x, tokens, velocity, hparams, mask, step, key):
    arrays = _check_points(x, tokens, mask)
    _real_array("velocity", velocity, ndim=2)
    if np.shape(velocity) != np.shape(tokens):
        raise ValueError(f"velocity must have the shape of tokens {np.shape(tokens)}, got {np.shape(velocity)}")
    _check_hparams(hparams, key)
    return {**arrays, **_checks.host_arrays(velocity=velocity)}


# ---------------------------------------------------------------------------------------------- the rule


def _float(x):
    """``x`` as a JAX array in the dtype the kernels compute in: float32, or float64 as given (under
    ``jax.enable_x64``). Half precision (float16, bfloat16) is computed in float32: the rule's
    ``1e-8`` mass epsilon underflows there and squared distances overflow early."""
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating) and jnp.finfo(x.dtype).bits >= 32:
        return x
    return x.astype(jnp.float32)


def _real_array(name, value, *, ndim=None):
    """:func:`tokdyn._checks.finite_array`, bfloat16 included (NumPy reports its dtype kind as 'V',
    not a float): rank always, finiteness of host data."""
    if _checks.dtype_of(value) != jnp.dtype(jnp.bfloat16):
        return _checks.finite_array(name, value, ndim=ndim)
    if ndim is not None and np.ndim(value) not in np.atleast_1d(ndim):
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {np.shape(value)}")
    if _checks.on_host(value):
        _checks.finite_array(name, np.asarray(value, np.float32))
    return value


def _weights(x, mask):
    if mask is None:
        return jnp.ones(x.shape[:1], x.dtype)
    return mask.astype(x.dtype)


def _scores_t(x_t, tokens, precision=None):
    """(T, N) ``2 t.x - |t|^2``: minus the squared distance up to a per-point constant.

    Token-major layout: with the long points axis minor, the softmax over the few tokens is a
    reduction over the leading axis, which XLA:CPU vectorises along the points (about 2x faster
    per step than the (N, T) layout in our measurements). ``precision``: of the product (``None``:
    JAX's default, which is TF32 for float32 on recent GPUs)."""
    tt = jnp.sum(tokens * tokens, axis=-1)  # (T,)
    return 2.0 * jnp.matmul(tokens, x_t, precision=precision) - tt[:, None]


def _effective_temperature(temperature, dtype):
    """The temperature a step divides by: ``temperature`` clamped up to the smallest normal float
    (a traced 0 or subnormal value, which the CPU may flush to 0, acts as the hard-assignment
    limit), NaN when negative or NaN (a traced value out of range cannot be refused)."""
    dtype = jnp.result_type(dtype, temperature)
    return jnp.where(temperature >= 0, jnp.maximum(temperature, jnp.finfo(dtype).tiny), jnp.nan)


def _logits_t(x_t, tokens, temperature):
    """(T, N) ``-(|x_i - t_j|^2 - min_k |x_i - t_k|^2) / tau``: each point's nearest token gets
    exactly 0 and the others a value <= 0, so a tiny temperature gives ``-inf`` (weight 0), never
    ``inf - inf``: the soft assignment tends to the hard one as tau -> 0. At tau = 1 these are the
    logits ``s - max_j s`` bit for bit."""
    s = _scores_t(x_t, tokens)  # (T, N)
    return (s - jnp.max(s, axis=0, keepdims=True)) / _effective_temperature(temperature, s.dtype)


def _soft_assignment_t(x_t, w, tokens, temperature):
    e = jnp.exp(_logits_t(x_t, tokens, temperature))  # (T, N); the nearest token's entry is 1
    return e * (w / jnp.sum(e, axis=0))  # (T, N); zero columns on padded points


def _check_soft_assignment(x, tokens, temperature, mask):
    _checks.real("temperature", temperature, low=0.0, low_open=True)
    return _check_points(x, tokens, mask)


@_checks.checked_jit(_check_soft_assignment)
def soft_assignment(x, tokens, temperature, mask=None):
    """(N, T) softmax over tokens of ``-|x_i - t_j|^2 / temperature``; zero rows on padded points."""
    x = _float(x)
    return _soft_assignment_t(x.T, _weights(x, mask), tokens.astype(x.dtype), temperature).T


def _sinkhorn_cols(l):
    """Every point's mass over tokens sums to 1: normalise the (T, N) log-plan over tokens."""
    return l - jax.nn.logsumexp(l, axis=0, keepdims=True)


def _sinkhorn_round(l, w, log_row):
    """One Sinkhorn round on a (T, N) log-plan: token rows to ``log_row``, then point columns to 1."""
    r = jax.nn.logsumexp(l, axis=1, b=w[None, :], keepdims=True)  # (T, 1) log token mass
    r = jnp.where(jnp.isfinite(r), r, log_row)  # no valid point: leave the row alone
    return _sinkhorn_cols(l + (log_row - r))


@jax.custom_jvp
def _sinkhorn_rounds(l, w, log_row, n):
    """``n`` rounds (traced int32 in [0, MAX_SINKHORN_ITERS]) of :func:`_sinkhorn_round`.

    Evaluated as a loop of exactly ``n`` rounds (under ``vmap``: the batch's largest ``n``), so
    the forward pass costs what it did with a plain ``fori_loop``; its derivatives (``jvp``, hence
    ``jacfwd``, ``grad``, ``vjp``) are those of :func:`_sinkhorn_rounds_masked`, a ``scan`` over the
    static MAX_SINKHORN_ITERS whose rounds at index >= n leave the plan unchanged: the same function,
    written so that reverse mode can transpose it (it cannot transpose a loop with a traced count)."""
    return jax.lax.fori_loop(0, n, lambda _, l: _sinkhorn_round(l, w, log_row), l)


def _sinkhorn_rounds_masked(l, w, log_row, n):
    """:func:`_sinkhorn_rounds` as a ``scan`` of static length: MAX_SINKHORN_ITERS rounds in blocks
    of _SINKHORN_BLOCK, every round at index >= n masked (``where``); a block with no round below n
    is skipped by a ``cond`` (unbatched; under ``vmap`` a select computes it), and each block is
    rematerialised, so reverse mode stores one (T, N) plan per block, not one per round."""
    @jax.checkpoint
    def rounds(l, start):
        for k in range(_SINKHORN_BLOCK):
            l = jnp.where(start + k < n, _sinkhorn_round(l, w, log_row), l)
        return l

    def block(l, start):
        return jax.lax.cond(start < n, rounds, lambda l, _: l, l, start), None

    starts = jnp.arange(0, MAX_SINKHORN_ITERS, _SINKHORN_BLOCK, dtype=jnp.int32)
    return jax.lax.scan(block, l, starts)[0]


@_sinkhorn_rounds.defjvp
def _sinkhorn_rounds_jvp(primals, tangents):
    l, w, log_row, n = primals
    dl, dw, dlog_row, _ = tangents  # n is an integer: its tangent is float0
    # rematerialised: reverse mode keeps only the inputs of the rounds, not MAX_SINKHORN_ITERS plans
    # per step (which a softmax step, K_S = 0, would also carry as zeros: the cond keeps both branches')
    rounds = jax.checkpoint(lambda l, w, log_row: _sinkhorn_rounds_masked(l, w, log_row, n))
    return jax.jvp(rounds, (l, w, log_row), (dl, dw, dlog_row))


def _sinkhorn_log_t(logits_t, w, n_iters):
    """Log-domain Sinkhorn on (T, N) logits: returns (T, N) log-plan whose columns (points) sum to 1
    and whose rows (tokens) approach ``sum(w) / T``; padded points (w = 0) do not count.

    ``n_iters``: a Python int (:func:`sinkhorn`: a loop of static length, any count), or a traced
    int32 in [0, MAX_SINKHORN_ITERS] (the update rule's knob, see :func:`_sinkhorn_rounds`)."""
    n_tokens = logits_t.shape[0]
    log_row = jnp.log(jnp.maximum(jnp.sum(w), jnp.finfo(logits_t.dtype).tiny) / n_tokens)
    l0 = _sinkhorn_cols(logits_t)
    if isinstance(n_iters, (int, np.integer)):
        return jax.lax.fori_loop(0, n_iters, lambda _, l: _sinkhorn_round(l, w, log_row), l0)
    return _sinkhorn_rounds(l0, w, log_row, n_iters)


def _balanced_assignment_t(x_t, w, tokens, temperature, n_iters):
    # shifted logits (the plan does not change under a per-point shift): finite or -inf, never inf - inf
    return jnp.exp(_sinkhorn_log_t(_logits_t(x_t, tokens, temperature), w, n_iters)) * w


def _check_sinkhorn(logits, n_iters, mask):
    _real_array("logits", logits, ndim=2)
    _checks.positive_int("n_iters", n_iters)
    _checks.mask_for("mask", mask, np.shape(logits)[0])


@_checks.checked_jit(_check_sinkhorn, static_argnames=("n_iters",))
def sinkhorn(logits, n_iters: int, mask=None):
    r"""Entropic optimal transport with uniform token marginals, by Sinkhorn iterations.

    For (N, T) ``logits`` :math:`\ell_{ij}` (e.g. :math:`-\|x_i - t_j\|^2/\tau`), start from the
    softmax over tokens :math:`P = \mathrm{softmax}_j(\ell)` and repeat ``n_iters`` times (in the
    log domain): :math:`P_{ij} \leftarrow P_{ij}\, (n/T) / \sum_i P_{ij}` (every token holds
    :math:`n/T` of the :math:`n` valid points), then :math:`P_{ij} \leftarrow P_{ij} / \sum_j P_{ij}`
    (every point sums to 1). The result is the plan :math:`P = \mathrm{diag}(u) e^{\ell}
    \mathrm{diag}(v)` closest to the softmax in KL with those marginals: rows sum to 1 exactly,
    columns converge to :math:`n/T` as ``n_iters`` grows (slowly when the logits span a wide range,
    i.e. at low temperature). Padded points (``mask`` False) get zero rows and are not counted in
    :math:`n`. Returns (N, T).

    As an update rule (``Hparams.sinkhorn_iters``) it stops tokens from sharing the points unequally
    (starving or dead tokens); it does not prevent the symmetric collapse far above the threshold
    :math:`2\lambda_{\max}(\mathrm{Cov}\,X)`, where the plan tends to the uniform coupling and
    every token moves to the data mean.
    """
    logits = _float(logits)
    w = _weights(logits, mask)
    return (jnp.exp(_sinkhorn_log_t(logits.T, w, int(n_iters))) * w).T


def coulomb(tokens):
    """(T, D) ``sum_{k != j} (t_j - t_k) / max(|t_j - t_k|, MIN_DISTANCE)^3``."""
    diff = tokens[:, None, :] - tokens[None, :, :]  # (T, T, D)
    r2 = jnp.sum(diff * diff, axis=-1)  # (T, T)
    r2 = jnp.maximum(r2, MIN_DISTANCE**2)
    inv_r3 = jax.lax.rsqrt(r2) / r2  # r^-3
    # the diagonal (diff 0) contributes 0 either way, but its weight MIN_DISTANCE^-3 would reach the
    # reverse-mode derivative as +1e9 g - 1e9 g on the same token: cancellation that wipes out float32
    inv_r3 = jnp.where(jnp.eye(tokens.shape[0], dtype=bool), 0.0, inv_r3)
    return jnp.sum(diff * inv_r3[..., None], axis=1)


def _temperature_at(hparams, step):
    """tau_s = tau * r ** max(0, 1 - s / S) (exactly tau when r = 1 or S = 0 or s >= S)."""
    r, n_anneal = hparams.anneal_ratio, hparams.anneal_steps
    frac = jnp.clip(1.0 - step / jnp.maximum(n_anneal, 1.0), 0.0, 1.0)
    on = (n_anneal > 0) & (frac > 0)
    frac = jnp.where(on, frac, 0.0)
    # at r = 1 the factor is exactly 1 but keeps its derivative frac in r (a plain r ** frac at r = 1
    # is 1 too, but not on every backend bit for bit; a branch on r != 1 would zero the gradient)
    factor = jnp.where(r != 1.0, r ** frac, 1.0 + (r - 1.0) * frac)
    return jnp.where(on, hparams.temperature * factor, hparams.temperature)


def _check_schedule(hparams, n_steps):
    _check_scalar_knobs(hparams)
    hparams.validate()
    _checks.positive_int("n_steps", n_steps)


@_checks.checked_jit(_check_schedule, static_argnames=("n_steps",))
def temperature_schedule(hparams: Hparams, n_steps: int) -> jax.Array:
    """(n_steps,) the temperature used at each step: ``tau * r ** max(0, 1 - s / S)``; NaN when a
    traced knob is out of its range (:meth:`Hparams.in_range`)."""
    taus = jax.vmap(lambda s: _temperature_at(hparams, s))(jnp.arange(n_steps, dtype=jnp.int32))
    return jnp.where(hparams.in_range(), taus, jnp.nan)


def _update(points: Points, tokens, velocity, hparams, step, key, mass_anchor: str = "token"):
    x1, x_t, w, x_sum, n_valid = points.x1, points.x_t, points.weights, points.total, points.count
    temperature = _temperature_at(hparams, step)
    # a traced count above the bound (which cannot be checked) is clipped to it
    n_iters = jnp.minimum(jnp.asarray(hparams.sinkhorn_iters).astype(jnp.int32), MAX_SINKHORN_ITERS)
    a = jax.lax.cond(n_iters > 0, lambda: _balanced_assignment_t(x_t, w, tokens, temperature, n_iters),
                     lambda: _soft_assignment_t(x_t, w, tokens, temperature))  # (T, N)
    sigma = hparams.slot_norm
    # sigma = 0: (a x + eps t) / (sum a + eps); sigma = 1: ((a + eps) w x) / sum (a + eps) w. Both are
    # weighted means of points and the token itself, so the rule commutes with translations: a token
    # with no mass stays where it is (sigma = 0) or goes to the points' mean (sigma = 1), never to the
    # coordinate origin (as the published form's (a x) / (sum a + eps) did)
    sums = a @ x1  # (T, D + 1): sum_i a_ki x_i, then the mass sum_i a_ki
    anchor = (EPS_MASS * (1.0 - sigma)) * tokens if mass_anchor == "token" else 0.0  # "origin": the published form
    means = (sums[:, :-1] + anchor + (sigma * EPS_MASS) * x_sum) / (
        sums[:, -1] + (EPS_MASS * (1.0 - sigma) + (sigma * EPS_MASS) * n_valid))[:, None]  # (T, D)
    force = means - tokens + hparams.repulsion * coulomb(tokens)
    velocity = hparams.momentum * velocity + hparams.damping * force
    if key is not None:
        def kick(v):
            xi = jax.random.normal(jax.random.fold_in(key, step), v.shape, v.dtype)
            var = 2.0 * hparams.damping * hparams.langevin
            # sqrt away from 0 only: under vmap the cond is a select, and a zero variance's
            # infinite derivative would turn the untaken branch's zero cotangent into NaN
            scale = jnp.where(var > 0, jnp.sqrt(jnp.where(var > 0, var, 1.0)), 0.0)
            return v + scale.astype(v.dtype) * xi

        velocity = jax.lax.cond(hparams.langevin > 0, kick, lambda v: v, velocity)
    return tokens + velocity, velocity


@_checks.checked_jit(_check_update)
def update(x, tokens, velocity, hparams: Hparams, mask=None, *, step=0, key=None):
    """One application of the rule at step index ``step`` (which sets the annealed temperature
    and the Langevin noise ``fold_in(key, step)``). Returns ``(tokens, velocity)`` after the step.
    Differentiable in both modes (``grad`` and ``jacfwd``), the Sinkhorn branch included, also in a
    user's ``lax.scan`` over steps (the route for knobs that change per step, see :class:`Hparams`).
    A traced knob out of its range gives NaN tokens and velocity (:meth:`Hparams.in_range`)."""
    x = _float(x)
    tokens, velocity = _update(Points.of(x, mask), tokens.astype(x.dtype), velocity.astype(x.dtype), hparams,
                               jnp.asarray(step, jnp.int32), key)
    ok = hparams.in_range()  # a traced knob out of range: NaN (see Hparams)
    return jnp.where(ok, tokens, jnp.nan), jnp.where(ok, velocity, jnp.nan)


def _check_hard_labels(x, tokens, mask):
    return _check_points(x, tokens, mask)


def _labels_t(x_t, tokens, mask, precision=None):
    """(N,) int32 nearest token (first on ties); -1 on padded points and on points with a distance
    that is not finite (a NaN or infinite token, or point: no nearest token to report)."""
    s = _scores_t(x_t, tokens, precision=precision)  # (T, N)
    finite = jnp.all(jnp.isfinite(s), axis=0)  # (N,); one reduction per run, after the loop
    labels = jnp.where(finite, jnp.argmax(s, axis=0).astype(jnp.int32), -1)
    return labels if mask is None else jnp.where(mask, labels, -1)


@_checks.checked_jit(_check_hard_labels)
def hard_labels(x, tokens, mask=None):
    """(N,) int32 index of the nearest token (first on ties); -1 on padded points, and -1 on points
    whose squared distances are not finite (a NaN or infinite token, e.g. the final tokens of a run
    that blew up, or a traced NaN point): ``argmax`` over NaN would report token 0."""
    x = _float(x)
    return _labels_t(x.T, tokens.astype(x.dtype), mask)


# ---------------------------------------------------------------------------------------------- the built-in rule


def _builtin_init(points, tokens, hparams):
    # a traced knob out of range (host values are refused before tracing) starts the run at NaN
    # tokens: one scalar test per run, and every output of the run (tokens, labels -1) says so
    tokens = jnp.where(hparams.in_range(), tokens, jnp.nan)
    return Motion(tokens=tokens, velocity=jnp.zeros_like(tokens))  # at rest


def _builtin_step(state, points, hparams, step, key):
    tokens, velocity = _update(points, state.tokens, state.velocity, hparams, step, key)
    return Motion(tokens=tokens, velocity=velocity)


def _builtin_origin_step(state, points, hparams, step, key):
    tokens, velocity = _update(points, state.tokens, state.velocity, hparams, step, key, mass_anchor="origin")
    return Motion(tokens=tokens, velocity=velocity)


def _builtin_movement(old, new):
    return new.velocity


def _builtin_may_stop(hparams, step):
    return step >= hparams.anneal_steps  # no stop while the temperature is still annealing


BUILTIN = Rule(init=_builtin_init, step=_builtin_step, hparams=Hparams(), name="builtin",
               movement=_builtin_movement, may_stop=_builtin_may_stop, temperature=_temperature_at,
               check=_check_hparams)
"""The package's update rule (the module docstring's steps 1-4, every knob of :class:`Hparams`) as a
:class:`Rule`: its state is :class:`Motion`, its movement the velocity, and it may stop only once
its annealing is over. What :func:`run`, :func:`run_fixed` and :func:`trajectory` use by default;
:data:`METHODS` are settings of its knobs."""

BUILTIN_ORIGIN = Rule(init=_builtin_init, step=_builtin_origin_step, hparams=Hparams(), name="builtin-origin",
                      movement=_builtin_movement, may_stop=_builtin_may_stop, temperature=_temperature_at,
                      check=_check_hparams)
"""The built-in rule with the published form of step 2, :math:`m_j = \\sum_i a_{ij} x_i / (\\sum_i a_{ij}
+ 10^{-8})` (``mass_anchor="origin"``): the mass epsilon pulls a token toward the coordinate
origin, with a weight that matters only when its mass is near or below :math:`10^{-8}` (a token that
owns no point jumps to the origin), so its runs depend on where the data sit. Kept to reproduce
the published token-dynamics figures (``tokdyn study token-dynamics --mass-anchor origin``); the same
knobs (:class:`Hparams`, :data:`METHODS`) as :data:`BUILTIN`, which it equals wherever every token's
mass is far above :math:`10^{-8}` (to float32 rounding)."""

MASS_ANCHORS = {"token": BUILTIN, "origin": BUILTIN_ORIGIN}
"""The built-in rule by where its mass epsilon anchors the weighted mean (step 2 of the module
docstring): ``"token"`` (:data:`BUILTIN`, translation-invariant) or ``"origin"``
(:data:`BUILTIN_ORIGIN`, the published form)."""

_ELSEWHERE = {"REFINEMENT": "tokdyn.refinement"}  # rules defined in their own modules, found here too


def __getattr__(name):
    """``dynamics.REFINEMENT``: the variational-refinement rule of :mod:`tokdyn.refinement`, found here
    beside the built-in rules (imported on first use: that module builds on this one)."""
    if name in _ELSEWHERE:
        import importlib

        return getattr(importlib.import_module(_ELSEWHERE[name]), name)
    raise AttributeError(f"module 'tokdyn.dynamics' has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------- the loop


def _state_tokens(state, tokens, where: str):
    """The tokens of a rule's state (the state itself, or its ``tokens``), checked against the
    initial tokens' shape and dtype while tracing, so a rule that returns something else is named."""
    t = state if isinstance(state, jax.Array) else getattr(state, "tokens", None)
    if t is None or not hasattr(t, "shape") or t.shape != tokens.shape or t.dtype != tokens.dtype:
        got = (f"{type(state).__name__}" if t is None or not hasattr(t, "shape")
               else f"tokens of shape {t.shape} and dtype {t.dtype}")
        raise TypeError(f"rule {where} must return the tokens ({tokens.shape}, {tokens.dtype}) or a state with a "
                        f"`tokens` attribute of that shape and dtype, got {got}")
    return t


def varying(tree, *like):
    """``tree`` typed as varying over every ``shard_map`` axis that some leaf of ``like`` varies over
    (a no-op outside ``shard_map``, and on JAX versions without varying types). Under
    ``jax.shard_map``'s default ``check_vma=True`` a loop's initial carry must vary over the devices
    as its body's output does: a carry built from constants (a step count, a flag) or from
    arguments shared by every device, with a body that reads a sharded one, is refused otherwise."""
    typeof, pcast = getattr(jax, "typeof", None), getattr(jax.lax, "pcast", None)
    if typeof is None or pcast is None:
        return tree

    def vma(v):  # the axes v varies over (JAX 0.10: manual_axis_type.varying; before: vma)
        aval = typeof(v)
        manual = getattr(aval, "manual_axis_type", None)
        return frozenset(manual.varying if manual is not None else getattr(aval, "vma", ()))

    axes = frozenset().union(*(vma(leaf) for leaf in jax.tree_util.tree_leaves(like)))
    if not axes:
        return tree

    def cast(v):
        missing = tuple(sorted(axes - vma(v)))
        return pcast(v, missing, to="varying") if missing else v

    return jax.tree_util.tree_map(cast, tree)


def _start(rule: Rule, points: Points, tokens, hparams, key=None) -> State:
    state = rule.init(points, tokens, hparams)
    t = _state_tokens(state, tokens, f"{rule.name or 'Rule'}.init")
    s = State(rule_state=state, movement=jnp.zeros_like(t), step=jnp.zeros((), jnp.int32),
              delta=jnp.full((), jnp.inf, t.dtype), converged=jnp.zeros((), bool))
    return varying(s, points.x, points.mask, tokens, hparams, key)


@jax.custom_jvp
def _max_abs(a):
    """``max |a|`` (a step's ``delta``), whose derivative is that of the first entry of largest
    magnitude. (JAX's rule for ``jnp.max`` divides by the number of entries equal to the maximum,
    which XLA:CPU compiling without optimisations can count as 0 -- it recomputes the operand in two
    fusions that round differently -- and the derivative of ``delta`` came out NaN.)"""
    return jnp.max(jnp.abs(a))


@_max_abs.defjvp
def _max_abs_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    i = jnp.argmax(jnp.abs(a).ravel())
    return jnp.abs(a).ravel()[i], (jnp.sign(a) * da).ravel()[i]


def _advance(rule: Rule, points: Points, s: State, hparams, tol, key) -> State:
    old = s.rule_state
    new = rule.step(old, points, hparams, s.step, key)
    tokens = _state_tokens(new, _tokens_of(old), f"{rule.name or 'Rule'}.step")
    want, got = jax.tree_util.tree_structure(old), jax.tree_util.tree_structure(new)
    if want != got:
        raise TypeError(f"rule {rule.name or 'Rule'}.step must return a state of the structure init returned "
                        f"({want}), got {got}")
    if rule.movement is None:
        move = tokens - _tokens_of(old)
    else:
        move = jnp.asarray(rule.movement(old, new))
        if move.shape != tokens.shape:
            raise TypeError(f"rule {rule.name or 'Rule'}.movement must return a {tokens.shape} array, got shape "
                            f"{move.shape}")
        if move.dtype != tokens.dtype:
            move = move.astype(tokens.dtype)
    delta = _max_abs(move)
    stop = delta < tol
    if rule.may_stop is not None:
        stop = stop & rule.may_stop(hparams, s.step)
    return State(new, move, s.step + 1, delta, stop)


def _tokens_of(state):
    return state if isinstance(state, jax.Array) else state.tokens


def _result(points: Points, s: State, mask) -> Result:
    tokens = _tokens_of(s.rule_state)
    # labels from the loop's transposed points: a product on x.T built afresh costs as much as 3 steps
    return Result(tokens=tokens, velocity=s.movement, labels=_labels_t(points.x_t, tokens, mask), steps=s.step,
                  converged=s.converged, delta=s.delta, state=s.rule_state)


@_checks.checked_jit(_check_run, static_argnames=("rule", "implicit"))
def run(x, tokens, hparams=None, *, rule: Rule = BUILTIN, mask=None, n_steps=30, tol=1e-3, key=None,
        implicit: bool = False) -> Result:
    r"""Run an update rule from ``tokens`` until convergence or ``n_steps`` steps.

    Args:
      x: (N, D) points (NumPy or JAX).
      tokens: (T, D) initial tokens.
      hparams: the rule's knobs (traced: sweeping them does not recompile); for the built-in rule
        an :class:`Hparams`. Default: the rule's defaults (``rule.hparams``).
      rule: a :class:`Rule` (static; see the module docstring, "A rule is a value"). Default:
        :data:`BUILTIN`, the package's rule.
      mask: optional (N,) bool; False rows are ignored.
      n_steps: the most steps to take (traced).
      tol: convergence threshold on the largest coordinate movement of a step (traced).
      key: PRNG key handed to the rule's steps (the built-in rule's Langevin noise: step ``s``
        uses ``fold_in(key, s)``); required when ``hparams.langevin > 0``. Without a key the
        Langevin term is absent (also for a traced ``langevin``, which cannot be checked).
      implicit: static bool (default False). True: the same forward run (the same ``while_loop``,
        the same values), whose derivatives are implicit derivatives at the fixed point (below).
        False compiles exactly the program it always did.

    Returns:
      :class:`Result`. Jitted, vmappable, callable inside a user's transformations; differentiable
      in forward mode (``jax.jvp``/``jacfwd``) but, without ``implicit``, not in reverse mode
      (``jax.grad``): the early stop is a ``while_loop``. :func:`run_fixed` is the same run as a
      fixed-length ``scan``, for ``grad`` through the unrolled steps.

    Implicit differentiation (``implicit=True``, reverse and forward mode): the final rule state
    :math:`s^*` (``Result.state``, and ``Result.tokens``, its tokens) is treated as a fixed point
    :math:`s^* = f(s^*, \theta)` of the one-step map ``f(s) = rule.step(s, points, hparams, k, key)``
    at the last step taken, :math:`k` = ``steps - 1``, with :math:`\theta` the points and the
    knobs, and differentiated by the implicit function theorem (``jax.lax.custom_root``):
    :math:`\partial s^* = (I - \partial_s f)^{-1} \partial_\theta f`, the linear system solved densely
    over the flattened state (the built-in rule: 2 T D unknowns; cost and memory grow as the cube
    and square of the state's size, meant for small states), independent of the number of steps
    taken (memory of one step, not of ``n_steps``, as Slot Attention's implicit form,
    :mod:`tokdyn.models.slots`).

    * Derivatives flow to ``hparams`` (every floating knob) and ``x`` (the points); the initial
      ``tokens`` get exactly zero: a fixed point does not depend on where the run started (within
      its basin of attraction). ``tol``, ``n_steps``, ``mask`` and ``key`` get none, and neither do
      ``velocity``, ``delta``, ``steps``, ``converged`` and ``labels`` (computed without them).
    * Exact when the run converged (``converged``) to a fixed point of a deterministic map, up to
      the residual ``tol`` leaves: no Langevin kick (``langevin = 0`` or no key), annealing over
      (the built-in rule may stop only then, so a converged run's final map is the constant-
      temperature one). It then equals the limit of :func:`run_fixed`'s derivative as its steps go
      to infinity (where that converges), to within the order of ``tol``.
    * Otherwise it is still defined but is not the derivative of the run: for a run that stopped at
      ``n_steps`` without converging, or with a Langevin kick (the map of the last step, its draw
      included, is differentiated as if the final state were its fixed point), the derivative of the
      fixed point of the last step's map linearised at the final state, which the final state is
      not. Check ``Result.converged``. A state where :math:`I - \partial_s f` is singular (e.g.
      coincident tokens at ``repulsion = 0``, or ``momentum = 1``) gives ``inf``/``NaN``.
    * The rule's state must be floating point in every leaf (``TypeError`` while tracing, before
      compiling, otherwise); its ``step`` must be differentiable in the state, the points and the
      knobs (the built-in rule is, the Sinkhorn branch included).
    """
    x = _float(x)
    points = Points.of(x, mask)  # loop invariants
    if implicit:
        return _run_implicit(rule, x, points, tokens.astype(x.dtype), hparams, mask, n_steps, tol, key)

    def cond(s):
        return jnp.logical_and(~s.converged, s.step < n_steps)

    s = jax.lax.while_loop(cond, lambda s: _advance(rule, points, s, hparams, tol, key),
                           _start(rule, points, tokens.astype(x.dtype), hparams, key))
    return _result(points, _forward_only(s), mask)


_NO_REVERSE = ("dynamics.run has no reverse-mode derivative (jax.grad, jax.vjp) without implicit=True: it "
               "stops early by a lax.while_loop (Reverse-mode differentiation does not work for lax.while_loop "
               "or lax.fori_loop with dynamic start/stop values). Use "
               "dynamics.run_fixed(x, tokens, hparams, n_steps=...) (the same run as a fixed-length scan; the "
               "derivative of the unrolled steps) or dynamics.run(..., implicit=True) (the implicit derivative "
               "at the fixed point). Forward mode (jax.jvp, jax.jacfwd) works as it is.")


def _refuse_transpose(cotangent, tangent):
    raise ValueError(_NO_REVERSE)  # the type of JAX's own message


# The identity on a tangent, which forward mode and vmap pass through and reverse mode refuses to
# transpose (JAX's own hooks for a custom transpose, linear_call, have no vmap rule): the tangents
# of run's while_loop go through it, so jax.grad meets it before the loop and names the ways out.
_no_reverse_p = jax.extend.core.Primitive("tokdyn_run_no_reverse")
_no_reverse_p.def_impl(lambda v: v)
_no_reverse_p.def_abstract_eval(lambda v: v)
jax.interpreters.mlir.register_lowering(_no_reverse_p, jax.interpreters.mlir.lower_fun(lambda v: v,
                                                                                       multiple_results=False))
jax.interpreters.ad.deflinear2(_no_reverse_p, _refuse_transpose)
jax.interpreters.batching.primitive_batchers[_no_reverse_p] = lambda args, dims: (_no_reverse_p.bind(*args), dims[0])


@jax.custom_jvp
def _forward_only(tree):
    """``tree`` unchanged; forward mode (``jvp``, ``jacfwd``, also under ``vmap``) passes its
    tangents through, and reverse mode (which would transpose the ``while_loop`` that made it)
    raises ``ValueError`` naming :func:`run_fixed` and ``implicit=True`` (beside JAX's message
    about ``while_loop``). Compiles to nothing outside differentiation."""
    return tree


@_forward_only.defjvp
def _forward_only_jvp(primals, tangents):
    (tree,), (dtree,) = primals, tangents

    def guard(d):
        if d.dtype == jax.dtypes.float0:  # an integer or bool leaf: no tangent to transpose
            return d
        return _no_reverse_p.bind(d)

    return tree, jax.tree_util.tree_map(guard, dtree)


def _dense_tangent_solve(g, y):
    """Solve the linear system ``g(u) = y`` for a linear ``g`` on pytrees (a state's), densely: the
    matrix of ``g`` over the flattened state, then ``jnp.linalg.solve`` (transposable in ``y``)."""
    flat_y, unravel = jax.flatten_util.ravel_pytree(y)
    basis = varying(jnp.eye(flat_y.shape[0], dtype=flat_y.dtype), flat_y)  # tangents vary as the state does
    columns = jax.vmap(lambda e: jax.flatten_util.ravel_pytree(g(unravel(e)))[0])(basis)  # (n, n): row i = g(e_i)
    return unravel(jnp.linalg.solve(columns.T, flat_y))


def _run_implicit(rule, x, points, tokens, hparams, mask, n_steps, tol, key) -> Result:
    """:func:`run` with ``implicit=True``: the ``while_loop`` on values without derivatives, then
    ``lax.custom_root`` at its final state for the rule's step map at the last step taken."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(_start(rule, points, tokens, hparams).rule_state)[0]:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise TypeError(f"run(implicit=True) needs a rule state of floating point leaves; rule "
                            f"{rule.name or _callable_name(rule.step)!r} has state{jax.tree_util.keystr(path)} of "
                            f"dtype {jnp.result_type(leaf)}")
    const = jax.lax.stop_gradient
    c_points, c_hparams = const(points), const(hparams)

    def cond(s):
        return jnp.logical_and(~s.converged, s.step < n_steps)

    s = jax.lax.while_loop(cond, lambda s: _advance(rule, c_points, s, c_hparams, tol, key),
                           _start(rule, c_points, const(tokens), c_hparams, key))
    last = jnp.maximum(s.step - 1, 0)  # the map of the last step taken

    def residual(state):
        new = rule.step(state, points, hparams, last, key)
        return jax.tree_util.tree_map(lambda a, b: a - b, new, state)

    state = jax.lax.custom_root(residual, s.rule_state, lambda f, guess: guess, _dense_tangent_solve)
    tokens = _tokens_of(state)
    labels = _labels_t(c_points.x_t, _tokens_of(s.rule_state), mask)
    return Result(tokens=tokens, velocity=s.movement, labels=labels, steps=s.step, converged=s.converged,
                  delta=s.delta, state=state)


def _scan_steps(rule, points, tokens, hparams, n_steps: int, tol, key, record: bool):
    """``n_steps`` (static) applications of the rule by ``lax.scan``, each step after convergence
    masked (the state is carried unchanged), so the final state is :func:`run`'s. Returns the
    initial state, the final state and, with ``record``, the per-step (tokens, delta)."""
    def body(s, _):
        new = _advance(rule, points, s, hparams, tol, key)
        s = jax.tree_util.tree_map(lambda old, nw: jnp.where(s.converged, old, nw), s, new)
        return s, ((_tokens_of(s.rule_state), jnp.where(s.step > 0, s.delta, 0.0)) if record else None)

    s0 = _start(rule, points, tokens, hparams, key)
    final, ys = jax.lax.scan(body, s0, None, length=n_steps)
    return s0, final, ys


@_checks.checked_jit(_check_trajectory, static_argnames=("n_steps", "rule"))
def run_fixed(x, tokens, hparams=None, *, rule: Rule = BUILTIN, mask=None, n_steps: int = 30, tol=1e-3,
              key=None) -> Result:
    """:func:`run` as a fixed-length ``lax.scan``: reverse-mode differentiable.

    Takes the arguments of :func:`run`, with ``n_steps`` static (a Python int): it always evaluates
    ``n_steps`` steps, and every step after the run has converged leaves the state unchanged, so
    ``tokens``, ``velocity``, ``steps``, ``converged``, ``delta``, ``labels`` and ``state`` are
    :func:`run`'s (up to float32 rounding: the two are different programs). Costs ``n_steps`` steps
    whatever the step of convergence; use :func:`run` when no reverse-mode derivative is needed.

    Derivatives (``jax.grad``, ``jax.vjp``, ``jax.jacfwd``) are those of the unrolled steps, with the
    stopping step held fixed (it is a discrete decision, piecewise constant in every input; with
    ``tol=0`` no step is masked): the derivative of the run that stops where this one stopped,
    not an implicit derivative at the fixed point (that is :func:`run` with ``implicit=True``). Any rule whose ``step`` is differentiable is
    differentiable here, in its knobs (``hparams``), the points and the initial tokens.
    """
    x = _float(x)
    points = Points.of(x, mask)
    _, s, _ = _scan_steps(rule, points, tokens.astype(x.dtype), hparams, n_steps, tol, key, record=False)
    return _result(points, s, mask)


@_checks.checked_jit(_check_trajectory, static_argnames=("n_steps", "rule"))
def trajectory(x, tokens, hparams=None, *, rule: Rule = BUILTIN, mask=None, n_steps: int = 30, tol=1e-3,
               key=None) -> Trajectory:
    """Like :func:`run`, but record the tokens after every step (fixed length ``n_steps + 1``,
    static), for plots and analysis. Its final tokens and steps equal :func:`run`'s (with the same
    ``key``). Reverse-mode differentiable, like :func:`run_fixed` (the same steps). ``temperature``:
    the rule's ``temperature`` hook at each step (NaN for a rule without one)."""
    x = _float(x)
    points = Points.of(x, mask)
    s0, final, (toks, deltas) = _scan_steps(rule, points, tokens.astype(x.dtype), hparams, n_steps, tol, key,
                                            record=True)
    taken = jnp.arange(1, n_steps + 1) <= final.step  # deltas of steps not taken (after convergence) are zero
    steps = jnp.arange(n_steps, dtype=jnp.int32)
    if rule.temperature is None:
        temperature = jnp.full((n_steps,), jnp.nan, x.dtype)
    else:
        temperature = jax.vmap(lambda i: rule.temperature(hparams, i))(steps)
    final_tokens = _tokens_of(final.rule_state)
    return Trajectory(
        tokens=jnp.concatenate([_tokens_of(s0.rule_state)[None], toks], axis=0),
        delta=jnp.where(taken, deltas, 0.0),
        steps=final.step,
        converged=final.converged,
        labels=hard_labels(x, final_tokens, mask),
        temperature=temperature,
    )


# ---------------------------------------------------------------------------------------------- merged tokens


def _check_groups(tokens, merge_tol):
    _real_array("tokens", tokens)
    if np.ndim(tokens) < 2:
        raise ValueError(f"tokens must have shape (..., T, D), got {np.shape(tokens)}")
    _checks.real("merge_tol", merge_tol, low=0.0, low_open=True)


@_checks.checked_jit(_check_groups)
def token_groups(tokens, merge_tol=DEFAULT_MERGE_TOL):
    """Group tokens that sit closer than ``merge_tol`` to each other (Euclidean distance, single
    linkage: chains of close tokens form one group). Returns ``(group, n_groups)``: (T,) int32 the
    smallest token index of each token's group, and the number of groups (int32). Leading axes of
    ``tokens`` (..., T, D) are batch axes (e.g. the steps of a trajectory)."""
    tokens = _float(tokens)
    if tokens.ndim > 2:
        return jax.vmap(lambda t: token_groups(t, merge_tol))(tokens)
    n = tokens.shape[0]
    d2 = jnp.sum((tokens[:, None, :] - tokens[None, :, :]) ** 2, axis=-1)  # (T, T)
    adj = (d2 < jnp.asarray(merge_tol, tokens.dtype) ** 2).astype(jnp.float32)  # diagonal 1
    for _ in range(max(int(np.ceil(np.log2(max(n, 2)))), 1)):  # transitive closure by squaring
        adj = (adj @ adj > 0).astype(jnp.float32)
    group = jnp.argmax(adj > 0, axis=1).astype(jnp.int32)  # first member of the component
    return group, jnp.sum(group == jnp.arange(n)).astype(jnp.int32)


def _check_split(traj, merge_tol):
    if not isinstance(traj, Trajectory):
        raise TypeError(f"traj must be a tokdyn.dynamics.Trajectory, got {type(traj).__name__}")
    _checks.real("merge_tol", merge_tol, low=0.0, low_open=True)


@_checks.checked_jit(_check_split)
def split_temperatures(traj: Trajectory, merge_tol=DEFAULT_MERGE_TOL):
    """The temperatures at which annealed tokens split, from a :func:`trajectory`.

    Tokens closer than ``merge_tol`` (in data units; default ``DEFAULT_MERGE_TOL`` = 1e-2) form one
    group (:func:`token_groups`). Entry ``k - 2`` (k = 2 .. T) is the temperature of the last step
    after which the number of groups rose to at least ``k`` from fewer than ``k`` (the split that
    stayed: while a group splits, tokens moving apart at different speeds can form extra groups for
    a few steps that merge again; a later split supersedes those); tokens that start apart and
    never merge do not count. NaN if it never happens. Returns (T - 1,) in the trajectory's dtype.

    A split is recorded when the separating tokens are ``merge_tol`` apart, a few steps after the
    merged group became unstable (the linear growth rate is ``2 lambda / tau``, barely above 1 just
    below the critical temperature): the recorded temperature is at or below the critical one, by
    a lag that shrinks with slower schedules and larger perturbations of the merged state.
    """
    _, count = token_groups(traj.tokens, merge_tol)  # (S + 1,)
    n = traj.tokens.shape[-2]
    levels = jnp.arange(2, n + 1)[:, None]  # (T - 1, 1)
    event = (count[None, 1:] >= levels) & (count[None, :-1] < levels)  # (T - 1, S) upward crossings
    last = event.shape[1] - 1 - jnp.argmax(event[:, ::-1], axis=1)
    return jnp.where(jnp.any(event, axis=1), traj.temperature[last], jnp.nan).astype(traj.tokens.dtype)


# ---------------------------------------------------------------------------------------------- initial tokens


def _check_init(key, n_tokens, dim, method, x, mask, scale):
    _checks.prng_key("key", key)
    _checks.positive_int("n_tokens", n_tokens)
    _checks.positive_int("dim", dim)
    _checks.choice("method", method, INIT_METHODS)
    _checks.real("scale", scale, low=0.0)
    if method != "normal":
        if x is None:
            raise ValueError(f"init method {method!r} needs the data: pass x=(N, D) points")
        _real_array("x", x, ndim=2)
        if np.shape(x)[-1] != dim:
            raise ValueError(f"x must have dimension dim={dim}, got shape {np.shape(x)}")
        _checks.mask_for("mask", mask, np.shape(x)[0])
        if mask is not None and _checks.on_host(mask) and not np.any(mask):
            raise ValueError(f"mask must select at least one point for init method {method!r} (which draws tokens "
                             f"from the valid points), got an all-False mask of {np.shape(mask)[0]} entries")
        if method == "data" and n_tokens > np.shape(x)[0]:
            raise ValueError(f"n_tokens={n_tokens} exceeds the number of points N={np.shape(x)[0]} for method 'data'")
        if method == "kmeans++":
            n_valid = np.shape(x)[0] if mask is None or not _checks.on_host(mask) else int(np.sum(mask))
            if n_tokens > n_valid:
                raise ValueError(f"n_tokens={n_tokens} exceeds the number of valid points ({n_valid}) for method "
                                 "'kmeans++', which draws distinct points")


@_checks.checked_jit(_check_init, static_argnames=("n_tokens", "dim", "method"))
def init_tokens(key, n_tokens: int, dim: int, *, method: str = "data", x=None, mask=None, scale=1.0):
    """Initial tokens, (n_tokens, dim).

    Methods:
      ``"data"``: ``n_tokens`` distinct valid points of ``x`` drawn uniformly (Forgy init;
        needs ``x``). If there are fewer valid points than tokens, the rest are padded rows.
      ``"normal"``: ``scale * N(0, I)``.
      ``"data_mean"``: the mean of the valid points of ``x`` plus ``scale * N(0, I)`` (the
        shared-Gaussian init of Slot Attention; needs ``x``).
      ``"kmeans++"``: k-means++ seeding (Arthur & Vassilvitskii 2007; needs ``x``): the first token
        is a valid point drawn uniformly, each next one a valid point drawn with probability
        proportional to its squared distance to the nearest token drawn so far (token ``k`` uses
        ``fold_in(key, k)``). The plain rule, not scikit-learn's default greedy variant (which
        keeps the best of ``2 + log K`` candidates per token). The tokens are distinct points of
        ``x``: if every valid point not yet drawn coincides with a drawn one, the next is drawn
        uniformly among them; if there are fewer valid points than tokens (only possible with a
        traced ``mask``; host data raises), the rest are padded rows, as for ``"data"``.

    ``scale`` is used by ``"normal"`` and ``"data_mean"`` only. ``x``: (N, dim); ``mask``: (N,) bool.
    The random numbers are drawn in float32 whatever the dtype (under ``JAX_ENABLE_X64`` too), so a
    key gives the same tokens with and without x64 (``"normal"``: float32 tokens; the data methods:
    in ``x``'s dtype).

    A mask with no valid point leaves the data methods nothing to draw from: an all-False host
    ``mask`` is a ``ValueError`` naming ``mask``; a traced one (not inspected) gives NaN tokens,
    which a run carries to NaN tokens, labels -1 and NaN metrics.
    """
    if method == "normal":  # drawn in float32 whatever the dtype: the same tokens with and without x64
        return scale * jax.random.normal(key, (n_tokens, dim), jnp.float32)
    x = _float(x)
    w = _weights(x, mask)
    if method == "data_mean":
        mean = (w @ x) / jnp.maximum(w.sum(), 1.0)
        tokens = mean + scale * jax.random.normal(key, (n_tokens, dim), jnp.float32).astype(x.dtype)
    elif method == "kmeans++":
        tokens = _kmeans_plus_plus(key, x, w > 0, n_tokens)
    else:
        tokens = forgy(x, jax.random.uniform(key, w.shape, jnp.float32), mask, n_tokens)
    if method == "data":
        return tokens  # forgy: NaN already without a valid point
    return tokens if mask is None else jnp.where(jnp.any(mask), tokens, jnp.nan)  # no valid point: NaN


def _kmeans_plus_plus(key, x, valid, n_tokens: int):
    """(n_tokens, D) k-means++ seeding of (N, D) ``x`` restricted to the (N,) bool ``valid`` rows
    (see :func:`init_tokens`). Distances in the exact form ``|x - t|^2``, so a drawn point (and any
    copy of it) has weight exactly 0 and is never drawn again."""
    def body(k, carry):
        idx, drawn, d2 = carry
        spread = jnp.where(valid, d2, 0.0)  # D^2 weights (1 for every valid point at k = 0)
        fresh = jnp.where(valid & ~drawn, 1.0, 0.0)  # every valid point is a copy of a drawn one
        spare = jnp.where(drawn, 0.0, 1.0)  # fewer valid points than tokens
        p = jnp.where(jnp.sum(spread) > 0, spread, jnp.where(jnp.sum(fresh) > 0, fresh, spare))
        # float32 logits: the same Gumbel draws (and tokens) with and without x64
        i = jax.random.categorical(jax.random.fold_in(key, k), jnp.log(p).astype(jnp.float32)).astype(jnp.int32)
        new = jnp.sum((x - x[i]) ** 2, axis=-1)  # (N,)
        return idx.at[k].set(i), drawn.at[i].set(True), jnp.where(k == 0, new, jnp.minimum(d2, new))

    n = x.shape[0]
    start = varying((jnp.zeros(n_tokens, jnp.int32), jnp.zeros(n, bool), jnp.ones(n, x.dtype)), x, valid, key)
    idx, _, _ = jax.lax.fori_loop(0, n_tokens, body, start)
    return x[idx]


def forgy(x, noise, mask, n_tokens: int):
    """Forgy init from given noise: the ``n_tokens`` valid rows of ``x`` with the largest
    ``noise`` (N,) values. With i.i.d. uniform noise this is a uniform sample without replacement.
    With fewer valid rows than tokens the rest are padded rows; with no valid row at all (an
    all-False ``mask``) every token is NaN. (A plain traceable function: ``n_tokens`` must be a
    Python int.)"""
    score = noise if mask is None else jnp.where(mask, noise, -1.0)
    _, idx = jax.lax.top_k(score, n_tokens)
    return x[idx] if mask is None else jnp.where(jnp.any(mask), x[idx], jnp.nan)


# ---------------------------------------------------------------------------------------------- k-means baseline


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KMeans:
    """Outcome of :func:`kmeans`.

    Attributes:
      tokens: (K, D) final centres.
      labels: (N,) int32 index of the nearest final centre (first on ties), -1 on padded points and
        on points whose distances are not finite (NaN or infinite centres or points).
      inertia: the sum over valid points of the squared distance to their centre (x's dtype); NaN
        when some valid point has label -1.
      steps: int32 number of Lloyd iterations applied (scikit-learn's ``n_iter_``).
      converged: bool, whether the last iteration changed no label or moved the centres by at most
        ``tol`` (False when the run stopped at ``n_steps``).
    """

    tokens: jax.Array
    labels: jax.Array
    inertia: jax.Array
    steps: jax.Array
    converged: jax.Array


def _check_kmeans(x, tokens, mask, n_steps, tol):
    arrays = _check_points(x, tokens, mask)
    if isinstance(n_steps, (int, float)):
        _checks.positive_int("n_steps", n_steps)
    _checks.real("n_steps", n_steps, low=1)
    _checks.real("tol", tol, low=0.0)
    return arrays


_HIGHEST = jax.lax.Precision.HIGHEST


@_checks.checked_jit(_check_kmeans)
def kmeans(x, tokens, mask=None, *, n_steps=100, tol=0.0) -> KMeans:
    r"""Lloyd's k-means from given initial centres: the hard-assignment baseline of the dynamics.

    Each iteration assigns every valid point to its nearest centre (:math:`rg\min_j
    \|x_i - t_j\|^2`, first on ties; expanded form :math:`2 t_j \cdot x_i - \|t_j\|^2` as in the
    rule) and moves every centre to the mean of its points. A centre that gets no point keeps its
    position (scikit-learn instead relocates an empty cluster to a far point, so the two agree only
    while no cluster empties). The run stops after the first iteration that changes no label or
    whose total squared centre shift :math:`\sum_j \|t_j' - t_j\|^2` is at most ``tol``, else after
    ``n_steps`` iterations; the labels are then recomputed at the final centres. With the same
    initial centres this is ``sklearn.cluster.KMeans(n_clusters=K, init=tokens, n_init=1,
    algorithm="lloyd", max_iter=n_steps, tol=tol / mean(var(x, axis=0)))`` (scikit-learn's ``tol``
    is relative to the data's mean variance; ours is absolute) on the valid rows.

    Args:
      x: (N, D) points (NumPy or JAX).
      tokens: (K, D) initial centres (e.g. :func:`init_tokens` with ``method="kmeans++"``).
      mask: optional (N,) bool; False rows are ignored (their values never enter the result).
      n_steps: the most iterations (traced; >= 1).
      tol: threshold on the total squared centre shift of an iteration (traced; >= 0). 0 = stop
        only when the labels stop changing.

    Returns:
      :class:`KMeans`; the inertia in the exact form :math:`\sum_i \|x_i - t_{l_i}\|^2` (as
      :func:`tokdyn.metrics.sse`). Initial centres that are not all finite (only possible traced:
      host values are refused) give NaN centres, labels -1 and a NaN inertia. Jitted, vmappable
      over ``x``, ``tokens`` and ``mask``, callable
      inside a user's transformations. Products run at the highest precision (no TF32 on GPUs).
    """
    x = _float(x)
    valid = jnp.ones(x.shape[:1], bool) if mask is None else mask
    x = jnp.where(valid[:, None], x, 0.0)  # padded rows cannot poison the products
    x_t = x.T
    tokens = tokens.astype(x.dtype)
    ids = jnp.arange(tokens.shape[0], dtype=jnp.int32)[:, None]  # (K, 1)

    def assign(t):  # (N,) int32
        nearest = jnp.argmax(_scores_t(x_t, t, precision=_HIGHEST), axis=0).astype(jnp.int32)
        return jnp.where(valid, nearest, -1)

    def body(s):
        t, labels_old, step, _ = s
        labels = assign(t)
        members = (labels[None, :] == ids).astype(x.dtype)  # (K, N); no row on padded points (-1)
        count = jnp.sum(members, axis=1)[:, None]  # (K, 1)
        sums = jnp.matmul(members, x, precision=_HIGHEST)  # (K, D)
        new = jnp.where(count > 0, sums / jnp.maximum(count, 1.0), t)  # an empty cluster stays put
        done = jnp.all(labels == labels_old) | (jnp.sum((new - t) ** 2) <= tol)
        return new, labels, step + 1, done

    start = varying((tokens, jnp.full(x.shape[:1], -1, jnp.int32), jnp.zeros((), jnp.int32), jnp.zeros((), bool)),
                     x, valid, tokens)
    t, _, steps, done = jax.lax.while_loop(lambda s: ~s[3] & (s[2] < n_steps), body, start)
    # a non-finite initial centre (traced: not inspected) would lose every point to it and come back
    # as a finite mean: report NaN centres, labels -1 and a NaN inertia instead
    t = jnp.where(jnp.all(jnp.isfinite(tokens)), t, jnp.nan)
    labels = _labels_t(x_t, t, valid, precision=_HIGHEST)  # -1 also where a distance is not finite
    sq = (x - t[jnp.maximum(labels, 0)]) ** 2  # (N, D), exact form
    inertia = jnp.where(jnp.any(valid & (labels < 0)), jnp.nan, jnp.sum(jnp.where(valid[:, None], sq, 0.0)))
    return KMeans(tokens=t, labels=labels, inertia=inertia, steps=steps, converged=done)
