"""The visual-token study: can text tokens be mapped to N x N colour grids and read back, when
the autoencoders are trained adequately? (``tokdyn study visual-tokens --out DIR``)

:func:`main`, :class:`Config`. The parts of :data:`PARTS` (``--parts`` chooses which run; :func:`run_part`): ``main``
(reconstruction over vocabulary size x grid x encoder mode x budget), ``published``, ``poc``,
``curriculum`` and ``semantic``. It writes ``results.csv`` (one row per model, with a per-cell
verdict, :func:`cell_verdict`), the heatmaps, ``grids.png`` (:func:`grids_png`), ``summary.md``
and ``config.json``; each cell and part is kept in ``DIR/parts/`` as it finishes, so a rerun
resumes.

The parts, resuming and the findings: :doc:`/studies/visual-tokens`.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks, io, train
from tokdyn.experiment import findings as F
from tokdyn.experiment import runner
from tokdyn.experiment import study as study_dir
from tokdyn.experiment.findings import Finding
from tokdyn.experiment.presets import PRESETS
from tokdyn.experiment.study import Estimate, Study
from tokdyn.models import vtae
from tokdyn.models.vtae import corpus, diagnostics, encoders
from tokdyn.stats import figures

PARTS = ("poc", "published", "main", "curriculum", "semantic")
PUBLISHED_VOCAB = (51, 192)  # the published setting's vocabularies
MAX_STEPS = 2**31 - 1  # training steps are counted in 32-bit integers
LOG_FIELDS = 8  # training logs of one step, kept for a call (tokdyn.train.train_many)
COLUMNS = (
    "part",
    "variant",
    "vocab_size",
    "grid",
    "colours",
    "mode",
    "steps",
    "seed",
    "accuracy",
    "accuracy_occurrence",
    "dominant_freq",
    "collapsed",
    "entropy",
    "uniqueness",
    "min_hamming",
    "sensitivity_kl",
    "loss_norm",
    "train_loss_norm_first",
    "train_loss_norm_last",
    "train_loss_drop_tail",
    "nan_step",
    "knn_preservation",
    "trustworthiness",
    "composition_grid",
    "composition_embedding",
)


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the study; saved as ``config.json``.

    Attributes:
      vocab_sizes: vocabulary sizes V of the main grid.
      grids: grids of the main grid as (N, C) pairs: N x N cells of C colours (written NxC).
      modes: encoder modes of the main grid, names from tokdyn.models.vtae.encoders.MODES.
      budgets: training budgets (optimiser steps) of the main and published parts; the largest is
        used by the other parts.
      seeds: models per cell, trained in one vmapped call.
      hidden: width of the MLP decoder's hidden layer.
      batch_size: tokens per optimiser step.
      learning_rate: Adam learning rate.
      zipf_exponent: exponent of the Zipfian token frequencies of the main part.
      grammar_sentences: sentences of the grammar corpus of the semantic part.
      embed_dim: width of the PPMI/SVD embeddings of the semantic part.
      parts: parts to run, names from poc, published, main, curriculum, semantic.
      root_seed: root PRNG seed.
      preset: '' or 'quick' (set by --quick: a smoke-sized run; summary.md's first line says so).
    """

    vocab_sizes: tuple[int, ...] = (5, 51, 192, 1000, 5000)
    grids: tuple[tuple, ...] = ((3, 2), (5, 3), (7, 3), (8, 5))  # (N, C)
    modes: tuple[str, ...] = ("gumbel_st", "vq")
    budgets: tuple[int, ...] = (300, 2000)
    seeds: int = 5
    hidden: int = 64
    batch_size: int = 64
    learning_rate: float = 1e-2
    zipf_exponent: float = 1.0
    grammar_sentences: int = 5000
    embed_dim: int = 8
    parts: tuple[str, ...] = PARTS
    root_seed: int = 0
    preset: str = ""  # a label only: left out of the directory's stamp (SPEC.selection)

    def validate(self) -> "Config":
        """Check every field; raise ``ValueError``/``TypeError`` naming the field. Returns ``self``."""
        for name in ("vocab_sizes", "grids", "modes", "budgets", "parts"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not value:
                raise ValueError(f"{name} must list at least one value (a comma list), got {value!r}")
            _checks.distinct(name, value)  # each value is one condition: a repeat would count its models twice
        for v in self.vocab_sizes:
            _checks.positive_int("vocab_sizes", v, minimum=2)
        for g in self.grids:
            if not isinstance(g, tuple) or len(g) != 2:
                raise ValueError(f"grids must hold (N, C) pairs (written NxC), got {g!r}")
            _checks.positive_int("grid", g[0])
            _checks.positive_int("colours", g[1], minimum=2)
        for m in self.modes:
            _checks.choice("modes", m, encoders.MODES)
        for b in self.budgets:
            _checks.positive_int("budgets", b, minimum=10)
            if b > MAX_STEPS:
                raise ValueError(f"budgets must be at most {MAX_STEPS:,} steps (a 32-bit step counter), got {b!r}")
        for p in self.parts:
            _checks.choice("parts", p, PARTS)
        for name in ("seeds", "hidden", "batch_size", "grammar_sentences", "embed_dim"):
            _checks.positive_int(name, getattr(self, name))
        grammar_v = len(corpus.grammar_vocab()[0])
        if self.embed_dim > grammar_v:
            raise ValueError(
                f"embed_dim must be at most {grammar_v} (the grammar corpus's vocabulary: the PPMI/SVD "
                f"embeddings have at most that many dimensions), got {self.embed_dim}"
            )
        _checks.real("learning_rate", self.learning_rate, low=0.0, low_open=True)
        _checks.real("zipf_exponent", self.zipf_exponent, low=0.0)
        _checks.seed("root_seed", self.root_seed)
        _checks.choice("preset", self.preset, PRESETS)
        return self

    def models(self) -> list[tuple[str, vtae.Config]]:
        """``(part, model config)`` of every cell of the selected parts (``seeds`` models each), in
        the order they train; the model configs carry the sizes only (no extra losses)."""
        big = max(self.budgets)
        cells = []
        for name in PARTS:
            if name not in self.parts:
                continue
            if name == "poc":
                combos = [(5, 3, 2, m, big) for m in encoders.MODES]
            elif name == "main":
                combos = [
                    (V, n, c, m, b)
                    for V in self.vocab_sizes
                    for (n, c) in self.grids
                    for m in self.modes
                    for b in self.budgets
                ]
            elif name == "published":
                combos = [(V, 5, 3, "gumbel_st", b) for V in PUBLISHED_VOCAB for b in self.budgets]
            elif name == "curriculum":
                combos = [(_curriculum_vocab(self), 5, 3, "gumbel_st", big)] * 2
            else:
                combos = [(len(corpus.grammar_vocab()[0]), 5, 3, "sigmoid", big)] * 2
            cells += [
                (
                    name,
                    vtae.Config(
                        vocab_size=V,
                        grid=n,
                        colours=c,
                        mode=m,
                        train=_budget(b),
                        hidden=self.hidden,
                        batch_size=self.batch_size,
                    ),
                )
                for V, n, c, m, b in combos
            ]
        return cells

    def estimate(self) -> Estimate:
        """The largest cell's training state (parameters, Adam moments and gradients, vmapped over
        ``seeds``; one step's logits) or evaluation (the (V, V) logits and Hamming distances of one
        model), the grammar corpus; and the time at a rough cost per step on the reference CPU: its
        FLOPs scaled by this machine's ``training`` rate, a fixed cost per step and 3 s a cell by its
        ``host`` rate. Refuses
        (:class:`~tokdyn.experiment.study.Refused`, naming the option) an array XLA cannot index."""
        defaults = Config()
        need, rate, host = {}, 0.0, 0.0

        def fit(**sizes):  # one array's sizes; too many elements: name the option most beyond its default
            n = int(np.prod([float(v) for v in sizes.values()]))
            if n > study_dir.MAX_ELEMENTS:
                name = max(sizes, key=lambda k: sizes[k] / max(1, _default_size(defaults, k)))
                study_dir.elements_fit(name, *sizes.values())

        def add(option, nbytes):
            need[option] = max(need.get(option, 0.0), float(nbytes))

        study_dir.elements_fit("grammar_sentences", self.grammar_sentences, 16)  # a uniform draw per slot
        add("grammar_sentences", self.grammar_sentences * 16 * 4 * 4)
        for _, m in self.models():
            V, P, F = m.vocab_size, m.cells, m.features
            fit(seeds=self.seeds, vocab_sizes=V, grids=P * m.width)  # the encoder's table
            fit(seeds=self.seeds, grids=P * F, hidden=self.hidden)  # the decoder's first layer
            fit(seeds=self.seeds, batch_size=self.batch_size, vocab_sizes=V)  # one step's logits
            fit(seeds=self.seeds, batch_size=self.batch_size, grids=P * F)  # one step's grids
            study_dir.elements_fit("vocab_sizes", V, V)  # the evaluation's (V, V) logits and distances
            fit(seeds=self.seeds, budgets=m.train.steps_per_call, logs=LOG_FIELDS)  # a call's per-step training logs
            add("budgets", self.seeds * m.train.steps_per_call * LOG_FIELDS * 4 * 2)
            params = V * P * m.width + P * F * self.hidden + self.hidden * V + V
            step = self.batch_size * (V + P * F + self.hidden)
            add("seeds", self.seeds * (4 * params + 3 * step) * 4)
            add("vocab_sizes", 6 * V * V * 4 + V * P * F * 4)
            rate += self.seeds * m.train.steps * 6.0 * self.batch_size * (P * F + V) * self.hidden / 6e9
            host += self.seeds * m.train.steps * 2e-5 + 3.0
        models = self.seeds * len(self.models())
        add("seeds", models * 2000.0)  # a row (a dict) per model, held until the results are written
        option = max(need, key=need.get)
        return Estimate(memory=need[option], option=option, models=models, work={"training": rate, "host": host})

    @classmethod
    def quick(cls) -> "Config":
        """A few-minute version (tests, smoke runs)."""
        return cls(
            vocab_sizes=(5, 51),
            grids=((3, 2), (5, 3)),
            modes=("gumbel_st",),
            budgets=(50, 200),
            seeds=2,
            hidden=32,
            batch_size=32,
            grammar_sentences=500,
            preset="quick",
        )


def _default_size(cfg: Config, name: str) -> int:
    sizes = {
        "vocab_sizes": max(cfg.vocab_sizes),
        "grids": max(n * n * c for n, c in cfg.grids),
        "budgets": 50,
        "logs": LOG_FIELDS,
    }
    return sizes.get(name) or getattr(cfg, name)


def _curriculum_vocab(sc: Config) -> int:
    return 192 if 192 in sc.vocab_sizes else max(sc.vocab_sizes)


def _train_eval(cfg: vtae.Config, hp: vtae.Hparams, seeds: int, key, weights, embeddings=None):
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


def _rows(part, variant, cfg, res, d, extra=None):
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


def _budget(steps: int) -> train.Config:
    """A model's training: ``steps`` at a constant learning rate (no warm-up, no clipping), logged
    at :func:`tokdyn.train.log_interval`."""
    return train.Config(
        steps=steps, steps_per_call=train.log_interval(steps), warmup=0, decay="constant", clip_norm=0.0
    )


def _model_cfg(sc: Config, V, n, c, mode, steps, **kw):
    return vtae.Config(
        vocab_size=V,
        grid=n,
        colours=c,
        mode=mode,
        train=_budget(steps),
        hidden=sc.hidden,
        batch_size=sc.batch_size,
        **kw,
    )


def run_part(
    name: str, sc: Config, key, *, progress: io.Progress | None = None, study: Study | None = None
) -> list[dict]:
    """The rows of one part, one per model.

    Args:
      name: the part, one of :data:`PARTS`.
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
    hp = vtae.Hparams(learning_rate=sc.learning_rate)
    cells = []  # (label, compute, description)
    if name == "poc":
        for i, mode in enumerate(encoders.MODES):

            def poc(i=i, mode=mode):
                cfg = _model_cfg(sc, 5, 3, 2, mode, max(sc.budgets))
                res, d = _train_eval(cfg, hp, sc.seeds, jax.random.fold_in(key, sc.seeds * i), np.full(5, 0.2))
                return _rows("poc", "5 tokens 3x3 binary", cfg, res, d)

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
                cfg = _model_cfg(sc, V, n, c, m, b, losses=extra)
                w = corpus.zipf_probs(V, sc.zipf_exponent)
                res, d = _train_eval(cfg, hp, sc.seeds, jax.random.fold_in(key, i), w)
                return _rows(name, "sensitivity hinge" if extra else "plain", cfg, res, d)

            cells.append((f"{i:03d}_V{V}_{n}x{n}x{c}_{m}_{b}", grid_cell, f"V={V} {n}x{n}x{c} {m} {b} steps"))
    elif name == "curriculum":
        V, b = _curriculum_vocab(sc), max(sc.budgets)
        for i, cur in enumerate((False, True)):

            def curriculum(i=i, cur=cur):
                cfg = _model_cfg(sc, V, 5, 3, "gumbel_st", b, curriculum=cur)
                res, d = _train_eval(cfg, hp, sc.seeds, jax.random.fold_in(key, i), corpus.zipf_probs(V))
                return _rows("curriculum", "curriculum" if cur else "all types", cfg, res, d)

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
    cfg = _model_cfg(sc, V, 5, 3, "sigmoid", max(sc.budgets), **kw)
    res, d = _train_eval(
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
    return _rows(
        "semantic", "grounded (embedding encoder + alignment)" if grounded else "arbitrary (table)", cfg, res, d, extra
    )


def summarise(table: dict) -> str:
    """The README-ready summary (markdown)."""
    part = np.asarray(table["part"])
    lines = ["# Visual-token autoencoders: where collapse does and does not occur", ""]

    def block(sel, keys):
        groups = {}
        for i in np.flatnonzero(sel):
            groups.setdefault(tuple(table[k][i] for k in keys), []).append(i)
        out = [
            "| " + " | ".join(keys) + " | seeds | accuracy | acc. (occurrence) | dominant freq | collapsed "
            "| loss/lnV (eval) | train CE/lnV first→last | uniqueness |",
            "|" + "---|" * (len(keys) + 8),
        ]
        for g, idx in groups.items():
            m = lambda f: np.mean(np.asarray(table[f], float)[idx])
            fmt = lambda v: str(int(v)) if isinstance(v, (float, np.floating)) and float(v).is_integer() else str(v)
            out.append(
                "| " + " | ".join(fmt(v) for v in g) + f" | {len(idx)} | {m('accuracy'):.3f} | "
                f"{m('accuracy_occurrence'):.3f} | {m('dominant_freq'):.3f} | {m('collapsed'):.2f} | "
                f"{m('loss_norm'):.3f} | {m('train_loss_norm_first'):.2f}→{m('train_loss_norm_last'):.3f} | "
                f"{m('uniqueness'):.3f} |"
            )
        return out

    for name, keys, title in (
        ("poc", ("mode",), "5-token 3×3 binary proof of concept"),
        ("published", ("vocab_size", "steps", "variant"), "Published setting (5×5×3, Gumbel ST, sensitivity hinge)"),
        ("main", ("vocab_size", "grid", "colours", "mode", "steps"), "Vocabulary × grid × mode × budget"),
        ("curriculum", ("variant", "vocab_size", "steps"), "Curriculum"),
        ("semantic", ("variant",), "Semantic grounding vs arbitrary mapping"),
    ):
        sel = part == name
        if sel.any():
            lines += [f"## {title}", ""] + block(sel, keys) + [""]
    sel = part == "semantic"
    if sel.any():
        lines += ["Topology and composition (grammar corpus, mean over seeds):", ""]
        for v in sorted(set(np.asarray(table["variant"])[sel])):
            idx = sel & (np.asarray(table["variant"]) == v)
            f = lambda k: (
                np.nanmean(np.asarray(table[k], float)[idx])
                if np.any(np.isfinite(np.asarray(table[k], float)[idx]))
                else float("nan")
            )
            lines.append(
                f"- {v}: k-NN preservation (k=5) {f('knn_preservation'):.3f}, trustworthiness "
                f"{f('trustworthiness'):.3f}, 'big cat' top-2 from the composed grid {f('composition_grid'):.3f}, "
                f"from the summed embeddings {f('composition_embedding'):.3f}"
            )
        lines.append("")
    lines += _where_collapse(table)
    coll = np.asarray(table["collapsed"], bool)
    acc = np.asarray(table["accuracy"], float)
    lines += [
        "## Verdict",
        "",
        f"{int(coll.sum())} of {coll.size} models collapsed (one prediction for > 90% of types). ",
    ]
    if coll.any():
        bad = sorted(
            {
                (
                    table["part"][i],
                    int(table["vocab_size"][i]),
                    int(table["grid"][i]),
                    int(table["colours"][i]),
                    table["mode"][i],
                    int(table["steps"][i]),
                )
                for i in np.flatnonzero(coll)
            }
        )
        lines.append(
            "Collapse occurred in: " + "; ".join(f"{p} V={v} {n}x{n}x{c} {m} {s} steps" for p, v, n, c, m, s in bad)
        )
    full = [
        (
            int(table["vocab_size"][i]),
            int(table["grid"][i]),
            int(table["colours"][i]),
            table["mode"][i],
            int(table["steps"][i]),
        )
        for i in np.flatnonzero(acc >= 0.99)
    ]
    lines.append(f"{len(full)} of {acc.size} models reconstruct >= 99% of their vocabulary.")
    return "\n".join(lines) + "\n"


STILL_FALLING = 0.02  # training CE fell by more than this fraction of ln V over the last 20% of steps
AT_CHANCE = 0.9  # final training CE / ln V above this: the model has not started to learn


def cell_verdict(accuracy, dominant_freq, drop_tail, vocab_size, grid, colours, ce_last=float("nan")) -> str:
    """Why a (mean-over-seeds) cell does or does not reconstruct.

    Args:
      accuracy: reconstruction accuracy over token types, in [0, 1].
      dominant_freq: the share of types decoded to the most frequent prediction.
      drop_tail: how much the training CE fell over the last 20% of steps, as a fraction of ln V.
      vocab_size: V, the number of token types.
      grid: N, the grid's side (N x N cells).
      colours: C, the colours per cell.
      ce_last: the final training CE as a fraction of ln V (NaN: unknown).

    Returns:
      ``"reconstructs"`` (accuracy >= 0.99), ``"capacity"`` (C^(N*N) < V), ``"collapse"``
      (dominant prediction > 0.9 of types), ``"at chance"`` (final CE > 0.9 ln V: not yet
      learning), ``"too few steps"`` (CE still falling by > 2% of ln V) or ``"plateau"`` (loss
      flat below chance, no collapse, yet imperfect).
    """
    if accuracy >= 0.99:
        return "reconstructs"
    if grid * grid * np.log10(colours) < np.log10(vocab_size) - 1e-12:
        return "capacity"
    if dominant_freq > diagnostics.COLLAPSE_THRESHOLD:
        return "collapse"
    if np.isfinite(ce_last) and ce_last > AT_CHANCE:
        return "at chance"
    if np.isfinite(drop_tail) and drop_tail > STILL_FALLING:
        return "too few steps"
    return "plateau"


def _where_collapse(table: dict) -> list[str]:
    """Per (V, grid, mode) cell of the main part: the verdict at each budget, and the plain statement."""
    sel = np.asarray(table["part"]) == "main"
    if not sel.any():
        return []
    f = lambda k: np.asarray(table[k], float)
    keys = ("vocab_size", "grid", "colours", "mode", "steps")
    groups = {}
    for i in np.flatnonzero(sel):
        groups.setdefault(tuple(table[k][i] for k in keys), []).append(i)
    budgets = sorted({int(g[4]) for g in groups})
    cells = sorted({g[:4] for g in groups}, key=lambda g: (int(g[0]), int(g[1]), int(g[2]), str(g[3])))
    lines = [
        "## Where collapse does and does not occur",
        "",
        "Main grid, mean over seeds; verdict: `reconstructs` (accuracy >= 0.99), `capacity` (C^(N·N) < V), "
        "`collapse` (dominant prediction > 0.9), `at chance` (final training CE > "
        f"{AT_CHANCE:g} ln V: not yet learning), `too few steps` (training CE still falling by > "
        f"{STILL_FALLING:g} ln V over the last 20% of steps), `plateau` (flat loss, no collapse, imperfect).",
        "",
        "| V | grid | mode | "
        + " | ".join(f"{b} steps: accuracy / dominant / CE/lnV / verdict" for b in budgets)
        + " |",
        "|" + "---|" * (3 + len(budgets)),
    ]
    verdicts = {}
    for c in cells:
        V, n, col, mode = int(c[0]), int(c[1]), int(c[2]), str(c[3])
        row = [str(V), f"{n}x{n}x{col}", mode]
        for b in budgets:
            idx = next((v for g, v in groups.items() if g[:4] == c and int(g[4]) == b), None)
            if idx is None:
                row.append("-")
                continue
            m = lambda k: float(np.nanmean(f(k)[idx])) if np.any(np.isfinite(f(k)[idx])) else float("nan")
            v = cell_verdict(
                m("accuracy"), m("dominant_freq"), m("train_loss_drop_tail"), V, n, col, m("train_loss_norm_last")
            )
            verdicts[(V, n, col, mode, b)] = v
            row.append(f"{m('accuracy'):.3f} / {m('dominant_freq'):.3f} / {m('train_loss_norm_last'):.3f} / {v}")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    name = lambda k: f"V={k[0]} {k[1]}x{k[1]}x{k[2]} {k[3]}"
    for b in budgets:
        at = {k: v for k, v in verdicts.items() if k[4] == b}
        by = lambda what: [name(k) for k, v in at.items() if v == what]
        lines.append(
            f"At {b} steps: {len(by('reconstructs'))} of {len(at)} cells reconstruct >= 99%; "
            f"collapse in {len(by('collapse'))} ({'; '.join(by('collapse')) or 'none'}); "
            f"capacity-limited {len(by('capacity'))} ({'; '.join(by('capacity')) or 'none'}); "
            f"at chance {len(by('at chance'))} ({'; '.join(by('at chance')) or 'none'}); "
            f"too few steps {len(by('too few steps'))} ({'; '.join(by('too few steps')) or 'none'}); "
            f"plateau {len(by('plateau'))} ({'; '.join(by('plateau')) or 'none'})."
        )
    b = budgets[-1]
    adequate = {k: v for k, v in verdicts.items() if k[4] == b and v not in ("capacity", "at chance", "too few steps")}
    ok = sum(v == "reconstructs" for v in adequate.values())
    lines += [
        "",
        f"**Where training is adequate** ({b} steps, loss below chance and flat, grid with enough distinct "
        f"patterns): "
        f"{ok} of {len(adequate)} cells reconstruct >= 99% of their vocabulary; "
        f"{sum(v == 'collapse' for v in adequate.values())} collapse.",
        "",
    ]
    return lines


def heatmaps(out: str, table: dict, cfg: Config) -> list[str]:
    """``heatmap_{accuracy,collapse}_<mode>.png``: the main part at the largest budget, vocabulary
    size x grid, mean over seeds; returns their paths ([] without the main part)."""
    paths = []
    part = np.asarray(table["part"])
    sel_main = part == "main"
    if sel_main.any():
        b = max(cfg.budgets)
        labels = [f"{n}x{n}x{c}" for n, c in cfg.grids]
        for mode in cfg.modes:
            for metric, fname in (("accuracy", "accuracy"), ("collapsed", "collapse")):
                z = np.full((len(cfg.vocab_sizes), len(cfg.grids)), np.nan)
                for i, V in enumerate(cfg.vocab_sizes):
                    for j, (n, c) in enumerate(cfg.grids):
                        s = (
                            sel_main
                            & (np.asarray(table["mode"]) == mode)
                            & (np.asarray(table["steps"], float) == b)
                            & (np.asarray(table["vocab_size"], float) == V)
                            & (np.asarray(table["grid"], float) == n)
                            & (np.asarray(table["colours"], float) == c)
                        )
                        if s.any():
                            z[i, j] = np.mean(np.asarray(table[metric], float)[s])
                paths.append(
                    figures.heatmap(
                        os.path.join(out, f"heatmap_{fname}_{mode}.png"),
                        labels,
                        list(cfg.vocab_sizes),
                        z,
                        xlabel="grid (N x N x C)",
                        ylabel="vocabulary size",
                        cbar=metric,
                        title=f"{metric} ({mode}, {b} steps, mean over seeds)",
                        fmt="{}",
                    )
                )
    return paths


def grid_codes(cfg: Config, key) -> np.ndarray:
    """The grids (16, 5, 5) of the first 16 tokens of a 51-token 5x5x3 model (Gumbel ST) trained
    for the largest budget."""
    model_cfg = _model_cfg(cfg, 51, 5, 3, "gumbel_st", max(cfg.budgets))
    state, _ = vtae.train(key, model_cfg, vtae.Hparams(learning_rate=cfg.learning_rate))
    enc = vtae.encode(None, state.params, model_cfg, jnp.arange(16), deterministic=True)
    return np.asarray(enc.codes).reshape(16, 5, 5)


def grids_png(path: str, cfg: Config, key, codes=None) -> str:
    """Draw the grids of the first tokens of a 51-token 5x5x3 model (Gumbel ST) in colour.

    Args:
      path: the PNG file to write.
      cfg: the study's :class:`Config` (the model's budget and learning rate).
      key: PRNG key of the training, used only when ``codes`` is None.
      codes: optional (16, 5, 5) int grids of the first 16 tokens (:func:`grid_codes`); trained
        here when None.

    Returns:
      ``path``.
    """
    codes = grid_codes(cfg, key) if codes is None else np.asarray(codes)
    palette = np.array([[0.9, 0.2, 0.2], [0.2, 0.6, 0.9], [0.95, 0.85, 0.2], [0.3, 0.8, 0.3], [0.5, 0.3, 0.7]])
    fig = figures.figure((8, 2.4))
    axes = fig.subplots(2, 8)
    for t, ax in enumerate(axes.ravel()):
        ax.imshow(palette[codes[t]], interpolation="nearest")
        ax.set_title(f"w{t}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("grids of tokens w0..w15 (51 tokens, 5x5x3, Gumbel straight-through)", fontsize=9)
    return figures.save(fig, path)


# ---------------------------------------------------------------------------------------------- the study


def run(session: runner.Session, cfg: Config) -> runner.Result:
    """The selected parts, each kept as it finishes (a part finished earlier is read back;
    :doc:`/studies/visual-tokens`): ``results.csv``, one row per model."""
    study = session.study
    key = jax.random.key(cfg.root_seed)
    selected = [(i, name) for i, name in enumerate(PARTS) if name in cfg.parts]
    rows = []
    with io.Progress(
        len(selected),
        desc="visual-tokens",
        unit="parts",
        done=sum(study.has(name) for _, name in selected),
        quiet=session.quiet,
    ) as progress:
        for i, name in selected:
            if study.has(name):
                rows += study.rows(name, lambda: [])
                progress.note(f"part {name}: done already ({study.part_path(name, '.json')})")
                continue
            progress.note(f"part {name} ...")
            with session.timed(name):
                part = study.rows(
                    name, lambda: run_part(name, cfg, jax.random.fold_in(key, i), progress=progress, study=study)
                )
            rows += part
            progress.note(f"part {name}: {len(part)} models in {session.timings[name + '_s']:.1f} s")
            progress.update()
    table = {c: np.asarray([r[c] for r in rows], object) for c in COLUMNS}
    return runner.Result(
        {"results.csv": table},
        data=dict(table=table, key=key),
        record=dict(parts=[name for _, name in selected], models=len(rows)),
        value=session.timings,
    )


def draw(session: runner.Session, cfg: Config, result: runner.Result) -> list[str]:
    """The heatmaps of the main part (:func:`heatmaps`) and ``grids.png`` (its model kept as the part
    ``grids``); returns their paths."""
    codes = session.part("grids", lambda: {"codes": grid_codes(cfg, jax.random.fold_in(result.data["key"], 99))})
    return heatmaps(session.out, result.data["table"], cfg) + [
        grids_png(session.path("grids.png"), cfg, None, codes["codes"])
    ]


# ---------------------------------------------------------------------------------------------- findings


COLLAPSE_RARE = 0.05  # a collapse rate below this (95% upper bound) is rare, above it common


def collapse_finding(table) -> Finding:
    """Finding 2a from the study's ``results.csv``: the collapse rate of the main grid's models in
    the cells where training is adequate (:func:`cell_verdict` at the largest budget: not
    capacity-limited, not at chance, loss flat), with an exact (Clopper-Pearson) 95%
    interval."""
    from scipy import stats as sps

    f = Finding(
        "2a",
        "Visual tokens: collapse where training is adequate",
        "Visual-token autoencoders collapse (the decoder names one token for most types) even where training "
        "is adequate.",
        'the published "Visual Token Diffusion Language Model" investigation (accuracy stuck at the majority '
        "token's frequency)",
        f"Main grid at its largest budget; a cell is adequately trained when the study's verdict for it is "
        f"reconstructs, plateau or collapse (not capacity, at chance or too few steps). Over the models of "
        f"those cells, the share flagged collapsed (dominant prediction > 0.9) with its exact 95% interval: "
        f"reproduced when the interval lies above {COLLAPSE_RARE:g} (collapse is common), refuted when it "
        f"lies below {COLLAPSE_RARE:g} (collapse is rare: with no collapsed model this needs "
        f"{int(np.log(0.025) / np.log(1 - COLLAPSE_RARE)) + 1} models), open otherwise.",
        study="visual-tokens",
    )
    part = F.strings(table, "part")
    main = part == "main"
    if not main.any():
        return F.missing(f, "no model of the main grid in results.csv")
    steps = F.numbers(table, "steps")
    budget = np.nanmax(steps[main])
    keys = ("vocab_size", "grid", "colours")
    cols = {k: F.numbers(table, k) for k in keys}
    mode = F.strings(table, "mode")
    collapsed = np.asarray([str(v).strip().lower() in ("1", "1.0", "true") for v in F.column(table, "collapsed")])
    nanmean = lambda a: float(np.nanmean(a)) if np.any(np.isfinite(a)) else float("nan")  # noqa: E731
    rows, n, k, counts = [], 0, 0, {}
    at = main & (steps == budget)
    cells = dict.fromkeys(
        (cols["vocab_size"][i], cols["grid"][i], cols["colours"][i], mode[i]) for i in np.flatnonzero(at)
    )
    for V, g, c, m in cells:
        sel = at & (cols["vocab_size"] == V) & (cols["grid"] == g) & (cols["colours"] == c) & (mode == m)
        mean = lambda name: nanmean(F.numbers(table, name)[sel])  # noqa: E731
        verdict = cell_verdict(
            mean("accuracy"),
            mean("dominant_freq"),
            mean("train_loss_drop_tail"),
            int(V),
            int(g),
            int(c),
            mean("train_loss_norm_last"),
        )
        counts[verdict] = counts.get(verdict, 0) + 1
        adequate = verdict in ("reconstructs", "plateau", "collapse")
        if adequate:
            n += int(sel.sum())
            k += int(collapsed[sel].sum())
        rows.append(
            [
                f"V={int(V)} {int(g)}x{int(g)}x{int(c)} {m}",
                verdict,
                "yes" if adequate else "no",
                f"{int(collapsed[sel].sum())} / {int(sel.sum())}",
                F.number(mean("accuracy")),
            ]
        )
    f = dataclasses.replace(
        f, header=("cell", "study's verdict", "adequate", "collapsed models", "accuracy"), rows=rows
    )
    if n == 0:
        return dataclasses.replace(f, verdict="open", basis=f"no adequately trained cell at {int(budget)} steps")
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    low, high = float(ci.low), float(ci.high)
    all_main = int(collapsed[main].sum())
    return dataclasses.replace(
        f,
        verdict="reproduced" if low > COLLAPSE_RARE else "refuted" if high < COLLAPSE_RARE else "open",
        basis=(
            f"{k} of {n} adequately trained models collapsed at {int(budget)} steps: rate "
            f"{F.interval(k / n, low, high)} (exact 95%); "
            f"{sum(counts.get(v, 0) for v in ('reconstructs', 'plateau', 'collapse'))} of {len(cells)} "
            f"cells adequate; {all_main} of {int(main.sum())} main-grid models collapsed at any budget"
        ),
    )


SPEC = runner.Spec(
    name="visual-tokens",
    config=Config,
    run=run,
    figures=draw,
    summary=lambda cfg, r: summarise(r.data["table"]).removesuffix("\n"),
    findings=lambda out: F.judge(out, "results.csv", "visual-tokens", lambda t: [collapse_finding(t)]),
    outputs=("results.csv",),
    figure_files=("heatmap_*.png", "grids.png"),
    selection=("parts", "preset"),
)  # which parts run, and a label


main = runner.entry(SPEC, __name__, returns="The timings (a dict).", about="``parts`` is left out of the stamp.")
