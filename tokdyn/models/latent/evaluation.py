"""Evaluation of trained latent reasoners: greedy prediction, per-family accuracy, chance level.

- :func:`predict`: greedy answers (and, for caption variants, greedily generated captions) of one
  model.
- :func:`evaluate`: accuracy per task family (and caption exact match) of every model of a
  :func:`tokdyn.train.train_many` run; :func:`scores`: the same of one model, traced.
- :func:`majority_baseline`: the accuracy of always answering a family's most frequent training
  answer.
- :func:`plateau_change`: how much a learning curve still moves over its last stretch (the
  convergence criterion of the study).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks
from tokdyn.models.latent import model as latent_model
from tokdyn.data import grid_tasks as tasks
from tokdyn.models.latent import variants
from tokdyn.models.latent.config import Config


def predict(model: latent_model.Model, params, batch, *, dropped: int = 0):
    """Greedy answers and captions of one model: caption token i is the argmax given the tokens before
    it, then the answer the argmax given the whole caption.

    Args:
      model: a :class:`~tokdyn.models.latent.model.Model`.
      params: its weights.
      batch: B instances (:class:`~tokdyn.data.grid_tasks.Instance`).
      dropped: the leading caption tokens a curriculum stage has replaced by latents
        (:func:`tokdyn.models.latent.variants.dropped_captions`), static: they are taken from ``batch``
        as the model was trained with them (``<pad>``), not generated.

    Returns:
      ``(answers, captions)``: (B,) greedy answers and (B, K) generated captions (K = 0 without a
      caption).
    """
    lay, k = model.layout, model.cfg.caption_len
    if k:
        keep = jnp.arange(k) < dropped
        cap = jnp.where(keep[None], batch.caption, 0).astype(jnp.int32)  # no later caption token is seen
        for i in range(dropped, k):
            logits = model.apply(params, dataclasses.replace(batch, caption=cap)).logits
            cap = cap.at[:, i].set(logits[:, lay.caption.start - 1 + i].argmax(-1))
        batch = dataclasses.replace(batch, caption=cap)
    else:
        cap = jnp.zeros((batch.question.shape[0], 0), jnp.int32)
    return model.apply(params, batch).logits[:, lay.answer].argmax(-1), cap


def _predict_many(cfg: Config, name: str):
    return _predict_fn(variants.model_config(cfg, name, -1), variants.dropped_captions(cfg, name, -1))


@functools.lru_cache(maxsize=32)  # keyed by the model: variants of one model (alignment losses) share it
def _predict_fn(model_cfg: latent_model.Config, dropped: int):
    model = latent_model.Model(model_cfg)
    return jax.jit(jax.vmap(lambda p, b: predict(model, p, b, dropped=dropped), in_axes=(0, None)))


def answers(cfg: Config, name: str, params, batch, *, chunk: int = 250):
    """The greedy answers and generated captions of the M models of one variant on N instances.

    Args:
      cfg: the study's :class:`~tokdyn.models.latent.config.Config`.
      name: the variant's name (:data:`tokdyn.models.latent.variants.VARIANTS`).
      params: the M models' weights, stacked (as :func:`tokdyn.train.train_many` returns them).
      batch: N instances.
      chunk: instances per compiled call; the last chunk is padded, so there is one compilation.

    Returns:
      ``(answers, captions)``: (M, N) and (M, N, K) NumPy arrays.
    """
    cfg.validate()
    variants.variant(name)
    _checks.positive_int("chunk", chunk)
    dropped = variants.dropped_captions(cfg, name, -1)
    pad = cfg.task.vocab.pad
    f = _predict_many(cfg, name)
    preds, caps = [], []
    n = batch.answer.shape[0]
    size = min(chunk, n)
    for a in range(0, n, size):
        idx = np.minimum(np.arange(a, a + size), n - 1)  # the last chunk padded with its last instance: one shape
        b = variants.stage_batch(jax.tree.map(lambda x: x[idx], batch), dropped, pad)
        pr, cp = f(params, b)
        preds.append(np.asarray(pr)[:, : n - a])
        caps.append(np.asarray(cp)[:, : n - a])
    return np.concatenate(preds, 1), np.concatenate(caps, 1)


def generates_caption(cfg: Config, name: str) -> bool:
    """Whether the trained model of variant ``name`` generates its whole caption before answering
    (a caption, none of its tokens replaced by latents): its accuracy then has ``caption_exact``."""
    return bool(variants.model_config(cfg, name, -1).caption_len and variants.dropped_captions(cfg, name, -1) == 0)


def accuracy(cfg: Config, name: str, answers_, captions, batch) -> dict:
    """Accuracy per task family from :func:`answers`' output.

    Args:
      cfg: the study's :class:`~tokdyn.models.latent.config.Config`.
      name: the variant's name.
      answers_: (M, N) greedy answers.
      captions: (M, N, K) generated captions.
      batch: the N instances.

    Returns:
      ``{family: (M,), "all": (M,)}`` over the families present in ``batch``, plus ``"caption_exact"``
      (M,), the share of whole captions right, for variants that generate the full caption.
    """
    correct = answers_ == np.asarray(batch.answer)[None]
    fam = np.asarray(batch.family)
    out = {fname: correct[:, fam == i].mean(1) for i, fname in enumerate(tasks.FAMILIES) if np.any(fam == i)}
    out["all"] = correct.mean(1)
    if generates_caption(cfg, name):
        out["caption_exact"] = (captions == np.asarray(batch.caption)[None]).all(-1).mean(1)
    return out


def evaluate(cfg: Config, name: str, params, test, *, chunk: int = 250) -> dict:
    """Accuracy per family of the M models of one variant on ``test``: :func:`answers`, then
    :func:`accuracy`.

    Args:
      cfg: the study's :class:`~tokdyn.models.latent.config.Config`.
      name: the variant's name.
      params: the M models' weights, stacked.
      test: the N test instances.
      chunk: instances per compiled call.

    Returns:
      ``{family: (M,), "all": (M,)}`` (and ``"caption_exact"``, see :func:`accuracy`).
    """
    pred, cap = answers(cfg, name, params, test, chunk=chunk)
    return accuracy(cfg, name, pred, cap, test)


def scores(cfg: Config, name: str, params, batch) -> dict:
    """Accuracy per task family of one model of variant ``name`` on ``batch``: :func:`evaluate`'s
    figures, traced (jit it, vmap it over models, call it inside a training program), the answers
    those of :func:`predict` on the whole batch at once.

    Args:
      cfg: the study's :class:`~tokdyn.models.latent.config.Config` (static).
      name: the variant's name (static).
      params: the model's weights (one model, unstacked).
      batch: N instances (:class:`~tokdyn.data.grid_tasks.Instance`).

    Returns:
      ``{family: (), "all": ()}`` over the families of ``cfg.task.families`` (NaN for a family
      ``batch`` does not hold), plus ``"caption_exact"`` for variants that generate the full caption
      (:func:`accuracy`).
    """
    model = latent_model.Model(variants.model_config(cfg, name, -1))
    dropped = variants.dropped_captions(cfg, name, -1)
    pred, cap = predict(model, params, variants.stage_batch(batch, dropped, cfg.task.vocab.pad), dropped=dropped)
    correct = pred == batch.answer
    out = {}
    for fname in cfg.task.families:
        sel = batch.family == tasks.FAMILIES.index(fname)
        out[fname] = jnp.sum(correct & sel) / jnp.sum(sel)
    out["all"] = jnp.mean(correct)
    if generates_caption(cfg, name):
        out["caption_exact"] = jnp.mean(jnp.all(cap == batch.caption, -1))
    return out


def plateau_change(steps, values, window: float = 0.2) -> float:
    """How much ``values`` (a held-out accuracy at ``steps``) still moves over the last ``window``
    of the steps: the least-squares slope over the points with step >= (1 - window) * last step,
    times the window's length. NaN with fewer than 3 points in the window. A curve has flattened
    when its absolute value is below a tolerance (0.01 in the study)."""
    steps, values = np.asarray(steps, np.float64), np.asarray(values, np.float64)
    if steps.size == 0:
        return float("nan")
    start = (1.0 - window) * steps[-1]
    sel = steps >= start
    if sel.sum() < 3:
        return float("nan")
    slope = np.polyfit(steps[sel], values[sel], 1)[0]
    return float(slope * (steps[-1] - start))


def majority_baseline(train, test) -> dict:
    """Accuracy per family of answering each family's most frequent training answer (the chance
    level)."""
    out = {}
    for i, fname in enumerate(tasks.FAMILIES):
        tr = np.asarray(train.answer)[np.asarray(train.family) == i]
        te = np.asarray(test.answer)[np.asarray(test.family) == i]
        if len(tr) and len(te):
            out[fname] = float((te == np.bincount(tr).argmax()).mean())
    return out
