"""Frictions of the rule met as a user: translation invariance (the mass epsilon anchored at the
token), the message of ``jax.grad`` through ``run``, data and initial tokens under x64, the short
repr of a rule."""

import contextlib
import dataclasses
import io
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_same_floats

from tokdyn import data, dynamics


def reference_run(x, t0, *, temperature=1.0, momentum=0.0, repulsion=0.0, n_steps=30, tol=1e-3):
    """The built-in rule (softmax, no Sinkhorn, slot_norm 0) in NumPy float64, from the module
    docstring: m_j = (sum_i a_ij x_i + eps t_j) / (sum_i a_ij + eps), v starts at 0, the run stops
    after the first step whose largest |v_jd| is below tol."""
    x, t = np.asarray(x, np.float64), np.asarray(t0, np.float64).copy()
    v = np.zeros_like(t)
    for s in range(n_steps):
        d2 = ((x[:, None] - t[None]) ** 2).sum(-1)  # (N, T)
        logits = -(d2 - d2.min(1, keepdims=True)) / temperature
        a = np.exp(logits)
        a /= a.sum(1, keepdims=True)
        means = (a.T @ x + 1e-8 * t) / (a.sum(0) + 1e-8)[:, None]
        diff = t[:, None] - t[None]
        r = np.maximum(np.sqrt((diff**2).sum(-1)), dynamics.MIN_DISTANCE)
        np.fill_diagonal(r, np.inf)
        force = means - t + repulsion * (diff / r[..., None] ** 3).sum(1)
        v = momentum * v + force
        t = t + v
        if np.abs(v).max() < tol:
            return t, ((x[:, None] - t[None]) ** 2).sum(-1).argmin(1), s + 1
    return t, ((x[:, None] - t[None]) ** 2).sum(-1).argmin(1), n_steps


def two_clusters_far_token():
    """Two clusters of 30 points, a token on each and a third far away that owns no point: the
    published form sent the third to the origin (between the clusters: a 30/14/16 split), and
    after a shift of the data by (100, 100) to (0, 0), far from everything (30/30/0)."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal([-3, 0], 0.5, (30, 2)), rng.normal([3, 0], 0.5, (30, 2))]).astype(np.float32)
    t0 = np.array([[-3.2, 0.1], [2.9, -0.2], [40.0, 40.0]], np.float32)
    return x, t0


SHIFTS = [np.array([100.0, 100.0], np.float32), np.full(2, 1e3, np.float32)]
CASES = {  # name: (Hparams, float64 reference knobs or None)
    "baseline": (dynamics.METHODS["baseline"], dict()),
    "inertia+repulsion": (dynamics.METHODS["inertia+repulsion"], dict(momentum=0.5, repulsion=0.05)),
    "sinkhorn": (dynamics.METHODS["sinkhorn"], None),
    "slot-attention": (dynamics.METHODS["slot-attention"], None),
    "half-slot": (dynamics.Hparams(slot_norm=0.5), None),
}


@pytest.mark.parametrize("shift", SHIFTS, ids=["100", "1e3"])
@pytest.mark.parametrize("name", CASES)
def test_a_shifted_run_is_the_shifted_run(name, shift):
    hp, ref = CASES[name]
    x, t0 = two_clusters_far_token()
    base = dynamics.run(x, t0, hp)
    moved = dynamics.run(x + shift, t0 + shift, hp)
    scale = float(np.abs(shift).max()) + float(np.abs(x).max())
    if ref is not None:
        np.testing.assert_array_equal(np.asarray(moved.labels), np.asarray(base.labels))
        np.testing.assert_allclose(np.asarray(moved.tokens) - shift, np.asarray(base.tokens), atol=3e-6 * scale)
        assert int(moved.steps) == int(base.steps)
    else:
        # Sinkhorn gives the far token mass, and slot_norm > 0 sends it toward the points' mean: it
        # ends on the second cluster's token, and which of two coincident tokens a point goes to is a
        # tie settled by rounding (and when the velocity falls under tol, by the rounding of the
        # shifted coordinates): compare the tokens, and the labels up to merging coincident tokens
        group, _ = dynamics.token_groups(base.tokens, 1e-1)
        group = np.asarray(group)
        for g in np.unique(group):  # each group's centre (how coincident tokens part is rounding)
            np.testing.assert_allclose(
                np.asarray(moved.tokens)[group == g].mean(0) - shift,
                np.asarray(base.tokens)[group == g].mean(0),
                atol=1e-5 * scale,
            )
        np.testing.assert_array_equal(group[np.asarray(moved.labels)], group[np.asarray(base.labels)])
    if ref is not None:
        for s in (np.zeros(2, np.float32), shift):
            t, labels, steps = reference_run(np.float64(x) + s, np.float64(t0) + s, **ref)
            r = dynamics.run(x + s, t0 + s, hp)
            np.testing.assert_array_equal(np.asarray(r.labels), labels)
            np.testing.assert_allclose(np.asarray(r.tokens), t, atol=3e-6 * (float(np.abs(s).max()) + 10.0))
            assert int(r.steps) == steps
    if name == "baseline":  # no mass: the far token stays put (repulsion nudges it; Sinkhorn gives it mass)
        np.testing.assert_allclose(np.asarray(base.tokens)[2], t0[2], atol=1e-5)


def test_origin_rule_keeps_the_published_form():
    """BUILTIN_ORIGIN is the published rule: the far token jumps to the coordinate origin, and the
    labels depend on where the data sit (the failure the default no longer has)."""
    x, t0 = two_clusters_far_token()
    hp = dynamics.METHODS["baseline"]
    here = dynamics.run(x, t0, hp, rule=dynamics.BUILTIN_ORIGIN)
    there = dynamics.run(x + SHIFTS[0], t0 + SHIFTS[0], hp, rule=dynamics.BUILTIN_ORIGIN)
    assert np.bincount(np.asarray(here.labels), minlength=3).tolist() != [30, 30, 0]
    assert np.bincount(np.asarray(there.labels), minlength=3).tolist() == [30, 30, 0]
    np.testing.assert_allclose(np.asarray(there.tokens)[2], [0.0, 0.0], atol=1e-3)  # the origin, not the token
    assert np.bincount(np.asarray(dynamics.run(x, t0, hp).labels), minlength=3).tolist() == [30, 30, 0]
    assert dynamics.MASS_ANCHORS == {"token": dynamics.BUILTIN, "origin": dynamics.BUILTIN_ORIGIN}


def test_init_tokens_data_mean_and_kmeans_shift():
    x, _ = two_clusters_far_token()
    key = jax.random.key(1)
    for method in ("data_mean", "kmeans++", "data"):
        a = dynamics.init_tokens(key, 3, 2, method=method, x=x)
        b = dynamics.init_tokens(key, 3, 2, method=method, x=x + SHIFTS[0])
        np.testing.assert_allclose(np.asarray(b) - SHIFTS[0], np.asarray(a), atol=1e-4, err_msg=method)
    km = dynamics.kmeans(x, np.asarray(x[[0, 30, 31]]))
    km2 = dynamics.kmeans(x + SHIFTS[1], np.asarray(x[[0, 30, 31]]) + SHIFTS[1])
    np.testing.assert_array_equal(np.asarray(km.labels), np.asarray(km2.labels))


def test_grad_through_run_names_the_ways_out():
    x, t0 = two_clusters_far_token()
    hp = dynamics.Hparams()
    with pytest.raises(ValueError, match=r"(?s)dynamics\.run_fixed.*implicit=True") as info:
        jax.grad(lambda t: dynamics.run(x, t, hp).tokens.sum())(t0)
    assert "lax.while_loop" in str(info.value)
    with pytest.raises(ValueError, match="run_fixed"):
        jax.grad(lambda h: dynamics.run(x, t0, h).tokens.sum())(hp)


@pytest.mark.slow
def test_after_the_grad_message_forward_mode_and_the_ways_out_still_work():
    """Forward mode and vmap as before; the named ways out work (the default suite's gradient tests
    cover each of them on its own; this puts them side by side on the translated-data case)."""
    x, t0 = two_clusters_far_token()
    hp = dynamics.Hparams()
    fwd = jax.jacfwd(lambda t: dynamics.run(x, t, hp).tokens.sum())(t0)
    batched = jax.vmap(jax.jacfwd(lambda t: dynamics.run(x, t, hp).tokens.sum()))(jnp.stack([t0, t0 + 0.1]))
    np.testing.assert_allclose(np.asarray(batched[0]), np.asarray(fwd), rtol=1e-5, atol=1e-6)
    rev = jax.grad(lambda t: dynamics.run_fixed(x, t, hp).tokens.sum())(t0)
    np.testing.assert_allclose(np.asarray(rev), np.asarray(fwd), rtol=1e-3, atol=1e-4)
    assert np.all(np.isfinite(np.asarray(jax.grad(lambda t: dynamics.run(x, t, hp, implicit=True).tokens.sum())(t0))))


_X64_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from tokdyn import data, dynamics
    k = jax.random.key(3)
    dt = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    c = data.gaussian_clusters(k, 3, points_per_cluster=20, dim=2, dtype=dt)
    out = dict(x=c.x, aniso=data.point_cloud(k, "aniso2", 30, dtype=dt), blobs=data.point_cloud(k, "blobs2", 30, dtype=dt),
               draw=data.clusters_from_draw(data.cluster_draw(k, max_clusters=3, dim=2), 3, dtype=dt).x,
               scenes=data.sprite_scenes(k, 2, size=8, dtype=dt).images)
    out["features"] = data.pixel_features(out["scenes"], dtype=dt)
    for m in dynamics.INIT_METHODS:
        out["init_" + m] = dynamics.init_tokens(k, 4, 2, method=m, x=c.x)
    json.dump({n: dict(dtype=str(v.dtype), v=np.asarray(v, np.float64).ravel().tolist()) for n, v in out.items()},
              sys.stdout)
""")


def _draws(x64: bool) -> dict:
    """The script's draws: in this process (the suite runs without x64), or in a child process
    started with ``JAX_ENABLE_X64=1`` (as a user turns it on, before JAX starts)."""
    if not x64:
        assert not jax.config.jax_enable_x64
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(_X64_SCRIPT, {"__name__": "x64_script"})
        return json.loads(out.getvalue())
    env = dict(os.environ, JAX_ENABLE_X64="1")
    out = subprocess.run([sys.executable, "-c", _X64_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


@pytest.mark.full
def test_draws_are_the_same_under_x64():
    a, b = _draws(False), _draws(True)
    for name in a:
        want = "float32" if name == "init_normal" else "float64"
        assert a[name]["dtype"] == "float32" and b[name]["dtype"] == want, (name, a[name]["dtype"], b[name]["dtype"])
        va, vb = np.asarray(a[name]["v"]), np.asarray(b[name]["v"])
        assert_same_floats(vb, va, err_msg=name)  # float32 rounding at most, at the draws' magnitude


def test_dtype_argument():
    k = jax.random.key(0)
    for dt in (jnp.float16, jnp.bfloat16, "float32"):
        assert data.gaussian_clusters(k, 2, dim=2, dtype=dt).x.dtype == jnp.dtype(dt)
        assert data.point_cloud(k, "aniso2", 10, dtype=dt).dtype == jnp.dtype(dt)
        assert data.sprite_scenes(k, 1, size=8, dtype=dt).images.dtype == jnp.dtype(dt)
    for bad in ("int32", jnp.complex64, "double-ish"):
        with pytest.raises(ValueError, match="dtype must be one of"):
            data.gaussian_clusters(k, 2, dim=2, dtype=bad)
    if not jax.config.jax_enable_x64:
        with pytest.raises(ValueError, match="JAX_ENABLE_X64"):
            data.point_cloud(k, "blobs2", 30, dtype=jnp.float64)


def test_rule_repr_is_short_and_describe_is_full():
    assert repr(dynamics.BUILTIN) == "Rule(name='builtin')"
    assert repr(dynamics.BUILTIN_ORIGIN) == "Rule(name='builtin-origin')"
    inertia = dataclasses.replace(dynamics.BUILTIN, hparams=dynamics.METHODS["inertia"])
    assert repr(inertia).startswith("Rule(name='builtin', hparams=Hparams(temperature=1.0, momentum=0.5")
    assert (
        "<function" not in repr(dynamics.run.__wrapped__.__kwdefaults__["rule"])
        if hasattr(dynamics.run, "__wrapped__")
        else True
    )
    full = dynamics.BUILTIN.describe()
    assert full.startswith(
        "Rule(name='builtin', init=tokdyn.dynamics.builtin._builtin_init, step=tokdyn.dynamics.builtin._builtin_step"
    )
    assert "0x" not in full
    unnamed = dynamics.Rule(lambda points, tokens, hp: tokens, lambda s, points, hp, step, key: s)
    assert repr(unnamed).startswith("Rule(step=") and "0x" not in repr(unnamed)
