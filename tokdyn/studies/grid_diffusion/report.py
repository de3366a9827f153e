"""The grid-diffusion study's text outputs: ``summary.md`` (:func:`summary`) and ``samples.txt``
(:func:`samples_text`)."""

from __future__ import annotations

import numpy as np

from tokdyn.models.vtae import corpus
from tokdyn.studies.grid_diffusion.config import SCOPES, Config


def _mean_sd(table: dict, scope: str, model: str, metric: str) -> tuple[float, float, int]:
    sel = [i for i in range(len(table["model"])) if table["scope"][i] == scope and table["model"][i] == model]
    v = np.asarray([table[metric][i] for i in sel], np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, v.size


def _route_lines(table: dict) -> list[str]:
    """The lines comparing the best grid model with the best token model (sequence scope), by their
    mean share of grammatical sentences; none without both kinds."""
    seq = [m for s, m in zip(table["scope"], table["model"]) if s == "sequence"]
    grid = [m for m in dict.fromkeys(seq) if m.startswith("grid_")]
    token = [m for m in dict.fromkeys(seq) if m.startswith("token_")]
    if not (grid and token):
        return []
    g = max(grid, key=lambda m: _mean_sd(table, "sequence", m, "grammatical_sentences")[0])
    t = max(token, key=lambda m: _mean_sd(table, "sequence", m, "grammatical_sentences")[0])
    gv, tv = (_mean_sd(table, "sequence", m, "grammatical_sentences")[0] for m in (g, t))
    gk, tk = (_mean_sd(table, "sequence", m, "bigram_kl")[0] for m in (g, t))
    return [
        "## Grid route vs token baselines",
        "",
        f"Best grid model: {g} ({100 * gv:.1f}% grammatical sentences, bigram KL {gk:.3f}); best token "
        f"model: {t} ({100 * tv:.1f}%, bigram KL {tk:.3f}). Same width, depth, steps and batch.",
        "",
    ]


def summary(cfg: Config, table: dict, ae_accuracy: float, reference: dict) -> str:
    """The text of ``summary.md``.

    The setup, the autoencoder's accuracy, the training sentences' own metrics, per scope each
    model's metrics (mean ± sd over seeds), the best grid model against the best token model, and
    the models that went non-finite.

    Args:
      cfg: the study's :class:`Config`.
      table: :func:`~tokdyn.studies.grid_diffusion.evaluate`'s table (a dict of columns).
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
    lines += _route_lines(table)
    failed = [(s, m, int(n)) for s, m, n in zip(table["scope"], table["model"], table["nan_step"]) if int(n) >= 0]
    if failed:
        lines.append("Models that went non-finite (scope, model, first step): " + ", ".join(map(str, failed)))
    return "\n".join(lines)


def samples_text(texts: dict, per_model: int = 20) -> str:
    """``samples.txt``: the first ``per_model`` decoded samples of each model (``texts``:
    :func:`~tokdyn.studies.grid_diffusion.evaluate`'s samples of seed 0), under a line naming the model."""
    lines = []
    for name, sents in texts.items():
        lines += [f"== {name} (seed 0, first {min(per_model, len(sents))} of {len(sents)})", *sents[:per_model], ""]
    return "".join(line + "\n" for line in lines)
