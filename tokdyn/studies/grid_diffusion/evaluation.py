"""The grid-diffusion study's scores: held-out likelihoods (:func:`held_out_nll`) and the
decoded samples' text metrics, ``results.csv`` (:func:`evaluate`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import io, stats
from tokdyn.models import sequence
from tokdyn.models.vtae import corpus
from tokdyn.stats import text as text_stats
from tokdyn.studies.grid_diffusion.config import COLUMNS, Config


def held_out_nll(cfg: Config, scope: str, name: str, params, held) -> np.ndarray:
    """Nats per held-out sequence of each seed's model.

    Args:
      cfg: the study's :class:`Config`.
      scope: ``"sequence"`` or ``"single"``.
      name: the model, one of :data:`tokdyn.models.sequence.MODELS`.
      params: its weights, with a leading (S,) seeds axis.
      held: (n, L) held-out token sequences, or (n, L, P) grid codes for a grid model.

    Returns:
      (S, n) float: exact for ``token_ar``, the variational bound for D3PM, NaN for DDPM (whose
      density is not comparable).
    """
    mcfg = cfg.model(name, scope)
    if mcfg.continuous:
        return np.full((cfg.seeds, held.shape[0]), np.nan)
    key = jax.random.fold_in(jax.random.key(cfg.root_seed), 4)
    return np.stack(
        [
            np.asarray(
                sequence.nll_bound(key, jax.tree_util.tree_map(lambda a, s=s: a[s], params), mcfg, jnp.asarray(held))
            )
            for s in range(cfg.seeds)
        ]
    )


def evaluate(cfg: Config, results: dict, ae_params, sentences, vocab, nll=None) -> tuple[dict, dict]:
    """``results.csv``'s columns, and per model the decoded samples of seed 0.

    Args:
      cfg: the study's :class:`Config`.
      results: (scope, model) -> :func:`~tokdyn.studies.grid_diffusion.train_and_sample`'s dict.
      ae_params: the grid autoencoder's weights (decodes grid samples to tokens).
      sentences: (N, L) int training sentences (the reference of the text metrics).
      vocab: the corpus's vocabulary (a sequence of words).
      nll: optional (scope, model) -> (S, n) held-out nats per sequence (:func:`held_out_nll`).

    Returns:
      ``(table, texts)``: the table as a dict of columns (one row per model, sampler and seed)
      and label -> decoded samples.
    """
    acfg = cfg.autoencoder()
    allowed = corpus.grammar_bigrams()
    rows, texts = [], {}
    eos = corpus.EOS
    for (scope, name), r in results.items():
        outputs = {name: r["samples"]}
        if "ddim" in r:
            outputs[name + "_ddim"] = r["ddim"]
        for label, samples in outputs.items():
            for s in range(cfg.seeds):
                x = np.asarray(samples[s])
                if x.ndim == 3:  # grids (n, L, P)
                    tokens, conf = sequence.decode_grids(ae_params, acfg, x)
                else:
                    tokens, conf = x, None
                if scope == "single":
                    ref = sentences[sentences != corpus.PAD][:, None]  # every word of the corpus, one per row
                    m = text_stats.text_metrics(
                        tokens, ref, len(vocab), eos=-1, confidence=conf, seed=s, n_resamples=cfg.n_resamples
                    )
                else:
                    m = text_stats.text_metrics(
                        tokens,
                        sentences,
                        len(vocab),
                        eos=eos,
                        confidence=conf,
                        allowed=allowed,
                        grammatical=corpus.is_grammatical,
                        seed=s,
                        n_resamples=cfg.n_resamples,
                    )
                v = None if nll is None or label != name else nll.get((scope, name))
                if v is not None and np.all(np.isfinite(v[s])):
                    m["nll"] = float(v[s].mean())
                    m["nll_low"], m["nll_high"] = (
                        float(x) for x in stats.bootstrap_ci(v[s], seed=s, n_resamples=cfg.n_resamples)
                    )
                else:
                    m["nll"] = m["nll_low"] = m["nll_high"] = float("nan")
                loss = np.asarray(r["curves"]["loss"][s])
                rows.append(
                    dict(
                        scope=scope,
                        model=label,
                        seed=s,
                        steps=cfg.steps,
                        train_loss_first=loss[0],
                        train_loss_last=loss[-1],
                        nan_step=int(np.asarray(r["nan_step"])[s]),
                        **m,
                    )
                )
                if s == 0:
                    texts[f"{scope}/{label}"] = [
                        " ".join(vocab[i] for i in sent)
                        for sent in text_stats.cut(tokens, eos if scope == "sequence" else -1)
                    ]
    return io.to_columns(rows, COLUMNS), texts
