"""Finding 2a: visual-token autoencoders collapse where training is adequate
(:func:`collapse_finding`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from tokdyn.experiment.findings import Finding, column, interval, missing, number, numbers, strings
from tokdyn.studies.visual_tokens.summary import cell_verdict


COLLAPSE_RARE = 0.05  # a collapse rate below this (95% upper bound) is rare, above it common


def adequate_cells(table, at, collapsed) -> tuple[list, int, int, dict, int]:
    """The cells (vocabulary, grid, colours, mode) of the rows ``at`` of ``results.csv``, each judged
    by :func:`~tokdyn.studies.visual_tokens.summary.cell_verdict` on its means over seeds; ``collapsed``: each row's flag.
    Returns the finding's rows, the models of the adequately trained cells and how many of them
    collapsed, the count of cells per verdict, and the number of cells."""
    keys = ("vocab_size", "grid", "colours")
    cols = {k: numbers(table, k) for k in keys}
    mode = strings(table, "mode")
    nanmean = lambda a: float(np.nanmean(a)) if np.any(np.isfinite(a)) else float("nan")  # noqa: E731
    rows, n, k, counts = [], 0, 0, {}
    cells = dict.fromkeys(
        (cols["vocab_size"][i], cols["grid"][i], cols["colours"][i], mode[i]) for i in np.flatnonzero(at)
    )
    for V, g, c, m in cells:
        sel = at & (cols["vocab_size"] == V) & (cols["grid"] == g) & (cols["colours"] == c) & (mode == m)
        mean = lambda name: nanmean(numbers(table, name)[sel])  # noqa: E731
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
                number(mean("accuracy")),
            ]
        )
    return rows, n, k, counts, len(cells)


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
    part = strings(table, "part")
    main = part == "main"
    if not main.any():
        return missing(f, "no model of the main grid in results.csv")
    steps = numbers(table, "steps")
    budget = np.nanmax(steps[main])
    collapsed = np.asarray([str(v).strip().lower() in ("1", "1.0", "true") for v in column(table, "collapsed")])
    rows, n, k, counts, n_cells = adequate_cells(table, main & (steps == budget), collapsed)
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
            f"{interval(k / n, low, high)} (exact 95%); "
            f"{sum(counts.get(v, 0) for v in ('reconstructs', 'plateau', 'collapse'))} of {n_cells} "
            f"cells adequate; {all_main} of {int(main.sum())} main-grid models collapsed at any budget"
        ),
    )
