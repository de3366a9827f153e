"""The transformation table (``TABLE`` of tests/transformations_table.py, rendered in docs/transformations.md)
checked cell by cell: each kernel is called on small inputs under jit, vmap, grad (reverse mode),
jacfwd (forward mode) and shard_map (over the local devices, with JAX's default ``check_vma``),
and each result is compared with a reference: the instances one by one under jit (vmap), the
vmapped batch (shard_map), central finite differences along a random
direction and the other mode (grad, jacfwd). A ``no`` cell must fail; an ``n/a`` cell's reason is
checked (integer outputs, no real input, a zero derivative). Every public function of the kernel
modules is in the table or in its list of host-side functions, and the markdown file is what the
table renders, so neither can drift from the code. The suite's process has one CPU device: a
child process with two checks the shard_map cells of a few rows where the batch is really split.

Each row compiles two programs (see :class:`Case`); the models' parameters are drawn on the host."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import transformations_table as transformations
from conftest import child_env, compilation_cache_dir
from tokdyn import assignment, diffusion, dynamics, es, geometry, metrics, probes, refinement, tracking, train
from tokdyn.dynamics import pallas
from tokdyn.models import iodine, savi, sequence, slots, vtae
from tokdyn.models.vtae import training as vtae_training

TABLE = transformations.TABLE
KEY = jax.random.key(0)


# ---------------------------------------------------------------------------------------------- the cases


@dataclasses.dataclass
class Case:
    """How the test calls one kernel.

    ``fn(*args)``: the kernel with its static arguments closed over; ``make(i)``: the arguments of
    instance i (instance 0 is the one differentiated); ``in_axes``: 0 for the arguments batched by
    vmap / shard_map, None for shared ones; ``wrt``: the argument indices differentiated in; ``h``:
    the finite-difference step (along a direction of unit norm); ``fd``: whether float32 finite
    differences resolve the derivative (the models' are checked in float64 in
    tests/test_model_gradients.py; here reverse mode against forward mode); ``optimized``: compile
    with XLA's optimisations (see :func:`_compiler`); ``raises``: for a ``no`` cell, the pattern
    of the error.

    Each row compiles its kernel twice: with its derivatives (:attr:`jitted` and
    :attr:`derivatives`: the output and both modes in one program, which serves the jit cell, the
    instances one by one, the finite-difference points and the derivative cells; the kernel alone
    where the row has no derivative to check) and vmapped under shard_map (:attr:`sharded_batch`:
    the vmap and shard_map cells, against the instances one by one). Should a shared program fail,
    the cells fall back to programs of their own, so that a failure is the cell's."""

    fn: Callable
    make: Callable[[int], tuple]
    in_axes: tuple
    wrt: tuple = ()
    h: float = 1e-2
    fd: bool = True
    optimized: bool = False
    raises: dict = dataclasses.field(default_factory=dict)
    rtol: float = 2e-2  # finite differences in float32 against a derivative
    kernel: str = ""  # the table row (set by cases())

    @functools.cached_property
    def row(self) -> transformations.Row:
        return transformations.row(self.kernel)

    @functools.cached_property
    def args(self) -> tuple:
        return self.make(0)

    @functools.cached_property
    def n(self) -> int:
        """The batch of vmap and shard_map: two instances per local device."""
        return 2 * len(jax.local_devices())

    @functools.cached_property
    def instances(self) -> list:
        return [self.make(i) for i in range(self.n)]

    @functools.cached_property
    def batched(self) -> tuple:
        return tuple(
            _stack(*[it[j] for it in self.instances]) if ax == 0 else self.instances[0][j]
            for j, ax in enumerate(self.in_axes)
        )

    def vmapped(self, *batched):
        return jax.vmap(self.fn, in_axes=self.in_axes)(*batched)

    def sharded(self, *batched, check_vma=True):
        mesh = jax.sharding.Mesh(np.asarray(jax.local_devices()), ("runs",))
        specs = tuple(P("runs") if ax == 0 else P() for ax in self.in_axes)
        return jax.shard_map(
            jax.vmap(self.fn, in_axes=self.in_axes), mesh=mesh, in_specs=specs, out_specs=P("runs"), check_vma=check_vma
        )(*batched)

    def jitted(self, *args):
        """The kernel's output at ``args``, compiled: by the row's derivative program where it has
        one (the value is its primal output, so that the kernel is not compiled alone too), else by
        the kernel alone under jit."""
        if self.combined is not None and self.shares_value:
            return self._combined(args, self.direction)[0]
        return self._alone(*args)

    @property
    def shares_value(self) -> bool:
        """Whether the derivative program takes the arguments as inputs and also gives the
        kernel's output. Not for a row compiled with XLA's optimisations (see :func:`_compiler`):
        there, geometry.summary's forward-mode derivative of ``jnp.max`` comes out NaN when the
        arguments are the program's inputs; its derivative program holds instance 0's arguments as
        constants, and the kernel compiles alone."""
        return not self.optimized

    @functools.cached_property
    def _alone(self):
        return jax.jit(self.fn)

    @functools.cached_property
    def one_by_one(self):
        return _stack(*[self.jitted(*inst) for inst in self.instances])

    @functools.cached_property
    def sharded_batch(self):
        """The batch vmapped under shard_map (with ``check_vma=False`` where the row's cell says so),
        or the exception that stopped it."""
        check_vma = "check_vma=False" not in self.row.cell("shard_map")
        try:
            return jax.jit(functools.partial(self.sharded, check_vma=check_vma))(*self.batched)
        except Exception as e:  # noqa: BLE001 (the cells attribute it)
            return e

    def replace(self, args, values):
        args = list(args)
        for i, v in zip(self.wrt, values):
            args[i] = v
        return tuple(args)

    def primals(self) -> tuple:
        return tuple(self.args[i] for i in self.wrt)

    def scalar(self, *w):
        """A fixed weighted sum of every float output, as a function of the ``wrt`` arguments."""
        return _scalarise(self.fn(*self.replace(self.args, w)))

    def grad(self, *primals):
        return jax.grad(self.scalar, argnums=tuple(range(len(self.wrt))))(*primals)

    def jvp(self, primals, tangents):
        return jax.jvp(self.scalar, primals, tangents)[1]

    @functools.cached_property
    def direction(self):
        return _direction(self.primals())

    @functools.cached_property
    def _combined(self):
        """One program: the kernel's output at ``args`` and, at its ``wrt`` arguments, the modes the
        row's cells ask for (yes, or a zero derivative to check): ``(output, {grad, jvp})``."""
        want = lambda t: self.row.status(t) == "yes" or self.row.cell(t) == transformations.PIECEWISE  # noqa: E731
        modes = [m for m, t in (("grad", "grad"), ("jvp", "jacfwd")) if want(t)]
        if not self.wrt or not modes:
            return None

        def program(args, tangents):
            args = args if self.shares_value else self.args  # (constants: see shares_value)
            primals = tuple(args[i] for i in self.wrt)
            fn = lambda *w: self.fn(*self.replace(args, w))  # noqa: E731
            out, value = {}, None
            argnums = tuple(range(len(self.wrt)))
            if "grad" in modes and self.shares_value:  # the output rides along as the reverse pass's auxiliary
                scalar_and_out = lambda *w: (_scalarise(o := fn(*w)), o)  # noqa: E731
                (_, value), out["grad"] = jax.value_and_grad(scalar_and_out, argnums, has_aux=True)(*primals)
            elif "grad" in modes:
                out["grad"] = jax.grad(lambda *w: _scalarise(fn(*w)), argnums)(*primals)
            elif self.shares_value:
                value = fn(*primals)
            if "jvp" in modes:
                out["jvp"] = jax.jvp(lambda *w: _scalarise(fn(*w)), primals, tangents)[1]
            return value, out

        return jax.jit(program)

    @functools.cached_property
    def combined(self):
        """The program of :attr:`_combined` where the row has one and it runs, else None (each mode
        and the kernel then run alone)."""
        if self._combined is None:
            return None
        try:
            return self._combined(self.args, self.direction)
        except Exception:  # noqa: BLE001 (each mode then runs alone)
            return None

    @property
    def derivatives(self):
        """``{grad, jvp}`` at instance 0 from the combined program; None without it."""
        return None if self.combined is None else self.combined[1]

    def reverse(self):
        out = self.derivatives
        return out["grad"] if out is not None else jax.jit(self.grad)(*self.primals())

    def forward(self):
        out = self.derivatives
        return out["jvp"] if out is not None else jax.jit(self.jvp)(self.primals(), self.direction)

    def value(self, *w) -> float:
        """The scalar at the ``wrt`` values ``w`` (default: the instance's), from the jitted kernel,
        summed on the host in float64."""
        return _host_scalar(self.jitted(*(self.replace(self.args, w) if w else self.args)))

    def finite_difference(self) -> float:
        """Fourth-order central difference of the scalar along the direction (the kernel in float32)."""
        x, u, h = self.primals(), self.direction, self.h
        f = lambda a: self.value(*_axpy(a, u, x))  # noqa: E731
        return (8 * (f(h) - f(-h)) - (f(2 * h) - f(-2 * h))) / (12 * h)


def _host_scalar(out) -> float:
    """:func:`_scalarise` on the host, in float64."""
    total = 0.0
    for k, leaf in enumerate(jax.tree_util.tree_leaves(out)):
        if _is_float(leaf):
            a = np.asarray(leaf, np.float64)
            weight = np.cos(0.7 * np.arange(a.size, dtype=np.float32) + k).astype(np.float64).reshape(a.shape)
            total += float(np.sum(np.where(np.isfinite(a), a, 0.0) * weight))
    return total


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.floating) if hasattr(x, "dtype") or isinstance(x, float) else False


def _scalarise(out):
    """sum_k <w_k, leaf_k> over the float leaves, with fixed weights (no symmetry can hide an error)."""
    total = 0.0
    for k, leaf in enumerate(jax.tree_util.tree_leaves(out)):
        if _is_float(leaf):
            w = jnp.cos(0.7 * jnp.arange(jnp.size(leaf), dtype=jnp.float32) + k).reshape(jnp.shape(leaf))
            total = total + jnp.sum(jnp.where(jnp.isfinite(leaf), leaf, 0.0) * w)
    return total


def _direction(primals, seed=0):
    """A random direction of unit norm over the float leaves of ``primals`` (NumPy: nothing compiles)."""
    leaves, tree = jax.tree_util.tree_flatten(primals)
    rng = np.random.default_rng(seed)
    u = [rng.normal(size=np.shape(v)) if _is_float(v) else np.zeros(np.shape(v)) for v in leaves]
    norm = np.sqrt(sum(float(np.sum(x**2)) for x in u))
    u = [(x / norm).astype(jnp.result_type(v)) if _is_float(v) else x for x, v in zip(u, leaves)]
    return jax.tree_util.tree_unflatten(tree, u)


def _axpy(a, u, x):
    """x + a u on the host (float leaves; others as they are)."""
    return jax.tree_util.tree_map(
        lambda xi, ui: (np.asarray(xi) + a * ui).astype(jnp.result_type(xi)) if _is_float(xi) else xi, x, u
    )


def _dot(a, b):
    return sum(
        float(np.vdot(np.asarray(x, np.float64), np.asarray(y, np.float64)))
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
        if _is_float(x)
    )


def _stack(*items):
    """The leaves of ``items`` stacked on a new leading axis (on the host, keys on the device)."""

    def stack(*v):
        if jax.dtypes.issubdtype(jnp.result_type(v[0]), jax.dtypes.prng_key):
            return jnp.stack(v)
        return np.stack([np.asarray(a) for a in v])

    return jax.tree_util.tree_map(stack, *items)


def _rng(i, salt=0):
    return np.random.default_rng(1000 * salt + i)


def _points(i, n=24, d=2, t=3):
    rng = _rng(i, 1)
    centers = np.array([[-2.0, 0.0], [2.0, 0.5], [0.0, 2.5], [1.0, -2.0]])[:t, :d]
    x = (centers[np.arange(n) % t] + 0.5 * rng.normal(size=(n, d))).astype(np.float32)
    tokens = (x[:t] + 0.3 * rng.normal(size=(t, d))).astype(np.float32)
    mask = np.arange(n) < n - 3
    return x, tokens, mask


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _hp(tau, mom=0.0, rep=0.0, damp=1.0, **kw):
    return dynamics.Hparams(temperature=tau, momentum=mom, repulsion=rep, damping=damp, **kw)


def _labels(i, n=12, k=3, salt=2):
    rng = _rng(i, salt)
    return rng.integers(0, k, n).astype(np.int32)


# one process of each kind, tiny T
GAUSS = diffusion.gaussian("linear", 8)
UNI = diffusion.discrete("uniform", 3, T=6)


def _dynamics_cases():
    c = {}
    c["dynamics.soft_assignment"] = Case(
        lambda x, t, tau, m: dynamics.soft_assignment(x, t, tau, m),
        lambda i: (*_points(i)[:2], jnp.float32(0.8 + 0.1 * i), _points(i)[2]),
        (0, 0, 0, None),
        wrt=(0, 1, 2),
    )
    c["dynamics.sinkhorn"] = Case(
        lambda l, m: dynamics.sinkhorn(l, 7, mask=m),
        lambda i: (jnp.asarray(_rng(i, 3).normal(size=(12, 3)), jnp.float32), np.arange(12) < 10 - i),
        (0, 0),
        wrt=(0,),
    )
    c["dynamics.coulomb"] = Case(dynamics.coulomb, lambda i: (_points(i)[1],), (0,), wrt=(0,))
    c["dynamics.temperature_schedule"] = Case(
        lambda tau, r: dynamics.temperature_schedule(
            dynamics.Hparams(temperature=tau, anneal_ratio=r, anneal_steps=3.0), 5
        ),
        lambda i: (jnp.float32(0.5 + 0.1 * i), jnp.float32(3.0 + i)),
        (0, 0),
        wrt=(0, 1),
    )

    def update(x, t, v, tau, mom, rep, damp):
        return dynamics.update(x, t, v, _hp(tau, mom, rep, damp))  # (Sinkhorn: tests/test_gradients.py)

    c["dynamics.update"] = Case(
        update,
        lambda i: (
            *_points(i)[:2],
            0.1 * _points(i)[1],
            jnp.float32(0.9),
            jnp.float32(0.3 + 0.1 * i),
            jnp.float32(0.01),
            jnp.float32(0.8),
        ),
        (0, 0, 0, 0, 0, 0, 0),
        wrt=(0, 1, 2, 3, 4, 5, 6),
    )

    def problem(i):
        x, t, m = _points(i)
        return x, t, m, np.float32(0.8 + 0.1 * i), np.float32(0.3)

    def result(r):
        return r.tokens, r.velocity, r.labels, r.steps, r.converged

    c["dynamics.run"] = Case(
        lambda x, t, m, tau, mom: result(dynamics.run(x, t, _hp(tau, mom), mask=m, n_steps=12)),
        problem,
        (0, 0, 0, 0, 0),
        wrt=(0, 1, 3, 4),
        h=2e-3,
        raises=dict(grad="Reverse-mode differentiation does not work for lax.while_loop"),
    )
    c["dynamics.run(adjoint=CheckpointAdjoint())"] = Case(
        lambda x, t, m, tau, mom: result(
            dynamics.run(x, t, _hp(tau, mom), mask=m, n_steps=12, adjoint=dynamics.CheckpointAdjoint())
        ),
        problem,
        (0, 0, 0, 0, 0),
        wrt=(0, 1, 3, 4),
        h=2e-3,
    )
    c["dynamics.run(adjoint=ImplicitAdjoint())"] = Case(
        lambda x, t, m, tau, mom: result(
            dynamics.run(x, t, _hp(tau, mom), mask=m, n_steps=400, tol=1e-6, adjoint=dynamics.ImplicitAdjoint())
        ),
        problem,
        (0, 0, 0, 0, 0),
        wrt=(0, 3, 4),
        h=2e-3,
        rtol=5e-2,
    )
    c["dynamics.run_fixed"] = Case(
        lambda x, t, m, tau, mom: result(dynamics.run_fixed(x, t, _hp(tau, mom), mask=m, n_steps=12)),
        problem,
        (0, 0, 0, 0, 0),
        wrt=(0, 1, 3, 4),
        h=2e-3,
    )
    c["dynamics.trajectory"] = Case(
        lambda x, t, m, tau, mom: dynamics.trajectory(x, t, _hp(tau, mom), mask=m, n_steps=6),
        problem,
        (0, 0, 0, 0, 0),
        wrt=(0, 1, 3, 4),
        h=2e-3,
    )
    c["dynamics.hard_labels"] = Case(lambda x, t: dynamics.hard_labels(x, t), lambda i: _points(i)[:2], (0, 0))
    c["dynamics.token_groups"] = Case(
        lambda t: dynamics.token_groups(t, 0.5), lambda i: (_points(i)[1] * [[1.0], [0.0], [1.0]] + 0.1 * i,), (0,)
    )

    def traj(i):
        x, t, m = _points(i)
        t = np.stack([t[0], t[0] + 1e-3, t[0] - 1e-3])  # merged tokens that split as the temperature falls
        tr = dynamics.trajectory(
            x, t, dynamics.Hparams(temperature=0.5, anneal_ratio=30.0, anneal_steps=20.0), mask=m, n_steps=30, tol=0.0
        )
        return tr, tr.temperature

    c["dynamics.split_temperatures"] = Case(
        lambda tr, temp: dynamics.split_temperatures(dataclasses.replace(tr, temperature=temp), 0.05),
        traj,
        (0, 0),
        wrt=(1,),
    )
    c["dynamics.init_tokens"] = Case(
        lambda key, x: dynamics.init_tokens(key, 3, 2, x=x),
        lambda i: (jax.random.key(i), _points(i)[0]),
        (0, 0),
        wrt=(1,),
    )
    c["dynamics.forgy"] = Case(
        lambda x, noise: dynamics.forgy(x, noise, None, 3),
        lambda i: (_points(i)[0], jnp.asarray(_rng(i, 4).uniform(size=24), jnp.float32)),
        (0, 0),
        wrt=(0,),
    )
    c["dynamics.kmeans"] = Case(
        lambda x, t: dynamics.kmeans(x, t, n_steps=20),
        lambda i: _points(i)[:2],
        (0, 0),
        wrt=(0, 1),
        raises=dict(grad="Reverse-mode differentiation does not work for lax.while_loop"),
    )
    return c


def _mixture(i):
    """A mixture of 3 tokens near the points of instance ``i``: means, log-scales, log-weights."""
    rng = _rng(i, 21)
    t = _points(i)[1]
    return (
        t,
        (-0.4 + 0.2 * rng.normal(size=3)).astype(np.float32),
        np.log(_softmax(0.3 * rng.normal(size=3))).astype(np.float32),
    )


def _refinement_cases():
    c = {}
    points = lambda x, m: dynamics.Points.of(x, m)  # noqa: E731
    hp = lambda a=1.0, s0=0.0, k=1.0: refinement.Hparams(step_size=a, prior_log_scale=s0, prior_strength=k)  # noqa: E731
    c["refinement.init"] = Case(
        lambda x, t, m, s0, k: refinement.init(points(x, m), t, hp(s0=s0, k=k)),
        lambda i: (*_points(i), np.float32(-0.5 + 0.1 * i), np.float32(1.0 + i)),
        (0, 0, 0, 0, 0),
        wrt=(0, 1, 3, 4),
    )

    def step(mu, s, lw, x, m, a, s0, k):
        return refinement.step(refinement.Mixture(mu, s, lw), points(x, m), hp(a, s0, k), 0, None)

    c["refinement.step"] = Case(
        step,
        lambda i: (*_mixture(i), *_points(i)[::2], np.float32(0.7 + 0.1 * i), np.float32(-0.5), np.float32(1.0)),
        (0,) * 8,
        wrt=(0, 1, 2, 3, 5, 6, 7),
    )
    c["refinement.movement"] = Case(
        lambda a, b: refinement.movement(
            refinement.Mixture(a, *_mixture(0)[1:]), refinement.Mixture(b, *_mixture(0)[1:])
        ),
        lambda i: (_points(i)[1], _points(i + 4)[1]),
        (0, 0),
        wrt=(0, 1),
    )
    c["refinement.may_stop"] = Case(
        lambda a, s: refinement.may_stop(hp(a), s), lambda i: (np.float32(0.3 + 0.2 * i), np.int32(i)), (0, 0)
    )
    c["refinement.objective"] = Case(
        lambda mu, s, lw, x, m, s0, k: refinement.objective(x, refinement.Mixture(mu, s, lw), hp(s0=s0, k=k), m),
        lambda i: (*_mixture(i), *_points(i)[::2], np.float32(-0.5 + 0.1 * i), np.float32(2.0)),
        (0,) * 7,
        wrt=(0, 1, 2, 3, 5, 6),
    )
    c["refinement.gradient"] = Case(
        lambda mu, s, lw, x, m: refinement.gradient(x, refinement.Mixture(mu, s, lw), hp(), m),
        lambda i: (*_mixture(i), *_points(i)[::2]),
        (0,) * 5,
        wrt=(0, 1, 2, 3),
    )
    c["refinement.responsibilities"] = Case(
        lambda mu, s, lw, x, m: refinement.responsibilities(x, refinement.Mixture(mu, s, lw), m),
        lambda i: (*_mixture(i), *_points(i)[::2]),
        (0,) * 5,
        wrt=(0, 1, 2, 3),
    )
    c["refinement.labels"] = Case(
        lambda mu, s, lw, x, m: refinement.labels(x, refinement.Mixture(mu, s, lw), m),
        lambda i: (*_mixture(i), *_points(i)[::2]),
        (0,) * 5,
    )
    return c


def _frames(i, f=3, n=12):
    """(F, N, 2) three clusters drifting by 0.3 per frame, a (F, N) mask with two padded points."""
    rng = _rng(i, 22)
    centers = np.array([[-2.0, 0.0], [2.0, 0.5], [0.0, 2.5]])
    frames = np.stack([centers[np.arange(n) % 3] + 0.3 * k + 0.4 * rng.normal(size=(n, 2)) for k in range(f)])
    return frames.astype(np.float32), np.broadcast_to(np.arange(n) < n - 2, (f, n)).copy()


def _tracking_cases():
    c = {}

    def track(fixed):
        def fn(key, frames, mask, tau, mom, decay, separation):
            hp = tracking.Hparams(predictor=tracking.PREDICTORS["inertia"], decay=decay, separation=separation)
            tr = tracking.track(key, frames, hp, _hp(tau, mom), n_tokens=3, mask=mask, n_steps=8, fixed=fixed)
            return tr.tokens, tr.start, tr.labels, tr.steps, tr.converged, tr.displacement

        return fn

    def moving(i):
        return (
            jax.random.key(i),
            *_frames(i),
            np.float32(0.8 + 0.1 * i),
            np.float32(0.3),
            np.float32(0.5),
            np.float32(0.4),
        )

    c["tracking.track"] = Case(
        track(False),
        moving,
        (0,) * 7,
        wrt=(1, 3, 4, 5, 6),
        h=2e-3,
        raises=dict(grad="Reverse-mode differentiation does not work for lax.while_loop"),
    )
    c["tracking.track(fixed=True)"] = Case(track(True), moving, (0,) * 7, wrt=(1, 3, 4, 5, 6), h=2e-3)
    c["tracking.separate"] = Case(
        tracking.separate, lambda i: (0.2 * _points(i)[1], np.float32(0.8 + 0.1 * i)), (0, 0), wrt=(0, 1)
    )
    c["tracking.frame_keys"] = Case(
        lambda k, f: tuple(jax.random.key_data(a) for a in tracking.frame_keys(k, f)),
        lambda i: (jax.random.key(i), np.int32(i + 1)),
        (0, 0),
    )

    def labelled(i):
        rng = _rng(i, 23)
        return (
            rng.normal(size=(3, 3, 2)).astype(np.float32),
            rng.integers(-1, 3, (3, 10)).astype(np.int32),
            np.bool_(i % 2 == 0),
        )

    c["tracking.track_labels"] = Case(lambda t, lab, m: tracking.track_labels(t, lab, m), labelled, (0, 0, 0))
    return c


def _pallas_cases():
    """dynamics.pallas.run in the Pallas interpreter (CPU): each of its two programs compiles in seconds."""

    def run(x, t, m, tau, mom):
        r = pallas.run(x, t, _hp(tau, mom), mask=m, n_steps=12)
        return r.tokens, r.velocity, r.labels, r.steps, r.converged

    return {
        "dynamics.pallas.run": Case(
            run,
            lambda i: (*_points(i), np.float32(0.8 + 0.1 * i), np.float32(0.3)),
            (0,) * 5,
            wrt=(0, 1, 3, 4),
            raises=dict(grad="dynamics.run_fixed", jacfwd="dynamics.run_fixed", shard_map="manual_axis_type"),
        )
    }


def _metrics_cases():
    c = {}
    pair = lambda i: (_labels(i), _labels(i, salt=3), np.arange(12) < 11)  # noqa: E731
    c["metrics.ari"] = Case(lambda a, b, m: metrics.ari(a, b, m, n_true=3, n_pred=3), pair, (0, 0, 0))
    c["metrics.nmi"] = Case(lambda a, b, m: metrics.nmi(a, b, m), pair, (0, 0, 0))
    c["metrics.contingency"] = Case(lambda a, b, m: metrics.contingency(a, b, m, n_true=3, n_pred=3), pair, (0, 0, 0))
    c["metrics.sse"] = Case(
        lambda x, lab, cen, m: metrics.sse(x, lab, cen, m),
        lambda i: (_points(i, n=12)[0], _labels(i), _points(i)[1], np.arange(12) < 11),
        (0, 0, 0, 0),
        wrt=(0, 2),
    )
    c["metrics.cluster_sizes"] = Case(lambda a, m: metrics.cluster_sizes(a, 3, m), lambda i: pair(i)[::2], (0, 0))
    c["metrics.n_used"] = Case(lambda a, m: metrics.n_used(a, 4, m), lambda i: pair(i)[::2], (0, 0))
    c["metrics.collapsed"] = Case(
        lambda a, k, m: metrics.collapsed(a, 4, k, m),
        lambda i: (pair(i)[0], jnp.int32(3 + i % 2), pair(i)[2]),
        (0, 0, 0),
    )
    scene = lambda i: (_labels(i, n=16, k=3).reshape(4, 4), _labels(i, n=16, k=4, salt=5).reshape(4, 4))  # noqa: E731
    c["metrics.fg_ari"] = Case(lambda t, p: metrics.fg_ari(t, p, n_true=3, n_pred=4), scene, (0, 0))
    c["metrics.matched_iou"] = Case(lambda t, p: metrics.matched_iou(t, p, n_true=3, n_pred=4), scene, (0, 0))
    clip = lambda i: (_labels(i, n=24, k=3).reshape(3, 8), _labels(i, n=24, k=4, salt=5).reshape(3, 8))  # noqa: E731
    c["metrics.video_fg_ari"] = Case(lambda t, p: metrics.video_fg_ari(t, p, n_true=3, n_pred=4), clip, (0, 0))
    c["metrics.frame_fg_ari"] = Case(lambda t, p: metrics.frame_fg_ari(t, p), clip, (0, 0))
    c["metrics.track_labels"] = Case(lambda t, p: metrics.track_labels(t, p, n_true=3, n_pred=4), clip, (0, 0))
    c["metrics.track_switches"] = Case(lambda t, p: metrics.track_switches(t, p, n_true=3, n_pred=4), clip, (0, 0))
    c["metrics.identity_persistence"] = Case(
        lambda t, p: metrics.identity_persistence(t, p, n_true=3, n_pred=4, min_pixels=2), clip, (0, 0)
    )
    c["assignment.linear_assignment"] = Case(
        assignment.linear_assignment, lambda i: (jnp.asarray(_rng(i, 6).uniform(size=(3, 4)), jnp.float32),), (0,)
    )
    return c


def _geometry_cases():
    c = {}
    rows = lambda i: jnp.asarray(_rng(i, 7).normal(size=(6, 4)) + 0.5, jnp.float32)  # noqa: E731
    mask = np.arange(6) < 5
    c["geometry.cosine_matrix"] = Case(geometry.cosine_matrix, lambda i: (rows(i),), (0,), wrt=(0,))
    for name in ("mean_pairwise_cosine", "participation_ratio", "top_pc_share"):
        c[f"geometry.{name}"] = Case(getattr(geometry, name), lambda i: (rows(i), mask), (0, 0), wrt=(0,))
    seq = lambda i: jnp.asarray(_rng(i, 8).normal(size=(5, 3, 4)) + 0.5, jnp.float32)  # noqa: E731
    c["geometry.step_similarity"] = Case(geometry.step_similarity, lambda i: (seq(i), mask[:5]), (0, 0), wrt=(0,))
    c["geometry.summary"] = Case(geometry.summary, lambda i: (seq(i), mask[:5]), (0, 0), wrt=(0,), optimized=True)
    return c


def _diffusion_cases():
    c = {}
    x0 = lambda i: jnp.asarray(_rng(i, 9).normal(size=(2, 3)), jnp.float32)  # noqa: E731
    t = lambda i: jnp.int32(2 + i)  # noqa: E731
    c["diffusion.q_sample"] = Case(
        lambda k, x, tt: diffusion.q_sample(k, GAUSS, x, tt),
        lambda i: (jax.random.key(i), x0(i), t(i)),
        (0, 0, 0),
        wrt=(1,),
    )
    c["diffusion.predict_x0"] = Case(
        lambda x, tt, e: diffusion.predict_x0(GAUSS, x, tt, e),
        lambda i: (x0(i), t(i), x0(i + 5)),
        (0, 0, 0),
        wrt=(0, 2),
    )
    c["diffusion.posterior_mean_var"] = Case(
        lambda a, b, tt: diffusion.posterior_mean_var(GAUSS, a, b, tt),
        lambda i: (x0(i), x0(i + 5), t(i)),
        (0, 0, 0),
        wrt=(0, 1),
    )
    c["diffusion.ddpm_step"] = Case(
        lambda k, x, tt, e: diffusion.ddpm_step(k, GAUSS, x, tt, e, clip=None),
        lambda i: (jax.random.key(i), x0(i), t(i), x0(i + 5)),
        (0, 0, 0, 0),
        wrt=(1, 3),
    )
    eps_fn = lambda w: lambda x, tt: w * x + 0.01 * tt  # noqa: E731
    c["diffusion.sample"] = Case(
        lambda k, w: diffusion.sample(k, GAUSS, eps_fn(w), (2, 3)),
        lambda i: (jax.random.key(i), jnp.float32(0.3)),
        (0, None),
        wrt=(1,),
    )
    c["diffusion.ddim_sample"] = Case(
        lambda k, w: diffusion.ddim_sample(k, GAUSS, eps_fn(w), (2, 3), 4, eta=0.5),
        lambda i: (jax.random.key(i), jnp.float32(0.3)),
        (0, None),
        wrt=(1,),
    )
    c["diffusion.stationary"] = Case(diffusion.stationary, lambda i: (_proc(i),), (0,), wrt=(0,))
    c["diffusion.transition_matrix"] = Case(
        diffusion.transition_matrix, lambda i: (_proc(i), t(i)), (0, 0), wrt=(0,), h=1e-3
    )
    c["diffusion.cumulative_matrix"] = Case(
        diffusion.cumulative_matrix, lambda i: (_proc(i), t(i)), (0, 0), wrt=(0,), h=1e-3
    )
    c["diffusion.published_cumulative_matrix"] = Case(
        lambda a: diffusion.published_cumulative_matrix(a, 3), lambda i: (jnp.float32(0.4 + 0.1 * i),), (0,), wrt=(0,)
    )
    probs = lambda i: _softmax(_rng(i, 10).normal(size=(4, 3)))  # noqa: E731
    c["diffusion.marginal"] = Case(
        lambda p, pr, tt: diffusion.marginal(p, pr, tt),
        lambda i: (UNI, probs(i), t(i)),
        (None, 0, 0),
        wrt=(0, 1),
        h=1e-3,
    )
    c["diffusion.step_likelihood"] = Case(
        lambda p, x, tt: diffusion.step_likelihood(p, x, tt),
        lambda i: (UNI, _labels(i, n=4), t(i)),
        (None, 0, 0),
        wrt=(0,),
        h=1e-3,
    )
    c["diffusion.q_sample_discrete"] = Case(
        lambda k, x, tt: diffusion.q_sample_discrete(k, UNI, x, tt),
        lambda i: (jax.random.key(i), _labels(i, n=4), t(i)),
        (0, 0, 0),
    )
    c["diffusion.posterior_logits"] = Case(
        lambda pr, x, tt: diffusion.posterior_logits(UNI, pr, x, tt),
        lambda i: (probs(i), _labels(i, n=4), t(i)),
        (0, 0, 0),
        wrt=(0,),
    )
    logits = lambda i: jnp.asarray(_rng(i, 11).normal(size=(4, 3)), jnp.float32)  # noqa: E731
    c["diffusion.hybrid_loss"] = Case(
        lambda x, xt, tt, lg, lam: diffusion.hybrid_loss(UNI, x, xt, tt, lg, lam),
        lambda i: (_labels(i, n=4), _labels(i, n=4, salt=3), t(i), logits(i), jnp.float32(0.1)),
        (0, 0, 0, 0, None),
        wrt=(3, 4),
    )
    c["diffusion.prior_kl"] = Case(
        lambda p, x: diffusion.prior_kl(p, x), lambda i: (UNI, _labels(i, n=4)), (None, 0), wrt=(0,), h=1e-3
    )
    logit_fn = lambda w: lambda xt, tt: w * jax.nn.one_hot(xt, 3) + 0.01 * tt  # noqa: E731
    c["diffusion.sample_discrete"] = Case(
        lambda k, w: diffusion.sample_discrete(k, UNI, logit_fn(w), (4,)),
        lambda i: (jax.random.key(i), jnp.float32(1.5)),
        (0, None),
    )
    c["diffusion.nll_bound"] = Case(
        lambda k, w, x: diffusion.nll_bound(k, UNI, logit_fn(w), x),
        lambda i: (jax.random.key(i), jnp.float32(1.5), _labels(i, n=4)),
        (0, None, 0),
        wrt=(1,),
    )
    return c


def _proc(i):
    """A uniform D3PM process whose betas depend on i (vmap and shard_map over processes)."""
    return diffusion.discrete("uniform", 3, np.linspace(0.05, 0.3 + 0.05 * i, 6))


def _reward(x):
    return -jnp.sum((x["a"] - 1.0) ** 2) - 0.5 * jnp.sum(jnp.sin(x["b"]))


def _es_cases():
    c = {}
    x = lambda i: {
        "a": jnp.asarray(_rng(i, 12).normal(size=3), jnp.float32),  # noqa: E731
        "b": jnp.asarray(_rng(i, 13).normal(size=(2,)), jnp.float32),
    }
    c["es.noise"] = Case(lambda k: es.noise(k, 5, 3), lambda i: (jax.random.key(i),), (0,))
    c["es.shape_rewards"] = Case(
        lambda r: es.shape_rewards(r, "baseline"),
        lambda i: (jnp.asarray(_rng(i, 14).normal(size=6), jnp.float32),),
        (0,),
        wrt=(0,),
    )
    c["es.es_grad"] = Case(
        lambda k, x, s: es.es_grad(k, _reward, x, sigma=s, n_pairs=4),
        lambda i: (jax.random.key(i), x(i), jnp.float32(0.1)),
        (0, 0, None),
        wrt=(1, 2),
    )
    c["es.exact_grad"] = Case(
        lambda k, x: es.exact_grad(k, _reward, x), lambda i: (jax.random.key(i), x(i)), (0, 0), wrt=(1,)
    )
    opt = es.maximiser(lambda x, scale: scale * _reward(x), optax.sgd(0.1), sigma=0.1, n_pairs=3)
    c["es.maximiser(...).step"] = Case(
        lambda k, xx: opt.step(k, opt.init(xx), jnp.float32(2.0)), lambda i: (jax.random.key(i), x(i)), (0, 0), wrt=(1,)
    )
    return c


def _probe_cases():
    c = {}
    cfg = probes.Config(n_classes=3, steps=8)
    feats = lambda i: jnp.asarray(
        _rng(i, 15).normal(size=(12, 4)) + np.eye(3, 4)[np.arange(12) % 3],  # noqa: E731
        jnp.float32,
    )
    ys = lambda i: jnp.asarray(np.arange(12) % 3, jnp.int32)  # noqa: E731
    train_mask = np.arange(12) < 8
    c["probes.fit"] = Case(
        lambda k, x, y, lr: probes.fit(k, x, y, cfg, probes.Hparams(learning_rate=lr)),
        lambda i: (jax.random.key(i), feats(i), ys(i), jnp.float32(0.05)),
        (0, 0, 0, None),
        wrt=(1, 3),
    )
    probe = lambda i: probes.fit(jax.random.key(i), feats(i), ys(i), cfg)  # noqa: E731
    c["probes.predict"] = Case(probes.predict, lambda i: (probe(i), feats(i)), (0, 0))
    c["probes.accuracy"] = Case(probes.accuracy, lambda i: (probe(i), feats(i), ys(i)), (0, 0, 0), wrt=(0, 1))
    c["probes.evaluate"] = Case(
        lambda k, x, y: probes.evaluate(k, x, y, train_mask, cfg),
        lambda i: (jax.random.key(i), feats(i), ys(i)),
        (0, 0, 0),
        wrt=(1,),
    )
    c["probes.chance"] = Case(
        lambda y, m: probes.chance(y, m, n_classes=3), lambda i: (_labels(i), train_mask), (0, None)
    )
    return c


SLOTS = slots.Config(
    size=4,
    slots=2,
    iterations=1,
    slot_size=8,
    mlp_hidden=8,
    encoder_channels=(4,),
    encoder_kernel=3,
    decoder="mlp",
    decoder_hidden=8,
    train=train.Config(steps=10, steps_per_call=10),
)
VTAE = vtae.Config(vocab_size=4, grid=2, colours=2, mode="gumbel_soft", hidden=8, losses=("batch_entropy",))
SEQ = sequence.Config(
    model="grid_d3pm_uniform",
    length=2,
    cells=3,
    colours=3,
    T=5,
    width=8,
    depth=1,
    heads=2,
    train=train.Config(steps=10, steps_per_call=10, warmup=1),
)
SAVI = savi.Config(
    frames=2,
    size=4,
    slots=2,
    iterations=1,
    first_iterations=1,
    slot_size=8,
    mlp_hidden=8,
    predictor="mlp",
    predictor_hidden=8,
    encoder_channels=(4,),
    encoder_kernel=3,
    decoder="mlp",
    decoder_hidden=8,
    decoder_stride=1,
    slot_init="random",
    masks="decoder",
    train=train.Config(steps=10, steps_per_call=10, warmup=1),
)
IODINE = iodine.Config(
    size=4,
    slots=2,
    latent_size=4,
    iterations=1,
    decoder="mlp",
    decoder_hidden=8,
    refine_channels=(4,),
    refine_hidden=8,
    train=train.Config(steps=10, steps_per_call=10, warmup=1),
)


@functools.cache
def _inits(name):
    """Parameters of instances 0..7 of a model: its init's shapes, filled on the host with normal
    draws of std 0.3 (any weights serve the protocol; nothing compiles)."""
    init = dict(
        slots=lambda k: slots.init(k, SLOTS),
        savi=lambda k: savi.init(k, SAVI),
        iodine=lambda k: iodine.init(k, IODINE),
        vtae=lambda k: vtae.init(k, VTAE),
        sequence=lambda k: sequence.init(k, SEQ),
    )[name]
    shapes = jax.eval_shape(init, KEY)
    rng = _rng(0, 20)
    n = max(8, 2 * len(jax.local_devices()))
    return jax.tree_util.tree_map(lambda s: (0.3 * rng.normal(size=(n, *s.shape))).astype(s.dtype), shapes)


def _init(name, i):
    return jax.tree_util.tree_map(lambda a: a[i], _inits(name))


def _model_cases():
    """The models' apply and loss functions, vmapped over models (keys and parameters), as the
    training layer runs them; ``fd=False``: float64 differences in tests/test_model_gradients.py."""
    c = {}
    key, model = jax.random.key, functools.partial(Case, fd=False)
    images = lambda i: jnp.asarray(_rng(i, 16).uniform(size=(2, 4, 4, 3)), jnp.float32)  # noqa: E731
    slot = lambda i: (key(i), _init("slots", i), images(i))  # noqa: E731
    c["models.slots.apply"] = model(lambda k, p, im: slots.apply(k, p, SLOTS, im), slot, (0, 0, 0), wrt=(1, 2))
    c["models.slots.loss_fn"] = model(lambda k, p, im: slots.loss_fn(k, p, SLOTS, im)[0], slot, (0, 0, 0), wrt=(1, 2))
    videos = lambda i: jnp.asarray(_rng(i, 24).uniform(size=(2, 2, 4, 4, 3)), jnp.float32)  # noqa: E731
    clip = lambda i: (key(i), _init("savi", i), videos(i))  # noqa: E731
    c["models.savi.apply"] = model(lambda k, p, v: savi.apply(k, p, SAVI, v), clip, (0, 0, 0), wrt=(1, 2))
    c["models.savi.loss_fn"] = model(lambda k, p, v: savi.loss_fn(k, p, SAVI, v)[0], clip, (0, 0, 0), wrt=(1, 2))
    scene = lambda i: (key(i), _init("iodine", i), images(i))  # noqa: E731
    c["models.iodine.apply"] = model(lambda k, p, im: iodine.apply(k, p, IODINE, im), scene, (0, 0, 0), wrt=(1, 2))
    c["models.iodine.loss_fn"] = model(
        lambda k, p, im: iodine.loss_fn(k, p, IODINE, im)[0], scene, (0, 0, 0), wrt=(1, 2)
    )
    vt = lambda i: (key(i), _init("vtae", i), jnp.asarray([0, 1, 3, 2], jnp.int32))  # noqa: E731
    c["models.vtae.encode"] = model(lambda k, p, tok: vtae.encode(k, p, VTAE, tok, tau=0.7), vt, (0, 0, 0), wrt=(1,))
    grids = lambda i: _softmax(_rng(i, 17).normal(size=(4, 4, 2)))  # noqa: E731
    c["models.vtae.decode"] = model(
        lambda p, x: vtae.decode(p, VTAE, x), lambda i: (_init("vtae", i), grids(i)), (0, 0), wrt=(0, 1)
    )
    c["models.vtae.training.loss_fn"] = model(
        lambda k, p, tok: vtae_training.loss_fn(k, p, VTAE, vtae.Hparams(), tok, 0.7, None)[0], vt, (0, 0, 0), wrt=(1,)
    )
    states = lambda i: jnp.asarray(_rng(i, 18).integers(0, 3, (2, 2, 3)), jnp.int32)  # noqa: E731
    c["models.sequence.apply"] = model(
        lambda p, x, tt: sequence.apply(p, SEQ, x, tt),
        lambda i: (_init("sequence", i), states(i), jnp.asarray([1 + i, 3], jnp.int32)),
        (0, 0, 0),
        wrt=(0,),
    )
    c["models.sequence.loss_fn"] = model(
        lambda k, p, x: sequence.loss_fn(k, p, SEQ, sequence.Hparams(), x)[0],
        lambda i: (key(i), _init("sequence", i), states(i)),
        (0, 0, 0),
        wrt=(1,),
    )
    return c


@functools.cache
def cases() -> dict:
    out = {}
    for make in (
        _dynamics_cases,
        _refinement_cases,
        _tracking_cases,
        _pallas_cases,
        _metrics_cases,
        _geometry_cases,
        _diffusion_cases,
        _es_cases,
        _probe_cases,
        _model_cases,
    ):
        out.update(make())
    for kernel, case in out.items():
        case.kernel = kernel
    return out


# ---------------------------------------------------------------------------------------------- the checks


def _assert_close(actual, desired, what, rtol=1e-5, atol=1e-5):
    a_leaves, a_tree = jax.tree_util.tree_flatten(actual)
    d_leaves, d_tree = jax.tree_util.tree_flatten(desired)
    assert a_tree == d_tree, what
    for a, d in zip(a_leaves, d_leaves):
        a, d = np.asarray(a), np.asarray(d)
        assert a.shape == d.shape and a.dtype == d.dtype, (what, a.shape, d.shape, a.dtype, d.dtype)
        if a.dtype.kind in "biu":
            np.testing.assert_array_equal(a, d, err_msg=what)
        else:
            np.testing.assert_allclose(a, d, rtol=rtol, atol=atol, err_msg=what)


@contextlib.contextmanager
def _compiler(case):
    """XLA's optimisations on while a case marked ``optimized`` compiles. The suite compiles
    without them (conftest.py), where the derivative of ``jnp.max`` under vmap can come out
    NaN: JAX's rule divides by the number of entries equal to the maximum, and XLA:CPU at -O0
    recomputes the operand in two fusions that may round differently, so that it counts none
    (the geometry kernels' normalisation by max |x|; at users' settings they are fine)."""
    if not case.optimized:
        yield
        return
    before = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)


def _check_jit(case):
    """Traced, compiled and run inside a user's jit (its values: the vmap check's reference)."""
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree_util.tree_leaves(case.jitted(*case.args)))


def _check_vmap(case):
    got = case.sharded_batch  # vmap inside shard_map: when it runs, it checks both cells
    if isinstance(got, Exception):  # then vmap alone, so that the failure is shard_map's or vmap's
        got = jax.jit(case.vmapped)(*case.batched)
    _assert_close(got, case.one_by_one, "vmap vs one by one", rtol=1e-4, atol=1e-5)


def _check_shard_map(case):
    if isinstance(case.sharded_batch, Exception):
        raise case.sharded_batch
    _assert_close(case.sharded_batch, case.one_by_one, "shard_map vs one by one", rtol=1e-4, atol=1e-5)


def _reverse(case):
    g = case.reverse()
    for leaf in jax.tree_util.tree_leaves(g):
        assert np.all(np.isfinite(np.asarray(leaf, np.float64))), "a non-finite gradient"
    return _dot(g, case.direction)


def _forward(case):
    return float(case.forward())


def _check_derivative(case, mode):
    got = (_reverse if mode == "grad" else _forward)(case)
    if not case.fd:
        other = (_forward if mode == "grad" else _reverse)(case)
        np.testing.assert_allclose(got, other, rtol=1e-4, atol=1e-6, err_msg=f"{mode} vs the other mode")
        return got
    fd = case.finite_difference()
    scale = abs(case.value()) + 1.0
    np.testing.assert_allclose(
        got, fd, rtol=case.rtol, atol=2e-6 * scale / case.h, err_msg=f"{mode} vs central finite differences"
    )
    return got


def _check_not_applicable(case, reason):
    if reason == transformations.INT_OUT:
        out = jax.eval_shape(case.fn, *case.args)
        kinds = {np.dtype(leaf.dtype).kind for leaf in jax.tree_util.tree_leaves(out)}
        assert kinds <= set("biu"), f"{reason}, but the output has dtype kinds {kinds}"
        assert not case.wrt
    elif reason in (transformations.INT_IN, transformations.KEY_ONLY):
        assert not case.wrt
        for leaf in jax.tree_util.tree_leaves(case.args):
            assert not _is_float(leaf), f"{reason}, but an argument is a float array of shape {np.shape(leaf)}"
    elif reason == transformations.PIECEWISE:
        assert case.wrt, "name the real arguments whose derivative is zero"
        for leaf in jax.tree_util.tree_leaves(case.reverse()):
            assert np.all(np.asarray(leaf) == 0), f"{reason}, but a derivative is not zero"
        assert _forward(case) == 0
    else:
        raise AssertionError(f"unknown reason {reason!r}: use one of transformations.NOT_APPLICABLE")


CHECKS = dict(
    jit=_check_jit,
    vmap=_check_vmap,
    shard_map=_check_shard_map,
    grad=lambda c: _check_derivative(c, "grad"),
    jacfwd=lambda c: _check_derivative(c, "jacfwd"),
)


def _attempt(case, transformation):
    """Run the transformation alone (used to prove that a ``no`` cell fails)."""
    if transformation == "grad":
        return jax.jit(case.grad)(*case.primals())
    if transformation == "jacfwd":
        return jax.jit(case.jvp)(case.primals(), case.direction)
    raise AssertionError(f"no 'no' cells for {transformation} yet: write how to attempt it")


# the rows whose programs take longest to compile (the models, the adjoints, the tracking and
# diffusion loops: about 55 s of the 85 s the table takes on a 2-core CPU) are checked with the full
# executions (-m full); the default run checks every other row, and of these one model, the step and
# the loop of the dynamics, a tracking loop and a diffusion loss
FULL_ROWS = frozenset(
    {
        "dynamics.run(adjoint=ImplicitAdjoint())",
        "dynamics.run(adjoint=CheckpointAdjoint())",
        "dynamics.run_fixed",
        "dynamics.trajectory",
        "dynamics.pallas.run",
        "tracking.track",
        "tracking.track(fixed=True)",
        "geometry.summary",
        "diffusion.ddim_sample",
        "diffusion.sample",
        "probes.fit",
        "models.iodine.apply",
        "models.iodine.loss_fn",
        "models.savi.apply",
        "models.savi.loss_fn",
        "models.slots.apply",
        "models.slots.loss_fn",
        "models.sequence.loss_fn",
    }
)


def _tier(kernel, *values):
    """The parameters of a test of row ``kernel``, marked ``full`` where the row is in FULL_ROWS."""
    return pytest.param(*values, marks=pytest.mark.full) if kernel in FULL_ROWS else pytest.param(*values)


CELLS = [(r.kernel, t) for r in TABLE for t in transformations.TRANSFORMATIONS]


@pytest.mark.parametrize(
    "kernel,transformation", [_tier(k, k, t) for k, t in CELLS], ids=[f"{k}-{t}" for k, t in CELLS]
)
def test_cell(kernel, transformation):
    case = cases()[kernel]
    with _compiler(case):
        _check_cell(case, kernel, transformation)


def _check_cell(case, kernel, transformation):
    cell = transformations.row(kernel).cell(transformation)
    status = cell.split(":", 1)[0]
    if transformation == "shard_map" and "check_vma=False" in cell:
        assert status == "yes"
        _check_shard_map(case)  # (with check_vma=False)
        refused = case.raises.get("shard_map", "manual axis types do not match")
        with pytest.raises((TypeError, ValueError), match=re.escape(refused)):  # JAX's default refuses it:
            jax.jit(case.sharded)(*case.batched)  # (a fix must update the table)
    elif status == "yes":
        CHECKS[transformation](case)
    elif status == "no":
        pattern = case.raises.get(transformation)
        assert pattern, f"{kernel} {transformation}: a 'no' cell needs the expected error in its case's raises"
        with pytest.raises(Exception, match=re.escape(pattern)):
            _attempt(case, transformation)
    else:
        assert transformations.NOT_APPLICABLE.count(cell) == 1, f"unknown n/a reason {cell!r}"
        _check_not_applicable(case, cell)


BOTH_MODES = [r.kernel for r in TABLE if r.status("grad") == r.status("jacfwd") == "yes"]


@pytest.mark.parametrize("kernel", [_tier(k, k) for k in BOTH_MODES], ids=BOTH_MODES)
def test_both_modes_agree(kernel):
    """Where both modes are supported they give the same directional derivative (float32)."""
    case = cases()[kernel]
    with _compiler(case):
        np.testing.assert_allclose(_reverse(case), _forward(case), rtol=2e-3, atol=1e-5, err_msg=kernel)


# ---------------------------------------------------------------------------------------------- completeness


MODULE_OBJECTS = dict(
    dynamics=dynamics,
    refinement=refinement,
    tracking=tracking,
    **{"dynamics.pallas": pallas},
    metrics=metrics,
    assignment=assignment,
    geometry=geometry,
    diffusion=diffusion,
    es=es,
    probes=probes,
)


def _public_functions(module):
    """The public functions a module defines, or a package defines in its modules and re-exports."""
    names = getattr(module, "__all__", None) or dir(module)
    here = lambda m: m == module.__name__ or m.startswith(module.__name__ + ".")  # noqa: E731
    return {
        n
        for n in names
        if not n.startswith("_") and inspect.isfunction(getattr(module, n)) and here(getattr(module, n).__module__)
    }


def test_every_public_kernel_is_in_the_table():
    listed = {r.kernel for r in TABLE} | set(transformations.HOST)
    for name, module in MODULE_OBJECTS.items():
        missing = {f"{name}.{f}" for f in _public_functions(module)} - listed
        assert not missing, f"public functions missing from tests/transformations_table.py: {sorted(missing)}"
    assert set(cases()) == {r.kernel for r in TABLE}, "every row needs a case here, and every case a row"
    assert FULL_ROWS <= set(cases()), f"FULL_ROWS names no row: {sorted(FULL_ROWS - set(cases()))}"
    for r in TABLE:
        for t in transformations.TRANSFORMATIONS:
            assert r.status(t) in ("yes", "no", "n/a"), (r.kernel, t, r.cell(t))
        assert len(cases()[r.kernel].make(0)) == len(cases()[r.kernel].in_axes), r.kernel


def test_docs_file_is_the_rendered_table():
    """docs/transformations.md is what docs/_ext/tokdyn_transformations.py renders from this table (the
    docs build rewrites it; the committed file must be current, the README links to it)."""
    path = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "_ext", "tokdyn_transformations.py"
    )
    spec = importlib.util.spec_from_file_location("tokdyn_transformations_docs", path)
    writer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(writer)
    assert os.path.exists(writer.PAGE), f"{writer.PAGE} is missing: python docs/_ext/tokdyn_transformations.py --write"
    with open(writer.PAGE) as f:
        assert f.read() == writer.render(transformations), (
            "docs/transformations.md differs from the table: python docs/_ext/tokdyn_transformations.py --write"
        )


def test_loops_under_shard_map_with_shared_arguments():
    """The dynamics' loops start from a state typed as varying over the devices whenever any argument
    does, so JAX's default ``check_vma=True`` accepts them with only some arguments sharded (here the
    points, the tokens and knobs shared; the key alone for the k-means++ draw)."""
    x = jnp.stack([_points(i)[0] for i in range(2 * len(jax.local_devices()))])
    keys = jax.random.split(KEY, x.shape[0])
    t0, hp = _points(0)[1], _hp(0.8, 0.3)
    mesh = jax.sharding.Mesh(np.asarray(jax.local_devices()), ("runs",))
    calls = {
        "run": lambda x: dynamics.run(x, t0, hp, n_steps=8).tokens,  # (the start of every adjoint, trajectory too)
        "kmeans": lambda x: dynamics.kmeans(x, t0, n_steps=8).tokens,
        "kmeans++": lambda k: dynamics.init_tokens(k, 3, 2, method="kmeans++", x=_points(0)[0]),
    }
    for name, fn in calls.items():
        arg = keys if name == "kmeans++" else x
        sharded = jax.jit(jax.shard_map(jax.vmap(fn), mesh=mesh, in_specs=P("runs"), out_specs=P("runs")))
        _assert_close(sharded(arg), jax.jit(jax.vmap(fn))(arg), name, rtol=1e-5, atol=1e-6)


TWO_DEVICE_ROWS = ("dynamics.run(adjoint=ImplicitAdjoint())", "metrics.matched_iou")


@pytest.mark.full
def test_shard_map_over_two_devices():
    """The suite's process has one CPU device; a child process with two checks the shard_map cells
    of a few rows (a loop with its implicit derivative, the auction) and the loops with shared
    arguments where the batch is really split."""
    code = (
        "import jax, sys; sys.path.insert(0, {tests!r}); import test_transformations\n"
        "assert len(jax.local_devices()) == 2\n"
        "jax.config.update('jax_disable_most_optimizations', True)\n"
        # the session's compilation cache: the rows' one-device programs, compiled by their cells
        "if {cache!r}:\n"
        "    jax.config.update('jax_compilation_cache_dir', {cache!r})\n"
        "    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.2)\n"
        "for k in {rows!r}:\n"
        "    test_transformations._check_cell(test_transformations.cases()[k], k, 'shard_map')\n"
        "test_transformations.test_loops_under_shard_map_with_shared_arguments()\n"
        "print('ok')\n"
    ).format(tests=os.path.dirname(os.path.abspath(__file__)), rows=TWO_DEVICE_ROWS, cache=compilation_cache_dir())
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        env=child_env(XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu"),
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
