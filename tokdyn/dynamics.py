r"""Token update rules and the loop that runs them.

The rule (one step, for points :math:`x_i`, tokens :math:`t_j`, velocity :math:`v_j` starting at 0):

1. :math:`a_{ij} = \mathrm{softmax}_j(-\|x_i - t_j\|^2 / \tau)` (padded points get :math:`a_{ij}=0`)
2. :math:`m_j = \sum_i a_{ij} x_i / (\sum_i a_{ij} + 10^{-8})`
3. :math:`f_j = m_j - t_j + \gamma \sum_{k \ne j} (t_j - t_k) / r_{jk}^3`,
   :math:`r_{jk} = \max(\|t_j - t_k\|, r_{\min})`
4. :math:`v_j \leftarrow \beta v_j + f_j`, :math:`t_j \leftarrow t_j + v_j`
5. :math:`\Delta = \max_{j,d} |v_{jd}|`; the run stops after the first step :math:`s` with
   :math:`\Delta < \mathrm{tol}` (``steps = s``, ``converged = True``), else after ``n_steps``.
6. Hard labels: :math:`\arg\min_j \|x_i - t_j\|^2` at the final tokens (-1 on padded points).

Temperature :math:`\tau`, momentum :math:`\beta` and repulsion :math:`\gamma` are traced leaves of
:class:`Params`, so every method in :data:`METHODS` and every point of a sweep over them share one
compiled function. :math:`r_{\min} = 10^{-3}` (``MIN_DISTANCE``) softens the Coulomb term so
that coincident tokens exert no force on each other and near-coincident ones a bounded one:
repulsion can never produce ``inf`` or ``NaN``.

Everything here is a single run: ``x`` is (N, D) and ``tokens`` (T, D). Batch with ``jax.vmap``,
or hand a per-run function to :func:`tokdyn.sweep.map_runs`, which picks the execution strategy
(sequential map on CPU, wide vmap on accelerators) per backend.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from tokdyn import _checks

EPS_MASS = 1e-8
MIN_DISTANCE = 1e-3
INIT_METHODS = ("data", "normal", "data_mean")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Params:
    """Sweepable parameters of the update rule; every leaf is traced.

    Attributes:
      temperature: softmax temperature tau > 0.
      momentum: heavy-ball momentum beta in [0, 1).
      repulsion: Coulomb repulsion strength gamma >= 0.
    """

    temperature: jax.Array | float = 1.0
    momentum: jax.Array | float = 0.0
    repulsion: jax.Array | float = 0.0

    def validate(self) -> "Params":
        """Check concrete values; raises ``ValueError`` naming the field. Returns ``self``."""
        _checks.real("temperature", self.temperature, low=0.0, low_open=True)
        _checks.real("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        _checks.real("repulsion", self.repulsion, low=0.0)
        return self


METHODS: dict[str, Params] = {
    "baseline": Params(temperature=1.0, momentum=0.0, repulsion=0.0),
    "inertia": Params(temperature=1.0, momentum=0.5, repulsion=0.0),
    "repulsion": Params(temperature=1.0, momentum=0.0, repulsion=0.05),
    "inertia+repulsion": Params(temperature=1.0, momentum=0.5, repulsion=0.05),
}


def method(name: str) -> Params:
    """The :class:`Params` of a registered method; ``ValueError`` for an unknown name."""
    _checks.choice("method", name, METHODS)
    return METHODS[name]


def stack_params(params: list[Params]) -> Params:
    """Stack a list of Params into one Params with a leading axis (for ``vmap``)."""
    return jax.tree_util.tree_map(lambda *v: jnp.stack([jnp.asarray(a, jnp.float32) for a in v]), *params)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class State:
    """Dynamical state of one run: tokens (T, D), velocity (T, D), steps taken, last change."""

    tokens: jax.Array
    velocity: jax.Array
    step: jax.Array
    delta: jax.Array
    converged: jax.Array


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
    convergence); ``steps``, ``converged`` and ``labels`` as in :class:`Result`."""

    tokens: jax.Array
    delta: jax.Array
    steps: jax.Array
    converged: jax.Array
    labels: jax.Array


# ----------------------------------------------------------------------------------------------
# The rule, for one run. No validation here: these are the traced kernels.


def _weights(x, mask):
    if mask is None:
        return jnp.ones(x.shape[:1], x.dtype)
    return mask.astype(x.dtype)


def _scores_t(x_t, tokens):
    """(T, N) ``2 t.x - |t|^2``: minus the squared distance up to a per-point constant.

    Token-major layout: with the long points axis minor, the softmax over the few tokens is a
    reduction over the leading axis, which XLA:CPU vectorises along the points (about 2x faster
    per step than the (N, T) layout in our measurements)."""
    tt = jnp.sum(tokens * tokens, axis=-1)  # (T,)
    return 2.0 * (tokens @ x_t) - tt[:, None]


def _soft_assignment_t(x_t, w, tokens, temperature):
    s = _scores_t(x_t, tokens) / temperature  # (T, N)
    e = jnp.exp(s - jnp.max(s, axis=0, keepdims=True))
    return e * (w / jnp.sum(e, axis=0))  # (T, N); zero columns on padded points


def soft_assignment(x, tokens, temperature, mask=None):
    """(N, T) softmax over tokens of ``-|x_i - t_j|^2 / temperature``; zero rows on padded points."""
    return _soft_assignment_t(x.T, _weights(x, mask), tokens, temperature).T


def coulomb(tokens):
    """(T, D) ``sum_{k != j} (t_j - t_k) / max(|t_j - t_k|, MIN_DISTANCE)^3``."""
    diff = tokens[:, None, :] - tokens[None, :, :]  # (T, T, D)
    r2 = jnp.sum(diff * diff, axis=-1)  # (T, T)
    r2 = jnp.maximum(r2, MIN_DISTANCE**2)
    inv_r3 = jax.lax.rsqrt(r2) / r2  # r^-3; the diagonal's diff is 0 and contributes 0
    return jnp.sum(diff * inv_r3[..., None], axis=1)


def _update(x, x_t, w, tokens, velocity, params):
    a = _soft_assignment_t(x_t, w, tokens, params.temperature)  # (T, N)
    means = (a @ x) / (jnp.sum(a, axis=1) + EPS_MASS)[:, None]  # (T, D)
    force = means - tokens + params.repulsion * coulomb(tokens)
    velocity = params.momentum * velocity + force
    return tokens + velocity, velocity


def update(x, tokens, velocity, params: Params, mask=None):
    """One application of the rule. Returns ``(tokens, velocity)`` after the step."""
    return _update(x, x.T, _weights(x, mask), tokens, velocity, params)


def hard_labels(x, tokens, mask=None):
    """(N,) int32 index of the nearest token (first on ties); -1 on padded points."""
    labels = jnp.argmax(_scores_t(x.T, tokens), axis=0).astype(jnp.int32)
    return labels if mask is None else jnp.where(mask, labels, -1)


def init_state(tokens) -> State:
    tokens = jnp.asarray(tokens)
    return State(
        tokens=tokens,
        velocity=jnp.zeros_like(tokens),
        step=jnp.zeros((), jnp.int32),
        delta=jnp.full((), jnp.inf, tokens.dtype),
        converged=jnp.zeros((), bool),
    )


def step(x, state: State, params: Params, mask=None, tol=1e-3) -> State:
    """Advance ``state`` by one step; a converged state is left unchanged."""
    tokens, velocity = update(x, state.tokens, state.velocity, params, mask)
    delta = jnp.max(jnp.abs(velocity))
    new = State(tokens, velocity, state.step + 1, delta, delta < tol)
    return jax.tree_util.tree_map(lambda old, nw: jnp.where(state.converged, old, nw), state, new)


def _run(x, tokens, params, mask, n_steps, tol):
    x_t, w = x.T, _weights(x, mask)  # loop invariants: (D, N), (N,)

    def cond(s):
        return jnp.logical_and(~s.converged, s.step < n_steps)

    def body(s):
        tokens, velocity = _update(x, x_t, w, s.tokens, s.velocity, params)
        delta = jnp.max(jnp.abs(velocity))
        return State(tokens, velocity, s.step + 1, delta, delta < tol)

    s = jax.lax.while_loop(cond, body, init_state(tokens))
    return Result(
        tokens=s.tokens,
        velocity=s.velocity,
        labels=hard_labels(x, s.tokens, mask),
        steps=s.step,
        converged=s.converged,
        delta=s.delta,
    )


def _trajectory(x, tokens, params, mask, n_steps, tol):
    def body(s, _):
        s = step(x, s, params, mask, tol)
        return s, (s.tokens, jnp.where(s.step > 0, s.delta, 0.0))

    s0 = init_state(tokens)
    final, (toks, deltas) = jax.lax.scan(body, s0, None, length=n_steps)
    # deltas of steps not taken (after convergence) are zero
    taken = jnp.arange(1, n_steps + 1) <= final.step
    return Trajectory(
        tokens=jnp.concatenate([s0.tokens[None], toks], axis=0),
        delta=jnp.where(taken, deltas, 0.0),
        steps=final.step,
        converged=final.converged,
        labels=hard_labels(x, final.tokens, mask),
    )


_run_jit = jax.jit(_run)
_trajectory_jit = jax.jit(_trajectory, static_argnames=("n_steps",))


# ----------------------------------------------------------------------------------------------
# Public entry points: validate in Python, then call the compiled kernels.


def _validate_inputs(x, tokens, params, mask, n_steps, tol):
    _checks.finite_array("x", x, ndim=2)
    _checks.finite_array("tokens", tokens, ndim=2)
    n, d = jnp.shape(x)
    t, dt = jnp.shape(tokens)
    if t < 1:
        raise ValueError(f"tokens must hold at least one token, got shape {jnp.shape(tokens)}")
    if dt != d:
        raise ValueError(f"tokens and x must have the same dimension: tokens has D={dt}, x has D={d}")
    if not isinstance(params, Params):
        raise TypeError(f"params must be a tokdyn.dynamics.Params, got {type(params).__name__}")
    params.validate()
    if mask is not None:
        if jnp.shape(mask) != (n,):
            raise ValueError(f"mask must have shape (N,) = ({n},) like x, got {jnp.shape(mask)}")
        if jnp.result_type(mask) != jnp.bool_:
            raise TypeError(f"mask must be boolean, got dtype {jnp.result_type(mask)}")
    if isinstance(n_steps, (int, float)):
        _checks.positive_int("n_steps", n_steps)
    _checks.real("n_steps", n_steps, low=1)
    _checks.real("tol", tol, low=0.0)


def _as_arrays(x, tokens, mask):
    x = jnp.asarray(x, jnp.float32) if not jnp.issubdtype(jnp.result_type(x), jnp.floating) else jnp.asarray(x)
    tokens = jnp.asarray(tokens, x.dtype)
    return x, tokens, (None if mask is None else jnp.asarray(mask))


def run(x, tokens, params: Params = Params(), *, mask=None, n_steps=30, tol=1e-3) -> Result:
    """Run the rule from ``tokens`` until convergence or ``n_steps`` steps.

    Args:
      x: (N, D) points (NumPy or JAX).
      tokens: (T, D) initial tokens.
      params: :class:`Params` (traced: sweeping them does not recompile).
      mask: optional (N,) bool; False rows are ignored.
      n_steps: the most steps to take (traced).
      tol: convergence threshold on the largest coordinate change (traced).

    Returns:
      :class:`Result`. Jittable and vmappable; bad concrete input raises ``ValueError`` before
      anything is compiled.
    """
    _validate_inputs(x, tokens, params, mask, n_steps, tol)
    x, tokens, mask = _as_arrays(x, tokens, mask)
    return _run_jit(x, tokens, params, mask, n_steps, tol)


def trajectory(x, tokens, params: Params = Params(), *, mask=None, n_steps: int = 30, tol=1e-3) -> Trajectory:
    """Like :func:`run`, but record the tokens after every step (fixed length ``n_steps + 1``,
    static), for plots and analysis. Its final tokens and steps equal :func:`run`'s."""
    _validate_inputs(x, tokens, params, mask, n_steps, tol)
    _checks.positive_int("n_steps", n_steps)
    x, tokens, mask = _as_arrays(x, tokens, mask)
    return _trajectory_jit(x, tokens, params, mask, n_steps=n_steps, tol=tol)


def init_tokens(key, n_tokens: int, dim: int, *, method: str = "data", x=None, mask=None, scale=1.0):
    """Initial tokens, (n_tokens, dim).

    Methods:
      ``"data"``: ``n_tokens`` distinct valid points of ``x`` drawn uniformly (Forgy init;
        needs ``x``). If there are fewer valid points than tokens, the rest are padded rows.
      ``"normal"``: ``scale * N(0, I)``.
      ``"data_mean"``: the mean of the valid points of ``x`` plus ``scale * N(0, I)`` (the
        shared-Gaussian init of Slot Attention; needs ``x``).
    """
    _checks.positive_int("n_tokens", n_tokens)
    _checks.positive_int("dim", dim)
    _checks.choice("method", method, INIT_METHODS)
    _checks.real("scale", scale, low=0.0)
    if method != "normal":
        if x is None:
            raise ValueError(f"init method {method!r} needs the data: pass x=(N, D) points")
        _checks.finite_array("x", x, ndim=2)
        if jnp.shape(x)[-1] != dim:
            raise ValueError(f"x must have dimension dim={dim}, got shape {jnp.shape(x)}")
        if mask is not None and jnp.shape(mask) != jnp.shape(x)[:1]:
            raise ValueError(f"mask must have shape {jnp.shape(x)[:1]}, got {jnp.shape(mask)}")
        if method == "data" and n_tokens > jnp.shape(x)[0]:
            raise ValueError(f"n_tokens={n_tokens} exceeds the number of points N={jnp.shape(x)[0]} for method 'data'")
    return _init_tokens(key, x, mask, scale, n_tokens=n_tokens, dim=dim, method=method)


@functools.partial(jax.jit, static_argnames=("n_tokens", "dim", "method"))
def _init_tokens(key, x, mask, scale, *, n_tokens, dim, method):
    if method == "normal":
        return scale * jax.random.normal(key, (n_tokens, dim))
    w = _weights(x, mask)
    if method == "data_mean":
        mean = (w @ x) / jnp.maximum(w.sum(), 1.0)
        return mean + scale * jax.random.normal(key, (n_tokens, dim), x.dtype)
    return forgy(x, jax.random.uniform(key, w.shape), mask, n_tokens)


def forgy(x, noise, mask, n_tokens: int):
    """Forgy init from given noise: the ``n_tokens`` valid rows of ``x`` with the largest
    ``noise`` (N,) values. With i.i.d. uniform noise this is a uniform sample without replacement."""
    score = noise if mask is None else jnp.where(mask, noise, -1.0)
    _, idx = jax.lax.top_k(score, n_tokens)
    return x[idx]
