"""A latent-reasoning directory as the source of the studies that analyse its trained reasoners
(``latent-diagnostics``, ``latent-optimisation``: ``reads`` of :class:`tokdyn.experiment.registry.Entry`):
checked strictly against the configuration they expect (:func:`open_source`, :func:`verify_source`),
the variants it lacks trained there (:func:`ensure_trained`), a variant read back at its tested
state (:func:`load_variant`) or half-way through its training (:func:`load_midway`).

Those studies never import this one: they reach it through its ``SPEC.store``, :data:`STORE`
(:class:`Reasoners`, these functions as a value), found by name in the registry
(:func:`tokdyn.experiment.analysis.source_store`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Sequence

import jax
import numpy as np

from tokdyn import io, train
from tokdyn.experiment import study as study_dir
from tokdyn.models.latent import model as latent_model
from tokdyn.models.latent import training as latent_training
from tokdyn.models.latent import variants as latent_variants
from tokdyn.models.latent.variants import stages
from tokdyn.studies.latent_reasoning.config import SELECTION, STUDY, Config, forward_elements, training
from tokdyn.studies.latent_reasoning.trained import check_devices, devices, open_study, record, splits, train_variants
from tokdyn.train import store


def source_error(source: str, problem, option: str = "source") -> io.OutputConflict:
    """The refusal of a source whose file fails its verification (``problem``: a
    :class:`tokdyn.io.CorruptFile` naming it): a usage error, the command exits 2."""
    return io.OutputConflict(
        f"{option}={source!r}: {problem}. An analysis reads its source as it is: it never sets "
        f"aside, retrains or reads past a damaged source file. Run `tokdyn study latent-reasoning "
        f"--out {source}` with the source's settings (it sets the file aside and recomputes it), "
        f"or choose another {option}"
    )


def verify_source(cfg: Config, source: str, names: Sequence[str], *, option: str = "source") -> None:
    """Check, strictly and without changing anything, the files of variants in a
    latent-reasoning directory that an analysis reads: each variant's files
    (:func:`tokdyn.train.store.verify`: its result, answers and checkpoint and their agreement)
    and, where the source's record (``config.json``) lists a result or curve, its SHA-256 there. A
    variant with no file at all is not checked (it is still to be trained). Unlike the source's
    own study (:func:`tokdyn.train.store.finished`), an analysis never sets a damaged file aside to
    retrain it, nor reads past it.

    Args:
      cfg: the study's :class:`Config`.
      source: the latent-reasoning directory.
      names: the variants to check.
      option: the command-line option that named ``source``, for the messages.

    Raises:
      tokdyn.io.OutputConflict: naming the first file that fails (the command exits 2).
    """
    try:
        listed = (
            study_dir.read_record(source).get("outputs")
            if os.path.exists(os.path.join(source, study_dir.RECORD))
            else None
        )
    except io.CorruptFile as e:
        raise source_error(source, e, option) from None
    for name in dict.fromkeys(names):
        p = store.paths(source, name)
        try:
            for key in ("result", "curve"):
                rel = os.path.relpath(p[key], source).replace(os.sep, "/")
                if isinstance(listed, dict) and rel in listed and os.path.exists(p[key]):
                    study_dir.verify_output(source, rel)
            store.verify(source, name)
        except io.CorruptFile as e:
            raise source_error(source, e, option) from None


def open_source(
    cfg: Config,
    source: str,
    need: Sequence[str] = (),
    *,
    train: bool = True,
    quiet: bool = False,
    option: str = "source",
) -> tuple[Config, dict]:
    """Open the latent-reasoning directory that an analysis reads, checked before any work. Only
    ``devices``, how the source split its seeds, is taken from the source's stamp.

    Args:
      cfg: the study's :class:`Config`.
      source: the latent-reasoning directory.
      need: the variants the analysis reads (verified by :func:`verify_source`).
      train: a directory that holds no such study is stamped for ``cfg`` (its variants are then
        trained by :func:`ensure_trained`); False refuses it, and a source lacking a variant of
        ``need``.
      quiet: no messages.
      option: the command-line option that named ``source``, for the messages.

    Returns:
      ``(cfg, stamp)``: ``cfg`` with the source's ``devices``, and the source's stamp.

    Raises:
      tokdyn.io.OutputConflict: a directory stamped with another configuration than ``cfg``
        (naming the fields that differ), or files of ``need`` that fail their verification.
      tokdyn.experiment.study.Refused: without ``train``, no study there or a variant of ``need``
        missing.
    """
    old = study_dir.read_stamp(source) if os.path.isdir(source) else None
    if old is None:
        if not train:
            raise study_dir.Refused(
                f"{option}={source!r} holds no latent-reasoning study (no {study_dir.STAMP}): train its variants "
                f"with `tokdyn study latent-reasoning --out {source}`, or drop --no-train"
            )
        opened = open_study(cfg, source, quiet=quiet)
        opened.release()  # stamped for the training that follows (ensure_trained opens it again)
        return cfg, opened.stamp
    if old.get("study") == STUDY and isinstance(old.get("config"), dict):
        kept = old["config"].get("devices")
        if isinstance(kept, int) and not isinstance(kept, bool) and kept >= 0:
            cfg = dataclasses.replace(cfg, devices=kept)
    stamp = study_dir.source_stamp(source, STUDY, expected=cfg, selection=SELECTION, option=option)
    verify_source(cfg, source, need, option=option)  # before anything reads, sets aside or trains there
    if not train:
        missing = [v for v in dict.fromkeys(need) if not store.finished(source, v)]
        if missing:
            raise study_dir.Refused(
                f"{option}={source!r} lacks the trained variants {missing}: train them with `tokdyn "
                f"study latent-reasoning --variants {','.join(missing)} --out {source}` (with the "
                "source's settings), or drop --no-train"
            )
    return cfg, stamp


def ensure_trained(cfg: Config, source: str, need: Sequence[str], *, train: bool = True, quiet: bool = False) -> Config:
    """Make sure a latent-reasoning directory holds finished variants, training the missing ones
    there (:func:`tokdyn.train.store.train_missing`; the variants it already has are kept). Used by
    the studies that analyse trained reasoners.

    Args:
      cfg: the study's :class:`Config`.
      source: the latent-reasoning directory (checked against ``cfg`` by :func:`open_source`).
      need: the variants that must be finished.
      train: train the missing variants; False refuses a source that lacks one.
      quiet: no messages or progress bar.

    Returns:
      The source's configuration (``cfg`` with the source's ``devices``).

    Raises:
      RuntimeError: training did not finish (``cfg.max_minutes`` ran out).
    """
    cfg, _ = open_source(cfg, source, need, train=train, quiet=quiet)

    def fit(missing: list) -> bool:
        check_devices(cfg)
        study = open_study(cfg, source, quiet=quiet)
        try:
            deadline = None if cfg.max_minutes is None else time.time() + 60 * cfg.max_minutes
            if not train_variants(cfg, source, missing, quiet=quiet, deadline=deadline):
                return False
            record(study, cfg)
            return True
        finally:
            study.release()

    store.train_missing(source, need, fit)
    return cfg


def load_variant(cfg: Config, source: str, name: str):
    """(model, params stacked over seeds, training config) of the trained variant ``name`` in the
    study directory ``source``: the state that answered its test (:attr:`Config.tested`, by
    default each seed's best held-out accuracy; :func:`tokdyn.train.store.load`). A checkpoint
    without its verification header, or that fails it, is refused (:class:`tokdyn.io.OutputConflict`
    naming it; left where it is: an analysis never retrains its source's variants from a damaged
    file)."""
    tc = training(cfg, name)
    try:
        state = store.load(
            source,
            name,
            latent_training.init_states(tc, name, cfg.hparams),
            latent_training.stamp(tc, name),
            cfg.tested,
        )
    except io.CorruptFile as e:
        raise source_error(source, e) from None
    return latent_model.Model(latent_variants.model_config(tc, name)), state.params, tc


def midway(cfg: Config, source: str, name: str) -> tuple[int, int]:
    """(step, curriculum stage) half-way through the training of ``name`` that ``source`` records
    (rounded down to ``steps_per_call``)."""
    tc = training(cfg, name)
    final = int(store.read_result(store.paths(source, name)["result"])["steps"])
    step = max(final // 2 // tc.train.steps_per_call, 1) * tc.train.steps_per_call
    ends = np.cumsum([n for *_, n in stages(tc, name)])
    return step, int(np.searchsorted(ends, step, side="left"))


def load_midway(cfg: Config, source: str, name: str, *, quiet: bool = True, pool=None):
    """Variant ``name`` half-way through the training its final checkpoint records (rounded down
    to ``steps_per_call``, :func:`midway`): read from ``checkpoints/V@STEP.npz`` when there,
    otherwise trained there from scratch to that step. The training is deterministic on the same
    devices, so this is the state the full run passed through; a curriculum variant gets the model
    of the stage it was then in. A damaged file is set aside (a warning naming it) and trained again.

    Args:
      cfg: the study's :class:`Config`.
      source: the latent-reasoning directory holding the finished variant.
      name: the variant's name.
      quiet: no progress bar while training.
      pool: the training set (``latent_training.data(...).train``); drawn again when not given.

    Returns:
      ``(model, params, step, stage)``: the stage's :class:`tokdyn.models.latent.model.Model`, its
      parameters as NumPy arrays (a leading axis over seeds), the step and the curriculum stage.
    """
    tc = training(cfg, name)
    step, stage = midway(cfg, source, name)
    path = os.path.join(source, "checkpoints", f"{name}@{step}.npz")
    partial = os.path.join(source, "checkpoints", f"{name}@{step}.partial.npz")
    state = None
    if os.path.exists(path):
        try:
            state = latent_training.load(path, tc, name, cfg.hparams)
        except io.CorruptFile as e:
            io.set_aside(path, e.reason, root=source)
    if state is None:
        if store.read_checkpoint(partial) is not None:
            done = int(np.asarray(latent_training.load(partial, tc, name, cfg.hparams).step)[0])
        else:
            done = 0
        pool = latent_training.data(tc).train if pool is None else pool
        state = train.train_many(
            latent_training.trainer(tc, name),
            pool,
            *latent_training.models(tc, cfg.hparams),
            checkpointing=train.Checkpointing(partial, latent_training.stamp(tc, name)),
            execution=train.Execution(devices=devices(cfg)),
            max_calls=(step - done) // tc.train.steps_per_call,
            quiet=quiet,
        ).state
        os.replace(partial, path)
    return (
        latent_model.Model(latent_variants.model_config(tc, name, stage)),
        jax.tree_util.tree_map(np.asarray, state.params),
        step,
        stage,
    )


def variant_result(source: str, name: str) -> dict:
    """The result of the finished variant ``name`` in ``source`` (its ``results/NAME.json``,
    :func:`tokdyn.train.store.read_result`: its steps, accuracy, convergence, ...)."""
    return store.read_result(store.paths(source, name)["result"])


@dataclasses.dataclass(frozen=True)
class Reasoners:
    """The trained reasoners of a latent-reasoning directory as the studies that read it see them:
    the study's ``SPEC.store`` (:data:`STORE`), reached by name through the registry
    (:func:`tokdyn.experiment.analysis.source_store`), so that no study imports another. Each
    attribute is a function of this module, or of :mod:`tokdyn.studies.latent_reasoning`'s parts.

    Attributes:
      open_source: :func:`open_source`.
      ensure_trained: :func:`ensure_trained`.
      verify_source: :func:`verify_source`.
      load_variant: :func:`load_variant`.
      midway: :func:`midway`.
      load_midway: :func:`load_midway`.
      splits: :func:`tokdyn.studies.latent_reasoning.trained.splits`.
      training: :func:`tokdyn.studies.latent_reasoning.config.training`.
      forward_elements: :func:`tokdyn.studies.latent_reasoning.config.forward_elements`.
      result: :func:`variant_result`.
    """

    open_source: Callable = open_source
    ensure_trained: Callable = ensure_trained
    verify_source: Callable = verify_source
    load_variant: Callable = load_variant
    midway: Callable = midway
    load_midway: Callable = load_midway
    splits: Callable = splits
    training: Callable = training
    forward_elements: Callable = forward_elements
    result: Callable = variant_result


STORE = Reasoners()  # the latent-reasoning study's SPEC.store
