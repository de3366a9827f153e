"""The latent-diagnostics study's findings, judged from ``organisms.csv`` over the seeds of each recipe
(:func:`verdicts`): O3, the boundary markers' share of the latent block's gain (:func:`markers_finding`); O4a,
input -> latent and O4b, latent -> answer (:func:`mediation_findings`); O5, DMLR (:func:`dmlr_finding`). They ask
the questions the seed papers ask (the markers' share, the mediation, the optimisation) of the Qwen2.5-VL
organisms, on every test
instance of every family (``family`` ``all``), the interval one over seeds (each organism's value its mean over
instances)."""

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

STUDY = "latent-diagnostics"
MARKERS_BAND = (0.78, 1.00)  # the claimed share of the latent block's gain that the markers alone keep
MARKERS_MARGIN = 0.05  # refuted only when the interval misses the band widened by this
MARKERS_MAX_WIDTH = 0.6  # an interval wider than this is consistent with everything: open
SHIFT_DISCONNECTED, SHIFT_CONNECTED = 0.05, 0.20  # input -> latent: cosine distance the latents move
FLIP_DISCONNECTED, FLIP_CONNECTED = 0.10, 0.15  # latent -> answer: share of answers an intervention flips
GAIN_EXCLUDED = 0.01  # DMLR: refuted when a gain of this much accuracy is excluded
DMLR = "injection"  # the paper's full method: the optimisation with its visual injection
GAIN = (-1.0, 1.0)  # the range of a block's gain in accuracy
DISTANCE = (0.0, 2.0)  # the range of a cosine distance
POOLED = "all"  # the family the findings are judged on: every instance
ORIGIN_MARKERS = "arXiv 2606.01287"
ORIGIN_MEDIATION = 'arXiv 2602.22766 ("Imagination helps, but not yet in latent space")'
ORIGIN_DMLR = "arXiv 2512.12623 (DMLR)"


def claims() -> tuple[Finding, Finding, Finding, Finding]:
    """O3, O4a, O4b and O5 as stated, before any table is read."""
    lo_b, hi_b = MARKERS_BAND
    o3 = Finding(
        "O3",
        "Organisms: the boundary markers' share of the latent gain",
        f"The latent block's boundary markers alone (its slots removed) keep {lo_b:.0%}–{hi_b:.0%} of the block's "
        "gain in accuracy over no block, in the Qwen2.5-VL organisms trained with latents.",
        ORIGIN_MARKERS,
        f"Per recipe, each seed's share of its block's gain (the markers alone's accuracy above no block, over the "
        f"block's gain, on every test instance) and a 95% interval over seeds (at least {MIN_SEEDS}); a recipe counts "
        f"only where the interval of the block's gain lies above 0. It reproduces the claim when its interval meets "
        f"[{lo_b:g}, {hi_b:g}] and is at most {MARKERS_MAX_WIDTH:g} wide, refutes it when its interval misses "
        f"[{lo_b - MARKERS_MARGIN:g}, {hi_b + MARKERS_MARGIN:g}]; refuted when one recipe refutes it, reproduced "
        "when every recipe that counts reproduces it, open otherwise.",
        study=STUDY,
    )
    o4a = Finding(
        "O4a",
        "Organisms: input → latent, do the latents depend on the image?",
        "The latent tokens are disconnected from the input: perturbing the image barely moves them.",
        ORIGIN_MEDIATION,
        f"Per recipe, the image perturbation that moves its latents most (cosine distance from the clean run's, "
        f"the mean over latent steps and instances, highest mean over seeds), a 95% interval over seeds (at least "
        f"{MIN_SEEDS}): disconnected (reproduced) when it lies below {SHIFT_DISCONNECTED:g}, connected (refuted) when "
        f"above {SHIFT_CONNECTED:g}, open otherwise; refuted when one recipe refutes it, reproduced when every recipe "
        "reproduces it.",
        study=STUDY,
    )
    o4b = Finding(
        "O4b",
        "Organisms: latent → answer, do the answers depend on the latents?",
        "The answers are disconnected from the latent tokens: intervening on the latents barely changes them.",
        ORIGIN_MEDIATION,
        f"Per recipe, the intervention on its latents (zeros, noise, fill, mean, swap, dropping the slots, the "
        f"markers or the block) that changes most answers (highest mean over seeds), a 95% interval over seeds of "
        f"the share changed (at least {MIN_SEEDS}): disconnected (reproduced) when it lies below "
        f"{FLIP_DISCONNECTED:g}, connected (refuted) when above {FLIP_CONNECTED:g}, open otherwise; aggregated over "
        "recipes as in O4a.",
        study=STUDY,
    )
    o5 = Finding(
        "O5",
        "Organisms: confidence-driven latent optimisation (DMLR)",
        "Optimising the latents at inference to make the model more confident (DMLR, with its visual injection) "
        "improves the organisms' accuracy.",
        ORIGIN_DMLR,
        f"Per recipe, each seed's change in accuracy on every test instance (after − before), a 95% interval over "
        f"seeds (at least {MIN_SEEDS}): improves (reproduced) when it lies above 0, does not (refuted) when it lies "
        f"below +{GAIN_EXCLUDED:g} (a gain of {GAIN_EXCLUDED:g} or more is excluded), open otherwise. The verdict is "
        "the full method's (with injection), refuted when one recipe refutes it, reproduced when every recipe "
        "reproduces it; the optimisation without injection is listed with the same rule.",
        study=STUDY,
    )
    return o3, o4a, o4b, o5


def seed_values(table, recipe: str, measure: str, kind: str = "", level: str = "", family: str = POOLED) -> np.ndarray:
    """The per-seed values of one measure of ``recipe`` (seeds in increasing order)."""
    sel = (
        (strings(table, "recipe") == recipe)
        & (strings(table, "family") == family)
        & (strings(table, "measure") == measure)
        & (strings(table, "kind") == kind)
        & (_levels(table) == level)
    )
    order = np.argsort(numbers(table, "seed")[sel], kind="stable")
    return numbers(table, "value")[sel][order]


def _levels(table) -> np.ndarray:
    """The ``level`` column as text ('' for none), whether read back as numbers or written as text."""
    out = []
    for v in table["level"]:
        if isinstance(v, str):
            out.append(v)
        elif v is None or (isinstance(v, float) and not np.isfinite(v)):
            out.append("")
        else:
            out.append(f"{float(v):g}")
    return np.asarray(out, dtype=object).astype(str)


def markers_unit(gain, share) -> tuple:
    """``(verdict, gain interval, share interval)`` of one recipe on O3 (``n/a`` without a gain)."""
    g = seed_interval(gain, GAIN)
    s = seed_interval(share)
    lo_b, hi_b = MARKERS_BAND
    if g[3] < MIN_SEEDS or not np.isfinite(g[1]):
        return "open", g, s
    if g[1] <= 0:
        return "n/a", g, s
    if s[3] < MIN_SEEDS or not (np.isfinite(s[1]) and np.isfinite(s[2])):
        return "open", g, s
    if s[2] < lo_b - MARKERS_MARGIN or s[1] > hi_b + MARKERS_MARGIN:
        return "refuted", g, s
    if s[1] <= hi_b and s[2] >= lo_b and s[2] - s[1] <= MARKERS_MAX_WIDTH:
        return "reproduced", g, s
    return "open", g, s


def markers_finding(table) -> Finding:
    """O3 from ``organisms.csv``."""
    f = claims()[0]
    names = list(dict.fromkeys(strings(table, "recipe").tolist()))
    if not names:
        return dataclasses.replace(f, basis="no organism in organisms.csv")
    rows, verdicts_ = [], []
    for name in names:
        v, g, s = markers_unit(
            seed_values(table, name, "block_gain"), seed_values(table, name, "markers_share", "markers_only")
        )
        verdicts_.append(v)
        rows.append([name, interval(*g[:3]), interval(*s[:3]) if v != "n/a" else "no gain to share", str(g[3]), v])
    return dataclasses.replace(
        f,
        header=("recipe", "block's gain over no block [95%]", "markers keep: share [95%]", "seeds", "verdict"),
        rows=rows,
        verdict=aggregate(verdicts_),
        basis="; ".join(f"{r[0]}: gain {r[1]}, share {r[2]}" for r in rows),
    )


def _strongest(table, recipe: str, measure: str, bounds) -> tuple:
    """The (kind, level) of ``measure`` with the highest mean over seeds and its interval."""
    sel = (
        (strings(table, "recipe") == recipe)
        & (strings(table, "family") == POOLED)
        & (strings(table, "measure") == measure)
    )
    labels = list(dict.fromkeys(zip(strings(table, "kind")[sel].tolist(), _levels(table)[sel].tolist())))
    if not labels:
        return None
    stats = {kl: seed_interval(seed_values(table, recipe, measure, *kl), bounds) for kl in labels}
    best = max(labels, key=lambda kl: np.nan_to_num(stats[kl][0], nan=-np.inf))
    return best, stats[best]


def _connection(stat, disconnected: float, connected: float) -> str:
    mean, low, high, n = stat
    if n < MIN_SEEDS or not np.isfinite(low):
        return "open"
    return "reproduced" if high < disconnected else "refuted" if low > connected else "open"


def mediation_findings(table) -> list:
    """O4a and O4b from ``organisms.csv``."""
    _, a, b, _ = claims()
    names = list(dict.fromkeys(strings(table, "recipe").tolist()))
    found = []
    for f, measure, bounds, (dis, con), what in (
        (a, "shift", DISTANCE, (SHIFT_DISCONNECTED, SHIFT_CONNECTED), "latents move (cosine distance) [95%]"),
        (b, "flip", RATE, (FLIP_DISCONNECTED, FLIP_CONNECTED), "answers changed [95%]"),
    ):
        rows, vs = [], []
        for name in names:
            best = _strongest(table, name, measure, bounds)
            if best is None:
                continue
            (kind, level), stat = best
            v = _connection(stat, dis, con)
            vs.append(v)
            rows.append([name, kind + (f" {level}" if level else ""), interval(*stat[:3]), str(stat[3]), v])
        if not rows:
            found.append(dataclasses.replace(f, basis=f"no {measure} rows in organisms.csv"))
            continue
        found.append(
            dataclasses.replace(
                f,
                header=("recipe", "strongest", what, "seeds", "verdict"),
                rows=rows,
                verdict=aggregate(vs),
                basis="; ".join(f"{r[0]} {r[2]} ({r[1]})" for r in rows),
            )
        )
    return found


def dmlr_finding(table) -> Finding:
    """O5 from ``organisms.csv``: per recipe and kind (``optimisation``, ``injection``), the change in accuracy
    over seeds; the verdict rests on :data:`DMLR`."""
    f = claims()[3]
    recipe, measure = strings(table, "recipe"), strings(table, "measure")
    names = list(dict.fromkeys(recipe[measure == "dmlr"].tolist()))
    rows = []
    for name in names:
        for kind in ("optimisation", "injection"):
            change = seed_values(table, name, "dmlr", kind)
            if not change.size:
                continue
            m, lo, hi, n = seed_interval(change, difference_bounds(RATE))
            if n < MIN_SEEDS or not np.isfinite(lo):
                v = "open"
            else:
                v = "reproduced" if lo > 0 else "refuted" if hi < GAIN_EXCLUDED else "open"
            rows.append([name, kind, interval(m, lo, hi), str(n), v])
    if not rows:
        return dataclasses.replace(f, basis="no dmlr rows in organisms.csv")
    full = [r[-1] for r in rows if r[1] == DMLR]
    return dataclasses.replace(
        f,
        header=("recipe", "optimisation", "accuracy change [95% over seeds]", "seeds", "verdict"),
        rows=rows,
        verdict=aggregate(full) if full else "open",
        basis="; ".join(f"{r[0]} {r[2]}" for r in rows if r[1] == DMLR) or "no injection rows in organisms.csv",
    )


def verdicts(table) -> list:
    """O3, O4a, O4b and O5 from ``organisms.csv`` (``{}``: the claims alone, for a table that cannot be read)."""
    if not table:
        return list(claims())
    return [markers_finding(table), *mediation_findings(table), dmlr_finding(table)]
