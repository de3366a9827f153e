"""The sampling rows: grid-diffusion sampling, ancestral (T steps) and DDIM-50, grids/s."""

from __future__ import annotations

import dataclasses

import jax

from rows.base import Suite, compiled_of, steady


def run(s: Suite):
    """Every sampling row (module docstring)."""
    from tokdyn.models import sequence
    from tokdyn.studies import grid_diffusion

    st = grid_diffusion.Config()
    n = 16 if s.args.smoke else 256
    for name in ("grid_ddpm", "grid_d3pm_absorbing"):
        cfg = dataclasses.replace(st.model(name, "sequence"), T=20 if s.args.smoke else st.T)
        if s.args.smoke:
            cfg = dataclasses.replace(cfg, width=16, depth=1)
        params = sequence.init(jax.random.key(1), cfg)
        for sampler, steps in (("ancestral", cfg.T), ("ddim", 10 if s.args.smoke else 50)):
            if sampler == "ddim" and not cfg.continuous:
                continue

            def one(cfg=cfg, params=params, sampler=sampler, steps=steps):
                c, comp = compiled_of(sequence.sample.jitted, jax.random.key(2), params, cfg, n, sampler, steps)
                best, med, _ = steady(lambda: jax.block_until_ready(c(jax.random.key(2), params)), s.args.repeats)
                grids = n * cfg.length
                return dict(
                    size=f"{n} sequences x {cfg.length} grids, {steps} steps",
                    unit="grids/s",
                    best=grids / best,
                    median=grids / med,
                    compile_s=comp,
                    precision=str(jax.config.jax_default_matmul_precision),
                )

            s.row("sampling", f"{name}, {sampler}", one)
