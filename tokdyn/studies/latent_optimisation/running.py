"""The latent-optimisation study's ``run``: the source's variants read (their missing ones trained
there), the optimiser's runs and every variant's grounding (each kept as it finishes), the tables
put together."""

from __future__ import annotations

import jax

from tokdyn import io
from tokdyn.experiment import runner
from tokdyn.experiment import study as study_dir
from tokdyn.studies.latent_optimisation.config import Config
from tokdyn.studies.latent_optimisation.grounding import grounding_part
from tokdyn.studies.latent_optimisation.optimiser import optimiser_tables, run_optimiser


def needed(cfg: Config) -> list:
    """The variants the study reads from its source: ``variants``, then ``grounding_variants``."""
    return list(cfg.variants) + list(cfg.grounding_variants)


def trained(cfg: Config, quiet: bool):
    """Make sure the source holds every variant this study needs (training the missing ones when
    ``cfg.train``); returns the source study's configuration."""
    return cfg.reasoners().ensure_trained(cfg.reasoning(), cfg.source, needed(cfg), train=cfg.train, quiet=quiet)


def run(session, cfg: Config) -> runner.Result:
    """Train what the source lacks, then the optimiser's runs and every variant's grounding (each
    kept as it finishes): ``optimiser.csv``, ``optimiser_tests.csv``, ``rewards.csv``,
    ``grounding.csv``."""
    source = cfg.reasoners()
    lr = source.ensure_trained(
        session.context["reasoning"], cfg.source, needed(cfg), train=cfg.train, quiet=session.quiet
    )
    data = source.splits(lr)
    test = jax.tree_util.tree_map(lambda a: a[: cfg.n_instances], data.test)
    families = lr.training.task.families
    results = {}
    for name in cfg.variants:
        model, params, _ = source.load_variant(lr, cfg.source, name)
        session.say(
            f"optimising the latents of {name} ({cfg.n_instances} instances x seeds x {len(cfg.methods)} methods)"
        )
        results[name] = run_optimiser(cfg, name, model, params, test, study=session.study)
    table, tests, curves = optimiser_tables(cfg, results, test, families)
    rows, hists = [], {}
    for name in cfg.grounding_variants:
        r, h = grounding_part(session.study, cfg, lr, name, test, families)
        rows += r
        hists[name] = h
    ground = io.to_columns(rows)
    tables = {"optimiser.csv": table, "optimiser_tests.csv": tests, "rewards.csv": curves, "grounding.csv": ground}
    return runner.Result(
        tables,
        data=dict(table=table, tests=tests, curves=curves, ground=ground, hists=hists),
        record={"reasoning": study_dir.config_dict(lr)},
    )
