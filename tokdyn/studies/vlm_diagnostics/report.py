"""The vlm-diagnostics study's ``summary.md``: the model, the instances, then one table per analysis run.

Every rate and mean carries its n and a 95% interval by the findings' rules
(:mod:`tokdyn.experiment.findings`): a rate of independent counts over instances (an accuracy, a share of
answers flipped) a Wilson interval (:func:`tokdyn.experiment.findings.rate_interval`); a mean of per-instance
values (a grounding score, a KL, a cosine distance, an ARI) the interval of the mean over instances
(:func:`tokdyn.experiment.findings.seed_interval`: Student's t below 10 instances, on the logit scale of a
bounded range, a bootstrap from 10 on; fewer than 3: none); the gain kept by a setting a bootstrap over
instances (:func:`tokdyn.stats.gain_retained`); an intervention against the clean run the paired difference
of accuracy over the instances both were scored on (:func:`tokdyn.experiment.paired.paired_test`) with
McNemar's exact test of the discordant instances (:func:`paired_cell`). Accuracy stands beside its chance
level. A value that is undefined (a gain kept where the block does not raise accuracy, an ARI of images
without object masks) is printed ``–`` with a sentence that says why. Warnings about the run (no block written,
blocks cut) open the summary. A random model's summary opens and ends with
:data:`~tokdyn.studies.vlm_diagnostics.config.RANDOM_NOTE`.
"""

from __future__ import annotations

import numpy as np

from tokdyn.experiment import findings, paired
from tokdyn.studies.vlm_diagnostics.config import PENDING, RANDOM_NOTE

CAPTION = (
    "n: the instances (images) each cell pools. Rates of instances: 95% Wilson intervals. Means: the 95% interval "
    "of the mean over instances (Student's t below 10 instances, on the logit scale of a bounded range; a "
    "percentile bootstrap from 10 on; fewer than 3 instances: none). Gain kept: a percentile bootstrap over "
    "instances."
)


# ---------------------------------------------------------------------------------------------- cells


def per_instance(rows: list, key: str) -> np.ndarray:
    """The mean of ``key`` per instance over ``rows`` (finite values only; instances without one left out),
    in order of the instances' ids."""
    sums: dict = {}
    for r in rows:
        v = float(r.get(key, np.nan))
        if np.isfinite(v):
            s = sums.setdefault(int(r["instance"]), [0.0, 0])
            s[0] += v
            s[1] += 1
    return np.asarray([s / c for _, (s, c) in sorted(sums.items())], np.float64)


def mean_cell(values, bounds=None) -> str:
    """``mean [low, high] (n)`` of per-instance ``values`` (:func:`tokdyn.experiment.findings.seed_interval`);
    ``– (n = 0)`` when there is none."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return "– (n = 0)"
    mean, low, high, n = findings.seed_interval(v, bounds)
    return f"{findings.interval(mean, low, high)} (n = {n})"


def rate_cell(values) -> str:
    """A rate of per-instance 0/1 ``values`` with its Wilson interval (:func:`tokdyn.experiment.findings.rate_interval`),
    ``k/n``; values that are not 0/1 (an instance's share over several tokens) take :func:`mean_cell` on the
    rate's range."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return "– (n = 0)"
    if not np.isin(v, (0.0, 1.0)).all():
        return mean_cell(v, findings.RATE)
    k, n = int(v.sum()), int(v.size)
    rate, low, high = findings.rate_interval(k, n)
    return f"{findings.interval(rate, low, high)} ({k}/{n})"


def paired_cell(before: dict, after: dict) -> str:
    """The paired difference of accuracy, after minus before, over the instances scored in both (``{instance:
    correct}``, NaN entries left out): the mean difference with its 95% interval over instances
    (:func:`tokdyn.experiment.paired.paired_test`) and McNemar's exact two-sided p over the discordant
    instances (right before and wrong after, or the reverse: a binomial test at 1/2)."""
    from scipy import stats as sp

    both = [i for i in before if i in after and np.isfinite(before[i]) and np.isfinite(after[i])]
    if not both:
        return "– (n = 0)"
    a = np.asarray([before[i] for i in both], np.float64)
    b = np.asarray([after[i] for i in both], np.float64)
    t = paired.paired_test(b - a, bounds=findings.RATE)
    worse, better = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    p = sp.binomtest(worse, worse + better, 0.5).pvalue if worse + better else 1.0
    cell = findings.interval(t["mean_diff"], t["diff_low"], t["diff_high"])
    return f"{cell} (n = {t['n']}; {better} up, {worse} down, McNemar p = {p:.3g})"


def _table(head: list, body: list) -> list:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + [
        "| " + " | ".join(str(v) for v in row) + " |" for row in body
    ]


def _chance_text(chance) -> str:
    c = np.asarray(chance, np.float64)
    c = c[np.isfinite(c)]
    return "–" if not c.size else f"{c.mean():.3f}"


def chance_sentence(chance) -> str:
    """What the chance level beside an accuracy is, and where it is undefined."""
    c = np.asarray(chance, np.float64)
    if np.isfinite(c).all():
        return "Chance: the mean over the instances of 1 / the number of possible answers (options, or object counts)."
    if not np.isfinite(c).any():
        return "Chance: – (the questions are open: they list no options, so no chance level is defined)."
    return (
        "Chance: the mean of 1 / the number of options over the instances that have options (open questions have none)."
    )


# ---------------------------------------------------------------------------------------------- tables


def _correct(rows: list) -> dict:
    return {int(r["instance"]): float(r["correct"]) for r in rows}


def accuracy_lines(rows: list, chance=None) -> list:
    """Per benchmark (file) and setting: the accuracy of the generated answers with its Wilson interval, the
    unparsable answers (counted wrong), the answers the token limit cut (counted apart, out of the accuracy),
    the chance level, and each setting's paired difference from the clean run (``none``)."""
    body = []
    for bench in dict.fromkeys(r["benchmark"] for r in rows):
        base = _correct([r for r in rows if r["benchmark"] == bench and r["setting"] == "none"])
        for setting in dict.fromkeys(r["setting"] for r in rows):
            sel = [r for r in rows if r["benchmark"] == bench and r["setting"] == setting]
            if not sel:
                continue
            cut = sum(bool(r.get("cut", False)) for r in sel)
            bad = sum(not bool(r["parsed"]) and not bool(r.get("cut", False)) for r in sel)
            diff = "–" if setting == "none" or not base else paired_cell(base, _correct(sel))
            body.append(
                [
                    bench,
                    setting,
                    rate_cell([r["correct"] for r in sel]),
                    bad,
                    cut,
                    _chance_text([r["chance"] for r in sel]),
                    diff,
                ]
            )
    blocks = ""
    clean = [r for r in rows if r["setting"] == "none" and "blocks" in r]
    if clean:
        k = sum(int(r["blocks"]) > 0 for r in clean)
        c = sum(bool(r.get("block_cut", False)) for r in clean)
        blocks = (
            f" In the clean run {k} of {len(clean)} instances wrote a whole latent block"
            + (f" and {c} a block the token limit cut (counted as cut, in no latent analysis)" if c else "")
            + " (setting none: the latents as computed; the others replace or hide them as they are written, each a "
            "kind of the one table of interventions; swap and mean take other instances' latents of the whole set, "
            "and an instance with no other instance to take them from has no row)."
        )
    return (
        ["## Accuracy of the generated answers", ""]
        + _table(["benchmark", "setting", "accuracy", "unparsable", "cut", "chance", "vs none (paired)"], body)
        + [
            "",
            "A multiple-choice answer is read from the text generated after the last whole latent block by "
            "tokdyn.diagnostics.choices.extract; an answer no rule reads is unparsable and counted wrong, unless the "
            "token limit cut the run before it stopped: then it is cut, counted apart and out of the accuracy. An "
            "open answer is read by tokdyn.diagnostics.choices.read_open (a number whole, with its decimals and "
            "thousands; a text at the start). vs none: the paired difference of accuracy from the "
            "clean run over the instances scored in both, its 95% interval, and McNemar's exact test. "
            + chance_sentence([r["chance"] for r in rows])
            + blocks,
        ]
    )


def grounding_lines(rows: list, chance=None) -> list:
    """Per perturbation: the mean grounding score S of the answer tokens and the share with S > 0."""
    cells = sorted({(r["noise"], r["level"]) for r in rows})
    body = []
    for kind, level in cells:
        sel = [r for r in rows if r["noise"] == kind and r["level"] == level]
        pos = [dict(r, positive=float(r["score"] > 0)) for r in sel]
        body.append(
            [
                kind,
                f"{level:g}" if kind != "blank" else "-",
                len(sel),
                mean_cell(per_instance(sel, "score")),
                rate_cell(per_instance(pos, "positive")),
            ]
        )
    return ["## Grounding (DMLR's S of the answer tokens)", ""] + _table(
        ["noise", "level", "tokens", "mean S", "share S > 0"], body
    )


def perception_lines(rows: list, chance=None) -> list:
    """Per level and method: ARI and FG-ARI against the masks, collapse, tokens used, agreement with k-means;
    a sentence where the images have no masks (ARI undefined)."""
    body = []
    for level in dict.fromkeys(r["level"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows):
            sel = [r for r in rows if r["level"] == level and r["method"] == method]
            body.append(
                [
                    level,
                    method,
                    mean_cell(per_instance(sel, "ari"), findings.SCORE),
                    mean_cell(per_instance(sel, "fg_ari"), findings.SCORE),
                    rate_cell(per_instance(sel, "collapsed")),
                    mean_cell(per_instance(sel, "n_used")),
                    mean_cell(per_instance(sel, "ari_kmeans"), findings.SCORE),
                ]
            )
    lines = ["## Perception tokens (token dynamics of the vision tower's features)", ""] + _table(
        ["level", "method", "ARI", "FG-ARI", "collapsed", "tokens used", "ARI vs k-means"], body
    )
    if not np.isfinite([float(r["ari"]) for r in rows]).any():
        lines += [
            "",
            "ARI and FG-ARI are undefined (–): these images (from --instances) come without object masks to score "
            "the partitions against; the collapse, the tokens used and the agreement with k-means need none.",
        ]
    return lines


def decomposition_lines(rows: list, chance=None) -> list:
    """Accuracy per setting with the share of the block's gain (full minus no block) it keeps, and the
    attention's concentration on the image at each latent slot and at the answer."""
    from tokdyn import stats

    correct = [r for r in rows if r.get("measure", "correct") == "correct"]
    settings = list(dict.fromkeys(r["setting"] for r in correct))
    acc = {s: per_instance([r for r in correct if r["setting"] == s], "correct") for s in settings}
    n = len(acc.get("full", ()))
    gain_defined = "full" in acc and "no_block" in acc and n >= 2 and acc["full"].mean() > acc["no_block"].mean()
    full = _correct([r for r in correct if r["setting"] == "full"])
    body = []
    for s in settings:
        kept = "–"
        if gain_defined and len(acc[s]) == n:
            g = stats.gain_retained(acc[s], acc["full"], acc["no_block"], seed=0)
            kept = findings.interval(g.share, g.low, g.high)
        diff = "–" if s == "full" else paired_cell(full, _correct([r for r in correct if r["setting"] == s]))
        body.append([s, rate_cell(acc[s]), kept, diff])
    lines = ["## Decomposition of the latent block", ""] + _table(
        ["setting", "accuracy", "gain kept", "vs full (paired)"], body
    )
    lines += ["", chance_sentence(chance if chance is not None else []) + f" Chance here: {_chance_text(chance)}."]
    if not gain_defined and "full" in acc and "no_block" in acc:
        a, b = acc["full"].mean() if n else np.nan, acc["no_block"].mean() if len(acc["no_block"]) else np.nan
        if all(not v.size or v.max() == 0 for v in acc.values()):
            why = "accuracy is 0 under every setting, so the block gains nothing for a setting to keep"
        elif a < b:
            why = (
                f"the full block's accuracy ({a:.3f}) is below no block's ({b:.3f}): the block lowers accuracy, "
                "so there is no gain to keep (a share of a negative gain would read backwards)"
            )
        else:
            why = f"the full block's accuracy ({a:.3f}) equals no block's ({b:.3f}), so the block gains nothing to keep"
        lines += [
            "",
            f"The gain kept, (acc(setting) - acc(no block)) / (acc(full) - acc(no block)), is undefined (–): {why}.",
        ]
    att = [r for r in rows if r.get("measure") == "attention"]
    if att:
        body = []
        for q in dict.fromkeys(r["query"] for r in att):
            sel = [r for r in att if r["query"] == q]
            body.append(
                [
                    q,
                    mean_cell(per_instance(sel, "entropy")),
                    mean_cell(per_instance(sel, "top_k_mass"), findings.RATE),
                    mean_cell(per_instance(sel, "patch_share"), findings.RATE),
                ]
            )
        p, k = int(att[0]["image_tokens"]), int(att[0]["top_k"])
        lines += ["", "### Attention on the image (full block; layers and heads averaged)", ""]
        lines += _table(["query", "entropy (nats)", f"top-{k} mass", "share on the image"], body)
        lines += ["", f"Entropy over the {p} image tokens, renormalised (uniform: {np.log(p):.3f} nats)."]
    return lines


def mediation_lines(rows: list, chance=None) -> list:
    """Input -> latent: the latents' movement per perturbation; input -> answer: total, direct and indirect
    effects; latent -> answer: flips, KL and accuracy per intervention."""
    inp = [r for r in rows if r["path"] == "input_latent"]
    ans = [r for r in rows if r["path"] == "input_answer"]
    out = [r for r in rows if r["path"] == "latent_answer"]
    lines = ["## Causal mediation", ""]
    cells = sorted({(r["kind"], r["level"]) for r in inp + ans})
    label = lambda kind, level: f"image {kind}" + (f" {level:g}" if kind != "blank" else "")  # noqa: E731
    if inp:
        body = []
        for kind, level in cells:
            sel = [r for r in inp if r["kind"] == kind and r["level"] == level]
            body.append(
                [
                    label(kind, level),
                    mean_cell(per_instance(sel, "cosine_distance")),
                    mean_cell(per_instance(sel, "relative_l2")),
                ]
            )
        lines += ["### Input -> latent (the latents the model writes from the perturbed image; steps averaged)", ""]
        lines += _table(["perturbation", "latent cosine distance", "latent relative L2"], body) + [""]
        steps = sorted({int(r["step"]) for r in inp})
        if len(steps) > 1:
            body = [
                [label(kind, level)]
                + [
                    mean_cell(
                        per_instance(
                            [r for r in inp if r["kind"] == kind and r["level"] == level and int(r["step"]) == s],
                            "cosine_distance",
                        )
                    )
                    for s in steps
                ]
                for kind, level in cells
            ]
            lines += (
                ["Cosine distance per latent step:", ""]
                + _table(["perturbation"] + [f"step {s}" for s in steps], body)
                + [""]
            )
    if ans:
        body = []
        for kind, level in cells:
            for effect in ("total", "direct", "indirect"):
                sel = [r for r in ans if r["kind"] == kind and r["level"] == level and r["effect"] == effect]
                if sel:
                    body.append(
                        [
                            label(kind, level),
                            effect,
                            rate_cell(per_instance(sel, "flipped")),
                            mean_cell(per_instance(sel, "kl")),
                        ]
                    )
        lines += [
            "### Input -> answer (total: perturbed image and its latents; direct: the latents held; indirect: "
            "the image held, the perturbed latents)",
            "",
        ]
        lines += _table(["perturbation", "effect", "answer flipped", "answer KL"], body) + [""]
    if out:
        body = []
        before = [dict(instance=r["instance"], c=r["correct_before"]) for r in out]
        own = {int(r["instance"]): float(r["correct_before"]) for r in out}
        for kind in dict.fromkeys(r["kind"] for r in out):
            sel = [r for r in out if r["kind"] == kind]
            body.append(
                [
                    f"latents {kind}",
                    rate_cell(per_instance(sel, "flipped")),
                    mean_cell(per_instance(sel, "kl")),
                    rate_cell(per_instance(sel, "correct")),
                    paired_cell(own, _correct(sel)),
                ]
            )
        lines += ["### Latent -> answer (the latents replaced or hidden as they are written)", ""]
        lines += _table(["intervention", "answer flipped", "answer KL", "accuracy", "vs own latents (paired)"], body)
        lines += [
            "",
            f"Accuracy with the model's own latents: {rate_cell(per_instance(before, 'c'))}; chance {_chance_text(chance)}. "
            "Every answer is read where it is written, after the last whole block: an answer flips when both runs' "
            "answers were read and differ (a run with no readable answer counts in neither direction); the KL is "
            "that of the answer distribution over the options at that step.",
        ]
    return lines


def similarity_lines(rows: list, chance=None) -> list:
    """Across instances: the mean pairwise cosine of the latents at each step; within an instance: the cosine
    between consecutive steps."""
    across = [r for r in rows if r["measure"] == "across"]
    steps = [r for r in rows if r["measure"] == "steps"]
    body = []
    for r in across:
        s = int(r["step"])
        within = [x for x in steps if int(x["step"]) == s]
        body.append(
            [
                s,
                "–" if not np.isfinite(r["cosine"]) else f"{r['cosine']:.3f} (n = {int(r['n'])})",
                mean_cell(per_instance(within, "cosine"), (-1.0, 1.0)) if within else "–",
            ]
        )
    lines = ["## Similarity of the latents (collapse)", ""]
    lines += _table(["step", "mean cosine across instances", "cosine with the next step"], body)
    lines += [
        "",
        "Across instances: the mean cosine over the n (n - 1) pairs of instances at that step (one value, no "
        "interval). The matrices are in diagnostics.png.",
    ]
    return lines


def optimisation_lines(
    rows: list, chance=None, title: str = "## DMLR latent optimisation (entropy reward, no injection)"
) -> list:
    """DMLR: the confidence reward and the accuracy before and with the most confident latents."""
    changed = [dict(instance=r["instance"], c=float(r["answer_best"] != r["answer_before"])) for r in rows]
    body = [
        ["before", mean_cell(per_instance(rows, "reward_before")), rate_cell(per_instance(rows, "correct_before"))],
        ["optimised", mean_cell(per_instance(rows, "reward_best")), rate_cell(per_instance(rows, "correct_best"))],
    ]
    return (
        [title, ""]
        + _table(["latents", "reward", "accuracy"], body)
        + [
            "",
            f"Answers changed by the optimisation: {rate_cell(per_instance(changed, 'c'))}. Chance: {_chance_text(chance)}.",
        ]
    )


LINES = {
    "grounding": grounding_lines,
    "perception": perception_lines,
    "accuracy": accuracy_lines,
    "decomposition": decomposition_lines,
    "mediation": mediation_lines,
    "similarity": similarity_lines,
    "optimisation": optimisation_lines,
    "injection": lambda rows, chance=None: optimisation_lines(
        rows, chance, "## DMLR latent optimisation with visual injection (entropy reward, inject='best')"
    ),
}
"""Each analysis and the function writing its section of the summary: ``(rows, chance) -> lines``."""


def summary(cfg, data: dict) -> str:
    """The Markdown summary of a run (``data``: :func:`~tokdyn.studies.vlm_diagnostics.running.run`'s)."""
    lines = []
    if data["random"]:
        lines += [f"**{RANDOM_NOTE}**", ""]
    for w in data.get("warnings") or ():
        lines += [f"**Warning: {w}.**", ""]
    model = cfg.model or "the tiny random Qwen2.5-VL (no --model)"
    size = data.get("n_latents") or cfg.n_latents
    where = (
        f"a block of {size} latents forced after the prompt and filled with the model's own states (--latents block)"
        if cfg.latents == "block"
        else f"the latent blocks the model opens itself while it generates, {size} latents a block (--latents generated)"
    )
    if cfg.instances and cfg.n_instances:
        where += f"; the first {cfg.n_instances} lines of each instances file (--n-instances)"
    lines += [
        "# vlm-diagnostics",
        "",
        f"Model: {model}. Instances: {data['n']} from {data['source']}, images {cfg.image_size} x {cfg.image_size}; "
        f"{where}; layouts {', '.join(data['groups'])}.",
        "",
        CAPTION,
    ]
    chance = data.get("chance")
    for name, rows in data["rows"].items():
        if not rows:
            lines += ["", f"## {name}", "", "No rows (no instance this analysis applies to)."]
            continue
        lines += [""] + LINES[name](rows, chance)
    if PENDING:
        lines += ["", "Not tabulated by this study yet: " + "; ".join(f"{k} ({v})" for k, v in PENDING.items()) + "."]
    if data["random"]:
        lines += ["", f"**{RANDOM_NOTE}**"]
    return "\n".join(lines)


__all__ = [
    "CAPTION",
    "LINES",
    "accuracy_lines",
    "chance_sentence",
    "decomposition_lines",
    "grounding_lines",
    "mean_cell",
    "mediation_lines",
    "optimisation_lines",
    "paired_cell",
    "per_instance",
    "perception_lines",
    "rate_cell",
    "similarity_lines",
    "summary",
]
