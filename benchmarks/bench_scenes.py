"""Speed of the sprite-scene generator (``tokdyn.data.scenes.sprite_scenes``) against a vectorised NumPy
generator of the identical workload.

Workload: ``--n`` scenes of ``--size`` x ``--size`` pixels, 2-4 objects each (square, circle,
triangle; scale 0.15-0.3), plain and textured backgrounds: images, instance masks, visible pixel
counts and the per-object attributes, as ``sprite_scenes``'s defaults.

  tokdyn          ``sprite_scenes(key, n, background=...)``: one compiled call (threefry bits from
                  ``fold_in(key, i)`` per scene, analytic coverage of every pixel by every object,
                  depth compositing), as a user calls it (argument checks included)
  NumPy           the same formulas in float32 NumPy, vectorised over scenes x objects x pixels in
                  chunks of ``--chunk`` scenes (temporaries stay in cache), the random numbers from
                  ``numpy.random.Generator.random`` (PCG64), timed with the rest; the masks are
                  built with the same max-over-codes compositing and the images with a gather from
                  each scene's colour table

Check: the NumPy generator is also run on the uniforms that tokdyn draws (one ``random.uniform``
call of ``8 M + 16`` numbers per scene key, rebuilt here); the last two columns count the mask
pixels on which the two differ (float32 rounding may move a pixel centre that lies on a boundary)
and the largest image difference on the other pixels. Compile time is measured apart
(``lower().compile()``) and excluded from the rates;
every timing ends with ``block_until_ready``; best and median of ``--repeats``. Usage:

    python benchmarks/bench_scenes.py [--n 10000] [--size 32] [--repeats 5] [--chunk 250]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

from common import timed  # noqa: E402

from tokdyn.data import scenes  # noqa: E402

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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=250, help="scenes per NumPy chunk")
    args = ap.parse_args()
    n, size = args.n, args.size
    key = jax.random.key(0)
    rows = []
    for background in ("plain", "textured"):
        call = lambda: jax.block_until_ready(scenes.sprite_scenes(key, n, size=size, background=background))
        t = time.perf_counter()
        scenes.sprite_scenes.jitted.lower(key, n, size=size, background=background).compile()
        compile_s = time.perf_counter() - t
        out = call()  # warm-up (the call path compiles its own executable: same program)
        best, med = timed(call, args.repeats)
        ref = numpy_scenes(0, n, size, background, args.chunk, uniforms=tokdyn_uniforms(key, n))
        same = np.asarray(out.masks) == ref[1]  # (n, S, S)
        agree = f"{int((~same).sum())} of {same.size:,}"
        image_diff = float(np.abs(np.asarray(out.images) - ref[0])[same].max())
        rows.append((background, "tokdyn (jit, 1 call)", best, med, compile_s, agree, image_diff))
        numpy_call = lambda: numpy_scenes(1, n, size, background, args.chunk)
        numpy_call()
        best, med = timed(numpy_call, args.repeats)
        rows.append((background, f"NumPy float32, chunks of {args.chunk}", best, med, None, None, None))

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
        f"({platform.platform()}); JAX {jax.__version__}, backend {jax.default_backend()}; float32; "
        f"NumPy {np.__version__}"
    )
    print(
        f"workload: {n} scenes of {size}x{size}, {MIN_OBJECTS}-{M} objects ({', '.join(SHAPES)}), "
        f"scale {SCALE}; images + masks + visible counts + attributes; best and median of {args.repeats}"
    )
    print(
        "\n| background | implementation | scenes/s (best) | (median) | ms per batch (median) | compile s "
        "| mask pixels that differ | max image diff elsewhere |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for background, impl, best, med, comp, agree, diff in rows:
        comp_txt = "-" if comp is None else f"{comp:.2f}"
        agree_txt = "-" if agree is None else agree
        diff_txt = "-" if diff is None else f"{diff:.1e}"
        print(
            f"| {background} | {impl} | {n / best:,.0f} | {n / med:,.0f} | {med * 1e3:,.0f} | {comp_txt} "
            f"| {agree_txt} | {diff_txt} |"
        )
    speed = {(r[0], r[1].split()[0]): r[3] for r in rows}
    for background in ("plain", "textured"):
        print(
            f"{background}: tokdyn {speed[(background, 'NumPy')] / speed[(background, 'tokdyn')]:.1f}x NumPy (medians)"
        )


if __name__ == "__main__":
    main()
