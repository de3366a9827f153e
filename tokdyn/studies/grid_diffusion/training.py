"""The grid-diffusion study's stages: the corpus (:func:`load_corpus`), the autoencoder
(:func:`autoencoder`) and every model trained and sampled (:func:`train_and_sample`), each kept as
a part of the study directory (:func:`kept_tree`) and read back by a rerun."""

from __future__ import annotations

import dataclasses
import os
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import io, train
from tokdyn.experiment.study import Study, digest
from tokdyn.models import sequence
from tokdyn.models import vtae
from tokdyn.models.vtae import corpus
from tokdyn.studies.grid_diffusion.config import AE_LEARNING_RATE, Config


def load_corpus(cfg: Config):
    """``(corpus, sentences (N, L), held_out (n_samples, L))`` of the grammar (the held-out
    sentences from another stream, for the likelihood)."""
    root = jax.random.key(cfg.root_seed)
    c = corpus.grammar_corpus(jax.random.fold_in(root, 0), cfg.sentences)
    held = corpus.grammar_corpus(jax.random.fold_in(root, 3), cfg.n_samples)
    return c, corpus.sentences(c.tokens, cfg.length), corpus.sentences(held.tokens, cfg.length)


def kept_tree(where, name: str, compute, like, key):
    """The pytree of arrays ``compute()``, kept as the part ``name`` and read back by a rerun.

    A corrupt part, or one of another structure, is set aside with a warning and recomputed.

    Args:
      where: the :class:`~tokdyn.experiment.study.Study` (a part keyed by its stamp and ``key``),
        a directory (a file ``name.npz`` there, keyed by ``key`` alone) or None (nothing kept).
      name: the part's name.
      compute: callable returning the pytree of arrays.
      like: callable returning the tree's structure (e.g. ``jax.eval_shape`` of ``compute``);
        called only to read a kept part back.
      key: JSON-able settings the part depends on (a part of other settings is recomputed).

    Returns:
      The pytree, its leaves NumPy arrays.
    """
    made = []

    def flat():
        tree = jax.tree_util.tree_map(np.asarray, compute())
        made.append(tree)
        return dict(zip(io.leaf_names(tree), jax.tree_util.tree_leaves(tree)))

    if where is None:
        return jax.tree_util.tree_map(np.asarray, compute())
    for _ in range(2):
        if isinstance(where, Study):
            stored, path = where.part(name, flat, key=key), where.part_path(name)
        else:
            path = os.path.join(where, name + ".npz")
            stored = io.kept(path, digest(key), flat)
        if made:
            return made[0]
        shape = like()
        names = io.leaf_names(shape)
        if set(names) == set(stored):
            return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shape), [stored[n] for n in names])
        io.set_aside(
            path,
            "it holds other arrays than this version of the study writes",
            root=where.out if isinstance(where, Study) else where,
        )
    raise AssertionError("unreachable: the second pass computes")


def autoencoder_key(cfg: Config) -> dict:
    """Exactly what the autoencoder depends on: its configuration (``grid``, ``colours``,
    ``ae_steps``), its learning rate and the root seed."""
    return {
        "autoencoder": dataclasses.asdict(cfg.autoencoder()),
        "learning_rate": AE_LEARNING_RATE,
        "root_seed": cfg.root_seed,
    }


def autoencoder(cfg: Config, study=None):
    """``(params, codes (V, P), accuracy)``: the first stage, trained once and kept
    (:func:`kept_tree`: ``study`` a Study, a directory or None) as the part ``autoencoder``."""
    acfg = cfg.autoencoder()
    key = jax.random.fold_in(jax.random.key(cfg.root_seed), 1)

    def compute():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return vtae.train(key, acfg, vtae.Hparams(learning_rate=AE_LEARNING_RATE))[0].params

    params = kept_tree(
        study, "autoencoder", compute, lambda: jax.eval_shape(lambda: vtae.init(key, acfg)), autoencoder_key(cfg)
    )
    params = jax.tree_util.tree_map(jnp.asarray, params)
    enc = vtae.encode(None, params, acfg, jnp.arange(acfg.vocab_size), deterministic=True)
    pred = np.asarray(jnp.argmax(vtae.decode(params, acfg, enc.x), -1))
    return params, np.asarray(enc.codes, np.int32), float(np.mean(pred == np.arange(acfg.vocab_size)))


def model_key(cfg: Config, scope: str, name: str) -> dict:
    """What a model kind's part depends on beyond the study's stamp: its scope, name and
    configuration."""
    return {"scope": scope, "model": name, "config": dataclasses.asdict(cfg.model(name, scope))}


def train_and_sample(cfg: Config, scope: str, name: str, data, study=None) -> dict:
    """Train the ``seeds`` models of one kind and sample them.

    Kept as the part ``SCOPE__NAME`` (:func:`kept_tree`) and reused by a rerun of the same settings.

    Args:
      cfg: the study's :class:`Config`.
      scope: ``"sequence"`` (whole sentences) or ``"single"`` (one word per sequence).
      name: the model, one of :data:`tokdyn.models.sequence.MODELS`.
      data: the training sequences: (N, L) int tokens, or (N, L, P) int colour codes of the
        tokens' P-cell grids for a grid model (L = 1 for ``"single"``).
      study: the :class:`~tokdyn.experiment.study.Study` that keeps it, or None.

    Returns:
      A dict: ``params`` and ``curves`` (leading (S,) seeds axis), ``nan_step`` (S,),
      ``samples`` (S, n, ...) in the data's layout, ``ddim`` (DDIM samples, ``grid_ddpm`` only)
      and ``seconds``.
    """
    mcfg = cfg.model(name, scope)
    key = jax.random.fold_in(
        jax.random.fold_in(jax.random.key(cfg.root_seed), 2),
        sequence.MODELS.index(name) + (100 if scope == "single" else 0),
    )
    keys = jax.random.split(key, cfg.seeds)

    def compute():
        t0 = time.time()
        out = jax.tree_util.tree_map(np.asarray, _sampled(cfg, mcfg, keys, data))
        return {**out, "seconds": np.float64(time.time() - t0)}

    def like():
        shapes = jax.eval_shape(lambda: _sampled(cfg, mcfg, keys, data, dry=True))
        return {**shapes, "seconds": jax.ShapeDtypeStruct((), np.float64)}

    out = kept_tree(study, f"{scope}__{name}", compute, like, model_key(cfg, scope, name))
    return {**out, "seconds": float(out["seconds"])}


def _sampled(cfg: Config, mcfg: sequence.Config, keys, data, dry: bool = False) -> dict:
    keys, hp = train.grid(keys, sequence.Hparams(learning_rate=cfg.learning_rate, lam=cfg.lam))
    if dry:  # shapes only (for reading a stored result back)
        state, curves = jax.vmap(lambda k, h: sequence.train.jitted(k, mcfg, h, jnp.asarray(data)))(keys, hp)
    else:
        res = train.train_many(sequence.trainer(mcfg), sequence.inputs(mcfg, data), keys, hp)
        state, curves = res.state, res.curves
    sample = sequence.sample if not dry else sequence.sample.jitted
    k_sample = jax.vmap(lambda k: jax.random.fold_in(k, 7))(keys)
    params = [jax.tree_util.tree_map(lambda a, s=s: a[s], state.params) for s in range(cfg.seeds)]
    out = {
        "params": state.params,
        "curves": curves,
        "nan_step": state.nan_step,
        "samples": jnp.stack([sample(k_sample[s], params[s], mcfg, cfg.n_samples) for s in range(cfg.seeds)]),
    }
    if mcfg.continuous and cfg.ddim_steps:
        out["ddim"] = jnp.stack(
            [sample(k_sample[s], params[s], mcfg, cfg.n_samples, "ddim", cfg.ddim_steps) for s in range(cfg.seeds)]
        )
    return out
