"""The scenes study: how far do the fixed token dynamics get on multi-object images, and what does
a learned Slot Attention add? (``tokdyn study scenes --out DIR``)

:func:`main`, :class:`Config`. On sprite scenes (:func:`tokdyn.data.scenes.sprite_scenes`) it runs the fixed methods on
per-pixel features (the token-dynamics rules, the variational-refinement rule and k-means, each
at the settings chosen on the validation split: :func:`run_fixed`) and trains the learned Slot
Attention (and, opt-in, IODINE) models (:func:`fit`, :func:`train_learned`), then scores every
method and seed on the test split by FG-ARI, matched mIoU and collapse. It writes
``results.csv``, ``learning_curve.csv``, ``examples.png``, ``learning_curve.png``, ``summary.md``
(:func:`summary`) and ``config.json``; every method and checkpoint is kept in ``DIR/parts/``, so a
rerun (or a killed one) resumes.

The steps, the outputs, resuming and the findings: :doc:`/studies/scenes`.

The study's parts, one concept a module (every public name is re-exported here:
``tokdyn.studies.object_discovery.Config``, ``.run_fixed``, ...):

- :mod:`~tokdyn.studies.object_discovery.config`  :class:`Config`: the fields, their checks, the models' configurations, the estimate
- :mod:`~tokdyn.studies.object_discovery.fixed`   the splits and the fixed methods: settings chosen on validation, scored on test
- :mod:`~tokdyn.studies.object_discovery.learned` the learned models: trained, checkpointed, scored
- :mod:`~tokdyn.studies.object_discovery.tables`  ``results.csv``'s rows and ``summary.md``
- :mod:`~tokdyn.studies.object_discovery.plots`   the figures

Here: :func:`run` (the study's computation, method by method), :func:`draw`, :data:`SPEC` and :func:`main`.
"""

from __future__ import annotations

import jax
import numpy as np

from tokdyn import io
from tokdyn.experiment import runner

# (importing the parts binds each as an attribute: tokdyn.studies.object_discovery.learned, ...)
from tokdyn.studies.object_discovery.config import (  # noqa: F401
    COLUMNS,
    CURVE_COLUMNS,
    FIXED,
    FIXED_METHODS,
    INT32_MAX,
    IODINE,
    IODINE_RATE,
    KMEANS,
    LEARNED,
    LEARNED_COMPILE,
    LEARNED_RATE,
    MAX_FOURIER_BANDS,
    MODELS,
    REFINEMENT,
    REFINEMENT_COST,
    Config,
)
from tokdyn.studies.object_discovery.fixed import (  # noqa: F401
    SPLITS,
    choose_refinement,
    choose_settings,
    method_key,
    prepare_data,
    real_arguments,
    real_scenes,
    refinement_settings,
    run_fixed,
    segment_scores,
    split,
)
from tokdyn.studies.object_discovery.learned import (  # noqa: F401
    checkpoint_stamp,
    fit,
    learned_scores,
    model_configs,
    model_module,
    train_learned,
)
from tokdyn.studies.object_discovery.plots import plot_curves, plot_examples
from tokdyn.studies.object_discovery.tables import goal_met, rows_of, summary  # noqa: F401


def run(session: runner.Session, cfg: Config) -> runner.Result:
    """Every fixed method, then every learned model (each kept as it finishes:
    :doc:`/studies/scenes`): ``results.csv`` and ``learning_curve.csv``."""
    study, quiet = session.study, session.quiet
    val, test = split(cfg, "val"), split(cfg, "test")
    results, labels = {}, {}
    fixed = list(cfg.methods) + ([KMEANS] if cfg.kmeans else [])
    with io.Progress(len(fixed), desc="fixed methods", unit="methods", quiet=quiet) as progress:
        for name in fixed:
            results[name] = run_fixed(cfg, name, val, test, study)
            labels[name] = results[name]["labels"]
            progress.update(1)
    seconds, curves = {}, {}
    if cfg.learned:
        pool = split(cfg, "train")
        k_test = jax.random.fold_in(jax.random.key(cfg.root_seed), 21)
        with io.Progress(
            cfg.train_steps * len(cfg.learned), desc="learned models", unit="steps", quiet=quiet
        ) as progress:
            for name in cfg.learned:
                state, curves[name], seconds[name] = train_learned(cfg, name, pool, val, study, progress)
                scfg = cfg.model_config(name)
                results[name] = study.part(
                    f"{name}__test",
                    lambda: learned_scores(scfg, state, test.images, test.masks, cfg.max_objects + 1, k_test),
                    key={"model": name, "step": int(np.asarray(state.step)[0])},
                )
                results[name]["labels"] = results[name]["labels"][: cfg.n_examples]
                labels[name] = results[name]["labels"]
    session.timings["training_s"] = seconds
    rows = [r for name in results for r in rows_of(cfg, name, results[name])]
    curve_rows = [r for name in curves for r in curves[name]]
    tables = {
        "results.csv": io.to_columns(rows, COLUMNS),
        "learning_curve.csv": io.to_columns(curve_rows, CURVE_COLUMNS),
    }
    knobs = (
        {k: float(results[REFINEMENT][k]) for k in ("prior_log_scale", "prior_strength")}
        if REFINEMENT in results
        else None
    )
    return runner.Result(
        tables, data=dict(rows=rows, seconds=seconds, curves=curves, test=test, labels=labels, knobs=knobs)
    )


def draw(session: runner.Session, cfg: Config, result: runner.Result) -> list:
    """``examples.png`` and, with learned models, ``learning_curve.png``; returns their paths."""
    d = result.data
    return [
        plot_examples(session.path("examples.png"), cfg, d["test"], d["labels"]),
        plot_curves(session.path("learning_curve.png"), d["curves"]) if d["curves"] else None,
    ]


SPEC = runner.Spec(
    name="scenes",
    config=Config,
    run=run,
    figures=draw,
    summary=lambda cfg, r: summary(cfg, r.data["rows"], r.data["seconds"], r.data["curves"], r.data["knobs"]),
    outputs=("results.csv", "learning_curve.csv"),
    figure_files=("examples.png", "learning_curve.png"),
    selection=("methods", "kmeans", "learned", "preset"),  # they only choose which methods run (or label it)
    stamp_extra=model_configs,
    prepare=prepare_data,  # with --data: the scenes counted and read before the directory is stamped
)


main = runner.entry(SPEC, __name__, returns="True when it finished.")
