"""The latent-optimisation study's ``summary.md`` (:func:`summary`)."""

from __future__ import annotations

import numpy as np


def summary(table: dict, tests: dict, ground: dict) -> str:
    """``summary.md``: per variant and method the accuracy before and after (all families, mean and
    min-max over seeds), the rewards, the answers changed and the Holm-corrected paired p; then the
    grounding per variant and perturbation (means over seeds). The arguments are the columns of
    ``optimiser.csv``, ``optimiser_tests.csv`` and ``grounding.csv``."""
    lines = [
        "## Latent optimisation: accuracy (all families), mean (min-max) over seeds",
        "",
        "| variant | method | accuracy before | accuracy after | Δ accuracy (mean over seeds) | paired p (Holm) | "
        "reward before | reward after | answers changed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    v, m, f = (np.asarray(table[k]) for k in ("variant", "method", "family"))
    tv, tm, tf = (np.asarray(tests.get(k, [])) for k in ("variant", "method", "family"))
    for name in dict.fromkeys(v.tolist()):
        for method in dict.fromkeys(m[v == name].tolist()):
            sel = (v == name) & (m == method) & (f == "all")
            acc = np.asarray(table["accuracy"], float)[sel]
            acc0 = np.asarray(table["accuracy_before"], float)[sel]
            r0 = np.asarray(table["reward_before"], float)[sel].mean()
            r1 = np.asarray(table["reward_after"], float)[sel].mean()
            ch = np.asarray(table["answers_changed"], float)[sel].mean()
            t = (tv == name) & (tm == method) & (tf == "all")
            p = f"{np.asarray(tests['p_holm'])[t][0]:.2g}" if t.any() else ""
            lines.append(
                f"| {name} | {method} | {acc0.mean():.3f} | {acc.mean():.3f} ({acc.min():.3f}-{acc.max():.3f}) "
                f"| {(acc - acc0).mean():+.3f} | {p} | {r0:.3f} | {r1:.3f} | {ch:.3f} |"
            )
    lines += [
        "",
        "## Grounding (mean over seeds)",
        "",
        "| variant | perturbation | accuracy | answer grounding | caption grounding | image-dependent share | r(grounding, correct) | r(confidence, correct) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    gv, gp = np.asarray(ground.get("variant", [])), np.asarray(ground.get("perturbation", []))
    for name in dict.fromkeys(gv.tolist()):
        for pert in dict.fromkeys(gp[gv == name].tolist()):
            sel = (gv == name) & (gp == pert)
            g = {
                k: np.nanmean(np.asarray(ground[k], float)[sel])
                if np.any(np.isfinite(np.asarray(ground[k], float)[sel]))
                else np.nan
                for k in (
                    "accuracy",
                    "answer_grounding",
                    "caption_grounding",
                    "image_dependent_share",
                    "r_grounding_correct",
                    "r_confidence_correct",
                )
            }
            lines.append(
                f"| {name} | {pert} | {g['accuracy']:.3f} | {g['answer_grounding']:.2f} | "
                f"{g['caption_grounding']:.2f} | {g['image_dependent_share']:.2f} | "
                f"{g['r_grounding_correct']:.2f} | {g['r_confidence_correct']:.2f} |"
            )
    return "\n".join(lines)
