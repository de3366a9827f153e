"""The grid-diffusion study: does the two-stage visual-token language model (text tokens -> colour
grids by an autoencoder, then diffusion over grids) generate text, and how does it compare with
modelling the tokens directly? (``tokdyn study grid-diffusion --out DIR``)

:func:`main`, :class:`Config`. A visual-token autoencoder maps every token of a grammar corpus to an N x N grid of C colours;
DDPM and D3PM models over grid sequences, D3PM over token ids and an autoregressive transformer
(:mod:`tokdyn.models.sequence`) are trained (:func:`train_and_sample`) and their decoded samples
scored by :func:`tokdyn.stats.text.text_metrics` (:func:`evaluate`, :func:`held_out_nll`). It
writes ``results.csv``, ``samples.txt``, ``denoising.png``, ``kernels.png``,
``learning_curves.png``, ``summary.md`` and ``config.json``; every model is kept in ``DIR/parts/``
as it finishes, so a rerun resumes.

The steps, the outputs, resuming and the findings: :doc:`/studies/grid-diffusion`.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks, diffusion, io, stats, train
from tokdyn.experiment import findings as F
from tokdyn.experiment import runner
from tokdyn.experiment.findings import Finding
from tokdyn.experiment.presets import PRESETS
from tokdyn.experiment.study import Estimate, Study, digest, elements_fit, largest_option
from tokdyn.models import sequence as G
from tokdyn.models import vtae
from tokdyn.models.vtae import corpus
from tokdyn.stats import figures
from tokdyn.stats import text as TM

SCOPES = ("sequence", "single")
COLUMNS = (
    "scope",
    "model",
    "seed",
    "steps",
    "train_loss_first",
    "train_loss_last",
    "nan_step",
    *[c for m in TM.METRICS + ("nll",) for c in (m, m + "_low", m + "_high")],
)


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the study; saved as ``config.json``.

    Attributes:
      sentences: sentences of the grammar corpus (the training data).
      length: L, tokens per sequence (sentences are cut or padded with <pad> to L).
      grid: N: each token's grid has N x N cells.
      colours: C, colours per cell.
      ae_steps: optimiser steps of the autoencoder.
      models: sequence-level models, names from tokdyn.models.sequence.MODELS.
      single_models: single-grid models (one grid per sample, MLP denoiser); names of grid models.
      elements: what the sequence-level grid denoisers attend over: grids (one element per grid)
        or cells (one per cell: L * N * N elements, about N * N times the compute).
      T: diffusion steps.
      width: width of every model.
      depth: transformer blocks of every model.
      steps: optimiser steps of every model.
      batch_size: sequences per step.
      learning_rate: peak Adam learning rate.
      lam: weight of the auxiliary cross-entropy of the D3PM hybrid loss.
      seeds: models per kind, trained together.
      n_samples: samples per model and seed.
      ddim_steps: DDIM steps of the extra grid_ddpm sampler (0: none).
      n_resamples: bootstrap resamples of the intervals.
      root_seed: root PRNG seed.
      preset: '' or 'quick' (set by --quick: a smoke-sized run; summary.md's first line says so).
    """

    sentences: int = 5000
    length: int = 10
    grid: int = 3
    colours: int = 3
    ae_steps: int = 1000
    models: tuple[str, ...] = G.MODELS
    single_models: tuple[str, ...] = ("grid_ddpm", "grid_d3pm_uniform", "grid_d3pm_absorbing")
    elements: str = "grids"
    T: int = 200
    width: int = 64
    depth: int = 2
    steps: int = 3000
    batch_size: int = 64
    learning_rate: float = 2e-3
    lam: float = 0.01
    seeds: int = 3
    n_samples: int = 512
    ddim_steps: int = 50
    n_resamples: int = 500
    root_seed: int = 0
    preset: str = ""  # a label only: left out of the directory's stamp (SPEC.selection)

    def validate(self) -> "Config":
        """Check every field (enough grids for the grammar's tokens, and every model's configuration);
        raise ``ValueError``/``TypeError`` naming the field. Returns ``self``."""
        for name in (
            "sentences",
            "length",
            "grid",
            "ae_steps",
            "T",
            "width",
            "depth",
            "steps",
            "batch_size",
            "seeds",
            "n_samples",
            "n_resamples",
        ):
            _checks.positive_int(name, getattr(self, name))
        _checks.positive_int("colours", self.colours, minimum=2)
        _checks.positive_int("ddim_steps", self.ddim_steps, minimum=0)
        _checks.seed("root_seed", self.root_seed)
        for name in ("steps", "ae_steps", "root_seed"):  # step counters and seeds are int32 inside the programs
            if getattr(self, name) > INT32_MAX:
                raise ValueError(
                    f"{name} must be at most {INT32_MAX:,} (an int32 inside the compiled programs), "
                    f"got {getattr(self, name):,}"
                )
        if self.ddim_steps > self.T:
            raise ValueError(f"ddim_steps must be <= T={self.T}, got {self.ddim_steps}")
        if self.n_samples < 2:
            raise ValueError(f"n_samples must be >= 2 (the intervals resample them), got {self.n_samples}")
        for name in ("models", "single_models"):
            value = getattr(self, name)
            if not isinstance(value, (tuple, list)):
                raise TypeError(f"{name} must be a tuple of model names, got {value!r}")
            _checks.distinct(name, value)  # each model is one condition: a repeat would count its seeds twice
        if not self.models and not self.single_models:
            raise ValueError(
                "models and single_models must not both be empty: nothing to train (e.g. --models "
                f"{','.join(G.MODELS)})"
            )
        for m in self.models:
            _checks.choice("models", m, G.MODELS)
        for m in self.single_models:
            _checks.choice("single_models", m, [x for x in G.MODELS if x.startswith("grid_")])
        _checks.choice("elements", self.elements, G.ELEMENTS)
        vocab = len(corpus.grammar_vocab()[0])
        cells = self.grid * self.grid  # a huge grid gives enough grids: no huge power computed (2 ** 64 > vocab)
        if cells < 64 and self.colours**cells < vocab:
            raise ValueError(
                f"grid={self.grid} and colours={self.colours} give {self.colours ** (self.grid**2)} "
                f"grids, fewer than the {vocab} tokens of the grammar: every token needs its own grid"
            )
        _checks.real("learning_rate", self.learning_rate, low=0.0, low_open=True)
        _checks.real("lam", self.lam, low=0.0)
        for m in self.models + self.single_models:
            self.model(m, "sequence" if m in self.models else "single").validate()
        _checks.choice("preset", self.preset, PRESETS)
        return self

    def estimate(self) -> Estimate:
        """The largest allocation (the activations of the ``seeds`` models trained together, or of
        ``n_samples`` samples drawn at once, the models' parameters and optimiser state, the corpus,
        the bootstrap's resamples, the noise schedule), naming the option that makes it large, and a
        rough time on the reference CPU (calibrated on the default run, 19 min): the FLOPs scaled by
        this machine's ``training`` rate, what does not grow with the model (a cost per step,
        :data:`MODEL_COMPILE` a model, 30 s) by its ``host`` rate.
        :class:`tokdyn.experiment.study.Refused` naming the option when one array would hold more
        elements than XLA can index."""
        L, P, C, W, D = self.length, self.grid * self.grid, self.colours, self.width, self.depth
        E = L * P if self.elements == "cells" else L  # elements the grid models attend over
        heads = 4 if W % 4 == 0 else 1
        per_sequence = E * W * (8 * D + 4) + heads * E * E * D * 2 + L * P * max(C, 29) * 4  # floats held per sequence
        groups = {  # (options that scale it, elements of its largest array, bytes)
            "training": (
                ("seeds", "batch_size", "length", "grid", "width", "depth", "colours"),
                self.seeds * self.batch_size * max(heads * E * E, E * W, L * P * C),
                4 * self.seeds * self.batch_size * per_sequence,
            ),
            "sampling": (
                ("n_samples", "length", "grid", "width", "depth", "colours"),
                self.n_samples * max(heads * E * E, E * W, L * P * C),
                4 * self.n_samples * per_sequence,
            ),
            "corpus": (
                ("sentences", "length", "grid"),
                self.sentences * L * P,
                4 * self.sentences * (L * P + 2 * L + 32),
            ),
            "bootstrap": (
                ("n_resamples", "n_samples"),
                self.n_resamples * self.n_samples,
                8 * self.n_resamples * self.n_samples * 4,
            ),
            "schedule": (("T",), self.T + 1, 8 * 16 * (self.T + 1)),
            "keys": (("seeds",), 2 * self.seeds, 8 * self.seeds * 64),
            "parameters": (
                ("width", "depth", "seeds"),
                max(4 * W * W, W * max(P * C, 29) * max(1, L)),
                4 * 4 * self.seeds * (12 * D * W * W + 2 * W * (P * C + 29 + L)),
            ),  # with Adam's moments
        }
        for names, elements, _ in groups.values():
            elements_fit(largest_option(self, names), elements)
        names, _, memory = max(groups.values(), key=lambda g: g[2])
        n = len(self.models) + len(self.single_models)
        step_flops = 24 * self.seeds * self.batch_size * (E * W * W * D + heads * E * E * W * D)
        sample_flops = 8 * self.seeds * self.n_samples * self.T * (E * W * W * D + heads * E * E * W * D)
        flops = n * (self.steps * step_flops + sample_flops) / 2e10
        steps = n * (self.steps * 5e-4 + self.T * self.seeds * 5e-3 + MODEL_COMPILE) + self.ae_steps * 5e-3 + 30.0
        return Estimate(
            memory=float(memory),
            option=largest_option(self, names),
            models=n * self.seeds,
            work={"training": flops, "host": steps},
        )

    @classmethod
    def quick(cls) -> "Config":
        """A one-minute version (tests, smoke runs)."""
        return cls(
            sentences=300,
            length=10,
            ae_steps=300,
            T=20,
            width=32,
            depth=1,
            steps=100,
            batch_size=32,
            seeds=2,
            n_samples=32,
            ddim_steps=5,
            n_resamples=50,
            preset="quick",
        )

    def autoencoder(self) -> vtae.Config:
        """The first stage's configuration: a visual-token autoencoder from the grammar's vocabulary to
        ``grid`` x ``grid`` grids of ``colours`` colours (Gumbel straight-through encoder, MLP
        decoder), trained for ``ae_steps`` steps."""
        return vtae.Config(
            vocab_size=len(corpus.grammar_vocab()[0]),
            grid=self.grid,
            colours=self.colours,
            mode="gumbel_st",
            decoder="mlp",
            hidden=64,
            batch_size=64,
            train=train.Config(
                steps=self.ae_steps,
                steps_per_call=self.ae_steps // 10 if self.ae_steps % 10 == 0 else self.ae_steps,
                warmup=0,
                decay="constant",
                clip_norm=0.0,
            ),
        )

    def model(self, name: str, scope: str) -> G.Config:
        """The configuration of the model ``name`` in ``scope``: ``"sequence"`` (``length`` elements,
        a transformer) or ``"single"`` (one grid per sample, an MLP), with this study's width, depth,
        steps and batch."""
        single = scope == "single"
        return G.Config(
            model=name,
            length=1 if single else self.length,
            cells=self.grid * self.grid,
            colours=self.colours,
            vocab_size=len(corpus.grammar_vocab()[0]),
            T=self.T,
            architecture="mlp" if single else "transformer",
            elements=self.elements,
            width=self.width,
            depth=self.depth,
            heads=4 if self.width % 4 == 0 else 1,
            batch_size=self.batch_size,
            train=train.Config(
                steps=self.steps,
                steps_per_call=train.log_interval(self.steps),
                warmup=max(1, min(100, self.steps // 10)),
                decay="cosine",
                final_fraction=0.1,
                clip_norm=1.0,
            ),
        )

    def runs(self) -> list[tuple[str, str]]:
        """``(scope, model)`` of every model kind, in the order they train: ``models``, then
        ``single_models``."""
        return [("sequence", m) for m in self.models] + [("single", m) for m in self.single_models]


INT32_MAX = 2**31 - 1


# ---------------------------------------------------------------------------------------------- stages


def load_corpus(cfg: Config):
    """``(corpus, sentences (N, L), held_out (n_samples, L))`` of the grammar (the held-out
    sentences from another stream, for the likelihood)."""
    root = jax.random.key(cfg.root_seed)
    c = corpus.grammar_corpus(jax.random.fold_in(root, 0), cfg.sentences)
    held = corpus.grammar_corpus(jax.random.fold_in(root, 3), cfg.n_samples)
    return c, corpus.sentences(c.tokens, cfg.length), corpus.sentences(held.tokens, cfg.length)


AE_LEARNING_RATE = 1e-2  # the autoencoder's peak learning rate
MODEL_COMPILE = 16.0  # seconds of host work a model (its compiles) on the reference CPU: the quick preset's
# models took 10-20 s each, compiles most of it (benchmarks/README.md, the time estimates)


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
        io.set_aside(path, "it holds other arrays than this version of the study writes")
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
        jax.random.fold_in(jax.random.key(cfg.root_seed), 2), G.MODELS.index(name) + (100 if scope == "single" else 0)
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


def _sampled(cfg: Config, mcfg: G.Config, keys, data, dry: bool = False) -> dict:
    keys, hp = train.grid(keys, G.Hparams(learning_rate=cfg.learning_rate, lam=cfg.lam))
    if dry:  # shapes only (for reading a stored result back)
        state, curves = jax.vmap(lambda k, h: G.train.jitted(k, mcfg, h, jnp.asarray(data)))(keys, hp)
    else:
        res = train.train_many(G.trainer(mcfg), G.inputs(mcfg, data), keys, hp)
        state, curves = res.state, res.curves
    sample = G.sample if not dry else G.sample.jitted
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


# ---------------------------------------------------------------------------------------------- evaluation


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
            np.asarray(G.nll_bound(key, jax.tree_util.tree_map(lambda a, s=s: a[s], params), mcfg, jnp.asarray(held)))
            for s in range(cfg.seeds)
        ]
    )


def evaluate(cfg: Config, results: dict, ae_params, sentences, vocab, nll=None) -> tuple[dict, dict]:
    """``results.csv``'s columns, and per model the decoded samples of seed 0.

    Args:
      cfg: the study's :class:`Config`.
      results: (scope, model) -> :func:`train_and_sample`'s dict.
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
                    tokens, conf = G.decode_grids(ae_params, acfg, x)
                else:
                    tokens, conf = x, None
                if scope == "single":
                    ref = sentences[sentences != corpus.PAD][:, None]  # every word of the corpus, one per row
                    m = TM.text_metrics(
                        tokens, ref, len(vocab), eos=-1, confidence=conf, seed=s, n_resamples=cfg.n_resamples
                    )
                else:
                    m = TM.text_metrics(
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
                        " ".join(vocab[i] for i in sent) for sent in TM.cut(tokens, eos if scope == "sequence" else -1)
                    ]
    return io.to_columns(rows, COLUMNS), texts


# ---------------------------------------------------------------------------------------------- figures


PALETTE = np.array(
    [
        [0.85, 0.2, 0.15],
        [0.15, 0.55, 0.25],
        [0.2, 0.35, 0.85],
        [0.95, 0.8, 0.1],
        [0.55, 0.25, 0.65],
        [0.1, 0.75, 0.8],
        [0.95, 0.5, 0.1],
        [0.5, 0.3, 0.1],
    ]
)
MASK_COLOUR = np.array([0.6, 0.6, 0.6])


def _palette(c: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    extra = rng.uniform(0.1, 0.9, size=(max(0, c - len(PALETTE)), 3))
    return np.concatenate([PALETTE, extra])[:c]


def plot_kernels(out: str, cfg: Config) -> str:
    """P(x_t = x_0) over t: uniform (cosine), absorbing, and the published kernel (stay = abar_t,
    the rest on the other colours); dots: the share over 10^5 Gumbel-max draws."""
    C, T = cfg.colours, cfg.T
    fig = figures.figure((6.5, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    ts = np.arange(T + 1)
    key = jax.random.key(cfg.root_seed)
    for kernel, colour in (("uniform", "C0"), ("absorbing", "C1")):
        proc = diffusion.discrete(kernel, C, T=T)
        keep = np.asarray(proc.alpha_bar) + (1 - np.asarray(proc.alpha_bar)) * (1.0 / C if kernel == "uniform" else 0)
        ax.plot(ts, keep, color=colour, label=f"{kernel} (D3PM): P(x_t = x_0)")
        if kernel == "absorbing":
            ax.plot(ts, 1 - np.asarray(proc.alpha_bar), color=colour, ls=":", label="absorbing: P(x_t = mask)")
        marks = np.linspace(1, T, 8).astype(int)
        x0 = jnp.zeros((100_000,), jnp.int32)
        mc = [float(jnp.mean(diffusion.q_sample_discrete(jax.random.fold_in(key, t), proc, x0, t) == 0)) for t in marks]
        ax.plot(marks, mc, "o", color=colour, ms=4)
    abar = np.asarray(diffusion.discrete("uniform", C, T=T).alpha_bar)
    ax.plot(ts, abar, color="C3", ls="--", label="published kernel (stay = abar_t, rest on other colours)")
    ax.axhline(1.0 / C, color="0.5", lw=0.8)
    ax.text(T, 1.0 / C, " 1/C", va="center", fontsize=8)
    ax.set_xlabel("t")
    ax.set_ylabel("probability")
    ax.set_title(f"Marginal of the original colour, C = {C}, T = {T}")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return figures.save(fig, os.path.join(out, "kernels.png"), dpi=110)


def _reverse_trajectory(key, mcfg: G.Config, params, times) -> dict:
    """One sample's states at ``times`` along the reverse process (grid models)."""
    proc = mcfg.process()
    fn = jax.jit(lambda x, t: G.apply(params, mcfg, x, jnp.full((1,), t, jnp.int32)))
    keep = {}
    if mcfg.continuous:
        x = jax.random.normal(jax.random.fold_in(key, 0), (1, *mcfg.sample_shape, mcfg.colours))
        step = jax.jit(lambda k, x, t: diffusion.ddpm_step(k, proc, x, t, fn(x, t), 1.0))
    else:
        pi = diffusion.stationary(proc)
        x = jax.random.categorical(
            jax.random.fold_in(key, 0), jnp.log(jnp.maximum(pi, 1e-30)), shape=(1, *mcfg.sample_shape)
        ).astype(jnp.int32)

        def step_d(k, x, t):
            if t == 1:
                return jax.random.categorical(k, fn(x, t)).astype(jnp.int32)
            logits = diffusion.posterior_logits(proc, jax.nn.softmax(fn(x, t), -1), x, t)
            return jax.random.categorical(k, logits).astype(jnp.int32)

        step = step_d
    for t in range(mcfg.T, 0, -1):
        if t in times:
            keep[t] = np.asarray(x[0])
        x = step(jax.random.fold_in(key, t), x, t)
    keep[0] = np.asarray(x[0])
    return keep


def plot_denoising(out: str, cfg: Config, results: dict, codes) -> str | None:
    """Draw ``denoising.png``: forward noising and reverse trajectories of the grid models.

    Top rows: one token's grid noised to several t by each grid kernel; bottom rows: the first
    grid of a sequence along each grid model's reverse trajectory (seed 0).

    Args:
      out: the directory of the figure.
      cfg: the study's :class:`Config`.
      results: (scope, model) -> :func:`train_and_sample`'s dict.
      codes: (V, P) int, each token's grid of P colour cells.

    Returns:
      The figure's path, or None without a grid model in ``results``.
    """
    grid_models = [m for m in ("grid_ddpm", "grid_d3pm_uniform", "grid_d3pm_absorbing") if ("sequence", m) in results]
    if not grid_models:
        return None
    N, C, T = cfg.grid, cfg.colours, cfg.T
    pal = np.concatenate([_palette(C), MASK_COLOUR[None]])
    times = sorted({0, max(1, T // 10), T // 4, T // 2, (3 * T) // 4, T})
    x0 = jnp.asarray(codes[corpus.grammar_vocab()[0].index("cat")])
    key = jax.random.key(cfg.root_seed + 11)
    rows = []
    for m in grid_models:
        mcfg = cfg.model(m, "sequence")
        proc = mcfg.process()
        noised = []
        for t in times:
            k = jax.random.fold_in(key, t)
            if mcfg.continuous:
                xt = np.asarray(diffusion.q_sample(k, proc, G.grid_signal(x0, C), t)[0])
                img = np.clip((xt + 1) / 2, 0, 1) @ _palette(C)  # channel weights -> colour
                noised.append(np.clip(img, 0, 1).reshape(N, N, 3))
            else:
                noised.append(pal[np.asarray(diffusion.q_sample_discrete(k, proc, x0, t))].reshape(N, N, 3))
        rows.append((f"{m}: q(x_t | x_0)", noised))
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a[0]), results[("sequence", m)]["params"])
        traj = _reverse_trajectory(key, mcfg, params, set(times))
        imgs = []
        for t in times:
            g = traj[t][0]  # the first grid of the sequence
            if mcfg.continuous:
                imgs.append(np.clip(np.clip((g + 1) / 2, 0, 1) @ _palette(C), 0, 1).reshape(N, N, 3))
            else:
                imgs.append(pal[g].reshape(N, N, 3))
        rows.append((f"{m}: reverse", imgs))
    fig = figures.figure((1.3 * len(times) + 1.5, 1.35 * len(rows)))
    for i, (label, imgs) in enumerate(rows):
        for j, img in enumerate(imgs):
            ax = fig.add_subplot(len(rows), len(times), i * len(times) + j + 1)
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"t = {times[j]}", fontsize=8)
            if j == 0:
                ax.set_ylabel(label.replace(": ", "\n"), fontsize=6, rotation=0, ha="right", va="center")
    fig.subplots_adjust(left=0.22, right=0.99, top=0.93, bottom=0.02, hspace=0.25, wspace=0.1)
    return figures.save(fig, os.path.join(out, "denoising.png"), dpi=110)


def plot_curves(out: str, cfg: Config, results: dict) -> str:
    """Training loss over steps of every model and seed, relative to its first logged interval, one
    panel per scope, into ``learning_curves.png``; returns its path."""
    fig = figures.figure((9, 3.4))
    for i, scope in enumerate(SCOPES):
        ax = fig.add_subplot(1, 2, i + 1)
        for (sc, name), r in results.items():
            if sc != scope:
                continue
            curves = np.asarray(r["curves"]["loss"])  # (S, n_logs)
            x = (np.arange(curves.shape[1]) + 1) * cfg.model(name, scope).train.steps_per_call
            base = curves[:, :1]
            lines = ax.plot(x, (curves / base).T, lw=0.8, alpha=0.6)
            for ln in lines[1:]:
                ln.set_label(None)
            lines[0].set_label(name)
            for ln in lines:
                ln.set_color(lines[0].get_color())
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss / first interval's")
        ax.set_title(f"{scope} models")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return figures.save(fig, os.path.join(out, "learning_curves.png"), dpi=110)


# ---------------------------------------------------------------------------------------------- summary


def _mean_sd(table: dict, scope: str, model: str, metric: str) -> tuple[float, float, int]:
    sel = [i for i in range(len(table["model"])) if table["scope"][i] == scope and table["model"][i] == model]
    v = np.asarray([table[metric][i] for i in sel], np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, v.size


def summary(cfg: Config, table: dict, ae_accuracy: float, reference: dict) -> str:
    """The text of ``summary.md``.

    The setup, the autoencoder's accuracy, the training sentences' own metrics, per scope each
    model's metrics (mean ± sd over seeds), the best grid model against the best token model, and
    the models that went non-finite.

    Args:
      cfg: the study's :class:`Config`.
      table: :func:`evaluate`'s table (a dict of columns).
      ae_accuracy: the fraction of token grids the autoencoder decodes back to their token.
      reference: :func:`tokdyn.stats.text.text_metrics` of the training sentences against
        themselves.

    Returns:
      The Markdown text.
    """
    lines = [
        f"# Grid diffusion: {cfg.sentences} grammar sentences (L = {cfg.length}), {cfg.grid}x{cfg.grid} grids of "
        f"{cfg.colours} colours, T = {cfg.T}, {cfg.steps} steps x batch {cfg.batch_size}, width {cfg.width}, "
        f"depth {cfg.depth}, {cfg.seeds} seeds, {cfg.n_samples} samples each",
        "",
        f"First stage: the autoencoder decodes {100 * ae_accuracy:.1f}% of the {len(corpus.grammar_vocab()[0])} "
        "token grids back to their token.",
        f"Training sentences: bigram KL to themselves 0, grammatical bigrams "
        f"{reference['grammatical_bigrams']:.3f}, distinct-2 {reference['distinct_2']:.3f}.",
        f"nll: nats per held-out sentence (exact for token_ar, the variational bound for D3PM); the grammar's "
        f"entropy is {corpus.grammar_entropy():.3f} nats per sentence, the floor.",
        "",
    ]
    shown = (
        "valid",
        "grammatical_sentences",
        "grammatical_bigrams",
        "bigram_kl",
        "unigram_kl",
        "distinct_2",
        "novel",
        "nll",
    )
    for scope in SCOPES:
        models = list(dict.fromkeys(m for s, m in zip(table["scope"], table["model"]) if s == scope))
        if not models:
            continue
        lines += [
            f"## {scope} models (mean ± sd over seeds)",
            "",
            "| model | " + " | ".join(shown) + " | final loss |",
            "|---" * (len(shown) + 2) + "|",
        ]
        for m in models:
            cells = []
            for metric in shown:
                mu, sd, n = _mean_sd(table, scope, m, metric)
                cells.append("—" if n == 0 else f"{mu:.3f} ± {sd:.3f}")
            mu, _, _ = _mean_sd(table, scope, m, "train_loss_last")
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {mu:.4g} |")
        lines.append("")
    seq = [m for s, m in zip(table["scope"], table["model"]) if s == "sequence"]
    grid = [m for m in dict.fromkeys(seq) if m.startswith("grid_")]
    token = [m for m in dict.fromkeys(seq) if m.startswith("token_")]
    if grid and token:
        g = max(grid, key=lambda m: _mean_sd(table, "sequence", m, "grammatical_sentences")[0])
        t = max(token, key=lambda m: _mean_sd(table, "sequence", m, "grammatical_sentences")[0])
        gv, tv = (_mean_sd(table, "sequence", m, "grammatical_sentences")[0] for m in (g, t))
        gk, tk = (_mean_sd(table, "sequence", m, "bigram_kl")[0] for m in (g, t))
        lines += [
            "## Grid route vs token baselines",
            "",
            f"Best grid model: {g} ({100 * gv:.1f}% grammatical sentences, bigram KL {gk:.3f}); best token "
            f"model: {t} ({100 * tv:.1f}%, bigram KL {tk:.3f}). Same width, depth, steps and batch.",
            "",
        ]
    failed = [(s, m, int(n)) for s, m, n in zip(table["scope"], table["model"], table["nan_step"]) if int(n) >= 0]
    if failed:
        lines.append("Models that went non-finite (scope, model, first step): " + ", ".join(map(str, failed)))
    return "\n".join(lines)


def samples_text(texts: dict, per_model: int = 20) -> str:
    """``samples.txt``: the first ``per_model`` decoded samples of each model (``texts``:
    :func:`evaluate`'s samples of seed 0), under a line naming the model."""
    lines = []
    for name, sents in texts.items():
        lines += [f"== {name} (seed 0, first {min(per_model, len(sents))} of {len(sents)})", *sents[:per_model], ""]
    return "".join(line + "\n" for line in lines)


# ---------------------------------------------------------------------------------------------- findings


GRID_MARGIN = 0.05  # "as well as" the token models: within this share of grammatical sentences


def grid_route_finding(table) -> Finding:
    """Finding 2b from the study's ``results.csv``: the share of grammatical sentences of the best
    grid model against the best token model (sequence scope), each with its 95% interval over seeds."""
    f = Finding(
        "2b",
        "Grid diffusion: the two-stage route against modelling tokens directly",
        "The two-stage visual-token language model (diffusion over colour grids, decoded by the autoencoder) "
        "generates text as well as a model of the tokens themselves of the same size and budget.",
        "the published visual-token language model's design (its diffusion stage was planned, never shown)",
        f"Share of grammatical sentences among the samples, per model kind a 95% interval over seeds (at least "
        f"{F.MIN_SEEDS} seeds). The best grid model and the best token model (highest means) are compared with "
        f"a margin of {GRID_MARGIN:g}: reproduced when the grid model's lower bound is within the margin of "
        f"the token model's upper bound or above it, refuted when the grid model's upper bound lies more than "
        f"the margin below the token model's lower bound, open otherwise.",
        study="grid-diffusion",
    )
    scope, model, value = (
        F.strings(table, "scope"),
        F.strings(table, "model"),
        F.numbers(table, "grammatical_sentences"),
    )
    seq = scope == "sequence"
    stats_of = {}
    for m in dict.fromkeys(model[seq].tolist()):
        stats_of[m] = F.seed_interval(value[seq & (model == m)], F.RATE)
    f = dataclasses.replace(
        f,
        header=("model", "grammatical sentences: mean [95% interval over seeds]", "seeds"),
        rows=[[m, F.interval(*s[:3]), str(s[3])] for m, s in stats_of.items()],
    )
    grid = {m: s for m, s in stats_of.items() if m.startswith("grid_")}
    token = {m: s for m, s in stats_of.items() if m.startswith("token_")}
    if not grid or not token:
        return dataclasses.replace(f, verdict="open", basis="the run lacks grid models or token models")
    g = max(grid, key=lambda m: grid[m][0])
    t = max(token, key=lambda m: token[m][0])
    (gm, gl, gh, gn), (tm, tl, th, tn) = grid[g], token[t]
    basis = (
        f"best grid model {g} {F.interval(gm, gl, gh)} vs best token model {t} {F.interval(tm, tl, th)} "
        f"({gn} and {tn} seeds)"
    )
    if min(gn, tn) < F.MIN_SEEDS or not (np.isfinite(gl) and np.isfinite(tl)):
        verdict = "open"
    elif gl >= th - GRID_MARGIN:
        verdict = "reproduced"
    elif gh < tl - GRID_MARGIN:
        verdict = "refuted"
    else:
        verdict = "open"
    return dataclasses.replace(f, verdict=verdict, basis=basis)


# ---------------------------------------------------------------------------------------------- the study


def run(session: runner.Session, cfg: Config) -> runner.Result:
    """The autoencoder, then every model of ``cfg.runs()`` (each kept as it finishes:
    :doc:`/studies/grid-diffusion`), the held-out likelihoods and the sample metrics: ``results.csv``,
    ``samples.txt``."""
    study = session.study
    c, sentences, held = load_corpus(cfg)
    vocab = c.vocab
    ae_params, codes, ae_acc = autoencoder(cfg, study)
    grids = codes[sentences]  # (N, L, P)
    results = {}
    with io.Progress(len(cfg.runs()), desc="grid-diffusion", unit="models", quiet=session.quiet) as progress:
        for scope, name in cfg.runs():
            progress.note(f"{scope} {name}")
            mcfg = cfg.model(name, scope)
            if scope == "single":
                words = sentences[sentences != corpus.PAD]
                data = codes[words][:, None] if mcfg.on_grids else words[:, None]
            else:
                data = grids if mcfg.on_grids else sentences
            results[(scope, name)] = train_and_sample(cfg, scope, name, data, study)
            progress.update(1)
    nll = {}
    for scope, name in cfg.runs():
        if scope == "sequence":
            x = codes[held] if name.startswith("grid_") else held
            nll[(scope, name)] = study.part(
                f"{scope}__{name}_nll",
                lambda: {"value": held_out_nll(cfg, scope, name, results[(scope, name)]["params"], x)},
                key=model_key(cfg, scope, name),
            )["value"]
    table, texts = evaluate(cfg, results, ae_params, sentences, vocab, nll)
    reference = TM.text_metrics(
        sentences[: cfg.n_samples],
        sentences,
        len(vocab),
        eos=corpus.EOS,
        allowed=corpus.grammar_bigrams(),
        grammatical=corpus.is_grammatical,
        n_resamples=2,
    )
    session.timings["models_s"] = {f"{scope}/{name}": r["seconds"] for (scope, name), r in results.items()}
    return runner.Result(
        {"results.csv": table, "samples.txt": samples_text(texts)},
        data=dict(table=table, ae_accuracy=ae_acc, reference=reference, results=results, codes=codes),
        record={"autoencoder_accuracy": ae_acc},
    )


def draw(session: runner.Session, cfg: Config, result: runner.Result) -> list:
    """``kernels.png``, ``denoising.png`` (with grid models) and ``learning_curves.png``; returns their paths."""
    out, results = session.out, result.data["results"]
    return [
        plot_kernels(out, cfg),
        plot_denoising(out, cfg, results, result.data["codes"]),
        plot_curves(out, cfg, results),
    ]


SPEC = runner.Spec(
    name="grid-diffusion",
    config=Config,
    run=run,
    figures=draw,
    summary=lambda cfg, r: summary(cfg, r.data["table"], r.data["ae_accuracy"], r.data["reference"]),
    findings=lambda out: F.judge(out, "results.csv", "grid-diffusion", lambda t: [grid_route_finding(t)]),
    outputs=("results.csv", "samples.txt"),
    figure_files=("denoising.png", "kernels.png", "learning_curves.png"),
    selection=("models", "single_models", "preset"),
)  # they only choose which models run (or label it)


main = runner.entry(SPEC, __name__, returns="True when it finished.")
