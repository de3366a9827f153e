r"""Token update rules and the loop that runs them.

The rule (one step :math:`s = 0, 1, \dots`, for points :math:`x_i`, tokens :math:`t_j`, velocity
:math:`v_j` starting at 0):

1. :math:`a_{ij} = \mathrm{softmax}_j(-\|x_i - t_j\|^2 / \tau_s)` (padded points get :math:`a_{ij}=0`);
   with ``sinkhorn_iters`` :math:`K_S > 0`, :math:`a` is instead the entropic optimal-transport plan
   with uniform token marginals (:func:`sinkhorn`).
2. :math:`m_j = \sum_i a_{ij} x_i / (\sum_i a_{ij} + 10^{-8})`; with ``slot_norm`` :math:`\sigma = 1`,
   Slot Attention's placement of the epsilon instead: :math:`a'_{ij} = a_{ij} + 10^{-8}` (valid points),
   :math:`m_j = \sum_i a'_{ij} x_i / \sum_i a'_{ij}`.
3. :math:`f_j = m_j - t_j + \gamma \sum_{k \ne j} (t_j - t_k) / r_{jk}^3`,
   :math:`r_{jk} = \max(\|t_j - t_k\|, r_{\min})`
4. :math:`v_j \leftarrow \beta v_j + \alpha f_j + \sqrt{2 \alpha T}\,\xi_{sj}`,
   :math:`t_j \leftarrow t_j + v_j`, with damping (step size) :math:`\alpha` and Langevin temperature
   :math:`T`; :math:`\xi_{sj} \sim \mathcal N(0, I)` drawn from ``fold_in(key, s)``.
5. :math:`\Delta = \max_{j,d} |v_{jd}|`; the run stops after the first step :math:`s` with
   :math:`\Delta < \mathrm{tol}` once the temperature schedule has reached :math:`\tau`
   (``steps = s + 1``, ``converged = True``), else after ``n_steps``.
6. Hard labels: :math:`\arg\min_j \|x_i - t_j\|^2` at the final tokens (-1 on padded points).

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

Everything here is a single run: ``x`` is (N, D) and ``tokens`` (T, D). The public functions
are the jitted kernels themselves: call them inside your own ``jit``/``vmap``/``scan``, or hand a
per-run function to :func:`tokdyn.execute.map_runs`, which picks the execution strategy
(sequential map on CPU, wide vmap on accelerators) per backend. Arguments are checked before
anything is traced (shapes always; values when they are host data, see :mod:`tokdyn._checks`).
The Langevin rule needs a ``key``; the noise of step :math:`s` comes from ``fold_in(key, s)``, so
it does not depend on batching.

:func:`kmeans` (Lloyd's algorithm, hard assignments) is the classical baseline of the rule, from
the same initial tokens (``init_tokens(..., method="kmeans++")`` for k-means++ seeding).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks

EPS_MASS = 1e-8
MIN_DISTANCE = 1e-3
INIT_METHODS = ("data", "normal", "data_mean", "kmeans++")
DEFAULT_MERGE_TOL = 1e-2


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Hparams:
    """Sweepable hyperparameters of the update rule; every leaf is traced (see the module docstring
    for the equations). The defaults of the fields after ``repulsion`` switch their rule off.

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
      sinkhorn_iters: Sinkhorn iterations K_S (a non-negative integer, stored as a float so that
        it stacks with the other leaves): 0 = softmax assignment; K_S >= 1 = balanced assignment
        (:func:`sinkhorn`).
      slot_norm: sigma in [0, 1], where the 1e-8 of the weighted mean goes: 0 = on the token's
        mass (``sum_i a_ij + 1e-8``), 1 = on every attention weight before normalising over points,
        as in Slot Attention; values in between blend the two linearly (numerator and denominator).
      anneal_ratio: r >= 1: the schedule starts at ``r * temperature`` (a schedule never increases).
      anneal_steps: S >= 0 (integer-valued): steps over which the temperature falls geometrically
        to ``temperature``; the run cannot stop before the schedule reaches it. 0 = no annealing.
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
        _checks.real("sinkhorn_iters", self.sinkhorn_iters, low=0.0)
        _checks.whole("sinkhorn_iters", self.sinkhorn_iters, "0 = softmax, >= 1 = Sinkhorn iterations")
        _checks.real("slot_norm", self.slot_norm, low=0.0, high=1.0)
        if _checks.on_host(self.anneal_ratio) and np.any(np.asarray(self.anneal_ratio) < 1.0):
            raise ValueError(f"anneal_ratio must be >= 1 (the schedule runs from anneal_ratio * temperature down "
                             f"to temperature and may never increase), got {self.anneal_ratio!r}")
        _checks.real("anneal_ratio", self.anneal_ratio, low=1.0)
        _checks.real("anneal_steps", self.anneal_steps, low=0.0)
        _checks.whole("anneal_steps", self.anneal_steps, "0 = constant temperature")
        return self

    @property
    def stochastic(self) -> bool:
        """Whether the Langevin temperature is host data and positive, so a key is needed."""
        return _checks.on_host(self.langevin) and bool(np.any(np.asarray(self.langevin) > 0))

    def row(self) -> tuple:
        """The fields as a tuple of Python floats, in :data:`FIELDS` order (a row of a method
        table, see :class:`tokdyn.runs.ClusterRun`)."""
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
class State:
    """Dynamical state of one run inside the loop: tokens (T, D), velocity (T, D), steps taken,
    last change, whether it has converged."""

    tokens: jax.Array
    velocity: jax.Array
    step: jax.Array
    delta: jax.Array
    converged: jax.Array

    @staticmethod
    def start(tokens) -> "State":
        """The state before the first step: at ``tokens``, at rest."""
        tokens = jnp.asarray(tokens)
        return State(tokens=tokens, velocity=jnp.zeros_like(tokens), step=jnp.zeros((), jnp.int32),
                     delta=jnp.full((), jnp.inf, tokens.dtype), converged=jnp.zeros((), bool))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Result:
    """Outcome of :func:`run`.

    Attributes:
      tokens: (T, D) final tokens.
      velocity: (T, D) final velocity.
      labels: (N,) int32 hard labels at the final tokens, -1 on padded points.
      steps: int32 number of steps applied.
      converged: bool, whether the last step moved every coordinate by less than ``tol``.
      delta: float, the largest coordinate change in the last step.
    """

    tokens: jax.Array
    velocity: jax.Array
    labels: jax.Array
    steps: jax.Array
    converged: jax.Array
    delta: jax.Array


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
    _checks.finite_array("x", x, ndim=2)
    _checks.finite_array("tokens", tokens, ndim=2)
    n, d = np.shape(x)
    t, dt = np.shape(tokens)
    if t < 1:
        raise ValueError(f"tokens must hold at least one token, got shape {np.shape(tokens)}")
    if dt != d:
        raise ValueError(f"tokens and x must have the same dimension: tokens has D={dt}, x has D={d}")
    _checks.mask_for("mask", mask, n)
    return _checks.host_arrays(x=x, tokens=tokens, mask=mask)


def _check_hparams(hparams, key):
    if not isinstance(hparams, Hparams):
        raise TypeError(f"hparams must be a tokdyn.dynamics.Hparams, got {type(hparams).__name__}")
    hparams.validate()
    if key is None:
        if hparams.stochastic:
            raise ValueError(f"hparams.langevin={hparams.langevin!r} > 0 makes the dynamics stochastic: pass "
                             "key=jax.random.key(seed)")
    else:
        _checks.prng_key("key", key)


def _check_run(x, tokens, hparams, mask, n_steps, tol, key, static_steps=False):
    arrays = _check_points(x, tokens, mask)
    _check_hparams(hparams, key)
    if static_steps or isinstance(n_steps, (int, float)):
        _checks.positive_int("n_steps", n_steps)
    _checks.real("n_steps", n_steps, low=1)
    _checks.real("tol", tol, low=0.0)
    return arrays


def _check_trajectory(x, tokens, hparams, mask, n_steps, tol, key):
    return _check_run(x, tokens, hparams, mask, n_steps, tol, key, static_steps=True)


def _check_update(x, tokens, velocity, hparams, mask, step, key):
    arrays = _check_points(x, tokens, mask)
    _checks.finite_array("velocity", velocity, ndim=2)
    if np.shape(velocity) != np.shape(tokens):
        raise ValueError(f"velocity must have the shape of tokens {np.shape(tokens)}, got {np.shape(velocity)}")
    _check_hparams(hparams, key)
    return {**arrays, **_checks.host_arrays(velocity=velocity)}


# ---------------------------------------------------------------------------------------------- the rule


def _float(x):
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


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


def _soft_assignment_t(x_t, w, tokens, temperature):
    s = _scores_t(x_t, tokens) / temperature  # (T, N)
    e = jnp.exp(s - jnp.max(s, axis=0, keepdims=True))
    return e * (w / jnp.sum(e, axis=0))  # (T, N); zero columns on padded points


def _check_soft_assignment(x, tokens, temperature, mask):
    _checks.real("temperature", temperature, low=0.0, low_open=True)
    return _check_points(x, tokens, mask)


@_checks.checked_jit(_check_soft_assignment)
def soft_assignment(x, tokens, temperature, mask=None):
    """(N, T) softmax over tokens of ``-|x_i - t_j|^2 / temperature``; zero rows on padded points."""
    x = _float(x)
    return _soft_assignment_t(x.T, _weights(x, mask), tokens.astype(x.dtype), temperature).T


def _sinkhorn_log_t(logits_t, w, n_iters):
    """Log-domain Sinkhorn on (T, N) logits: returns (T, N) log-plan whose columns (points) sum to 1
    and whose rows (tokens) approach ``sum(w) / T``; padded points (w = 0) do not count."""
    n_tokens = logits_t.shape[0]
    log_row = jnp.log(jnp.maximum(jnp.sum(w), jnp.finfo(logits_t.dtype).tiny) / n_tokens)

    def cols(l):  # every point's mass over tokens sums to 1
        return l - jax.nn.logsumexp(l, axis=0, keepdims=True)

    def body(_, l):
        r = jax.nn.logsumexp(l, axis=1, b=w[None, :], keepdims=True)  # (T, 1) log token mass
        r = jnp.where(jnp.isfinite(r), r, log_row)  # no valid point: leave the row alone
        return cols(l + (log_row - r))

    return jax.lax.fori_loop(0, n_iters, body, cols(logits_t))


def _balanced_assignment_t(x_t, w, tokens, temperature, n_iters):
    s = _scores_t(x_t, tokens) / temperature  # (T, N)
    return jnp.exp(_sinkhorn_log_t(s, w, n_iters)) * w


def _check_sinkhorn(logits, n_iters, mask):
    _checks.finite_array("logits", logits, ndim=2)
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
    return (jnp.exp(_sinkhorn_log_t(logits.T, w, n_iters)) * w).T


def coulomb(tokens):
    """(T, D) ``sum_{k != j} (t_j - t_k) / max(|t_j - t_k|, MIN_DISTANCE)^3``."""
    diff = tokens[:, None, :] - tokens[None, :, :]  # (T, T, D)
    r2 = jnp.sum(diff * diff, axis=-1)  # (T, T)
    r2 = jnp.maximum(r2, MIN_DISTANCE**2)
    inv_r3 = jax.lax.rsqrt(r2) / r2  # r^-3; the diagonal's diff is 0 and contributes 0
    return jnp.sum(diff * inv_r3[..., None], axis=1)


def _temperature_at(hparams, step):
    """tau_s = tau * r ** max(0, 1 - s / S) (exactly tau when r = 1 or S = 0 or s >= S)."""
    r, n_anneal = hparams.anneal_ratio, hparams.anneal_steps
    frac = jnp.clip(1.0 - step / jnp.maximum(n_anneal, 1.0), 0.0, 1.0)
    on = (n_anneal > 0) & (r != 1.0) & (frac > 0)
    return jnp.where(on, hparams.temperature * r ** jnp.where(on, frac, 0.0), hparams.temperature)


def _check_schedule(hparams, n_steps):
    if not isinstance(hparams, Hparams):
        raise TypeError(f"hparams must be a tokdyn.dynamics.Hparams, got {type(hparams).__name__}")
    hparams.validate()
    _checks.positive_int("n_steps", n_steps)


@_checks.checked_jit(_check_schedule, static_argnames=("n_steps",))
def temperature_schedule(hparams: Hparams, n_steps: int) -> jax.Array:
    """(n_steps,) the temperature used at each step: ``tau * r ** max(0, 1 - s / S)``."""
    return jax.vmap(lambda s: _temperature_at(hparams, s))(jnp.arange(n_steps, dtype=jnp.int32))


def _invariants(x, mask):
    """Per-run loop invariants: [x, 1] (N, D + 1), x.T (D, N), weights (N,), sum_i w_i x_i (D,),
    n = sum w. The column of ones makes one product give a token's soft sum of points and its
    mass (about 10% faster per step on XLA:CPU than a separate row sum, which it splits in two)."""
    w = _weights(x, mask)
    x1 = jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=1)
    return x1, x.T, w, w @ x, jnp.sum(w)


def _update(inv, tokens, velocity, hparams, step, key):
    x1, x_t, w, x_sum, n_valid = inv
    temperature = _temperature_at(hparams, step)
    n_iters = jnp.asarray(hparams.sinkhorn_iters).astype(jnp.int32)
    a = jax.lax.cond(n_iters > 0, lambda: _balanced_assignment_t(x_t, w, tokens, temperature, n_iters),
                     lambda: _soft_assignment_t(x_t, w, tokens, temperature))  # (T, N)
    sigma = hparams.slot_norm
    # sigma = 0: (a x) / (sum a + eps); sigma = 1: ((a + eps) w x) / sum (a + eps) w
    sums = a @ x1  # (T, D + 1): sum_i a_ki x_i, then the mass sum_i a_ki
    means = (sums[:, :-1] + (sigma * EPS_MASS) * x_sum) / (
        sums[:, -1] + (EPS_MASS * (1.0 - sigma) + (sigma * EPS_MASS) * n_valid))[:, None]  # (T, D)
    force = means - tokens + hparams.repulsion * coulomb(tokens)
    velocity = hparams.momentum * velocity + hparams.damping * force
    if key is not None:
        def kick(v):
            xi = jax.random.normal(jax.random.fold_in(key, step), v.shape, v.dtype)
            return v + jnp.sqrt(2.0 * hparams.damping * hparams.langevin).astype(v.dtype) * xi

        velocity = jax.lax.cond(hparams.langevin > 0, kick, lambda v: v, velocity)
    return tokens + velocity, velocity


@_checks.checked_jit(_check_update)
def update(x, tokens, velocity, hparams: Hparams, mask=None, *, step=0, key=None):
    """One application of the rule at step index ``step`` (which sets the annealed temperature
    and the Langevin noise ``fold_in(key, step)``). Returns ``(tokens, velocity)`` after the step."""
    x = _float(x)
    return _update(_invariants(x, mask), tokens.astype(x.dtype), velocity.astype(x.dtype), hparams,
                   jnp.asarray(step, jnp.int32), key)


def _check_hard_labels(x, tokens, mask):
    return _check_points(x, tokens, mask)


def _labels_t(x_t, tokens, mask):
    labels = jnp.argmax(_scores_t(x_t, tokens), axis=0).astype(jnp.int32)  # (N,)
    return labels if mask is None else jnp.where(mask, labels, -1)


@_checks.checked_jit(_check_hard_labels)
def hard_labels(x, tokens, mask=None):
    """(N,) int32 index of the nearest token (first on ties); -1 on padded points."""
    x = _float(x)
    return _labels_t(x.T, tokens.astype(x.dtype), mask)


def _advance(inv, s: State, hparams, tol, key) -> State:
    tokens, velocity = _update(inv, s.tokens, s.velocity, hparams, s.step, key)
    delta = jnp.max(jnp.abs(velocity))
    # no stop while the temperature is still annealing
    return State(tokens, velocity, s.step + 1, delta, (delta < tol) & (s.step >= hparams.anneal_steps))


@_checks.checked_jit(_check_run)
def run(x, tokens, hparams: Hparams = Hparams(), *, mask=None, n_steps=30, tol=1e-3, key=None) -> Result:
    """Run the rule from ``tokens`` until convergence or ``n_steps`` steps.

    Args:
      x: (N, D) points (NumPy or JAX).
      tokens: (T, D) initial tokens.
      hparams: :class:`Hparams` (traced: sweeping them does not recompile).
      mask: optional (N,) bool; False rows are ignored.
      n_steps: the most steps to take (traced).
      tol: convergence threshold on the largest coordinate change (traced).
      key: PRNG key of the Langevin noise (step ``s`` uses ``fold_in(key, s)``); required when
        ``hparams.langevin > 0``. Without a key the Langevin term is absent (also for a traced
        ``langevin``, which cannot be checked).

    Returns:
      :class:`Result`. Jitted, vmappable, callable inside a user's transformations.
    """
    x = _float(x)
    inv = _invariants(x, mask)  # loop invariants

    def cond(s):
        return jnp.logical_and(~s.converged, s.step < n_steps)

    s = jax.lax.while_loop(cond, lambda s: _advance(inv, s, hparams, tol, key), State.start(tokens.astype(x.dtype)))
    # labels from the loop's transposed points: a product on x.T built afresh costs as much as 3 steps
    return Result(tokens=s.tokens, velocity=s.velocity, labels=_labels_t(inv[1], s.tokens, mask), steps=s.step,
                  converged=s.converged, delta=s.delta)


@_checks.checked_jit(_check_trajectory, static_argnames=("n_steps",))
def trajectory(x, tokens, hparams: Hparams = Hparams(), *, mask=None, n_steps: int = 30, tol=1e-3,
               key=None) -> Trajectory:
    """Like :func:`run`, but record the tokens after every step (fixed length ``n_steps + 1``,
    static), for plots and analysis. Its final tokens and steps equal :func:`run`'s (with the same
    ``key``)."""
    x = _float(x)
    inv = _invariants(x, mask)

    def body(s, _):
        new = _advance(inv, s, hparams, tol, key)
        s = jax.tree_util.tree_map(lambda old, nw: jnp.where(s.converged, old, nw), s, new)
        return s, (s.tokens, jnp.where(s.step > 0, s.delta, 0.0))

    s0 = State.start(tokens.astype(x.dtype))
    final, (toks, deltas) = jax.lax.scan(body, s0, None, length=n_steps)
    taken = jnp.arange(1, n_steps + 1) <= final.step  # deltas of steps not taken (after convergence) are zero
    return Trajectory(
        tokens=jnp.concatenate([s0.tokens[None], toks], axis=0),
        delta=jnp.where(taken, deltas, 0.0),
        steps=final.step,
        converged=final.converged,
        labels=hard_labels(x, final.tokens, mask),
        temperature=jax.vmap(lambda i: _temperature_at(hparams, i))(jnp.arange(n_steps, dtype=jnp.int32)),
    )


# ---------------------------------------------------------------------------------------------- merged tokens


def _check_groups(tokens, merge_tol):
    _checks.finite_array("tokens", tokens)
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
        _checks.finite_array("x", x, ndim=2)
        if np.shape(x)[-1] != dim:
            raise ValueError(f"x must have dimension dim={dim}, got shape {np.shape(x)}")
        _checks.mask_for("mask", mask, np.shape(x)[0])
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
    """
    if method == "normal":
        return scale * jax.random.normal(key, (n_tokens, dim))
    x = _float(x)
    w = _weights(x, mask)
    if method == "data_mean":
        mean = (w @ x) / jnp.maximum(w.sum(), 1.0)
        return mean + scale * jax.random.normal(key, (n_tokens, dim), x.dtype)
    if method == "kmeans++":
        return _kmeans_plus_plus(key, x, w > 0, n_tokens)
    return forgy(x, jax.random.uniform(key, w.shape), mask, n_tokens)


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
        i = jax.random.categorical(jax.random.fold_in(key, k), jnp.log(p)).astype(jnp.int32)
        new = jnp.sum((x - x[i]) ** 2, axis=-1)  # (N,)
        return idx.at[k].set(i), drawn.at[i].set(True), jnp.where(k == 0, new, jnp.minimum(d2, new))

    n = x.shape[0]
    start = (jnp.zeros(n_tokens, jnp.int32), jnp.zeros(n, bool), jnp.ones(n, x.dtype))
    idx, _, _ = jax.lax.fori_loop(0, n_tokens, body, start)
    return x[idx]


def forgy(x, noise, mask, n_tokens: int):
    """Forgy init from given noise: the ``n_tokens`` valid rows of ``x`` with the largest
    ``noise`` (N,) values. With i.i.d. uniform noise this is a uniform sample without replacement.
    (A plain traceable function: ``n_tokens`` must be a Python int.)"""
    score = noise if mask is None else jnp.where(mask, noise, -1.0)
    _, idx = jax.lax.top_k(score, n_tokens)
    return x[idx]


# ---------------------------------------------------------------------------------------------- k-means baseline


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KMeans:
    """Outcome of :func:`kmeans`.

    Attributes:
      tokens: (K, D) final centres.
      labels: (N,) int32 index of the nearest final centre (first on ties), -1 on padded points.
      inertia: the sum over valid points of the squared distance to their centre (x's dtype).
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
      :func:`tokdyn.metrics.sse`). Jitted, vmappable over ``x``, ``tokens`` and ``mask``, callable
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

    start = (tokens, jnp.full(x.shape[:1], -1, jnp.int32), jnp.zeros((), jnp.int32), jnp.zeros((), bool))
    t, _, steps, done = jax.lax.while_loop(lambda s: ~s[3] & (s[2] < n_steps), body, start)
    labels = assign(t)
    sq = (x - t[jnp.maximum(labels, 0)]) ** 2  # (N, D), exact form
    inertia = jnp.sum(jnp.where(valid[:, None], sq, 0.0))
    return KMeans(tokens=t, labels=labels, inertia=inertia, steps=steps, converged=done)
