"""The vlm-diagnostics study's ``summary.md``: the model, the instances, then one table per analysis run
(means over the instances of the rows each analysis kept), the analyses not yet run on this model and why;
a random model's summary opens with :data:`~tokdyn.studies.vlm_diagnostics.config.RANDOM_NOTE`."""

from __future__ import annotations

import numpy as np

from tokdyn.studies.vlm_diagnostics.config import DECOMPOSITION_SETTINGS, MEDIATION_KINDS, PENDING, RANDOM_NOTE


def _mean(rows, key) -> float:
    vals = np.asarray([r[key] for r in rows], np.float64)
    return float(np.nanmean(vals)) if len(vals) and np.isfinite(vals).any() else float("nan")


def _table(head: list, body: list) -> list:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + [
        "| " + " | ".join(fmt(v) for v in row) + " |" for row in body
    ]


def grounding_lines(rows: list) -> list:
    """Per perturbation: the mean grounding score S of the answer tokens and the share with S > 0."""
    cells = sorted({(r["noise"], r["level"]) for r in rows})
    body = []
    for kind, level in cells:
        sel = [r for r in rows if r["noise"] == kind and r["level"] == level]
        body.append(
            [
                kind,
                level if kind != "blank" else "-",
                len(sel),
                _mean(sel, "score"),
                _mean([dict(p=float(r["score"] > 0)) for r in sel], "p"),
            ]
        )
    return ["## Grounding (DMLR's S of the answer tokens)", ""] + _table(
        ["noise", "level", "tokens", "mean S", "share S > 0"], body
    )


def perception_lines(rows: list) -> list:
    """Per level and method: ARI and FG-ARI against the masks, collapse, tokens used, agreement with k-means."""
    body = []
    for level in dict.fromkeys(r["level"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows):
            sel = [r for r in rows if r["level"] == level and r["method"] == method]
            body.append(
                [
                    level,
                    method,
                    _mean(sel, "ari"),
                    _mean(sel, "fg_ari"),
                    _mean(sel, "collapsed"),
                    _mean(sel, "n_used"),
                    _mean(sel, "ari_kmeans"),
                ]
            )
    return ["## Perception tokens (token dynamics of the vision tower's features)", ""] + _table(
        ["level", "method", "ARI", "FG-ARI", "collapsed", "tokens used", "ARI vs k-means"], body
    )


def decomposition_lines(rows: list) -> list:
    """Accuracy per setting, and the share of the block's gain (full minus no block) each setting keeps
    (NaN where the block gains nothing)."""
    acc = {s: _mean([r for r in rows if r["setting"] == s], "correct") for s in DECOMPOSITION_SETTINGS}
    gain = acc["full"] - acc["no_block"]
    body = [[s, acc[s], (acc[s] - acc["no_block"]) / gain if gain else float("nan")] for s in DECOMPOSITION_SETTINGS]
    return ["## Decomposition of the latent block", ""] + _table(["setting", "accuracy", "gain kept"], body)


def mediation_lines(rows: list) -> list:
    """Input -> latent: the mean movement of the latent slots' last states per perturbation; latent ->
    answer: the flip rate and mean KL per intervention."""
    inp = [r for r in rows if r["path"] == "input_latent"]
    out = [r for r in rows if r["path"] == "latent_answer"]
    body = []
    for kind, level in sorted({(r["kind"], r["level"]) for r in inp}):
        sel = [r for r in inp if r["kind"] == kind and r["level"] == level]
        body.append(
            [
                f"image {kind}" + (f" {level:g}" if kind != "blank" else ""),
                _mean(sel, "cosine_distance"),
                _mean(sel, "relative_l2"),
                "",
                "",
            ]
        )
    for kind in MEDIATION_KINDS:
        sel = [r for r in out if r["kind"] == kind]
        body.append([f"latents {kind}", "", "", _mean(sel, "flipped"), _mean(sel, "kl")])
    return ["## Causal mediation", ""] + _table(
        ["intervention", "latent cosine distance", "latent relative L2", "answer flipped", "answer KL"], body
    )


def optimisation_lines(rows: list, title: str = "## DMLR latent optimisation (entropy reward, no injection)") -> list:
    """DMLR: the confidence reward and the accuracy before and with the most confident latents."""
    body = [
        ["before", _mean(rows, "reward_before"), _mean(rows, "correct_before")],
        ["optimised", _mean(rows, "reward_best"), _mean(rows, "correct_best")],
    ]
    changed = _mean([dict(c=float(r["answer_best"] != r["answer_before"])) for r in rows], "c")
    return (
        [title, ""]
        + _table(["latents", "reward", "accuracy"], body)
        + ["", f"Answers changed by the optimisation: {changed:.3f} of the instances."]
    )


LINES = {
    "grounding": grounding_lines,
    "perception": perception_lines,
    "decomposition": decomposition_lines,
    "mediation": mediation_lines,
    "optimisation": optimisation_lines,
    "injection": lambda rows: optimisation_lines(
        rows, "## DMLR latent optimisation with visual injection (entropy reward, inject='best')"
    ),
}


def summary(cfg, data: dict) -> str:
    """The Markdown summary of a run (``data``: :func:`~tokdyn.studies.vlm_diagnostics.running.run`'s)."""
    lines = []
    if data["random"]:
        lines += [f"**{RANDOM_NOTE}**", ""]
    model = cfg.model or "the tiny random Qwen2.5-VL (no --model)"
    lines += [
        "# vlm-diagnostics",
        "",
        f"Model: {model}. Instances: {data['n']} from {data['source']}, images {cfg.image_size} x {cfg.image_size}, "
        f"{cfg.n_latents} latent slots; layouts {', '.join(data['groups'])}.",
    ]
    for name, rows in data["rows"].items():
        lines += [""] + LINES[name](rows)
    lines += ["", "Not tabulated by this study yet: " + "; ".join(f"{k} ({v})" for k, v in PENDING.items()) + "."]
    if data["random"]:
        lines += ["", f"**{RANDOM_NOTE}**"]
    return "\n".join(lines)


__all__ = [
    "LINES",
    "decomposition_lines",
    "grounding_lines",
    "mediation_lines",
    "optimisation_lines",
    "perception_lines",
    "summary",
]
