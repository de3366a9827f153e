"""The built-in rule's whole run as one fused kernel per run: the fast form on GPUs.

:func:`run` is :func:`tokdyn.dynamics.run` for the built-in rule (:data:`~tokdyn.dynamics.BUILTIN`,
or :data:`~tokdyn.dynamics.BUILTIN_ORIGIN` with ``mass_anchor="origin"``): the same equations,
every knob of :class:`~tokdyn.dynamics.Hparams`, the same stopping test, labels and
:class:`~tokdyn.dynamics.Result`, equal to it to float32 rounding. What differs is the program: one
`Pallas <https://docs.jax.dev/en/latest/pallas/>`_ kernel per run, its points in registers and
cache and its loop, early exit included, inside the kernel. On a GPU it is compiled by Triton;
elsewhere it runs in the Pallas interpreter, for checking only (:func:`preferred` says which form
to use on a backend). It has no derivatives: differentiate :func:`tokdyn.dynamics.run` or
:func:`tokdyn.dynamics.run_fixed`. It is meant for the few tokens and dimensions of token
dynamics (``T * D`` up to :data:`MAX_TOKEN_COORDS`).

Why it is faster, what it measured, its shapes and limits: :doc:`/concepts/runs-and-sweeps`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks, dynamics

__all__ = ["run", "preferred", "MAX_TOKEN_COORDS", "MAX_POINTS"]

MAX_TOKEN_COORDS = 256  # T * D: token coordinates the kernel keeps as scalars in registers
MAX_POINTS = 1 << 16  # points of one run (padded to a power of two): the (N,) vectors of one program
_KNOBS = (
    "temperature",
    "momentum",
    "repulsion",
    "damping",
    "langevin",
    "sinkhorn_iters",
    "slot_norm",
    "anneal_ratio",
    "anneal_steps",
    "tol",
    "n_valid",
)  # the scalars handed to the kernel, in order


def preferred(backend: str | None = None) -> bool:
    """Whether the fused form is the faster one on ``backend`` (default: JAX's default backend):
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


def _lse_tokens(rows):
    """Per point, ``log sum_j exp(rows[j])`` over the T (N,) rows."""
    top = functools.reduce(jnp.maximum, rows)
    safe = jnp.where(jnp.isfinite(top), top, 0.0)
    return safe + jnp.log(functools.reduce(jnp.add, [jnp.exp(r - safe) for r in rows]))


def _kernel(xt_ref, w_ref, t0_ref, hp_ref, *rest, T: int, D: int, n_steps: int, noise: bool, origin: bool):
    if noise:
        xi_ref, out_ref, meta_ref = rest
    else:
        (out_ref, meta_ref), xi_ref = rest, None
    f32 = jnp.float32
    xs = [xt_ref[d, :] for d in range(D)]  # the points, D (NP,) vectors
    w = w_ref[...]  # (NP,) 1 valid, 0 padded
    t0, hp = t0_ref[...], hp_ref[...]
    (tau0, momentum, repulsion, damping, langevin, k_sinkhorn, sigma, ratio, n_anneal, tol, n_valid) = [
        _pick(hp, i) for i in range(len(_KNOBS))
    ]
    x_sum = [jnp.sum(w * xs[d]) for d in range(D)]
    eps, tiny = f32(dynamics.EPS_MASS), f32(np.finfo(np.float32).tiny)
    rmin2 = f32(dynamics.MIN_DISTANCE**2)
    n_iters = jnp.minimum(k_sinkhorn.astype(jnp.int32), dynamics.MAX_SINKHORN_ITERS)
    log_row = jnp.log(jnp.maximum(n_valid, tiny) / T)
    valid = w > 0
    # the mass epsilon's placement (dynamics: _update): sigma blends token-anchored and Slot Attention's
    anchor_w = f32(0.0) if origin else eps * (1.0 - sigma)
    den_extra = eps * (1.0 - sigma) + (sigma * eps) * n_valid

    def temperature(s):
        frac = jnp.clip(1.0 - s.astype(f32) / jnp.maximum(n_anneal, 1.0), 0.0, 1.0)
        on = (n_anneal > 0) & (frac > 0)
        frac = jnp.where(on, frac, 0.0)
        factor = jnp.where(ratio != 1.0, jnp.exp(frac * jnp.log(ratio)), 1.0 + (ratio - 1.0) * frac)
        tau = jnp.where(on, tau0 * factor, tau0)
        return jnp.where(tau >= 0, jnp.maximum(tau, tiny), jnp.nan)

    def softmax(logits):
        es = [jnp.exp(l) for l in logits]
        scale = w / functools.reduce(jnp.add, es)
        return [e * scale for e in es]

    def balanced(logits):
        lse = _lse_tokens(logits)
        l0 = tuple(l - lse for l in logits)

        def round_(_, ls):
            out = []
            for l in ls:
                m = jnp.max(jnp.where(valid, l, -jnp.inf))
                r = m + jnp.log(jnp.sum(w * jnp.exp(l - jnp.where(jnp.isfinite(m), m, 0.0))))
                r = jnp.where(jnp.isfinite(r), r, log_row)
                out.append(l + (log_row - r))
            lse = _lse_tokens(out)
            return tuple(l - lse for l in out)

        ls = jax.lax.fori_loop(0, n_iters, round_, l0)
        return [jnp.exp(l) * w for l in ls]

    def step(carry):
        t, v, s, _, _ = carry  # t, v: T*D scalars (token j, coordinate d at j*D + d)
        tj = [[t[j * D + d] for d in range(D)] for j in range(T)]
        sc = []
        for j in range(T):  # 2 t.x - |t|^2: minus the squared distance, up to the point's |x|^2
            acc = jnp.zeros_like(w) - sum(c * c for c in tj[j])
            for d in range(D):
                acc = acc + (2.0 * tj[j][d]) * xs[d]
            sc.append(acc)
        top = functools.reduce(jnp.maximum, sc)
        inv_tau = 1.0 / temperature(s)
        logits = [(c - top) * inv_tau for c in sc]
        a = jax.lax.cond(n_iters > 0, lambda: tuple(balanced(logits)), lambda: tuple(softmax(logits)))
        new_t, new_v, delta = [], [], f32(0.0)
        if noise:
            xi = xi_ref[s, :]
            xi_scale = jnp.where(
                2.0 * damping * langevin > 0,
                jnp.sqrt(jnp.where(2.0 * damping * langevin > 0, 2.0 * damping * langevin, 1.0)),
                0.0,
            )
        for j in range(T):
            mass = jnp.sum(a[j])
            rep = [f32(0.0)] * D
            for k in range(T):
                if k == j:
                    continue
                diff = [tj[j][d] - tj[k][d] for d in range(D)]
                r2 = jnp.maximum(sum(c * c for c in diff), rmin2)
                inv_r3 = jax.lax.rsqrt(r2) / r2
                rep = [rep[d] + diff[d] * inv_r3 for d in range(D)]
            for d in range(D):
                mean = (jnp.sum(a[j] * xs[d]) + anchor_w * tj[j][d] + (sigma * eps) * x_sum[d]) / (mass + den_extra)
                force = mean - tj[j][d] + repulsion * rep[d]
                vel = momentum * v[j * D + d] + damping * force
                if noise:
                    vel = jnp.where(langevin > 0, vel + xi_scale * _pick(xi, j * D + d), vel)
                new_v.append(vel)
                new_t.append(tj[j][d] + vel)
                delta = jnp.maximum(delta, jnp.abs(vel))
        stop = (delta < tol) & (s.astype(f32) >= n_anneal)
        return tuple(new_t), tuple(new_v), s + 1, delta, stop

    def cond(carry):
        return (carry[2] < n_steps) & jnp.logical_not(carry[4])

    init = (
        tuple(_pick(t0, k) for k in range(T * D)),
        tuple(f32(0.0) for _ in range(T * D)),
        jnp.int32(0),
        f32(np.inf),
        jnp.bool_(False),
    )
    t, v, s, delta, done = jax.lax.while_loop(cond, step, init)
    out_ref[...] = _vector(list(t) + list(v), out_ref.shape[0])
    meta_ref[...] = _vector([s.astype(f32), done.astype(f32), delta], meta_ref.shape[0])


def _check_run(x, tokens, hparams, mask, n_steps, tol, key, mass_anchor, interpret):
    if hparams is not None and not isinstance(hparams, dynamics.Hparams):
        raise TypeError(
            f"hparams must be a tokdyn.dynamics.Hparams (the built-in rule's knobs), got {type(hparams).__name__}"
        )
    _checks.choice("mass_anchor", mass_anchor, dynamics.MASS_ANCHORS)
    _checks.positive_int("n_steps", n_steps)
    _checks.real("tol", tol, low=0.0)
    if interpret is not None and not isinstance(interpret, bool):
        raise TypeError(f"interpret must be None, True or False, got {interpret!r}")
    # the rest as dynamics.run checks it (shapes, dtypes, the mask, every knob that is host data)
    changed = dynamics.check_run(
        x, tokens, hparams, rule=dynamics.MASS_ANCHORS[mass_anchor], mask=mask, n_steps=n_steps, tol=tol, key=key
    )
    n, d = np.shape(x)
    t = np.shape(tokens)[0]
    if t * d > MAX_TOKEN_COORDS:
        raise ValueError(
            f"tokens: the fused kernel keeps T * D = {t} * {d} = {t * d} token coordinates in "
            f"registers, at most MAX_TOKEN_COORDS = {MAX_TOKEN_COORDS}; use tokdyn.dynamics.run"
        )
    if _pow2(n, 16) > MAX_POINTS:
        raise ValueError(
            f"x: {n} points pad to {_pow2(n, 16)}, more than one program holds (MAX_POINTS = "
            f"{MAX_POINTS}); use tokdyn.dynamics.run"
        )
    return changed


@_checks.checked_jit(_check_run, static_argnames=("n_steps", "mass_anchor", "interpret"))
def run(
    x,
    tokens,
    hparams=None,
    *,
    mask=None,
    n_steps: int = 30,
    tol=1e-3,
    key=None,
    mass_anchor: str = "token",
    interpret=None,
) -> dynamics.Result:
    """:func:`tokdyn.dynamics.run` of the built-in rule as one fused kernel (see the module docstring).

    Args:
      x: (N, D) points (N padded to a power of two of at most :data:`MAX_POINTS` inside).
      tokens: (T, D) initial tokens, ``T * D`` at most :data:`MAX_TOKEN_COORDS`.
      hparams: a :class:`tokdyn.dynamics.Hparams`, every knob traced; default the rule's defaults.
      mask: optional (N,) bool; False rows are ignored.
      n_steps: static int, the most steps.
      tol: the stopping threshold (traced).
      key: the Langevin noise's key (step ``s`` draws ``normal(fold_in(key, s), (T, D))``, as the
        built-in rule does); no key, no noise.
      mass_anchor: "token" (:data:`~tokdyn.dynamics.BUILTIN`) or "origin"
        (:data:`~tokdyn.dynamics.BUILTIN_ORIGIN`), static.
      interpret: None: compiled on a GPU, interpreted elsewhere; True: always the Pallas interpreter;
        False: always compiled (a GPU only).

    Returns:
      :class:`tokdyn.dynamics.Result`, equal to :func:`tokdyn.dynamics.run`'s to float32 rounding
      (``state`` the :class:`~tokdyn.dynamics.Motion`). Vmappable (one kernel program per run); not
      differentiable.
    """
    from jax.experimental import pallas as pl

    x = x.astype(jnp.float32)  # the kernel computes in float32 (as dynamics.run does for half precision)
    n, d = x.shape
    t_tok = tokens.shape[0]
    hp = dynamics.Hparams() if hparams is None else hparams
    n_pad = _pow2(n, 16)
    valid = jnp.ones((n,), bool) if mask is None else jnp.asarray(mask, bool)
    w = jnp.zeros((n_pad,), jnp.float32).at[:n].set(valid.astype(jnp.float32))
    xt = jnp.zeros((_pow2(d), n_pad), jnp.float32).at[:d, :n].set(jnp.where(valid[:, None], x, 0.0).T)
    t0 = jnp.where(hp.in_range(), tokens.astype(jnp.float32), jnp.nan)  # as the built-in rule's init
    coords = _pow2(t_tok * d, 16)
    t0 = jnp.zeros((coords,), jnp.float32).at[: t_tok * d].set(t0.reshape(-1))
    knobs = [getattr(hp, f) for f in _KNOBS[:9]] + [tol, jnp.sum(w)]
    knobs = jnp.stack([jnp.asarray(v, jnp.float32) for v in knobs])
    knobs = jnp.zeros((_pow2(len(_KNOBS)),), jnp.float32).at[: len(_KNOBS)].set(knobs)
    args = [xt, w, t0, knobs]
    if key is not None:
        draws = jax.vmap(lambda s: jax.random.normal(jax.random.fold_in(key, s), (t_tok, d), jnp.float32))(
            jnp.arange(n_steps, dtype=jnp.int32)
        ).reshape(n_steps, -1)
        args.append(jnp.zeros((_pow2(n_steps), coords), jnp.float32).at[:n_steps, : t_tok * d].set(draws))
    compiled = preferred() if interpret is None else not interpret
    extra = {}
    if compiled:
        from jax.experimental.pallas import triton as pl_triton

        extra["compiler_params"] = pl_triton.CompilerParams(num_warps=1, num_stages=1)
    kernel = functools.partial(
        _kernel, T=t_tok, D=d, n_steps=n_steps, noise=key is not None, origin=mass_anchor == "origin"
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
    tok = out[: t_tok * d].reshape(t_tok, d)
    vel = out[t_tok * d : 2 * t_tok * d].reshape(t_tok, d)
    with jax.default_matmul_precision("highest"):  # float32 labels whatever the caller's precision (no TF32)
        labels = dynamics.hard_labels(x, tok, mask)
    return dynamics.Result(
        tokens=tok,
        velocity=vel,
        labels=labels,
        steps=meta[0].astype(jnp.int32),
        converged=meta[1] > 0.5,
        delta=meta[2],
        state=dynamics.Motion(tokens=tok, velocity=vel),
    )
