"""The built-in rule's ``"pallas"`` backend: its whole run as one Pallas kernel per run, the fast form
on GPUs.

:func:`run` is :func:`tokdyn.dynamics.run` for the built-in rule (:data:`~tokdyn.dynamics.BUILTIN`,
or :data:`~tokdyn.dynamics.BUILTIN_ORIGIN`): the same equations -- the kernel calls the functions
of :mod:`tokdyn.dynamics.equations` that the XLA loop calls, in their unrolled layout -- every knob
of :class:`~tokdyn.dynamics.Hparams`, the same coordinates (centred on the run's masked data mean,
``Rule.centred``), stopping test, labels and
:class:`~tokdyn.dynamics.Result`, equal to it to float32 rounding. What differs is the program: one
`Pallas <https://docs.jax.dev/en/latest/pallas/>`_ kernel per run, its points in registers and
cache and its loop, early exit included, inside the kernel. On a GPU it is compiled by Triton;
elsewhere it runs in the Pallas interpreter, for checking only (:func:`preferred` says which form
to use on a backend). The rule finds it as ``BUILTIN.backend("pallas")``
(:meth:`~tokdyn.dynamics.Rule.backend`).

The kernel reads its knobs from a vector built from :data:`~tokdyn.dynamics.FIELDS`
(:func:`knob_vector`): importing this module fails when :class:`~tokdyn.dynamics.Hparams` has a
field the kernel does not handle (:data:`KNOB_USES`), so a knob can never be dropped on a GPU.

It has no derivatives: :func:`run` raises ``ValueError`` naming :func:`tokdyn.dynamics.run`'s
adjoints (:class:`~tokdyn.dynamics.CheckpointAdjoint` or :func:`tokdyn.dynamics.run_fixed` for
reverse mode, :class:`~tokdyn.dynamics.ImplicitAdjoint`, the default for forward mode) when
differentiated, while the derivative is traced, before anything compiles. It is meant for the
few tokens and dimensions of token dynamics (``T * D`` up to :data:`MAX_TOKEN_COORDS`).

Why it is faster, what it measured, its shapes and limits: :doc:`/concepts/runs-and-sweeps`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from tokdyn import _checks
from tokdyn.dynamics import equations as eq
from tokdyn.dynamics._common import labels_t
from tokdyn.dynamics.builtin import BUILTIN, BUILTIN_ORIGIN, MASS_ANCHORS, Motion
from tokdyn.dynamics.hparams import FIELDS, MAX_SINKHORN_ITERS, Hparams
from tokdyn.dynamics.loop import Result, check_run
from tokdyn.dynamics.rule import Points

__all__ = ["run", "preferred", "knob_vector", "check_fields", "KNOB_USES", "MAX_TOKEN_COORDS", "MAX_POINTS"]

MAX_TOKEN_COORDS = 256  # T * D: token coordinates the kernel keeps as scalars in registers
MAX_POINTS = 1 << 16  # points of one run (padded to a power of two): the (N,) vectors of one program

KNOB_USES = {
    "temperature": "equations.temperature, the final temperature",
    "momentum": "equations.velocity, beta",
    "repulsion": "equations.velocity, gamma",
    "damping": "equations.velocity and equations.langevin_scale, alpha",
    "langevin": "equations.langevin_scale and whether to kick",
    "sinkhorn_iters": "softmax (0) or equations.sinkhorn_rows (that many rounds)",
    "slot_norm": "equations.anchored_mean, sigma",
    "anneal_ratio": "equations.temperature, r",
    "anneal_steps": "equations.temperature and equations.stops, S",
}
"""Every knob of :class:`~tokdyn.dynamics.Hparams` the kernel reads, with where it reads it. A field
of ``Hparams`` missing here makes importing this module fail (:func:`check_fields`)."""

_EXTRAS = ("tol", "n_valid")  # the scalars the kernel reads after the knobs


def check_fields(fields) -> tuple:
    """Refuse knobs the kernel does not handle: ``ValueError`` naming every name of ``fields`` (a
    sequence of field names, e.g. :data:`~tokdyn.dynamics.FIELDS`) that :data:`KNOB_USES` lacks.
    Returns ``fields`` as a tuple. Called on import with ``FIELDS``."""
    fields = tuple(fields)
    missing = [f for f in fields if f not in KNOB_USES]
    if missing:
        raise ValueError(
            f"the Pallas kernel of the built-in rule (tokdyn.dynamics.pallas) does not handle the knob(s) "
            f"{missing} of tokdyn.dynamics.Hparams: add each to its kernel and to KNOB_USES (its run "
            f"would otherwise ignore them); handled: {list(KNOB_USES)}"
        )
    return fields


_ORDER = check_fields(FIELDS) + _EXTRAS  # importing this module fails on a knob it does not handle


def knob_vector(hparams: Hparams, tol, n_valid) -> jax.Array:
    """The float32 vector the kernel reads its knobs from: the fields of ``hparams`` in
    :data:`~tokdyn.dynamics.FIELDS` order, then ``tol`` and ``n_valid``, zero-padded to a power of
    two. ``ValueError`` (:func:`check_fields`) when ``hparams`` is of a class with a knob the kernel
    does not handle (a subclass of ``Hparams`` with one more field, say)."""
    names = check_fields(f.name for f in dataclasses.fields(hparams))
    if names != FIELDS:
        raise ValueError(f"hparams: fields {list(names)}, the kernel reads {list(FIELDS)} (in that order)")
    values = [getattr(hparams, f) for f in FIELDS] + [tol, n_valid]
    vec = jnp.stack([jnp.asarray(v, jnp.float32) for v in values])
    return jnp.zeros((_pow2(len(_ORDER)),), jnp.float32).at[: len(_ORDER)].set(vec)


def preferred(backend: str | None = None) -> bool:
    """Whether the Pallas kernel is the faster form on ``backend`` (default: JAX's default backend):
    True on GPUs (where it was measured), False elsewhere (on a CPU the kernel runs in the Pallas
    interpreter; :func:`tokdyn.dynamics.run` is the fast form there)."""
    return (backend or jax.default_backend()) == "gpu"


def _pow2(n: int, least: int = 1) -> int:
    return max(least, 1 << max(int(n) - 1, 0).bit_length())


def _pick(vec, k: int):
    """Entry ``k`` of a 1-D register vector as a scalar: a masked sum (Triton cannot index a
    register vector)."""
    return jnp.sum(jnp.where(jax.lax.iota(jnp.int32, vec.shape[0]) == k, vec, 0.0))


def _vector(scalars, size: int):
    """A (size,) float32 vector holding ``scalars`` first, zeros after (a sum of one-hots)."""
    iota = jax.lax.iota(jnp.int32, size)
    out = jnp.zeros((size,), jnp.float32)
    for k, v in enumerate(scalars):
        out = out + jnp.where(iota == k, v, 0.0)
    return out


def _kernel(xt_ref, w_ref, t0_ref, hp_ref, *rest, T: int, D: int, n_steps: int, noise: bool, origin: bool):
    if noise:
        xi_ref, out_ref, meta_ref = rest
    else:
        (out_ref, meta_ref), xi_ref = rest, None
    f32, L = jnp.float32, eq.UNROLLED
    xs = tuple(xt_ref[d, :] for d in range(D))  # the points in the rule's coordinates, D (NP,) vectors
    w = w_ref[...]  # (NP,) 1 valid, 0 padded
    t0, hp = t0_ref[...], hp_ref[...]
    k = {name: _pick(hp, i) for i, name in enumerate(_ORDER)}
    x_sum = tuple(jnp.sum(w * xs[d]) for d in range(D))
    # the published anchor: the user's origin in the rule's coordinates (after the tokens in t0)
    user_origin = tuple(_pick(t0, T * D + d) for d in range(D))
    n_iters = jnp.minimum(k["sinkhorn_iters"].astype(jnp.int32), MAX_SINKHORN_ITERS)

    def rounds(l0, w, log_row, n):
        return jax.lax.fori_loop(0, n, lambda _, ls: eq.sinkhorn_round(ls, w, log_row, L), l0)

    def step(carry):
        t, v, s, _, _ = carry  # t, v: T*D scalars (token j, coordinate d at j*D + d)
        tj = tuple(tuple(t[j * D + d] for d in range(D)) for j in range(T))
        sf = s.astype(f32)
        tau = eq.temperature(k["temperature"], k["anneal_ratio"], k["anneal_steps"], sf)
        logits = eq.logits(eq.scores(tj, xs, L), eq.effective_temperature(tau, f32), L)
        a = jax.lax.cond(
            n_iters > 0,
            lambda: tuple(eq.sinkhorn_rows(logits, w, n_iters, L, rounds)),
            lambda: tuple(eq.softmax_rows(logits, w, L)),
        )
        rep = eq.coulomb_unrolled(tj)
        if noise:
            xi = xi_ref[s, :]
            kick = eq.langevin_scale(k["damping"], k["langevin"])
        new_t, new_v, delta = [], [], f32(0.0)
        for j in range(T):
            mass = jnp.sum(a[j])
            for d in range(D):
                anchor = user_origin[d] if origin else tj[j][d]
                mean = eq.anchored_mean(jnp.sum(a[j] * xs[d]), mass, anchor, x_sum[d], k["n_valid"], k["slot_norm"])
                vel = eq.velocity(v[j * D + d], tj[j][d], mean, rep[j][d], k["momentum"], k["damping"], k["repulsion"])
                if noise:
                    vel = jnp.where(k["langevin"] > 0, vel + kick * _pick(xi, j * D + d), vel)
                new_v.append(vel)
                new_t.append(tj[j][d] + vel)
                delta = jnp.maximum(delta, jnp.abs(vel))
        return tuple(new_t), tuple(new_v), s + 1, delta, eq.stops(delta, k["tol"], k["anneal_steps"], sf)

    def cond(carry):
        return (carry[2] < n_steps) & jnp.logical_not(carry[4])

    init = (
        tuple(_pick(t0, i) for i in range(T * D)),
        tuple(f32(0.0) for _ in range(T * D)),
        jnp.int32(0),
        f32(jnp.inf),
        jnp.bool_(False),
    )
    t, v, s, delta, done = jax.lax.while_loop(cond, step, init)
    out_ref[...] = _vector(list(t) + list(v), out_ref.shape[0])
    meta_ref[...] = _vector([s.astype(f32), done.astype(f32), delta], meta_ref.shape[0])


_NO_DERIVATIVES = (
    "tokdyn.dynamics.pallas.run (the Pallas kernel; ClusterRun's kernel on GPUs) has no derivatives: "
    "differentiate dynamics.run with the adjoint you need: adjoint=dynamics.CheckpointAdjoint() (reverse "
    "mode through the steps, a checkpointed scan; dynamics.run_fixed(x, tokens, hparams, n_steps=...) is "
    "this form), adjoint=dynamics.ImplicitAdjoint() (the implicit derivative at the fixed point, both "
    "modes) or the default (forward mode: jax.jvp, jax.jacfwd); or ClusterRun(kernel='xla')"
)


@jax.custom_jvp
def _no_derivatives(tree):
    """``tree`` unchanged; differentiating through it (any mode) raises ``ValueError`` naming the
    differentiable forms, while the derivative is traced (before anything compiles)."""
    return tree


@_no_derivatives.defjvp
def _no_derivatives_jvp(primals, tangents):
    raise ValueError(_NO_DERIVATIVES)


def _resolve_rule(rule, mass_anchor):
    if rule is None:
        _checks.choice("mass_anchor", mass_anchor, MASS_ANCHORS)
        return MASS_ANCHORS[mass_anchor]
    if rule not in (BUILTIN, BUILTIN_ORIGIN):
        raise ValueError(
            f"rule: the Pallas kernel runs the built-in rule only (dynamics.BUILTIN or BUILTIN_ORIGIN), got "
            f"{rule!r}: use tokdyn.dynamics.run(..., rule=rule)"
        )
    if mass_anchor != "token" and MASS_ANCHORS.get(mass_anchor) is not rule:
        raise ValueError(f"mass_anchor={mass_anchor!r} contradicts rule={rule!r}: give one of them")
    return rule


def _check_run(x, tokens, hparams, rule, mask, n_steps, tol, key, mass_anchor, interpret):
    if hparams is not None and not isinstance(hparams, Hparams):
        raise TypeError(
            f"hparams must be a tokdyn.dynamics.Hparams (the built-in rule's knobs), got {type(hparams).__name__}"
        )
    if hparams is not None:
        check_fields(f.name for f in dataclasses.fields(hparams))
    rule = _resolve_rule(rule, mass_anchor)
    _checks.positive_int("n_steps", n_steps)
    _checks.real("tol", tol, low=0.0)
    if interpret is not None and not isinstance(interpret, bool):
        raise TypeError(f"interpret must be None, True or False, got {interpret!r}")
    # the rest as dynamics.run checks it (shapes, dtypes, the mask, every knob that is host data)
    changed = check_run(x, tokens, hparams, rule=rule, mask=mask, n_steps=n_steps, tol=tol, key=key)
    n, d = jnp.shape(x)
    t = jnp.shape(tokens)[0]
    if t * d > MAX_TOKEN_COORDS:
        raise ValueError(
            f"tokens: the Pallas kernel keeps T * D = {t} * {d} = {t * d} token coordinates in "
            f"registers, at most MAX_TOKEN_COORDS = {MAX_TOKEN_COORDS}; use tokdyn.dynamics.run"
        )
    if _pow2(n, 16) > MAX_POINTS:
        raise ValueError(
            f"x: {n} points pad to {_pow2(n, 16)}, more than one program holds (MAX_POINTS = "
            f"{MAX_POINTS}); use tokdyn.dynamics.run"
        )
    return {**changed, "rule": rule, "mass_anchor": "origin" if rule is BUILTIN_ORIGIN else "token"}


def _kernel_inputs(points: Points, tokens, hp, tol, rule, key, n_steps: int) -> list:
    """The kernel's arguments, padded to powers of two: the points as columns, their weights, the
    initial tokens with the origin after them, the knob vector and, with a key, every step's
    Langevin draws."""
    n, d = points.x.shape
    t_tok = tokens.shape[0]
    n_pad = _pow2(n, 16)
    w = jnp.zeros((n_pad,), jnp.float32).at[:n].set(points.weights)
    xt = jnp.zeros((_pow2(d), n_pad), jnp.float32).at[:d, :n].set(jnp.where(points.mask, points.x_t, 0.0))
    t0 = rule.init(points, tokens.astype(jnp.float32) + points.origin, hp).tokens  # NaN when a knob is out of range
    coords = _pow2(t_tok * d + d, 16)
    t0 = (
        jnp.zeros((coords,), jnp.float32)
        .at[: t_tok * d]
        .set(t0.reshape(-1))
        .at[t_tok * d : t_tok * d + d]
        .set(points.origin)
    )
    args = [xt, w, t0, knob_vector(hp, tol, points.count)]
    if key is not None:
        draws = jax.vmap(lambda s: jax.random.normal(jax.random.fold_in(key, s), (t_tok, d), jnp.float32))(
            jnp.arange(n_steps, dtype=jnp.int32)
        ).reshape(n_steps, -1)
        args.append(jnp.zeros((_pow2(n_steps), coords), jnp.float32).at[:n_steps, : t_tok * d].set(draws))
    return args


@_checks.checked_jit(_check_run, static_argnames=("rule", "n_steps", "mass_anchor", "interpret"))
def run(
    x,
    tokens,
    hparams=None,
    *,
    rule=None,
    mask=None,
    n_steps: int = 30,
    tol=1e-3,
    key=None,
    mass_anchor: str = "token",
    interpret=None,
) -> Result:
    """:func:`tokdyn.dynamics.run` of the built-in rule as one Pallas kernel (see the module docstring).

    Args:
      x: (N, D) points (N padded to a power of two of at most :data:`MAX_POINTS` inside).
      tokens: (T, D) initial tokens, ``T * D`` at most :data:`MAX_TOKEN_COORDS`.
      hparams: a :class:`tokdyn.dynamics.Hparams`, every knob traced; default the rule's defaults.
      rule: :data:`~tokdyn.dynamics.BUILTIN` or :data:`~tokdyn.dynamics.BUILTIN_ORIGIN` (static);
        default: the one ``mass_anchor`` names.
      mask: optional (N,) bool; False rows are ignored.
      n_steps: static int, the most steps.
      tol: the stopping threshold (traced).
      key: the Langevin noise's key (step ``s`` draws ``normal(fold_in(key, s), (T, D))``, as the
        built-in rule does); no key, no noise.
      mass_anchor: "token" (:data:`~tokdyn.dynamics.BUILTIN`) or "origin"
        (:data:`~tokdyn.dynamics.BUILTIN_ORIGIN`), static; another way to name ``rule``.
      interpret: None: compiled on a GPU, interpreted elsewhere; True: always the Pallas interpreter;
        False: always compiled (a GPU only).

    Returns:
      :class:`tokdyn.dynamics.Result`, equal to :func:`tokdyn.dynamics.run`'s to float32 rounding
      (``state`` the :class:`~tokdyn.dynamics.Motion`), tokens in the user's coordinates. Vmappable
      (one kernel program per run); not differentiable (``ValueError`` naming
      :func:`~tokdyn.dynamics.run_fixed` while the derivative is traced).
    """
    from jax.experimental import pallas as pl

    x, tokens, hp, tol = _no_derivatives((x, tokens, BUILTIN.hparams if hparams is None else hparams, tol))
    x = x.astype(jnp.float32)  # the kernel computes in float32 (as dynamics.run does for half precision)
    n, d = x.shape
    t_tok = tokens.shape[0]
    points = Points.of(x, mask, centred=True)  # the rule's coordinates, as the XLA loop's (Rule.centred)
    args = _kernel_inputs(points, tokens, hp, tol, rule, key, n_steps)
    compiled = preferred() if interpret is None else not interpret
    extra = {}
    if compiled:
        from jax.experimental.pallas import triton as pl_triton

        extra["compiler_params"] = pl_triton.CompilerParams(num_warps=1, num_stages=1)
    kernel = functools.partial(
        _kernel, T=t_tok, D=d, n_steps=n_steps, noise=key is not None, origin=rule is BUILTIN_ORIGIN
    )
    out, meta = pl.pallas_call(
        kernel,
        out_shape=(
            jax.ShapeDtypeStruct((_pow2(2 * t_tok * d, 16),), jnp.float32),
            jax.ShapeDtypeStruct((4,), jnp.float32),
        ),
        interpret=not compiled,
        **extra,
    )(*args)
    tok = out[: t_tok * d].reshape(t_tok, d)  # the rule's coordinates
    vel = out[t_tok * d : 2 * t_tok * d].reshape(t_tok, d)
    # float32 labels whatever the caller's precision (no TF32), in the rule's coordinates
    labels = labels_t(points.x_t, tok, mask, precision=jax.lax.Precision.HIGHEST)
    tok = tok - points.origin
    return Result(
        tokens=tok,
        velocity=vel,
        labels=labels,
        steps=meta[0].astype(jnp.int32),
        converged=meta[1] > 0.5,
        delta=meta[2],
        state=Motion(tokens=tok, velocity=vel),
    )
