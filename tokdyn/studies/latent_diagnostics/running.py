"""The latent-diagnostics study's ``run``: the source's variants read (their missing ones trained
there), every part measured (:mod:`~tokdyn.studies.latent_diagnostics.measures`) and kept as it
finishes, the tables put together."""

from __future__ import annotations

import functools

import jax
import numpy as np

from tokdyn import io
from tokdyn.experiment import runner
from tokdyn.experiment import study as study_dir
from tokdyn.models.latent import training as latent_training
from tokdyn.models.latent import variants
from tokdyn.studies.latent_diagnostics.config import Config, facts
from tokdyn.studies.latent_diagnostics.measures import (
    caption_rows,
    collapse_rows,
    decomposition,
    latent_block,
    mediation_rows,
    probe_rows,
)


def needed(cfg: Config) -> list:
    """The variants the study reads from its source: ``variants``, then ``reference`` (if any)."""
    return list(cfg.variants) + ([cfg.reference] if cfg.reference else [])


@functools.lru_cache(maxsize=8)  # one compilation per model structure (a rerun in the process reuses it)
def final_states(model):
    """A compiled function ``(params, batch) -> (latents, hidden)`` of M stacked models on one batch:
    their latents (M, B, L, D) and last-layer hidden states (M, B, T, D), from one forward pass."""

    def one(p, batch):
        out = model.apply(p, batch)
        return out.latents, out.hidden[:, -1]

    return jax.jit(jax.vmap(one, in_axes=(0, None)))


class Diagnosis:
    """One run's shared state: the study directory that keeps every part, the source's
    configuration ``lr`` and store, the first ``n_instances`` test instances and their visual
    facts (the probes' targets).

    Args:
      session: the runner's :class:`tokdyn.experiment.runner.Session`.
      cfg: the study's :class:`Config`.
      lr: the source's configuration (its variants already trained).
    """

    def __init__(self, session, cfg: Config, lr):
        self.session, self.cfg, self.lr = session, cfg, lr
        self.source = cfg.reasoners()
        tc0 = self.source.training(lr, cfg.variants[0])
        self.data = latent_training.data(tc0)
        self.test0 = jax.tree_util.tree_map(lambda a: a[: cfg.n_instances], self.data.test)
        self.targets = facts(self.test0, tc0.task)
        self.pad = tc0.task.vocab.pad

    def batch_of(self, tc, name: str, stage: int = -1):
        """The test instances as variant ``name`` sees them at curriculum ``stage``: the caption
        tokens that stage has replaced are ``<pad>``."""
        return variants.stage_batch(self.test0, variants.dropped_captions(tc, name, stage), self.pad)

    def part(self, name: str, what: str, compute, extra: str = "") -> list:
        """``compute()``'s rows, kept in ``parts/<name>__<what>.json`` (reused by a rerun)."""
        key = {"variant": name, "part": what, "extra": extra}
        return self.session.study.rows(f"{name}__{what}", compute, key=key)

    def feedback_parts(self, name: str, loaded: tuple, latents_of: dict, hidden) -> tuple[list, list, list]:
        """``(mediation, collapse, probes)`` rows of the feedback variant ``name`` (``loaded``:
        its model, params and training config; ``latents_of``: every feedback variant's latents,
        the first other of the same shape the ``"other"`` intervention's; ``hidden``: its models'
        last-layer hidden states on the test instances, :func:`final_states`)."""
        cfg, fb, targets = self.cfg, self.cfg.feedback(), self.targets
        model, params, tc = loaded
        test = self.batch_of(tc, name)
        same = [
            o for o in fb[fb.index(name) + 1 :] + fb[: fb.index(name)] if latents_of[o].shape == latents_of[name].shape
        ]
        other = same[0] if same else None
        med = self.part(
            name,
            "mediation",
            lambda: mediation_rows(cfg, name, model, params, test, tc, None if other is None else latents_of[other]),
            extra=str(other),
        )
        col = self.part(name, "collapse", lambda: collapse_rows(name, latents_of[name]))
        s, b, l, d = latents_of[name].shape
        prb = self.part(
            name,
            "probes_latents",
            lambda: probe_rows(cfg, name, "latents", latents_of[name].reshape(s, b, l * d), targets),
        )
        _, _, patches = latent_block(model)
        states = np.asarray(hidden[:, :, : len(patches)])
        prb += self.part(
            name, "probes_patches", lambda: probe_rows(cfg, name, "patches", states.reshape(s, b, -1), targets)
        )
        return med, col, prb

    def decomposition_parts(self, name: str, loaded: tuple) -> list:
        """The ``decomposition.csv`` rows of variant ``name`` at its final state and (``midway``)
        half-way through its training (none for a curriculum stage that still generates captions)."""
        cfg, lr, source = self.cfg, self.lr, self.source
        model, params, tc = loaded
        test = self.batch_of(tc, name)
        dec = self.part(
            name,
            "decomposition_final",
            lambda: decomposition(
                cfg, name, "final", int(source.result(cfg.source, name)["steps"]), model, params, test
            ),
        )
        if cfg.midway:

            def mid():
                stage = source.midway(lr, cfg.source, name)[1]
                m_cfg = variants.model_config(tc, name, stage)
                if m_cfg.latent_mode == "none" or m_cfg.caption_len > variants.dropped_captions(tc, name, stage):
                    return []  # a curriculum stage that still generates caption tokens: another task
                m_model, m_params, step, stage = source.load_midway(
                    lr, cfg.source, name, quiet=self.session.quiet, pool=self.data.train
                )
                return decomposition(cfg, name, "mid", step, m_model, m_params, self.batch_of(tc, name, stage))

            dec += self.part(name, "decomposition_mid", mid)
        return dec

    def reference_parts(self) -> tuple[list, list]:
        """``(mediation, probes)`` rows of the text-space reference's caption states (none without
        a reference, or one without captions)."""
        cfg, ref, test = self.cfg, self.cfg.reference, self.test0
        model, params, tc = self.source.load_variant(self.lr, cfg.source, ref)
        if not model.cfg.caption_len:
            return [], []
        med = self.part(ref, "caption", lambda: caption_rows(cfg, ref, model, params, test, tc))
        lay = model.layout
        cap = np.asarray(final_states(model)(params, test)[1][:, :, lay.caption])
        prb = self.part(
            ref,
            "probes_caption",
            lambda: probe_rows(cfg, ref, "caption", cap.reshape(cap.shape[0], cap.shape[1], -1), self.targets),
        )
        return med, prb


def run(session, cfg: Config) -> runner.Result:
    """Train what the source lacks, then every part (kept as it finishes, :class:`Diagnosis`):
    ``mediation.csv``, ``decomposition.csv``, ``collapse.csv``, ``probes.csv``."""
    source = cfg.reasoners()
    lr = source.ensure_trained(
        session.context["reasoning"], cfg.source, needed(cfg), train=cfg.train, quiet=session.quiet
    )
    run_ = Diagnosis(session, cfg, lr)
    med, dec, col, prb, latents_of, hidden_of = [], [], [], [], {}, {}
    loaded = {name: source.load_variant(lr, cfg.source, name) for name in cfg.variants}
    for name in cfg.feedback():
        model, params, tc = loaded[name]
        latents, hidden_of[name] = final_states(model)(params, run_.batch_of(tc, name))
        latents_of[name] = np.asarray(latents)
    for name in cfg.variants:
        if not session.quiet:
            print(f"diagnosing {name}")
        if name in cfg.feedback():
            m, c, p = run_.feedback_parts(name, loaded[name], latents_of, hidden_of[name])
            med, col, prb = med + m, col + c, prb + p
        dec += run_.decomposition_parts(name, loaded[name])
    if cfg.reference:
        m, p = run_.reference_parts()
        med, prb = med + m, prb + p
    tables = {}
    for k, rows in (("mediation", med), ("decomposition", dec), ("collapse", col), ("probes", prb)):
        keys = list(dict.fromkeys(c for r in rows for c in r))  # rows of different kinds: missing cells NaN
        tables[f"{k}.csv"] = io.to_columns([{c: r.get(c, np.nan) for c in keys} for r in rows])
    return runner.Result(
        tables,
        data=dict(med=med, dec=dec, col=col, prb=prb, latents=latents_of),
        record={"reasoning": study_dir.config_dict(lr)},
    )
