"""Reverse-mode derivatives of the dynamics: ``jax.grad`` through ``run_fixed``, ``trajectory``,
``update`` (in a user's own ``lax.scan``), ``soft_assignment`` and ``sinkhorn``, the Sinkhorn branch
of the rule included, equal to central finite differences of the float64 NumPy reference
(tests/reference_rules.py) and, in float64 (``jax.enable_x64``), to tight tolerances; ``run_fixed``
equals ``run``; a Sinkhorn count above the static bound and per-step knobs are refused before
anything is compiled."""

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import jax_compilations
from reference import reference_repulsion
from reference_rules import means, reference_run_rules, schedule, sinkhorn_plan, softmax_rows
from tokdyn import data, dynamics

# the continuous knobs (sinkhorn_iters and anneal_steps are whole numbers)
KNOBS = ("temperature", "momentum", "repulsion", "damping", "langevin", "slot_norm", "anneal_ratio")

CONFIGS = [  # (seed, N, T, D, knobs, n_steps, masked, stochastic)
    # the two of the default suite share one shape, one n_steps and a mask: one program per dtype
    (0, 60, 4, 3, dict(temperature=0.8, momentum=0.3, repulsion=0.01, damping=0.7), 6, True, False),
    (1, 60, 4, 3, dict(temperature=1.5, momentum=0.2, sinkhorn_iters=5, slot_norm=0.5, damping=0.9), 6, True, False),
    (
        2,
        48,
        5,
        4,
        dict(temperature=1.2, momentum=0.1, repulsion=0.005, anneal_ratio=4.0, anneal_steps=4, langevin=1e-3),
        9,
        False,
        True,
    ),
    (
        3,
        80,
        4,
        2,
        dict(temperature=0.6, sinkhorn_iters=12, anneal_ratio=2.0, anneal_steps=3, damping=0.8),
        7,
        True,
        False,
    ),
]
IDS = [f"seed{c[0]}-N{c[1]}-T{c[2]}-D{c[3]}" for c in CONFIGS]
# the first two move temperature, momentum, repulsion, damping and Sinkhorn in the default suite;
# the annealed, stochastic and long-Sinkhorn ones run with -m slow
PARAMS = [
    pytest.param(c, id=i, marks=[pytest.mark.slow] if k >= 2 else []) for k, (c, i) in enumerate(zip(CONFIGS, IDS))
]


def _problem(seed, n, t, d, masked):
    """(x (N, D), tokens (T, D), mask or None, weights (T, D) of the loss): Gaussian clusters at a
    scale where the assignments are soft, tokens at jittered points (never coincident)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(t, d)) * 1.5
    x = (centers[rng.integers(0, t, n)] + 0.7 * rng.normal(size=(n, d))).astype(np.float32)
    tokens = (x[rng.choice(n, t, replace=False)] + 0.1 * rng.normal(size=(t, d))).astype(np.float32)
    mask = (np.arange(n) < n - n // 5) if masked else None
    return x, tokens, mask, rng.normal(size=(t, d))


def _loss(tokens, c):
    """A scalar of the final tokens without symmetries that could hide an error: c.t + |t|^2 / 2."""
    return jnp.sum(c * tokens) + 0.5 * jnp.sum(tokens**2)


def _noise(key, n_steps, shape, dtype=jnp.float32):
    """The Langevin draws of the documented key scheme (step s: fold_in(key, s)), as float64."""
    return np.stack(
        [np.asarray(jax.random.normal(jax.random.fold_in(key, s), shape, dtype), np.float64) for s in range(n_steps)]
    )


def _reference_steps(x, tokens, taus, knobs, mask=None, noise=None):
    """float64 NumPy: the rule's steps with the temperature ``taus[s]`` at step s (any schedule,
    one step per entry), no early stop. Returns the final tokens."""
    x, t = np.asarray(x, np.float64), np.array(tokens, np.float64)
    valid = np.ones(len(x), bool) if mask is None else np.asarray(mask)
    k = dict(momentum=0.0, repulsion=0.0, damping=1.0, langevin=0.0, sinkhorn_iters=0, slot_norm=0.0) | knobs
    v = np.zeros_like(t)
    for s, tau in enumerate(taus):
        logits = -((x[:, None, :] - t[None, :, :]) ** 2).sum(-1) / tau
        if k["sinkhorn_iters"] > 0:
            a = sinkhorn_plan(logits, int(k["sinkhorn_iters"]), valid)
        else:
            a = softmax_rows(logits)
            a[~valid] = 0.0
        # the mass epsilon on the token itself, as the package's rule puts it: the derivative in
        # slot_norm is of the epsilon's size, and so is the anchor's share of it
        force = means(x, a, valid, k["slot_norm"], t) - t + reference_repulsion(t, k["repulsion"])
        v = k["momentum"] * v + k["damping"] * force
        if k["langevin"] > 0:
            v = v + np.sqrt(2 * k["damping"] * k["langevin"]) * noise[s]
        t = t + v
    return t


def _reference_final(x, tokens, knobs, n_steps, mask=None, noise=None):
    k = dict(anneal_ratio=1.0, anneal_steps=0) | knobs
    taus = schedule(k.pop("temperature", 1.0), k.pop("anneal_ratio"), k.pop("anneal_steps"), n_steps)
    return _reference_steps(x, tokens, taus, k, mask, noise)


def _central(f, v, rel=1e-4):
    """Fourth-order central difference of ``f`` at ``v`` (float64: error ~ h^4 f^(5) + eps f / h),
    with a step relative to ``v`` (small knobs such as langevin = 1e-3 are strongly curved at the
    scale of 1e-4), 1e-6 at ``v = 0`` (repulsion between close tokens is strongly curved too)."""
    h = rel * (abs(v) if v != 0 else 1e-2)
    return (8 * (f(v + h) - f(v - h)) - (f(v + 2 * h) - f(v - 2 * h))) / (12 * h)


def _fd_knobs(x, tokens, knobs, n_steps, mask, c, noise, names):
    """Central differences (float64 NumPy reference) of the loss in each knob of ``names``."""
    loss = lambda k: float(np.sum(c * (t := _reference_final(x, tokens, k, n_steps, mask, noise))) + 0.5 * np.sum(t**2))
    return {
        f: _central(lambda v, f=f: loss(knobs | {f: v}), float(knobs.get(f, getattr(dynamics.Hparams(), f))))
        for f in names
    }


def _differentiable(knobs):
    """The knobs to differentiate in: every continuous one, except langevin at 0 (its derivative
    there is one-sided: no kick is drawn below 0)."""
    return [f for f in KNOBS if f != "langevin" or knobs.get("langevin", 0.0) > 0]


def _hparams(knobs, dtype):
    return dynamics.Hparams(
        **{f: jnp.asarray(knobs.get(f, getattr(dynamics.Hparams(), f)), dtype) for f in dynamics.FIELDS}
    )


@functools.partial(jax.jit, static_argnames=("n_steps",))
def _grads_run_fixed(x, tokens, hp, mask, c, key, n_steps):
    """The loss through ``run_fixed`` and its gradient in the knobs, the points and the initial
    tokens: one program per dtype and shape, read by every test of run_fixed's derivatives."""

    def loss(hp, x, tokens):
        return _loss(dynamics.run_fixed(x, tokens, hp, mask=mask, n_steps=n_steps, tol=0.0, key=key).tokens, c)

    return jax.value_and_grad(loss, argnums=(0, 1, 2))(hp, x, tokens)


def _grad_run_fixed(x, tokens, knobs, n_steps, mask, c, key, dtype):
    """(d loss / d hparams, d loss / d x, d loss / d tokens) in ``dtype``."""
    x, tokens = jnp.asarray(x, dtype), jnp.asarray(tokens, dtype)
    return _grads_run_fixed(x, tokens, _hparams(knobs, dtype), mask, jnp.asarray(c, dtype), key, n_steps)[1]


@pytest.mark.parametrize("config", PARAMS)
def test_grad_of_run_fixed_in_every_knob_matches_finite_differences(config):
    """d loss / d knob through n_steps of the rule (float32, as users run it) against central
    differences of the float64 reference, and in float64 to 1e-6."""
    seed, n, t, d, knobs, n_steps, masked, stochastic = config
    x, t0, mask, c = _problem(seed, n, t, d, masked)
    # a key for every run (with langevin 0 it draws nothing): the default configs' float32 program is the
    # one test_vmapped_gradients_over_batched_knobs_are_finite_and_per_run compares with
    key = jax.random.key(seed)
    names = _differentiable(knobs)
    noise32 = _noise(key, n_steps, t0.shape) if stochastic else None
    fd = _fd_knobs(x, t0, knobs, n_steps, mask, c, noise32, names)
    g32 = _grad_run_fixed(x, t0, knobs, n_steps, mask, c, key, jnp.float32)[0]
    scale = max(abs(v) for v in fd.values())
    for f in names:
        np.testing.assert_allclose(float(getattr(g32, f)), fd[f], rtol=5e-4, atol=1e-4 * scale, err_msg=f)
    with jax.enable_x64(True):
        noise64 = _noise(key, n_steps, t0.shape, jnp.float64) if stochastic else None
        fd64 = fd if not stochastic else _fd_knobs(x, t0, knobs, n_steps, mask, c, noise64, names)
        g64 = _grad_run_fixed(x, t0, knobs, n_steps, mask, c, key, jnp.float64)[0]
        for f in names:
            assert getattr(g64, f).dtype == jnp.float64
            np.testing.assert_allclose(float(getattr(g64, f)), fd64[f], rtol=1e-5, atol=1e-8 * scale, err_msg=f)


@pytest.mark.parametrize("config", CONFIGS[:2], ids=IDS[:2])
def test_grad_in_points_and_initial_tokens(config):
    """Directional derivatives in the initial tokens and in the points (float64)."""
    seed, n, t, d, knobs, n_steps, masked, _ = config
    x, t0, mask, c = _problem(seed, n, t, d, masked)
    rng = np.random.default_rng(100 + seed)
    ut, ux = rng.normal(size=t0.shape), rng.normal(size=x.shape)

    def ref(e_t, e_x):
        t = _reference_final(x + e_x * ux, t0 + e_t * ut, knobs, n_steps, mask)
        return float(np.sum(c * t) + 0.5 * np.sum(t**2))

    with jax.enable_x64(True):
        _, gx, gt = _grad_run_fixed(x, t0, knobs, n_steps, mask, c, jax.random.key(seed), jnp.float64)
    np.testing.assert_allclose(float(np.sum(np.asarray(gt) * ut)), _central(lambda e: ref(e, 0.0), 0.0), rtol=1e-6)
    np.testing.assert_allclose(float(np.sum(np.asarray(gx) * ux)), _central(lambda e: ref(0.0, e), 0.0), rtol=1e-6)
    if mask is not None:  # padded points do not enter the run
        assert np.all(np.asarray(gx)[~mask] == 0)


@pytest.mark.full
def test_grad_through_trajectory():
    """A loss on every recorded step (all tokens of the trajectory) against finite differences of
    the reference's trajectory; the Sinkhorn branch and annealing included."""
    seed, n, t, d, knobs, n_steps, masked, _ = CONFIGS[3]
    x, t0, mask, _ = _problem(seed, n, t, d, masked)
    c = np.random.default_rng(7).normal(size=(n_steps + 1, t, d))

    def ref(tau):
        k = knobs | dict(temperature=tau)
        tr = reference_run_rules(x, t0, **k, mask=mask, n_steps=n_steps, tol=0.0)["trajectory"]
        return float(np.sum(c * tr))

    fd = _central(ref, knobs["temperature"])

    @jax.jit
    def grad(hp, x, t0, mask, c):  # (one program)
        return jax.grad(
            lambda tau: jnp.sum(
                c
                * dynamics.trajectory(
                    x, t0, dataclasses.replace(hp, temperature=tau), mask=mask, n_steps=n_steps, tol=0.0
                ).tokens
            )
        )(hp.temperature)

    g = grad(_hparams(knobs, jnp.float32), x, t0, mask, c)
    np.testing.assert_allclose(float(g), fd, rtol=2e-3)


@pytest.mark.full
def test_grad_through_a_users_scan_over_update_with_a_temperature_per_step():
    """The per-step temperature route: a user's lax.scan over update with a scalar Hparams per step
    (the temperature array is scanned over), differentiated in every entry of the schedule, for the
    softmax and the Sinkhorn rules."""
    x, t0, mask, c = _problem(4, 70, 3, 2, True)
    taus = np.linspace(3.0, 0.5, 6)

    @jax.jit
    def grad(taus, hp):  # one program for both rules (the Sinkhorn count is traced)
        def loss(taus):
            def step(carry, s_tau):
                s, tau = s_tau
                tokens, velocity = dynamics.update(x, *carry, dataclasses.replace(hp, temperature=tau), mask, step=s)
                return (tokens, velocity), None

            (tokens, _), _ = jax.lax.scan(step, (jnp.asarray(t0), jnp.zeros_like(t0)), (jnp.arange(len(taus)), taus))
            return _loss(tokens, c)

        return jax.grad(loss)(taus)

    for knobs in (dict(momentum=0.4, repulsion=0.01), dict(sinkhorn_iters=4, damping=0.8)):
        g = np.asarray(grad(jnp.asarray(taus, jnp.float32), _hparams(knobs, jnp.float32)))

        def ref(i, v):
            tt = taus.copy()
            tt[i] = v
            t = _reference_steps(x, t0, tt, knobs, mask)
            return float(np.sum(c * t) + 0.5 * np.sum(t**2))

        fd = np.array([_central(lambda v, i=i: ref(i, v), taus[i]) for i in range(len(taus))])
        np.testing.assert_allclose(g, fd, rtol=2e-3, atol=1e-3 * np.abs(fd).max(), err_msg=str(knobs))


@jax.jit
def _one_sinkhorn_step(hp, tokens, x, mask, c):
    """One step of the rule: the loss, its gradient (reverse mode) and its derivative by forward
    mode, in the temperature and the tokens: one program for every count (the count is traced)."""

    def loss(tau, tokens):
        new, _ = dynamics.update(x, tokens, jnp.zeros_like(tokens), dataclasses.replace(hp, temperature=tau), mask)
        return _loss(new, c)

    args = (hp.temperature, tokens)
    return loss(*args), jax.grad(loss, argnums=(0, 1))(*args), jax.jacfwd(loss, argnums=(0, 1))(*args)


@pytest.mark.parametrize("k", [1, 7, dynamics.MAX_SINKHORN_ITERS])
def test_grad_of_one_sinkhorn_step_matches_reference_and_jacfwd(k):
    """One step of the balanced rule, up to the largest allowed count: value and gradient (in the
    temperature and the tokens) against the reference; reverse mode equals forward mode."""
    x, t0, mask, c = _problem(5, 50, 4, 3, True)
    hp = _hparams(dict(temperature=0.9, sinkhorn_iters=k), jnp.float32)

    def ref(tau, e=0.0, u=0.0):
        t = _reference_final(x, t0 + e * u, dict(temperature=tau, sinkhorn_iters=k), 1, mask)
        return float(np.sum(c * t) + 0.5 * np.sum(t**2))

    value, (g_tau, g_t), (f_tau, f_t) = _one_sinkhorn_step(hp, jnp.asarray(t0), x, mask, jnp.asarray(c, jnp.float32))
    np.testing.assert_allclose(float(value), ref(0.9), rtol=1e-5)
    np.testing.assert_allclose(float(g_tau), _central(ref, 0.9), rtol=2e-3)
    np.testing.assert_allclose(float(g_tau), float(f_tau), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(g_t), np.asarray(f_t), rtol=1e-4, atol=1e-5)
    u = np.random.default_rng(k).normal(size=t0.shape)
    np.testing.assert_allclose(float(np.sum(np.asarray(g_t) * u)), _central(lambda e: ref(0.9, e, u), 0.0), rtol=2e-3)


@pytest.mark.parametrize("use_mask", [False, pytest.param(True, marks=pytest.mark.full)])
def test_grad_of_sinkhorn_and_soft_assignment(use_mask):
    """The public assignment kernels: d sum(c * plan) in the logits (sinkhorn, a static count) and in
    the temperature and tokens (soft_assignment), against the float64 references."""
    rng = np.random.default_rng(9)
    n, t = 40, 4
    logits = (rng.normal(size=(n, t)) + np.array([2.0, 0.0, -1.0, -1.5])).astype(np.float32)
    mask = (np.arange(n) < 30) if use_mask else None
    valid = np.ones(n, bool) if mask is None else mask
    c, u = rng.normal(size=(n, t)), rng.normal(size=(n, t))
    for k in (1, 8, 150):  # any static count: the public kernel is not bounded by MAX_SINKHORN_ITERS
        g = np.asarray(
            jax.jit(jax.grad(lambda l, c: jnp.sum(c * dynamics.sinkhorn(l, k, mask=mask))))(jnp.asarray(logits), c)
        )
        fd = _central(lambda e: float(np.sum(c * sinkhorn_plan(logits + e * u, k, valid))), 0.0)
        np.testing.assert_allclose(float(np.sum(g * u)), fd, rtol=2e-3, atol=1e-5)
        if use_mask:
            assert np.all(g[~valid] == 0)

    x, t0, _, _ = _problem(10, n, t, 2, False)
    ct = rng.normal(size=(n, t))

    def ref(tau, e=0.0, ut=0.0):
        tok = t0 + e * ut
        a = softmax_rows(-((x[:, None, :].astype(np.float64) - tok[None]) ** 2).sum(-1) / tau)
        return float(np.sum(ct * np.where(valid[:, None], a, 0.0)))

    g_tau, g_t = jax.jit(
        jax.grad(lambda tau, tok: jnp.sum(ct * dynamics.soft_assignment(x, tok, tau, mask)), argnums=(0, 1))
    )(jnp.float32(0.7), jnp.asarray(t0))
    np.testing.assert_allclose(float(g_tau), _central(ref, 0.7), rtol=2e-3)
    ut = rng.normal(size=t0.shape)
    np.testing.assert_allclose(float(np.sum(np.asarray(g_t) * ut)), _central(lambda e: ref(0.7, e, ut), 0.0), rtol=2e-3)


@pytest.mark.full  # the default run: the transformation table's run (jacfwd) and run_fixed (grad) cells
def test_reverse_mode_equals_forward_mode_through_run():
    """run (a while_loop: forward mode only) and run_fixed (reverse mode) differentiate the same
    function: jacfwd of run's tokens equals jacrev of run_fixed's, early stop included."""
    x, t0, mask, _ = _problem(11, 60, 3, 2, True)

    @jax.jit
    def both(hp):  # one program for both rules (the knobs, the Sinkhorn count included, are traced)
        f_run = lambda tau: dynamics.run(x, t0, dataclasses.replace(hp, temperature=tau), mask=mask, n_steps=40).tokens
        f_fix = lambda tau: (
            dynamics.run_fixed(x, t0, dataclasses.replace(hp, temperature=tau), mask=mask, n_steps=40).tokens
        )
        steps = dynamics.run(x, t0, hp, mask=mask, n_steps=40).steps
        return steps, jax.jacrev(f_fix)(hp.temperature), jax.jacfwd(f_run)(hp.temperature)

    for knobs in (dict(temperature=0.8, momentum=0.3), dict(temperature=1.0, sinkhorn_iters=6, repulsion=0.01)):
        steps, rev, fwd = both(_hparams(knobs, jnp.float32))
        assert 2 < int(steps) < 40  # the early stop is inside the derivative
        np.testing.assert_allclose(np.asarray(rev), np.asarray(fwd), rtol=1e-4, atol=1e-5)


def test_vmapped_gradients_over_batched_knobs_are_finite_and_per_run():
    """vmap of grad over a stacked Hparams mixing the softmax and Sinkhorn rules and Langevin on and
    off (the conds become selects: the untaken branch must not leak NaN or change the value). In the
    default run: it is the check that fails on JAX 0.10.1 (inside ``lax.cond`` under ``vmap(grad)``),
    which sets pyproject.toml's ``jax>=`` bound that CI's lowest-JAX run checks with the default suite."""
    _, n, t, d, _, n_steps, masked, _ = CONFIGS[0]  # its shapes: the runs one by one are its float32 program
    x, t0, mask, c = _problem(12, n, t, d, masked)
    x, t0, c = (jnp.asarray(a, jnp.float32) for a in (x, t0, c))
    items = [
        dict(temperature=1.0),
        dict(temperature=0.8, sinkhorn_iters=5),
        dict(temperature=1.2, langevin=1e-3, damping=0.5),
        dict(temperature=0.9, sinkhorn_iters=2, langevin=0.0),
    ]
    key = jax.random.key(0)

    def grad_one(hp):
        tokens = lambda hp: dynamics.run_fixed(x, t0, hp, mask=mask, n_steps=n_steps, tol=0.0, key=key).tokens
        return jax.grad(lambda hp: _loss(tokens(hp), c))(hp)

    batched = jax.jit(jax.vmap(grad_one))(dynamics.Hparams.stack([dynamics.Hparams(**k) for k in items]))
    for i, k in enumerate(items):  # one program for the four runs (the knobs are traced)
        one = _grads_run_fixed(x, t0, _hparams(k, jnp.float32), mask, c, key, n_steps)[1][0]
        for f in dynamics.FIELDS:
            b = np.asarray(getattr(batched, f))[i]
            assert np.isfinite(b), (f, k)
            np.testing.assert_allclose(b, np.asarray(getattr(one, f)), rtol=1e-4, atol=1e-5, err_msg=f"{f} {k}")


def test_sinkhorn_count_is_traced_under_grad():
    """Sweeping sinkhorn_iters (0 included) under jax.grad compiles once; counts give the reference's
    value; a traced count above MAX_SINKHORN_ITERS (which cannot be checked) acts as the maximum."""
    seed, n, t, d, _, n_steps, masked, _ = CONFIGS[0]  # (the program of the knobs' gradients)
    x, t0, mask, c = _problem(13, n, t, d, masked)
    x32, t32, c32 = (jnp.asarray(a, jnp.float32) for a in (x, t0, c))

    def f(hp):
        value, (g, _, _) = _grads_run_fixed(x32, t32, hp, mask, c32, jax.random.key(seed), n_steps)
        return value, g

    f(_hparams(dict(sinkhorn_iters=3), jnp.float32))
    with jax_compilations() as compiled:
        for k in (0, 1, 9, dynamics.MAX_SINKHORN_ITERS):
            value, g = f(_hparams(dict(sinkhorn_iters=k), jnp.float32))
            t = _reference_final(x, t0, dict(sinkhorn_iters=k), n_steps, mask)
            np.testing.assert_allclose(float(value), np.sum(c * t) + 0.5 * np.sum(t**2), rtol=1e-4)
            assert np.isfinite(float(g.temperature))
        over = f(_hparams(dict(sinkhorn_iters=dynamics.MAX_SINKHORN_ITERS + 50), jnp.float32))
    assert compiled == []
    np.testing.assert_allclose(float(over[0]), float(value), rtol=1e-6)


def test_grad_in_anneal_ratio_at_one():
    """At the default ratio r = 1 the schedule is the constant temperature exactly, yet its
    derivative in r is not zero when anneal_steps > 0 (d tau_s / d r = tau (1 - s / S))."""
    g = jax.jacrev(
        lambda r: dynamics.temperature_schedule(dynamics.Hparams(temperature=0.5, anneal_ratio=r, anneal_steps=4.0), 6)
    )(jnp.float32(1.0))
    np.testing.assert_allclose(np.asarray(g), 0.5 * np.maximum(0.0, 1.0 - np.arange(6) / 4.0), rtol=1e-6)
    assert np.all(
        np.asarray(dynamics.temperature_schedule(dynamics.Hparams(0.5, anneal_ratio=1.0, anneal_steps=4.0), 6))
        == np.float32(0.5)
    )


# ---------------------------------------------------------------------------------------------- run_fixed vs run


@pytest.mark.full
def test_run_fixed_equals_run_on_a_batch_of_seeds():
    """The same steps and convergence on >= 99% of 100 seeds per method, and tokens and velocity
    within 1e-5 on >= 99% of the converged ones: two programs, fused differently, are never
    compared bit for bit, and a run that does not converge may be chaotic (inertia+repulsion: the
    pair instability, where two nearly coincident tokens turn a rounding difference into a
    different run). Annealing to 1e-4: tokens merged at the high starting temperature split on the
    way down, and the split grows any difference between the programs by about 2 lambda / tau per
    step (observed up to 3e-5; 1e-6 for the other methods). The pair instability also moves the
    final tokens of a few converged inertia+repulsion runs beyond 1e-5 (2 of 45 here in the
    centred coordinates, fewer before them, whose roundings differed): >= 95% there."""
    atol = {"annealing": 1e-4}
    share = {"inertia+repulsion": 0.95}
    methods = ["baseline", "inertia+repulsion", "sinkhorn", "annealing", "damped"]
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(2024), i))(jnp.arange(100))

    def one(key, hp):
        c = data.gaussian_clusters(key, 3, points_per_cluster=30, dim=2, noise=0.6, center_box=4.0, max_clusters=4)
        t0 = dynamics.init_tokens(jax.random.fold_in(key, 1), 4, 2, x=c.x, mask=c.mask)
        return dynamics.run(c.x, t0, hp, mask=c.mask), dynamics.run_fixed(c.x, t0, hp, mask=c.mask, n_steps=30)

    batch = jax.jit(jax.vmap(one, in_axes=(0, None)))
    for name in methods:
        r, f = batch(keys, dynamics.METHODS[name])
        close = lambda a, b: np.all(np.abs(np.asarray(a) - np.asarray(b)) <= atol.get(name, 1e-5), axis=(1, 2))
        same = (np.asarray(r.steps) == np.asarray(f.steps)) & (np.asarray(r.converged) == np.asarray(f.converged))
        assert same.mean() >= 0.99, (name, np.flatnonzero(~same))
        converged = same & np.asarray(r.converged)
        near = close(f.tokens, r.tokens) & close(f.velocity, r.velocity)
        assert near[converged].mean() >= share.get(name, 0.99), (name, np.flatnonzero(converged & ~near))
        assert np.mean(np.asarray(f.labels) == np.asarray(r.labels)) > 0.99
        assert 0.2 < np.asarray(r.converged).mean()  # the masking after convergence is exercised


# ---------------------------------------------------------------------------------------------- refused input


def test_bad_sinkhorn_count_and_per_step_knobs_are_refused_before_compiling():
    x = np.zeros((5, 2), np.float32)
    t = x[:2]
    v = np.zeros_like(t)
    too_many = dynamics.Hparams(sinkhorn_iters=dynamics.MAX_SINKHORN_ITERS + 1)
    per_step = [
        (dynamics.Hparams(temperature=np.linspace(4, 0.5, 30)), r"hparams\.temperature .*scalar.*shape \(30,\)"),
        (dynamics.Hparams(temperature=jnp.linspace(4, 0.5, 30)), r"hparams\.temperature .*shape \(30,\)"),
        (dynamics.Hparams(momentum=np.full((1,), 0.3)), r"hparams\.momentum .*shape \(1,\)"),
        (dynamics.Hparams(damping=jnp.ones((3, 2))), r"hparams\.damping .*shape \(3, 2\)"),
    ]
    calls = [
        lambda hp: dynamics.run(x, t, hp),
        lambda hp: dynamics.run_fixed(x, t, hp, n_steps=3),
        lambda hp: dynamics.trajectory(x, t, hp, n_steps=3),
        lambda hp: dynamics.update(x, t, v, hp),
        lambda hp: dynamics.temperature_schedule(hp, 3),
    ]
    traced_steps = jnp.int32(3)  # (making a JAX scalar compiles)
    with jax_compilations() as compiled:
        for call in calls:
            with pytest.raises(ValueError, match=rf"sinkhorn_iters .*\[0, {dynamics.MAX_SINKHORN_ITERS}\].*got 101"):
                call(too_many)
            for hp, match in per_step:
                with pytest.raises(ValueError, match=match):
                    call(hp)
        with pytest.raises(ValueError, match="n_steps"):
            dynamics.run_fixed(x, t, n_steps=0)
        with pytest.raises(TypeError, match="n_steps"):
            dynamics.run_fixed(x, t, n_steps=traced_steps)
    assert compiled == []
    # the allowed maximum itself runs
    assert np.all(
        np.isfinite(
            np.asarray(
                dynamics.run_fixed(
                    x + np.arange(5, dtype=np.float32)[:, None],
                    t,
                    dynamics.Hparams(sinkhorn_iters=dynamics.MAX_SINKHORN_ITERS),
                    n_steps=2,
                ).tokens
            )
        )
    )


# ---------------------------------------------------------------------------------------------- implicit


IMPLICIT_CONFIGS = [  # (seed, N, T, D, knobs, masked): runs that converge to a fixed point
    # one shape and a mask for all: the knobs (the Sinkhorn count included) are traced, so that
    # every configuration runs the same programs
    (0, 60, 3, 2, dict(temperature=0.8), True),  # baseline
    (1, 60, 3, 2, dict(temperature=1.0, momentum=0.5), True),  # inertia
    (2, 60, 3, 2, dict(temperature=1.2, momentum=0.3, repulsion=0.02, damping=0.7), True),
    (3, 60, 3, 2, dict(temperature=0.9, sinkhorn_iters=5, slot_norm=0.5, damping=0.9), True),
    (4, 60, 3, 2, dict(temperature=0.7, momentum=0.2, anneal_ratio=3.0, anneal_steps=5), True),
]
IMPLICIT_IDS = ["baseline", "inertia", "repulsion-damped", "sinkhorn-slot", "annealed"]
# float64 verifications at depth: the full tier (-m full) runs the configurations that between them
# move every knob, -m slow the others; the default run checks run(implicit=True)'s derivatives in
# float32 through the transformation table (tests/test_transformations.py: grad against finite
# differences, jacfwd against grad, under vmap)
IMPLICIT_PARAMS = [
    pytest.param(c, id=i, marks=[pytest.mark.slow] if i in ("baseline", "inertia") else [pytest.mark.full])
    for c, i in zip(IMPLICIT_CONFIGS, IMPLICIT_IDS)
]
IMPLICIT_KNOBS = ("temperature", "momentum", "repulsion", "damping", "slot_norm", "anneal_ratio")
IMPLICIT_RUN = dict(n_steps=5000, tol=1e-13)
IMPLICIT_FIXED_STEPS = 1200  # run_fixed's steps: at least 4 times those of each converged run


@functools.partial(jax.jit, static_argnames=("n_fixed",))
def _implicit_and_fixed(hp, x, tokens, mask, c, n_fixed):
    """float64, one program for every configuration: run(implicit=True)'s result, its gradient in
    (hparams, x, tokens), run_fixed's gradient over ``n_fixed`` steps, and the derivative in the
    temperature by forward mode through run(implicit=True)."""

    def implicit_loss(hp, x, tokens):
        res = dynamics.run(x, tokens, hp, implicit=True, mask=mask, **IMPLICIT_RUN)
        return _loss(res.tokens, c), res

    def fixed_loss(hp, x, tokens):
        return _loss(dynamics.run_fixed(x, tokens, hp, mask=mask, n_steps=n_fixed, tol=0.0).tokens, c)

    (_, res), g = jax.value_and_grad(implicit_loss, argnums=(0, 1, 2), has_aux=True)(hp, x, tokens)
    f = jax.grad(fixed_loss, argnums=(0, 1, 2))(hp, x, tokens)
    tangent = jax.jvp(
        lambda tau: implicit_loss(dataclasses.replace(hp, temperature=tau), x, tokens)[0],
        (hp.temperature,),
        (jnp.ones_like(hp.temperature),),
    )[1]
    return res, g, f, tangent


@pytest.mark.parametrize("config", IMPLICIT_PARAMS)
def test_implicit_grad_of_run_matches_finite_differences_and_run_fixed(config):
    """float64: jax.grad through run(implicit=True) of a converged run equals central differences of
    run (stopping at tol) in every continuous knob, and jax.grad through run_fixed with enough steps
    to converge in the knobs and the points; the initial tokens get zero."""
    seed, n, t, d, knobs, masked = config
    with jax.enable_x64(True):
        x, tokens, mask, c = _problem(seed, n, t, d, masked)
        x, tokens, c = (jnp.asarray(a, jnp.float64) for a in (x, tokens, c))
        hp = _hparams(knobs, jnp.float64)
        kw = dict(mask=mask, **IMPLICIT_RUN)

        res, (g_hp, g_x, g_t), (f_hp, f_x, f_t), tangent = _implicit_and_fixed(
            hp, x, tokens, mask, c, IMPLICIT_FIXED_STEPS
        )
        plain = dynamics.run(x, tokens, hp, **kw)
        assert bool(res.converged) and 4 * int(res.steps) <= IMPLICIT_FIXED_STEPS
        # the same forward run, inside a custom VJP (another program): float64 rounding, 64 units at
        # the tokens' magnitude
        np.testing.assert_allclose(
            res.tokens, plain.tokens, rtol=0, atol=64 * np.finfo(np.float64).eps * np.abs(plain.tokens).max()
        )
        np.testing.assert_array_equal(res.labels, plain.labels)

        def run_loss(name, v):
            hp_v = dataclasses.replace(hp, **{name: jnp.asarray(v, jnp.float64)})  # traced: edges (0) allowed
            return float(_loss(dynamics.run(x, tokens, hp_v, **kw).tokens, c))

        for name in IMPLICIT_KNOBS:
            got = float(getattr(g_hp, name))
            fd = _central(lambda v: run_loss(name, v), float(getattr(hp, name)))
            np.testing.assert_allclose(got, fd, rtol=1e-5, atol=1e-7, err_msg=f"{name}: implicit vs run's FD")
            np.testing.assert_allclose(
                got, float(getattr(f_hp, name)), rtol=1e-6, atol=1e-9, err_msg=f"{name}: implicit vs run_fixed"
            )
        np.testing.assert_allclose(g_x, f_x, rtol=1e-6, atol=1e-9)
        assert np.all(np.asarray(g_t) == 0.0)  # a fixed point does not depend on where the run started
        np.testing.assert_allclose(f_t, 0.0, atol=1e-9)  # the converged unrolled run forgets it too
        # a point coordinate by central differences of run
        i = 1 if mask is None else 2
        fd_x = _central(
            lambda v: float(_loss(dynamics.run(x.at[i, 0].set(v), tokens, hp, **kw).tokens, c)), float(x[i, 0])
        )
        np.testing.assert_allclose(float(g_x[i, 0]), fd_x, rtol=1e-5, atol=1e-7)
        # forward mode agrees with reverse mode
        np.testing.assert_allclose(float(tangent), float(g_hp.temperature), rtol=1e-9)


class _Soft(NamedTuple):
    temperature: float = 1.0
    step_size: float = 1.0


def _soft_step(tokens, points, hp, s, key):
    """Soft k-means with a step size, the state the tokens alone (a rule from outside the package)."""
    d2 = jnp.sum((points.x[:, None] - tokens[None]) ** 2, axis=-1)  # (N, T)
    a = jax.nn.softmax(-d2 / hp.temperature, axis=1) * points.weights[:, None]
    sums = a.T @ points.x1
    return tokens + hp.step_size * (sums[:, :-1] / sums[:, -1:] - tokens)


SOFT = dynamics.Rule(lambda points, tokens, hp: tokens, _soft_step, hparams=_Soft(), name="soft")


@pytest.mark.full  # four programs of an implicit and a 300-step unrolled derivative (about 27 s)
def test_implicit_grad_of_a_rule_of_ones_own_and_under_vmap_in_float32():
    """float32, tol 1e-6: a tokens-only rule from outside the package and the built-in inertia rule;
    jax.vmap of jax.grad over batched knobs equals the per-run gradients and run_fixed's."""
    x, tokens, _, c = _problem(5, 60, 3, 2, False)
    for rule, batch in [
        (SOFT, _Soft(temperature=jnp.array([0.7, 1.0]), step_size=jnp.array([0.8, 0.5]))),
        (
            dynamics.BUILTIN,
            dynamics.Hparams.stack(
                [dynamics.Hparams(temperature=0.8, momentum=0.5), dynamics.Hparams(temperature=1.1, momentum=0.3)]
            ),
        ),
    ]:

        def implicit_loss(hp):
            return _loss(dynamics.run(x, tokens, hp, rule=rule, n_steps=2000, tol=1e-6, implicit=True).tokens, c)

        def fixed_loss(hp):
            return _loss(dynamics.run_fixed(x, tokens, hp, rule=rule, n_steps=300, tol=0.0).tokens, c)

        batched = jax.jit(jax.vmap(jax.grad(implicit_loss)))(batch)
        per_run = jax.jit(lambda hp: (jax.grad(implicit_loss)(hp), jax.grad(fixed_loss)(hp)))  # (one program)
        for b in range(2):
            hp = jax.tree_util.tree_map(lambda v: v[b], batch)
            one, fixed = per_run(hp)
            for got, want, ref in zip(
                jax.tree_util.tree_leaves(batched), jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(fixed)
            ):
                np.testing.assert_allclose(got[b], want, rtol=1e-4, atol=1e-5)
                np.testing.assert_allclose(want, ref, rtol=2e-3, atol=2e-4)


def test_implicit_is_refused_before_compiling_where_it_cannot_be_supported():
    """A non-bool ``implicit`` before anything is traced; a rule state with an integer leaf while
    tracing, before anything is compiled."""
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    t = x[:2]
    with jax_compilations() as compiled:
        with pytest.raises(TypeError, match="implicit must be a bool"):
            dynamics.run(x, t, implicit="yes")
        with pytest.raises(TypeError, match="implicit must be a bool"):
            dynamics.run(x, t, implicit=1)
    assert compiled == []
    counted = dynamics.Rule(_counted_init, _counted_step, name="counted")
    with jax_compilations() as compiled:
        with pytest.raises(TypeError, match=r"implicit=True.*floating.*int32"):
            dynamics.run(x, t, rule=counted, implicit=True)
    assert "/jax/core/compile/backend_compile_duration" not in compiled
    assert int(dynamics.run(x, t, rule=counted, n_steps=3).state.count) == 3  # fine without implicit


class _Counted(NamedTuple):
    tokens: jax.Array
    count: jax.Array


def _counted_init(points, tokens, hp):
    return _Counted(tokens, jnp.zeros((), jnp.int32))


def _counted_step(state, points, hp, s, key):
    return _Counted(0.5 * state.tokens, state.count + 1)
