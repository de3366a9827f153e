"""The visual-token study's parts (:data:`~tokdyn.studies.visual_tokens.config.PARTS`): each a list of
cells, each cell the ``seeds`` models of one setting, kept as it finishes (:func:`run_part`)."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import io
from tokdyn.experiment.study import Study
from tokdyn.models import vtae
from tokdyn.models.vtae import corpus, diagnostics, encoders
from tokdyn.studies.visual_tokens.config import PUBLISHED_VOCAB, Config, curriculum_vocab, model_config
from tokdyn.studies.visual_tokens.training import model_rows, train_and_evaluate


def run_part(
    name: str, sc: Config, key, *, progress: io.Progress | None = None, study: Study | None = None
) -> list[dict]:
    """The rows of one part, one per model.

    Args:
      name: the part, one of :data:`~tokdyn.studies.visual_tokens.PARTS`.
      sc: the study's :class:`Config`.
      key: the part's PRNG key.
      progress: optional :class:`tokdyn.io.Progress`; a line per finished cell goes to its
        ``note``.
      study: optional :class:`~tokdyn.experiment.study.Study`: each cell (the ``seeds`` models of
        one setting) is kept there as it finishes (:meth:`~tokdyn.experiment.study.Study.rows`
        ``<part>_cells/<index>_<setting>``, keyed by the study's stamp) and read back by a rerun,
        so a cut-off run loses at most one cell.

    Returns:
      The rows (``results.csv``'s columns).
    """
    note = progress.note if progress is not None else (lambda message: None)
    cells = part_cells(name, sc, key)
    rows = []
    for j, (label, compute, what) in enumerate(cells):
        cell = f"{name}_cells/{label}"
        if study is not None and study.has(cell):
            rows += study.rows(cell, compute)
            note(f"  {name} {j + 1}/{len(cells)}: done already ({study.part_path(cell, '.json')})")
            continue
        t0 = time.perf_counter()
        new_rows = study.rows(cell, compute) if study is not None else compute()
        rows += new_rows
        acc = np.mean([r["accuracy"] for r in new_rows])
        coll = np.mean([r["collapsed"] for r in new_rows])
        note(
            f"  {name} {j + 1}/{len(cells)}: {what}: accuracy {acc:.3f}, collapsed {coll:.2f} "
            f"({time.perf_counter() - t0:.1f} s)"
        )
    return rows


def part_cells(name: str, sc: Config, key) -> list[tuple]:
    """The cells of part ``name`` (:func:`run_part`'s arguments), in order: ``[(label, compute,
    description), ...]``, ``compute()`` training the cell's models and returning their rows."""
    hp = vtae.Hparams(learning_rate=sc.learning_rate)
    cells = []  # (label, compute, description)
    if name == "poc":
        for i, mode in enumerate(encoders.MODES):

            def poc(i=i, mode=mode):
                cfg = model_config(sc, 5, 3, 2, mode, max(sc.budgets))
                res, d = train_and_evaluate(cfg, hp, sc.seeds, jax.random.fold_in(key, sc.seeds * i), np.full(5, 0.2))
                return model_rows("poc", "5 tokens 3x3 binary", cfg, res, d)

            cells.append((f"{i:03d}_{mode}", poc, f"5 tokens 3x3x2 {mode}"))
    elif name in ("main", "published"):
        if name == "main":
            combos = [
                (V, n, c, m, b, ()) for V in sc.vocab_sizes for (n, c) in sc.grids for m in sc.modes for b in sc.budgets
            ]
        else:
            combos = [(V, 5, 3, "gumbel_st", b, ("sensitivity",)) for V in PUBLISHED_VOCAB for b in sc.budgets]
        for i, (V, n, c, m, b, extra) in enumerate(combos):

            def grid_cell(i=i, V=V, n=n, c=c, m=m, b=b, extra=extra):
                cfg = model_config(sc, V, n, c, m, b, losses=extra)
                w = corpus.zipf_probs(V, sc.zipf_exponent)
                res, d = train_and_evaluate(cfg, hp, sc.seeds, jax.random.fold_in(key, i), w)
                return model_rows(name, "sensitivity hinge" if extra else "plain", cfg, res, d)

            cells.append((f"{i:03d}_V{V}_{n}x{n}x{c}_{m}_{b}", grid_cell, f"V={V} {n}x{n}x{c} {m} {b} steps"))
    elif name == "curriculum":
        V, b = curriculum_vocab(sc), max(sc.budgets)
        for i, cur in enumerate((False, True)):

            def curriculum(i=i, cur=cur):
                cfg = model_config(sc, V, 5, 3, "gumbel_st", b, curriculum=cur)
                res, d = train_and_evaluate(cfg, hp, sc.seeds, jax.random.fold_in(key, i), corpus.zipf_probs(V))
                return model_rows("curriculum", "curriculum" if cur else "all types", cfg, res, d)

            cells.append(
                (
                    f"{i:03d}_{'curriculum' if cur else 'all_types'}",
                    curriculum,
                    f"V={V} {'curriculum' if cur else 'all types'}",
                )
            )
    elif name == "semantic":
        setting = {}  # the corpus and its embeddings: drawn once, for the cells that run
        for i, grounded in enumerate((True, False)):

            def semantic(i=i, grounded=grounded):
                if not setting:
                    setting.update(_semantic_setting(sc, key))
                return _semantic_cell(sc, key, i, grounded, setting)

            cells.append(
                (
                    f"{i:03d}_{'grounded' if grounded else 'arbitrary'}",
                    semantic,
                    "grounded" if grounded else "arbitrary",
                )
            )
    return cells


def _semantic_setting(sc: Config, key) -> dict:
    corp = corpus.grammar_corpus(jax.random.fold_in(key, 7), sc.grammar_sentences)
    emb = corpus.ppmi_embeddings(corp.tokens, corp.vocab_size, sc.embed_dim)
    sizes = [corp.vocab.index(x) for x in corpus.GRAMMAR_CATEGORIES["size"]]
    animals = [corp.vocab.index(x) for x in corpus.GRAMMAR_CATEGORIES["animal"]]
    return dict(
        corp=corp,
        emb=emb,
        occurring=np.flatnonzero(corp.counts > 0),
        pairs=np.array([(a, b) for a in sizes for b in animals]),
    )  # pairs (n_pairs, 2)


def _semantic_cell(sc: Config, key, i: int, grounded: bool, setting: dict) -> list[dict]:
    corp, emb, occurring, pairs = setting["corp"], setting["emb"], setting["occurring"], setting["pairs"]
    V, E = corp.vocab_size, sc.embed_dim
    kw = dict(encoder_input="embedding", embed_dim=E, losses=("semantic",)) if grounded else {}
    cfg = model_config(sc, V, 5, 3, "sigmoid", max(sc.budgets), **kw)
    res, d = train_and_evaluate(
        cfg,
        vtae.Hparams(learning_rate=sc.learning_rate, w_semantic=1.0),
        sc.seeds,
        jax.random.fold_in(key, i),
        np.where(corp.counts > 0, 1.0, 0.0),
        emb if grounded else None,
    )
    knn, tw, cg, ce = [], [], [], []
    for s in range(sc.seeds):
        params = jax.tree_util.tree_map(lambda v: v[s], res.state.params)
        ids = jnp.asarray(occurring)
        x = vtae.encode(None, params, cfg, ids, embeddings=emb if grounded else None, deterministic=True).x
        dh = diagnostics.euclidean_distances(emb[ids])
        dl = diagnostics.euclidean_distances(x)
        knn.append(np.asarray(diagnostics.knn_preservation(dh, dl, 5)))
        tw.append(np.asarray(diagnostics.trustworthiness(dh, dl, 5)))
        xa = vtae.encode(
            None, params, cfg, jnp.asarray(pairs[:, 0]), embeddings=emb if grounded else None, deterministic=True
        ).x
        xb = vtae.encode(
            None, params, cfg, jnp.asarray(pairs[:, 1]), embeddings=emb if grounded else None, deterministic=True
        ).x
        top = lambda logits: np.sort(np.argsort(-np.asarray(logits), -1)[:, :2], -1)
        ok = lambda t: float(np.mean(np.all(t == np.sort(pairs, -1), -1)))
        cg.append(ok(top(vtae.decode(params, cfg, 0.5 * (xa + xb)))))
        if grounded:
            z = (emb[pairs[:, 0]] + emb[pairs[:, 1]]) @ params["encoder"]["w"] + params["encoder"]["b"]
            xs = jax.nn.sigmoid(z.reshape(len(pairs), cfg.cells, cfg.width))
            ce.append(ok(top(vtae.decode(params, cfg, xs))))
        else:
            ce.append(np.nan)
    extra = dict(knn_preservation=knn, trustworthiness=tw, composition_grid=cg, composition_embedding=ce)
    return model_rows(
        "semantic", "grounded (embedding encoder + alignment)" if grounded else "arbitrary (table)", cfg, res, d, extra
    )
