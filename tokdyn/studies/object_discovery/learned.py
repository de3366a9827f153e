"""The scenes study's learned models (Slot Attention and, opt-in, IODINE): trained over seeds
and checkpointed (:func:`fit`, :func:`train_learned`) and scored (:func:`learned_scores`)."""

from __future__ import annotations

import time

import jax
import numpy as np

from tokdyn import io, train
from tokdyn.experiment.study import Study, config_dict, digest
from tokdyn.models import iodine, slots
from tokdyn.studies.object_discovery.config import IODINE, LEARNED, Config
from tokdyn.studies.object_discovery.fixed import segment_scores


def model_module(scfg):
    """The module of a learned model's configuration: :mod:`tokdyn.models.iodine` for an
    :class:`tokdyn.models.iodine.Config`, else :mod:`tokdyn.models.slots` (both have ``trainer``,
    ``models``, ``Hparams``, ``stamp``, ``default_strategy``, ``segment``, ``collapse``, ``params_of``)."""
    return iodine if isinstance(scfg, iodine.Config) else slots


def learned_scores(scfg, state, images, masks, n_true: int, key) -> dict:
    """Per model and scene: FG-ARI, matched IoU, collapsed, duplicates, unused; labels. ``scfg``: a
    :class:`tokdyn.models.slots.Config` or :class:`tokdyn.models.iodine.Config` (duplicates of the
    final slots, or of IODINE's final posterior means)."""
    mod = model_module(scfg)
    out = {k: [] for k in ("fg_ari", "miou", "collapsed", "duplicates", "unused")}
    labels0 = None
    for i in range(scfg.seeds):
        labels, final = mod.segment(key, mod.params_of(state, i), scfg, images)
        s = segment_scores(masks, labels.reshape(labels.shape[0], -1), scfg.slots, n_true)
        dup, unused = jax.vmap(mod.collapse)(final, labels)
        for k, v in dict(s, duplicates=dup, unused=unused).items():
            if k in out:
                out[k].append(np.asarray(v))
        labels0 = np.asarray(labels) if labels0 is None else labels0
    return dict({k: np.stack(v) for k, v in out.items()}, labels=labels0)


def checkpoint_stamp(study: Study, cfg: Config, name: str) -> str:
    """The stamp of ``name``'s checkpoint: the study's stamp (the learning curve's validation
    scores depend on the whole configuration) and the models' configuration."""
    if name == IODINE:
        return f"{study.key}:{digest({'model': name, 'iodine': iodine.stamp(cfg.iodine_config())})}"
    return f"{study.key}:{digest({'model': name, 'slots': slots.stamp(cfg.slot_config(name))})}"


def model_configs(session, cfg: Config) -> dict:
    """What the study's stamp holds beside its configuration (the ``stamp_extra`` of :data:`~tokdyn.studies.object_discovery.SPEC`):
    the configuration of every learned model it can train (:meth:`Config.model_config`; ``learned``
    only chooses among them). The models' checkpoints are keyed on them, so a directory whose
    checkpoints were made for other model configurations (another shape of a model's ``Config``)
    is refused before any work, naming what differs, as one of another study configuration is."""
    return {"models": {name: config_dict(cfg.model_config(name)) for name in (*LEARNED, IODINE)}}


def fit(cfg: Config, name: str, images, study: Study, *, val=None, progress=None, **kw) -> train.Result:
    """Train (or resume) the ``seeds`` models of ``name`` with their checkpoint ``parts/NAME.npz`` of ``study``.

    :func:`tokdyn.train.train_many` of :func:`tokdyn.models.slots.trainer` (of
    :func:`tokdyn.models.iodine.trainer` for ``iodine``), every model at ``learning_rate``. After
    every call of ``eval_every`` steps the curves record, committed with the state in the
    checkpoint, ``val_fg_ari`` (with ``val``) and ``train_seconds`` (wall-clock seconds since the
    last record). A corrupt checkpoint is set aside with a warning and training starts again.

    Args:
      cfg: the study's :class:`Config`.
      name: a learned model of :data:`LEARNED`, or :data:`IODINE`.
      images: (n, size, size, 3) float32 training images in [0, 1].
      study: the :class:`~tokdyn.experiment.study.Study` that keeps the checkpoint.
      val: optional validation :class:`~tokdyn.data.scenes.Scenes`: each model's mean FG-ARI on
        the first ``n_curve`` of them is recorded.
      progress: optional :class:`tokdyn.io.Progress` counting steps.
      **kw: more keyword arguments of :func:`~tokdyn.train.train_many` (e.g. ``max_calls``,
        ``on_log``).

    Returns:
      The :class:`tokdyn.train.Result`.
    """
    scfg = cfg.model_config(name)
    mod = model_module(scfg)
    ckpt = study.part_path(name)
    n_true = cfg.max_objects + 1
    k_eval = jax.random.fold_in(jax.random.key(cfg.root_seed), 20)
    clock = [time.time()]

    def evaluate(step, state):
        out = {"train_seconds": np.full(cfg.seeds, time.time() - clock[0])}
        if val is not None:
            s = learned_scores(scfg, state, val.images[: cfg.n_curve], val.masks[: cfg.n_curve], n_true, k_eval)
            out["val_fg_ari"] = np.mean(s["fg_ari"], axis=1)
        clock[0] = time.time()
        return out

    def run():
        return train.train_many(
            mod.trainer(scfg),
            images,
            *mod.models(scfg, mod.Hparams(learning_rate=cfg.learning_rate)),
            checkpointing=train.Checkpointing(ckpt, checkpoint_stamp(study, cfg, name)),
            evaluation=train.Evaluation(evaluate),
            execution=train.Execution(mod.default_strategy(jax.default_backend()), vectorised_init=False),
            progress=progress,
            **kw,
        )

    return io.recomputing(ckpt, run, before_retry=lambda: clock.__setitem__(0, time.time()))


def train_learned(cfg: Config, name: str, train_split, val, study: Study, progress=None) -> tuple:
    """Train the ``seeds`` models of ``name``, resuming from their checkpoint in ``study`` (:func:`fit`).

    The checkpoint holds the state and the whole learning curve together, so a run killed at any
    moment loses no curve point.

    Args:
      cfg: the study's :class:`Config`.
      name: a learned model of :data:`LEARNED`, or :data:`IODINE`.
      train_split: the training :class:`~tokdyn.data.scenes.Scenes`.
      val: the validation :class:`~tokdyn.data.scenes.Scenes` (the curve's FG-ARI).
      study: the :class:`~tokdyn.experiment.study.Study` that keeps the checkpoint.
      progress: optional :class:`tokdyn.io.Progress` counting steps; it ends at the whole budget,
        steps done before a resume included.

    Returns:
      ``(state, curve rows, training seconds)``: the stacked state, per step and seed the mean
      training ``loss`` over the interval and ``val_fg_ari``, and the wall-clock seconds of
      training.
    """
    seen = []
    res = fit(
        cfg, name, train_split.images, study, val=val, progress=progress, on_log=lambda step, logs: seen.append(step)
    )
    if progress is not None and res.stopped_at > len(seen) * cfg.eval_every:  # the steps done before a resume
        progress.update(res.stopped_at - len(seen) * cfg.eval_every)
    rows = []
    for c, step in enumerate(res.steps):
        for i in range(cfg.seeds):
            rows.append(
                dict(
                    method=name,
                    seed=i,
                    step=int(step),
                    loss=float(res.curves["loss"][i, c]),
                    val_fg_ari=float(res.curves["val_fg_ari"][i, c]),
                )
            )
    seconds = float(np.nansum(res.curves["train_seconds"][0]))
    return res.state, rows, seconds
