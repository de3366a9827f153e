"""Finding 2b: the two-stage grid route against modelling tokens directly
(:func:`grid_route_finding`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from tokdyn.experiment.findings import MIN_SEEDS, RATE, Finding, interval, numbers, seed_interval, strings


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
        f"{MIN_SEEDS} seeds). The best grid model and the best token model (highest means) are compared with "
        f"a margin of {GRID_MARGIN:g}: reproduced when the grid model's lower bound is within the margin of "
        f"the token model's upper bound or above it, refuted when the grid model's upper bound lies more than "
        f"the margin below the token model's lower bound, open otherwise.",
        study="grid-diffusion",
    )
    scope, model, value = (
        strings(table, "scope"),
        strings(table, "model"),
        numbers(table, "grammatical_sentences"),
    )
    seq = scope == "sequence"
    stats_of = {}
    for m in dict.fromkeys(model[seq].tolist()):
        stats_of[m] = seed_interval(value[seq & (model == m)], RATE)
    f = dataclasses.replace(
        f,
        header=("model", "grammatical sentences: mean [95% interval over seeds]", "seeds"),
        rows=[[m, interval(*s[:3]), str(s[3])] for m, s in stats_of.items()],
    )
    grid = {m: s for m, s in stats_of.items() if m.startswith("grid_")}
    token = {m: s for m, s in stats_of.items() if m.startswith("token_")}
    if not grid or not token:
        return dataclasses.replace(f, verdict="open", basis="the run lacks grid models or token models")
    g = max(grid, key=lambda m: grid[m][0])
    t = max(token, key=lambda m: token[m][0])
    (gm, gl, gh, gn), (tm, tl, th, tn) = grid[g], token[t]
    basis = (
        f"best grid model {g} {interval(gm, gl, gh)} vs best token model {t} {interval(tm, tl, th)} "
        f"({gn} and {tn} seeds)"
    )
    if min(gn, tn) < MIN_SEEDS or not (np.isfinite(gl) and np.isfinite(tl)):
        verdict = "open"
    elif gl >= th - GRID_MARGIN:
        verdict = "reproduced"
    elif gh < tl - GRID_MARGIN:
        verdict = "refuted"
    else:
        verdict = "open"
    return dataclasses.replace(f, verdict=verdict, basis=basis)
