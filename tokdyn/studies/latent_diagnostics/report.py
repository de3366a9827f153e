"""The latent-diagnostics study's ``summary.md`` (:func:`summary`): a table of each part's rows,
means over seeds."""

from __future__ import annotations

import numpy as np

from tokdyn.studies.latent_diagnostics.config import FACTS


def _mean(rows, key, **match):
    vals = [r[key] for r in rows if all(r.get(k) == v for k, v in match.items())]
    return float(np.mean(vals)) if vals else float("nan")


def significant(r) -> bool:
    """The block's gain over no block has a 95% interval above 0 (a share of it means something)."""
    return r["block_gain_low"] > 0


def summary(med: list, dec: list, col: list, prb: list) -> str:
    """The text of ``summary.md``: tables of every part's rows (means over seeds).

    Args:
      med: :func:`~tokdyn.studies.latent_diagnostics.measures.mediation_rows`' rows (latent ->
        answer interventions, input -> state shifts).
      dec: :func:`~tokdyn.studies.latent_diagnostics.measures.decomposition`'s rows.
      col: :func:`~tokdyn.studies.latent_diagnostics.measures.collapse_rows`' rows.
      prb: :func:`~tokdyn.studies.latent_diagnostics.measures.probe_rows`' rows.

    Returns:
      The Markdown text.
    """
    sections = (
        decomposition_lines(dec),
        intervention_lines(med),
        shift_lines(med),
        collapse_lines(col),
        probe_lines(prb),
    )
    return "\n".join(line for i, lines in enumerate(sections) for line in ([""] if i else []) + lines)


def decomposition_lines(dec: list) -> list:
    """The summary's decomposition table: accuracy and the share of the block's gain retained
    per variant, stage and setting."""
    lines = [
        "## Decomposition: accuracy and share of the latent block's gain retained (mean over seeds)",
        "",
        "The share is shown where the full block's gain over no block has a 95% bootstrap interval above 0.",
        "",
        "| variant | stage | block gain (95% CI) | setting | accuracy | gain retained (95% CI) | "
        "attention entropy latent / answer |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in dec:
        share = (
            f"{r['gain_retained']:.2f} ({r['gain_low']:.2f} to {r['gain_high']:.2f})"
            if significant(r)
            else "no significant gain"
        )
        if r.get("no_op") in (True, "True"):
            share = "no-op: the slots' inputs are the same in every instance"
        lines.append(
            f"| {r['variant']} | {r['stage']} | {r['block_gain']:+.3f} ({r['block_gain_low']:+.3f} to "
            f"{r['block_gain_high']:+.3f}) | {r['setting']} | {r['accuracy']:.3f} | {share} | "
            f"{r['latent_entropy']:.2f} / {r['answer_entropy']:.2f} |"
        )
    return lines


def intervention_lines(med: list) -> list:
    """The summary's latent -> answer table: per variant and intervention, the accuracy before
    and after, the flip rate and the KL."""
    lines = [
        "## Latent -> answer interventions (mean over seeds)",
        "",
        "| variant | intervention | accuracy before | accuracy | flip rate | KL |",
        "|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["variant"] for r in med if r["what"] == "intervention"):
        for k in dict.fromkeys(r["perturbation"] for r in med if r["what"] == "intervention" and r["variant"] == name):
            m = dict(variant=name, what="intervention", perturbation=k)
            lines.append(
                f"| {name} | {k} | {_mean(med, 'accuracy_before', **m):.3f} | {_mean(med, 'accuracy', **m):.3f} | "
                f"{_mean(med, 'flip_rate', **m):.3f} | {_mean(med, 'kl', **m):.3f} |"
            )
    return lines


def shift_lines(med: list) -> list:
    """The summary's input -> state table: the cosine distance each perturbation moves each
    variant's states."""
    lines = [
        "## Input -> state shifts: cosine distance (mean over steps, instances, seeds)",
        "",
        "| variant | states | "
        + " | ".join(dict.fromkeys(r["perturbation"] for r in med if r["what"] != "intervention"))
        + " |",
    ]
    perts = list(dict.fromkeys(r["perturbation"] for r in med if r["what"] != "intervention"))
    lines.append("|---|---|" + "---|" * len(perts))
    for name, what in dict.fromkeys((r["variant"], r["what"]) for r in med if r["what"] != "intervention"):
        vals = [_mean(med, "cosine_distance", variant=name, what=what, perturbation=p) for p in perts]
        lines.append(f"| {name} | {what} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    return lines


def collapse_lines(col: list) -> list:
    """The summary's collapse table: the latents' geometry per variant and step."""
    lines = [
        "## Collapse (mean over seeds)",
        "",
        "| variant | step | inter-instance cosine | step similarity | participation ratio | top PC share |",
        "|---|---|---|---|---|---|",
    ]
    for name, step in dict.fromkeys((r["variant"], r["step"]) for r in col):
        m = dict(variant=name, step=step)
        lines.append(
            f"| {name} | {step} | {_mean(col, 'inter_instance_cosine', **m):.3f} | "
            f"{_mean(col, 'step_similarity', **m):.3f} | {_mean(col, 'participation_ratio', **m):.2f} | "
            f"{_mean(col, 'top_pc_share', **m):.3f} |"
        )
    return lines


def probe_lines(prb: list) -> list:
    """The summary's probes table: held-out accuracy and chance per variant, features and fact."""
    lines = [
        "## Linear probes: held-out accuracy (mean over seeds) / chance",
        "",
        "| variant | features | " + " | ".join(FACTS) + " |",
        "|---|---|" + "---|" * len(FACTS),
    ]
    for name, feat in dict.fromkeys((r["variant"], r["features"]) for r in prb):
        cells = [
            f"{_mean(prb, 'accuracy', variant=name, features=feat, target=t):.3f} / "
            f"{_mean(prb, 'chance', variant=name, features=feat, target=t):.3f}"
            for t in FACTS
        ]
        lines.append(f"| {name} | {feat} | " + " | ".join(cells) + " |")
    return lines
