"""The loop that runs any update rule: :func:`run` (to convergence; its ``adjoint=`` chooses how it
is differentiated, :mod:`~tokdyn.dynamics.adjoint`: the early-exit ``while_loop``, a bounded
checkpointed ``scan`` for reverse mode, or implicit differentiation at the fixed point),
:func:`run_fixed` (an alias: the bounded ``scan``), :func:`trajectory` (every step recorded), their
outcomes :class:`Result` and :class:`Trajectory`, the checks they make (:func:`check_run`) and
:func:`varying` (a loop's carry under ``shard_map``). How a run stops and what each adjoint
differentiates is on the concepts page, :ref:`dynamics-loop`."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks
from tokdyn.dynamics import adjoint as adjoints
from tokdyn.dynamics._common import as_float, callable_name, check_points, check_run_memory, check_some_valid, labels_t
from tokdyn.dynamics.builtin import BUILTIN, BUILTIN_ORIGIN
from tokdyn.dynamics.adjoint import EARLY_EXIT, Adjoint, CheckpointAdjoint, ImplicitAdjoint
from tokdyn.dynamics.rule import Points, Rule


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
      state: the rule's final state (the built-in rule: :class:`~tokdyn.dynamics.Motion`).
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


def _check_rule(rule, hparams, key) -> dict:
    """Check ``rule=`` and ``hparams`` (resolving ``None`` to the rule's defaults) before anything is
    traced: the rule's type, the structure and dtypes of its hparams, the key, then the rule's own
    ``check``. Returns ``{"hparams": ...}`` when the default was taken."""
    if not isinstance(rule, Rule):
        hint = (
            " wrap your functions as rule=dynamics.Rule(init=..., step=...)"
            if callable(rule)
            else " (dynamics.BUILTIN is the package's own rule)"
        )
        raise TypeError(f"rule must be a tokdyn.dynamics.Rule, got {rule!r} of type {type(rule).__name__}:{hint}")
    if isinstance(hparams, Rule):
        raise TypeError(
            f"hparams is a Rule ({hparams!r}): pass an update rule as rule=..., and its knobs "
            "(if not its defaults, Rule.hparams) as hparams"
        )
    if callable(hparams):
        raise TypeError(
            f"hparams must be the rule's knobs (for the built-in rule a tokdyn.dynamics.Hparams), got "
            f"{callable_name(hparams)} of type {type(hparams).__name__}: an update rule of your own is "
            f"a dynamics.Rule(init=..., step=...), passed as rule="
        )
    changed = {}
    if hparams is None:
        hparams = changed["hparams"] = rule.hparams
    want = jax.tree_util.tree_structure(rule.hparams)
    if jax.tree_util.tree_structure(hparams) != want:
        kind = type(rule.hparams)
        what = (
            f"of the structure of rule.hparams ({want})"
            if kind in (tuple, list, dict)
            else f"a {kind.__module__}.{kind.__qualname__}"
        )
        raise TypeError(
            f"hparams must be {what} (the knobs of rule {rule.name or callable_name(rule.step)!r}), "
            f"got {type(hparams).__name__}: {hparams!r}"
        )
    if rule is not BUILTIN:  # the built-in rule's check (Hparams.validate) names the field
        for path, leaf in jax.tree_util.tree_flatten_with_path(hparams)[0]:
            if _checks.dtype_of(leaf).kind not in "biuf":
                raise TypeError(
                    f"hparams{jax.tree_util.keystr(path)} must be real numbers, got dtype {_checks.dtype_of(leaf)}"
                )
    if key is not None:
        _checks.prng_key("key", key)
    if rule.check is not None:
        rule.check(hparams, key)
    return changed


def _check_run(
    x, tokens, hparams, rule, mask, n_steps, tol, key, static_steps=False, adjoint=EARLY_EXIT, implicit=False
):
    changed = adjoints.check(adjoint, implicit, n_steps)
    changed.update(_check_rule(rule, hparams, key))
    arrays = check_points(x, tokens, mask)
    check_some_valid(x, arrays.get("mask", mask), "a run")
    check_run_memory(x, tokens, "the run", pairwise=rule is BUILTIN)
    if static_steps or isinstance(n_steps, (int, float)):
        _checks.positive_int("n_steps", n_steps)
    _checks.real("n_steps", n_steps, low=1)
    _checks.real("tol", tol, low=0.0)
    return {**arrays, **changed}


def check_run(x, tokens, hparams=None, *, rule: "Rule" = None, mask=None, n_steps=30, tol=1e-3, key=None) -> dict:
    """The checks :func:`run` makes before anything is traced, for other forms of the same run
    (:func:`tokdyn.dynamics.pallas.run`). A host function: call it outside ``jit``.

    Args:
      x: (N, D) points.
      tokens: (T, D) initial tokens, of the points' dimension D, T >= 1.
      hparams: the rule's knobs, or ``None`` for the rule's defaults (``rule.hparams``).
      rule: a :class:`Rule`; ``None`` is :data:`~tokdyn.dynamics.BUILTIN`.
      mask: optional (N,) bool.
      n_steps: a positive Python int (checked as a static count).
      tol: a real number >= 0.
      key: optional PRNG key.

    Returns:
      A dict of the arguments it normalised: host lists as arrays (``x``, ``tokens``, ``mask``) and,
      when ``hparams`` was ``None``, ``hparams`` as the rule's defaults.

    Raises:
      TypeError: a wrong type (rule, hparams' structure or dtypes, key; bool points or tokens:
        floating point is required), naming the argument.
      ValueError: a wrong shape or value, naming the argument; no point to run on (no row, or a
        host mask all False; a traced all-False mask is not inspected: the tokens stay put and
        every label is -1); intermediates of one run ((T, N) scores, the built-in rule's (T, T, D)
        token differences) past one array's 2**31 - 1 elements or the memory available (the
        device's; on the CPU backend the host's), naming T, N, the bytes and the limit; and
        whatever ``rule.check`` raises.
    """
    return _check_run(x, tokens, hparams, BUILTIN if rule is None else rule, mask, n_steps, tol, key, static_steps=True)


def _check_trajectory(x, tokens, hparams, rule, mask, n_steps, tol, key):
    return _check_run(x, tokens, hparams, rule, mask, n_steps, tol, key, static_steps=True)


def _state_tokens(state, tokens, where: str):
    """The tokens of a rule's state (the state itself, or its ``tokens``), checked against the
    initial tokens' shape and dtype while tracing, so a rule that returns something else is named."""
    t = state if isinstance(state, jax.Array) else getattr(state, "tokens", None)
    if t is None or not hasattr(t, "shape") or t.shape != tokens.shape or t.dtype != tokens.dtype:
        got = (
            f"{type(state).__name__}"
            if t is None or not hasattr(t, "shape")
            else f"tokens of shape {t.shape} and dtype {t.dtype}"
        )
        raise TypeError(
            f"rule {where} must return the tokens ({tokens.shape}, {tokens.dtype}) or a state with a "
            f"`tokens` attribute of that shape and dtype, got {got}"
        )
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
    s = State(
        rule_state=state,
        movement=jnp.zeros_like(t),
        step=jnp.zeros((), jnp.int32),
        delta=jnp.full((), jnp.inf, t.dtype),
        converged=jnp.zeros((), bool),
    )
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
        raise TypeError(
            f"rule {rule.name or 'Rule'}.step must return a state of the structure init returned ({want}), got {got}"
        )
    if rule.movement is None:
        move = tokens - _tokens_of(old)
    else:
        move = jnp.asarray(rule.movement(old, new))
        if move.shape != tokens.shape:
            raise TypeError(
                f"rule {rule.name or 'Rule'}.movement must return a {tokens.shape} array, got shape {move.shape}"
            )
        if move.dtype != tokens.dtype:
            move = move.astype(tokens.dtype)
    delta = _max_abs(move)
    stop = delta < tol
    if rule.may_stop is not None:
        stop = stop & rule.may_stop(hparams, s.step)
    return State(new, move, s.step + 1, delta, stop)


def _tokens_of(state):
    return state if isinstance(state, jax.Array) else state.tokens


def _rule_frame(rule: Rule, x, mask, tokens):
    """The points as ``rule`` sees them and the initial tokens in its coordinates: centred on the
    masked data mean for a centred rule (``Rule.centred``), the user's otherwise."""
    points = Points.of(x, mask, centred=rule.centred)
    return points, (tokens + points.origin if rule.centred else tokens)


def _user_state(rule: Rule, points: Points, state):
    """A rule's state with its tokens back in the user's coordinates (a centred rule's)."""
    if not rule.centred:
        return state
    tokens = _tokens_of(state) - points.origin
    if isinstance(state, jax.Array):
        return tokens
    if hasattr(state, "_replace"):
        return state._replace(tokens=tokens)
    if dataclasses.is_dataclass(state):
        return dataclasses.replace(state, tokens=tokens)
    raise TypeError(
        f"rule {rule.name or callable_name(rule.step)!r} is centred (Rule.centred) but its state "
        f"{type(state).__name__} is neither the tokens nor a dataclass or NamedTuple holding them"
    )


def _result(rule: Rule, points: Points, s: State, mask) -> Result:
    tokens = _tokens_of(s.rule_state)
    state = _user_state(rule, points, s.rule_state)
    # labels from the loop's transposed points (in the rule's coordinates, where distances are
    # exact to float32 wherever the data sit): a product on x.T built afresh costs as much as 3 steps
    return Result(
        tokens=_tokens_of(state),
        velocity=s.movement,
        labels=labels_t(points.x_t, tokens, mask),
        steps=s.step,
        converged=s.converged,
        delta=s.delta,
        state=state,
    )


def _trim_labels(result, n: int):
    """``result`` (a :class:`Result` or :class:`Trajectory`) with its labels cut back to the ``n``
    points of the call (on the host and back by ``device_put``: an eager slice, or ``jnp.asarray``,
    would compile one small program a length)."""
    return dataclasses.replace(result, labels=jax.device_put(np.asarray(result.labels)[:n]))


# Eager calls of the package's built-in rules on host points are padded to a few lengths (masked
# out): one program a bucket. Other rules are called as they are (a rule of one's own may not
# leave masked points out of everything it computes).
_BUCKETS = _checks.Buckets(
    points=("x",), mask="mask", when=lambda a: a["rule"] is BUILTIN or a["rule"] is BUILTIN_ORIGIN, trim=_trim_labels
)


@_checks.checked_jit(_check_run, static_argnames=("rule", "adjoint", "implicit"), buckets=_BUCKETS)
def run(
    x,
    tokens,
    hparams=None,
    *,
    rule: Rule = BUILTIN,
    mask=None,
    n_steps=30,
    tol=1e-3,
    key=None,
    adjoint: Adjoint = EARLY_EXIT,
    implicit: bool = False,
) -> Result:
    """Run an update rule from ``tokens`` until convergence or ``n_steps`` steps.

    Args:
      x: (N, D) points (NumPy or JAX).
      tokens: (T, D) initial tokens.
      hparams: the rule's knobs (traced: sweeping them does not recompile); for the built-in rule
        an :class:`~tokdyn.dynamics.Hparams`. Default: the rule's defaults (``rule.hparams``).
      rule: a :class:`Rule` (static; :ref:`dynamics-protocol`). Default:
        :data:`~tokdyn.dynamics.BUILTIN`, the package's rule.
      mask: optional (N,) bool; False rows are ignored.
      n_steps: the most steps to take (traced; a Python int with ``CheckpointAdjoint()`` without
        ``max_steps``, the scan's length).
      tol: convergence threshold on the largest coordinate movement of a step (traced).
      key: PRNG key handed to the rule's steps (the built-in rule's Langevin noise: step ``s``
        uses ``fold_in(key, s)``); required when ``hparams.langevin > 0``. Without a key the
        Langevin term is absent (also for a traced ``langevin``, which cannot be checked).
      adjoint: how the run is differentiated (static; :mod:`~tokdyn.dynamics.adjoint`,
        :ref:`dynamics-adjoints`): :class:`~tokdyn.dynamics.EarlyExit` (default: a ``while_loop``
        that stops at convergence, forward mode only),
        :class:`~tokdyn.dynamics.CheckpointAdjoint` (a ``scan`` of a static bound, the steps after
        the stop masked: reverse mode through the steps, each rematerialised) or
        :class:`~tokdyn.dynamics.ImplicitAdjoint` (implicit derivatives at the fixed point,
        ``jax.lax.custom_root``: exact when the run converged, see :ref:`dynamics-gradients`; the
        initial tokens get zero). The same run, the same :class:`Result` (up to float rounding
        between programs).
      implicit: static bool, the former spelling of ``adjoint=ImplicitAdjoint()`` (True), kept as
        an alias.

    Returns:
      :class:`Result`. Jitted, vmappable, callable inside a user's transformations. With the
      default adjoint, differentiable in forward mode (``jax.jvp``/``jacfwd``); reverse mode
      (``jax.grad``) raises a ``ValueError`` naming the adjoints that allow it, while the
      derivative is traced. :func:`run_fixed` is ``run`` with ``CheckpointAdjoint(remat=False)``.

    Host calls: with the built-in rules (:data:`~tokdyn.dynamics.BUILTIN`, ``BUILTIN_ORIGIN``),
    NumPy points are padded to a power of two (from 32) with the mask, and the labels cut back, so
    point sets of many sizes compile one program a bucket (results as unpadded, up to float
    rounding); :func:`run_fixed` and :func:`trajectory` alike. Other rules, JAX arrays and traced
    calls keep their shapes. Many point sets run fastest in one call: padded to one size with a
    mask, under ``jax.vmap`` (:ref:`metrics-host-calls`).

    Examples:
      >>> import jax, numpy as np
      >>> from tokdyn import dynamics
      >>> x = np.array([[0, 0], [0, 1], [1, 0], [10, 10], [10, 11], [11, 10]], np.float32)
      >>> r = dynamics.run(x, x[[0, 3]])   # two tokens started on two points
      >>> print(np.asarray(r.tokens).round(3))   # the two clusters' means
      [[ 0.333  0.333]
       [10.333 10.333]]
      >>> r.labels.tolist(), int(r.steps), bool(r.converged)
      ([0, 0, 0, 1, 1, 1], 2, True)
      >>> t0 = x[[0, 3]]   # reverse mode: each point moves its cluster's mean by 1/3
      >>> loss = lambda x: dynamics.run(x, t0, n_steps=5, adjoint=dynamics.CheckpointAdjoint()).tokens.sum()
      >>> print(np.asarray(jax.grad(loss)(x))[:2].round(3))
      [[0.333 0.333]
       [0.333 0.333]]
    """
    x = as_float(x)
    points, tokens = _rule_frame(rule, x, mask, tokens.astype(x.dtype))  # loop invariants
    if implicit:  # (the check resolves it; ``run.jitted`` has no check)
        adjoint = ImplicitAdjoint()
    if isinstance(adjoint, ImplicitAdjoint):
        return _run_implicit(rule, x, points, tokens, hparams, mask, n_steps, tol, key)
    if isinstance(adjoint, CheckpointAdjoint):
        _, s, _ = _scan_steps(
            rule, points, tokens, hparams, adjoint.max_steps, tol, key, record=False, limit=n_steps, remat=adjoint.remat
        )
        return _result(rule, points, s, mask)
    s = adjoints.forward_only(functools.partial(_early_exit, rule))(points, tokens, hparams, n_steps, tol, key)
    return _result(rule, points, s, mask)


def _early_exit(rule: Rule, points: Points, tokens, hparams, n_steps, tol, key) -> State:
    """The rule's steps in a ``while_loop`` until convergence or ``n_steps`` steps."""

    def cond(s):
        return jnp.logical_and(~s.converged, s.step < n_steps)

    return jax.lax.while_loop(
        cond,
        lambda s: _advance(rule, points, s, hparams, tol, key),
        _start(rule, points, tokens, hparams, key),
    )


def _dense_tangent_solve(g, y):
    """Solve the linear system ``g(u) = y`` for a linear ``g`` on pytrees (a state's), densely: the
    matrix of ``g`` over the flattened state, then ``jnp.linalg.solve`` (transposable in ``y``)."""
    flat_y, unravel = jax.flatten_util.ravel_pytree(y)
    basis = varying(jnp.eye(flat_y.shape[0], dtype=flat_y.dtype), flat_y)  # tangents vary as the state does
    columns = jax.vmap(lambda e: jax.flatten_util.ravel_pytree(g(unravel(e)))[0])(basis)  # (n, n): row i = g(e_i)
    return unravel(jnp.linalg.solve(columns.T, flat_y))


def _run_implicit(rule, x, points, tokens, hparams, mask, n_steps, tol, key) -> Result:
    """:func:`run` with ``adjoint=ImplicitAdjoint()``: the ``while_loop`` on values without derivatives, then
    ``lax.custom_root`` at its final state for the rule's step map at the last step taken."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(_start(rule, points, tokens, hparams).rule_state)[0]:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise TypeError(
                f"run(adjoint=ImplicitAdjoint()) (implicit=True) needs a rule state of floating point leaves; rule "
                f"{rule.name or callable_name(rule.step)!r} has state{jax.tree_util.keystr(path)} of "
                f"dtype {jnp.result_type(leaf)}"
            )
    const = jax.lax.stop_gradient
    c_points, c_hparams = const(points), const(hparams)
    s = _early_exit(rule, c_points, const(tokens), c_hparams, n_steps, tol, key)
    last = jnp.maximum(s.step - 1, 0)  # the map of the last step taken

    def residual(state):
        new = rule.step(state, points, hparams, last, key)
        return jax.tree_util.tree_map(lambda a, b: a - b, new, state)

    state = jax.lax.custom_root(residual, s.rule_state, lambda f, guess: guess, _dense_tangent_solve)
    labels = labels_t(c_points.x_t, _tokens_of(s.rule_state), mask)
    state = _user_state(rule, points, state)
    tokens = _tokens_of(state)
    return Result(
        tokens=tokens,
        velocity=s.movement,
        labels=labels,
        steps=s.step,
        converged=s.converged,
        delta=s.delta,
        state=state,
    )


def _scan_steps(rule, points, tokens, hparams, n_steps: int, tol, key, record: bool, limit=None, remat=False):
    """``n_steps`` (static) applications of the rule by ``lax.scan``, each step after the run stopped
    (converged, or ``limit`` steps taken when given) masked (the state is carried unchanged), so the
    final state is :func:`run`'s. ``remat``: each step under ``jax.checkpoint`` (rematerialised in
    reverse mode). Returns the initial state, the final state and, with ``record``, the per-step
    (tokens, delta)."""

    def advance(s):
        new = _advance(rule, points, s, hparams, tol, key)
        done = s.converged if limit is None else s.converged | (s.step >= limit)
        return jax.tree_util.tree_map(lambda old, nw: jnp.where(done, old, nw), s, new)

    if remat:
        advance = jax.checkpoint(advance, prevent_cse=False)  # the scan already keeps steps apart

    def body(s, _):
        s = advance(s)
        return s, ((_tokens_of(s.rule_state), jnp.where(s.step > 0, s.delta, 0.0)) if record else None)

    s0 = _start(rule, points, tokens, hparams, key)
    final, ys = jax.lax.scan(body, s0, None, length=n_steps)
    return s0, final, ys


def run_fixed(
    x, tokens, hparams=None, *, rule: Rule = BUILTIN, mask=None, n_steps: int = 30, tol=1e-3, key=None
) -> Result:
    """:func:`run` as a fixed-length ``lax.scan``, reverse-mode differentiable: an alias of
    ``run(x, tokens, hparams, ..., n_steps=n_steps, adjoint=CheckpointAdjoint(remat=False))``.

    It always evaluates ``n_steps`` steps, every step after convergence leaving the state unchanged,
    so its :class:`Result` is :func:`run`'s (up to float32 rounding: the two are different programs).
    Derivatives (``jax.grad``, ``jax.vjp``, ``jax.jacfwd``), for any rule whose ``step`` is
    differentiable, in the knobs, the points and the initial tokens, are those of the unrolled
    steps with the stopping step held fixed (:ref:`dynamics-gradients`). Costs ``n_steps`` steps
    whatever the step of convergence, and reverse mode keeps every step's intermediates
    (``CheckpointAdjoint()``, rematerialising them, trades memory for one more forward step a step);
    use :func:`run` when no reverse-mode derivative is needed.

    Host calls: padded to a bucket of point counts with the built-in rules, as :func:`run`.

    Args:
      x: (N, D) points.
      tokens: (T, D) initial tokens.
      hparams: the rule's knobs (traced); default the rule's defaults (``rule.hparams``).
      rule: a :class:`Rule` (static); default :data:`~tokdyn.dynamics.BUILTIN`.
      mask: optional (N,) bool; False rows are ignored.
      n_steps: the number of steps evaluated, a Python int >= 1 (static).
      tol: convergence threshold on the largest coordinate movement of a step (traced).
      key: optional PRNG key handed to the rule's steps, as in :func:`run`.

    Returns:
      :class:`Result`.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import dynamics
      >>> x = np.array([[0, 0], [0, 1], [1, 0], [10, 10], [10, 11], [11, 10]], np.float32)
      >>> r = dynamics.run_fixed(x, x[[0, 3]], n_steps=5)   # 5 steps evaluated, 2 taken (as run's)
      >>> print(np.asarray(r.tokens).round(3))
      [[ 0.333  0.333]
       [10.333 10.333]]
      >>> int(r.steps)
      2
    """
    return run(x, tokens, hparams, rule=rule, mask=mask, n_steps=n_steps, tol=tol, key=key, adjoint=_FIXED)


_FIXED = CheckpointAdjoint(remat=False)  # run_fixed's adjoint (its max_steps is n_steps)


def _run_fixed_jitted(
    x, tokens, hparams=None, *, rule: Rule = BUILTIN, mask=None, n_steps: int = 30, tol=1e-3, key=None
):
    """``run_fixed`` without the host checks and the padding (as ``run.jitted``)."""
    adjoint = CheckpointAdjoint(max_steps=n_steps, remat=False)  # the bound given: n_steps may then be traced
    return run.jitted(x, tokens, hparams, rule=rule, mask=mask, n_steps=n_steps, tol=tol, key=key, adjoint=adjoint)


run_fixed.jitted = _run_fixed_jitted  # as the checked functions have it: the jitted kernel alone


@_checks.checked_jit(_check_trajectory, static_argnames=("n_steps", "rule"), buckets=_BUCKETS)
def trajectory(
    x, tokens, hparams=None, *, rule: Rule = BUILTIN, mask=None, n_steps: int = 30, tol=1e-3, key=None
) -> Trajectory:
    """Like :func:`run`, but record the tokens after every step, for plots and analysis.

    Its final tokens and steps equal :func:`run`'s (with the same ``key``). Reverse-mode
    differentiable, like :func:`run_fixed` (the same steps).

    Host calls: padded to a bucket of point counts with the built-in rules, as :func:`run`.

    Args:
      x: (N, D) points.
      tokens: (T, D) initial tokens.
      hparams: the rule's knobs (traced); default the rule's defaults (``rule.hparams``).
      rule: a :class:`Rule` (static); default :data:`~tokdyn.dynamics.BUILTIN`.
      mask: optional (N,) bool; False rows are ignored.
      n_steps: the number of steps recorded, a Python int >= 1 (static).
      tol: convergence threshold on the largest coordinate movement of a step (traced).
      key: optional PRNG key handed to the rule's steps, as in :func:`run`.

    Returns:
      :class:`Trajectory`: ``tokens`` (n_steps + 1, T, D), ``delta`` and ``temperature``
      (n_steps,) (the rule's ``temperature`` hook at each step; NaN for a rule without one),
      ``labels`` (N,) at the final tokens.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import dynamics
      >>> x = np.array([[0, 0], [0, 1], [1, 0], [10, 10], [10, 11], [11, 10]], np.float32)
      >>> hp = dynamics.Hparams(temperature=1.0, anneal_ratio=100.0, anneal_steps=4.0)
      >>> t = dynamics.trajectory(x, x[[0, 3]], hp, n_steps=8)
      >>> t.tokens.shape, int(t.steps)   # the initial tokens, then one row a step
      ((9, 2, 2), 5)
      >>> print(np.asarray(t.temperature).round(1))
      [100.   31.6  10.    3.2   1.    1.    1.    1. ]
    """
    x = as_float(x)
    points, tokens = _rule_frame(rule, x, mask, tokens.astype(x.dtype))
    s0, final, (toks, deltas) = _scan_steps(rule, points, tokens, hparams, n_steps, tol, key, record=True)
    taken = jnp.arange(1, n_steps + 1) <= final.step  # deltas of steps not taken (after convergence) are zero
    steps = jnp.arange(n_steps, dtype=jnp.int32)
    if rule.temperature is None:
        temperature = jnp.full((n_steps,), jnp.nan, x.dtype)
    else:
        temperature = jax.vmap(lambda i: rule.temperature(hparams, i))(steps)
    back = points.origin if rule.centred else 0.0  # the recorded tokens in the user's coordinates
    return Trajectory(
        tokens=jnp.concatenate([_tokens_of(s0.rule_state)[None], toks], axis=0) - back,
        delta=jnp.where(taken, deltas, 0.0),
        steps=final.step,
        converged=final.converged,
        labels=labels_t(points.x_t, _tokens_of(final.rule_state), mask),
        temperature=temperature,
    )
