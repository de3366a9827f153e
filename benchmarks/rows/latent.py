"""The latent reasoner's diagnostics rows: the confidence-driven latent optimiser
(``dmlr.make``) and the latent -> answer mediation (``mediation.latent_effects``), instances/s."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rows.base import Suite, compiled_of, steady


def _latent_setup(s: Suite, n):
    from tokdyn.studies import latent_reasoning
    from tokdyn.models.latent import model as latent_model
    from tokdyn.models.latent import tasks, variants

    tc = latent_reasoning.Config().training
    if s.args.smoke:
        tc = dataclasses.replace(tc, width=16, depth=1, heads=2)
    model = latent_model.Model(variants.model_config(tc, "latent"))
    params = model.init(jax.random.key(0))
    batch = tasks.generate(jax.random.key(1), n, tc.task)
    return model, params, batch


def compiled_row(s: Suite, f, args: tuple, result, n: int, size: str, unit: str) -> dict:
    """A row for one jitted call: ``f`` compiled for ``args`` (compile time apart), then timed;
    ``result(outputs)`` pulls what the call must finish to the host; ``n`` items per call."""
    c, comp = compiled_of(f, *args)
    best, med, _ = steady(lambda: np.asarray(result(c(*args))), s.args.repeats)
    return dict(
        size=size,
        unit=unit,
        best=n / best,
        median=n / med,
        compile_s=comp,
        precision=str(jax.config.jax_default_matmul_precision),
    )


def run_dmlr(s: Suite):
    """The DMLR row."""
    from tokdyn.diagnostics import dmlr

    n = 16 if s.args.smoke else 1000

    def one():
        model, params, batch = _latent_setup(s, n)
        lay = model.layout
        opt = dmlr.Config() if not s.args.smoke else dataclasses.replace(dmlr.Config(), n_iters=3)
        f = dmlr.make(
            model.apply,
            opt,
            latent_positions=tuple(range(lay.latents.start, lay.latents.stop)),
            answer_position=lay.answer,
        )
        return compiled_row(
            s,
            f,
            (jax.random.key(0), params, batch, dmlr.Hparams(), jnp.arange(n)),
            lambda out: out.reward_best,
            n,
            f"{n} instances, {opt.n_iters} iterations x {2 * opt.n_pairs} evaluations",
            "instances/s",
        )

    s.row("dmlr", "dmlr.make, every instance in one call", one)


def run_diagnostics(s: Suite):
    """The mediation row."""
    from tokdyn.diagnostics import mediation

    n = 16 if s.args.smoke else 1000

    def one():
        model, params, batch = _latent_setup(s, n)
        other = jax.random.normal(jax.random.key(2), (n, model.cfg.n_latents, model.cfg.width))
        ans = model.layout.answer
        f = jax.jit(
            lambda k, p, b, a, o: mediation.latent_effects(
                k, model.apply, p, b, answer_position=ans, answers=a, kinds=mediation.INTERVENTIONS, other=o
            )
        )
        return compiled_row(
            s,
            f,
            (jax.random.key(3), params, batch, batch.answer, other),
            lambda out: out.kl,
            n,
            f"{n} instances x {len(mediation.INTERVENTIONS)} interventions",
            "instances/s",
        )

    s.row("diagnostics", "mediation.latent_effects, one call", one)
