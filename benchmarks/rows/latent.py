"""The latent reasoner's rows: the confidence-driven latent optimiser (``dmlr.make``) and the
latent -> answer mediation (``mediation.latent_effects``), instances/s; and latent feedback
(``feedback``): the model's key/value-cached forward pass against the plain way of L + 1 full
causal passes over the growing sequence (the peer, written out here), and the same model in
``pause`` mode (L learned positions, one pass, no feedback: ``1 - pause / cached`` is the share of a
training step spent feeding latents back), each for one forward pass and one training step (value
and gradient of the answer cross-entropy), the cached and the plain forms' logits compared first."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rows.base import Suite, compiled_of, steady


def _latent_setup(s: Suite, n):
    from tokdyn.studies import latent_reasoning
    from tokdyn.models.latent import model as latent_model
    from tokdyn.data import grid_tasks as tasks
    from tokdyn.models.latent import variants

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

    def loop():
        """The way such analyses are usually scripted: per instance, its own latents, then each
        intervention's latents fed back, one jitted call each (the batch-level replacements made once,
        outside the clock); its flip rates against the one call's on the same instances."""
        n_loop = 4 if s.args.smoke else 100
        model, params, batch = _latent_setup(s, n)
        other = jax.random.normal(jax.random.key(2), (n, model.cfg.n_latents, model.cfg.width))
        ans, key = model.layout.answer, jax.random.key(3)
        own = jax.jit(model.apply)(params, batch).latents
        repl = np.asarray(mediation.interventions(key, own, mediation.INTERVENTIONS, other=other))  # (K, B, L, D)
        lat_fn = jax.jit(lambda p, inst: model.apply(p, inst).latents)
        logp_fn = jax.jit(lambda p, inst, z: jax.nn.log_softmax(model.apply(p, inst, latents=z).logits[0, ans]))

        def run_loop():
            flips = []
            for i in range(n_loop):
                inst = jax.tree.map(lambda a: a[i : i + 1], batch)
                lp0 = np.asarray(logp_fn(params, inst, lat_fn(params, inst)))
                for k in range(repl.shape[0]):
                    lp = np.asarray(logp_fn(params, inst, jnp.asarray(repl[k, i : i + 1])))
                    flips.append(lp.argmax() != lp0.argmax())
            return np.asarray(flips, float).reshape(n_loop, -1).mean(0)

        best, med, first = steady(run_loop, s.args.repeats)
        ours = mediation.latent_effects(
            key,
            model.apply,
            params,
            batch,
            answer_position=ans,
            answers=batch.answer,
            kinds=mediation.INTERVENTIONS,
            other=other,
        )
        same = np.asarray(ours.flipped)[:, :n_loop].mean(1)
        return dict(
            size=f"{n_loop} instances x {len(mediation.INTERVENTIONS)} interventions",
            unit="instances/s",
            best=n_loop / best,
            median=n_loop / med,
            compile_s=max(first - med, 0.0),
            precision=str(jax.config.jax_default_matmul_precision),
            agreement=f"flip rates on the same instances, loop {np.round(run_loop(), 3).tolist()}, one call "
            f"{np.round(same, 3).tolist()}",
        )

    s.row("diagnostics", "a per-instance loop of the jitted model (the peer)", loop)


def _passes(model, params, batch):
    """The peer: latent i read from a full causal pass over the prefix, then one final pass."""
    from tokdyn.models.latent import model as latent_model

    net, lay = model.net, model.layout
    x = model.embed(params, batch)
    start = lay.latents.start
    for i in range(model.cfg.n_latents):
        out = net.apply(params, x[:, : start + i], method=latent_model.Network.backbone)[0]
        x = x.at[:, start + i].set(net.apply(params, out[:, start + i - 1], method=latent_model.Network.project))
    out = net.apply(params, x, method=latent_model.Network.backbone)[0]
    return net.apply(params, out, method=latent_model.Network.unembed)


def run_feedback(s: Suite):
    """The latent-feedback rows (module docstring): per number of latents, the cached pass, the L + 1
    passes and the pause model, in training steps/s (the forward pass's rate beside it)."""
    import optax

    from tokdyn.models.latent import model as latent_model
    from tokdyn.data import grid_tasks as tasks
    from tokdyn.studies import latent_reasoning

    tc = latent_reasoning.Config().training
    if s.args.smoke:
        tc = dataclasses.replace(tc, width=16, depth=1, heads=2)
    b = 8 if s.args.smoke else 64
    batch = jax.tree.map(jnp.asarray, tasks.generate(jax.random.key(1), b, tc.task))
    for n_latents in (2,) if s.args.smoke else (4, 8, 16):
        mc = latent_model.Config(
            task=tc.task,
            width=tc.width,
            depth=tc.depth,
            heads=tc.heads,
            latent_mode="feedback",
            n_latents=n_latents,
            projection=tc.projection,
        )
        model = latent_model.Model(mc)
        paused = latent_model.Model(dataclasses.replace(mc, latent_mode="pause"))
        params, pparams = model.init(jax.random.key(0)), paused.init(jax.random.key(0))
        answer = model.layout.answer
        steps = {}

        def cached(m, p, x):
            return m.apply(p, x).logits

        forms = (
            ("cached", "key/value-cached feedback (Model.apply)", cached, model, params),
            ("passes", "L + 1 full causal passes (the plain way)", _passes, model, params),
            ("pause", "pause mode: no feedback, one pass", cached, paused, pparams),
        )
        for key, label, f, m, prm in forms:

            def one(key=key, f=f, m=m, prm=prm):
                def loss(p, x):
                    logits = f(m, p, x)[:, answer]
                    return optax.softmax_cross_entropy_with_integer_labels(logits, x.answer).mean()

                fwd, comp_f = compiled_of(jax.jit(lambda p, x: f(m, p, x)), prm, batch)
                grad, comp_g = compiled_of(jax.jit(jax.value_and_grad(loss)), prm, batch)
                f_best, f_med, _ = steady(lambda: jax.block_until_ready(fwd(prm, batch)), s.args.repeats)
                g_best, g_med, _ = steady(lambda: jax.block_until_ready(grad(prm, batch)), s.args.repeats)
                steps[key] = g_med
                row = dict(
                    size=f"batch {b}, L = {n_latents}, width {tc.width}, depth {tc.depth}",
                    unit="train steps/s",
                    best=1 / g_best,
                    median=1 / g_med,
                    forward_per_s=1 / f_med,
                    compile_s=comp_f + comp_g,
                    precision=str(jax.config.jax_default_matmul_precision),
                )
                if key == "passes":
                    a = np.asarray(fwd(prm, batch))
                    c = np.asarray(jax.jit(lambda p, x: cached(model, p, x))(params, batch))
                    row["agreement"] = f"max |cached - passes| over the logits {np.abs(a - c).max():.1e}"
                    if "cached" in steps:
                        row["agreement"] += f"; the cache saves {1 - steps['cached'] / g_med:.0%} of a step"
                if key == "pause" and "cached" in steps:
                    row["agreement"] = f"feedback's share of a cached step {1 - g_med / steps['cached']:.0%}"
                return row

            s.row("feedback", f"{label}, L = {n_latents}", one)
