"""The device's own ceilings, measured here (the rates every other row is placed against)."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from rows.base import Suite, compiled_of, on_devices, spread, steady


def copy_row(s: Suite):
    """The row "device-to-device elementwise copy" (bytes read + written; ``s.ceil["copy_bytes"]``, its
    best), also run alone by the rows that need the bandwidth where no ceilings were measured; returns
    the array it copied."""
    nd = len(jax.local_devices())
    reps = 2 if s.args.smoke else (20 if s.accelerator else 4)
    n = (1 << (16 if s.args.smoke else (28 if s.accelerator else 24))) * nd
    x = spread(jax.random.uniform(jax.random.key(2), (n,), jnp.float32, -1.0, 0.0))

    def copy():
        f = on_devices(lambda v: v * 1.0000001 + 1e-7)  # one read and one write of every element
        c, comp = compiled_of(f, x)
        best, med, _ = steady(lambda: c(x).block_until_ready(), reps)
        nbytes = 2 * 4 * n
        s.ceil["copy_bytes"] = nbytes / best
        return dict(
            size=f"{n:,} float32",
            unit="GB/s (read + write)",
            best=nbytes / best / 1e9,
            median=nbytes / med / 1e9,
            compile_s=comp,
        )

    s.row("ceilings", "device-to-device elementwise copy", copy)
    return x


def run(s: Suite):
    """The ceilings: float32 GEMM (precision "highest" and the backend's default), a
    device-to-device copy (bytes read + written), float32 multiply-add passes (one dependent
    chain per element, and four independent chains), an exp pass. ``s.ceil`` gets ``gemm_highest``,
    ``gemm_default``, ``copy_bytes``, ``fma_flops`` (the better FMA pass) and ``exp``. The FFMA
    ceiling of ``work.py`` is the larger of ``fma_flops`` and ``gemm_highest``: the GEMM runs on
    the same multiply-add units and shows what they reach."""
    smoke = s.args.smoke
    n_gemm = 256 if smoke else (8192 if s.accelerator else 1024)
    nd = len(jax.local_devices())
    a = spread(jax.random.normal(jax.random.key(0), (nd, n_gemm, n_gemm), jnp.float32))
    b = spread(jax.random.normal(jax.random.key(1), (nd, n_gemm, n_gemm), jnp.float32))
    reps = 2 if smoke else (20 if s.accelerator else 4)
    for prec in ("highest", "default"):

        def gemm():
            f = on_devices(lambda x, y: jnp.matmul(x, y, precision=prec))
            c, comp = compiled_of(f, a, b)
            call = lambda: c(a, b).block_until_ready()  # noqa: E731
            call()
            ts = []
            for _ in range(reps):
                t = time.perf_counter()
                call()
                ts.append(time.perf_counter() - t)
            flops = 2.0 * n_gemm**3 * nd
            s.ceil[f"gemm_{prec}"] = flops / min(ts)
            return dict(
                size=f"{n_gemm}^3 x {nd} device(s)",
                unit="GFLOP/s",
                best=flops / min(ts) / 1e9,
                median=flops / float(np.median(ts)) / 1e9,
                compile_s=comp,
                precision=prec,
            )

        s.row("ceilings", f"float32 GEMM, precision {prec}", gemm)

    x = copy_row(s)
    n = x.shape[0]

    degree = 256 if s.accelerator else 32  # enough multiply-adds per byte to be compute-bound there
    n_exp = 64 if s.accelerator else 8

    def fma(chains):
        def poly(v):  # Horner: `degree` multiply-adds per element in `chains` independent chains
            accs = [jnp.full_like(v, 0.5 + 0.1 * c) for c in range(chains)]
            for k in range(degree // chains):
                accs = [a * v + (1.0 / (k + 2 + c)) for c, a in enumerate(accs)]
            return sum(accs[1:], accs[0])

        c, comp = compiled_of(on_devices(poly), x)
        best, med, _ = steady(lambda: c(x).block_until_ready(), reps)
        flops = 2.0 * degree * n  # (the chains' final sums are left out: chains - 1 adds per element)
        s.ceil["fma_flops"] = max(s.ceil.get("fma_flops", 0.0), flops / best)
        return dict(
            size=f"{n:,} x {degree} FMA, {chains} chain(s)",
            unit="GFLOP/s",
            best=flops / best / 1e9,
            median=flops / med / 1e9,
            compile_s=comp,
        )

    for chains in (1, 4):
        s.row("ceilings", f"float32 elementwise FMA pass, {chains} chain(s) per element", lambda c=chains: fma(c))

    def exps():
        def many(v):  # n_exp dependent exponentials per element
            acc = v
            for _ in range(n_exp):
                acc = jnp.exp(acc) - 1.5
            return acc

        c, comp = compiled_of(on_devices(many), x)
        best, med, _ = steady(lambda: c(x).block_until_ready(), reps)
        s.ceil["exp"] = n_exp * n / best
        return dict(
            size=f"{n:,} x {n_exp} exp",
            unit="G exp/s",
            best=n_exp * n / best / 1e9,
            median=n_exp * n / med / 1e9,
            compile_s=comp,
        )

    s.row("ceilings", "float32 exp pass", exps)
