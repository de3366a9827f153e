"""The implicit derivative of :func:`~tokdyn.dynamics.run` (``adjoint=ImplicitAdjoint()``): the
early-exit run on values without derivatives, then the implicit function theorem at its final state
(``jax.lax.custom_root``) for the rule's one-step map at the last step taken, the linear system
solved densely over the flattened state (:func:`run_implicit`).

The derivative is returned only where it is the derivative of the run's fixed point: the run
converged, and the derivative does not depend on where exactly the run stopped, nor is the linear
system ``(I - df/ds) u = b`` ill-conditioned (:func:`defined`, :func:`error_estimate`). Elsewhere every derivative that reads the run is NaN, never a finite number that
is not the derivative. What the test is and what it costs: :ref:`dynamics-gradients`."""

from __future__ import annotations

import functools

import jax
import jax.flatten_util
import jax.numpy as jnp

from tokdyn.dynamics._common import callable_name, labels_t
from tokdyn.dynamics.rule import Points, Rule
from tokdyn.dynamics.stepping import Result, early_exit, tokens_of, user_state, varying


def dense_jacobian(fn, flat):
    """(n, n) the Jacobian of ``fn`` (a map of flat (n,) vectors) at ``flat``, column ``i`` the
    derivative along the ``i``-th coordinate: one forward-mode product per coordinate, the basis
    typed as varying as ``flat`` is (under ``shard_map``, :func:`~tokdyn.dynamics.stepping.varying`)."""
    basis = varying(jnp.eye(flat.shape[0], dtype=flat.dtype), flat)
    rows = jax.vmap(lambda e: jax.jvp(fn, (flat,), (e,))[1])(basis)  # (n, n): row i = J e_i
    return rows.T


def with_x(points: Points, x) -> Points:
    """``points`` with other coordinates ``x`` (N, D) in the same frame: the products that depend
    on them (``x_t``, ``x1``, ``total``) recomputed, padded rows zero, the mask, the weights and
    the origin kept."""
    x = jnp.where(points.mask[:, None], x, jnp.zeros((), x.dtype))
    x1 = jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=1)
    return Points(
        x=x,
        mask=points.mask,
        weights=points.weights,
        x_t=x.T,
        x1=x1,
        total=points.weights @ x,
        count=points.count,
        origin=points.origin,
    )


def probes(x) -> list:
    """Two tangents of the points' coordinates ``x`` (N, D) along which :func:`error_estimate`
    compares derivatives: every coordinate 1 (the points all moved by one: their tokens move by
    one, which sets the derivatives' scale), then standard normal draws of a fixed key (a generic
    direction, which no symmetry of the points cancels), typed as varying as ``x`` is."""
    ones = jnp.ones(x.shape, x.dtype)
    generic = jax.random.normal(jax.random.key(0), x.shape, x.dtype)
    return [varying(ones, x), varying(generic, x)]


def error_estimate(residual, state, x):
    """The estimated relative error of the implicit derivative at ``state`` (where the run
    stopped): the derivative of the fixed point in the points' coordinates ``x`` along two
    directions (:func:`probes`) computed at ``state`` and again one Newton step on, ``s' = s -
    A^{-1} r`` (``r = residual(s, x)``, ``A`` its Jacobian in the state; nearer the fixed
    point), their difference relative to the second, plus the rounding of a solve, ``n eps
    cond(A)`` (``eps`` the dtype's unit, ``n`` the state's size). ``residual(state, x)`` is
    the map ``f(s) - s`` of the rule's step. (The knobs are left out: a knob at the edge of its
    range, such as ``anneal_steps = 0``, can have a derivative of no use as a scale.) Large where the derivative depends on where exactly
    the run stopped (a slow approach to the fixed point, a fixed point at a bifurcation) and where
    ``A`` is (near) singular; ``inf`` or NaN where the solve fails."""
    flat, unravel = jax.flatten_util.ravel_pytree(state)

    def flat_residual(v, y):
        return jax.flatten_util.ravel_pytree(residual(unravel(v), y))[0]

    n, k = flat.shape[0], 2
    # the tangents of (state, x): the state's n unit vectors (A's columns), then the probes of x
    d_state = varying(jnp.concatenate([jnp.eye(n, dtype=flat.dtype), jnp.zeros((k, n), flat.dtype)]), flat)
    d_x = varying(jnp.concatenate([jnp.zeros((n, *x.shape), x.dtype), jnp.stack(probes(x))]), x)

    def derivative(v, _):  # at v: A, the fixed point's derivative along the probes (n, k), one Newton step on
        def along(dv, dx):
            return jax.jvp(flat_residual, (v, x), (dv, dx))[1]

        columns = jax.vmap(along)(d_state, d_x).T  # (n, n + k): one traced product of the step
        a, rhs = columns[:, :n], columns[:, n:]
        return v - jnp.linalg.solve(a, flat_residual(v, x)), (a, -jnp.linalg.solve(a, rhs))

    # the final state, then one Newton step on: a scan of two, so that the step is traced once
    _, (a, d) = jax.lax.scan(derivative, flat, None, length=2)
    here, there = d[0], d[1]
    # the condition number in the Frobenius norm (at least the 2-norm's, at most n times it)
    cond = jnp.linalg.norm(a[0]) * jnp.linalg.norm(jnp.linalg.inv(a[0]))
    rounding = flat.shape[0] * jnp.finfo(flat.dtype).eps * cond
    scale = jnp.maximum(jnp.linalg.norm(there), jnp.finfo(flat.dtype).tiny)
    return jnp.linalg.norm(here - there) / scale + rounding


def defined(residual, state, x, converged, rtol):
    """Whether the implicit derivative at ``state`` is the derivative of the run's fixed point
    (bool): the run ``converged`` and :func:`error_estimate` is at most ``rtol`` (False where the
    estimate is NaN)."""
    return converged & (error_estimate(residual, state, x) <= rtol)


def dense_tangent_solve(g, y, ok=True):
    """Solve the linear system ``g(u) = y`` for a linear ``g`` on pytrees (a state's), densely: the
    matrix of ``g`` over the flattened state, then ``jnp.linalg.solve`` (transposable in ``y``);
    every entry NaN where ``ok`` (a traced bool constant in ``y``, or a function of no argument
    returning one: computed only where a derivative is) is False."""
    ok = ok() if callable(ok) else ok
    flat_y, unravel = jax.flatten_util.ravel_pytree(y)
    matrix = dense_jacobian(lambda v: jax.flatten_util.ravel_pytree(g(unravel(v)))[0], flat_y)
    scale = jnp.where(ok, jnp.ones((), flat_y.dtype), jnp.full((), jnp.nan, flat_y.dtype))  # linear in y
    return unravel(jnp.linalg.solve(matrix, flat_y) * scale)


def check_state(rule: Rule, state) -> None:
    """``TypeError`` while tracing, before compiling, when a leaf of the rule's state is not
    floating point (the implicit function theorem needs a continuous state)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise TypeError(
                f"run(adjoint=ImplicitAdjoint()) (implicit=True) needs a rule state of floating point leaves; rule "
                f"{rule.name or callable_name(rule.step)!r} has state{jax.tree_util.keystr(path)} of "
                f"dtype {jnp.result_type(leaf)}"
            )


def run_implicit(rule: Rule, points: Points, tokens, hparams, mask, n_steps, tol, key, rtol) -> Result:
    """:func:`~tokdyn.dynamics.run` with ``adjoint=ImplicitAdjoint(rtol)``: the ``while_loop`` on
    values without derivatives, then ``lax.custom_root`` at its final state for the rule's step map
    at the last step taken, its derivatives NaN where they are not the fixed point's
    (:func:`defined`). ``points`` and ``tokens`` in the rule's frame."""
    const = jax.lax.stop_gradient
    c_points, c_hparams = const(points), const(hparams)
    s = early_exit(rule, c_points, const(tokens), c_hparams, n_steps, tol, key)
    check_state(rule, s.rule_state)
    last = jnp.maximum(s.step - 1, 0)  # the map of the last step taken

    def residual(state, points, hparams):
        new = rule.step(state, points, hparams, last, key)
        return jax.tree_util.tree_map(lambda a, b: a - b, new, state)

    def moved(state, x):  # the residual as a function of the points' coordinates
        return residual(state, with_x(c_points, x), c_hparams)

    def ok():  # in the tangent solve: compiled only where a derivative is taken
        if rtol == float("inf"):
            return s.converged
        return defined(moved, s.rule_state, c_points.x, s.converged, rtol)

    solve = functools.partial(dense_tangent_solve, ok=ok)
    state = jax.lax.custom_root(
        lambda state: residual(state, points, hparams), s.rule_state, lambda f, guess: guess, solve
    )
    labels = labels_t(c_points.x_t, tokens_of(s.rule_state), mask)
    state = user_state(rule, points, state)
    return Result(
        tokens=tokens_of(state),
        velocity=s.movement,
        labels=labels,
        steps=s.step,
        converged=s.converged,
        delta=s.delta,
        state=state,
    )
