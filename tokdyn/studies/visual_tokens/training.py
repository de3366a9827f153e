"""One cell of the visual-token study: its models trained over seeds and evaluated
(:func:`train_and_evaluate`), and their rows of ``results.csv`` (:func:`model_rows`)."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import train
from tokdyn.models import vtae
from tokdyn.models.vtae import diagnostics


def train_and_evaluate(cfg: vtae.Config, hp: vtae.Hparams, seeds: int, key, weights, embeddings=None):
    """``seeds`` models of ``cfg`` trained in one :func:`tokdyn.train.train_many` on tokens drawn with
    ``weights`` (``embeddings``: the grounded encoder's inputs), then each evaluated
    (:func:`tokdyn.models.vtae.diagnostics.evaluate`). Returns the training's result and the
    evaluations, ``{diagnostic: (seeds,) array}``."""
    keys, hps = train.grid(jax.random.split(key, seeds), hp.validate())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the capacity warning is part of the design here
        res = train.train_many(vtae.trainer(cfg), vtae.inputs(cfg, weights, embeddings), keys, hps)
    w = jnp.asarray(weights, jnp.float32)

    def ev(args):
        params, k = args
        return diagnostics.evaluate(k, params, cfg, weights=w, embeddings=embeddings)

    d = jax.lax.map(jax.jit(ev), (res.state.params, jax.random.split(jax.random.fold_in(key, 1), seeds)))
    return res, {k: np.asarray(v) for k, v in d.items()}


def model_rows(part, variant, cfg, res, d, extra=None):
    """The rows of ``results.csv`` of one cell, one per seed: the part and variant, the model's
    settings (``cfg``), its evaluations ``d`` and training curve (``res``: :func:`train_and_evaluate`'s),
    and ``extra`` columns (``{column: per-seed values}``); each value a plain Python value."""
    lnv = np.log(cfg.vocab_size)
    loss = np.asarray(res.curves["ce"])  # (S, n_logs) training cross-entropy
    tail = min(max(1, loss.shape[1] // 5), loss.shape[1] - 1)  # logging intervals in the last 20% of training
    rows = []
    for s in range(loss.shape[0]):
        r = dict(
            part=part,
            variant=variant,
            vocab_size=cfg.vocab_size,
            grid=cfg.grid,
            colours=cfg.colours,
            mode=cfg.mode,
            steps=cfg.train.steps,
            seed=s,
            accuracy=d["accuracy"][s],
            accuracy_occurrence=d["accuracy_occurrence"][s],
            dominant_freq=d["dominant_freq"][s],
            collapsed=bool(d["collapsed"][s]),
            entropy=d["entropy"][s],
            uniqueness=d["uniqueness"][s],
            min_hamming=int(d["min_hamming"][s]),
            sensitivity_kl=d["sensitivity_kl"][s],
            loss_norm=d["loss_norm"][s],
            train_loss_norm_first=loss[s, 0] / lnv,
            train_loss_norm_last=loss[s, -1] / lnv,
            train_loss_drop_tail=(loss[s, -1 - tail] - loss[s, -1]) / lnv if tail > 0 else np.nan,
            nan_step=int(np.asarray(res.state.nan_step)[s]),
            knn_preservation=np.nan,
            trustworthiness=np.nan,
            composition_grid=np.nan,
            composition_embedding=np.nan,
        )
        for k, v in (extra or {}).items():
            r[k] = v[s]
        rows.append({k: _plain(v) for k, v in r.items()})
    return rows


def _plain(v):
    """A row's value as a plain Python value; a float32 as its shortest decimal (as the CSV showed it)."""
    if isinstance(v, (np.generic, np.ndarray)) and np.ndim(v) == 0:
        v = np.asarray(v)[()]
        return float(str(v)) if v.dtype.itemsize < 8 and v.dtype.kind == "f" else v.item()
    return v
