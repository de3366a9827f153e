"""The trained variants of a latent-reasoning directory: each trained (or resumed) to convergence and
tested (:func:`run_variant`, :func:`train_variants`), its convergence judged from its curve
(:func:`convergence`), the directory opened and recorded (:func:`open_study`, :func:`record`). The
files of a variant and their checks are :mod:`tokdyn.train.store`'s."""

from __future__ import annotations

import os
from typing import Optional, Sequence

import jax

from tokdyn import io, train
from tokdyn.experiment import study as study_dir
from tokdyn.experiment import variants
from tokdyn.data import grid_tasks as tasks
from tokdyn.models.latent import evaluation
from tokdyn.models.latent import training as latent_training
from tokdyn.models.latent.variants import VARIANTS, stages
from tokdyn.studies.latent_reasoning.config import SELECTION, STUDY, Config, training
from tokdyn.train import store


def devices(cfg: Config):
    """The local devices the seeds are split over (None: all of them, :class:`tokdyn.train.Execution`'s
    default); :class:`~tokdyn.experiment.study.Refused` when ``cfg.devices`` asks for more than
    this machine has."""
    local = jax.local_devices()
    if cfg.devices > len(local):
        raise study_dir.Refused(f"devices must be at most the {len(local)} local devices, got {cfg.devices}")
    return local[: cfg.devices] if cfg.devices else None


def check_devices(cfg: Config) -> None:
    """:class:`~tokdyn.experiment.study.Refused` when ``cfg.devices`` asks for more devices than
    this machine has."""
    devices(cfg)


def finished(cfg: Optional[Config], out: str, name: str) -> bool:
    """Whether variant ``name`` is finished in ``out`` (:func:`tokdyn.train.store.finished`: its
    result, answers, final checkpoint and curve all whole and in agreement; what cannot be read
    back is set aside and :func:`run_variant` recomputes it). ``cfg`` is not read: kept for the
    callers that pass it."""
    return store.finished(out, name)


def convergence(cfg: Config, name: str, curve: dict) -> dict:
    """Per seed, from the recorded curve: the step and value of the best held-out overall accuracy
    (``best_step``, ``best``) and whether the stop rule (:meth:`Config.stop_rule`, a
    :class:`tokdyn.train.Patience`) says it has converged: no improvement by more than
    ``min_delta`` for ``patience`` of the budget (seen at two evaluations at least), at least
    ``min_fraction`` of the budget done, the training loss flat while the accuracy
    holds (:func:`tokdyn.experiment.variants.converged`). For a curriculum variant the patience window must lie
    in its last stage."""
    tc = training(cfg, name)
    last_stage = sum(n for *_, n in stages(tc, name)[:-1])
    return variants.converged(cfg.stop_rule(), tc.train.steps, tc.seeds, curve, after=last_stage)


def curve_logger(cfg: Config, name: str, path: str, rows: dict):
    """The ``stop(step, state, curves)`` of :class:`tokdyn.train.Evaluation` that appends each
    call's logs and held-out scores to the curve ``rows`` (dropping rows a resume redoes), writes
    them to ``path`` and stops once every seed has converged (:func:`convergence`)."""
    tc = training(cfg, name)
    return variants.curve_logger(path, rows, tc.seeds, tc.train.steps_per_call, lambda r: convergence(cfg, name, r))


def write_tested(cfg: Config, name: str, out: str, res: train.Result, rows: dict, test) -> None:
    """Test the finished training ``res`` of variant ``name`` at its tested state
    (:attr:`Config.tested`) on ``test`` and write its curve ``rows``, answers and result under
    ``out`` (the result last: it commits the others, :mod:`tokdyn.train.store`)."""
    tc = training(cfg, name)
    state, _ = variants.tested(res, cfg.tested, tc.seeds)
    answers, captions = evaluation.answers(tc, name, state.params, test)
    acc = evaluation.accuracy(tc, name, answers, captions, test)
    conv = convergence(cfg, name, rows)
    variants.write_tested(out, name, res, rows, conv, answers, acc, which=cfg.tested, budget=tc.train.steps)


def run_variant(cfg: Config, name: str, out: str, data: tasks.Splits, *, deadline=None, progress=None) -> bool:
    """Train (or resume) variant ``name`` until it has converged or spent its budget, then test
    it. A host function: writes the variant's curve, answers, checkpoint and result under ``out``
    (damaged files are set aside and recomputed, see :func:`tokdyn.train.store.finished`).

    Args:
      cfg: the study's :class:`Config`.
      name: the variant's name.
      out: the study directory.
      data: the training, validation and test sets (:func:`splits`).
      deadline: optional ``time.time()`` at which training stops (finished work is kept).
      progress: optional :class:`tokdyn.io.Progress` to advance by the steps trained.

    Returns:
      True when the variant's results are on disk; False when training stopped before it finished.
    """
    p = store.paths(out, name)
    if store.finished(out, name):
        return True
    tc = training(cfg, name)
    rows = store.resume_rows(p, tc.seeds, tc.train.steps_per_call)

    def evaluate(step, state):
        # the weights as host arrays, as the tested state and the analyses' loaded weights are: the
        # validation and the test answers are one compiled program (the training's weights carry the
        # runs' sharding, another input type)
        params = jax.device_get(state.params)
        return {f"val_{k}": v for k, v in evaluation.evaluate(tc, name, params, data.val).items()}

    res = train.train_many(
        latent_training.trainer(tc, name),
        data.train,
        *latent_training.models(tc, cfg.hparams),
        checkpointing=train.Checkpointing(p["checkpoint"], latent_training.stamp(tc, name)),
        evaluation=train.Evaluation(evaluate, keep_best="val_all", stop=curve_logger(cfg, name, p["curve"], rows)),
        execution=train.Execution(devices=devices(cfg)),
        deadline=deadline,
        progress=progress,
    )
    if not res.finished:
        return False
    write_tested(cfg, name, out, res, rows, data.test)
    return True


def open_study(cfg: Config, out: str, *, fresh: bool = False, quiet: bool = False) -> study_dir.Study:
    """The latent-reasoning study directory ``out`` for ``cfg``, checked and stamped
    (:meth:`tokdyn.experiment.study.Study.open`).

    Args:
      cfg: the study's :class:`Config`.
      out: the study directory.
      fresh: remove what another configuration wrote in ``out`` (only files tokdyn wrote) and
        start afresh, instead of refusing the directory.
      quiet: no messages.

    Returns:
      The opened :class:`tokdyn.experiment.study.Study`.

    Raises:
      tokdyn.io.OutputConflict: a directory of another configuration without ``fresh`` (naming the
        fields that differ).
    """
    return study_dir.Study.open(out, STUDY, cfg, fresh=fresh, selection=SELECTION, estimate=cfg.estimate(), quiet=quiet)


def splits(cfg: Config) -> tasks.Splits:
    """The training pool, validation and test sets of the study (:func:`tokdyn.models.latent.training.data`);
    :class:`~tokdyn.experiment.study.Refused` when the task has fewer distinct instances than the sets ask for."""
    try:
        return latent_training.data(cfg.training)
    except ValueError as e:
        raise study_dir.Refused(str(e)) from None


def train_variants(
    cfg: Config, out: str, names: Sequence[str], *, quiet: bool, deadline=None, data: Optional[tasks.Splits] = None
) -> bool:
    """Train (or resume) variants, in order, each until it has converged or spent its budget
    (:func:`run_variant`), with one progress bar over their steps. A host function.

    Args:
      cfg: the study's :class:`Config`.
      out: the study directory, opened for ``cfg`` with :func:`open_study`.
      names: the variants' names.
      quiet: no progress bar.
      deadline: optional ``time.time()`` at which training stops (finished work is kept).
      data: the training, validation and test sets (:func:`splits`; drawn when not given).

    Returns:
      True when every variant is finished (it stops at the first that is not).
    """
    names = list(names)
    data = splits(cfg) if data is None else data
    done = True
    budgets = {name: training(cfg, name).train.steps for name in names}
    recorded = sum(store.steps_recorded(out, name, budgets[name]) for name in names)
    with io.Progress(
        sum(budgets.values()), desc="latent-reasoning", unit="steps", done=recorded, quiet=quiet
    ) as progress:
        for name in names:
            progress.note(f"variant {name}")
            done = run_variant(cfg, name, out, data, deadline=deadline, progress=progress) and done
            if not done:
                break
    return done


def record_fields(out: str, cfg: Config) -> dict:
    """What ``config.json`` of the study directory ``out`` records beside the stamp: the variants
    finished there (whoever trained them) and this run's selection."""
    names = [v for v in VARIANTS if os.path.exists(store.paths(out, v)["result"])]
    return {"variants": names, "selection": {k: getattr(cfg, k) for k in SELECTION}}


def record(study: study_dir.Study, cfg: Config, **extra) -> str:
    """``config.json`` of the study directory: the stamp, :func:`record_fields` and ``extra``."""
    return study.finish(**record_fields(study.out, cfg), **extra)
