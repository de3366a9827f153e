"""The latent-reasoning study's findings, judged from its ``accuracy.csv`` (:func:`verdicts`): O1, the organism
reads the image (:func:`reads_image`); O2a, imagination in text helps where a transformation must be imagined
(:func:`text_helps`); O2b, latent imagination does not yet give what text gives (:func:`latents_short`).

Every number is a test accuracy per recipe, family and seed; two recipes are compared seed by seed (seed ``s``
of every recipe starts from the same weights and draws the same batches), a 95% interval over seeds of the
difference (:func:`tokdyn.experiment.findings.seed_interval`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from tokdyn.experiment.findings import (
    MIN_SEEDS,
    RATE,
    Finding,
    aggregate,
    difference_bounds,
    interval,
    numbers,
    seed_interval,
    strings,
)
from tokdyn.models.organism import training as organism

STUDY = "latent-reasoning"
READ_LEVEL = 0.98  # O1: every seed of `direct` answers `read` at least this well
READ_SLACK = 1e-9  # a count's share that equals READ_LEVEL in exact arithmetic is at it, whatever its last bit
ACCURACY_MARGIN = 0.02  # O2a, O2b: a difference of accuracy smaller than this is no difference
CONTROL = "read"  # the family that needs no imagined transformation; every other one does
ACCURACY_DIFF = difference_bounds(RATE)  # the range of a difference of two accuracies
ORIGIN = 'arXiv 2602.22766 ("Imagination helps, but not yet in latent space")'


def claims() -> tuple[Finding, Finding, Finding]:
    """O1, O2a and O2b as stated, before any table is read: their claims, origins and rules."""
    o1 = Finding(
        "O1",
        "Organisms: `direct` reads the image",
        f"An organism trained to answer from the image alone (`direct`) reads it: on `{CONTROL}` (the colour of "
        f"one cell) it answers at least {READ_LEVEL:.0%} of the test questions right in every seed.",
        "the latent-reasoning study's finding on the package's earlier Flax organism (every seed at 1.000), "
        "asked again of Qwen2.5-VL organisms",
        f"`direct`'s test accuracy on `{CONTROL}` per seed (at least {MIN_SEEDS}): reproduced when every seed is at "
        f"{READ_LEVEL:g} or above, refuted when the 95% interval over seeds of its mean lies below {READ_LEVEL:g}, "
        "open otherwise.",
        study=STUDY,
    )
    o2a = Finding(
        "O2a",
        "Organisms: imagination in text helps",
        "Where the answer needs an imagined transformation of the image, an organism trained to write the "
        "transformed grid as a caption before answering (`text`) answers better than one that answers directly "
        "(`direct`).",
        ORIGIN,
        f"Per family but `{CONTROL}`, the test accuracy of `text` minus that of `direct`, seed by seed, a 95% "
        f"interval over seeds (at least {MIN_SEEDS}): the family shows the help (reproduced) when the interval "
        f"lies above {ACCURACY_MARGIN:g}, shows none (refuted) when it lies below {ACCURACY_MARGIN:g}, open "
        "otherwise. The claim is refuted when one family refutes it, reproduced when every family reproduces it.",
        study=STUDY,
    )
    o2b = Finding(
        "O2b",
        "Organisms: not yet in latent space",
        "No recipe that imagines in latents (fed-back hidden states, with or without an alignment to the helper "
        "image or a curriculum from the caption) answers as well as imagining in text (`text`).",
        ORIGIN,
        f"Per family but `{CONTROL}`, the latent recipe with the highest mean test accuracy and `text` minus it, "
        f"seed by seed, a 95% interval over seeds (at least {MIN_SEEDS}): the latents fall short (reproduced) when "
        f"the interval lies above {ACCURACY_MARGIN:g}, reach `text` (refuted) when it lies below "
        f"{ACCURACY_MARGIN:g}, open otherwise; aggregated over families as in O2a. The best latent recipe's share "
        "of `text`'s gain over `direct` is shown beside it.",
        study=STUDY,
    )
    return o1, o2a, o2b


def seed_accuracies(table, recipe: str, family: str) -> dict:
    """``{seed: accuracy}`` of ``recipe`` on ``family`` in ``accuracy.csv``'s columns."""
    sel = (strings(table, "variant") == recipe) & (strings(table, "family") == family)
    return {int(s): float(a) for s, a in zip(numbers(table, "seed")[sel], numbers(table, "accuracy")[sel])}


def paired_difference(table, a: str, b: str, family: str) -> np.ndarray:
    """Seed by seed, ``a``'s accuracy on ``family`` minus ``b``'s (the seeds both hold)."""
    x, y = seed_accuracies(table, a, family), seed_accuracies(table, b, family)
    return np.asarray([x[s] - y[s] for s in sorted(set(x) & set(y))], np.float64)


def _margin_verdict(values) -> tuple:
    """``(verdict, (mean, low, high, n))``: reproduced when the interval lies above :data:`ACCURACY_MARGIN`,
    refuted when below it, open when it holds it or has fewer than MIN_SEEDS seeds."""
    m, lo, hi, n = seed_interval(values, ACCURACY_DIFF)
    if n < MIN_SEEDS or not (np.isfinite(lo) and np.isfinite(hi)):
        return "open", (m, lo, hi, n)
    return ("reproduced" if lo > ACCURACY_MARGIN else "refuted" if hi < ACCURACY_MARGIN else "open"), (m, lo, hi, n)


def reads_image(table) -> Finding:
    """O1 from ``accuracy.csv``."""
    f = claims()[0]
    acc = seed_accuracies(table, "direct", CONTROL)
    if not acc:
        return dataclasses.replace(f, basis=f"no `direct` row on `{CONTROL}` in accuracy.csv")
    values = np.asarray([acc[s] for s in sorted(acc)])
    m, lo, hi, n = seed_interval(values, RATE)
    sel = (strings(table, "variant") == "direct") & (strings(table, "family") == CONTROL)
    chance = float(numbers(table, "chance")[sel][0])
    if n < MIN_SEEDS:
        verdict = "open"
    elif bool(np.all(values >= READ_LEVEL - READ_SLACK)):
        verdict = "reproduced"
    elif np.isfinite(hi) and hi < READ_LEVEL:
        verdict = "refuted"
    else:
        verdict = "open"
    per_seed = ", ".join(f"{v:.3f}" for v in values)
    return dataclasses.replace(
        f,
        header=("recipe", "family", "test accuracy per seed", "mean [95%]", "chance", "verdict"),
        rows=[["direct", CONTROL, per_seed, interval(m, lo, hi), f"{chance:.3f}", verdict]],
        verdict=verdict,
        basis=f"`direct` on `{CONTROL}`: {per_seed} ({n} seeds; the level {READ_LEVEL:g})",
    )


def imagination_families(table) -> list:
    """The families of ``accuracy.csv`` that need an imagined transformation: all but :data:`CONTROL` (and the
    pooled ``all``), in the table's order."""
    return [f for f in dict.fromkeys(strings(table, "family").tolist()) if f not in (CONTROL, "all")]


def text_helps(table) -> Finding:
    """O2a from ``accuracy.csv``."""
    f = claims()[1]
    names = set(strings(table, "variant").tolist())
    families = imagination_families(table)
    if not {"text", "direct"} <= names or not families:
        return dataclasses.replace(
            f, basis="accuracy.csv lacks `text` or `direct`, or every family but `read`: nothing to compare"
        )
    rows, verdicts = [], []
    for fam in families:
        v, (m, lo, hi, n) = _margin_verdict(paired_difference(table, "text", "direct", fam))
        verdicts.append(v)
        rows.append([fam, _mean(table, "direct", fam), _mean(table, "text", fam), interval(m, lo, hi), str(n), v])
    return dataclasses.replace(
        f,
        header=("family", "direct", "text", "text − direct [95%]", "seeds", "verdict"),
        rows=rows,
        verdict=aggregate(verdicts),
        basis="; ".join(f"{r[0]} {r[3]}" for r in rows),
    )


def latent_recipes(table) -> list:
    """The recipes of ``accuracy.csv`` that feed latents back (``block="feedback"`` in
    :data:`tokdyn.models.organism.training.VARIANTS`), in the table's order."""
    names = dict.fromkeys(strings(table, "variant").tolist())
    return [n for n in names if n in organism.VARIANTS and organism.VARIANTS[n].block == "feedback"]


def latents_short(table) -> Finding:
    """O2b from ``accuracy.csv``."""
    f = claims()[2]
    latents = latent_recipes(table)
    families = imagination_families(table)
    if "text" not in set(strings(table, "variant").tolist()) or not latents or not families:
        return dataclasses.replace(
            f, basis="accuracy.csv lacks `text`, a latent recipe or a family but `read`: nothing to compare"
        )
    has_direct = "direct" in set(strings(table, "variant").tolist())
    rows, verdicts = [], []
    for fam in families:
        best = max(latents, key=lambda n: np.nan_to_num(_mean_value(table, n, fam), nan=-np.inf))
        v, (m, lo, hi, n) = _margin_verdict(paired_difference(table, "text", best, fam))
        verdicts.append(v)
        share = "–"
        if has_direct:
            gain = _mean_value(table, "text", fam) - _mean_value(table, "direct", fam)
            if gain > ACCURACY_MARGIN:
                share = f"{(_mean_value(table, best, fam) - _mean_value(table, 'direct', fam)) / gain:.2f}"
        rows.append(
            [fam, best, _mean(table, best, fam), _mean(table, "text", fam), interval(m, lo, hi), share, str(n), v]
        )
    return dataclasses.replace(
        f,
        header=(
            "family",
            "best latent recipe",
            "its accuracy",
            "text",
            "text − it [95%]",
            "its share of text's gain over direct",
            "seeds",
            "verdict",
        ),
        rows=rows,
        verdict=aggregate(verdicts),
        basis="; ".join(f"{r[0]}: text − {r[1]} {r[4]}" for r in rows),
    )


def _mean_value(table, recipe: str, family: str) -> float:
    acc = seed_accuracies(table, recipe, family)
    return float(np.mean(list(acc.values()))) if acc else float("nan")


def _mean(table, recipe: str, family: str) -> str:
    return f"{_mean_value(table, recipe, family):.3f}"


def verdicts(table) -> list[Finding]:
    """O1, O2a and O2b from the study's ``accuracy.csv`` (``{}``: the claims alone, for a table that cannot be read)."""
    if not table:
        return list(claims())
    return [reads_image(table), text_helps(table), latents_short(table)]
