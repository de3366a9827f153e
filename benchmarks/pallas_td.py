"""A hand-fused form of the token-dynamics run for GPUs, measured by ``suite.py`` before any of it
goes into the package.

The profile of the study path on the H200 (benchmarks/README.md, "On an accelerator") shows XLA's
program at the memory roofline of its own form: every step writes and reads each run's (T, N)
intermediates through HBM (about 160 KB a run-step against the run's 8 KB of points), because
XLA runs each step as eight kernels over the whole chunk. This form keeps one run in one program:
the points are read from global memory (where they stay in cache: 8 KB), the tokens and velocities
live in registers as scalars, and the whole loop, early exit included, runs inside the kernel, so a
run stops at its own step rather than at its chunk's slowest.

The rule is ``suite.FUSED``'s (the built-in rule for the knobs the study sweeps: temperature,
momentum, repulsion, damping, with the softmax assignment and the token-anchored mass epsilon),
for T tokens in D dimensions (static) and points padded to a power of two. Every value is a
(NP,) vector or a scalar: no register tensor is sliced or indexed, which Triton cannot do, and
vectors are built from scalars by a one-hot sum. ``interpret=True`` runs the same kernel on any
backend (how the tests check it on a CPU).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from tokdyn import dynamics


def _pick(vec, k: int):
    """Element ``k`` of a 1-D register vector as a scalar (a masked sum: no indexing)."""
    return jnp.sum(jnp.where(jax.lax.iota(jnp.int32, vec.shape[0]) == k, vec, 0.0))


def _vector(scalars, dtype=jnp.float32):
    """A 1-D vector of the given scalars (a sum of one-hots)."""
    iota = jax.lax.iota(jnp.int32, len(scalars))
    out = jnp.zeros((len(scalars),), dtype)
    for k, v in enumerate(scalars):
        out = out + jnp.where(iota == k, v, 0.0).astype(dtype)
    return out


def _kernel(xt_ref, w_ref, t0_ref, hp_ref, tok_ref, meta_ref, *, T: int, D: int, n_steps: int, tol: float):
    xs = [xt_ref[d, :] for d in range(D)]  # D vectors (NP,), loaded once
    w = w_ref[...]  # (NP,)
    t0, hp = t0_ref[...], hp_ref[...]
    tau = jnp.maximum(_pick(hp, 0), jnp.finfo(jnp.float32).tiny)
    momentum, repulsion, damping = _pick(hp, 1), _pick(hp, 2), _pick(hp, 3)
    inv_tau = 1.0 / tau
    eps = dynamics.EPS_MASS
    rmin2 = dynamics.MIN_DISTANCE ** 2

    def step(carry):
        t, v, s, _ = carry  # t, v: tuples of T*D scalars (token j, dim d at j*D + d)
        tj = [[t[j * D + d] for d in range(D)] for j in range(T)]
        # scores 2 t.x - |t|^2 (the negative squared distance up to the point's own |x|^2)
        sc = []
        for j in range(T):
            acc = -sum(c * c for c in tj[j]) + jnp.zeros_like(w)
            for d in range(D):
                acc = acc + (2.0 * tj[j][d]) * xs[d]
            sc.append(acc)
        top = sc[0]
        for j in range(1, T):
            top = jnp.maximum(top, sc[j])
        es = [jnp.exp((sc[j] - top) * inv_tau) for j in range(T)]
        tot = es[0]
        for j in range(1, T):
            tot = tot + es[j]
        scale = w / tot
        new_t, new_v = [], []
        # Coulomb repulsion on scalars: sum_{k != j} (t_j - t_k) / max(r, r_min)^3
        rep = [[0.0] * D for _ in range(T)]
        for j in range(T):
            for k in range(T):
                if k == j:
                    continue
                diff = [tj[j][d] - tj[k][d] for d in range(D)]
                r2 = jnp.maximum(sum(c * c for c in diff), rmin2)
                inv_r3 = jax.lax.rsqrt(r2) / r2
                rep[j] = [rep[j][d] + diff[d] * inv_r3 for d in range(D)]
        delta = jnp.float32(0.0)
        for j in range(T):
            a = es[j] * scale
            mass = jnp.sum(a)
            for d in range(D):
                mean = (jnp.sum(a * xs[d]) + eps * tj[j][d]) / (mass + eps)
                force = mean - tj[j][d] + repulsion * rep[j][d]
                vj = momentum * v[j * D + d] + damping * force
                new_v.append(vj)
                new_t.append(tj[j][d] + vj)
                delta = jnp.maximum(delta, jnp.abs(vj))
        return tuple(new_t), tuple(new_v), s + 1, delta < tol

    def cond(carry):
        return (carry[2] < n_steps) & jnp.logical_not(carry[3])

    t_init = tuple(_pick(t0, k) for k in range(T * D))
    v_init = tuple(jnp.float32(0.0) for _ in range(T * D))
    t, v, s, done = jax.lax.while_loop(cond, step, (t_init, v_init, jnp.int32(0), jnp.bool_(False)))
    tok_ref[...] = _vector(t)
    meta_ref[...] = _vector([s.astype(jnp.float32), done.astype(jnp.float32)])


def _pad_pow2(n: int) -> int:
    return 1 << max(int(n - 1).bit_length(), 4)


@functools.partial(jax.jit, static_argnames=("n_steps", "tol", "interpret", "num_warps"))
def run(x, tokens, hparams: dynamics.Hparams, mask, *, n_steps: int = 30, tol: float = 1e-3, interpret=False,
        num_warps: int = 1):
    """One run of the fused form: (N, D) ``x``, (T, D) initial ``tokens``, ``mask`` (N,); returns
    ``(tokens, labels, steps, converged)``. Vmappable (each run becomes one program of the grid)."""
    n, d = x.shape
    t_tok = tokens.shape[0]
    n_pad = _pad_pow2(n)
    x = x.astype(jnp.float32)
    xt = jnp.zeros((d, n_pad), jnp.float32).at[:, :n].set(x.T)
    w = jnp.zeros((n_pad,), jnp.float32).at[:n].set(mask.astype(jnp.float32))
    t0 = jnp.zeros((_pad_pow2(t_tok * d),), jnp.float32).at[: t_tok * d].set(tokens.astype(jnp.float32).reshape(-1))
    hp = jnp.stack([hparams.temperature, hparams.momentum, hparams.repulsion, hparams.damping]).astype(jnp.float32)
    kernel = functools.partial(_kernel, T=t_tok, D=d, n_steps=n_steps, tol=tol)
    extra = {}
    if not interpret:
        from jax.experimental.pallas import triton as plt
        extra["compiler_params"] = plt.CompilerParams(num_warps=num_warps, num_stages=1)
    tok, meta = pl.pallas_call(
        kernel,
        out_shape=(jax.ShapeDtypeStruct((t_tok * d,), jnp.float32), jax.ShapeDtypeStruct((2,), jnp.float32)),
        interpret=interpret, **extra,
    )(xt, w, t0, hp)
    final = tok.reshape(t_tok, d)
    labels = dynamics.hard_labels(x, final, mask)
    return final, labels, meta[0].astype(jnp.int32), meta[1] > 0.5
