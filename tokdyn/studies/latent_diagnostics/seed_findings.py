"""The latent-diagnostics study's findings: 3 (the boundary markers' share of the latent gain,
:func:`markers_finding`) and 4a / 4b (input -> latent and latent -> answer,
:func:`mediation_findings`), judged from its tables (:func:`findings`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from tokdyn.experiment import findings as experiment_findings
from tokdyn.experiment import study as study_dir
from tokdyn.experiment.findings import Finding
from tokdyn.studies.latent_diagnostics.config import STUDY

MARKERS_BAND = (0.78, 1.00)  # the claimed share of the latent block's gain that the markers alone keep
MARKERS_MARGIN = 0.05  # refuted only when the interval misses the band widened by this
MARKERS_MAX_WIDTH = 0.6  # an interval wider than this is consistent with everything: open
SHIFT_DISCONNECTED, SHIFT_CONNECTED = 0.05, 0.20  # input -> latent: cosine distance the latents move
FLIP_DISCONNECTED, FLIP_CONNECTED = 0.10, 0.15  # latent -> answer: share of answers an intervention flips


def markers_unit(gain_low, gain_high, block_gain_low, seeds: int) -> str:
    """Verdict of one variant on the markers claim.

    ``n/a`` without a gain (the block's gain over no block has no 95% interval above 0); ``open``
    with fewer than :data:`~tokdyn.experiment.findings.MIN_SEEDS` seeds; ``refuted`` when the
    interval of the share retained misses :data:`MARKERS_BAND` widened by :data:`MARKERS_MARGIN`;
    ``reproduced`` when it meets the band and is at most :data:`MARKERS_MAX_WIDTH` wide; ``open``
    otherwise.

    Args:
      gain_low: lower end of the 95% interval of the share of the gain the markers retain.
      gain_high: its upper end.
      block_gain_low: lower end of the 95% interval of the block's gain over no block.
      seeds: the number of seeds.

    Returns:
      ``"reproduced"``, ``"refuted"``, ``"open"`` or ``"n/a"``.
    """
    lo_b, hi_b = MARKERS_BAND
    if not np.isfinite(block_gain_low) or block_gain_low <= 0:
        return "n/a"
    if seeds < experiment_findings.MIN_SEEDS or not (np.isfinite(gain_low) and np.isfinite(gain_high)):
        return "open"
    if gain_high < lo_b - MARKERS_MARGIN or gain_low > hi_b + MARKERS_MARGIN:
        return "refuted"
    if gain_low <= hi_b and gain_high >= lo_b and gain_high - gain_low <= MARKERS_MAX_WIDTH:
        return "reproduced"
    return "open"


def markers_finding(decomposition, seeds: int) -> Finding:
    """Finding 3 from the study's ``decomposition.csv`` (final checkpoints, setting
    ``markers_only``: the share of the latent block's gain the boundary markers alone keep, with the
    study's paired bootstrap interval over instances); ``seeds``: the source's."""
    lo_b, hi_b = MARKERS_BAND
    f = Finding(
        "3",
        "Boundary markers' share of the latent gain",
        f"The latent block's boundary markers alone (its slots removed) keep {lo_b:.0%}–{hi_b:.0%} of the "
        "block's gain in accuracy over no block.",
        "arXiv 2606.01287",
        f"Per variant with a latent block, at its final checkpoint: the share of the block's gain that "
        f"markers_only keeps, with the study's 95% paired bootstrap interval over test instances; a variant "
        f"counts only where the block's gain itself has an interval above 0, and only from {experiment_findings.MIN_SEEDS} seeds "
        f"on. A variant reproduces the claim when its interval meets [{lo_b:g}, {hi_b:g}] and is at most "
        f"{MARKERS_MAX_WIDTH:g} wide, refutes it when its interval misses [{lo_b - MARKERS_MARGIN:g}, "
        f"{hi_b + MARKERS_MARGIN:g}]; the claim is refuted when one variant refutes it, reproduced when every "
        f"variant that counts reproduces it, open otherwise.",
        study=STUDY,
    )
    sel = (experiment_findings.strings(decomposition, "stage") == "final") & (
        experiment_findings.strings(decomposition, "setting") == "markers_only"
    )
    if not sel.any():
        return experiment_findings.missing(f, "no markers_only row at a final checkpoint in decomposition.csv")
    verdicts, rows = [], []
    for i in np.flatnonzero(sel):
        g = {
            k: experiment_findings.numbers(decomposition, k)[i]
            for k in (
                "block_gain",
                "block_gain_low",
                "block_gain_high",
                "gain_retained",
                "gain_low",
                "gain_high",
                "accuracy",
            )
        }
        v = markers_unit(g["gain_low"], g["gain_high"], g["block_gain_low"], seeds)
        verdicts.append(v)
        rows.append(
            [
                experiment_findings.strings(decomposition, "variant")[i],
                experiment_findings.interval(g["block_gain"], g["block_gain_low"], g["block_gain_high"]),
                experiment_findings.interval(g["gain_retained"], g["gain_low"], g["gain_high"])
                if v != "n/a"
                else "no gain to share",
                v,
            ]
        )
    basis = "; ".join(f"{r[0]} {r[2]}" for r in rows if r[3] != "n/a") or "no variant's block has a gain"
    if seeds < experiment_findings.MIN_SEEDS:
        basis += f" (source trained with {seeds} seeds: open)"
    return dataclasses.replace(
        f,
        header=("variant", "block's gain over no block [95%]", "markers keep: share [95%]", "verdict"),
        rows=rows,
        verdict=experiment_findings.aggregate(verdicts),
        basis=basis,
    )


def _strongest(table, sel: np.ndarray, by: str, value: str, bounds=None):
    """The ``by`` level with the largest mean over seeds of ``value`` (each seed's mean over its
    rows), and :func:`~tokdyn.experiment.findings.seed_interval` of it (within ``bounds``, the
    value's range)."""
    best = None
    for level in dict.fromkeys(experiment_findings.strings(table, by)[sel].tolist()):
        s = experiment_findings.seed_interval(
            experiment_findings.per_seed(table, sel & (experiment_findings.strings(table, by) == level), value), bounds
        )
        if best is None or (np.isfinite(s[0]) and s[0] > best[1][0]):
            best = (level, s)
    return best


def _connection(mean_low_high_n, disconnected: float, connected: float) -> str:
    mean, low, high, n = mean_low_high_n
    if n < experiment_findings.MIN_SEEDS or not np.isfinite(low):
        return "open"
    return "reproduced" if high < disconnected else "refuted" if low > connected else "open"


def mediation_claims() -> tuple[Finding, Finding]:
    """Findings 4a (input -> latent) and 4b (latent -> answer) as claims, before any table is read:
    their statement, origin and rule."""
    origin = 'arXiv 2602.22766 ("Imagination helps, but not yet in latent space")'
    a = Finding(
        "4a",
        "Input → latent: do the latents depend on the image?",
        "The latent tokens are disconnected from the input: perturbing the image barely moves them.",
        origin,
        f"Per feedback variant, the image perturbation that moves its latents most (cosine distance, mean over "
        f"latent steps and instances), a 95% interval over seeds (at least {experiment_findings.MIN_SEEDS}): the variant shows "
        f"the disconnect (reproduced) when the interval lies below {SHIFT_DISCONNECTED:g}, not (refuted) when "
        f"it lies above {SHIFT_CONNECTED:g}, open otherwise. The claim is refuted when one variant refutes it, "
        f"reproduced when every variant reproduces it. The text variant's caption states, moved by the same "
        f"perturbation, are shown for scale.",
        study=STUDY,
    )
    b = Finding(
        "4b",
        "Latent → answer: do the answers depend on the latents?",
        "The answers are disconnected from the latent tokens: intervening on the latents barely changes them.",
        origin,
        f"Per feedback variant, the intervention on its latents (zeros, noise, mean, constant, swap, another "
        f"variant's) that flips most answers, a 95% interval over seeds of the flip rate (at least "
        f"{experiment_findings.MIN_SEEDS}): disconnected (reproduced) when the interval lies below {FLIP_DISCONNECTED:g}, "
        f"connected (refuted) when it lies above {FLIP_CONNECTED:g}, open otherwise; aggregated over variants "
        f"as in 4a.",
        study=STUDY,
    )
    return a, b


def mediation_findings(mediation) -> list[Finding]:
    """Findings 4a (input -> latent) and 4b (latent -> answer) from the study's ``mediation.csv``:
    per feedback variant, the perturbation that moves its latents most (cosine distance, mean over
    latent steps) and the intervention on its latents that flips most answers, each with a 95%
    interval over seeds (:func:`shift_row`, :func:`flip_row`)."""
    a, b = mediation_claims()
    what, variant = experiment_findings.strings(mediation, "what"), experiment_findings.strings(mediation, "variant")
    names = list(dict.fromkeys(variant[what == "latent"].tolist()))
    if not names:
        return [
            experiment_findings.missing(a, "no latent rows in mediation.csv"),
            experiment_findings.missing(b, "no intervention rows in mediation.csv"),
        ]
    ra = [shift_row(mediation, name) for name in names]
    rb = [r for r in (flip_row(mediation, name) for name in names) if r is not None]
    va, vb = [r[-1] for r in ra], [r[-1] for r in rb]
    a = dataclasses.replace(
        a,
        header=(
            "variant",
            "strongest perturbation",
            "latents move (cosine distance) [95%]",
            "seeds",
            "text's caption states move",
            "verdict",
        ),
        rows=ra,
        verdict=experiment_findings.aggregate(va),
        basis="; ".join(f"{r[0]} {r[2]} ({r[1]})" for r in ra),
    )
    b = dataclasses.replace(
        b,
        header=(
            "variant",
            "strongest intervention",
            "answers flipped [95%]",
            "accuracy change [95%]",
            "seeds",
            "verdict",
        ),
        rows=rb,
        verdict=experiment_findings.aggregate(vb) if vb else "open",
        basis="; ".join(f"{r[0]} {r[2]} ({r[1]})" for r in rb) or "no intervention rows in mediation.csv",
    )
    return [a, b]


def shift_row(mediation, name: str) -> list:
    """Finding 4a's row of variant ``name``: its strongest perturbation, how far it moves the
    latents (a 95% interval over seeds), the seeds, how far it moves the text variant's caption
    states, and the variant's verdict (last)."""
    what, variant = experiment_findings.strings(mediation, "what"), experiment_findings.strings(mediation, "variant")
    level, s = _strongest(
        mediation, (what == "latent") & (variant == name), "perturbation", "cosine_distance", (0.0, 2.0)
    )
    ref = experiment_findings.numbers(mediation, "cosine_distance")[
        (what == "caption") & (experiment_findings.strings(mediation, "perturbation") == level)
    ]
    v = _connection(s, SHIFT_DISCONNECTED, SHIFT_CONNECTED)
    return [
        name,
        level,
        experiment_findings.interval(*s[:3]),
        str(s[3]),
        experiment_findings.number(np.mean(ref)) if ref.size else "–",
        v,
    ]


def flip_row(mediation, name: str):
    """Finding 4b's row of variant ``name`` (None without intervention rows): its strongest
    intervention, the answers it flips and the change in accuracy (95% intervals over seeds), the
    seeds, and the variant's verdict (last)."""
    what, variant = experiment_findings.strings(mediation, "what"), experiment_findings.strings(mediation, "variant")
    sel = (what == "intervention") & (variant == name)
    if not sel.any():
        return None
    level, s = _strongest(mediation, sel, "perturbation", "flip_rate", experiment_findings.RATE)
    lv = sel & (experiment_findings.strings(mediation, "perturbation") == level)
    drop = experiment_findings.seed_interval(
        experiment_findings.per_seed(mediation, lv, "accuracy")
        - experiment_findings.per_seed(mediation, lv, "accuracy_before"),
        experiment_findings.difference_bounds(experiment_findings.RATE),
    )
    v = _connection(s, FLIP_DISCONNECTED, FLIP_CONNECTED)
    return [name, level, experiment_findings.interval(*s[:3]), experiment_findings.interval(*drop[:3]), str(s[3]), v]


def source_seeds(out: str) -> int:
    """Seeds of the latent-reasoning models the study directory ``out`` analysed (its
    ``config.json``, verified); 0 if unknown (then the findings that need them stay open)."""
    try:
        return int(study_dir.read_record(out)["reasoning"]["training"]["seeds"])
    except (OSError, KeyError, TypeError, ValueError):
        return 0


def findings(out: str) -> list[Finding]:
    """Findings 3 (:func:`markers_finding`, from ``decomposition.csv``) and 4a, 4b
    (:func:`mediation_findings`, from ``mediation.csv``) of the study directory ``out``."""
    seeds = source_seeds(out)
    return experiment_findings.judge(
        out, "decomposition.csv", STUDY, lambda t: [markers_finding(t, seeds)]
    ) + experiment_findings.judge(out, "mediation.csv", STUDY, mediation_findings)
