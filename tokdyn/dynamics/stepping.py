"""A rule's steps inside the loop: the loop's carry (:class:`State`), a run's outcome
(:class:`Result`), the first state and one step (:func:`start`, :func:`advance`), the two loops
that repeat it (:func:`early_exit`, a ``while_loop``; :func:`scan_steps`, a ``scan`` of static
length), the frame a rule runs in (:func:`rule_frame`, :func:`user_state`) and :func:`varying` (a
loop's carry under ``shard_map``). :mod:`tokdyn.dynamics.loop` builds :func:`~tokdyn.dynamics.run`,
:func:`~tokdyn.dynamics.run_fixed` and :func:`~tokdyn.dynamics.trajectory` from them;
:mod:`tokdyn.dynamics.implicit` the implicit derivative."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from tokdyn.dynamics._common import callable_name, labels_t
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
    """Outcome of :func:`~tokdyn.dynamics.run`.

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


def tokens_of(state):
    """The tokens of a rule's state: the state itself (an array) or its ``tokens``."""
    return state if isinstance(state, jax.Array) else state.tokens


def state_tokens(state, tokens, where: str):
    """The tokens of a rule's state (the state itself, or its ``tokens``), checked against the
    initial tokens' shape and dtype while tracing, so a rule that returns something else is named
    (``where``: the function that returned it)."""
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


def start(rule: Rule, points: Points, tokens, hparams, key=None) -> State:
    """The loop's first :class:`State`: ``rule.init``'s state, no movement, step 0, ``delta`` inf,
    not converged (typed as varying as the inputs are, :func:`varying`)."""
    state = rule.init(points, tokens, hparams)
    t = state_tokens(state, tokens, f"{rule.name or 'Rule'}.init")
    s = State(
        rule_state=state,
        movement=jnp.zeros_like(t),
        step=jnp.zeros((), jnp.int32),
        delta=jnp.full((), jnp.inf, t.dtype),
        converged=jnp.zeros((), bool),
    )
    return varying(s, points.x, points.mask, tokens, hparams, key)


@jax.custom_jvp
def max_abs(a):
    """``max |a|`` (a step's ``delta``), whose derivative is that of the first entry of largest
    magnitude. (JAX's rule for ``jnp.max`` divides by the number of entries equal to the maximum,
    which XLA:CPU compiling without optimisations can count as 0 -- it recomputes the operand in two
    fusions that round differently -- and the derivative of ``delta`` came out NaN.)"""
    return jnp.max(jnp.abs(a))


@max_abs.defjvp
def _max_abs_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    i = jnp.argmax(jnp.abs(a).ravel())
    return jnp.abs(a).ravel()[i], (jnp.sign(a) * da).ravel()[i]


def advance(rule: Rule, points: Points, s: State, hparams, tol, key) -> State:
    """One step of ``rule`` from ``s``: the new state, its movement, the step count, ``delta`` (the
    largest coordinate movement) and whether the run may stop (``delta < tol`` and the rule's
    ``may_stop``). The state's structure and tokens are checked while tracing."""
    old = s.rule_state
    new = rule.step(old, points, hparams, s.step, key)
    tokens = state_tokens(new, tokens_of(old), f"{rule.name or 'Rule'}.step")
    want, got = jax.tree_util.tree_structure(old), jax.tree_util.tree_structure(new)
    if want != got:
        raise TypeError(
            f"rule {rule.name or 'Rule'}.step must return a state of the structure init returned ({want}), got {got}"
        )
    if rule.movement is None:
        move = tokens - tokens_of(old)
    else:
        move = jnp.asarray(rule.movement(old, new))
        if move.shape != tokens.shape:
            raise TypeError(
                f"rule {rule.name or 'Rule'}.movement must return a {tokens.shape} array, got shape {move.shape}"
            )
        if move.dtype != tokens.dtype:
            move = move.astype(tokens.dtype)
    delta = max_abs(move)
    stop = delta < tol
    if rule.may_stop is not None:
        stop = stop & rule.may_stop(hparams, s.step)
    return State(new, move, s.step + 1, delta, stop)


def early_exit(rule: Rule, points: Points, tokens, hparams, n_steps, tol, key) -> State:
    """The rule's steps in a ``while_loop`` until convergence or ``n_steps`` steps (traced)."""

    def cond(s):
        return jnp.logical_and(~s.converged, s.step < n_steps)

    return jax.lax.while_loop(
        cond,
        lambda s: advance(rule, points, s, hparams, tol, key),
        start(rule, points, tokens, hparams, key),
    )


def scan_steps(rule, points, tokens, hparams, n_steps: int, tol, key, record: bool, limit=None, remat=False):
    """``n_steps`` (static) applications of the rule by ``lax.scan``, each step after the run stopped
    (converged, or ``limit`` steps taken when given) masked (the state is carried unchanged), so the
    final state is :func:`early_exit`'s. ``remat``: each step under ``jax.checkpoint``
    (rematerialised in reverse mode). Returns the initial state, the final state and, with
    ``record``, the per-step (tokens, delta)."""

    def step(s):
        new = advance(rule, points, s, hparams, tol, key)
        done = s.converged if limit is None else s.converged | (s.step >= limit)
        return jax.tree_util.tree_map(lambda old, nw: jnp.where(done, old, nw), s, new)

    if remat:
        step = jax.checkpoint(step, prevent_cse=False)  # the scan already keeps steps apart

    def body(s, _):
        s = step(s)
        return s, ((tokens_of(s.rule_state), jnp.where(s.step > 0, s.delta, 0.0)) if record else None)

    s0 = start(rule, points, tokens, hparams, key)
    final, ys = jax.lax.scan(body, s0, None, length=n_steps)
    return s0, final, ys


def rule_frame(rule: Rule, x, mask, tokens):
    """The points as ``rule`` sees them and the initial tokens in its coordinates: centred on the
    masked data mean for a centred rule (``Rule.centred``), the user's otherwise."""
    points = Points.of(x, mask, centred=rule.centred)
    return points, (tokens + points.origin if rule.centred else tokens)


def user_state(rule: Rule, points: Points, state):
    """A rule's state with its tokens back in the user's coordinates (a centred rule's)."""
    if not rule.centred:
        return state
    tokens = tokens_of(state) - points.origin
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


def result_of(rule: Rule, points: Points, s: State, mask) -> Result:
    """The :class:`Result` of the loop's final state ``s``, in the user's coordinates."""
    tokens = tokens_of(s.rule_state)
    state = user_state(rule, points, s.rule_state)
    # labels from the loop's transposed points (in the rule's coordinates, where distances are
    # exact to float32 wherever the data sit): a product on x.T built afresh costs as much as 3 steps
    return Result(
        tokens=tokens_of(state),
        velocity=s.movement,
        labels=labels_t(points.x_t, tokens, mask),
        steps=s.step,
        converged=s.converged,
        delta=s.delta,
        state=state,
    )
