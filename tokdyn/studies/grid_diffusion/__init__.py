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

The study's parts, one concept a module (every public name is re-exported here:
``tokdyn.studies.grid_diffusion.Config``, ``.evaluate``, ...):

- :mod:`~tokdyn.studies.grid_diffusion.config`     :class:`Config`: the fields, their checks, the models' configurations, the estimate
- :mod:`~tokdyn.studies.grid_diffusion.training`   the corpus, the autoencoder, every model trained and sampled, each kept
- :mod:`~tokdyn.studies.grid_diffusion.evaluation` held-out likelihoods and the samples' metrics: ``results.csv``
- :mod:`~tokdyn.studies.grid_diffusion.report`     ``summary.md`` and ``samples.txt``
- :mod:`~tokdyn.studies.grid_diffusion.findings`   finding 2b
- :mod:`~tokdyn.studies.grid_diffusion.plots`      the figures

Here: :func:`run` (the study's computation, stage by stage), :func:`draw`, :data:`SPEC` and :func:`main`.
"""

from __future__ import annotations

from tokdyn import io
from tokdyn.experiment import runner
from tokdyn.experiment.findings import judge
from tokdyn.models.vtae import corpus
from tokdyn.stats import text as text_stats

# (importing the parts binds each as an attribute: tokdyn.studies.grid_diffusion.training, ...)
from tokdyn.studies.grid_diffusion.config import (  # noqa: F401
    AE_LEARNING_RATE,
    COLUMNS,
    INT32_MAX,
    MODEL_COMPILE,
    SCOPES,
    Config,
)
from tokdyn.studies.grid_diffusion.evaluation import evaluate, held_out_nll
from tokdyn.studies.grid_diffusion.findings import GRID_MARGIN, grid_route_finding  # noqa: F401
from tokdyn.studies.grid_diffusion.plots import MASK_COLOUR, PALETTE, plot_curves, plot_denoising, plot_kernels  # noqa: F401
from tokdyn.studies.grid_diffusion.report import samples_text, summary
from tokdyn.studies.grid_diffusion.training import (  # noqa: F401
    autoencoder,
    autoencoder_key,
    kept_tree,
    load_corpus,
    model_key,
    train_and_sample,
)


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
    reference = text_stats.text_metrics(
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
    findings=lambda out: judge(out, "results.csv", "grid-diffusion", lambda t: [grid_route_finding(t)]),
    outputs=("results.csv", "samples.txt"),
    figure_files=("denoising.png", "kernels.png", "learning_curves.png"),
    selection=("models", "single_models", "preset"),
)  # they only choose which models run (or label it)


main = runner.entry(SPEC, __name__, returns="True when it finished.")
