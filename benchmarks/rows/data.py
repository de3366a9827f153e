"""The data rows: the sprite-scene generator (``tokdyn.data.scenes.sprite_scenes``, one compiled call,
argument checks included, as a user calls it) against a vectorised NumPy generator of the identical
workload (the same formulas in float32, in chunks of 250 scenes), scenes/s, plain and textured
backgrounds: 32 x 32 scenes of 2-4 objects (square, circle, triangle; scale 0.15-0.3), images,
instance masks, visible pixel counts and per-object attributes. Before timing, the NumPy generator
is run on tokdyn's own uniforms (``fold_in(key, i)`` per scene): ``agreement`` gives the mask
pixels that differ (float32 rounding at object boundaries) and the largest image difference elsewhere.

Also the scenes study's fixed token dynamics: the baseline rule (temperature 0.03, at most 50 steps,
tol 1e-4) on the 1,024 pixel features ``(y, x, r, g, b)`` of each scene, K = 5 tokens started at
random pixels, ``jit(vmap(dynamics.run))`` over the scenes against the same rule in float64 NumPy one
scene after another from the same tokens (on at most 200 scenes), the labels compared.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from rows.base import Suite, compiled_of, steady

M, MIN_OBJECTS = 4, 2
SHAPES = ("square", "circle", "triangle")
SCALE, SAT, VAL, BG_SAT, BG_VAL, AMPLITUDE = (0.15, 0.3), (0.6, 1.0), (0.75, 1.0), (0.0, 0.3), (0.1, 0.4), 0.08
R = 8 * M + 16  # uniforms per scene


def _gauges(name, u, v):
    au, av = np.abs(u), np.abs(v)
    if name == "square":
        return np.maximum(au, av)
    if name == "circle":
        return u * u + v * v
    if name == "triangle":
        return np.maximum(v, 2.0 * au - v)
    raise ValueError(name)


def _hsv_to_rgb(h, s, v):
    k = np.mod(np.array([5.0, 3.0, 1.0], np.float32) + 6.0 * h[..., None], np.float32(6.0))
    return v[..., None] - (v * s)[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _between(u, lo, hi):
    return np.float32(lo) + np.float32(hi - lo) * u


def numpy_chunk(u, size, background):
    """Scenes from (c, R) float32 uniforms: (images, masks, visible, n_objects, colour, position, scale,
    depth), the same formulas as sprite_scenes, in float32 NumPy."""
    c, S = u.shape[0], size
    obj, scene = u[:, : 8 * M].reshape(c, M, 8), u[:, 8 * M :]
    n_objects = np.minimum(MIN_OBJECTS + (scene[:, 0] * (M - MIN_OBJECTS + 1)).astype(np.int32), M)
    slot = np.arange(M)
    present = slot < n_objects[:, None]
    shape = np.minimum((obj[..., 0] * len(SHAPES)).astype(np.int32), len(SHAPES) - 1)
    s = _between(obj[..., 6], *SCALE)
    half = np.float32(0.5) * s
    position = half[..., None] + obj[..., 4:6] * (np.float32(1.0) - s)[..., None]
    order = np.where(present, obj[..., 7], np.inf)
    depth = np.where(present, np.argsort(np.argsort(order, axis=1, kind="stable"), axis=1), -1).astype(np.int32)

    centres = ((np.arange(S) + 0.5) / S).astype(np.float32)
    inv = np.float32(1.0) / half
    v = (centres - position[..., 0:1]) * inv[..., None]  # (c, M, S)
    w = (centres - position[..., 1:2]) * inv[..., None]
    uu, vv = w[:, :, None, :], v[:, :, :, None]
    gauge = _gauges(SHAPES[-1], uu, vv)
    for k in range(len(SHAPES) - 2, -1, -1):
        gauge = np.where((shape == k)[..., None, None], _gauges(SHAPES[k], uu, vv), gauge)
    covered = (gauge <= 1.0) & present[..., None, None]
    code = np.where(covered, (depth * M + slot)[..., None, None], -1).max(axis=1)  # (c, S, S)
    masks = np.where(code >= 0, code % M + 1, 0).astype(np.int32)
    visible = np.stack([(masks == j + 1).sum((1, 2)) for j in range(M)], 1).astype(np.int32)

    hsv = np.concatenate([scene[:, None, 1:4], obj[..., 1:4]], axis=1)  # (c, M+1, 3)
    lo = np.array([BG_SAT[0]] + [SAT[0]] * M, np.float32), np.array([BG_VAL[0]] + [VAL[0]] * M, np.float32)
    hi = np.array([BG_SAT[1]] + [SAT[1]] * M, np.float32), np.array([BG_VAL[1]] + [VAL[1]] * M, np.float32)
    table = _hsv_to_rgb(hsv[..., 0], lo[0] + (hi[0] - lo[0]) * hsv[..., 1], lo[1] + (hi[1] - lo[1]) * hsv[..., 2])
    images = table[np.arange(c)[:, None, None], masks]  # (c, S, S, 3)
    if background == "textured":
        waves = scene[:, 4:13].reshape(c, 3, 3)
        theta, phi = np.float32(np.pi) * waves[:, 0], np.float32(2 * np.pi) * waves[:, 2]
        freq = np.float32(2 * np.pi) * _between(waves[:, 1], 1.0, 4.0)
        a = (freq * np.cos(theta))[..., None] * centres + phi[..., None]  # (c, K, S)
        b = (freq * np.sin(theta))[..., None] * centres
        texture = (
            np.einsum("nki,nkj->nij", np.cos(a), np.cos(b)) - np.einsum("nki,nkj->nij", np.sin(a), np.sin(b))
        ) / np.float32(3.0)
        back = np.clip(table[:, 0, None, None, :] + np.float32(AMPLITUDE) * texture[..., None], 0.0, 1.0)
        images = np.where((masks == 0)[..., None], back, images)
    colour = np.where(present[..., None], table[:, 1:], 0.0)
    return images, masks, visible, n_objects, colour, position, s, depth


def numpy_scenes(seed, n, size, background, chunk, uniforms=None):
    """n scenes in chunks; the uniforms from PCG64 (or given, (n, R) float32)."""
    rng = np.random.default_rng(seed)
    parts = []
    for start in range(0, n, chunk):
        c = min(chunk, n - start)
        u = uniforms[start : start + c] if uniforms is not None else rng.random((c, R), np.float32)
        parts.append(numpy_chunk(u, size, background))
    return [np.concatenate(p) for p in zip(*parts)]


def tokdyn_uniforms(key, n):
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(n))
    return np.asarray(jax.vmap(lambda k: jax.random.uniform(k, (R,), jnp.float32))(keys))


TEMPERATURE, N_STEPS, TOL = 0.03, 50, 1e-4


def numpy_rule(x, tokens, temperature, n_steps, tol):
    """The baseline rule in float64 NumPy: soft assignment over tokens, tokens to the weighted
    means, until no coordinate moves more than ``tol``; hard labels at the final tokens."""
    t = tokens.astype(np.float64)
    x = x.astype(np.float64)
    for _ in range(n_steps):
        d = ((x[:, None, :] - t[None, :, :]) ** 2).sum(-1)  # (N, K)
        logits = -d / temperature
        a = np.exp(logits - logits.max(1, keepdims=True))
        a /= a.sum(1, keepdims=True)
        new = (a.T @ x) / (a.sum(0)[:, None] + 1e-8)
        delta = np.abs(new - t).max()
        t = new
        if delta < tol:
            break
    return ((x[:, None, :] - t[None, :, :]) ** 2).sum(-1).argmin(1)


def pixel_dynamics(s: Suite):
    """The rows of the fixed token dynamics on pixel features (module docstring)."""
    from tokdyn import dynamics
    from tokdyn.data import scenes

    n = 32 if s.args.smoke else 1000
    m = min(n, 8 if s.args.smoke else 200)
    sc = scenes.sprite_scenes(jax.random.key(0), n)
    x = scenes.pixel_features(sc.images)  # (n, N, 5)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(1), i))(jnp.arange(n))
    tokens0 = jax.vmap(lambda k, xi: dynamics.init_tokens(k, 5, 5, method="data", x=xi))(keys, x)
    hp = dynamics.Hparams(temperature=TEMPERATURE)
    fn = jax.jit(jax.vmap(lambda xi, ti: dynamics.run(xi, ti, hp, n_steps=N_STEPS, tol=TOL).labels))
    xn, tn = np.asarray(x), np.asarray(tokens0)
    label = f"{n:,} scenes, 1,024 pixels x 5 features, K = 5"
    ref = {}

    def peer():
        best, med, _ = steady(lambda: [numpy_rule(xn[i], tn[i], TEMPERATURE, N_STEPS, TOL) for i in range(m)], 1)
        ref["labels"] = np.stack([numpy_rule(xn[i], tn[i], TEMPERATURE, N_STEPS, TOL) for i in range(m)])
        return dict(size=f"{m:,} scenes, float64", unit="scenes/s", best=m / best, median=m / med)

    def ours():
        c, comp = compiled_of(fn, x, tokens0)
        best, med, _ = steady(lambda: jax.block_until_ready(c(x, tokens0)), s.args.repeats)
        row = dict(size=label, unit="scenes/s", best=n / best, median=n / med, compile_s=comp, precision="default")
        if "labels" in ref:
            same = float(np.mean(ref["labels"] == np.asarray(c(x, tokens0))[:m]))
            row["agreement"] = f"labels equal to the NumPy loop's on {same:.2%} of the pixels of {m} scenes"
        return row

    s.row("data", "token dynamics on pixel features, NumPy float64 loop", peer)
    s.row("data", "token dynamics on pixel features, jit(vmap(dynamics.run))", ours)


def run(s: Suite):
    """Every data row (module docstring)."""
    pixel_dynamics(s)
    from tokdyn.data import scenes

    n, size, chunk = (256, 32, 64) if s.args.smoke else (10_000, 32, 250)
    key = jax.random.key(0)
    label = f"{n:,} scenes of {size} x {size}"
    for background in ("plain", "textured"):

        def ours(background=background):
            t = time.perf_counter()
            scenes.sprite_scenes.jitted.lower(key, n, size=size, background=background).compile()
            comp = time.perf_counter() - t

            def call():
                return jax.block_until_ready(scenes.sprite_scenes(key, n, size=size, background=background))

            out = call()
            best, med, _ = steady(call, s.args.repeats)
            ref = numpy_scenes(0, n, size, background, chunk, uniforms=tokdyn_uniforms(key, n))
            same = np.asarray(out.masks) == ref[1]  # (n, S, S)
            diff = float(np.abs(np.asarray(out.images) - ref[0])[same].max())
            return dict(
                size=label,
                unit="scenes/s",
                best=n / best,
                median=n / med,
                compile_s=comp,
                precision="n/a",
                agreement=f"the NumPy generator on the same uniforms: {int((~same).sum())} of {same.size:,} mask "
                f"pixels differ, images within {diff:.1e} elsewhere",
            )

        def peer(background=background):
            best, med, _ = steady(lambda: numpy_scenes(1, n, size, background, chunk), s.args.repeats)
            return dict(size=label + f", chunks of {chunk}", unit="scenes/s", best=n / best, median=n / med)

        s.row("data", f"sprite_scenes, {background}, one call", ours)
        s.row("data", f"NumPy float32 generator, {background}", peer)
